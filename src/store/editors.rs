//! Editors of the HTTP API, their tokens (hashes only) and the stored
//! answers of idempotent requests.

use super::{Db, Result, with_pool};
use crate::domain::{EmailAddress, Millis};

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct EditorRow {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub created_at: Millis,
}

/// A token as listed: never the token itself, which is not stored.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct TokenRow {
    pub id: i64,
    pub editor_id: i64,
    pub editor_email: String,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

/// What a token hash resolves to, when the token is live.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenOwner {
    pub token_id: i64,
    pub editor_id: i64,
    pub email: String,
    pub token_hash: String,
}

/// A stored idempotent answer; `http_status` is `None` while the first request
/// is still running.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdempotencyRow {
    pub request_hash: String,
    pub http_status: Option<i64>,
    pub content_type: Option<String>,
    pub body: Option<Vec<u8>>,
}

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_KEY_LIFETIME_MS: Millis = 24 * 60 * 60 * 1000;

const EDITOR_COLUMNS: &str = "id, email, name, created_at";

impl Db {
    /// Creates the editor, or returns the existing one (any spelling of the
    /// address) with `false`.
    pub async fn ensure_editor(
        &self,
        email: &EmailAddress,
        name: Option<&str>,
        now: Millis,
    ) -> Result<(EditorRow, bool)> {
        let inserted = with_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO editors (email, name, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(email.as_str())
            .bind(name)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        let row = self
            .editor_by_email(email)
            .await?
            .ok_or_else(|| super::StoreError::Corrupt("editor vanished after insert".into()))?;
        Ok((row, inserted > 0))
    }

    pub async fn editor_by_email(&self, email: &EmailAddress) -> Result<Option<EditorRow>> {
        let sql = format!("SELECT {EDITOR_COLUMNS} FROM editors WHERE lower(email) = $1");
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(email.canonical())
        .fetch_optional(p)
        .await?))
    }

    pub async fn editors(&self) -> Result<Vec<EditorRow>> {
        let sql = format!("SELECT {EDITOR_COLUMNS} FROM editors ORDER BY id");
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .fetch_all(p)
        .await?))
    }

    pub async fn insert_api_token(&self, editor_id: i64, hash: &str, now: Millis) -> Result<i64> {
        Ok(with_pool!(self, |p| {
            sqlx::query_scalar(
                "INSERT INTO api_tokens (editor_id, token_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(editor_id)
            .bind(hash)
            .bind(now)
            .fetch_one(p)
            .await?
        }))
    }

    pub async fn api_tokens(&self) -> Result<Vec<TokenRow>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT t.id, t.editor_id, e.email AS editor_email, t.created_at, t.last_used_at, t.revoked_at
                 FROM api_tokens t JOIN editors e ON e.id = t.editor_id ORDER BY t.id",
            )
            .fetch_all(p)
            .await?
        }))
    }

    /// `false` when there is no such token or it was already revoked.
    pub async fn revoke_api_token(&self, id: i64, now: Millis) -> Result<bool> {
        Ok(with_pool!(self, |p| {
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        }) > 0)
    }

    pub async fn live_token_owner(&self, hash: &str) -> Result<Option<TokenOwner>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT t.id AS token_id, e.id AS editor_id, e.email, t.token_hash
                 FROM api_tokens t JOIN editors e ON e.id = t.editor_id
                 WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
            )
            .bind(hash)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Recorded at most about once a minute per token, so that reads do
    /// not each become a write.
    pub async fn touch_api_token(&self, id: i64, now: Millis) -> Result<()> {
        with_pool!(self, |p| {
            sqlx::query(
                "UPDATE api_tokens SET last_used_at = $2
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(id)
            .bind(now)
            .bind(now - 60_000)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Claims (editor, key) for a request; `None` when this call claimed
    /// it, else what is stored for it.
    pub async fn claim_idempotency_key(
        &self,
        editor_id: i64,
        key: &str,
        request_hash: &str,
        now: Millis,
    ) -> Result<Option<IdempotencyRow>> {
        // Keys live a day: an older one (answered or abandoned) is forgotten
        // and may be used afresh.
        with_pool!(self, |p| {
            sqlx::query("DELETE FROM idempotency_keys WHERE editor_id = $1 AND created_at < $2")
                .bind(editor_id)
                .bind(now - IDEMPOTENCY_KEY_LIFETIME_MS)
                .execute(p)
                .await?;
        });
        let inserted = with_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO idempotency_keys (editor_id, key, request_hash, created_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(editor_id)
            .bind(key)
            .bind(request_hash)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        if inserted > 0 {
            return Ok(None);
        }
        let stored: Option<IdempotencyRow> = with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT request_hash, http_status, content_type, body FROM idempotency_keys
                 WHERE editor_id = $1 AND key = $2",
            )
            .bind(editor_id)
            .bind(key)
            .fetch_optional(p)
            .await?
        });
        // Gone between the insert and the read: the first request failed and
        // released its claim just now. Answer "in progress"; a retry claims it.
        Ok(Some(stored.unwrap_or(IdempotencyRow {
            request_hash: request_hash.to_owned(),
            http_status: None,
            content_type: None,
            body: None,
        })))
    }

    pub async fn complete_idempotency_key(
        &self,
        editor_id: i64,
        key: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<()> {
        with_pool!(self, |p| {
            sqlx::query(
                "UPDATE idempotency_keys SET http_status = $3, content_type = $4, body = $5
                 WHERE editor_id = $1 AND key = $2",
            )
            .bind(editor_id)
            .bind(key)
            .bind(i64::from(status))
            .bind(content_type)
            .bind(body)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Forgets a claim whose request failed on our side, so a retry runs it.
    pub async fn release_idempotency_key(&self, editor_id: i64, key: &str) -> Result<()> {
        with_pool!(self, |p| {
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE editor_id = $1 AND key = $2 AND http_status IS NULL",
            )
            .bind(editor_id)
            .bind(key)
            .execute(p)
            .await?;
        });
        Ok(())
    }
}

//! Editors of the HTTP API and their bearer tokens.
//!
//! A token is 256 random bits, shown once when issued; only its SHA-256 is
//! stored (like `ConfirmationToken`), so a database leak lets nobody in.
//! A high-entropy token needs no slow password hash: nobody can guess it
//! from its hash. Tokens are never logged: [`ApiToken`] has no `Display`
//! and its `Debug` hides the value.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::domain::{EmailAddress, now_ms};
use crate::store::StoreError;
use crate::store::editors::{EditorRow, IdempotencyRow, TokenRow};

/// Every token starts with this, so a leaked one is recognisable by
/// secret scanners and cannot be mistaken for a confirmation token.
const TOKEN_PREFIX: &str = "hrld_";
/// 32 random bytes in unpadded base64url.
const TOKEN_BODY_LEN: usize = 43;

/// A bearer token as the client sent it or as it is issued.
pub struct ApiToken(String);

impl ApiToken {
    pub fn generate() -> ApiToken {
        let bytes: [u8; 32] = rand::random();
        ApiToken(format!("{TOKEN_PREFIX}{}", B64.encode(bytes)))
    }

    /// Anything that is not the shape we issue is refused before it
    /// reaches the database.
    pub fn parse(s: &str) -> Option<ApiToken> {
        let body = s.strip_prefix(TOKEN_PREFIX)?;
        (body.len() == TOKEN_BODY_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| ApiToken(s.to_owned()))
    }

    /// The one place the token is shown: `herald editor add|token` prints it once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

/// The editor a request was authenticated as.
#[derive(Debug, Clone)]
pub struct Editor {
    pub id: i64,
    pub email: String,
    pub token_id: i64,
}

/// A token just issued: the only moment its value exists outside the client.
#[derive(Debug)]
pub struct IssuedToken {
    pub editor: EditorRow,
    pub token_id: i64,
    pub token: ApiToken,
}

#[derive(Debug, thiserror::Error)]
pub enum EditorError {
    #[error("{0} is already an editor; issue another token with `herald editor token {0}`")]
    Exists(String),
    #[error("{0} is not an editor; add it with `herald editor add {0}`")]
    NotFound(String),
    #[error("no live token with id {0} (see `herald editor list`)")]
    NoToken(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an `Idempotency-Key` finds.
#[derive(Debug)]
pub enum IdempotencyClaim {
    /// First use: run the request, then `complete_idempotent`.
    Claimed,
    /// The same request ran before: replay its answer.
    Replay {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
    },
    /// The same request is still running.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

impl App {
    /// Creates the editor and its first token.
    pub async fn add_editor(
        &self,
        email: &EmailAddress,
        name: Option<&str>,
    ) -> Result<IssuedToken, EditorError> {
        let (editor, created) = self.db.ensure_editor(email, name, now_ms()).await?;
        if !created {
            return Err(EditorError::Exists(editor.email));
        }
        self.issue_token(editor).await
    }

    /// Another token for an existing editor (the old ones stay valid).
    pub async fn new_editor_token(&self, email: &EmailAddress) -> Result<IssuedToken, EditorError> {
        let editor = self
            .db
            .editor_by_email(email)
            .await?
            .ok_or_else(|| EditorError::NotFound(email.to_string()))?;
        self.issue_token(editor).await
    }

    async fn issue_token(&self, editor: EditorRow) -> Result<IssuedToken, EditorError> {
        let token = ApiToken::generate();
        let token_id = self
            .db
            .insert_api_token(editor.id, &token.hash(), now_ms())
            .await?;
        tracing::info!(editor = %editor.email, token_id, "API token issued");
        Ok(IssuedToken {
            editor,
            token_id,
            token,
        })
    }

    pub async fn editors(&self) -> Result<(Vec<EditorRow>, Vec<TokenRow>), EditorError> {
        Ok((self.db.editors().await?, self.db.api_tokens().await?))
    }

    pub async fn revoke_editor_token(&self, token_id: i64) -> Result<(), EditorError> {
        if !self.db.revoke_api_token(token_id, now_ms()).await? {
            return Err(EditorError::NoToken(token_id));
        }
        tracing::info!(token_id, "API token revoked");
        Ok(())
    }

    /// The editor holding this live token, if any.
    pub async fn authenticate_editor(
        &self,
        token: &ApiToken,
    ) -> Result<Option<Editor>, StoreError> {
        let hash = token.hash();
        let Some(owner) = self.db.live_token_owner(&hash).await? else {
            return Ok(None);
        };
        // The lookup is by hash (nothing secret leaks through its timing);
        // the comparison is constant-time anyway, so it never becomes the
        // weak point if the lookup changes.
        if !bool::from(owner.token_hash.as_bytes().ct_eq(hash.as_bytes())) {
            return Ok(None);
        }
        self.db.touch_api_token(owner.token_id, now_ms()).await?;
        Ok(Some(Editor {
            id: owner.editor_id,
            email: owner.email,
            token_id: owner.token_id,
        }))
    }

    /// Claims an `Idempotency-Key` of `editor` for a request whose method,
    /// path and body hash to `request_hash`.
    pub async fn claim_idempotency_key(
        &self,
        editor: &Editor,
        key: &str,
        request_hash: &str,
    ) -> Result<IdempotencyClaim, StoreError> {
        Ok(
            match self
                .db
                .claim_idempotency_key(editor.id, key, request_hash, now_ms())
                .await?
            {
                None => IdempotencyClaim::Claimed,
                Some(IdempotencyRow {
                    request_hash: h, ..
                }) if h != request_hash => IdempotencyClaim::Mismatch,
                Some(IdempotencyRow {
                    http_status: Some(status),
                    content_type,
                    body,
                    ..
                }) => IdempotencyClaim::Replay {
                    status: u16::try_from(status).map_err(|_| {
                        StoreError::Corrupt(format!("idempotent answer with status {status}"))
                    })?,
                    content_type,
                    body: body.unwrap_or_default(),
                },
                Some(_) => IdempotencyClaim::InProgress,
            },
        )
    }

    pub async fn complete_idempotent(
        &self,
        editor: &Editor,
        key: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(), StoreError> {
        self.db
            .complete_idempotency_key(editor.id, key, status, content_type, body)
            .await
    }

    pub async fn release_idempotency_key(
        &self,
        editor: &Editor,
        key: &str,
    ) -> Result<(), StoreError> {
        self.db.release_idempotency_key(editor.id, key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape_round_trips_and_hides_itself() {
        let t = ApiToken::generate();
        assert!(ApiToken::parse(t.expose()).is_some());
        assert!(ApiToken::parse("hrld_short").is_none());
        assert!(ApiToken::parse(&t.expose().replace("hrld_", "xxxx_")).is_none());
        assert_eq!(format!("{t:?}"), "ApiToken(***)");
        assert_ne!(t.hash(), ApiToken::generate().hash());
    }
}

//! The editors' web page (`/admin`): password hashes, sessions (only the
//! SHA-256 of a session id) and failed-login counters.

use std::collections::HashMap;

use super::deliveries::{DeliveryCounts, counts_of};
use super::{Db, Result, with_pool, with_tx};
use crate::domain::{DeliveryState, EmailAddress, Millis};

/// What a login needs to know about an editor.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EditorCredentials {
    pub id: i64,
    pub email: String,
    pub password_hash: Option<String>,
}

/// A live session and its editor.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdminSessionRow {
    pub editor_id: i64,
    pub email: String,
    pub csrf_token: String,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    pub expires_at: Millis,
}

impl Db {
    pub async fn editor_credentials(
        &self,
        email: &EmailAddress,
    ) -> Result<Option<EditorCredentials>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as("SELECT id, email, password_hash FROM editors WHERE lower(email) = $1")
                .bind(email.canonical())
                .fetch_optional(p)
                .await?
        }))
    }

    /// Sets the hash and ends the editor's sessions (a new password logs
    /// everybody holding the old one out). `false`: no such editor.
    pub async fn set_editor_password(&self, editor_id: i64, password_hash: &str) -> Result<bool> {
        with_tx!(self, |tx| {
            let n = sqlx::query("UPDATE editors SET password_hash = $2 WHERE id = $1")
                .bind(editor_id)
                .bind(password_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM admin_sessions WHERE editor_id = $1")
                .bind(editor_id)
                .execute(&mut *tx)
                .await?;
            Ok(n > 0)
        })
    }

    pub async fn insert_admin_session(
        &self,
        id_hash: &str,
        editor_id: i64,
        csrf_token: &str,
        now: Millis,
        expires_at: Millis,
    ) -> Result<()> {
        with_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO admin_sessions (id_hash, editor_id, csrf_token, created_at, last_seen_at, expires_at)
                 VALUES ($1, $2, $3, $4, $4, $5)",
            )
            .bind(id_hash)
            .bind(editor_id)
            .bind(csrf_token)
            .bind(now)
            .bind(expires_at)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The session, if it has neither reached its absolute end nor been
    /// idle since `idle_since`.
    pub async fn live_admin_session(
        &self,
        id_hash: &str,
        now: Millis,
        idle_since: Millis,
    ) -> Result<Option<AdminSessionRow>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT s.editor_id, e.email, s.csrf_token, s.created_at, s.last_seen_at, s.expires_at
                 FROM admin_sessions s JOIN editors e ON e.id = s.editor_id
                 WHERE s.id_hash = $1 AND s.expires_at > $2 AND s.last_seen_at > $3
                   AND e.password_hash IS NOT NULL",
            )
            .bind(id_hash)
            .bind(now)
            .bind(idle_since)
            .fetch_optional(p)
            .await?
        }))
    }

    pub async fn touch_admin_session(&self, id_hash: &str, now: Millis) -> Result<()> {
        with_pool!(self, |p| {
            sqlx::query("UPDATE admin_sessions SET last_seen_at = $2 WHERE id_hash = $1")
                .bind(id_hash)
                .bind(now)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Ends one session, and sweeps the ones that ended by themselves.
    pub async fn delete_admin_session(
        &self,
        id_hash: &str,
        now: Millis,
        idle_since: Millis,
    ) -> Result<()> {
        with_pool!(self, |p| {
            sqlx::query(
                "DELETE FROM admin_sessions WHERE id_hash = $1 OR expires_at <= $2 OR last_seen_at <= $3",
            )
            .bind(id_hash)
            .bind(now)
            .bind(idle_since)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The latest `locked_until` among `subjects` that is still ahead of `now`.
    pub async fn login_locked_until(
        &self,
        subjects: &[&str],
        now: Millis,
    ) -> Result<Option<Millis>> {
        let mut latest = None;
        for subject in subjects {
            let until: Option<Option<Millis>> = with_pool!(self, |p| {
                sqlx::query_scalar(
                    "SELECT locked_until FROM admin_login_failures WHERE subject = $1 AND locked_until > $2",
                )
                .bind(*subject)
                .bind(now)
                .fetch_optional(p)
                .await?
            });
            latest = latest.max(until.flatten());
        }
        Ok(latest)
    }

    /// Counts a failure of `subject`; failures before `window_start` are
    /// forgotten. Returns the count including this one.
    pub async fn record_login_failure(
        &self,
        subject: &str,
        now: Millis,
        window_start: Millis,
    ) -> Result<i64> {
        Ok(with_pool!(self, |p| {
            sqlx::query_scalar(
                "INSERT INTO admin_login_failures (subject, failures, last_failed_at) VALUES ($1, 1, $2)
                 ON CONFLICT (subject) DO UPDATE SET
                   failures = CASE WHEN admin_login_failures.last_failed_at < $3 THEN 1
                                   ELSE admin_login_failures.failures + 1 END,
                   last_failed_at = $2
                 RETURNING failures",
            )
            .bind(subject)
            .bind(now)
            .bind(window_start)
            .fetch_one(p)
            .await?
        }))
    }

    pub async fn lock_login(&self, subject: &str, until: Millis) -> Result<()> {
        with_pool!(self, |p| {
            sqlx::query("UPDATE admin_login_failures SET locked_until = $2 WHERE subject = $1")
                .bind(subject)
                .bind(until)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    pub async fn clear_login_failures(&self, subject: &str) -> Result<()> {
        with_pool!(self, |p| {
            sqlx::query("DELETE FROM admin_login_failures WHERE subject = $1")
                .bind(subject)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(())
    }
}

impl Db {
    /// How many subscriptions of a newsletter are in each state.
    pub async fn subscription_state_counts(
        &self,
        newsletter_id: i64,
    ) -> Result<Vec<(crate::domain::SubscriptionState, i64)>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT state, COUNT(*) FROM subscriptions WHERE newsletter_id = $1 GROUP BY state",
            )
            .bind(newsletter_id)
            .fetch_all(p)
            .await?
        }))
    }

    /// The delivery counts of several issues, by issue id, in one query (an
    /// issue without deliveries is absent).
    pub async fn delivery_counts_of(
        &self,
        issue_ids: &[i64],
    ) -> Result<HashMap<i64, DeliveryCounts>> {
        if issue_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let placeholders = (1..=issue_ids.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT issue_id, state, COUNT(*) FROM deliveries WHERE issue_id IN ({placeholders}) GROUP BY issue_id, state"
        );
        let rows: Vec<(i64, DeliveryState, i64)> = with_pool!(self, |p| {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
            for id in issue_ids {
                q = q.bind(*id);
            }
            q.fetch_all(p).await?
        });
        let mut by_issue: HashMap<i64, Vec<(DeliveryState, i64)>> = HashMap::new();
        for (issue_id, state, n) in rows {
            by_issue.entry(issue_id).or_default().push((state, n));
        }
        Ok(by_issue
            .into_iter()
            .map(|(issue_id, rows)| (issue_id, counts_of(rows)))
            .collect())
    }
}

impl Db {
    /// Confirmations of a newsletter's subscriptions by week since
    /// `start` (bucket -1: before it), for the dashboard's growth chart.
    pub async fn confirmations_by_week(
        &self,
        newsletter_id: i64,
        start: Millis,
        week: Millis,
    ) -> Result<Vec<(i64, i64)>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT CASE WHEN confirmed_at < $2 THEN -1 ELSE (confirmed_at - $2) / $3 END AS w, COUNT(*)
                 FROM subscriptions WHERE newsletter_id = $1 AND confirmed_at IS NOT NULL GROUP BY 1",
            )
            .bind(newsletter_id)
            .bind(start)
            .bind(week)
            .fetch_all(p)
            .await?
        }))
    }

    /// Confirmed subscriptions that left (unsubscribed, bounced, complained)
    /// by week since `start`, like [`Db::confirmations_by_week`].
    pub async fn departures_by_week(
        &self,
        newsletter_id: i64,
        start: Millis,
        week: Millis,
    ) -> Result<Vec<(i64, i64)>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT CASE WHEN COALESCE(unsubscribed_at, updated_at) < $2 THEN -1
                             ELSE (COALESCE(unsubscribed_at, updated_at) - $2) / $3 END AS w, COUNT(*)
                 FROM subscriptions
                 WHERE newsletter_id = $1 AND confirmed_at IS NOT NULL AND state <> 'confirmed' GROUP BY 1",
            )
            .bind(newsletter_id)
            .bind(start)
            .bind(week)
            .fetch_all(p)
            .await?
        }))
    }

    /// Permanent failures since `since`, grouped by the relay's reply, most common first.
    pub async fn failures_by_reply(&self, since: Millis, limit: i64) -> Result<Vec<(String, i64)>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT COALESCE(last_reply, failure_reason, '') AS reply, COUNT(*) AS n FROM deliveries
                 WHERE state = 'failed' AND updated_at >= $1
                 GROUP BY COALESCE(last_reply, failure_reason, '') ORDER BY n DESC LIMIT $2",
            )
            .bind(since)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }
}

impl Db {
    /// Writes the order of a newsletter's unpublished items (the issue's
    /// order at compose), in one transaction.
    pub async fn set_item_positions(
        &self,
        newsletter_id: i64,
        positions: &[(i64, i64)],
    ) -> Result<()> {
        with_tx!(self, |tx| {
            for (id, position) in positions {
                sqlx::query(
                    "UPDATE items SET position = $3 WHERE id = $1 AND newsletter_id = $2 AND state <> 'published'",
                )
                .bind(*id)
                .bind(newsletter_id)
                .bind(*position)
                .execute(&mut *tx)
                .await?;
            }
            Ok::<_, super::StoreError>(())
        })
    }
}

impl Db {
    /// Like `subscribers_page`, only addresses containing `needle`
    /// (lower-case, compared with the address's lower-case form).
    pub async fn search_subscribers_page(
        &self,
        newsletter_id: i64,
        needle: &str,
        state: Option<crate::domain::SubscriptionState>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<super::subscribers::ListedSubscriber>> {
        let escaped = needle
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = format!("%{escaped}%");
        // Without a state, walk subscribers in id order from `after` and stop
        // at `limit` (SQLite takes CROSS JOIN as "this table first"): a page
        // costs the same at row 1 and row 1,000,000. Starting from the
        // (newsletter, state) index instead sorted the whole list for every
        // page (about 250 ms at 1,000,000 rows). With a state, that index
        // finds a rare state at once, so it stays.
        let sql = if state.is_none() {
            "SELECT s.id, s.email, s.name, s.attributes, sub.state, s.created_at, sub.confirmed_at, sub.unsubscribed_at
             FROM subscribers s CROSS JOIN subscriptions sub
             WHERE sub.subscriber_id = s.id AND sub.newsletter_id = $1 AND ($2 IS NULL OR sub.state = $2)
               AND s.id > $3 AND lower(s.email) LIKE $5 ESCAPE '\\'
             ORDER BY s.id LIMIT $4"
        } else {
            "SELECT s.id, s.email, s.name, s.attributes, sub.state, s.created_at, sub.confirmed_at, sub.unsubscribed_at
             FROM subscriptions sub JOIN subscribers s ON s.id = sub.subscriber_id
             WHERE sub.newsletter_id = $1 AND ($2 IS NULL OR sub.state = $2) AND s.id > $3
               AND lower(s.email) LIKE $5 ESCAPE '\\'
             ORDER BY s.id LIMIT $4"
        };
        Ok(with_pool!(self, |p| {
            sqlx::query_as(sql)
                .bind(newsletter_id)
                .bind(state)
                .bind(after)
                .bind(limit)
                .bind(pattern)
                .fetch_all(p)
                .await?
        }))
    }
}

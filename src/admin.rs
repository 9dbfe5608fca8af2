//! The editors' web page's services: passwords (argon2id), sessions and the
//! failed-login lockout. `web/admin/` translates HTTP to these.
//!
//! A session id is 256 random bits in the cookie; only its SHA-256 is
//! stored, like an API token. Each session has its own CSRF token, put in
//! every form and checked on every POST.

use std::fmt;
use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::domain::{EmailAddress, Millis, now_ms};
use crate::store::StoreError;

/// A session ends after this long without a request…
pub const SESSION_IDLE_MS: Millis = 2 * 60 * 60 * 1000;
/// …and this long after login, whatever happens.
pub const SESSION_ABSOLUTE_MS: Millis = 12 * 60 * 60 * 1000;
/// `last_seen_at` is written at most this often, so reads stay reads.
const TOUCH_EVERY_MS: Millis = 60 * 1000;

/// Failures older than this are forgotten.
const FAILURE_WINDOW_MS: Millis = 15 * 60 * 1000;
/// Failures of one account (known or not) before it is locked.
pub const ACCOUNT_FAILURES_BEFORE_LOCK: i64 = 5;
/// Failures from one client address before it is locked: higher, since an
/// office shares one address.
pub const IP_FAILURES_BEFORE_LOCK: i64 = 20;
/// The first lock; each further failure doubles it, up to the maximum.
const FIRST_LOCK_MS: Millis = 60 * 1000;
const MAX_LOCK_MS: Millis = 15 * 60 * 1000;

pub const MIN_PASSWORD_CHARS: usize = 12;
/// Bounds the hashing work one request can ask for.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A password as typed. Never shown: `Debug` hides it and there is no `Display`.
pub struct Password(String);

impl Password {
    /// For setting a password: the length rules apply.
    pub fn new(s: String) -> Result<Password, AdminError> {
        let chars = s.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(AdminError::WeakPassword(format!(
                "it has {chars} characters; use at least {MIN_PASSWORD_CHARS} (a few unrelated words are easy to remember)"
            )));
        }
        if s.len() > MAX_PASSWORD_BYTES {
            return Err(AdminError::WeakPassword(format!(
                "it is longer than {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        Ok(Password(s))
    }

    /// Constant-time, for "type it again".
    pub fn same_as(&self, other: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(other.as_bytes()))
    }

    /// For a login attempt: anything, cut to the maximum (so an attacker
    /// cannot ask for unbounded hashing work).
    pub fn attempt(s: &str) -> Password {
        let mut end = s.len().min(MAX_PASSWORD_BYTES);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Password(s[..end].to_owned())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0} is not an editor; add it with `herald editor add {0}` first")]
    NotAnEditor(String),
    #[error("that password is too weak: {0}")]
    WeakPassword(String),
    #[error("could not hash the password: {0}")]
    Hash(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The editor behind a live session.
#[derive(Debug, Clone)]
pub struct AdminSession {
    pub editor_id: i64,
    pub email: String,
    pub csrf_token: String,
    id_hash: String,
}

impl AdminSession {
    /// Constant-time comparison with the token a form sent.
    pub fn csrf_matches(&self, sent: &str) -> bool {
        bool::from(self.csrf_token.as_bytes().ct_eq(sent.as_bytes()))
    }
}

/// What a login attempt came to.
#[derive(Debug)]
pub enum LoginOutcome {
    /// The cookie value (shown only now) and the session's CSRF token.
    LoggedIn { session_id: String },
    /// Wrong email or password (which of the two is never said).
    Refused,
    /// Too many failures for this account or from this client.
    Locked { until: Millis },
}

fn argon2() -> Argon2<'static> {
    // OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane): the crate's defaults.
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

fn hash_password(password: &Password) -> Result<String, AdminError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| AdminError::Hash(e.to_string()))?;
    argon2()
        .hash_password(password.0.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AdminError::Hash(e.to_string()))
}

/// Verified against when there is no hash to verify against (unknown
/// address, no password set), so that such a login takes as long as a
/// wrong password.
static DUMMY_HASH: LazyLock<Option<String>> =
    LazyLock::new(|| hash_password(&Password(B64.encode(rand::random::<[u8; 24]>()))).ok());

fn verify(password: &Password, stored: Option<&str>) -> bool {
    let (phc, real) = match stored {
        Some(h) => (h, true),
        None => match DUMMY_HASH.as_deref() {
            Some(h) => (h, false),
            None => return false,
        },
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        tracing::warn!(
            "an editor's stored password hash does not parse; set it again with `herald editor passwd`"
        );
        return false;
    };
    argon2()
        .verify_password(password.0.as_bytes(), &parsed)
        .is_ok()
        && real
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn lock_for(failures: i64, threshold: i64) -> Option<Millis> {
    let over = failures - threshold;
    (over >= 0).then(|| {
        let doublings = u32::try_from(over.min(10)).unwrap_or(10);
        (FIRST_LOCK_MS << doublings).min(MAX_LOCK_MS)
    })
}

impl App {
    /// `herald editor passwd`: sets the password and ends the editor's sessions.
    pub async fn set_editor_password(
        &self,
        email: &EmailAddress,
        password: Password,
    ) -> Result<(), AdminError> {
        let editor = self
            .db
            .editor_credentials(email)
            .await?
            .ok_or_else(|| AdminError::NotAnEditor(email.to_string()))?;
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| AdminError::Hash(e.to_string()))??;
        if !self.db.set_editor_password(editor.id, &hash).await? {
            return Err(AdminError::NotAnEditor(email.to_string()));
        }
        tracing::info!(
            editor_id = editor.id,
            "editor password set; their sessions ended"
        );
        Ok(())
    }

    /// Checks a login. Takes as long for an unknown address as for a wrong
    /// password; counts failures per account and per client address.
    pub async fn admin_login(
        &self,
        email: &str,
        password: Password,
        client: std::net::IpAddr,
    ) -> Result<LoginOutcome, AdminError> {
        let now = now_ms();
        let parsed = EmailAddress::parse(email.trim()).ok();
        let account = format!(
            "email:{}",
            parsed
                .as_ref()
                .map_or_else(|| email.trim().to_lowercase(), |e| e.canonical().to_owned())
        );
        let ip = format!("ip:{client}");
        if let Some(until) = self.db.login_locked_until(&[&account, &ip], now).await? {
            return Ok(LoginOutcome::Locked { until });
        }
        let editor = match &parsed {
            Some(e) => self.db.editor_credentials(e).await?,
            None => None,
        };
        let stored = editor.as_ref().and_then(|e| e.password_hash.clone());
        let ok = tokio::task::spawn_blocking(move || verify(&password, stored.as_deref()))
            .await
            .unwrap_or(false);
        let Some(editor) = editor.filter(|_| ok) else {
            let mut locked = None;
            for (subject, threshold) in [
                (&account, ACCOUNT_FAILURES_BEFORE_LOCK),
                (&ip, IP_FAILURES_BEFORE_LOCK),
            ] {
                let n = self
                    .db
                    .record_login_failure(subject, now, now - FAILURE_WINDOW_MS)
                    .await?;
                if let Some(ms) = lock_for(n, threshold) {
                    self.db.lock_login(subject, now + ms).await?;
                    locked = locked.max(Some(now + ms));
                }
            }
            tracing::info!(client = %client, "admin login refused");
            return Ok(match locked {
                Some(until) => LoginOutcome::Locked { until },
                None => LoginOutcome::Refused,
            });
        };
        self.db.clear_login_failures(&account).await?;
        self.db.clear_login_failures(&ip).await?;
        let session_id = B64.encode(rand::random::<[u8; 32]>());
        let csrf = B64.encode(rand::random::<[u8; 32]>());
        self.db
            .insert_admin_session(
                &sha256_hex(&session_id),
                editor.id,
                &csrf,
                now,
                now + SESSION_ABSOLUTE_MS,
            )
            .await?;
        tracing::info!(editor_id = editor.id, "admin login");
        Ok(LoginOutcome::LoggedIn { session_id })
    }

    /// The live session a cookie names, if any (renews its idle time).
    pub async fn admin_session(
        &self,
        session_id: &str,
    ) -> Result<Option<AdminSession>, StoreError> {
        if session_id.is_empty() || session_id.len() > 100 {
            return Ok(None);
        }
        let now = now_ms();
        let id_hash = sha256_hex(session_id);
        let Some(row) = self
            .db
            .live_admin_session(&id_hash, now, now - SESSION_IDLE_MS)
            .await?
        else {
            return Ok(None);
        };
        if now - row.last_seen_at > TOUCH_EVERY_MS {
            self.db.touch_admin_session(&id_hash, now).await?;
        }
        Ok(Some(AdminSession {
            editor_id: row.editor_id,
            email: row.email,
            csrf_token: row.csrf_token,
            id_hash,
        }))
    }

    pub async fn admin_logout(&self, session: &AdminSession) -> Result<(), StoreError> {
        let now = now_ms();
        self.db
            .delete_admin_session(&session.id_hash, now, now - SESSION_IDLE_MS)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify_and_hide() {
        let p = Password::new("correct horse battery".into()).unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
        let h = hash_password(&p).unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify(
            &Password::attempt("correct horse battery"),
            Some(&h)
        ));
        assert!(!verify(
            &Password::attempt("correct horse battery!"),
            Some(&h)
        ));
        // No stored hash never verifies, even with the dummy's own input.
        assert!(!verify(&Password::attempt(""), None));
        assert!(Password::new("short".into()).is_err());
    }

    #[test]
    fn locks_grow_and_are_capped() {
        assert_eq!(lock_for(4, 5), None);
        assert_eq!(lock_for(5, 5), Some(FIRST_LOCK_MS));
        assert_eq!(lock_for(6, 5), Some(2 * FIRST_LOCK_MS));
        assert_eq!(lock_for(500, 5), Some(MAX_LOCK_MS));
    }
}

/// An issue as the admin's list shows it: the summary and its delivery counts.
#[derive(Debug)]
pub struct IssueWithCounts {
    pub issue: crate::store::content::IssueSummary,
    pub counts: crate::store::deliveries::DeliveryCounts,
}

impl App {
    /// How many subscriptions of the newsletter are in each state (every
    /// state listed, zero included).
    pub async fn subscription_counts(
        &self,
        newsletter: &crate::store::Newsletter,
    ) -> Result<Vec<(crate::domain::SubscriptionState, i64)>, StoreError> {
        let found = self.db.subscription_state_counts(newsletter.id).await?;
        Ok(crate::domain::SubscriptionState::ALL
            .iter()
            .map(|s| {
                let n = found.iter().find(|(f, _)| f == s).map_or(0, |(_, n)| *n);
                (*s, n)
            })
            .collect())
    }

    /// The newest `limit` issues with their delivery counts, in two queries.
    pub async fn issues_with_counts(
        &self,
        newsletter: &crate::store::Newsletter,
        limit: usize,
    ) -> Result<Vec<IssueWithCounts>, StoreError> {
        let mut issues = self.list_issues(newsletter).await?;
        issues.truncate(limit);
        let ids: Vec<i64> = issues.iter().map(|i| i.id).collect();
        let mut counts = self.db.delivery_counts_of(&ids).await?;
        Ok(issues
            .into_iter()
            .map(|issue| {
                let counts = counts.remove(&issue.id).unwrap_or_default();
                IssueWithCounts { issue, counts }
            })
            .collect())
    }
}

/// One week of the growth chart: confirmed subscriptions at its end.
#[derive(Debug, Clone)]
pub struct WeekCount {
    pub week_start: Millis,
    pub confirmed: i64,
}

const WEEK_MS: Millis = 7 * 24 * 60 * 60 * 1000;

impl App {
    /// Confirmed subscriptions at the end of each of the last `weeks`
    /// weeks (the current one ends now), oldest first. Two grouped scans,
    /// whatever the number of weeks.
    pub async fn subscriber_growth(
        &self,
        newsletter: &crate::store::Newsletter,
        weeks: usize,
    ) -> Result<Vec<WeekCount>, StoreError> {
        let now = now_ms();
        let weeks_i = i64::try_from(weeks).unwrap_or(52);
        let start = now - weeks_i * WEEK_MS;
        let gains = self
            .db
            .confirmations_by_week(newsletter.id, start, WEEK_MS)
            .await?;
        let losses = self
            .db
            .departures_by_week(newsletter.id, start, WEEK_MS)
            .await?;
        let at = |rows: &[(i64, i64)], w: i64| {
            rows.iter()
                .filter(|(b, _)| *b == w)
                .map(|(_, n)| n)
                .sum::<i64>()
        };
        let mut total = at(&gains, -1) - at(&losses, -1);
        Ok((0..weeks_i)
            .map(|w| {
                total += at(&gains, w) - at(&losses, w);
                WeekCount {
                    week_start: start + w * WEEK_MS,
                    confirmed: total,
                }
            })
            .collect())
    }

    /// Permanent failures of the last `days` days grouped by the reply.
    pub async fn recent_failures_by_reply(
        &self,
        days: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.db
            .failures_by_reply(now_ms() - days * 24 * 60 * 60 * 1000, limit)
            .await
    }
}

impl App {
    /// Moves an unpublished item one place up or down in the order compose
    /// uses. Positions end at 0 for the last item, so an item added later
    /// (position 0, a higher id) comes after every ordered one.
    pub async fn move_item(
        &self,
        newsletter: &crate::store::Newsletter,
        item_id: i64,
        up: bool,
    ) -> Result<(), crate::content::ContentError> {
        let mut ids: Vec<i64> = self
            .list_items(newsletter, None)
            .await?
            .into_iter()
            .filter(|i| i.state != crate::domain::ItemState::Published)
            .map(|i| i.id)
            .collect();
        let at = ids
            .iter()
            .position(|id| *id == item_id)
            .ok_or(crate::content::ContentError::NoItem(item_id))?;
        let other = if up {
            at.checked_sub(1)
        } else {
            Some(at + 1).filter(|o| *o < ids.len())
        };
        let Some(other) = other else {
            return Ok(());
        };
        ids.swap(at, other);
        let n = i64::try_from(ids.len()).unwrap_or(i64::MAX);
        let positions: Vec<(i64, i64)> = ids
            .iter()
            .zip(0..)
            .map(|(id, i)| (*id, i - n + 1))
            .collect();
        self.db
            .set_item_positions(newsletter.id, &positions)
            .await?;
        Ok(())
    }
}

impl App {
    /// A page of subscribers whose address contains `needle` (any case),
    /// keyset-paged by id like [`App::subscribers_page`].
    pub async fn search_subscribers(
        &self,
        newsletter: &crate::store::Newsletter,
        needle: &str,
        state: Option<crate::domain::SubscriptionState>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<crate::store::subscribers::ListedSubscriber>, StoreError> {
        let needle = needle.trim().to_lowercase();
        if needle.is_empty() {
            return self.subscribers_page(newsletter, state, after, limit).await;
        }
        self.db
            .search_subscribers_page(newsletter.id, &needle, state, after, limit)
            .await
    }
}

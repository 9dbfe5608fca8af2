//! Subscribers, subscriptions, confirmation tokens, consent events and
//! suppressions.

use std::collections::{HashMap, HashSet};

use futures::TryStreamExt;
use sqlx::QueryBuilder;

use super::{Db, Result, StoreError, push_list, with_pool, with_tx};
use crate::domain::{ConsentKind, EmailAddress, Millis, SubscriptionState};

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Subscriber {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub attributes: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct SubscriptionRow {
    pub subscriber_id: i64,
    pub newsletter_id: i64,
    pub state: SubscriptionState,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub confirmed_at: Option<Millis>,
    pub unsubscribed_at: Option<Millis>,
}

/// A subscriber with their state for one newsletter: what lists and exports show.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ListedSubscriber {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub attributes: String,
    pub state: SubscriptionState,
    pub created_at: Millis,
    pub confirmed_at: Option<Millis>,
    pub unsubscribed_at: Option<Millis>,
}

/// Who asked for a change, from where, under which wording: the audit trail.
#[derive(Debug, Clone, Default)]
pub struct ConsentContext {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub source: String,
    pub consent_text_version: Option<String>,
    pub method: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ConsentEventRow {
    #[serde(serialize_with = "super::serialize_as_str")]
    pub kind: ConsentKind,
    pub at: Millis,
    pub newsletter_id: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub source: String,
    pub consent_text_version: Option<String>,
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLookup {
    Valid {
        subscriber_id: i64,
        newsletter_id: i64,
    },
    AlreadyUsed {
        subscriber_id: i64,
        newsletter_id: i64,
    },
    Expired,
    Unknown,
}

/// The writes of a state change inside a transaction `$tx`: the
/// subscription row (created if needed) and, when confirming, the lifting of
/// the address's suppression (its hash is `$hash`). A macro rather than a
/// function so that it compiles once per backend inside `with_tx!`.
macro_rules! write_subscription_state {
    ($tx:ident, $subscriber_id:expr, $newsletter_id:expr, $state:expr, $hash:expr, $now:expr) => {{
        let state: SubscriptionState = $state;
        let now: Millis = $now;
        let confirmed_at = (state == SubscriptionState::Confirmed).then_some(now);
        let unsubscribed_at = (state == SubscriptionState::Unsubscribed).then_some(now);
        sqlx::query(
            "INSERT INTO subscriptions (subscriber_id, newsletter_id, state, created_at, updated_at, confirmed_at, unsubscribed_at)
             VALUES ($1, $2, $3, $4, $4, $5, $6)
             ON CONFLICT (subscriber_id, newsletter_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at,
               confirmed_at = COALESCE(excluded.confirmed_at, subscriptions.confirmed_at),
               unsubscribed_at = COALESCE(excluded.unsubscribed_at, subscriptions.unsubscribed_at),
               soft_bounces = 0, last_confirmation_at = NULL",
        )
        .bind($subscriber_id)
        .bind($newsletter_id)
        .bind(state)
        .bind(now)
        .bind(confirmed_at)
        .bind(unsubscribed_at)
        .execute(&mut *$tx)
        .await?;
        if state == SubscriptionState::Confirmed {
            sqlx::query("DELETE FROM suppressions WHERE address_hash = $1")
                .bind($hash)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

const SUBSCRIBER_COLUMNS: &str = "id, email, name, attributes, created_at";
const SUBSCRIPTION_COLUMNS: &str =
    "subscriber_id, newsletter_id, state, created_at, updated_at, confirmed_at, unsubscribed_at";

impl Db {
    pub async fn subscriber_by_email(&self, email: &EmailAddress) -> Result<Option<Subscriber>> {
        let sql = format!("SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE lower(email) = $1");
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(email.canonical())
        .fetch_optional(p)
        .await?))
    }

    pub async fn subscriber_by_id(&self, id: i64) -> Result<Option<Subscriber>> {
        let sql = format!("SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE id = $1");
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(id)
        .fetch_optional(p)
        .await?))
    }

    /// Returns the subscriber for `email` (any spelling of it), creating it
    /// (with `name`, spelled as typed) if new. An existing subscriber's name
    /// and spelling are left alone: the public form must not let anyone
    /// rename someone else.
    pub async fn ensure_subscriber(
        &self,
        email: &EmailAddress,
        name: Option<&str>,
        now: Millis,
    ) -> Result<(Subscriber, bool)> {
        let inserted: Option<i64> = with_pool!(self, |p| {
            sqlx::query_scalar(
                "INSERT INTO subscribers (email, name, attributes, created_at) VALUES ($1, $2, '{}', $3)
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(email.as_str())
            .bind(name)
            .bind(now)
            .fetch_optional(p)
            .await?
        });
        let sub = self
            .subscriber_by_email(email)
            .await?
            .ok_or_else(|| super::StoreError::Corrupt(format!("subscriber {email} vanished")))?;
        Ok((sub, inserted.is_some()))
    }

    pub async fn set_subscriber_name(&self, id: i64, name: &str) -> Result<()> {
        with_pool!(self, |p| sqlx::query(
            "UPDATE subscribers SET name = $1 WHERE id = $2"
        )
        .bind(name)
        .bind(id)
        .execute(p)
        .await?
        .rows_affected());
        Ok(())
    }

    pub async fn subscription(
        &self,
        subscriber_id: i64,
        newsletter_id: i64,
    ) -> Result<Option<SubscriptionRow>> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE subscriber_id = $1 AND newsletter_id = $2"
        );
        Ok(with_pool!(self, |p| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(subscriber_id)
                .bind(newsletter_id)
                .fetch_optional(p)
                .await?
        }))
    }

    /// Creates a `pending` subscription if there is none; an existing one
    /// keeps its state (an unsubscribed address stays unsubscribed until it confirms).
    pub async fn ensure_pending_subscription(
        &self,
        subscriber_id: i64,
        newsletter_id: i64,
        now: Millis,
    ) -> Result<()> {
        with_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO subscriptions (subscriber_id, newsletter_id, state, created_at, updated_at)
                 VALUES ($1, $2, $4, $3, $3) ON CONFLICT (subscriber_id, newsletter_id) DO NOTHING",
            )
            .bind(subscriber_id)
            .bind(newsletter_id)
            .bind(now)
            .bind(SubscriptionState::Pending)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Moves a subscription to `state` (creating it if needed) and records
    /// the consent event, in one transaction. Confirming also lifts any
    /// suppression of the address: a fresh confirmation is the only way out.
    pub async fn change_subscription(
        &self,
        subscriber_id: i64,
        email: &EmailAddress,
        newsletter_id: i64,
        state: SubscriptionState,
        kind: ConsentKind,
        ctx: &ConsentContext,
    ) -> Result<()> {
        let now = crate::domain::now_ms();
        let hash = email.suppression_hash();
        with_tx!(self, |tx| {
            write_subscription_state!(tx, subscriber_id, newsletter_id, state, &hash, now);
            insert_consent(&mut *tx, subscriber_id, newsletter_id, kind, ctx, now).await?;
            Ok::<(), StoreError>(())
        })
    }

    /// Double opt-in, step two, as one transaction: spends the token,
    /// confirms the subscription, lifts a suppression and records the
    /// consent event (its kind chosen by `kind_for` from the state before).
    /// Either all of it happens or none: a failure half-way must not leave a
    /// spent link and an unconfirmed reader (whom the resend interval would
    /// then refuse a new link). `None`: the token was not spendable (used,
    /// expired or unknown by the time the transaction ran).
    pub async fn confirm_with_token(
        &self,
        token_hash: &str,
        ctx: &ConsentContext,
        now: Millis,
        kind_for: impl Fn(Option<SubscriptionState>) -> ConsentKind,
    ) -> Result<Option<i64>> {
        with_tx!(self, |tx| {
            let spent: Option<(i64, i64)> = sqlx::query_as(
                "UPDATE confirmation_tokens SET used_at = $2
                 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
                 RETURNING subscriber_id, newsletter_id",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            match spent {
                None => Ok::<_, StoreError>(None),
                Some((subscriber_id, newsletter_id)) => {
                    let stored: Option<String> =
                        sqlx::query_scalar("SELECT email FROM subscribers WHERE id = $1")
                            .bind(subscriber_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    let stored = stored.ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "confirmation token of subscriber {subscriber_id}, who no longer exists"
                        ))
                    })?;
                    let email = EmailAddress::parse(&stored).map_err(|e| {
                        StoreError::Corrupt(format!("stored address {stored:?}: {e}"))
                    })?;
                    let previous: Option<SubscriptionState> = sqlx::query_scalar(
                        "SELECT state FROM subscriptions WHERE subscriber_id = $1 AND newsletter_id = $2",
                    )
                    .bind(subscriber_id)
                    .bind(newsletter_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let hash = email.suppression_hash();
                    write_subscription_state!(
                        tx,
                        subscriber_id,
                        newsletter_id,
                        SubscriptionState::Confirmed,
                        &hash,
                        now
                    );
                    let kind = kind_for(previous);
                    insert_consent(&mut *tx, subscriber_id, newsletter_id, kind, ctx, now).await?;
                    Ok(Some(newsletter_id))
                }
            }
        })
    }

    pub async fn record_consent(
        &self,
        subscriber_id: i64,
        newsletter_id: i64,
        kind: ConsentKind,
        ctx: &ConsentContext,
        now: Millis,
    ) -> Result<()> {
        with_pool!(self, |p| insert_consent(
            p,
            subscriber_id,
            newsletter_id,
            kind,
            ctx,
            now
        )
        .await)
    }

    pub async fn consent_history(&self, subscriber_id: i64) -> Result<Vec<ConsentEventRow>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT kind, at, newsletter_id, ip, user_agent, source, consent_text_version, method
                 FROM consent_events WHERE subscriber_id = $1 ORDER BY at, id",
            )
            .bind(subscriber_id)
            .fetch_all(p)
            .await?
        }))
    }

    /// Records that a confirmation mail may go out now, unless one went out
    /// after `not_since`. Atomic, so concurrent requests send at most one.
    pub async fn claim_confirmation_slot(
        &self,
        subscriber_id: i64,
        newsletter_id: i64,
        now: Millis,
        not_since: Millis,
    ) -> Result<bool> {
        let done = with_pool!(self, |p| {
            sqlx::query(
                "UPDATE subscriptions SET last_confirmation_at = $3
                 WHERE subscriber_id = $1 AND newsletter_id = $2
                   AND (last_confirmation_at IS NULL OR last_confirmation_at <= $4)",
            )
            .bind(subscriber_id)
            .bind(newsletter_id)
            .bind(now)
            .bind(not_since)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    pub async fn insert_confirmation_token(
        &self,
        token_hash: &str,
        subscriber_id: i64,
        newsletter_id: i64,
        now: Millis,
        expires_at: Millis,
    ) -> Result<()> {
        with_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO confirmation_tokens (token_hash, subscriber_id, newsletter_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash)
            .bind(subscriber_id)
            .bind(newsletter_id)
            .bind(now)
            .bind(expires_at)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    pub async fn lookup_confirmation_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> Result<TokenLookup> {
        let row: Option<(i64, i64, Millis, Option<Millis>)> = with_pool!(self, |p| {
            sqlx::query_as("SELECT subscriber_id, newsletter_id, expires_at, used_at FROM confirmation_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(p)
                .await?
        });
        Ok(match row {
            None => TokenLookup::Unknown,
            Some((subscriber_id, newsletter_id, _, Some(_))) => TokenLookup::AlreadyUsed {
                subscriber_id,
                newsletter_id,
            },
            Some((_, _, expires_at, None)) if expires_at <= now => TokenLookup::Expired,
            Some((subscriber_id, newsletter_id, _, None)) => TokenLookup::Valid {
                subscriber_id,
                newsletter_id,
            },
        })
    }

    pub async fn is_suppressed(&self, email: &EmailAddress) -> Result<bool> {
        let n: i64 = with_pool!(self, |p| {
            sqlx::query_scalar("SELECT COUNT(*) FROM suppressions WHERE address_hash = $1")
                .bind(email.suppression_hash())
                .fetch_one(p)
                .await?
        });
        Ok(n > 0)
    }

    pub async fn suppress(&self, email: &EmailAddress, reason: &str, now: Millis) -> Result<()> {
        with_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO suppressions (address_hash, email, reason, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (address_hash) DO NOTHING",
            )
            .bind(email.suppression_hash())
            .bind(email.as_str())
            .bind(reason)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Subscribers of a newsletter, optionally in one state, oldest first.
    pub async fn list_subscribers(
        &self,
        newsletter_id: i64,
        state: Option<SubscriptionState>,
    ) -> Result<Vec<ListedSubscriber>> {
        let mut out = Vec::new();
        self.for_each_subscriber(newsletter_id, state, |row| {
            out.push(row);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Streams subscribers row by row (constant memory for exports).
    pub async fn for_each_subscriber(
        &self,
        newsletter_id: i64,
        state: Option<SubscriptionState>,
        mut f: impl FnMut(ListedSubscriber) -> Result<()>,
    ) -> Result<()> {
        with_pool!(self, |p| {
            let mut rows = sqlx::query_as::<_, ListedSubscriber>(
                "SELECT s.id, s.email, s.name, s.attributes, sub.state, s.created_at, sub.confirmed_at, sub.unsubscribed_at
                 FROM subscriptions sub JOIN subscribers s ON s.id = sub.subscriber_id
                 WHERE sub.newsletter_id = $1 AND ($2 IS NULL OR sub.state = $2)
                 ORDER BY s.id",
            )
            .bind(newsletter_id)
            .bind(state)
            .fetch(p);
            while let Some(row) = rows.try_next().await? {
                f(row)?;
            }
        });
        Ok(())
    }

    pub async fn subscriptions_of(
        &self,
        subscriber_id: i64,
    ) -> Result<Vec<(String, SubscriptionRow)>> {
        let rows: Vec<SubscriptionRowWithSlug> = with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT n.slug, sub.subscriber_id, sub.newsletter_id, sub.state, sub.created_at, sub.updated_at, sub.confirmed_at, sub.unsubscribed_at
                 FROM subscriptions sub JOIN newsletters n ON n.id = sub.newsletter_id WHERE sub.subscriber_id = $1 ORDER BY n.slug",
            )
            .bind(subscriber_id)
            .fetch_all(p)
            .await?
        });
        Ok(rows.into_iter().map(|r| (r.slug, r.row)).collect())
    }

    /// GDPR erasure: the subscriber row and everything personal goes; a
    /// hashed suppression stays so that the address is never mailed again
    /// by accident (an import, say) without a fresh confirmation.
    pub async fn erase_subscriber(
        &self,
        subscriber: &Subscriber,
        email: &EmailAddress,
        now: Millis,
    ) -> Result<()> {
        let hash = email.suppression_hash();
        with_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO suppressions (address_hash, email, reason, created_at) VALUES ($1, NULL, 'erased', $2)
                 ON CONFLICT (address_hash) DO UPDATE SET email = NULL",
            )
            .bind(&hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE consent_events SET ip = NULL, user_agent = NULL WHERE subscriber_id = $1",
            )
            .bind(subscriber.id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM subscribers WHERE id = $1")
                .bind(subscriber.id)
                .execute(&mut *tx)
                .await?;
            Ok::<(), super::StoreError>(())
        })
    }
}

#[derive(sqlx::FromRow)]
struct SubscriptionRowWithSlug {
    slug: String,
    #[sqlx(flatten)]
    row: SubscriptionRow,
}

async fn insert_consent<'e, E, DB>(
    executor: E,
    subscriber_id: i64,
    newsletter_id: i64,
    kind: ConsentKind,
    ctx: &ConsentContext,
    now: Millis,
) -> Result<()>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    i64: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    &'e str: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "INSERT INTO consent_events (subscriber_id, newsletter_id, kind, at, ip, user_agent, source, consent_text_version, method)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(subscriber_id)
    .bind(newsletter_id)
    .bind(kind.as_str())
    .bind(now)
    .bind(ctx.ip.clone())
    .bind(ctx.user_agent.clone())
    .bind(ctx.source.clone())
    .bind(ctx.consent_text_version.clone())
    .bind(ctx.method.clone())
    .execute(executor)
    .await?;
    Ok(())
}

/// One validated row of a subscriber import.
#[derive(Debug, Clone)]
pub struct ImportRow {
    pub email: EmailAddress,
    pub name: Option<String>,
    /// A JSON object of the extra columns.
    pub attributes: String,
    /// `email.canonical()` and `email.suppression_hash()`, computed once
    /// when the row is made (by the CSV reader's thread, beside the
    /// database's work rather than in front of it).
    canonical: String,
    suppression_hash: String,
}

impl ImportRow {
    pub fn new(email: EmailAddress, name: Option<String>, attributes: String) -> ImportRow {
        ImportRow {
            canonical: email.canonical(),
            suppression_hash: email.suppression_hash(),
            email,
            name,
            attributes,
        }
    }

    /// The row's identity (`EmailAddress::canonical`).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }
}

/// What the import does with an address that already exists, decided by
/// `subscribers::import` from its current state (`None`: no subscription to
/// this newsletter yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportAction {
    /// Leave it alone (it refused mail; counted as suppressed).
    Refuse,
    /// Refresh name and attributes only.
    Update,
    /// Refresh, and move the subscription to the import's target state.
    UpdateAndSubscribe,
}

/// The counts of one chunk, and the addresses that became pending.
#[derive(Debug, Default)]
pub struct ImportChunkOutcome {
    pub imported: u64,
    pub updated: u64,
    pub suppressed: u64,
    pub duplicate: u64,
    pub pending: Vec<EmailAddress>,
}

/// The import's fixed parameters.
pub struct ImportTarget<'a> {
    pub newsletter_id: i64,
    /// `Confirmed` (editor vouches) or `Pending` (confirmation mail follows).
    pub state: SubscriptionState,
    pub import_id: &'a str,
    pub source: &'a str,
    pub now: Millis,
}

/// The most values one statement binds: SQLite's limit (PostgreSQL's is
/// 65,535). Multi-row statements of a large chunk are split below it.
const MAX_BINDS: usize = 32_766;

impl Db {
    /// Writes one chunk of an import in one transaction, set-wise. Rows are
    /// matched to existing subscribers by canonical address; rows whose
    /// address is suppressed are skipped; `decide` says what happens to an
    /// existing subscriber. `rows` must hold each canonical address once.
    ///
    /// Every step is one multi-row statement (more only past the bind limit),
    /// never one per row. Rows sorted by canonical address (as
    /// `subscribers::import` hands them over) reach the address index in
    /// its order, so a chunk dirties each index page once.
    pub async fn import_chunk(
        &self,
        rows: Vec<ImportRow>,
        target: &ImportTarget<'_>,
        decide: &(dyn Fn(Option<SubscriptionState>) -> ImportAction + Sync),
    ) -> Result<ImportChunkOutcome> {
        let mut out = ImportChunkOutcome::default();
        if rows.is_empty() {
            return Ok(out);
        }
        let ImportTarget {
            newsletter_id,
            state: target_state,
            import_id,
            source,
            now,
        } = *target;
        with_tx!(self, |tx| {
            // Who exists already, their subscription to this newsletter, and
            // was any of them already touched by this import?
            let mut existing: HashMap<String, (i64, bool, Option<SubscriptionState>)> =
                HashMap::new();
            for batch in rows.chunks(MAX_BINDS - 1) {
                let mut q = QueryBuilder::new(
                    "SELECT s.id, lower(s.email), s.last_import_id, sub.state FROM subscribers s
                     LEFT JOIN subscriptions sub ON sub.subscriber_id = s.id AND sub.newsletter_id = ",
                );
                q.push_bind(newsletter_id);
                q.push(" WHERE lower(s.email) IN ");
                push_list(&mut q, batch.iter().map(|r| r.canonical.as_str()));
                let found: Vec<(i64, String, Option<String>, Option<SubscriptionState>)> =
                    q.build_query_as().fetch_all(&mut *tx).await?;
                existing.extend(found.into_iter().map(|(id, key, last, state)| {
                    (key, (id, last.as_deref() == Some(import_id), state))
                }));
            }

            let mut suppressed: HashSet<String> = HashSet::new();
            for batch in rows.chunks(MAX_BINDS) {
                let mut q = QueryBuilder::new(
                    "SELECT address_hash FROM suppressions WHERE address_hash IN ",
                );
                push_list(&mut q, batch.iter().map(|r| r.suppression_hash.as_str()));
                let found: Vec<String> = q.build_query_scalar().fetch_all(&mut *tx).await?;
                suppressed.extend(found);
            }

            let mut updates: Vec<(i64, &ImportRow)> = Vec::new();
            let mut new_rows: Vec<&ImportRow> = Vec::new();
            let mut subscribe_ids: Vec<i64> = Vec::new();
            for r in &rows {
                match existing.get(&r.canonical) {
                    Some((_, true, _)) => out.duplicate += 1,
                    _ if suppressed.contains(&r.suppression_hash) => out.suppressed += 1,
                    Some((id, false, state)) => match decide(*state) {
                        ImportAction::Refuse => out.suppressed += 1,
                        action => {
                            updates.push((*id, r));
                            if action == ImportAction::UpdateAndSubscribe {
                                subscribe_ids.push(*id);
                            }
                        }
                    },
                    None => new_rows.push(r),
                }
            }

            for batch in updates.chunks(MAX_BINDS / 3 - 1) {
                let mut q = QueryBuilder::new("WITH v (id, name, attributes) AS (");
                q.push_values(batch, |mut b, (id, r)| {
                    b.push_bind(*id)
                        .push_bind(r.name.as_deref())
                        .push_bind(r.attributes.as_str());
                });
                q.push(
                    ") UPDATE subscribers SET name = COALESCE(v.name, subscribers.name),
                       attributes = CASE WHEN v.attributes = '{}' THEN subscribers.attributes ELSE v.attributes END,
                       last_import_id = ",
                );
                q.push_bind(import_id);
                q.push(" FROM v WHERE subscribers.id = v.id");
                q.build().execute(&mut *tx).await?;
            }
            out.updated += updates.len() as u64;

            // Plain multi-row VALUES, not `WITH v AS (VALUES …) INSERT … SELECT`:
            // SQLite compiles the latter's thousands of rows as a compound
            // SELECT and spent a sixth of the import planning it.
            for batch in new_rows.chunks(MAX_BINDS / 5) {
                let mut q = QueryBuilder::new(
                    "INSERT INTO subscribers (email, name, attributes, created_at, last_import_id) ",
                );
                q.push_values(batch, |mut b, r| {
                    b.push_bind(r.email.as_str())
                        .push_bind(r.name.as_deref())
                        .push_bind(r.attributes.as_str())
                        .push_bind(now)
                        .push_bind(import_id);
                });
                q.push(" RETURNING id");
                let ids: Vec<i64> = q.build_query_scalar().fetch_all(&mut *tx).await?;
                out.imported += ids.len() as u64;
                subscribe_ids.extend(ids);
            }

            let confirmed_at = (target_state == SubscriptionState::Confirmed).then_some(now);
            for batch in subscribe_ids.chunks(MAX_BINDS / 6 - 1) {
                let mut q = QueryBuilder::new(
                    "INSERT INTO subscriptions (subscriber_id, newsletter_id, state, created_at, updated_at, confirmed_at) ",
                );
                q.push_values(batch, |mut b, id| {
                    b.push_bind(*id)
                        .push_bind(newsletter_id)
                        .push_bind(target_state)
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(confirmed_at);
                });
                q.push(
                    " ON CONFLICT (subscriber_id, newsletter_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at,
                      confirmed_at = excluded.confirmed_at WHERE subscriptions.state = ",
                );
                q.push_bind(SubscriptionState::Pending);
                q.build().execute(&mut *tx).await?;

                let mut q = QueryBuilder::new(
                    "INSERT INTO consent_events (subscriber_id, newsletter_id, kind, at, source, method) ",
                );
                q.push_values(batch, |mut b, id| {
                    b.push_bind(*id)
                        .push_bind(newsletter_id)
                        .push_bind(ConsentKind::Import)
                        .push_bind(now)
                        .push_bind(source)
                        .push_bind("csv");
                });
                q.build().execute(&mut *tx).await?;
            }

            if target_state == SubscriptionState::Pending {
                for batch in subscribe_ids.chunks(MAX_BINDS) {
                    let mut q = QueryBuilder::new("SELECT email FROM subscribers WHERE id IN ");
                    push_list(&mut q, batch.iter().copied());
                    let emails: Vec<String> = q.build_query_scalar().fetch_all(&mut *tx).await?;
                    out.pending
                        .extend(emails.iter().filter_map(|e| EmailAddress::parse(e).ok()));
                }
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(out)
    }
}

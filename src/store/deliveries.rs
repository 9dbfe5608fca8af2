//! Deliveries (one row per recipient of an issue) and their attempts.
//! Every query that touches `deliveries` lives here.

use std::collections::{BTreeMap, HashMap};

use sqlx::QueryBuilder;

use super::{Db, Result, StoreError, push_list, with_pool, with_tx};
use crate::domain::{DeliveryState, IssueStatus, Millis, SubscriptionState};

/// A claimed delivery with what the worker needs to build and send it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub issue_id: i64,
    pub subscriber_id: i64,
    pub attempts: i64,
    pub first_attempt_at: Option<Millis>,
    pub email: String,
    pub name: Option<String>,
    pub newsletter_id: i64,
    /// The subscription's state when read (`unsubscribed` when it is gone).
    pub subscription_state: SubscriptionState,
    /// Whether the address is on the suppression list at claim time.
    pub suppressed: i64,
    /// The delivery's state and claimant when read: before sending, a worker
    /// checks the claim is still its own.
    pub state: DeliveryState,
    pub worker_id: Option<String>,
    /// The issue's status when read (`sending`, `paused`, `cancelled`, …).
    pub issue_status: IssueStatus,
}

/// What became of one delivery attempt; written back in batches.
#[derive(Debug, Clone)]
pub struct DeliveryResult {
    pub delivery_id: i64,
    pub subscriber_id: i64,
    pub newsletter_id: i64,
    pub email: String,
    pub state: DeliveryState,
    /// None for a skip (no SMTP conversation took place).
    pub attempt: Option<AttemptRecord>,
    pub next_attempt_at: Option<Millis>,
    pub failure_reason: Option<String>,
    pub effect: RecipientEffect,
}

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub at: Millis,
    pub duration_ms: i64,
    pub code: Option<i64>,
    pub enhanced: Option<String>,
    pub reply: String,
    pub outcome: String,
    pub worker_id: String,
}

/// What an outcome does to the subscriber beyond this delivery. The engine
/// decides it (policy lives in `delivery::policy`); the store only carries
/// it out, atomically with the delivery's own result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientEffect {
    None,
    /// Delivered: a run of soft bounces is over.
    Delivered,
    /// The subscription becomes `bounced` and the address is suppressed
    /// (`reason` is recorded on the suppression and the consent event).
    Suppress {
        reason: &'static str,
    },
    /// One more soft-bounced issue; once the subscription's count reaches
    /// `suppress_at`, it is suppressed as with `Suppress { reason }`.
    CountSoftBounce {
        suppress_at: i64,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeliveryCounts {
    #[serde(serialize_with = "by_state_sorted")]
    pub by_state: HashMap<DeliveryState, i64>,
    pub total: i64,
}

impl DeliveryCounts {
    pub fn get(&self, state: DeliveryState) -> i64 {
        self.by_state.get(&state).copied().unwrap_or(0)
    }
    pub fn open(&self) -> i64 {
        DeliveryState::ALL
            .iter()
            .filter(|s| s.is_open())
            .map(|s| self.get(*s))
            .sum()
    }
}

/// `herald status --json` lists the states in a stable (alphabetical) order.
fn by_state_sorted<S: serde::Serializer>(
    by_state: &HashMap<DeliveryState, i64>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let sorted: BTreeMap<&str, i64> = by_state.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    serde::Serialize::serialize(&sorted, s)
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct DeliveryListing {
    pub id: i64,
    pub email: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_at: Millis,
    pub last_code: Option<i64>,
    pub last_enhanced: Option<String>,
    pub last_reply: Option<String>,
    pub failure_reason: Option<String>,
    pub sent_at: Option<Millis>,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AttemptListing {
    pub delivery_id: i64,
    pub at: Millis,
    pub duration_ms: i64,
    pub code: Option<i64>,
    pub enhanced: Option<String>,
    pub reply: Option<String>,
    pub outcome: String,
    pub worker_id: String,
}

impl Db {
    /// One delivery per confirmed subscriber, set-wise; running it again
    /// adds only subscribers confirmed since. Marks the issue as sending.
    ///
    /// The issue row is written first, so this transaction holds its lock
    /// (PostgreSQL row lock, SQLite write lock) before adding deliveries:
    /// `complete_issue_if_done` takes the same lock before counting, so it
    /// either runs wholly before (and this re-opens the issue) or sees every
    /// row added here. Otherwise an issue could be marked `sent` with fresh
    /// `queued` rows that no claim (`status = 'sending'`) ever picks up.
    pub async fn enqueue_issue(
        &self,
        issue_id: i64,
        newsletter_id: i64,
        now: Millis,
    ) -> Result<u64> {
        with_tx!(self, |tx| {
            sqlx::query(
                "UPDATE issues SET status = 'sending', send_started_at = COALESCE(send_started_at, $2), completed_at = NULL
                 WHERE id = $1 AND status IN ('draft', 'scheduled', 'sent', 'sending')",
            )
            .bind(issue_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let added = sqlx::query(
                "INSERT INTO deliveries (issue_id, subscriber_id, state, attempts, next_attempt_at, updated_at)
                 SELECT $1, sub.subscriber_id, 'queued', 0, $2, $2 FROM subscriptions sub
                 WHERE sub.newsletter_id = $3 AND sub.state = 'confirmed'
                 ON CONFLICT (issue_id, subscriber_id) DO NOTHING",
            )
            .bind(issue_id)
            .bind(now)
            .bind(newsletter_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            Ok::<_, StoreError>(added)
        })
    }

    /// Claims up to `limit` due deliveries of issues that are sending, with
    /// a lease, and returns them (ascending id) with the recipient and their
    /// standing as read right after the claim (`delivery_details`), on the
    /// same connection: one hand-off to the database per batch rather than
    /// one per few messages, and on SQLite the pages the claim just wrote
    /// are still in that connection's cache (another connection's cache is
    /// dropped whenever anyone else has written). A worker reads a claim
    /// again only if this reading is older than `engine::RECHECK_AFTER` when
    /// its message would go out. A delivery whose lease ran out (its worker
    /// died) is due again.
    /// PostgreSQL: `FOR UPDATE SKIP LOCKED`, so several processes split the
    /// queue; SQLite: one writer, so the single UPDATE is already atomic.
    pub async fn claim_due_deliveries(
        &self,
        worker_id: &str,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>> {
        const DUE: &str = "SELECT d.id FROM deliveries d JOIN issues i ON i.id = d.issue_id
             WHERE i.status = 'sending'
               AND ((d.state IN ('queued', 'retry_wait') AND d.next_attempt_at <= $3)
                    OR (d.state = 'sending' AND d.lease_until < $3))
             ORDER BY d.next_attempt_at, d.id LIMIT $4";
        let sql = match self {
            Db::Postgres(_) => format!(
                "UPDATE deliveries SET state = 'sending', lease_until = $1, worker_id = $2, updated_at = $3
                 WHERE id IN ({DUE} FOR UPDATE OF d SKIP LOCKED) RETURNING id"
            ),
            Db::Sqlite(_) => {
                // One index range scan per state (deliveries_due gives the
                // order), each stopping at the limit, so a claim costs the
                // same however long the queue. With the OR form above SQLite
                // reads and sorts every due delivery on every claim.
                let arm = |cond: &str| {
                    format!(
                        "SELECT * FROM (SELECT d.id, d.next_attempt_at FROM deliveries d JOIN issues i ON i.id = d.issue_id
                         WHERE {cond} AND i.status = 'sending' ORDER BY d.next_attempt_at, d.id LIMIT $4)"
                    )
                };
                format!(
                    "WITH due AS ({} UNION ALL {} UNION ALL {})
                     UPDATE deliveries SET state = 'sending', lease_until = $1, worker_id = $2, updated_at = $3
                     WHERE id IN (SELECT id FROM due ORDER BY next_attempt_at, id LIMIT $4) RETURNING id",
                    arm("d.state = 'queued' AND d.next_attempt_at <= $3"),
                    arm("d.state = 'retry_wait' AND d.next_attempt_at <= $3"),
                    arm("d.state = 'sending' AND d.lease_until < $3"),
                )
            }
        };
        with_pool!(self, |p| {
            let mut conn = p.acquire().await?;
            let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(lease_until)
                .bind(worker_id)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut claimed: Vec<ClaimedDelivery> = details_query(&ids)
                .build_query_as()
                .fetch_all(&mut *conn)
                .await?;
            claimed.sort_unstable_by_key(|d| d.id);
            Ok(claimed)
        })
    }

    /// The recipient and their current standing for each delivery, read
    /// right before sending.
    pub async fn delivery_details(&self, ids: &[i64]) -> Result<Vec<ClaimedDelivery>> {
        with_pool!(self, |p| {
            Ok(details_query(ids).build_query_as().fetch_all(p).await?)
        })
    }

    /// Writes a batch of outcomes in one transaction: delivery rows, attempt
    /// history, and the recipient effects (bounce → suppression).
    pub async fn record_results(&self, results: &[DeliveryResult], now: Millis) -> Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        with_tx!(self, |tx| {
            if self.is_postgres() {
                // Set-wise: one UPDATE … FROM (VALUES …) per chunk rather than
                // one statement per delivery. Not kept prepared (`persistent(false)`):
                // each batch size is a different statement, and a connection's
                // cache of up to 100 of them, some with thousands of parameters,
                // grew the process by tens of MB once group commit made batch
                // sizes vary.
                for chunk in results.chunks(500) {
                    let mut q = QueryBuilder::new(
                        "WITH v (id, state, tried, next_attempt_at, at, code, enhanced, reply, failure_reason, sent_at) AS (",
                    );
                    q.push_values(chunk, |mut b, r| {
                        let a = r.attempt.as_ref();
                        b.push_bind(r.delivery_id)
                            .push_bind(r.state)
                            .push_bind(i64::from(a.is_some()))
                            .push_bind(r.next_attempt_at)
                            .push_bind(a.map(|a| a.at))
                            .push_bind(a.and_then(|a| a.code))
                            .push_bind(a.and_then(|a| a.enhanced.clone()))
                            .push_bind(a.map(|a| a.reply.clone()))
                            .push_bind(r.failure_reason.clone())
                            .push_bind((r.state == DeliveryState::Sent).then_some(now));
                    });
                    q.push(
                        // A DSN may have made it `bounced` while the result was on its way.
                        ") UPDATE deliveries SET state = CASE WHEN deliveries.state = 'bounced' THEN deliveries.state ELSE v.state END,
                           attempts = deliveries.attempts + v.tried,
                           next_attempt_at = COALESCE(v.next_attempt_at, deliveries.next_attempt_at),
                           lease_until = NULL, worker_id = NULL, first_attempt_at = COALESCE(deliveries.first_attempt_at, v.at),
                           last_code = COALESCE(v.code, deliveries.last_code), last_enhanced = COALESCE(v.enhanced, deliveries.last_enhanced),
                           last_reply = COALESCE(v.reply, deliveries.last_reply),
                           failure_reason = CASE WHEN deliveries.state = 'bounced' THEN deliveries.failure_reason ELSE v.failure_reason END,
                           sent_at = COALESCE(v.sent_at, deliveries.sent_at), updated_at = ",
                    );
                    q.push_bind(now);
                    q.push(" FROM v WHERE deliveries.id = v.id AND deliveries.state <> 'sent'");
                    q.build().persistent(false).execute(&mut *tx).await?;
                }
                let attempts: Vec<(&DeliveryResult, &AttemptRecord)> = results
                    .iter()
                    .filter_map(|r| r.attempt.as_ref().map(|a| (r, a)))
                    .collect();
                for chunk in attempts.chunks(500) {
                    let mut q = QueryBuilder::new(
                        "INSERT INTO delivery_attempts (delivery_id, at, duration_ms, code, enhanced, reply, outcome, worker_id) ",
                    );
                    q.push_values(chunk, |mut b, (r, a)| {
                        b.push_bind(r.delivery_id)
                            .push_bind(a.at)
                            .push_bind(a.duration_ms)
                            .push_bind(a.code)
                            .push_bind(a.enhanced.clone())
                            .push_bind(a.reply.clone())
                            .push_bind(a.outcome.clone())
                            .push_bind(a.worker_id.clone());
                    });
                    q.build().persistent(false).execute(&mut *tx).await?;
                }
                let delivered: Vec<&DeliveryResult> = results
                    .iter()
                    .filter(|r| r.effect == RecipientEffect::Delivered)
                    .collect();
                for chunk in delivered.chunks(500) {
                    let mut q = QueryBuilder::new("WITH v (subscriber_id, newsletter_id) AS (");
                    q.push_values(chunk, |mut b, r| {
                        b.push_bind(r.subscriber_id).push_bind(r.newsletter_id);
                    });
                    q.push(
                        ") UPDATE subscriptions SET soft_bounces = 0 FROM v
                         WHERE subscriptions.subscriber_id = v.subscriber_id AND subscriptions.newsletter_id = v.newsletter_id
                           AND subscriptions.soft_bounces > 0",
                    );
                    q.build().persistent(false).execute(&mut *tx).await?;
                }
            } else {
                // SQLite: the whole batch is one JSON parameter of three
                // statements run as one command, always the same text, so
                // prepared once per connection: one hand-off to the
                // database's thread instead of three, and no parse of a
                // statement with thousands of parameters per batch (the
                // VALUES form above cost about a tenth of the CPU of a send).
                sqlx::query(RECORD_RESULTS_SQLITE)
                    .bind(results_json(results))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            for r in results {
                let suppress = match r.effect {
                    RecipientEffect::None | RecipientEffect::Delivered => None,
                    RecipientEffect::Suppress { reason } => Some(reason),
                    RecipientEffect::CountSoftBounce {
                        suppress_at,
                        reason,
                    } => {
                        let soft_bounces: i64 = sqlx::query_scalar(
                            "UPDATE subscriptions SET soft_bounces = soft_bounces + 1 WHERE subscriber_id = $1 AND newsletter_id = $2 RETURNING soft_bounces",
                        )
                        .bind(r.subscriber_id)
                        .bind(r.newsletter_id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .unwrap_or(0);
                        (soft_bounces >= suppress_at).then_some(reason)
                    }
                };
                if let Some(reason) = suppress {
                    bounce_recipient(&mut tx, r, reason, now).await?;
                }
            }
            Ok::<(), StoreError>(())
        })
    }

    /// Extends the lease of the deliveries this worker really holds (`ids`),
    /// so claims waiting in its queue do not expire and get sent twice. Only
    /// those: a claim the process lost track of (say, the claim's reply was
    /// cut by a database outage) must be left to lapse, not kept alive forever.
    pub async fn renew_claims(
        &self,
        worker_id: &str,
        ids: &[i64],
        lease_until: Millis,
    ) -> Result<u64> {
        let mut renewed = 0;
        for chunk in ids.chunks(1000) {
            renewed += with_pool!(self, |p| {
                let mut q = QueryBuilder::new("UPDATE deliveries SET lease_until = ");
                q.push_bind(lease_until);
                q.push(" WHERE state = 'sending' AND worker_id = ");
                q.push_bind(worker_id);
                q.push(" AND id IN ");
                push_list(&mut q, chunk.iter().copied());
                q.build().execute(p).await?.rows_affected()
            });
        }
        Ok(renewed)
    }

    /// On shutdown: hands back what this worker claimed but did not send.
    pub async fn release_claims(&self, worker_id: &str, now: Millis) -> Result<u64> {
        self.release(worker_id, None, now, now).await
    }

    /// Hands back one claim of this worker (it could not be attempted), due at `due_at`.
    pub async fn release_claim(
        &self,
        delivery_id: i64,
        worker_id: &str,
        due_at: Millis,
        now: Millis,
    ) -> Result<u64> {
        self.release(worker_id, Some(&[delivery_id]), due_at, now)
            .await
    }

    /// Hands back these claims of this worker, due at `due_at`.
    pub async fn release_claims_by_id(
        &self,
        worker_id: &str,
        ids: &[i64],
        due_at: Millis,
        now: Millis,
    ) -> Result<u64> {
        self.release(worker_id, Some(ids), due_at, now).await
    }

    /// Hands back every claim of this worker except `keep` (the ones it
    /// still holds), due at `due_at`: after a database outage, claims whose
    /// hand-back failed, or whose claim reply never arrived, go back to the
    /// queue without waiting for their lease to lapse. The caller must not
    /// claim concurrently (a fresh claim is not in `keep` yet).
    pub async fn release_all_but(
        &self,
        worker_id: &str,
        keep: &[i64],
        due_at: Millis,
        now: Millis,
    ) -> Result<u64> {
        // Read, then release by id: `keep` can be larger than a statement's
        // bind limit, the set of lost claims is small.
        let claimed: Vec<i64> = with_pool!(self, |p| {
            sqlx::query_scalar(
                "SELECT id FROM deliveries WHERE worker_id = $1 AND state = 'sending'",
            )
            .bind(worker_id)
            .fetch_all(p)
            .await?
        });
        let keep: std::collections::HashSet<i64> = keep.iter().copied().collect();
        let lost: Vec<i64> = claimed
            .into_iter()
            .filter(|id| !keep.contains(id))
            .collect();
        let mut released = 0;
        for chunk in lost.chunks(1000) {
            released += self.release(worker_id, Some(chunk), due_at, now).await?;
        }
        Ok(released)
    }

    /// Hands claims of this worker back to the queue (`ids`, or all of them).
    async fn release(
        &self,
        worker_id: &str,
        ids: Option<&[i64]>,
        due_at: Millis,
        now: Millis,
    ) -> Result<u64> {
        if ids.is_some_and(<[i64]>::is_empty) {
            return Ok(0);
        }
        Ok(with_pool!(self, |p| {
            let mut q = QueryBuilder::new(
                "UPDATE deliveries SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'retry_wait' END,
                   lease_until = NULL, worker_id = NULL, next_attempt_at = ",
            );
            q.push_bind(due_at);
            q.push(", updated_at = ");
            q.push_bind(now);
            q.push(" WHERE state = 'sending' AND worker_id = ");
            q.push_bind(worker_id);
            if let Some(ids) = ids {
                q.push(" AND id IN ");
                push_list(&mut q, ids.iter().copied());
            }
            q.build().execute(p).await?.rows_affected()
        }))
    }

    pub async fn delivery_counts(&self, issue_id: i64) -> Result<DeliveryCounts> {
        let rows: Vec<(DeliveryState, i64)> = with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT state, COUNT(*) FROM deliveries WHERE issue_id = $1 GROUP BY state",
            )
            .bind(issue_id)
            .fetch_all(p)
            .await?
        });
        Ok(counts_of(rows))
    }

    /// Marks a sending issue `sent` once none of its deliveries is open, and
    /// stores its final counts. Returns true when this call completed it.
    ///
    /// Lock, count and mark happen in one transaction that first takes the
    /// issue row's lock (PostgreSQL `FOR UPDATE`; SQLite `BEGIN IMMEDIATE`,
    /// the database write lock), the lock `enqueue_issue` also takes first:
    /// a concurrent `herald send` either finishes before the count (and its
    /// new rows are counted) or waits and re-opens the issue afterwards.
    pub async fn complete_issue_if_done(&self, issue_id: i64, now: Millis) -> Result<bool> {
        // The same body on both backends once the transaction holds the lock.
        macro_rules! complete_locked {
            ($tx:ident) => {{
                let status: Option<IssueStatus> =
                    sqlx::query_scalar("SELECT status FROM issues WHERE id = $1")
                        .bind(issue_id)
                        .fetch_optional(&mut *$tx)
                        .await?;
                if status != Some(IssueStatus::Sending) {
                    return Ok(false);
                }
                let rows: Vec<(DeliveryState, i64)> = sqlx::query_as(
                    "SELECT state, COUNT(*) FROM deliveries WHERE issue_id = $1 GROUP BY state",
                )
                .bind(issue_id)
                .fetch_all(&mut *$tx)
                .await?;
                let counts = counts_of(rows);
                if counts.open() > 0 {
                    return Ok(false);
                }
                let reasons: Vec<(Option<String>, i64)> = sqlx::query_as(
                    "SELECT failure_reason, COUNT(*) FROM deliveries WHERE issue_id = $1 AND state IN ('failed', 'skipped') GROUP BY failure_reason",
                )
                .bind(issue_id)
                .fetch_all(&mut *$tx)
                .await?;
                let done = sqlx::query(
                    "UPDATE issues SET status = 'sent', completed_at = $2, final_counts = $3 WHERE id = $1 AND status = 'sending'",
                )
                .bind(issue_id)
                .bind(now)
                .bind(final_counts(&counts, reasons))
                .execute(&mut *$tx)
                .await?
                .rows_affected();
                $tx.commit().await?;
                Ok(done == 1)
            }};
        }
        match self {
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT id FROM issues WHERE id = $1 FOR UPDATE")
                    .bind(issue_id)
                    .execute(&mut *tx)
                    .await?;
                complete_locked!(tx)
            }
            Db::Sqlite(p) => {
                // IMMEDIATE: a deferred transaction would read first and
                // could not upgrade to a writer after a concurrent enqueue.
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                complete_locked!(tx)
            }
        }
    }

    pub async fn sending_issue_ids(&self) -> Result<Vec<i64>> {
        Ok(with_pool!(self, |p| sqlx::query_scalar(
            "SELECT id FROM issues WHERE status = 'sending'"
        )
        .fetch_all(p)
        .await?))
    }

    /// Moves an issue between draft/sending/paused/cancelled/sent, only
    /// from the states listed. Returns whether it moved. The engine's pause
    /// reason goes with any move: it is set only while the issue is paused.
    pub async fn set_issue_status(
        &self,
        issue_id: i64,
        to: IssueStatus,
        from: &[IssueStatus],
    ) -> Result<bool> {
        let n = with_pool!(self, |p| {
            let mut q = QueryBuilder::new("UPDATE issues SET status = ");
            q.push_bind(to);
            q.push(", pause_reason = NULL WHERE id = ");
            q.push_bind(issue_id);
            q.push(" AND status IN ");
            push_list(&mut q, from.iter().copied());
            q.build().execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Cancels every delivery not yet handed to SMTP.
    pub async fn cancel_open_deliveries(&self, issue_id: i64, now: Millis) -> Result<u64> {
        Ok(with_pool!(self, |p| {
            sqlx::query(
                "UPDATE deliveries SET state = 'cancelled', failure_reason = 'cancelled', updated_at = $2
                 WHERE issue_id = $1 AND state IN ('queued', 'retry_wait')",
            )
            .bind(issue_id)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        }))
    }

    /// Re-queues deliveries for another round (`herald retry`): those that
    /// failed permanently when `failed` is set, and those waiting for a retry (now).
    pub async fn requeue(&self, issue_id: i64, failed: bool, now: Millis) -> Result<u64> {
        let states: &[DeliveryState] = if failed {
            &[DeliveryState::Failed, DeliveryState::RetryWait]
        } else {
            &[DeliveryState::RetryWait]
        };
        Ok(with_pool!(self, |p| {
            let mut q =
                QueryBuilder::new("UPDATE deliveries SET state = 'queued', next_attempt_at = ");
            q.push_bind(now);
            q.push(", first_attempt_at = NULL, failure_reason = NULL, updated_at = ");
            q.push_bind(now);
            q.push(" WHERE issue_id = ");
            q.push_bind(issue_id);
            q.push(" AND state IN ");
            push_list(&mut q, states.iter().copied());
            q.build().execute(p).await?.rows_affected()
        }))
    }

    pub async fn list_deliveries(
        &self,
        issue_id: i64,
        state: Option<DeliveryState>,
        limit: i64,
    ) -> Result<Vec<DeliveryListing>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT d.id, s.email, d.state, d.attempts, d.next_attempt_at, d.last_code, d.last_enhanced, d.last_reply, d.failure_reason, d.sent_at
                 FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                 WHERE d.issue_id = $1 AND ($2 IS NULL OR d.state = $2) ORDER BY d.id LIMIT $3",
            )
            .bind(issue_id)
            .bind(state)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    pub async fn attempts_of(&self, delivery_ids: &[i64]) -> Result<Vec<AttemptListing>> {
        if delivery_ids.is_empty() {
            return Ok(Vec::new());
        }
        with_pool!(self, |p| {
            let mut q = QueryBuilder::new(
                "SELECT delivery_id, at, duration_ms, code, enhanced, reply, outcome, worker_id FROM delivery_attempts WHERE delivery_id IN ",
            );
            push_list(&mut q, delivery_ids.iter().copied());
            q.push(" ORDER BY delivery_id, at, id");
            Ok(q.build_query_as().fetch_all(p).await?)
        })
    }

    /// The most common last replies of failed or waiting deliveries.
    pub async fn top_failure_replies(
        &self,
        issue_id: i64,
        limit: i64,
    ) -> Result<Vec<(DeliveryState, String, i64)>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT state, COALESCE(last_reply, failure_reason, '') AS reply, COUNT(*) AS n FROM deliveries
                 WHERE issue_id = $1 AND state IN ('failed', 'retry_wait', 'skipped') GROUP BY state, COALESCE(last_reply, failure_reason, '')
                 ORDER BY n DESC LIMIT $2",
            )
            .bind(issue_id)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    pub async fn next_retry_at(&self, issue_id: i64) -> Result<Option<Millis>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM deliveries WHERE issue_id = $1 AND state = 'retry_wait'").bind(issue_id).fetch_one(p).await?
        }))
    }

    /// Messages sent for an issue since `since` (for the rate).
    pub async fn sent_since(&self, issue_id: i64, since: Millis) -> Result<i64> {
        Ok(with_pool!(self, |p| {
            sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE issue_id = $1 AND state = 'sent' AND sent_at >= $2")
                .bind(issue_id)
                .bind(since)
                .fetch_one(p)
                .await?
        }))
    }
}

pub(super) fn counts_of(rows: Vec<(DeliveryState, i64)>) -> DeliveryCounts {
    let mut counts = DeliveryCounts::default();
    for (state, n) in rows {
        counts.total += n;
        *counts.by_state.entry(state).or_insert(0) += n;
    }
    counts
}

/// The `final_counts` JSON of a completed issue: deliveries by state, and
/// failed/skipped ones by reason.
fn final_counts(counts: &DeliveryCounts, reasons: Vec<(Option<String>, i64)>) -> String {
    let mut summary: serde_json::Map<String, serde_json::Value> = counts
        .by_state
        .iter()
        .map(|(state, n)| (state.as_str().to_owned(), (*n).into()))
        .collect();
    let reasons: serde_json::Map<String, serde_json::Value> = reasons
        .into_iter()
        .map(|(r, n)| (r.unwrap_or_else(|| "unknown".into()), n.into()))
        .collect();
    summary.insert("reasons".into(), reasons.into());
    serde_json::Value::Object(summary).to_string()
}

/// `record_results` on SQLite: the batch as `$1`, a JSON array of rows
/// (see `results_json`, whose positions these are), `$2` the time.
/// A DSN may have made a delivery `bounced` while its result was on the way:
/// the result then adds its attempt but keeps `bounced` and its reason.
const RECORD_RESULTS_SQLITE: &str = "
    UPDATE deliveries SET state = CASE WHEN deliveries.state = 'bounced' THEN 'bounced' ELSE v.value->>1 END,
      attempts = deliveries.attempts + (v.value->>2),
      next_attempt_at = COALESCE(v.value->>3, deliveries.next_attempt_at),
      lease_until = NULL, worker_id = NULL, first_attempt_at = COALESCE(deliveries.first_attempt_at, v.value->>4),
      last_code = COALESCE(v.value->>5, deliveries.last_code), last_enhanced = COALESCE(v.value->>6, deliveries.last_enhanced),
      last_reply = COALESCE(v.value->>7, deliveries.last_reply),
      failure_reason = CASE WHEN deliveries.state = 'bounced' THEN deliveries.failure_reason ELSE v.value->>8 END,
      sent_at = CASE WHEN v.value->>1 = 'sent' THEN $2 ELSE deliveries.sent_at END, updated_at = $2
    FROM json_each($1) AS v WHERE deliveries.id = v.value->>0 AND deliveries.state <> 'sent';
    INSERT INTO delivery_attempts (delivery_id, at, duration_ms, code, enhanced, reply, outcome, worker_id)
    SELECT value->>0, value->>4, value->>9, value->>5, value->>6, value->>7, value->>10, value->>11
    FROM json_each($1) WHERE value->>2 = 1;
    UPDATE subscriptions SET soft_bounces = 0 FROM json_each($1) AS v
    WHERE v.value->>12 = 1 AND subscriptions.subscriber_id = v.value->>13
      AND subscriptions.newsletter_id = v.value->>14 AND subscriptions.soft_bounces > 0;";

/// The rows of `RECORD_RESULTS_SQLITE`: id, state, tried (0/1),
/// next_attempt_at, at, code, enhanced, reply, failure_reason, duration_ms,
/// outcome, worker_id, delivered (0/1), subscriber_id, newsletter_id.
/// Serialised straight from borrowed tuples: no `serde_json::Value`, and
/// no copy of a reply or a reason, per result.
fn results_json(results: &[DeliveryResult]) -> String {
    let rows: Vec<_> = results
        .iter()
        .map(|r| {
            let a = r.attempt.as_ref();
            (
                r.delivery_id,
                r.state.as_str(),
                i64::from(a.is_some()),
                r.next_attempt_at,
                a.map(|a| a.at),
                a.and_then(|a| a.code),
                a.and_then(|a| a.enhanced.as_deref()),
                a.map(|a| a.reply.as_str()),
                r.failure_reason.as_deref(),
                a.map(|a| a.duration_ms),
                a.map(|a| a.outcome.as_str()),
                a.map(|a| a.worker_id.as_str()),
                i64::from(r.effect == RecipientEffect::Delivered),
                r.subscriber_id,
                r.newsletter_id,
            )
        })
        .collect();
    // Numbers, strings and nulls only: serialising cannot fail.
    serde_json::to_string(&rows).expect("a JSON array of scalars")
}

/// What a worker needs to know about each delivery before sending it: the
/// recipient, the subscription and suppression, the claim, the issue's status.
fn details_query<DB>(ids: &[i64]) -> QueryBuilder<DB>
where
    DB: sqlx::Database,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new(
        "SELECT d.id, d.issue_id, d.subscriber_id, d.attempts, d.first_attempt_at, s.email, s.name, i.newsletter_id,
           COALESCE(sub.state, 'unsubscribed') AS subscription_state,
           (SELECT COUNT(*) FROM suppressions sp WHERE lower(sp.email) = lower(s.email)) AS suppressed,
           d.state, d.worker_id, i.status AS issue_status
         FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id JOIN issues i ON i.id = d.issue_id
         LEFT JOIN subscriptions sub ON sub.subscriber_id = d.subscriber_id AND sub.newsletter_id = i.newsletter_id
         WHERE d.id IN ",
    );
    push_list(&mut q, ids.iter().copied());
    q
}

async fn bounce_recipient<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    r: &DeliveryResult,
    reason: &str,
    now: Millis,
) -> Result<()>
where
    DB: sqlx::Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    super::bounces::suppress_subscriber(
        tx,
        r.subscriber_id,
        r.newsletter_id,
        &r.email,
        reason,
        "delivery",
        now,
    )
    .await
}

impl Db {
    /// Messages sent by every process since `since`, plus those claimed and
    /// about to go: what the hourly/daily caps count.
    pub async fn sent_in_window(&self, since: Millis) -> Result<i64> {
        Ok(with_pool!(self, |p| {
            sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM deliveries WHERE sent_at >= $1)
                      + (SELECT COUNT(*) FROM deliveries WHERE state = 'sending')",
            )
            .bind(since)
            .fetch_one(p)
            .await?
        }))
    }
}

impl Db {
    /// Pauses a sending issue and records why (`delivery::policy::PauseCause`). False when
    /// it was no longer sending (paused by someone else first, cancelled, complete): the
    /// first reason stays.
    pub async fn pause_issue_with_reason(&self, issue_id: i64, reason: &str) -> Result<bool> {
        let n = with_pool!(self, |p| {
            sqlx::query(
                "UPDATE issues SET status = 'paused', pause_reason = $2 WHERE id = $1 AND status = 'sending'",
            )
            .bind(issue_id)
            .bind(reason)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }
}

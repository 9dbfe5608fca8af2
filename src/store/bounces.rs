//! Reports that arrive after the relay said yes (`bounce_reports`): the
//! lookups that tie a report to a delivery, recording a report and its
//! effect in one transaction, the lists and the purge of raw messages.
//! What a report does is decided in `bounce::apply` (with
//! `delivery::policy`); this file only carries it out.

use sqlx::QueryBuilder;

use super::{Db, Result, StoreError, with_pool, with_tx};
use crate::domain::{DeliveryState, MatchedBy, Millis, ReportKind, ReportOutcome, ReportSource};

/// A message Herald sent that a report may be about: a delivery (or, when
/// `delivery_id` is `None`, only a subscriber) with what the effects need.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReportTarget {
    pub delivery_id: Option<i64>,
    pub issue_id: Option<i64>,
    pub subscriber_id: i64,
    pub newsletter_id: Option<i64>,
    pub email: String,
    pub delivery_state: Option<DeliveryState>,
}

/// A report as it is stored; text from outside is already bounded.
#[derive(Debug, Clone)]
pub struct NewReport<'a> {
    pub received_at: Millis,
    pub source: ReportSource,
    pub kind: ReportKind,
    pub matched_by: Option<MatchedBy>,
    pub issue_id: Option<i64>,
    pub subscriber_id: Option<i64>,
    pub newsletter_id: Option<i64>,
    pub delivery_id: Option<i64>,
    pub recipient: Option<String>,
    pub action: Option<String>,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    pub remote_mta: Option<String>,
    pub feedback_type: Option<String>,
    pub provider_event_id: Option<String>,
    pub summary: Option<String>,
    pub raw: Option<&'a [u8]>,
    pub raw_purge_at: Option<Millis>,
}

/// What recording a report does to the list, as decided by `bounce::apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportAction {
    /// Recorded only.
    Record(ReportOutcome),
    /// The delivery `sent → bounced`, the subscription `bounced`, the address suppressed.
    HardBounce { reason: &'static str },
    /// The delivery `sent → bounced`, one more soft-bounced issue in a row;
    /// suppressed as a hard bounce once `suppress_at` are reached.
    SoftBounce {
        suppress_at: i64,
        reason: &'static str,
    },
    /// The delivery `sent → bounced`, nothing held against the address.
    DeliveryFailed,
    /// The subscription `complained` (unsubscribed), the address suppressed,
    /// a `complaint` consent event.
    Complaint { reason: &'static str },
}

/// The result of [`Db::record_report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New {
        id: i64,
        outcome: ReportOutcome,
    },
    /// The same (source, provider event id) was recorded before as `id`.
    Duplicate {
        id: i64,
    },
}

/// One line of `herald bounces list`.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ReportListing {
    pub id: i64,
    pub received_at: Millis,
    pub source: ReportSource,
    pub kind: ReportKind,
    pub effect: ReportOutcome,
    pub issue_number: Option<i64>,
    pub recipient: Option<String>,
    pub status: Option<String>,
    pub summary: Option<String>,
}

/// Everything about one report (`herald bounces show`).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ReportDetail {
    pub id: i64,
    pub received_at: Millis,
    pub source: ReportSource,
    pub kind: ReportKind,
    pub matched_by: Option<MatchedBy>,
    pub effect: ReportOutcome,
    pub issue_id: Option<i64>,
    pub issue_number: Option<i64>,
    pub subscriber_id: Option<i64>,
    pub delivery_id: Option<i64>,
    pub recipient: Option<String>,
    pub action: Option<String>,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    pub remote_mta: Option<String>,
    pub feedback_type: Option<String>,
    pub provider_event_id: Option<String>,
    pub summary: Option<String>,
    #[serde(skip)]
    pub raw: Option<Vec<u8>>,
    pub raw_purge_at: Option<Millis>,
}

/// Per issue: what came back after the relay said yes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReportCounts {
    /// Deliveries `bounced` after `sent`.
    pub bounced_after_delivery: i64,
    /// Readers who complained about this issue (each once).
    pub complaints: i64,
}

const TARGET_COLUMNS: &str =
    "d.id AS delivery_id, d.issue_id AS issue_id, d.subscriber_id AS subscriber_id,
     i.newsletter_id AS newsletter_id, s.email AS email, d.state AS delivery_state";

impl Db {
    /// The delivery of `issue_id` to `subscriber_id` (a VERP token's ids).
    pub async fn report_target_by_ids(
        &self,
        issue_id: i64,
        subscriber_id: i64,
    ) -> Result<Option<ReportTarget>> {
        let sql = format!(
            "SELECT {TARGET_COLUMNS} FROM deliveries d JOIN issues i ON i.id = d.issue_id
             JOIN subscribers s ON s.id = d.subscriber_id
             WHERE d.issue_id = $1 AND d.subscriber_id = $2"
        );
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(issue_id)
        .bind(subscriber_id)
        .fetch_optional(p)
        .await?))
    }

    /// The deliveries of issues numbered `number` (one per newsletter at
    /// most) to the reader with this canonical address.
    pub async fn report_targets_by_issue_number(
        &self,
        number: i64,
        canonical_email: &str,
    ) -> Result<Vec<ReportTarget>> {
        let sql = format!(
            "SELECT {TARGET_COLUMNS} FROM deliveries d JOIN issues i ON i.id = d.issue_id
             JOIN subscribers s ON s.id = d.subscriber_id
             WHERE i.number = $1 AND lower(s.email) = $2 ORDER BY d.id"
        );
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(number)
        .bind(canonical_email)
        .fetch_all(p)
        .await?))
    }

    /// (issue id, subscriber id) of every delivery the relay accepted for
    /// issues numbered `number`: the candidates for a Message-ID whose
    /// recipient the report redacted.
    pub async fn accepted_deliveries_of_issue_number(
        &self,
        number: i64,
    ) -> Result<Vec<(i64, i64)>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT d.issue_id, d.subscriber_id FROM deliveries d JOIN issues i ON i.id = d.issue_id
             WHERE i.number = $1 AND d.state IN ('sent', 'bounced')"
        )
        .bind(number)
        .fetch_all(p)
        .await?
        }))
    }

    /// The reader with this canonical address and their latest delivery
    /// that the relay accepted (`sent`, or already `bounced`); a reader
    /// with no such delivery comes back without one.
    pub async fn report_target_by_email(
        &self,
        canonical_email: &str,
    ) -> Result<Option<ReportTarget>> {
        let sql = format!(
            "SELECT {TARGET_COLUMNS} FROM deliveries d JOIN issues i ON i.id = d.issue_id
             JOIN subscribers s ON s.id = d.subscriber_id
             WHERE lower(s.email) = $1 AND d.state IN ('sent', 'bounced')
             ORDER BY d.sent_at DESC, d.id DESC LIMIT 1"
        );
        let found: Option<ReportTarget> =
            with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(canonical_email)
                .fetch_optional(p)
                .await?);
        if found.is_some() {
            return Ok(found);
        }
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT NULL AS delivery_id, NULL AS issue_id, id AS subscriber_id, NULL AS newsletter_id,
                    email, NULL AS delivery_state
             FROM subscribers WHERE lower(email) = $1"
        )
        .bind(canonical_email)
        .fetch_optional(p)
        .await?
        }))
    }

    /// Whether these rows exist (a test copy's issue, a confirmation's
    /// subscriber): a report keeps only links to rows that are there.
    pub async fn issue_exists(&self, issue_id: i64) -> Result<bool> {
        let n: i64 = with_pool!(self, |p| sqlx::query_scalar(
            "SELECT COUNT(*) FROM issues WHERE id = $1"
        )
        .bind(issue_id)
        .fetch_one(p)
        .await?);
        Ok(n > 0)
    }

    pub async fn subscriber_exists(&self, subscriber_id: i64) -> Result<bool> {
        let n: i64 = with_pool!(self, |p| sqlx::query_scalar(
            "SELECT COUNT(*) FROM subscribers WHERE id = $1"
        )
        .bind(subscriber_id)
        .fetch_one(p)
        .await?);
        Ok(n > 0)
    }

    /// Records `report` and carries out `action` in one transaction. The
    /// same (source, provider event id) is recorded once: a second time it
    /// is `Duplicate` and changes nothing (on PostgreSQL a concurrent
    /// second insert waits for the first and then finds it).
    pub async fn record_report(
        &self,
        report: &NewReport<'_>,
        action: ReportAction,
        now: Millis,
    ) -> Result<Recorded> {
        let provisional = match action {
            ReportAction::Record(outcome) => outcome,
            ReportAction::HardBounce { .. } => ReportOutcome::Suppressed,
            ReportAction::SoftBounce { .. } => ReportOutcome::SoftBounce,
            ReportAction::DeliveryFailed => ReportOutcome::DeliveryFailed,
            ReportAction::Complaint { .. } => ReportOutcome::Complaint,
        };
        let consent_source = format!("report:{}", report.source);
        with_tx!(self, |tx| 'body: {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO bounce_reports (received_at, source, kind, matched_by, issue_id, subscriber_id, newsletter_id,
                   delivery_id, recipient, action, status_code, diagnostic, remote_mta, feedback_type, provider_event_id,
                   effect, summary, raw, raw_purge_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
                 ON CONFLICT (source, provider_event_id) DO NOTHING RETURNING id",
            )
            .bind(report.received_at)
            .bind(report.source)
            .bind(report.kind)
            .bind(report.matched_by)
            .bind(report.issue_id)
            .bind(report.subscriber_id)
            .bind(report.newsletter_id)
            .bind(report.delivery_id)
            .bind(report.recipient.as_deref())
            .bind(report.action.as_deref())
            .bind(report.status.as_deref())
            .bind(report.diagnostic.as_deref())
            .bind(report.remote_mta.as_deref())
            .bind(report.feedback_type.as_deref())
            .bind(report.provider_event_id.as_deref())
            .bind(provisional)
            .bind(report.summary.as_deref())
            .bind(report.raw)
            .bind(report.raw_purge_at)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(id) = id else {
                let existing: i64 = sqlx::query_scalar(
                    "SELECT id FROM bounce_reports WHERE source = $1 AND provider_event_id = $2",
                )
                .bind(report.source)
                .bind(report.provider_event_id.as_deref())
                .fetch_one(&mut *tx)
                .await?;
                break 'body Ok(Recorded::Duplicate { id: existing });
            };
            let target = match (report.subscriber_id, report.newsletter_id) {
                (Some(s), Some(n)) => Some((s, n)),
                _ => None,
            };
            let (Some((subscriber_id, newsletter_id)), false) =
                (target, matches!(action, ReportAction::Record(_)))
            else {
                break 'body Ok(Recorded::New {
                    id,
                    outcome: provisional,
                });
            };
            let email: String = sqlx::query_scalar("SELECT email FROM subscribers WHERE id = $1")
                .bind(subscriber_id)
                .fetch_one(&mut *tx)
                .await?;
            if !matches!(action, ReportAction::Complaint { .. })
                && let Some(delivery_id) = report.delivery_id
            {
                let why = match (&report.status, &report.diagnostic) {
                    (Some(s), Some(d)) => format!("bounced after delivery: {s} {d}"),
                    (Some(s), None) => format!("bounced after delivery: {s}"),
                    (None, Some(d)) => format!("bounced after delivery: {d}"),
                    (None, None) => "bounced after delivery".to_owned(),
                };
                // `sending` too: a relay on the same network can return
                // its DSN before our own flusher has written `sent` (the
                // DSN proves the relay took it; `record_results` keeps `bounced`).
                sqlx::query(
                    "UPDATE deliveries SET state = 'bounced', failure_reason = $2, updated_at = $3
                     WHERE id = $1 AND state IN ('sending', 'sent')",
                )
                .bind(delivery_id)
                .bind(why)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let outcome = match action {
                ReportAction::Record(outcome) => outcome,
                ReportAction::DeliveryFailed => ReportOutcome::DeliveryFailed,
                ReportAction::HardBounce { reason } => {
                    suppress_subscriber(
                        &mut tx,
                        subscriber_id,
                        newsletter_id,
                        &email,
                        reason,
                        &consent_source,
                        now,
                    )
                    .await?;
                    ReportOutcome::Suppressed
                }
                ReportAction::SoftBounce {
                    suppress_at,
                    reason,
                } => {
                    // Another report about the same message counts once.
                    let counted_before: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM bounce_reports WHERE delivery_id = $1 AND id <> $2
                           AND effect IN ('soft_bounce', 'soft_bounce_limit')",
                    )
                    .bind(report.delivery_id)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                    if report.delivery_id.is_none() || counted_before > 0 {
                        ReportOutcome::SoftBounce
                    } else {
                        // The relay's 250 resets the subscription's count
                        // (`RecipientEffect::Delivered`) before the remote
                        // server's verdict comes back, so the run is also
                        // read from the reports: this issue and the ones
                        // before it whose delivery soft-bounced, back to
                        // the first that did not.
                        let earlier: Vec<i64> = sqlx::query_scalar(
                            "SELECT CASE WHEN EXISTS (SELECT 1 FROM bounce_reports r WHERE r.delivery_id = d.id
                                      AND r.effect IN ('soft_bounce', 'soft_bounce_limit')) THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END
                             FROM deliveries d JOIN issues i ON i.id = d.issue_id
                             WHERE d.subscriber_id = $1 AND i.newsletter_id = $2 AND d.issue_id < $3
                               AND d.state IN ('sent', 'bounced')
                             ORDER BY d.issue_id DESC LIMIT $4",
                        )
                        .bind(subscriber_id)
                        .bind(newsletter_id)
                        .bind(report.issue_id)
                        .bind(suppress_at)
                        .fetch_all(&mut *tx)
                        .await?;
                        let run = 1 + earlier.iter().take_while(|b| **b == 1).count() as i64;
                        let count: i64 = sqlx::query_scalar(
                            "UPDATE subscriptions SET soft_bounces = CASE WHEN soft_bounces + 1 > $3 THEN soft_bounces + 1 ELSE $3 END
                             WHERE subscriber_id = $1 AND newsletter_id = $2 RETURNING soft_bounces",
                        )
                        .bind(subscriber_id)
                        .bind(newsletter_id)
                        .bind(run)
                        .fetch_optional(&mut *tx)
                        .await?
                        .unwrap_or(0);
                        if count >= suppress_at {
                            suppress_subscriber(
                                &mut tx,
                                subscriber_id,
                                newsletter_id,
                                &email,
                                reason,
                                &consent_source,
                                now,
                            )
                            .await?;
                            ReportOutcome::SoftBounceLimit
                        } else {
                            ReportOutcome::SoftBounce
                        }
                    }
                }
                ReportAction::Complaint { reason } => {
                    end_subscription(
                        &mut tx,
                        subscriber_id,
                        newsletter_id,
                        &email,
                        Ending::Complaint {
                            method: report.feedback_type.as_deref().unwrap_or("complaint"),
                        },
                        reason,
                        &consent_source,
                        now,
                    )
                    .await?;
                    ReportOutcome::Complaint
                }
            };
            if outcome != provisional {
                sqlx::query("UPDATE bounce_reports SET effect = $2 WHERE id = $1")
                    .bind(id)
                    .bind(outcome)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok::<_, StoreError>(Recorded::New { id, outcome })
        })
    }

    /// The latest reports, newest first (`issue_id`: of that issue only).
    pub async fn list_reports(
        &self,
        issue_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ReportListing>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT r.id, r.received_at, r.source, r.kind, r.effect, i.number AS issue_number, r.recipient, r.status_code AS status, r.summary
             FROM bounce_reports r LEFT JOIN issues i ON i.id = r.issue_id
             WHERE ($1 IS NULL OR r.issue_id = $1) ORDER BY r.id DESC LIMIT $2"
        )
        .bind(issue_id)
        .bind(limit)
        .fetch_all(p)
        .await?
        }))
    }

    pub async fn report_by_id(&self, id: i64) -> Result<Option<ReportDetail>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT r.id, r.received_at, r.source, r.kind, r.matched_by, r.effect, r.issue_id, i.number AS issue_number,
                    r.subscriber_id, r.delivery_id, r.recipient, r.action, r.status_code AS status, r.diagnostic, r.remote_mta,
                    r.feedback_type, r.provider_event_id, r.summary, r.raw, r.raw_purge_at
             FROM bounce_reports r LEFT JOIN issues i ON i.id = r.issue_id WHERE r.id = $1"
        )
        .bind(id)
        .fetch_optional(p)
        .await?
        }))
    }

    /// Drops the raw messages kept past their time; returns how many.
    pub async fn purge_report_raw(&self, now: Millis) -> Result<u64> {
        Ok(with_pool!(self, |p| sqlx::query(
            "UPDATE bounce_reports SET raw = NULL WHERE raw IS NOT NULL AND raw_purge_at <= $1"
        )
        .bind(now)
        .execute(p)
        .await?
        .rows_affected()))
    }

    /// Bounced-after-delivery and complaint counts of these issues.
    pub async fn report_counts(
        &self,
        issue_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, ReportCounts>> {
        let mut out: std::collections::HashMap<i64, ReportCounts> = issue_ids
            .iter()
            .map(|id| (*id, ReportCounts::default()))
            .collect();
        if issue_ids.is_empty() {
            return Ok(out);
        }
        let rows: Vec<(i64, i64, i64)> = with_pool!(self, |p| {
            let mut q = QueryBuilder::new(
                "SELECT i.id,
                   (SELECT COUNT(*) FROM deliveries d WHERE d.issue_id = i.id AND d.state = 'bounced'),
                   (SELECT COUNT(DISTINCT r.subscriber_id) FROM bounce_reports r WHERE r.issue_id = i.id AND r.effect = 'complaint')
                 FROM issues i WHERE i.id IN ",
            );
            super::push_list(&mut q, issue_ids.iter().copied());
            q.build_query_as().fetch_all(p).await?
        });
        for (id, bounced, complaints) in rows {
            out.insert(
                id,
                ReportCounts {
                    bounced_after_delivery: bounced,
                    complaints,
                },
            );
        }
        Ok(out)
    }
}

/// Sets a subscription `bounced`, suppresses the address and records the
/// `bounce` consent event, inside the caller's transaction: the one way a
/// bounce (an SMTP reply or a later report) ends a subscription.
pub(super) async fn suppress_subscriber<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    subscriber_id: i64,
    newsletter_id: i64,
    email: &str,
    reason: &str,
    source: &str,
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
    end_subscription(
        tx,
        subscriber_id,
        newsletter_id,
        email,
        Ending::Bounce,
        reason,
        source,
        now,
    )
    .await
}

/// How [`end_subscription`] ends a subscription.
#[derive(Debug, Clone, Copy)]
enum Ending<'a> {
    /// `bounced`, a `bounce` consent event whose method is the reason.
    Bounce,
    /// `complained` (with `unsubscribed_at`), a `complaint` consent event.
    Complaint { method: &'a str },
}

/// Ends a subscription, suppresses the address (`reason`) and appends the
/// consent event, inside the caller's transaction.
#[allow(clippy::too_many_arguments)]
async fn end_subscription<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    subscriber_id: i64,
    newsletter_id: i64,
    email: &str,
    ending: Ending<'_>,
    reason: &str,
    source: &str,
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
    let email = crate::domain::EmailAddress::parse(email)
        .map_err(|e| StoreError::Corrupt(format!("{email}: {e}")))?;
    let (end, kind, method) = match ending {
        Ending::Bounce => (
            "UPDATE subscriptions SET state = 'bounced', updated_at = $3 WHERE subscriber_id = $1 AND newsletter_id = $2",
            "bounce",
            reason,
        ),
        Ending::Complaint { method } => (
            "UPDATE subscriptions SET state = 'complained', unsubscribed_at = COALESCE(unsubscribed_at, $3), updated_at = $3
             WHERE subscriber_id = $1 AND newsletter_id = $2",
            "complaint",
            method,
        ),
    };
    sqlx::query(end)
        .bind(subscriber_id)
        .bind(newsletter_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    sqlx::query("INSERT INTO suppressions (address_hash, email, reason, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (address_hash) DO NOTHING")
        .bind(email.suppression_hash())
        .bind(email.to_string())
        .bind(reason.to_owned())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    sqlx::query("INSERT INTO consent_events (subscriber_id, newsletter_id, kind, at, source, method) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(subscriber_id)
        .bind(newsletter_id)
        .bind(kind.to_owned())
        .bind(now)
        .bind(source.to_owned())
        .bind(method.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

//! The scheduler's tables: `schedules` (one per newsletter that has one),
//! `schedule_runs` (one row per (newsletter, slot), the exactly-once
//! record) and `one_off_sends` (`herald send ISSUE --at …`).

use serde::Serialize;

use super::{Db, Result, StoreError, push_list};
use crate::domain::{IssueStatus, Millis, OneOffState, RunState};
use crate::{with_pool, with_tx};

/// A schedule as stored (text, parsed by `schedule::Schedule::from_row`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub newsletter_id: i64,
    pub expression: String,
    pub timezone: String,
    pub on_empty: String,
    pub catch_up_ms: i64,
    pub jitter_ms: i64,
    pub preview_before_ms: i64,
    pub preview_to: String,
    pub checked_until: Option<Millis>,
}

/// A run as the history shows it.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct RunHistoryRow {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub run: RunRow,
    pub issue_number: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub newsletter_id: i64,
    /// The slot's instant (UTC milliseconds), without jitter.
    pub slot_at: Millis,
    pub jitter_ms: i64,
    /// `slot_at + jitter_ms`: when the issue is sent.
    pub fire_at: Millis,
    /// When the issue is composed and previewed, if earlier than `fire_at`.
    pub preview_at: Option<Millis>,
    #[serde(serialize_with = "super::serialize_as_str")]
    pub state: RunState,
    pub reason: Option<String>,
    pub issue_id: Option<i64>,
    #[serde(skip)]
    pub lease_until: Option<Millis>,
    #[serde(skip)]
    pub worker_id: Option<String>,
    pub updated_at: Millis,
}

/// A slot about to be recorded.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub slot_at: Millis,
    pub jitter_ms: i64,
    pub preview_at: Option<Millis>,
    pub state: RunState,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct OneOffRow {
    pub id: i64,
    pub issue_id: i64,
    pub newsletter_id: i64,
    pub issue_number: i64,
    pub issue_slug: String,
    pub send_at: Millis,
    pub timezone: String,
    #[serde(serialize_with = "super::serialize_as_str")]
    pub state: OneOffState,
    pub reason: Option<String>,
    #[serde(skip)]
    pub lease_until: Option<Millis>,
    pub created_at: Millis,
}

const RUN_COLUMNS: &str = "id, newsletter_id, slot_at, jitter_ms, fire_at, preview_at, state, reason, issue_id, lease_until, worker_id, updated_at";
const ONE_OFF_SELECT: &str = "SELECT o.id, o.issue_id, i.newsletter_id, i.number AS issue_number, i.slug AS issue_slug, o.send_at, o.timezone, o.state, o.reason, o.lease_until, o.created_at FROM one_off_sends o JOIN issues i ON i.id = o.issue_id";

impl Db {
    /// Stores (or removes, with `None`) a newsletter's schedule. An edited
    /// schedule keeps `checked_until`: slots already recorded stay recorded.
    pub async fn sync_schedule(
        &self,
        newsletter_id: i64,
        row: Option<&ScheduleRow>,
        now: Millis,
    ) -> Result<()> {
        with_pool!(self, |p| {
            match row {
                None => {
                    sqlx::query("DELETE FROM schedules WHERE newsletter_id = $1")
                        .bind(newsletter_id)
                        .execute(p)
                        .await?;
                }
                Some(r) => {
                    sqlx::query(
                        "INSERT INTO schedules (newsletter_id, expression, timezone, on_empty, catch_up_ms, jitter_ms, preview_before_ms, preview_to, checked_until, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9)
                         ON CONFLICT (newsletter_id) DO UPDATE SET expression = excluded.expression, timezone = excluded.timezone,
                           on_empty = excluded.on_empty, catch_up_ms = excluded.catch_up_ms, jitter_ms = excluded.jitter_ms,
                           preview_before_ms = excluded.preview_before_ms, preview_to = excluded.preview_to, updated_at = excluded.updated_at",
                    )
                    .bind(newsletter_id)
                    .bind(&r.expression)
                    .bind(&r.timezone)
                    .bind(&r.on_empty)
                    .bind(r.catch_up_ms)
                    .bind(r.jitter_ms)
                    .bind(r.preview_before_ms)
                    .bind(&r.preview_to)
                    .bind(now)
                    .execute(p)
                    .await?;
                }
            }
        });
        Ok(())
    }

    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT newsletter_id, expression, timezone, on_empty, catch_up_ms, jitter_ms, preview_before_ms, preview_to, checked_until FROM schedules ORDER BY newsletter_id"
        )
        .fetch_all(p)
        .await?
        }))
    }

    pub async fn schedule_of(&self, newsletter_id: i64) -> Result<Option<ScheduleRow>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT newsletter_id, expression, timezone, on_empty, catch_up_ms, jitter_ms, preview_before_ms, preview_to, checked_until FROM schedules WHERE newsletter_id = $1"
        )
        .bind(newsletter_id)
        .fetch_optional(p)
        .await?
        }))
    }

    /// A new schedule starts counting slots from its first scheduler round.
    pub async fn start_schedule(&self, newsletter_id: i64, now: Millis) -> Result<()> {
        with_pool!(self, |p| {
            sqlx::query(
                "UPDATE schedules SET checked_until = $2 WHERE newsletter_id = $1 AND checked_until IS NULL",
            )
            .bind(newsletter_id)
            .bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Records the slots up to `until` in one transaction: each (newsletter,
    /// slot) once, whichever process gets there first (the unique
    /// constraint; the loser's insert does nothing), and the schedule's
    /// `checked_until` only ever moves forward.
    pub async fn record_slots(
        &self,
        newsletter_id: i64,
        runs: &[NewRun],
        until: Millis,
        now: Millis,
    ) -> Result<u64> {
        with_tx!(self, |tx| {
            let mut added = 0;
            for r in runs {
                added += sqlx::query(
                    "INSERT INTO schedule_runs (newsletter_id, slot_at, jitter_ms, fire_at, preview_at, state, reason, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
                     ON CONFLICT (newsletter_id, slot_at) DO NOTHING",
                )
                .bind(newsletter_id)
                .bind(r.slot_at)
                .bind(r.jitter_ms)
                .bind(r.slot_at + r.jitter_ms)
                .bind(r.preview_at)
                .bind(r.state)
                .bind(&r.reason)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            sqlx::query(
                "UPDATE schedules SET checked_until = $2 WHERE newsletter_id = $1 AND (checked_until IS NULL OR checked_until < $2)",
            )
            .bind(newsletter_id)
            .bind(until)
            .execute(&mut *tx)
            .await?;
            Ok::<_, StoreError>(added)
        })
    }

    /// Runs with a step due at `now` whose lease (if any) has run out.
    pub async fn due_runs(&self, now: Millis) -> Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM schedule_runs
             WHERE (lease_until IS NULL OR lease_until < $1)
               AND ((state = 'pending' AND COALESCE(preview_at, fire_at) <= $1)
                    OR state = 'composed'
                    OR (state = 'waiting' AND fire_at <= $1))
             ORDER BY slot_at"
        );
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(now)
        .fetch_all(p)
        .await?))
    }

    /// Takes a run for one step: only from `state`, only when nobody holds a
    /// live lease. True when this worker got it.
    pub async fn claim_run(
        &self,
        id: i64,
        state: RunState,
        worker: &str,
        now: Millis,
        lease_until: Millis,
    ) -> Result<bool> {
        let n = with_pool!(self, |p| sqlx::query(
            "UPDATE schedule_runs SET lease_until = $4, worker_id = $3, updated_at = $5
             WHERE id = $1 AND state = $2 AND (lease_until IS NULL OR lease_until < $5)"
        )
        .bind(id)
        .bind(state)
        .bind(worker)
        .bind(lease_until)
        .bind(now)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    /// Ends a step: moves the run on and lets go of the lease, only if this
    /// worker still holds it in `from`. True when it moved.
    pub async fn advance_run(
        &self,
        id: i64,
        worker: &str,
        from: RunState,
        to: RunState,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        let n = with_pool!(self, |p| {
            sqlx::query(
            "UPDATE schedule_runs SET state = $4, reason = COALESCE($5, reason), lease_until = NULL, worker_id = NULL, updated_at = $6
             WHERE id = $1 AND worker_id = $2 AND state = $3"
        )
        .bind(id)
        .bind(worker)
        .bind(from)
        .bind(to)
        .bind(reason)
        .bind(now)
        .execute(p)
        .await?
        .rows_affected()
        });
        Ok(n == 1)
    }

    /// An editor's change (hold, release, cancel): from any of `from`,
    /// whoever holds the lease; a worker holding it finds the state changed
    /// when it tries to advance.
    pub async fn set_run_state(
        &self,
        id: i64,
        from: &[RunState],
        to: RunState,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        let n = with_pool!(self, |p| {
            let mut q = sqlx::QueryBuilder::new("UPDATE schedule_runs SET state = ");
            q.push_bind(to);
            q.push(", reason = COALESCE(");
            q.push_bind(reason);
            q.push(", reason), updated_at = ");
            q.push_bind(now);
            q.push(" WHERE id = ");
            q.push_bind(id);
            q.push(" AND state IN ");
            push_list(&mut q, from.iter().copied());
            q.build().execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Marks a coming slot `skipped` ahead of time: a new row (the scheduler's
    /// own insert of the slot then does nothing), or its `pending` row. `None`
    /// when the slot's row is already further on (composed, fired …): nothing
    /// changed then, and the caller says what the slot holds.
    pub async fn skip_slot(
        &self,
        newsletter_id: i64,
        slot_at: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<Option<RunRow>> {
        let sql = format!(
            "INSERT INTO schedule_runs (newsletter_id, slot_at, jitter_ms, fire_at, preview_at, state, reason, created_at, updated_at)
             VALUES ($1, $2, 0, $2, NULL, 'skipped', $3, $4, $4)
             ON CONFLICT (newsletter_id, slot_at) DO UPDATE
                 SET state = 'skipped', reason = excluded.reason, lease_until = NULL, worker_id = NULL, updated_at = excluded.updated_at
                 WHERE schedule_runs.state = 'pending'
             RETURNING {RUN_COLUMNS}"
        );
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(newsletter_id)
        .bind(slot_at)
        .bind(reason)
        .bind(now)
        .fetch_optional(p)
        .await?))
    }

    /// Undoes `skip_slot` for a slot still ahead: the row is `pending` again
    /// with a fresh jitter. False when there was no such skip.
    pub async fn unskip_slot(
        &self,
        newsletter_id: i64,
        slot_at: Millis,
        jitter_ms: i64,
        preview_at: Option<Millis>,
        now: Millis,
    ) -> Result<bool> {
        let n = with_pool!(self, |p| {
            sqlx::query(
            "UPDATE schedule_runs SET state = 'pending', reason = NULL, jitter_ms = $3, fire_at = slot_at + $3, preview_at = $4, updated_at = $5
             WHERE newsletter_id = $1 AND slot_at = $2 AND state = 'skipped' AND issue_id IS NULL AND slot_at > $5"
        )
        .bind(newsletter_id)
        .bind(slot_at)
        .bind(jitter_ms)
        .bind(preview_at)
        .bind(now)
        .execute(p)
        .await?
        .rows_affected()
        });
        Ok(n == 1)
    }

    /// The run row of one slot, if recorded.
    pub async fn run_at(
        &self,
        newsletter_id: i64,
        slot_at: Millis,
    ) -> Result<Option<RunHistoryRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS}, (SELECT number FROM issues i WHERE i.id = schedule_runs.issue_id) AS issue_number
             FROM schedule_runs WHERE newsletter_id = $1 AND slot_at = $2"
        );
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(newsletter_id)
        .bind(slot_at)
        .fetch_optional(p)
        .await?))
    }

    /// The slots from `from` on that were skipped ahead of time.
    pub async fn skipped_slots_from(
        &self,
        newsletter_id: i64,
        from: Millis,
    ) -> Result<Vec<Millis>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_scalar(
            "SELECT slot_at FROM schedule_runs WHERE newsletter_id = $1 AND slot_at > $2 AND state = 'skipped' ORDER BY slot_at"
        )
        .bind(newsletter_id)
        .bind(from)
        .fetch_all(p)
        .await?
        }))
    }

    pub async fn run_by_id(&self, id: i64) -> Result<RunRow> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM schedule_runs WHERE id = $1");
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(id)
        .fetch_one(p)
        .await?))
    }

    pub async fn run_of_issue(&self, issue_id: i64) -> Result<Option<RunRow>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM schedule_runs WHERE issue_id = $1");
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(issue_id)
        .fetch_optional(p)
        .await?))
    }

    /// The most recent runs of a newsletter, newest slot first, with the
    /// number of the issue each one composed.
    pub async fn runs(&self, newsletter_id: i64, limit: i64) -> Result<Vec<RunHistoryRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS}, (SELECT number FROM issues i WHERE i.id = schedule_runs.issue_id) AS issue_number
             FROM schedule_runs WHERE newsletter_id = $1 ORDER BY slot_at DESC LIMIT $2"
        );
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(newsletter_id)
        .bind(limit)
        .fetch_all(p)
        .await?))
    }

    /// Marks an issue scheduled (from draft) and records its one-off send,
    /// together.
    pub async fn insert_one_off(
        &self,
        issue_id: i64,
        send_at: Millis,
        timezone: &str,
        now: Millis,
    ) -> Result<Option<i64>> {
        with_tx!(self, |tx| {
            let moved = sqlx::query("UPDATE issues SET status = $2 WHERE id = $1 AND status = $3")
                .bind(issue_id)
                .bind(IssueStatus::Scheduled)
                .bind(IssueStatus::Draft)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if moved == 0 {
                Ok(None)
            } else {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO one_off_sends (issue_id, send_at, timezone, state, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
                )
                .bind(issue_id)
                .bind(send_at)
                .bind(timezone)
                .bind(OneOffState::Waiting)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                Ok::<_, StoreError>(Some(id))
            }
        })
    }

    pub async fn waiting_one_offs(&self, newsletter_id: i64) -> Result<Vec<OneOffRow>> {
        let sql = format!(
            "{ONE_OFF_SELECT} WHERE i.newsletter_id = $1 AND o.state = 'waiting' ORDER BY o.send_at"
        );
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(newsletter_id)
        .fetch_all(p)
        .await?))
    }

    pub async fn one_off_of_issue(&self, issue_id: i64) -> Result<Option<OneOffRow>> {
        let sql = format!("{ONE_OFF_SELECT} WHERE o.issue_id = $1 AND o.state = 'waiting'");
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(issue_id)
        .fetch_optional(p)
        .await?))
    }

    /// Waiting one-off sends that are due and not leased by a live process.
    pub async fn due_one_offs(&self, now: Millis) -> Result<Vec<OneOffRow>> {
        let sql = format!(
            "{ONE_OFF_SELECT} WHERE o.state = 'waiting' AND o.send_at <= $1 AND (o.lease_until IS NULL OR o.lease_until < $1) ORDER BY o.send_at"
        );
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(now)
        .fetch_all(p)
        .await?))
    }

    pub async fn claim_one_off(
        &self,
        id: i64,
        worker: &str,
        now: Millis,
        lease_until: Millis,
    ) -> Result<bool> {
        let n = with_pool!(self, |p| sqlx::query(
            "UPDATE one_off_sends SET lease_until = $3, worker_id = $2, updated_at = $4
             WHERE id = $1 AND state = 'waiting' AND (lease_until IS NULL OR lease_until < $4)"
        )
        .bind(id)
        .bind(worker)
        .bind(lease_until)
        .bind(now)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    /// Ends a one-off: `worker` = the leasing process, or `None` for an editor's cancel.
    pub async fn finish_one_off(
        &self,
        id: i64,
        worker: Option<&str>,
        to: OneOffState,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        let n = with_pool!(self, |p| {
            sqlx::query(
            "UPDATE one_off_sends SET state = $3, reason = $4, lease_until = NULL, updated_at = $5
             WHERE id = $1 AND state = 'waiting' AND (CAST($2 AS TEXT) IS NULL OR worker_id = $2)"
        )
        .bind(id)
        .bind(worker)
        .bind(to)
        .bind(reason)
        .bind(now)
        .execute(p)
        .await?
        .rows_affected()
        });
        Ok(n == 1)
    }
}

impl Db {
    /// Undoes a scheduled compose in one transaction: the issue's items are
    /// ready again, the issue (scheduled, so never sent) is removed and the
    /// run is pending again, with no lease. False (nothing changed) when the
    /// issue is no longer scheduled or the run moved on.
    pub async fn reopen_scheduled_issue(
        &self,
        run_id: i64,
        issue_id: i64,
        now: Millis,
    ) -> Result<bool> {
        let reopened = with_tx!(self, |tx| {
            let run = sqlx::query(
                "UPDATE schedule_runs SET state = 'pending', issue_id = NULL, lease_until = NULL, worker_id = NULL, updated_at = $3
                 WHERE id = $1 AND issue_id = $2 AND state IN ('composed', 'waiting', 'held')",
            )
            .bind(run_id)
            .bind(issue_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "UPDATE items SET state = 'ready', issue_id = NULL, position = 0, updated_at = $2 WHERE issue_id = $1",
            )
            .bind(issue_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let issue = sqlx::query("DELETE FROM issues WHERE id = $1 AND status = 'scheduled'")
                .bind(issue_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if run == 1 && issue == 1 {
                Ok(true)
            } else {
                Err(StoreError::Conflict("the scheduled issue"))
            }
        });
        match reopened {
            Err(StoreError::Conflict(_)) => Ok(false),
            other => other,
        }
    }
}

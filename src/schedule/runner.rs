//! The loop `herald serve` runs beside the delivery engine, and `tick`, one
//! round of it (tests call it directly with a `ManualClock`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{Schedule, ScheduleError};
use crate::app::App;
use crate::clock::Clock;
use crate::content::{ContentError, SlotCompose};
use crate::domain::{IssueStatus, Millis, OneOffState, RunState};
use crate::readiness::ComponentState;
use crate::schedule::spec::OnEmpty;
use crate::store::schedule::{NewRun, OneOffRow, RunRow};

/// How often the loop looks for due work: a slot fires at most this late.
const POLL: Duration = Duration::from_secs(1);
/// A slot found this late by a running loop is on time, whatever
/// `catch_up` says (a busy machine, a slow database round).
const MIN_CATCH_UP: Duration = Duration::from_secs(60);
/// After downtime, slots older than this are not looked at one by one.
const MAX_LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// At most this many slots are recorded per newsletter and round (an
/// every-second schedule after a long outage); the rest wait for the next round.
const MAX_SLOTS_PER_ROUND: usize = 500;
/// Backoff bounds while the database does not answer.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

pub const COMPONENT: &str = "scheduler";

/// What one round did (for tests and logs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub recorded: u64,
    pub composed: u64,
    pub previews: u64,
    pub enqueued: u64,
    pub skipped: u64,
    pub one_offs_sent: u64,
}

pub struct Scheduler {
    app: App,
    clock: Arc<dyn Clock>,
    worker_id: String,
    lease: chrono::TimeDelta,
}

impl Scheduler {
    pub fn new(app: App, clock: Arc<dyn Clock>) -> Scheduler {
        let lease = chrono::TimeDelta::from_std(app.config.delivery.lease.0)
            .unwrap_or(chrono::TimeDelta::minutes(5));
        Scheduler {
            app,
            clock,
            worker_id: format!("sched-{}", uuid::Uuid::new_v4().simple()),
            lease,
        }
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Rounds until `shutdown`, reporting into readiness as "scheduler". A
    /// database error is retried with capped backoff (degraded); after
    /// `delivery.max_outage` without a good round it gives up, and `herald
    /// serve` exits non-zero like it does when delivery gives up.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ScheduleError> {
        let readiness = self.app.readiness.clone();
        readiness.report(COMPONENT, ComponentState::Starting);
        let max_outage = self.app.config.delivery.max_outage.0;
        let mut failing_since: Option<Instant> = None;
        let mut backoff = BACKOFF.0;
        loop {
            let round = tokio::select! {
                r = self.tick() => r,
                _ = shutdown.cancelled() => break,
            };
            let wait = match round {
                Ok(report) => {
                    if report != TickReport::default() {
                        tracing::info!(?report, "scheduler round");
                    }
                    failing_since = None;
                    backoff = BACKOFF.0;
                    readiness.report(COMPONENT, ComponentState::Running);
                    POLL
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= max_outage {
                        let why = humantime::format_duration(max_outage).to_string();
                        tracing::error!(error = %e, "scheduler gives up");
                        readiness.report(COMPONENT, ComponentState::Failed(e.to_string()));
                        return Err(ScheduleError::GaveUp(why));
                    }
                    tracing::warn!(error = %e, retry_in = ?backoff, "scheduler round failed");
                    readiness.report(COMPONENT, ComponentState::Degraded(e.to_string()));
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF.1);
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        readiness.report(COMPONENT, ComponentState::Stopped);
        Ok(())
    }

    /// One round: record the slots that came due (or, with a preview, are
    /// within `preview_before`), then move every due run and one-off send
    /// one or more steps forward.
    pub async fn tick(&self) -> Result<TickReport, ScheduleError> {
        let now = self.clock.now();
        let mut report = TickReport::default();
        for row in self.app.db.schedules().await? {
            let schedule = Schedule::from_row(&row)?;
            report.recorded += self.record_slots(&schedule, now).await?;
        }
        for run in self.app.db.due_runs(now.timestamp_millis()).await? {
            self.step_run(run, &mut report).await?;
        }
        for one_off in self.app.db.due_one_offs(now.timestamp_millis()).await? {
            self.step_one_off(one_off, &mut report).await?;
        }
        Ok(report)
    }

    async fn record_slots(&self, s: &Schedule, now: DateTime<Utc>) -> Result<u64, ScheduleError> {
        let db = &self.app.db;
        let now_ms = now.timestamp_millis();
        let Some(checked) = s.checked_until else {
            // A new schedule starts now: nothing before it was ever due.
            db.start_schedule(s.newsletter_id, now_ms).await?;
            return Ok(0);
        };
        let preview = chrono::TimeDelta::from_std(s.preview_before).unwrap_or_default();
        let horizon = now + preview;
        let mut from = ms_to_utc(checked);
        if from < now - MAX_LOOKBACK {
            tracing::warn!(
                newsletter = s.newsletter_id,
                since = %from,
                "slots more than 7 days old are not recorded one by one"
            );
            from = now - MAX_LOOKBACK;
        }
        let mut slots = Vec::new();
        let mut until = horizon;
        for slot in s.cron.slots_after(s.zone, from) {
            if slot > horizon {
                break;
            }
            if slots.len() == MAX_SLOTS_PER_ROUND {
                until = slots.last().copied().unwrap_or(horizon);
                break;
            }
            slots.push(slot);
        }
        let last_past = slots.iter().rposition(|slot| *slot <= now);
        let catch_up = chrono::TimeDelta::from_std(s.catch_up.max(MIN_CATCH_UP))
            .unwrap_or(chrono::TimeDelta::MAX);
        let runs: Vec<NewRun> = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let slot_at = slot.timestamp_millis();
                let late = now - *slot;
                let (state, reason) = if last_past.is_some_and(|last| i < last) {
                    (
                        RunState::Missed,
                        Some("Herald was not running at the slot; only the latest missed slot is caught up".to_owned()),
                    )
                } else if *slot <= now && late > catch_up {
                    (
                        RunState::Missed,
                        Some(format!(
                            "Herald was not running at the slot; found {} late, more than newsletter.catch_up ({})",
                            humantime::format_duration(late.to_std().unwrap_or_default()),
                            humantime::format_duration(s.catch_up)
                        )),
                    )
                } else {
                    (RunState::Pending, None)
                };
                // Chosen once, here, and stored with the slot.
                let jitter_ms = if state == RunState::Pending {
                    choose_jitter(s.jitter)
                } else {
                    0
                };
                NewRun {
                    slot_at,
                    jitter_ms,
                    preview_at: (!s.preview_before.is_zero())
                        .then(|| (*slot - preview).timestamp_millis()),
                    state,
                    reason,
                }
            })
            .collect();
        for r in runs.iter().filter(|r| r.state == RunState::Missed) {
            tracing::warn!(newsletter = s.newsletter_id, slot = %ms_to_utc(r.slot_at), "slot missed");
        }
        Ok(db
            .record_slots(s.newsletter_id, &runs, until.timestamp_millis(), now_ms)
            .await?)
    }

    fn lease_until(&self) -> (Millis, Millis) {
        let now = self.clock.now();
        (
            now.timestamp_millis(),
            (now + self.lease).timestamp_millis(),
        )
    }

    async fn step_run(&self, run: RunRow, report: &mut TickReport) -> Result<(), ScheduleError> {
        let db = &self.app.db;
        let (now, lease) = self.lease_until();
        if !db
            .claim_run(run.id, run.state, &self.worker_id, now, lease)
            .await?
        {
            return Ok(()); // another process has it
        }
        let Some(row) = db.schedule_of(run.newsletter_id).await? else {
            // The schedule was removed from the config since the slot was recorded.
            db.advance_run(
                run.id,
                &self.worker_id,
                run.state,
                RunState::Cancelled,
                Some("the newsletter no longer has a schedule"),
                now,
            )
            .await?;
            return Ok(());
        };
        let schedule = Schedule::from_row(&row)?;
        let mut state = run.state;
        if state == RunState::Pending {
            state = match self.compose(&run, &schedule).await? {
                Some(next) => {
                    if next == RunState::Composed {
                        report.composed += 1;
                    } else {
                        report.skipped += 1;
                    }
                    next
                }
                None => return Ok(()),
            };
        }
        if state == RunState::Composed {
            let run = db.run_by_id(run.id).await?;
            let mut reason = None;
            if !schedule.preview_before.is_zero() && run.fire_at > now {
                reason = self.preview(&run, &schedule).await;
                if reason.is_none() {
                    report.previews += 1;
                }
            }
            if !db
                .advance_run(
                    run.id,
                    &self.worker_id,
                    RunState::Composed,
                    RunState::Waiting,
                    reason.as_deref(),
                    self.clock.now().timestamp_millis(),
                )
                .await?
            {
                return Ok(()); // an editor held or cancelled it meanwhile
            }
            if run.fire_at > self.clock.now().timestamp_millis() {
                return Ok(());
            }
            let (now, lease) = self.lease_until();
            if !db
                .claim_run(run.id, RunState::Waiting, &self.worker_id, now, lease)
                .await?
            {
                return Ok(());
            }
            state = RunState::Waiting;
        }
        if state == RunState::Waiting {
            let run = db.run_by_id(run.id).await?;
            if self.fire(&run).await? {
                report.enqueued += 1;
            }
        }
        Ok(())
    }

    /// Pending → composed (or skipped / failed). `None`: someone else moved
    /// the run meanwhile; nothing more to do here.
    async fn compose(&self, run: &RunRow, s: &Schedule) -> Result<Option<RunState>, ScheduleError> {
        let db = &self.app.db;
        let newsletter = db.newsletter_by_id(run.newsletter_id).await?;
        let slot = SlotCompose {
            run_id: run.id,
            allow_empty: s.on_empty == OnEmpty::SendAnyway,
        };
        let now = || self.clock.now().timestamp_millis();
        match self.app.compose_for_slot(&newsletter, slot).await {
            Ok(issue) => {
                tracing::info!(newsletter = %newsletter.slug, issue = issue.number, slot = %ms_to_utc(run.slot_at), "scheduled issue composed");
                Ok(Some(RunState::Composed))
            }
            Err(ContentError::Store(e)) => Err(e.into()),
            Err(e) => {
                // A concurrent compose may have won the slot; only a run
                // still pending is ours to close.
                if db.run_by_id(run.id).await?.state != RunState::Pending {
                    return Ok(None);
                }
                let (to, reason) = match e {
                    ContentError::NoReadyItems(_) => (
                        RunState::Skipped,
                        "no items were ready (newsletter.on_empty = \"skip\")".to_owned(),
                    ),
                    other => (RunState::Failed, format!("compose failed: {other}")),
                };
                tracing::warn!(newsletter = %newsletter.slug, slot = %ms_to_utc(run.slot_at), %reason, "slot not sent");
                db.advance_run(
                    run.id,
                    &self.worker_id,
                    RunState::Pending,
                    to,
                    Some(&reason),
                    now(),
                )
                .await?;
                Ok(Some(to))
            }
        }
    }

    /// The editors' [TEST] copy. A failure is recorded on the run, not fatal:
    /// the slot still sends (the editors can hold it).
    async fn preview(&self, run: &RunRow, s: &Schedule) -> Option<String> {
        let Some(issue_id) = run.issue_id else {
            return Some("no issue to preview".into());
        };
        let result = async {
            let issue = self.app.db.issue_by_id(issue_id).await?;
            let newsletter = self.app.db.newsletter_by_id(run.newsletter_id).await?;
            self.app
                .send_test_copies(&newsletter, &issue, &s.preview_to.0)
                .await?;
            Ok::<_, ScheduleError>(())
        }
        .await;
        match result {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(run = run.id, error = %e, "preview copy not sent");
                Some(format!("preview copy not sent: {e}"))
            }
        }
    }

    /// Waiting → enqueued (or cancelled). Enqueueing is idempotent (one row
    /// per issue and subscriber), so a process that died after enqueueing
    /// and before recording it is completed by another without a second mail.
    async fn fire(&self, run: &RunRow) -> Result<bool, ScheduleError> {
        let db = &self.app.db;
        let now = || self.clock.now().timestamp_millis();
        let Some(issue_id) = run.issue_id else {
            db.advance_run(
                run.id,
                &self.worker_id,
                RunState::Waiting,
                RunState::Failed,
                Some("the scheduled issue was deleted"),
                now(),
            )
            .await?;
            return Ok(false);
        };
        let issue = db.issue_by_id(issue_id).await?;
        let (to, reason) = match issue.status {
            IssueStatus::Cancelled => (RunState::Cancelled, Some("the issue was cancelled")),
            IssueStatus::Scheduled | IssueStatus::Draft => {
                let n = self.app.send_issue(&issue).await?;
                tracing::info!(
                    issue = issue.number,
                    recipients = n,
                    "scheduled issue enqueued"
                );
                (RunState::Enqueued, None)
            }
            // `herald send` by hand, or a process that enqueued and stopped
            // before recording it: enqueued once, nothing more to do.
            IssueStatus::Sending | IssueStatus::Sent | IssueStatus::Paused => (
                RunState::Enqueued,
                Some("already enqueued before this round"),
            ),
        };
        db.advance_run(
            run.id,
            &self.worker_id,
            RunState::Waiting,
            to,
            reason,
            now(),
        )
        .await?;
        Ok(to == RunState::Enqueued && reason.is_none())
    }

    async fn step_one_off(
        &self,
        o: OneOffRow,
        report: &mut TickReport,
    ) -> Result<(), ScheduleError> {
        let db = &self.app.db;
        let (now, lease) = self.lease_until();
        if !db.claim_one_off(o.id, &self.worker_id, now, lease).await? {
            return Ok(());
        }
        let issue = db.issue_by_id(o.issue_id).await?;
        let (to, reason) = match issue.status {
            IssueStatus::Cancelled => (
                OneOffState::Cancelled,
                Some("the issue was cancelled".to_owned()),
            ),
            _ => match self.app.send_issue(&issue).await {
                Ok(_) => (OneOffState::Sent, None),
                Err(crate::delivery::control::ControlError::Store(e)) => return Err(e.into()),
                Err(e) => (OneOffState::Failed, Some(e.to_string())),
            },
        };
        if to == OneOffState::Sent {
            report.one_offs_sent += 1;
        }
        db.finish_one_off(
            o.id,
            Some(&self.worker_id),
            to,
            reason.as_deref(),
            self.clock.now().timestamp_millis(),
        )
        .await?;
        Ok(())
    }
}

pub(crate) fn ms_to_utc(ms: Millis) -> DateTime<Utc> {
    crate::domain::ms_to_datetime(ms)
}

/// A slot's random delay, chosen once when its run is recorded (or a
/// skipped slot is reinstated) and stored with it.
pub(crate) fn choose_jitter(max: Duration) -> i64 {
    let max = i64::try_from(max.as_millis()).unwrap_or(i64::MAX);
    if max > 0 {
        rand::random_range(0..=max)
    } else {
        0
    }
}

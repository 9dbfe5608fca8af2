//! What editors do with the schedule, as `App` methods shared by the CLI
//! and the HTTP API: look at it, send an issue at a time, hold, release,
//! recompose or cancel what is scheduled. Times are passed in (`now`), so
//! callers use the same clock as the scheduler.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;

use super::spec::ScheduleTz;
use super::{Schedule, ScheduleError};
use crate::app::App;
use crate::content::SlotCompose;
use crate::domain::{IssueStatus, OneOffState, RunState};
use crate::store::Newsletter;
use crate::store::content::IssueRow;
use crate::store::schedule::{OneOffRow, RunHistoryRow, RunRow};

/// One coming slot, in the newsletter's zone and in UTC.
#[derive(Debug, Clone, Serialize)]
pub struct NextSlot {
    /// RFC 3339 with the zone's offset, e.g. `2026-05-08T09:00:00+05:00`.
    pub local: String,
    pub utc: DateTime<Utc>,
    /// An editor skipped it ahead of time (`herald schedule skip`): it sends nothing.
    pub skipped: bool,
}

impl NextSlot {
    fn new(utc: DateTime<Utc>, zone: ScheduleTz, skipped: bool) -> Self {
        NextSlot {
            local: utc
                .with_timezone(&zone.0)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            utc,
            skipped,
        }
    }
}

const SKIPPED_BY_EDITOR: &str = "skipped in advance by an editor";

/// A wall time read in `zone`: a repeated one is the first of the two, one
/// the clocks skip is an error that says so.
fn instant_in(zone: ScheduleTz, at: NaiveDateTime) -> Result<DateTime<Utc>, ScheduleError> {
    match zone.0.from_local_datetime(&at) {
        chrono::LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(first, _) => Ok(first.with_timezone(&Utc)),
        chrono::LocalResult::None => Err(ScheduleError::BadTime(format!(
            "{at} does not exist in {zone} (the clocks skip it); give a time after the change"
        ))),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleInfo {
    pub expression: String,
    pub timezone: String,
    pub on_empty: String,
    pub catch_up: String,
    pub jitter: String,
    pub preview_before: String,
    pub preview_to: Vec<String>,
}

/// `herald schedule show` / `GET /api/v1/schedule`.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleOverview {
    pub newsletter: String,
    /// `None`: the newsletter has no schedule (only one-off sends).
    pub schedule: Option<ScheduleInfo>,
    pub next: Vec<NextSlot>,
    pub one_offs: Vec<OneOffRow>,
    /// Newest slot first: fired (enqueued), skipped, missed, … with reasons.
    pub history: Vec<RunHistoryRow>,
}

/// What `cancel_scheduled` stopped.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Unscheduled {
    /// A one-off send; the issue is a draft again.
    OneOff { issue_number: i64 },
    /// A scheduled issue; it is cancelled and its slot will send nothing.
    Slot {
        issue_number: i64,
        slot_at: DateTime<Utc>,
    },
}

impl App {
    pub async fn schedule_overview(
        &self,
        newsletter: &Newsletter,
        next: usize,
        history: i64,
        now: DateTime<Utc>,
    ) -> Result<ScheduleOverview, ScheduleError> {
        let row = self.db.schedule_of(newsletter.id).await?;
        let schedule = row.as_ref().map(Schedule::from_row).transpose()?;
        let slots = match &schedule {
            Some(s) => {
                let skipped = self
                    .db
                    .skipped_slots_from(newsletter.id, now.timestamp_millis())
                    .await?;
                s.cron
                    .slots_after(s.zone, now)
                    .take(next)
                    .map(|utc| {
                        NextSlot::new(utc, s.zone, skipped.contains(&utc.timestamp_millis()))
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let fmt = |d: std::time::Duration| humantime::format_duration(d).to_string();
        Ok(ScheduleOverview {
            newsletter: newsletter.slug.clone(),
            schedule: schedule.map(|s| ScheduleInfo {
                expression: s.cron.to_string(),
                timezone: s.zone.to_string(),
                on_empty: s.on_empty.as_str().to_owned(),
                catch_up: fmt(s.catch_up),
                jitter: fmt(s.jitter),
                preview_before: fmt(s.preview_before),
                preview_to: s.preview_to.0.iter().map(|a| a.to_string()).collect(),
            }),
            next: slots,
            one_offs: self.db.waiting_one_offs(newsletter.id).await?,
            history: self.db.runs(newsletter.id, history).await?,
        })
    }

    /// `herald send ISSUE --at "2026-05-08 09:00" [--timezone …]`: the wall
    /// time is read in `zone` (default: the newsletter's `timezone`).
    pub async fn send_issue_at(
        &self,
        issue: &IssueRow,
        at: NaiveDateTime,
        zone: ScheduleTz,
        now: DateTime<Utc>,
    ) -> Result<OneOffRow, ScheduleError> {
        let instant = instant_in(zone, at)?;
        if instant <= now {
            return Err(ScheduleError::BadTime(format!(
                "{at} {zone} is in the past; give a later time, or send issue #{} now",
                issue.number
            )));
        }
        if issue.status != IssueStatus::Draft {
            return Err(ScheduleError::NotDraft {
                number: issue.number,
                status: issue.status.to_string(),
            });
        }
        let inserted = self
            .db
            .insert_one_off(
                issue.id,
                instant.timestamp_millis(),
                &zone.to_string(),
                now.timestamp_millis(),
            )
            .await?;
        if inserted.is_none() {
            let status = self.db.issue_status(issue.id).await?;
            return Err(ScheduleError::NotDraft {
                number: issue.number,
                status: status.to_string(),
            });
        }
        self.db
            .one_off_of_issue(issue.id)
            .await?
            .ok_or(ScheduleError::NotScheduled {
                number: issue.number,
            })
    }

    /// The slot `at` names (a wall time in the schedule's zone), or the next
    /// one; it must be a coming slot of the schedule.
    async fn coming_slot(
        &self,
        newsletter: &Newsletter,
        at: Option<NaiveDateTime>,
        now: DateTime<Utc>,
    ) -> Result<(Schedule, DateTime<Utc>), ScheduleError> {
        let row = self
            .db
            .schedule_of(newsletter.id)
            .await?
            .ok_or_else(|| ScheduleError::NoSchedule(newsletter.slug.clone()))?;
        let schedule = Schedule::from_row(&row)?;
        let (zone, cron) = (schedule.zone, &schedule.cron);
        let slot = match at {
            None => cron.slots_after(zone, now).next().ok_or_else(|| {
                ScheduleError::BadTime(format!("the schedule {cron} has no coming slot"))
            })?,
            Some(at) => {
                let instant = instant_in(zone, at)?;
                if instant <= now {
                    return Err(ScheduleError::BadTime(format!(
                        "{at} {zone} has passed; only coming slots can be skipped (see `herald schedule show`)"
                    )));
                }
                let first_from = cron
                    .slots_after(zone, instant - chrono::TimeDelta::milliseconds(1))
                    .next();
                if first_from != Some(instant) {
                    return Err(ScheduleError::NotASlot {
                        at: format!("{at} {zone}"),
                        expression: cron.to_string(),
                        zone: zone.to_string(),
                        next: first_from.map_or_else(
                            || "none".to_owned(),
                            |t| NextSlot::new(t, zone, false).local,
                        ),
                    });
                }
                instant
            }
        };
        Ok((schedule, slot))
    }

    /// `herald schedule skip [--at …]`: a coming slot (the next one by
    /// default) sends nothing, before anything is composed for it — a
    /// holiday week. Skipping a slot twice is the same as once; a slot
    /// whose issue is already composed is cancelled through that issue.
    pub async fn skip_slot(
        &self,
        newsletter: &Newsletter,
        at: Option<NaiveDateTime>,
        now: DateTime<Utc>,
    ) -> Result<NextSlot, ScheduleError> {
        let (schedule, slot) = self.coming_slot(newsletter, at, now).await?;
        let slot_ms = slot.timestamp_millis();
        let done = NextSlot::new(slot, schedule.zone, true);
        if self
            .db
            .skip_slot(
                newsletter.id,
                slot_ms,
                SKIPPED_BY_EDITOR,
                now.timestamp_millis(),
            )
            .await?
            .is_some()
        {
            return Ok(done);
        }
        let Some(row) = self.db.run_at(newsletter.id, slot_ms).await? else {
            return Ok(done);
        };
        let state = row.run.state;
        if state == RunState::Skipped {
            return Ok(done);
        }
        Err(ScheduleError::SlotTaken {
            at: done.local,
            state: state.to_string(),
            issue: row
                .issue_number
                .map(|n| format!(" as issue #{n}"))
                .unwrap_or_default(),
            what: match (state, row.issue_number) {
                (RunState::Composed | RunState::Waiting | RunState::Held, Some(n)) => {
                    format!("cancel that issue instead with `herald schedule cancel {n}`")
                }
                _ => "it can no longer be skipped".to_owned(),
            },
        })
    }

    /// `herald schedule unskip --at …`: a slot skipped ahead of time goes
    /// out after all (composed and sent as usual, with a fresh jitter).
    pub async fn unskip_slot(
        &self,
        newsletter: &Newsletter,
        at: NaiveDateTime,
        now: DateTime<Utc>,
    ) -> Result<NextSlot, ScheduleError> {
        let (schedule, slot) = self.coming_slot(newsletter, Some(at), now).await?;
        let preview = chrono::TimeDelta::from_std(schedule.preview_before).unwrap_or_default();
        let reinstated = self
            .db
            .unskip_slot(
                newsletter.id,
                slot.timestamp_millis(),
                super::runner::choose_jitter(schedule.jitter),
                (!schedule.preview_before.is_zero()).then(|| (slot - preview).timestamp_millis()),
                now.timestamp_millis(),
            )
            .await?;
        let slot = NextSlot::new(slot, schedule.zone, false);
        if reinstated {
            Ok(slot)
        } else {
            Err(ScheduleError::NotSkipped(slot.local))
        }
    }

    /// `herald schedule cancel ISSUE`: a waiting one-off send (the issue
    /// goes back to draft) or a scheduled issue (cancelled; its slot sends
    /// nothing).
    pub async fn cancel_scheduled(
        &self,
        issue: &IssueRow,
        now: DateTime<Utc>,
    ) -> Result<Unscheduled, ScheduleError> {
        let now_ms = now.timestamp_millis();
        if let Some(o) = self.db.one_off_of_issue(issue.id).await?
            && self
                .db
                .finish_one_off(
                    o.id,
                    None,
                    OneOffState::Cancelled,
                    Some("cancelled by an editor"),
                    now_ms,
                )
                .await?
        {
            self.db
                .set_issue_status(issue.id, IssueStatus::Draft, &[IssueStatus::Scheduled])
                .await?;
            return Ok(Unscheduled::OneOff {
                issue_number: issue.number,
            });
        }
        let run = self.open_run_of(issue).await?;
        if !self
            .db
            .set_run_state(
                run.id,
                &[RunState::Composed, RunState::Waiting, RunState::Held],
                RunState::Cancelled,
                Some("cancelled by an editor"),
                now_ms,
            )
            .await?
        {
            return Err(ScheduleError::NotScheduled {
                number: issue.number,
            });
        }
        self.cancel_issue(issue).await?;
        Ok(Unscheduled::Slot {
            issue_number: issue.number,
            slot_at: super::runner::ms_to_utc(run.slot_at),
        })
    }

    /// Keeps a scheduled issue from going out at its slot until released.
    pub async fn hold_scheduled(
        &self,
        issue: &IssueRow,
        now: DateTime<Utc>,
    ) -> Result<RunRow, ScheduleError> {
        self.move_run(
            issue,
            &[RunState::Composed, RunState::Waiting],
            RunState::Held,
            "held by an editor",
            now,
        )
        .await
    }

    /// Undoes `hold_scheduled`: the issue goes out at its slot, or at once
    /// if the slot has passed.
    pub async fn release_scheduled(
        &self,
        issue: &IssueRow,
        now: DateTime<Utc>,
    ) -> Result<RunRow, ScheduleError> {
        self.move_run(
            issue,
            &[RunState::Held],
            RunState::Waiting,
            "released by an editor",
            now,
        )
        .await
    }

    /// Moves the open run of a scheduled issue from one of `from` to `to`,
    /// recording why; an issue whose run is elsewhere is not scheduled.
    async fn move_run(
        &self,
        issue: &IssueRow,
        from: &[RunState],
        to: RunState,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRow, ScheduleError> {
        let run = self.open_run_of(issue).await?;
        if !self
            .db
            .set_run_state(run.id, from, to, Some(reason), now.timestamp_millis())
            .await?
        {
            return Err(ScheduleError::NotScheduled {
                number: issue.number,
            });
        }
        Ok(self.db.run_by_id(run.id).await?)
    }

    /// After editors changed the ready items: the scheduled issue's items
    /// return to `ready`, the old (never sent) issue is removed, and the
    /// slot composes again from what is ready now. The slot keeps its time
    /// and its jitter; a new preview copy goes out on the next round.
    pub async fn recompose_scheduled(
        &self,
        newsletter: &Newsletter,
        issue: &IssueRow,
        now: DateTime<Utc>,
    ) -> Result<IssueRow, ScheduleError> {
        let run = self.open_run_of(issue).await?;
        if !self
            .db
            .reopen_scheduled_issue(run.id, issue.id, now.timestamp_millis())
            .await?
        {
            return Err(ScheduleError::NotScheduled {
                number: issue.number,
            });
        }
        let on_empty = match self.db.schedule_of(newsletter.id).await? {
            Some(row) => Schedule::from_row(&row)?.on_empty,
            None => Default::default(),
        };
        Ok(self
            .compose_for_slot(
                newsletter,
                SlotCompose {
                    run_id: run.id,
                    allow_empty: on_empty == super::spec::OnEmpty::SendAnyway,
                },
            )
            .await?)
    }

    async fn open_run_of(&self, issue: &IssueRow) -> Result<RunRow, ScheduleError> {
        match self.db.run_of_issue(issue.id).await? {
            Some(run) if !run.state.is_final() => Ok(run),
            _ => Err(ScheduleError::NotScheduled {
                number: issue.number,
            }),
        }
    }
}

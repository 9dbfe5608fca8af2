//! The weekly scheduler: each newsletter's cron slots, recorded once per
//! (newsletter, slot) in `schedule_runs` before anything is composed, then
//! moved forward step by step under a lease (pending → composed → waiting →
//! enqueued, or skipped / missed / cancelled / failed), so a restart, a
//! second process or a clock hiccup never fires a slot twice or leaves one
//! half done. Composing and sending go through `App::compose_for_slot` (the
//! path of `herald issue compose`) and `App::send_issue` (`herald send`).
//!
//! `runner.rs` is the loop `herald serve` runs; `service.rs` is what editors
//! do (show, send at, hold, release, recompose, cancel), for the CLI and the
//! HTTP API alike.

mod runner;
mod service;
pub mod spec;

use std::time::Duration;

pub use runner::{Scheduler, TickReport};
pub use service::{NextSlot, ScheduleInfo, ScheduleOverview, Unscheduled};

use crate::config::NewsletterConfig;
use crate::domain::Millis;
use crate::store::StoreError;
use crate::store::schedule::ScheduleRow;
use spec::{AddressList, CronSchedule, OnEmpty, ScheduleTz};

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Content(#[from] crate::content::ContentError),
    #[error(transparent)]
    Control(#[from] crate::delivery::control::ControlError),
    #[error(
        "issue #{number} is not waiting for a scheduled or one-off send (see `herald schedule show`)"
    )]
    NotScheduled { number: i64 },
    #[error("issue #{number} is {status}; only a draft issue can be scheduled with --at")]
    NotDraft { number: i64, status: String },
    #[error("{0}")]
    BadTime(String),
    #[error(
        "newsletter {0} has no schedule (newsletter.schedule is empty), so it has no slots to skip"
    )]
    NoSchedule(String),
    #[error(
        "{at} is not a slot of the schedule {expression:?} in {zone}; the next slot after it is {next}"
    )]
    NotASlot {
        at: String,
        expression: String,
        zone: String,
        next: String,
    },
    #[error("the slot at {at} is already {state}{issue}: {what}")]
    SlotTaken {
        at: String,
        state: String,
        issue: String,
        what: String,
    },
    #[error("the slot at {0} was not skipped in advance (see `herald schedule show`)")]
    NotSkipped(String),
    #[error(
        "the scheduler could not reach the database for {0}; exiting so that the service manager restarts Herald"
    )]
    GaveUp(String),
}

/// A newsletter's schedule, typed.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub newsletter_id: i64,
    pub cron: CronSchedule,
    pub zone: ScheduleTz,
    pub on_empty: OnEmpty,
    pub catch_up: Duration,
    pub jitter: Duration,
    pub preview_before: Duration,
    pub preview_to: AddressList,
    /// Every slot up to here has its run row; `None` before the first round.
    pub checked_until: Option<Millis>,
}

impl Schedule {
    /// A stored row was written from a validated config, so a value that
    /// does not parse is corruption, reported as such.
    pub fn from_row(row: &ScheduleRow) -> Result<Schedule, StoreError> {
        let corrupt = |what: &str, e: String| {
            StoreError::Corrupt(format!(
                "schedules.{what} of newsletter {}: {e}",
                row.newsletter_id
            ))
        };
        let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
        Ok(Schedule {
            newsletter_id: row.newsletter_id,
            cron: CronSchedule::parse(&row.expression).map_err(|e| corrupt("expression", e))?,
            zone: row.timezone.parse().map_err(|e| corrupt("timezone", e))?,
            on_empty: row.on_empty.parse().map_err(|e| corrupt("on_empty", e))?,
            catch_up: ms(row.catch_up_ms),
            jitter: ms(row.jitter_ms),
            preview_before: ms(row.preview_before_ms),
            preview_to: AddressList::parse_text(&row.preview_to)
                .map_err(|e| corrupt("preview_to", e))?,
            checked_until: row.checked_until,
        })
    }
}

/// The row `[newsletter]` asks for; `None` when it has no schedule.
pub fn schedule_row(newsletter_id: i64, n: &NewsletterConfig) -> Option<ScheduleRow> {
    let cron = n.schedule.as_ref()?;
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Some(ScheduleRow {
        newsletter_id,
        expression: cron.as_str().to_owned(),
        timezone: n.timezone.to_string(),
        on_empty: n.on_empty.as_str().to_owned(),
        catch_up_ms: ms(n.catch_up.0),
        jitter_ms: ms(n.jitter.0),
        preview_before_ms: ms(n.preview_before.0),
        preview_to: n.preview_to.to_text(),
        checked_until: None,
    })
}

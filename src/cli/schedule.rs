//! `herald schedule show | skip | unskip | cancel | hold | release | recompose` and
//! `herald send ISSUE --at …`.

use anyhow::Context;
use chrono::{NaiveDateTime, Timelike};
use clap::Subcommand;

use crate::app::App;
use crate::clock::{Clock, SystemClock};
use crate::domain::RunState;
use crate::schedule::Unscheduled;
use crate::schedule::spec::ScheduleTz;

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Next firing times (in the newsletter's zone and UTC), one-off sends waiting, recent history.
    Show {
        #[arg(long)]
        newsletter: Option<String>,
        /// How many coming slots to list (1 to 100).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=100))]
        next: u16,
        /// How many past slots to list (1 to 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
        history: u16,
        #[arg(long)]
        json: bool,
    },
    /// Skip a coming slot before anything is composed for it (a holiday week): nothing is sent then.
    Skip {
        /// The slot, as a wall time in the schedule's zone ("2026-05-08 09:00"); default: the next slot.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        newsletter: Option<String>,
    },
    /// Reinstate a slot skipped with `herald schedule skip`: it is composed and sent as usual.
    Unskip {
        /// The skipped slot, as a wall time in the schedule's zone ("2026-05-08 09:00").
        #[arg(long)]
        at: String,
        #[arg(long)]
        newsletter: Option<String>,
    },
    /// Cancel a one-off send (the issue becomes a draft again) or a scheduled issue (nothing is sent at its slot).
    Cancel {
        issue: String,
        #[arg(long)]
        newsletter: Option<String>,
    },
    /// Keep a scheduled issue from going out at its slot until `release`.
    Hold {
        issue: String,
        #[arg(long)]
        newsletter: Option<String>,
    },
    /// Let a held issue go out at its slot (at once if the slot has passed).
    Release {
        issue: String,
        #[arg(long)]
        newsletter: Option<String>,
    },
    /// Compose a scheduled issue again from the items ready now (its own items included); a new preview goes out.
    Recompose {
        issue: String,
        #[arg(long)]
        newsletter: Option<String>,
    },
}

pub async fn run(app: &App, cmd: ScheduleCommand) -> anyhow::Result<()> {
    let now = SystemClock.now();
    match cmd {
        ScheduleCommand::Show {
            newsletter,
            next,
            history,
            json,
        } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let o = app
                .schedule_overview(&nl, next.into(), history.into(), now)
                .await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&o)?)?;
                return Ok(());
            }
            match &o.schedule {
                None => outln!(
                    "{}: no schedule (set newsletter.schedule, e.g. \"0 9 * * FRI\")",
                    o.newsletter
                )?,
                Some(s) => {
                    outln!(
                        "{}: \"{}\" in {} (on_empty {}, catch_up {}, jitter {}, preview_before {}{})",
                        o.newsletter,
                        s.expression,
                        s.timezone,
                        s.on_empty,
                        s.catch_up,
                        s.jitter,
                        s.preview_before,
                        if s.preview_to.is_empty() {
                            String::new()
                        } else {
                            format!(" to {}", s.preview_to.join(", "))
                        }
                    )?;
                    outln!("next slots:")?;
                    for slot in &o.next {
                        outln!(
                            "  {}  ({} UTC){}",
                            slot.local,
                            utc(slot.utc),
                            if slot.skipped {
                                "  skipped (herald schedule unskip to reinstate)"
                            } else {
                                ""
                            }
                        )?;
                    }
                }
            }
            outln!("one-off sends waiting:")?;
            if o.one_offs.is_empty() {
                outln!("  none")?;
            }
            for s in &o.one_offs {
                let at = crate::domain::ms_to_datetime(s.send_at);
                let local = s
                    .timezone
                    .parse::<ScheduleTz>()
                    .map(|z| {
                        at.with_timezone(&z.0)
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
                    })
                    .unwrap_or_default();
                outln!(
                    "  issue #{} {}  at {} {} ({} UTC)",
                    s.issue_number,
                    s.issue_slug,
                    local,
                    s.timezone,
                    utc(at)
                )?;
            }
            outln!("history (newest first):")?;
            if o.history.is_empty() {
                outln!("  none")?;
            }
            for h in &o.history {
                let r = &h.run;
                let issue = h
                    .issue_number
                    .map(|n| format!(" issue #{n}"))
                    .unwrap_or_default();
                let label = match r.state {
                    RunState::Enqueued => "fired",
                    other => other.as_str(),
                };
                outln!(
                    "  {} UTC  {:<9}{}{}",
                    utc(crate::domain::ms_to_datetime(r.slot_at)),
                    label,
                    issue,
                    r.reason
                        .as_deref()
                        .map(|why| format!("  ({why})"))
                        .unwrap_or_default()
                )?;
            }
            Ok(())
        }
        ScheduleCommand::Skip { at, newsletter } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let at = at.as_deref().map(parse_wall_time).transpose()?;
            let slot = app.skip_slot(&nl, at, now).await?;
            outln!(
                "the slot of {} ({} UTC) is skipped: nothing is composed or sent for it; undo with `herald schedule unskip --at \"{}\"`",
                slot.local,
                utc(slot.utc),
                wall_time(&slot)
            )?;
            Ok(())
        }
        ScheduleCommand::Unskip { at, newsletter } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let slot = app.unskip_slot(&nl, parse_wall_time(&at)?, now).await?;
            outln!(
                "the slot of {} ({} UTC) is back: it is composed and sent as usual",
                slot.local,
                utc(slot.utc)
            )?;
            Ok(())
        }
        ScheduleCommand::Cancel { issue, newsletter } => {
            let (_, issue) = super::delivery::find(app, &issue, newsletter.as_deref()).await?;
            match app.cancel_scheduled(&issue, now).await? {
                Unscheduled::OneOff { issue_number } => {
                    println!("one-off send of issue #{issue_number} cancelled; it is a draft again")
                }
                Unscheduled::Slot {
                    issue_number,
                    slot_at,
                } => println!(
                    "issue #{issue_number} cancelled; nothing is sent for the slot of {} UTC",
                    utc(slot_at)
                ),
            }
            Ok(())
        }
        ScheduleCommand::Hold { issue, newsletter } => {
            let (_, issue) = super::delivery::find(app, &issue, newsletter.as_deref()).await?;
            app.hold_scheduled(&issue, now).await?;
            println!(
                "issue #{} held: it will not go out at its slot until `herald schedule release {}`",
                issue.number, issue.number
            );
            Ok(())
        }
        ScheduleCommand::Release { issue, newsletter } => {
            let (_, issue) = super::delivery::find(app, &issue, newsletter.as_deref()).await?;
            let run = app.release_scheduled(&issue, now).await?;
            println!(
                "issue #{} released: it goes out at {} UTC (at once if that has passed)",
                issue.number,
                utc(crate::domain::ms_to_datetime(run.fire_at))
            );
            Ok(())
        }
        ScheduleCommand::Recompose { issue, newsletter } => {
            let (nl, issue) = super::delivery::find(app, &issue, newsletter.as_deref()).await?;
            let new = app.recompose_scheduled(&nl, &issue, now).await?;
            println!(
                "issue recomposed as #{} {} ({}); a new preview goes out on the scheduler's next round",
                new.number, new.slug, new.subject
            );
            Ok(())
        }
    }
}

/// `herald send ISSUE --at "2026-05-08 09:00" [--timezone Europe/Berlin]`.
pub async fn send_at(
    app: &App,
    issue: &str,
    newsletter: Option<&str>,
    at: &str,
    timezone: Option<&str>,
) -> anyhow::Result<()> {
    let when = parse_wall_time(at)?;
    let zone = match timezone {
        Some(z) => z
            .parse::<ScheduleTz>()
            .map_err(anyhow::Error::msg)
            .context("--timezone")?,
        None => app.config.newsletter.timezone,
    };
    let (_, issue) = super::delivery::find(app, issue, newsletter).await?;
    let o = app
        .send_issue_at(&issue, when, zone, SystemClock.now())
        .await?;
    println!(
        "issue #{} will be sent at {when} {zone} ({} UTC) by `herald serve`; see `herald schedule show`, undo with `herald schedule cancel {}`",
        o.issue_number,
        utc(crate::domain::ms_to_datetime(o.send_at)),
        o.issue_number
    );
    Ok(())
}

/// A slot as `--at` takes it back: its wall time in the schedule's zone.
fn wall_time(slot: &crate::schedule::NextSlot) -> String {
    chrono::DateTime::parse_from_rfc3339(&slot.local)
        .map(|t| {
            let shape = if t.second() == 0 {
                "%Y-%m-%d %H:%M"
            } else {
                "%Y-%m-%d %H:%M:%S"
            };
            t.format(shape).to_string()
        })
        .unwrap_or_else(|_| slot.local.clone())
}

fn parse_wall_time(at: &str) -> anyhow::Result<NaiveDateTime> {
    let at = at.trim();
    ["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(at, f).ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--at {at:?}: expected a wall time like \"2026-05-08 09:00\" (read in --timezone, default newsletter.timezone)"
            )
        })
}

fn utc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

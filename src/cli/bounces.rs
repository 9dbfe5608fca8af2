//! `herald bounces list | show | import | poll`: the reports that came back
//! after the relay accepted a message (bounces, complaints), feeding saved
//! reports in by hand, and one poll of `bounce.imap_url` now.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::bounce::imap::{Outcome, Processed, REFUSED_KEYWORD};
use crate::bounce::{BounceError, MAX_REPORT_BYTES};
use crate::domain::{ReportSource, ms_to_rfc3339};

#[derive(Subcommand, Debug)]
pub enum BouncesCommand {
    /// Reports received after the relay accepted a message, newest first.
    List {
        /// Only the reports about this issue (number or slug).
        #[arg(long)]
        issue: Option<String>,
        #[arg(long)]
        newsletter: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// One report: its fields, what it did, and the raw message while it is kept.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Apply saved reports (.eml files, e.g. from a mailbox export) as if received.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Poll bounce.imap_url once now: one line per message, then a summary.
    Poll,
}

pub async fn run(app: &App, cmd: BouncesCommand) -> anyhow::Result<()> {
    match cmd {
        BouncesCommand::Poll => poll(app).await,
        BouncesCommand::List {
            issue,
            newsletter,
            json,
            limit,
        } => {
            let issue_id = match issue {
                Some(i) => Some(
                    super::delivery::find(app, &i, newsletter.as_deref())
                        .await?
                        .1
                        .id,
                ),
                None => None,
            };
            let reports = app.bounce_reports(issue_id, limit.max(0)).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&reports)?)?;
                return Ok(());
            }
            if reports.is_empty() {
                outln!("no reports")?;
            }
            for r in &reports {
                outln!(
                    "{:>6}  {}  {:<6} {:<12} {:<18} {:<6} {:<8} {}",
                    r.id,
                    ms_to_rfc3339(r.received_at),
                    r.source.as_str(),
                    r.kind.as_str(),
                    r.effect.as_str(),
                    r.issue_number.map_or("-".to_owned(), |n| format!("#{n}")),
                    r.status.as_deref().unwrap_or("-"),
                    r.recipient.as_deref().unwrap_or("-")
                )?;
            }
            Ok(())
        }
        BouncesCommand::Show { id, json } => {
            let r = app.bounce_report(id).await?.with_context(|| {
                format!("no report {id}: `herald bounces list` shows their ids")
            })?;
            if json {
                let mut value = serde_json::to_value(&r)?;
                if let Some(map) = value.as_object_mut() {
                    map.insert(
                        "raw".into(),
                        r.raw
                            .as_deref()
                            .map(|raw| String::from_utf8_lossy(raw).into_owned())
                            .into(),
                    );
                }
                outln!("{}", serde_json::to_string_pretty(&value)?)?;
                return Ok(());
            }
            let field = |name: &str, value: Option<String>| -> std::io::Result<()> {
                match value {
                    Some(v) => outln!("{name:<18} {v}"),
                    None => Ok(()),
                }
            };
            field("report", Some(r.id.to_string()))?;
            field("received", Some(ms_to_rfc3339(r.received_at)))?;
            field("source", Some(r.source.to_string()))?;
            field("kind", Some(r.kind.to_string()))?;
            field("effect", Some(r.effect.to_string()))?;
            field("matched by", r.matched_by.map(|m| m.to_string()))?;
            field("issue", r.issue_number.map(|n| format!("#{n}")))?;
            field("subscriber", r.subscriber_id.map(|n| n.to_string()))?;
            field("delivery", r.delivery_id.map(|n| n.to_string()))?;
            field("recipient", r.recipient.clone())?;
            field("action", r.action.clone())?;
            field("status", r.status.clone())?;
            field("diagnostic", r.diagnostic.clone())?;
            field("remote MTA", r.remote_mta.clone())?;
            field("feedback type", r.feedback_type.clone())?;
            field("provider event", r.provider_event_id.clone())?;
            field("summary", r.summary.clone())?;
            match (&r.raw, r.raw_purge_at) {
                (Some(raw), at) => {
                    if let Some(at) = at {
                        outln!("{:<18} kept until {}", "raw message", ms_to_rfc3339(at))?;
                    }
                    outln!("-----")?;
                    outln!("{}", printable(raw))?;
                }
                (None, Some(at)) => outln!(
                    "{:<18} dropped after {} (bounce.keep_raw)",
                    "raw message",
                    ms_to_rfc3339(at)
                )?,
                (None, None) => outln!("{:<18} not kept", "raw message")?,
            }
            Ok(())
        }
        BouncesCommand::Import { files } => {
            let mut refused = 0usize;
            for file in &files {
                match import_one(app, file).await {
                    Ok(line) => outln!("{}: {line}", file.display())?,
                    Err(ImportFailure::Refused(why)) => {
                        refused += 1;
                        outln!("{}: refused: {why}", file.display())?;
                    }
                    Err(ImportFailure::Fatal(e)) => {
                        return Err(e.context(format!(
                            "while importing {} (the files before it were applied)",
                            file.display()
                        )));
                    }
                }
            }
            if refused > 0 {
                anyhow::bail!(
                    "{refused} of {} files were refused (the others were applied)",
                    files.len()
                );
            }
            Ok(())
        }
    }
}

enum ImportFailure {
    /// This file is wrong; the others go on.
    Refused(String),
    /// The database is unreachable: stop.
    Fatal(anyhow::Error),
}

async fn import_one(app: &App, file: &Path) -> Result<String, ImportFailure> {
    let raw = read_bounded(file)
        .await
        .map_err(|e| ImportFailure::Refused(e.to_string()))?;
    match app.apply_raw_report(&raw, ReportSource::Import, None).await {
        Ok(applied) => Ok(format!(
            "report {}: {}",
            applied.report_id,
            applied.effect.describe()
        )),
        Err(BounceError::Rejected(why)) => Err(ImportFailure::Refused(why)),
        Err(e @ BounceError::Unavailable(_)) => Err(ImportFailure::Fatal(e.into())),
    }
}

/// Reads at most one byte past `MAX_REPORT_BYTES`, so a huge file (or a
/// device) is refused without being read whole.
async fn read_bounded(file: &Path) -> anyhow::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let mut raw = Vec::new();
    f.take(MAX_REPORT_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    if raw.len() > MAX_REPORT_BYTES {
        anyhow::bail!(
            "larger than {} bytes, the most Herald reads as one report",
            MAX_REPORT_BYTES
        );
    }
    Ok(raw)
}

/// A stored message for a terminal: line breaks and tabs stay, any other
/// control character (escape sequences of a hostile sender) is shown as `?`.
fn printable(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| *c != '\r')
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// `herald bounces poll`: one poll of `bounce.imap_url` now, for operators
/// (after changing the mailbox settings, or with `herald serve` stopped);
/// what `herald serve` does every `bounce.imap_poll_interval`.
async fn poll(app: &App) -> anyhow::Result<()> {
    // Ctrl-C stops between messages, as SIGTERM does for `herald serve`.
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    let signal = tokio::spawn(async move {
        super::shutdown_signal().await;
        on_signal.cancel();
    });
    let mut write_error = None;
    let result = app
        .poll_bounce_mailbox(&stop, |p| {
            if let Err(e) = outln!("{}", describe(p)) {
                write_error.get_or_insert(e);
            }
        })
        .await;
    signal.abort();
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let summary = result?;
    outln!(
        "{}: {} message(s) processed ({} recorded, {} refused, {} over {} MiB){}",
        summary.mailbox,
        summary.processed(),
        summary.applied,
        summary.refused,
        summary.oversized,
        MAX_REPORT_BYTES / (1024 * 1024),
        if summary.stopped {
            "; stopped, the rest waits for the next poll"
        } else {
            ""
        }
    )?;
    Ok(())
}

fn describe(p: &Processed) -> String {
    let what = match &p.outcome {
        Outcome::Applied(a) => format!("report {}: {}", a.report_id, a.effect.describe()),
        Outcome::Refused(why) => format!("refused ({why}); moved with {REFUSED_KEYWORD}"),
        Outcome::Oversized(size) => format!(
            "{size} bytes, over the {MAX_REPORT_BYTES}-byte limit: not read; moved with {REFUSED_KEYWORD}"
        ),
        Outcome::Deferred(why) => format!("not recorded now ({why}); left in the mailbox"),
    };
    format!("uid {} ({} bytes): {what}", p.uid, p.size)
}

//! `herald bounces poll`: one poll of `bounce.imap_url` now, for operators
//! (after changing the mailbox settings, or with `herald serve` stopped).
//! What `herald serve` does every `bounce.imap_poll_interval`.

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::bounce::MAX_REPORT_BYTES;
use crate::bounce::imap::{Outcome, Processed, REFUSED_KEYWORD};

pub(super) async fn poll(app: &App) -> anyhow::Result<()> {
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

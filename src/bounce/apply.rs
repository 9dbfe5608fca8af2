//! `App::apply_report`: match a report to the message Herald sent, record
//! it, and apply its effect on the delivery and the subscription.
//!
//! INTERFACE STUB (lead, 2026-12-02): the bounce-core slice replaces the
//! bodies; the signatures are what every way in calls.

use super::{BounceError, Report, parse_report};
use crate::app::App;
use crate::domain::ReportSource;

/// A report recorded (`bounce_reports.id`) and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub report_id: i64,
    pub effect: ReportEffect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportEffect {
    /// A hard bounce: the delivery is `bounced`, the subscription `bounced`,
    /// the address suppressed.
    Suppressed {
        issue_id: Option<i64>,
        subscriber_id: i64,
    },
    /// A soft bounce, counted toward the soft-bounce rule (`suppressed` when
    /// it was the one that reached it).
    SoftBounce {
        issue_id: Option<i64>,
        subscriber_id: i64,
        suppressed: bool,
    },
    /// A complaint: the reader is unsubscribed and the address suppressed.
    Complaint {
        issue_id: Option<i64>,
        subscriber_id: i64,
    },
    /// About a test copy or a confirmation mail: recorded, the list unchanged.
    NotAboutTheList,
    /// An auto-reply, a delay notice or something unrecognised: recorded only.
    Ignored,
    /// Matched no message Herald sent: recorded for people to look at.
    Unmatched,
    /// The same provider event was recorded before.
    Duplicate { report_id: i64 },
}

impl App {
    /// Records `report` (with the raw message, kept for `bounce.keep_raw`)
    /// and applies its effect, in one transaction.
    pub async fn apply_report(
        &self,
        report: Report,
        source: ReportSource,
        raw: Option<&[u8]>,
    ) -> Result<Applied, BounceError> {
        let _ = (report, source, raw);
        Err(BounceError::Rejected(
            "bounce processing is not built yet".into(),
        ))
    }

    /// Parses a raw message that arrived by `source` and applies it.
    /// `envelope_rcpt` is the SMTP `RCPT TO` it arrived at (the VERP address),
    /// when known; it is the first key tried.
    pub async fn apply_raw_report(
        &self,
        raw: &[u8],
        source: ReportSource,
        envelope_rcpt: Option<&str>,
    ) -> Result<Applied, BounceError> {
        // Refuses anything over MAX_REPORT_BYTES before reading it.
        let mut report = parse_report(raw)?;
        if let Some(rcpt) = envelope_rcpt {
            report.original.return_paths.insert(0, rcpt.to_owned());
        }
        self.apply_report(report, source, Some(raw)).await
    }
}

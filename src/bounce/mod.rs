//! Reports that arrive after the relay said yes: delivery status
//! notifications (RFC 3464), abuse reports (ARF, RFC 5965), automatic
//! replies, and the bounce/complaint events of providers' webhooks.
//!
//! Every way in (the SMTP receiver for `bounce.domain`, IMAP polling,
//! webhooks, `herald bounces import`) turns what it got into a [`Report`] and
//! hands it to one service, [`App::apply_report`](crate::app::App), which
//! finds the message it is about, records it, and applies the same effects
//! as a reply during the SMTP session (`delivery::policy`).

pub mod apply;
pub mod imap;
pub mod parse;
pub mod receiver;

pub use apply::{Applied, ReportEffect};
pub use parse::{ParseError, parse_report, parse_report_async};

use crate::domain::ReportKind;

/// The largest report Herald reads, whatever the way in: a DSN that returns
/// the whole original issue is a few hundred kilobytes at most.
pub const MAX_REPORT_BYTES: usize = 10 * 1024 * 1024;

/// A report, as parsed from a message or a provider's event, before it is
/// matched to a delivery. Text fields come from outside: they are bounded
/// by the parser and never trusted as addresses until parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kind: ReportKind,
    /// One entry per recipient the report speaks of (Herald sends one
    /// recipient per message, but a DSN may list several).
    pub recipients: Vec<RecipientStatus>,
    /// What the report says about the message Herald sent.
    pub original: OriginalMessage,
    /// ARF `Feedback-Type` (abuse, fraud, …) or the provider's complaint type.
    pub feedback_type: Option<String>,
    /// The provider's id of this event, when it has one (webhooks are retried;
    /// the same id is recorded once).
    pub provider_event_id: Option<String>,
    /// The report's own Subject or the provider's description, for people.
    pub summary: Option<String>,
}

/// What a report says happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// `Final-Recipient` / `Original-Recipient` (without the `rfc822;`), ARF
    /// `Original-Rcpt-To`, or the provider's recipient field, as written.
    pub address: String,
    pub action: DsnAction,
    /// The enhanced status code (RFC 3463) such as `5.1.1`, when given.
    pub status: Option<String>,
    /// `Diagnostic-Code` or the provider's reason: the remote server's words.
    pub diagnostic: Option<String>,
    /// `Remote-MTA` or the provider's reporting host.
    pub remote_mta: Option<String>,
}

/// The DSN `Action` field (RFC 3464 §2.3.3); providers' events map onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DsnAction {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

/// The keys that tie a report to the message Herald sent, in the order
/// `apply_report` tries them: the VERP address (authenticated), then the
/// original Message-ID, then the recipient address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginalMessage {
    /// Addresses the report was sent to or names as the original's return
    /// path (the SMTP `RCPT TO` it arrived at, `To`, `Delivered-To`,
    /// `X-Original-To`, the returned headers' `Return-Path`, a provider's
    /// `mail.source`): candidates for a `b-…@bounce.domain` VERP address,
    /// each checked with [`BounceTag::verify`](crate::domain::BounceTag).
    pub return_paths: Vec<String>,
    /// The original's `Message-ID`, without the angle brackets.
    pub message_id: Option<String>,
    /// The original carried `X-Herald-Test: 1` (a test copy or preview).
    pub test_copy: bool,
}

/// Why a report was refused. Either way nothing was recorded or changed.
#[derive(Debug, thiserror::Error)]
pub enum BounceError {
    /// The input itself is wrong (too big, not a message, a forged VERP
    /// token): sending it again will not help. SMTP answers 5xx, HTTP 4xx.
    #[error("{0}")]
    Rejected(String),
    /// Herald could not record it now (the database is unreachable): the
    /// sender should try again later. SMTP answers 4xx, HTTP 503.
    #[error("could not record the report now: {0}")]
    Unavailable(#[from] crate::store::StoreError),
}

impl From<ParseError> for BounceError {
    fn from(e: ParseError) -> Self {
        BounceError::Rejected(e.to_string())
    }
}

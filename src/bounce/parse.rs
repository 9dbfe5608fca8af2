//! Raw message → [`Report`]: DSNs, ARF reports, auto-replies and
//! non-standard bounces.
//!
//! INTERFACE STUB (lead, 2026-12-02): the parse slice replaces the body;
//! the signature is what the SMTP receiver, IMAP polling and
//! `herald bounces import` call.

use super::{MAX_REPORT_BYTES, OriginalMessage, Report};
use crate::domain::ReportKind;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("the report is {size} bytes; Herald reads reports of at most {max} bytes")]
    TooBig { size: usize, max: usize },
    #[error("not an email message: {0}")]
    Malformed(String),
}

/// Parses one message as it arrived (headers and body, CRLF or LF).
pub fn parse_report(raw: &[u8]) -> Result<Report, ParseError> {
    if raw.len() > MAX_REPORT_BYTES {
        return Err(ParseError::TooBig {
            size: raw.len(),
            max: MAX_REPORT_BYTES,
        });
    }
    Ok(Report {
        kind: ReportKind::Unrecognised,
        recipients: Vec::new(),
        original: OriginalMessage::default(),
        feedback_type: None,
        provider_event_id: None,
        summary: None,
    })
}

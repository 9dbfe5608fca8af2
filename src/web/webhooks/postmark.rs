//! Postmark's bounce and spam complaint webhooks.
//!
//! Postmark does not sign its webhooks; it documents securing them with
//! HTTP Basic auth credentials set on the webhook (`HttpAuth` in its
//! Webhooks API, <https://postmarkapp.com/developer/webhooks/webhooks-overview>),
//! checked here against `webhooks.postmark_user`/`postmark_password` in
//! constant time, before the body is read.
//!
//! Payloads: the bounce webhook
//! (<https://postmarkapp.com/developer/webhooks/bounce-webhook>: `RecordType`
//! "Bounce", `ID`, `Type`/`TypeCode`, `Email`, `Details`, `Description`,
//! `MessageID`, `Metadata`) and the spam complaint webhook
//! (<https://postmarkapp.com/developer/webhooks/spam-complaint-webhook>:
//! `RecordType` "SpamComplaint", same fields). The bounce types are those of
//! <https://postmarkapp.com/developer/api/bounce-api#bounce-types>.
//! Postmark's `MessageID` is its own id, not the Message-ID Herald wrote, so
//! reports are matched by recipient.

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{
    Event, MAX_ID, MAX_TEXT, Received, WebhookError, bounded, enhanced_status_in, text_field,
};
use crate::bounce::{DsnAction, OriginalMessage, RecipientStatus, Report};
use crate::config::WebhooksConfig;
use crate::domain::ReportKind;

pub(super) fn authenticate(
    config: &WebhooksConfig,
    headers: &HeaderMap,
) -> Result<(), WebhookError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| token.trim())
        })
        .and_then(|token| STANDARD.decode(token).ok());
    let Some(presented) = presented else {
        return Err(WebhookError::Unauthenticated(
            "Postmark webhooks need HTTP Basic credentials: set the webhook's Basic auth user and password to webhooks.postmark_user and webhooks.postmark_password; nothing was recorded".into(),
        ));
    };
    let expected = format!(
        "{}:{}",
        config.postmark_user,
        config.postmark_password.expose_text()
    );
    // `subtle` compares slices of different lengths as unequal (that leaks
    // only the length) and equal lengths byte by byte in constant time.
    if !bool::from(presented.ct_eq(expected.as_bytes())) {
        return Err(WebhookError::Unauthenticated(
            "the Basic credentials do not match webhooks.postmark_user and webhooks.postmark_password; nothing was recorded".into(),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PostmarkEvent {
    #[serde(default)]
    record_type: Option<String>,
    /// A number in Postmark's examples; accepted as text too.
    #[serde(rename = "ID", default)]
    id: Option<serde_json::Value>,
    #[serde(rename = "Type", default)]
    kind: Option<String>,
    #[serde(default)]
    type_code: Option<i64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

pub(super) fn parse(body: &Bytes) -> Result<Received, WebhookError> {
    let event: PostmarkEvent = serde_json::from_slice(body).map_err(|e| {
        WebhookError::malformed(format!("the body is not a Postmark webhook's JSON ({e})"))
    })?;
    match event.record_type.as_deref() {
        Some("Bounce" | "SpamComplaint") => {}
        // Delivery, Open, Click, SubscriptionChange: nothing to record.
        Some(_) => return Ok(Received::Handled("ignored: not a bounce or spam complaint")),
        None => {
            return Err(WebhookError::malformed(
                "the event has no RecordType (Bounce or SpamComplaint)",
            ));
        }
    }
    let Some(address) = text_field(event.email.as_deref(), MAX_ID) else {
        return Err(WebhookError::malformed("the event has no Email"));
    };
    let details = text_field(event.details.as_deref(), MAX_TEXT);
    let code_in_details = details.as_deref().and_then(enhanced_status_in);
    let kind_name = event.kind.as_deref().unwrap_or("");
    let with_code = |fallback: &str| {
        Some(
            code_in_details
                .clone()
                .unwrap_or_else(|| fallback.to_owned()),
        )
    };
    let (kind, action, status, feedback_type) = match (kind_name, event.type_code) {
        ("SpamComplaint", _) | (_, Some(100001)) => (
            ReportKind::Complaint,
            DsnAction::Delivered,
            None,
            Some("abuse".to_owned()),
        ),
        _ if event.record_type.as_deref() == Some("SpamComplaint") => (
            ReportKind::Complaint,
            DsnAction::Delivered,
            None,
            Some("abuse".to_owned()),
        ),
        ("HardBounce", _) | (_, Some(1)) => (
            ReportKind::Bounce,
            DsnAction::Failed,
            with_code("5.1.1"),
            None,
        ),
        ("BadEmailAddress", _) | (_, Some(100000)) => (
            ReportKind::Bounce,
            DsnAction::Failed,
            with_code("5.1.3"),
            None,
        ),
        ("SoftBounce", _) | (_, Some(4096)) => (
            ReportKind::Bounce,
            DsnAction::Failed,
            with_code("4.0.0"),
            None,
        ),
        ("DnsError", _) | (_, Some(256)) => (
            ReportKind::Bounce,
            DsnAction::Failed,
            with_code("4.4.3"),
            None,
        ),
        ("Blocked", _) | (_, Some(100006)) => (
            ReportKind::Bounce,
            DsnAction::Failed,
            with_code("5.7.1"),
            None,
        ),
        ("Transient", _) | (_, Some(2)) => (
            ReportKind::Delay,
            DsnAction::Delayed,
            with_code("4.0.0"),
            None,
        ),
        ("AutoResponder", _) | (_, Some(64)) => {
            (ReportKind::AutoReply, DsnAction::Delivered, None, None)
        }
        // ManuallyDeactivated, Unsubscribe, ChallengeVerification, …:
        // recorded for people to look at, nothing more.
        _ => (
            ReportKind::Unrecognised,
            DsnAction::Failed,
            code_in_details.clone(),
            None,
        ),
    };
    let id = match &event.id {
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::String(s)) => text_field(Some(s), MAX_ID),
        _ => None,
    };
    let summary = [event.name.as_deref(), event.description.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    let report = Report {
        kind,
        recipients: vec![RecipientStatus {
            address,
            action,
            status,
            diagnostic: details,
            remote_mta: None,
        }],
        original: OriginalMessage::default(),
        feedback_type,
        provider_event_id: id,
        summary: Some(bounded(&format!("Postmark {summary}"), MAX_TEXT)),
    };
    Ok(Received::Events(vec![Event {
        report,
        raw: body.to_vec(),
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: &str) -> Report {
        match parse(&Bytes::from(json.to_owned())).unwrap() {
            Received::Events(mut e) => e.remove(0).report,
            Received::Handled(w) => panic!("handled: {w}"),
        }
    }

    #[test]
    fn bounce_types_map_to_reports() {
        let r = report(
            r#"{"RecordType":"Bounce","ID":42,"Type":"HardBounce","TypeCode":1,"Email":"john@example.com","Details":"smtp;550 5.1.1 The email account that you tried to reach does not exist"}"#,
        );
        assert_eq!(r.kind, ReportKind::Bounce);
        assert_eq!(r.recipients[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(r.provider_event_id.as_deref(), Some("42"));
        let r = report(
            r#"{"RecordType":"SpamComplaint","ID":43,"Type":"SpamComplaint","TypeCode":100001,"Email":"john@example.com"}"#,
        );
        assert_eq!(r.kind, ReportKind::Complaint);
        let r = report(r#"{"RecordType":"Bounce","ID":44,"Type":"SoftBounce","Email":"j@x.test"}"#);
        assert_eq!(r.recipients[0].status.as_deref(), Some("4.0.0"));
        assert!(matches!(
            parse(&Bytes::from_static(br#"{"RecordType":"Delivery"}"#)).unwrap(),
            Received::Handled(_)
        ));
        assert!(parse(&Bytes::from_static(br#"{"RecordType":"Bounce"}"#)).is_err());
        assert!(parse(&Bytes::from_static(b"[1,2")).is_err());
    }
}

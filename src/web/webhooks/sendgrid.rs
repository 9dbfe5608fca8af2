//! SendGrid's signed Event Webhook.
//!
//! Authentication, as documented in "Getting Started with the Event Webhook
//! Security Features"
//! (<https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features>):
//! SendGrid signs `timestamp + raw body` with ECDSA (P-256, SHA-256); the
//! base64 DER signature is in `X-Twilio-Email-Event-Webhook-Signature`, the
//! timestamp in `X-Twilio-Email-Event-Webhook-Timestamp`, and the
//! verification key shown under Mail Settings is a base64 DER
//! SubjectPublicKeyInfo (`webhooks.sendgrid_public_key`).
//!
//! The body is a JSON array of events
//! (<https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event>):
//! `bounce` (`type` bounce or blocked), `dropped`, `deferred` and
//! `spamreport` become reports; delivery and engagement events are skipped.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ParsedPublicKey};
use axum::body::Bytes;
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{
    Event, MAX_ID, MAX_TEXT, Received, WebhookError, bounded, check_unix_age, enhanced_status,
    enhanced_status_in, message_id, text_field,
};
use crate::bounce::{DsnAction, OriginalMessage, RecipientStatus, Report};
use crate::config::WebhooksConfig;
use crate::domain::ReportKind;

pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// More events than this in one POST is not SendGrid.
const MAX_EVENTS: usize = 10_000;

/// `webhooks.sendgrid_public_key`: parsed once, at load, as a P-256 key.
#[derive(Clone, Default)]
pub struct EventWebhookKey {
    text: String,
    key: Option<Arc<ParsedPublicKey>>,
}

impl EventWebhookKey {
    pub fn is_set(&self) -> bool {
        self.key.is_some()
    }

    /// Empty text: no key (the endpoint is off).
    pub fn parse(text: &str) -> Result<EventWebhookKey, String> {
        let compact: String = text.split_whitespace().collect();
        // Some copy the key with its PEM armour; the base64 inside is the same.
        let compact = compact
            .trim_start_matches("-----BEGINPUBLICKEY-----")
            .trim_end_matches("-----ENDPUBLICKEY-----");
        if compact.is_empty() {
            return Ok(EventWebhookKey::default());
        }
        let der = STANDARD
            .decode(compact)
            .map_err(|e| format!("not base64 ({e})"))?;
        let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &der)
            .map_err(|e| format!("not an ECDSA P-256 public key in DER ({e})"))?;
        Ok(EventWebhookKey {
            text: text.trim().to_owned(),
            key: Some(Arc::new(key)),
        })
    }
}

impl std::fmt::Debug for EventWebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() {
            "EventWebhookKey(P-256)"
        } else {
            "EventWebhookKey(none)"
        })
    }
}

impl<'de> Deserialize<'de> for EventWebhookKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        EventWebhookKey::parse(&text).map_err(|why| {
            serde::de::Error::custom(format!(
                "{why}: expected the Verification Key SendGrid shows under Settings > Mail Settings > Signed Event Webhook (base64), or empty"
            ))
        })
    }
}

impl serde::Serialize for EventWebhookKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

pub(super) fn receive(
    config: &WebhooksConfig,
    headers: &HeaderMap,
    body: &Bytes,
    now: DateTime<Utc>,
    max_age: Duration,
) -> Result<Received, WebhookError> {
    let Some(key) = &config.sendgrid_public_key.key else {
        return Err(WebhookError::NotFound("SendGrid webhooks are off".into()));
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let (Some(signature), Some(timestamp)) = (header(SIGNATURE_HEADER), header(TIMESTAMP_HEADER))
    else {
        return Err(WebhookError::Forbidden(
            "the request carries no X-Twilio-Email-Event-Webhook-Signature and -Timestamp: turn on the Signed Event Webhook in SendGrid's Mail Settings; nothing was recorded".into(),
        ));
    };
    let signature = STANDARD.decode(signature).map_err(|_| bad_signature())?;
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    key.verify_sig(&signed, &signature)
        .map_err(|_| bad_signature())?;
    check_unix_age(
        timestamp,
        "X-Twilio-Email-Event-Webhook-Timestamp",
        now,
        max_age,
    )?;
    let events = parse(body)?;
    Ok(if events.is_empty() {
        Received::Handled("ignored: no bounce, drop, deferral or spam report in the batch")
    } else {
        Received::Events(events)
    })
}

fn bad_signature() -> WebhookError {
    WebhookError::Forbidden(
        "the SendGrid signature does not verify with webhooks.sendgrid_public_key (a different key, or the body was changed on the way); nothing was recorded".into(),
    )
}

#[derive(Deserialize)]
struct SendgridEvent {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(rename = "smtp-id", default)]
    smtp_id: Option<String>,
    #[serde(default)]
    sg_event_id: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    response: Option<String>,
}

fn parse(body: &[u8]) -> Result<Vec<Event>, WebhookError> {
    let values: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| {
        WebhookError::malformed(format!(
            "the body is not SendGrid's JSON array of events ({e})"
        ))
    })?;
    if values.len() > MAX_EVENTS {
        return Err(WebhookError::malformed(format!(
            "{} events in one request; SendGrid batches far fewer",
            values.len()
        )));
    }
    let mut events = Vec::new();
    for value in values {
        let raw = serde_json::to_vec(&value).unwrap_or_default();
        let event: SendgridEvent = serde_json::from_value(value).map_err(|e| {
            WebhookError::malformed(format!("an event of the batch is not SendGrid's ({e})"))
        })?;
        if let Some(report) = report(&event)? {
            events.push(Event { report, raw });
        }
    }
    Ok(events)
}

fn report(e: &SendgridEvent) -> Result<Option<Report>, WebhookError> {
    let reason = text_field(e.reason.as_deref().or(e.response.as_deref()), MAX_TEXT);
    let given_status = e.status.as_deref().and_then(enhanced_status);
    let status_in_reason = || reason.as_deref().and_then(enhanced_status_in);
    let (kind, action, status, feedback_type) = match e.event.as_deref() {
        Some("bounce") => {
            // "blocked" is SendGrid's soft bounce: the receiver refused for
            // now (reputation, content); the code it gave decides, as always.
            let fallback = if e.kind.as_deref() == Some("blocked") {
                "4.0.0"
            } else {
                "5.0.0"
            };
            let status = given_status
                .or_else(status_in_reason)
                .unwrap_or_else(|| fallback.to_owned());
            (ReportKind::Bounce, DsnAction::Failed, Some(status), None)
        }
        Some("dropped") => {
            // SendGrid did not even try: the reason says which of its own
            // lists the address is on.
            match reason.as_deref() {
                Some("Bounced Address") => (
                    ReportKind::Bounce,
                    DsnAction::Failed,
                    Some("5.1.1".to_owned()),
                    None,
                ),
                Some("Invalid") => (
                    ReportKind::Bounce,
                    DsnAction::Failed,
                    Some("5.1.3".to_owned()),
                    None,
                ),
                Some("Spam Reporting Address") => (
                    ReportKind::Complaint,
                    DsnAction::Delivered,
                    None,
                    Some("abuse".to_owned()),
                ),
                _ => (
                    ReportKind::Unrecognised,
                    DsnAction::Failed,
                    given_status,
                    None,
                ),
            }
        }
        Some("deferred") => (
            ReportKind::Delay,
            DsnAction::Delayed,
            given_status.or_else(status_in_reason),
            None,
        ),
        Some("spamreport") => (
            ReportKind::Complaint,
            DsnAction::Delivered,
            None,
            Some("abuse".to_owned()),
        ),
        // processed, delivered, open, click, unsubscribe, group_*: not reports.
        _ => return Ok(None),
    };
    let Some(address) = text_field(e.email.as_deref(), MAX_ID) else {
        return Err(WebhookError::malformed(
            "a bounce, drop, deferral or spam report without its \"email\"",
        ));
    };
    Ok(Some(Report {
        kind,
        recipients: vec![RecipientStatus {
            address,
            action,
            status,
            diagnostic: reason.clone(),
            remote_mta: None,
        }],
        original: OriginalMessage {
            return_paths: Vec::new(),
            message_id: e.smtp_id.as_deref().and_then(message_id),
            test_copy: false,
        },
        feedback_type,
        provider_event_id: text_field(e.sg_event_id.as_deref(), MAX_ID),
        summary: Some(match (e.event.as_deref(), reason) {
            (Some(event), Some(reason)) => {
                bounded(&format!("SendGrid {event}: {reason}"), MAX_TEXT)
            }
            (event, None) => format!("SendGrid {}", bounded(event.unwrap_or("event"), 40)),
            (None, Some(reason)) => reason,
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_parsed_at_load() {
        assert!(!EventWebhookKey::parse("").unwrap().is_set());
        assert!(EventWebhookKey::parse("not base64!").is_err());
        assert!(EventWebhookKey::parse("aGVsbG8=").is_err());
    }

    #[test]
    fn events_map_to_reports() {
        let body = br#"[
            {"email":"a@x.test","event":"bounce","type":"bounce","status":"5.1.1","reason":"550 5.1.1 no such user","smtp-id":"<issue-1.ab@news.test>","sg_event_id":"e1"},
            {"email":"b@x.test","event":"delivered","sg_event_id":"e2"},
            {"email":"c@x.test","event":"spamreport","sg_event_id":"e3"},
            {"email":"d@x.test","event":"bounce","type":"blocked","reason":"IP listed","sg_event_id":"e4"}
        ]"#;
        let events = parse(body).unwrap();
        assert_eq!(events.len(), 3);
        let r = &events[0].report;
        assert_eq!(r.kind, ReportKind::Bounce);
        assert_eq!(r.recipients[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(
            r.original.message_id.as_deref(),
            Some("issue-1.ab@news.test")
        );
        assert_eq!(r.provider_event_id.as_deref(), Some("e1"));
        assert_eq!(events[1].report.kind, ReportKind::Complaint);
        assert_eq!(
            events[2].report.recipients[0].status.as_deref(),
            Some("4.0.0")
        );
        assert!(parse(b"{}").is_err());
        assert!(parse(br#"[{"event":"bounce"}]"#).is_err());
    }
}

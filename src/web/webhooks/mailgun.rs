//! Mailgun's webhooks (`failed` and `complained` events).
//!
//! Authentication, as documented in "Securing Webhooks"
//! (<https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks>):
//! the body's `signature` object carries `timestamp`, `token` (50 random
//! characters) and `signature`, the hex HMAC-SHA256 of `timestamp + token`
//! keyed with the account's webhook signing key. Compared in constant time;
//! a timestamp older than `webhooks.max_age` is refused, and a token seen
//! within that window is a replay (Mailgun's own advice: cache the tokens).
//!
//! `event-data`
//! (<https://documentation.mailgun.com/docs/mailgun/user-manual/events/>):
//! `event` failed (`severity` permanent or temporary) or complained,
//! `recipient`, `delivery-status.code/message/description/enhanced-code/mx-host`,
//! `message.headers.message-id` (the Message-ID Herald wrote, without its
//! angle brackets), `envelope.sender`, and the event's `id`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{
    Event, MAX_ID, MAX_TEXT, Received, WebhookError, bounded, check_unix_age, enhanced_status,
    enhanced_status_in, message_id, text_field,
};
use crate::bounce::{DsnAction, OriginalMessage, RecipientStatus, Report};
use crate::config::WebhooksConfig;
use crate::domain::ReportKind;

/// Tokens remembered at once. Past this many in one `max_age` window, new
/// requests are answered 503 (Mailgun retries) rather than forgetting
/// tokens that are still replayable.
const MAX_TOKENS: usize = 200_000;

/// The tokens of verified requests, for `max_age` (the window in which a
/// replayed request would pass the timestamp check).
pub(super) struct TokenCache {
    window: Duration,
    inner: Mutex<Tokens>,
}

#[derive(Default)]
struct Tokens {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

enum TokenCheck {
    Fresh,
    Replayed,
    Full,
}

impl TokenCache {
    pub(super) fn new(window: Duration) -> TokenCache {
        TokenCache {
            // The window plus the future skew a timestamp may have.
            window: window + super::FUTURE_SKEW,
            inner: Mutex::new(Tokens::default()),
        }
    }

    fn check_and_remember(&self, token: &str) -> TokenCheck {
        let now = Instant::now();
        let Ok(mut tokens) = self.inner.lock() else {
            // A panic elsewhere while holding the lock: refuse rather than
            // accept replays.
            return TokenCheck::Full;
        };
        while let Some((at, _)) = tokens.order.front() {
            if now.duration_since(*at) <= self.window {
                break;
            }
            if let Some((_, old)) = tokens.order.pop_front() {
                tokens.seen.remove(&old);
            }
        }
        if tokens.seen.contains_key(token) {
            return TokenCheck::Replayed;
        }
        if tokens.seen.len() >= MAX_TOKENS {
            return TokenCheck::Full;
        }
        tokens.seen.insert(token.to_owned(), now);
        tokens.order.push_back((now, token.to_owned()));
        TokenCheck::Fresh
    }

    /// Lets a retry of a request that could not be recorded through the
    /// replay check.
    pub(super) fn forget(&self, token: &str) {
        if let Ok(mut tokens) = self.inner.lock() {
            tokens.seen.remove(token);
            // Its `order` entry stays and is dropped with its window.
        }
    }
}

#[derive(Deserialize)]
struct Payload {
    signature: Option<Signature>,
    #[serde(rename = "event-data")]
    event_data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Signature {
    /// Seconds, as text in Mailgun's examples; a number is accepted too.
    timestamp: serde_json::Value,
    token: String,
    signature: String,
}

/// The request's events and its (verified, now remembered) token.
pub(super) fn receive(
    config: &WebhooksConfig,
    tokens: &TokenCache,
    body: &Bytes,
    now: DateTime<Utc>,
    max_age: Duration,
) -> Result<(Received, String), WebhookError> {
    let payload: Payload = serde_json::from_slice(body).map_err(|e| {
        WebhookError::malformed(format!(
            "the body is not a Mailgun webhook's JSON with \"signature\" and \"event-data\" ({e})"
        ))
    })?;
    let Some(sig) = payload.signature else {
        return Err(WebhookError::Forbidden(
            "the body carries no Mailgun \"signature\"; nothing was recorded".into(),
        ));
    };
    let timestamp = match &sig.timestamp {
        serde_json::Value::String(s) => s.trim().to_owned(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    verify(config, &timestamp, &sig.token, &sig.signature)?;
    check_unix_age(&timestamp, "the signature's timestamp", now, max_age)?;
    match tokens.check_and_remember(&sig.token) {
        TokenCheck::Fresh => {}
        TokenCheck::Replayed => {
            return Err(WebhookError::Forbidden(
                "this Mailgun token was used before: a replayed request; nothing was recorded"
                    .into(),
            ));
        }
        TokenCheck::Full => {
            return Err(WebhookError::Unavailable(
                "too many Mailgun webhooks in the replay window to check this one; send it again later".into(),
            ));
        }
    }
    let parsed = payload
        .event_data
        .ok_or_else(|| WebhookError::malformed("the body has no \"event-data\""))
        .and_then(|data| report(&data));
    let report = match parsed {
        Ok(r) => r,
        Err(e) => {
            // Not recorded: a corrected resend may use the same token.
            tokens.forget(&sig.token);
            return Err(e);
        }
    };
    let received = match report {
        Some(report) => Received::Events(vec![Event {
            report,
            raw: body.to_vec(),
        }]),
        None => Received::Handled("ignored: not a failure or complaint"),
    };
    Ok((received, sig.token))
}

fn verify(
    config: &WebhooksConfig,
    timestamp: &str,
    token: &str,
    signature: &str,
) -> Result<(), WebhookError> {
    let bad = || {
        WebhookError::Forbidden(
            "the Mailgun signature does not verify with webhooks.mailgun_signing_key (the HTTP webhook signing key, not the API key); nothing was recorded".into(),
        )
    };
    if token.is_empty() || token.len() > MAX_ID || timestamp.len() > 20 {
        return Err(bad());
    }
    let expected = hex::decode(signature.trim()).map_err(|_| bad())?;
    let key = config.mailgun_signing_key.expose_text();
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).map_err(|_| bad())?;
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected).map_err(|_| bad())
}

#[derive(Deserialize)]
struct EventData {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    recipient: Option<String>,
    #[serde(rename = "delivery-status", default)]
    delivery_status: Option<DeliveryStatus>,
    #[serde(default)]
    message: Option<MessageInfo>,
    #[serde(default)]
    envelope: Option<Envelope>,
}

#[derive(Deserialize)]
struct DeliveryStatus {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(rename = "enhanced-code", default)]
    enhanced_code: Option<String>,
    #[serde(rename = "mx-host", default)]
    mx_host: Option<String>,
}

#[derive(Deserialize)]
struct MessageInfo {
    #[serde(default)]
    headers: Option<Headers>,
}

#[derive(Deserialize)]
struct Headers {
    #[serde(rename = "message-id", default)]
    message_id: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    sender: Option<String>,
}

fn report(data: &serde_json::Value) -> Result<Option<Report>, WebhookError> {
    let data = EventData::deserialize(data).map_err(|e| {
        WebhookError::malformed(format!("\"event-data\" is not a Mailgun event ({e})"))
    })?;
    let status = data.delivery_status.as_ref();
    let diagnostic = status.and_then(|s| {
        let text = [s.message.as_deref(), s.description.as_deref()]
            .into_iter()
            .flatten()
            .filter(|t| !t.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" — ");
        let code = match &s.code {
            Some(serde_json::Value::Number(n)) => format!("{n} "),
            _ => String::new(),
        };
        text_field(Some(&format!("{code}{text}")), MAX_TEXT)
    });
    let code = status
        .and_then(|s| s.enhanced_code.as_deref())
        .and_then(enhanced_status)
        .or_else(|| diagnostic.as_deref().and_then(enhanced_status_in));
    let (kind, action, status_code, feedback_type) = match data.event.as_deref() {
        Some("failed") => match data.severity.as_deref() {
            Some("temporary") => (ReportKind::Delay, DsnAction::Delayed, code, None),
            _ => (
                ReportKind::Bounce,
                DsnAction::Failed,
                // A permanent failure Mailgun gave no code for: it gave up
                // on the address (or it is on its bounce list).
                Some(code.unwrap_or_else(|| "5.0.0".to_owned())),
                None,
            ),
        },
        Some("complained") => (
            ReportKind::Complaint,
            DsnAction::Delivered,
            None,
            Some("abuse".to_owned()),
        ),
        // accepted, delivered, opened, clicked, unsubscribed, stored.
        _ => return Ok(None),
    };
    let Some(address) = text_field(data.recipient.as_deref(), MAX_ID) else {
        return Err(WebhookError::malformed("the event has no \"recipient\""));
    };
    let return_paths = data
        .envelope
        .and_then(|e| text_field(e.sender.as_deref(), MAX_ID))
        .into_iter()
        .collect();
    let summary = format!(
        "Mailgun {}{}",
        data.event.as_deref().unwrap_or("event"),
        [data.severity.as_deref(), data.reason.as_deref()]
            .into_iter()
            .flatten()
            .map(|s| format!(" {s}"))
            .collect::<String>()
    );
    Ok(Some(Report {
        kind,
        recipients: vec![RecipientStatus {
            address,
            action,
            status: status_code,
            diagnostic,
            remote_mta: status.and_then(|s| text_field(s.mx_host.as_deref(), MAX_ID)),
        }],
        original: OriginalMessage {
            return_paths,
            message_id: data
                .message
                .and_then(|m| m.headers)
                .and_then(|h| h.message_id)
                .and_then(|id| message_id(&id)),
            test_copy: false,
        },
        feedback_type,
        provider_event_id: text_field(data.id.as_deref(), MAX_ID),
        summary: Some(bounded(&summary, MAX_TEXT)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_accepted_once_within_its_window() {
        let cache = TokenCache::new(Duration::from_secs(60));
        assert!(matches!(cache.check_and_remember("t1"), TokenCheck::Fresh));
        assert!(matches!(
            cache.check_and_remember("t1"),
            TokenCheck::Replayed
        ));
        cache.forget("t1");
        assert!(matches!(cache.check_and_remember("t1"), TokenCheck::Fresh));
    }

    #[test]
    fn events_map_to_reports() {
        let data = serde_json::json!({
            "id": "G9Bn5sl1TC6nu79C8C0bwg", "event": "failed", "severity": "permanent",
            "recipient": "alice@example.com", "reason": "bounce",
            "delivery-status": {"code": 550, "message": "5.1.1 The email account does not exist", "enhanced-code": "5.1.1", "mx-host": "mx.example.com"},
            "message": {"headers": {"message-id": "issue-3.abc@news.test"}},
            "envelope": {"sender": "b-xyz@bounces.news.test"}
        });
        let r = report(&data).unwrap().unwrap();
        assert_eq!(r.kind, ReportKind::Bounce);
        assert_eq!(r.recipients[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(
            r.original.message_id.as_deref(),
            Some("issue-3.abc@news.test")
        );
        assert_eq!(r.original.return_paths, vec!["b-xyz@bounces.news.test"]);
        let r = report(&serde_json::json!({"event": "failed", "severity": "temporary", "recipient": "a@b.test"}))
            .unwrap()
            .unwrap();
        assert_eq!(r.kind, ReportKind::Delay);
        let r = report(&serde_json::json!({"event": "complained", "recipient": "a@b.test"}))
            .unwrap()
            .unwrap();
        assert_eq!(r.kind, ReportKind::Complaint);
        assert!(
            report(&serde_json::json!({"event": "delivered"}))
                .unwrap()
                .is_none()
        );
        assert!(report(&serde_json::json!({"event": "failed"})).is_err());
    }
}

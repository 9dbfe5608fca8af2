//! `POST /webhooks/{provider}`: bounce and complaint events from the
//! providers people relay through — Amazon SES (via SNS), Postmark, Mailgun
//! and SendGrid — each authenticated as the provider documents, turned into
//! [`Report`]s and handed to [`App::apply_report`] like every other way in.
//!
//! Public routes: not under the API's bearer auth (providers cannot send
//! one) nor behind the admin; each provider's own credential is the gate,
//! checked before anything is recorded. A provider whose keys are not
//! configured answers 404, as if the route did not exist.
//!
//! Answers: 200 when every event was recorded (or was a duplicate, or was
//! not about bounces at all); 401/403 for a missing or wrong credential or
//! signature; 400 for a body that is not the provider's JSON; 413 past
//! [`BODY_LIMIT`]; 422 when Herald refused the report itself; 503 when the
//! database could not take it (the providers retry on 5xx). Errors are RFC
//! 9457 problem documents, like the API's.

mod mailgun;
mod postmark;
mod sendgrid;
mod ses;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Router, middleware};
use chrono::{DateTime, Utc};

use super::WebState;
use crate::app::App;
use crate::bounce::{Applied, BounceError, Report, ReportEffect};
use crate::domain::ReportSource;
use crate::web::api::problem_response;
pub use sendgrid::EventWebhookKey;

/// The largest webhook body read. SendGrid posts events in batches (its
/// documentation speaks of up to a few hundred events per POST, well under a
/// megabyte); an SES notification with headers is a few kilobytes.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// A signed timestamp may be this far in the future (clock skew).
const FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);

/// The longest text of the provider's that a report keeps (diagnostics,
/// descriptions); addresses and ids are shorter still.
const MAX_TEXT: usize = 2000;
const MAX_ID: usize = 256;

/// What the webhook handlers share: the app, the SNS certificate cache and
/// its HTTPS client, Mailgun's replay cache.
struct Inbound {
    app: App,
    sns: ses::SnsVerifier,
    mailgun_tokens: mailgun::TokenCache,
}

/// The webhook routes, to be merged into the public router after its layers
/// (they have their own body limit and answer problem documents).
pub(super) fn router(app: &App) -> Router<WebState> {
    let max_age = app.config.webhooks.max_age.0.0;
    let inbound = Arc::new(Inbound {
        sns: ses::SnsVerifier::new(&app.config.webhooks),
        mailgun_tokens: mailgun::TokenCache::new(max_age),
        app: app.clone(),
    });
    Router::new()
        .route("/webhooks/{provider}", post(receive))
        .layer(middleware::from_fn(
            super::security_headers::security_headers,
        ))
        .with_state(inbound)
}

/// Why a webhook request was not (entirely) recorded.
#[derive(Debug, thiserror::Error)]
enum WebhookError {
    #[error("{0}")]
    NotFound(String),
    /// No or wrong Basic credentials (Postmark): 401 with a challenge.
    #[error("{0}")]
    Unauthenticated(String),
    /// A missing, wrong, stale or replayed signature: 403.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Malformed(String),
    #[error(
        "the body is larger than the {} KiB a webhook may post; nothing was recorded",
        BODY_LIMIT / 1024
    )]
    TooLarge,
    /// Authenticated, but Herald refused the report (sending it again will not help).
    #[error("{0}")]
    Rejected(String),
    /// Herald could not record it now; the provider should retry.
    #[error("{0}")]
    Unavailable(String),
}

impl WebhookError {
    fn status(&self) -> StatusCode {
        match self {
            WebhookError::NotFound(_) => StatusCode::NOT_FOUND,
            WebhookError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            WebhookError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebhookError::Malformed(_) => StatusCode::BAD_REQUEST,
            WebhookError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            WebhookError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            WebhookError::NotFound(_) => "not_found",
            WebhookError::Unauthenticated(_) => "unauthorized",
            WebhookError::Forbidden(_) => "bad_signature",
            WebhookError::Malformed(_) => "malformed_event",
            WebhookError::TooLarge => "payload_too_large",
            WebhookError::Rejected(_) => "report_rejected",
            WebhookError::Unavailable(_) => "unavailable",
        }
    }

    fn malformed(what: impl std::fmt::Display) -> WebhookError {
        WebhookError::Malformed(format!(
            "{what}; nothing was recorded (is the webhook pointed at the right provider's endpoint?)"
        ))
    }
}

impl From<BounceError> for WebhookError {
    fn from(e: BounceError) -> Self {
        match e {
            BounceError::Rejected(why) => WebhookError::Rejected(why),
            BounceError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "webhook event not recorded: database unavailable");
                WebhookError::Unavailable(
                    "Herald could not record the event now; it was not recorded, send it again later"
                        .into(),
                )
            }
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let mut response =
            problem_response(self.status(), self.code(), self.to_string(), Vec::new());
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            WebhookError::Unauthenticated(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"herald-webhooks\", charset=\"UTF-8\""),
                );
            }
            WebhookError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            _ => {}
        }
        response
    }
}

/// One event of a request, ready for `apply_report`: the report and the
/// raw text kept with it (the event's own JSON).
struct Event {
    report: Report,
    raw: Vec<u8>,
}

/// What a provider's module made of an authenticated request.
enum Received {
    Events(Vec<Event>),
    /// Authenticated and handled without a report (an SNS subscription
    /// confirmed, an event kind that says nothing about bounces).
    Handled(&'static str),
}

async fn receive(
    State(inbound): State<Arc<Inbound>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let span = tracing::info_span!(
        "webhook",
        id = %uuid::Uuid::new_v4().simple(),
        provider = %bounded(&provider, 32)
    );
    let answer =
        tracing::Instrument::instrument(inbound.receive(&provider, &headers, body), span.clone())
            .await;
    let _entered = span.enter();
    match answer {
        Ok(answer) => answer,
        Err(e) => {
            match &e {
                // Someone is posting with a wrong or no key: worth a look.
                WebhookError::Forbidden(_) | WebhookError::Unauthenticated(_) => {
                    tracing::warn!(error = %e, "webhook refused")
                }
                WebhookError::NotFound(_) => {}
                _ => tracing::info!(error = %e, "webhook refused"),
            }
            e.into_response()
        }
    }
}

impl Inbound {
    async fn receive(
        &self,
        provider: &str,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, WebhookError> {
        let config = &self.app.config.webhooks;
        let provider = match provider {
            "ses" if !config.ses_topic_arn.is_empty() => Provider::Ses,
            "postmark" if !config.postmark_user.is_empty() => Provider::Postmark,
            "mailgun" if !config.mailgun_signing_key.is_empty() => Provider::Mailgun,
            "sendgrid" if config.sendgrid_public_key.is_set() => Provider::Sendgrid,
            _ => {
                return Err(WebhookError::NotFound(
                    "there is no webhook at this address: the providers are ses, postmark, mailgun and sendgrid, each on once its [webhooks] keys are set".into(),
                ));
            }
        };
        // Basic credentials come before the body is read.
        if provider == Provider::Postmark {
            postmark::authenticate(config, headers)?;
        }
        let body = read_body(headers, body).await?;
        let now = Utc::now();
        let max_age = config.max_age.0.0;
        // Mailgun's token, remembered against replays by `mailgun::receive`.
        let mut mailgun_token = None;
        let received = match provider {
            Provider::Ses => self.sns.receive(config, &body, now, max_age).await?,
            Provider::Postmark => postmark::parse(&body)?,
            Provider::Mailgun => {
                let (received, token) =
                    mailgun::receive(config, &self.mailgun_tokens, &body, now, max_age)?;
                mailgun_token = Some(token);
                received
            }
            Provider::Sendgrid => sendgrid::receive(config, headers, &body, now, max_age)?,
        };
        let source = provider.source();
        let events = match received {
            Received::Handled(what) => {
                return Ok(ok_answer(serde_json::json!({"status": what})));
            }
            Received::Events(events) => events,
        };
        let outcome = self.apply(source, events).await;
        if let (Some(token), Err(WebhookError::Unavailable(_))) = (&mailgun_token, &outcome) {
            // Mailgun retries with the same token: let the retry through.
            self.mailgun_tokens.forget(token);
        }
        outcome
    }

    /// Applies every event; all of them are tried even if one fails, so a
    /// retried batch only adds what is missing (the rest are duplicates).
    async fn apply(
        &self,
        source: ReportSource,
        events: Vec<Event>,
    ) -> Result<Response, WebhookError> {
        let single = events.len() == 1;
        let mut results = Vec::with_capacity(events.len());
        let mut unavailable = None;
        let mut rejected = None;
        for Event { report, raw } in events {
            match self.app.apply_report(report, source, Some(&raw)).await {
                Ok(applied) => results.push(applied_json(&applied)),
                Err(e) => match WebhookError::from(e) {
                    e @ WebhookError::Unavailable(_) => unavailable = Some(e),
                    e => {
                        tracing::warn!(provider = %source, error = %e, "webhook event refused");
                        results.push(serde_json::json!({"rejected": e.to_string()}));
                        rejected = Some(e);
                    }
                },
            }
        }
        if let Some(e) = unavailable {
            return Err(e);
        }
        // A lone event that was refused says so; in a batch the others were
        // recorded and a retry would not change the refused one, so the batch
        // is answered 200 with each event's outcome.
        if let (true, Some(e)) = (single, rejected) {
            return Err(e);
        }
        tracing::info!(events = results.len(), "webhook events recorded");
        Ok(ok_answer(
            serde_json::json!({"status": "recorded", "events": results}),
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Ses,
    Postmark,
    Mailgun,
    Sendgrid,
}

impl Provider {
    fn source(self) -> ReportSource {
        match self {
            Provider::Ses => ReportSource::Ses,
            Provider::Postmark => ReportSource::Postmark,
            Provider::Mailgun => ReportSource::Mailgun,
            Provider::Sendgrid => ReportSource::Sendgrid,
        }
    }
}

fn ok_answer(body: serde_json::Value) -> Response {
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn applied_json(applied: &Applied) -> serde_json::Value {
    let effect = match &applied.effect {
        ReportEffect::Suppressed { .. } => "suppressed",
        ReportEffect::SoftBounce { .. } => "soft_bounce",
        ReportEffect::DeliveryFailed { .. } => "delivery_failed",
        ReportEffect::Complaint { .. } => "complaint",
        ReportEffect::NotAboutTheList => "not_about_the_list",
        ReportEffect::Ignored => "ignored",
        ReportEffect::Unmatched => "unmatched",
        ReportEffect::Duplicate { .. } => "duplicate",
    };
    serde_json::json!({"report_id": applied.report_id, "effect": effect})
}

/// The whole body, refused past [`BODY_LIMIT`] (by its announced length
/// before reading, or once that many bytes have arrived).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, WebhookError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(WebhookError::TooLarge);
    }
    // As the API's `read_limited`: past the announced length check, a body
    // that cannot be read whole is one that went on past the limit.
    axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| WebhookError::TooLarge)
}

/// Refuses a signed timestamp older than `max_age` or from the future.
fn check_age(
    signed_at: DateTime<Utc>,
    now: DateTime<Utc>,
    max_age: Duration,
) -> Result<(), WebhookError> {
    let age = now.signed_duration_since(signed_at);
    let too_old = age.to_std().is_ok_and(|a| a > max_age);
    let in_future = (-age).to_std().is_ok_and(|a| a > FUTURE_SKEW);
    if too_old || in_future {
        return Err(WebhookError::Forbidden(format!(
            "the signed timestamp {} is {} the {} webhooks.max_age allows (or this server's clock is wrong); nothing was recorded",
            signed_at.to_rfc3339(),
            if in_future {
                "in the future, past"
            } else {
                "older than"
            },
            humantime::format_duration(max_age),
        )));
    }
    Ok(())
}

/// A signed Unix time in seconds (Mailgun's `timestamp`, SendGrid's
/// header, named by `what`), refused when it is not one or is outside the
/// window of [`check_age`].
fn check_unix_age(
    text: &str,
    what: &str,
    now: DateTime<Utc>,
    max_age: Duration,
) -> Result<(), WebhookError> {
    let signed_at = text
        .parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .ok_or_else(|| {
            WebhookError::Forbidden(format!(
                "{what} {:?} is not a Unix time in seconds; nothing was recorded",
                bounded(text, 40)
            ))
        })?;
    check_age(signed_at, now, max_age)
}

/// `text`, cut to at most `max` bytes at a character boundary, without
/// control characters (they would only reach logs and pages).
fn bounded(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out.trim().to_owned()
}

/// A non-empty, bounded text field.
fn text_field(text: Option<&str>, max: usize) -> Option<String> {
    text.map(|t| bounded(t, max)).filter(|t| !t.is_empty())
}

/// A Message-ID as the report keys want it: without angle brackets or
/// surrounding space; `None` when nothing is left.
fn message_id(text: &str) -> Option<String> {
    let id = text
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    (!id.is_empty() && id.len() <= 998 && !id.contains(char::is_whitespace)).then(|| id.to_owned())
}

/// The first RFC 3463 enhanced status code in free text (`"smtp; 550 5.1.1
/// user unknown"` → `5.1.1`), checked by the transport's own parser.
fn enhanced_status_in(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ';' | '(' | ')' | ',' | '#'))
        .take(64)
        .find_map(|word| {
            let word = word.trim_end_matches(['.', ':']);
            crate::mail::transport::EnhancedStatus::parse_prefix(word).map(|s| s.to_string())
        })
}

/// A status code given by the provider, kept only if it is one.
fn enhanced_status(text: &str) -> Option<String> {
    crate::mail::transport::EnhancedStatus::parse_prefix(text.trim()).map(|s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_found_in_free_text() {
        assert_eq!(
            enhanced_status_in("smtp; 550 5.1.1 <a@b>: Recipient address rejected").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            enhanced_status_in("550-5.1.1 The email account does not exist").as_deref(),
            None,
            "a multiline prefix glued to the code is not guessed at"
        );
        assert_eq!(
            enhanced_status_in("mailbox full (4.2.2)").as_deref(),
            Some("4.2.2")
        );
        assert_eq!(enhanced_status_in("1.2.3.4 said no"), None);
        assert_eq!(enhanced_status(" 5.7.1 "), Some("5.7.1".into()));
        assert_eq!(enhanced_status("550"), None);
    }

    #[test]
    fn text_is_bounded_at_char_boundaries() {
        assert_eq!(bounded("ааа", 5), "аа");
        assert_eq!(bounded("a\r\nb", 10), "a  b");
        assert_eq!(message_id(" <x@y> ").as_deref(), Some("x@y"));
        assert_eq!(message_id("<>"), None);
    }

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        let now = Utc::now();
        let hour = Duration::from_secs(3600);
        assert!(check_age(now - chrono::Duration::minutes(59), now, hour).is_ok());
        assert!(check_age(now - chrono::Duration::minutes(61), now, hour).is_err());
        assert!(check_age(now + chrono::Duration::minutes(1), now, hour).is_ok());
        assert!(check_age(now + chrono::Duration::minutes(30), now, hour).is_err());
    }
}

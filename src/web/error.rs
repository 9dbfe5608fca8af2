//! Typed failures of the public server, and the one place that turns any
//! failure (a handler's, an extractor's, the framework's own 404/405/413)
//! into an answer the client can read: a calm HTML page for browsers,
//! `{"error": {"code", "message"}}` for JSON clients.
//!
//! A handler's error cannot see the request, so `IntoResponse` only
//! attaches an [`ErrorReport`] to the response; the [`error_bodies`]
//! middleware, which saw the request, writes the body in the right format.

use axum::extract::Request;
use axum::extract::rejection::{BytesRejection, FormRejection, JsonRejection};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::pages;
use crate::app::LookupError;
use crate::store::StoreError;
use crate::subscribers::SubscriberError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The request is malformed (bad JSON, bad form encoding).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Well-formed, but a value is not acceptable.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("there is nothing at this address")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than the {limit_kib} KiB this server accepts")]
    PayloadTooLarge { limit_kib: usize },
    #[error("send the body as application/x-www-form-urlencoded or application/json (got {0:?})")]
    UnsupportedMediaType(String),
    /// Our fault: the cause is logged, the client gets a generic answer.
    #[error("internal error: {0}")]
    Internal(String),
}

impl WebError {
    pub fn internal(cause: impl std::fmt::Display) -> WebError {
        WebError::Internal(cause.to_string())
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            WebError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            WebError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn code(&self) -> &'static str {
        match self {
            WebError::BadRequest { code, .. } | WebError::Unprocessable { code, .. } => code,
            WebError::NotFound => "not_found",
            WebError::Conflict(_) => "conflict",
            WebError::PayloadTooLarge { .. } => "payload_too_large",
            WebError::UnsupportedMediaType(_) => "unsupported_media_type",
            WebError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        WebError::internal(e)
    }
}

impl From<LookupError> for WebError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NoNewsletter(_) => WebError::NotFound,
            LookupError::Store(e) => e.into(),
        }
    }
}

impl From<SubscriberError> for WebError {
    fn from(e: SubscriberError) -> Self {
        match e {
            SubscriberError::InvalidEmail { .. } => WebError::Unprocessable {
                code: "invalid_email",
                message: e.to_string(),
            },
            SubscriberError::BadName => WebError::Unprocessable {
                code: "invalid_name",
                message: e.to_string(),
            },
            SubscriberError::NotFound(_) => WebError::NotFound,
            SubscriberError::NeedsConfirmation { .. } => WebError::Conflict(e.to_string()),
            SubscriberError::Lookup(e) => e.into(),
            SubscriberError::Store(e) => e.into(),
        }
    }
}

/// The body limit of the public routes, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

impl From<BytesRejection> for WebError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            WebError::PayloadTooLarge {
                limit_kib: BODY_LIMIT / 1024,
            }
        } else {
            WebError::BadRequest {
                code: "unreadable_body",
                message: r.body_text(),
            }
        }
    }
}

impl From<JsonRejection> for WebError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::BytesRejection(r) => r.into(),
            JsonRejection::JsonDataError(e) => WebError::Unprocessable {
                code: "invalid_field",
                message: e.body_text(),
            },
            other => WebError::BadRequest {
                code: "invalid_json",
                message: other.body_text(),
            },
        }
    }
}

impl From<FormRejection> for WebError {
    fn from(r: FormRejection) -> Self {
        match r {
            FormRejection::BytesRejection(r) => r.into(),
            FormRejection::FailedToDeserializeFormBody(e) => WebError::Unprocessable {
                code: "invalid_field",
                message: e.body_text(),
            },
            other => WebError::BadRequest {
                code: "invalid_form",
                message: other.body_text(),
            },
        }
    }
}

/// What the [`error_bodies`] middleware needs to write an error body.
#[derive(Debug, Clone)]
pub struct ErrorReport {
    pub code: &'static str,
    /// Safe to show: never an internal cause.
    pub message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            WebError::Internal(cause) => {
                // Inside the request span, so the line carries the request id.
                tracing::error!(error = %cause, "request failed");
                "Something went wrong on our side. Please try again in a few minutes; nothing was changed.".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = status.into_response();
        response.extensions_mut().insert(ErrorReport {
            code: self.code(),
            message,
        });
        response
    }
}

/// Does the client want JSON? Either it sent JSON, or it asked for JSON and
/// not for HTML (browsers always list `text/html`).
pub fn wants_json(headers: &HeaderMap) -> bool {
    if is_json_content_type(headers) {
        return true;
    }
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(media_type)
        .collect::<Vec<_>>();
    accept.iter().any(|m| is_json_media_type(m)) && !accept.iter().any(|m| m == "text/html")
}

/// `Content-Type: application/json` in any case, with any parameters, and
/// the `+json` family (`application/merge-patch+json`…).
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|m| is_json_media_type(&m))
}

/// The lower-cased media type of the request body, without parameters.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media_type)
}

fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_json_media_type(m: &str) -> bool {
    m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
}

/// Gives every error response a body in the client's format, including the
/// framework's own (404 fallback, 405, extractor rejections that write
/// `text/plain`). Each request gets an id, logged with every line of the
/// request and shown on internal errors so a report can be matched to the log.
pub async fn error_bodies(req: Request, next: Next) -> Response {
    let json = wants_json(req.headers());
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    // No path: it can hold a confirmation or unsubscribe token. The
    // enclosing `http.request` span names the route template.
    let span = tracing::info_span!("request", id = %request_id);
    let response = tracing::Instrument::instrument(next.run(req), span).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let report = match response.extensions().get::<ErrorReport>() {
        Some(report) => report.clone(),
        // A page of ours (the form with its error, the bad-link pages) is
        // already the answer; JSON answers of ours too.
        None if !json && has_body_of_type(&response, "text/html") => return response,
        None if has_body_of_type(&response, "application/json") => return response,
        None => framework_report(status),
    };
    let mut message = report.message;
    if status.is_server_error() {
        message.push_str(&format!(" (reference {request_id})"));
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = if json {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        axum::body::Body::from(
            serde_json::json!({"error": {"code": report.code, "message": message}}).to_string(),
        )
    } else {
        let page = match status {
            StatusCode::NOT_FOUND => pages::not_found(),
            s if s.is_server_error() => pages::error_page(&message),
            _ => pages::bad_request(&message),
        };
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        axum::body::Body::from(page.into_string())
    };
    Response::from_parts(parts, body)
}

fn has_body_of_type(response: &Response, media: &str) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| media_type(v) == media)
}

fn framework_report(status: StatusCode) -> ErrorReport {
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "There is nothing at this address."),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "This address does not accept that method.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "The request body is larger than this server accepts.",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "Send the body as application/x-www-form-urlencoded or application/json.",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => {
            ("unprocessable", "A value in the request is not acceptable.")
        }
        s if s.is_server_error() => (
            "internal",
            "Something went wrong on our side. Please try again in a few minutes; nothing was changed.",
        ),
        _ => ("bad_request", "The request could not be understood."),
    };
    ErrorReport {
        code,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn json_clients_are_recognised() {
        for ct in [
            "application/json",
            "APPLICATION/JSON",
            "Application/Json; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(wants_json(&headers(&[(header::CONTENT_TYPE, ct)])), "{ct}");
        }
        assert!(wants_json(&headers(&[(
            header::ACCEPT,
            "application/json"
        )])));
        assert!(!wants_json(&headers(&[(
            header::ACCEPT,
            "text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8"
        )])));
        assert!(!wants_json(&headers(&[(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded"
        )])));
        assert!(!wants_json(&HeaderMap::new()));
    }
}

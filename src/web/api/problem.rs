//! RFC 9457 problem details: the one shape of every `/api/v1` error.
//!
//! The public server's typed errors ([`WebError`]) are reused for what they
//! already say (bad JSON, body too large, wrong media type, internal); the
//! API adds what only it has: 401 with a `WWW-Authenticate` challenge, 404
//! and 409 with a reason, and 422 with an `errors` list naming each field.
//!
//! `type` is `urn:herald:problem:{code}`: stable, and not a URL that could
//! be mistaken for documentation we do not host.

use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::LookupError;
use crate::content::ContentError;
use crate::delivery::control::ControlError;
use crate::editors::EditorError;
use crate::store::StoreError;
use crate::subscribers::SubscriberError;
use crate::web::error::WebError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:herald:problem:{code}`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Set on server errors: quote it when reporting, it is in the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// For 422: every field that is not acceptable.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One unacceptable field of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's name in the request (`headline`, `email`, …).
    pub field: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{}", summary(.0))]
    Invalid(Vec<FieldError>),
    #[error("the request body is larger than the {limit_kib} KiB this route accepts; {hint}")]
    TooLarge {
        limit_kib: usize,
        hint: &'static str,
    },
    #[error("send the body as {expected} (got {got})")]
    UnsupportedMediaType { expected: &'static str, got: String },
    /// The mail relay refused or could not be reached.
    #[error("{0}")]
    BadGateway(String),
    #[error(transparent)]
    Web(#[from] WebError),
}

fn summary(errors: &[FieldError]) -> String {
    if let [only] = errors {
        return only.detail.clone();
    }
    let names: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    format!(
        "these fields are not acceptable: {}; see `errors` for each",
        names.join(", ")
    )
}

impl ApiError {
    pub fn invalid(field: &str, detail: impl Into<String>) -> ApiError {
        ApiError::Invalid(vec![FieldError::new(field, detail)])
    }

    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        ApiError::Web(WebError::internal(cause))
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Web(e) => e.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Invalid(_) => "invalid_fields",
            ApiError::BadGateway(_) => "mail_relay_failed",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::Web(e) => e.code(),
        }
    }
}

/// A problem response with its media type.
pub fn problem_response(
    status: StatusCode,
    code: &str,
    detail: String,
    errors: Vec<FieldError>,
) -> Response {
    let problem = Problem {
        kind: format!("urn:herald:problem:{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        instance: None,
        errors,
    };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        let detail = match &self {
            ApiError::Web(WebError::Internal(cause)) => {
                // Inside the request span, so the line carries the request id.
                tracing::error!(error = %cause, "API request failed");
                "Something went wrong on our side; nothing was changed unless the answer said so. Try again in a few minutes.".to_owned()
            }
            other => other.to_string(),
        };
        let errors = match self {
            ApiError::Invalid(errors) => errors,
            _ => Vec::new(),
        };
        let mut response = problem_response(status, code, detail, errors);
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: the challenge names the scheme; `invalid_token` only
            // when a token was presented.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"herald\""),
            );
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            // serde names the field first: "headline: invalid type: …" or
            // "missing field `headline`".
            JsonRejection::JsonDataError(e) => {
                let text = e.body_text();
                let message = text
                    .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                    .unwrap_or(&text)
                    .to_owned();
                ApiError::Invalid(vec![FieldError::new(field_of(&message), message)])
            }
            other => WebError::from(other).into(),
        }
    }
}

/// The field a serde error message is about, or `body` when it names none.
fn field_of(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("missing field `") {
        return rest.split('`').next().unwrap_or("body").to_owned();
    }
    if let Some(rest) = message.split("unknown field `").nth(1) {
        return rest.split('`').next().unwrap_or("body").to_owned();
    }
    match message.split_once(": ") {
        Some((path, _))
            if !path.is_empty()
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']')) =>
        {
            path.to_owned()
        }
        _ => "body".to_owned(),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => ApiError::Conflict(e.to_string()),
            e => ApiError::internal(e),
        }
    }
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NoNewsletter(_) => ApiError::NotFound(e.to_string()),
            LookupError::Store(e) => e.into(),
        }
    }
}

impl From<SubscriberError> for ApiError {
    fn from(e: SubscriberError) -> Self {
        match e {
            SubscriberError::InvalidEmail { .. } => ApiError::invalid("email", e.to_string()),
            SubscriberError::BadName => ApiError::invalid("name", e.to_string()),
            SubscriberError::NotFound(_) => ApiError::NotFound(e.to_string()),
            SubscriberError::NeedsConfirmation { .. } => ApiError::Conflict(e.to_string()),
            SubscriberError::Lookup(e) => e.into(),
            SubscriberError::Store(e) => e.into(),
        }
    }
}

impl From<ContentError> for ApiError {
    fn from(e: ContentError) -> Self {
        use ContentError as C;
        match e {
            C::NoIssue(_) | C::NoItem(_) | C::NoIssues => ApiError::NotFound(e.to_string()),
            C::NoReadyItems(_) | C::Contended(_) | C::ItemPublished(_) | C::TooManyItems { .. } => {
                ApiError::Conflict(e.to_string())
            }
            C::Clipped(_) => ApiError::Conflict(e.to_string()),
            C::NotOneLine { field } | C::TooLong { field, .. } => {
                ApiError::invalid(field, e.to_string())
            }
            C::InvalidIntro(_) => ApiError::invalid("intro", e.to_string()),
            C::InvalidItem(_) => ApiError::invalid("item", e.to_string()),
            C::DigestFile(_) | C::FileTooLarge { .. } | C::NotText { .. } => {
                ApiError::invalid("body", e.to_string())
            }
            C::Lookup(e) => e.into(),
            C::Store(e) => e.into(),
            C::Read { .. } | C::Css { .. } | C::Render(_) => ApiError::internal(e),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::WrongStatus { .. } => ApiError::Conflict(e.to_string()),
            ControlError::Content(e) => e.into(),
            ControlError::Store(e) => e.into(),
            // The relay refused or could not be reached: not the client's
            // fault, and worth saying exactly.
            ControlError::TestSend { .. } => ApiError::BadGateway(e.to_string()),
        }
    }
}

impl From<EditorError> for ApiError {
    fn from(e: EditorError) -> Self {
        match e {
            EditorError::Exists(_) => ApiError::Conflict(e.to_string()),
            EditorError::NotFound(_) | EditorError::NoToken(_) => ApiError::NotFound(e.to_string()),
            EditorError::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_name_their_field() {
        assert_eq!(
            field_of("missing field `headline` at line 1 column 2"),
            "headline"
        );
        assert_eq!(
            field_of("ready: invalid type: string \"x\", expected a boolean at line 1"),
            "ready"
        );
        assert_eq!(
            field_of("unknown field `headlnie`, expected one of `headline`"),
            "headlnie"
        );
        assert_eq!(field_of("expected value at line 1 column 1"), "body");
    }
}

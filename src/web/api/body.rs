//! Request bodies of the API, each read with its own explicit limit.

use axum::Json;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::problem::ApiError;
use crate::web::error::content_type;

/// JSON request bodies: items with their 20,000-character summaries fit
/// several times over.
pub const JSON_LIMIT: usize = 256 * 1024;

/// A JSON body (`application/json` or any `+json` type, in any case).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let media = content_type(req.headers());
        if !media.as_deref().is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        }) {
            return Err(ApiError::UnsupportedMediaType {
                expected: "application/json",
                got: media.unwrap_or_else(|| "no Content-Type".into()),
            });
        }
        let bytes = read_limited(req, JSON_LIMIT, "split the request").await?;
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        Ok(ApiJson(value))
    }
}

/// Reads the whole body, refusing it once it passes `limit` bytes.
pub async fn read_limited(
    req: Request,
    limit: usize,
    hint: &'static str,
) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| ApiError::TooLarge {
            limit_kib: limit / 1024,
            hint,
        })
}

/// A UTF-8 text body of at most `limit` bytes, of one of the `accepted`
/// media types.
pub async fn text_body(
    req: Request,
    accepted: &[&'static str],
    limit: usize,
    hint: &'static str,
) -> Result<String, ApiError> {
    let media = content_type(req.headers());
    if !media.as_deref().is_some_and(|m| accepted.contains(&m)) {
        return Err(ApiError::UnsupportedMediaType {
            expected: accepted.first().copied().unwrap_or("text/plain"),
            got: media.unwrap_or_else(|| "no Content-Type".into()),
        });
    }
    let bytes = read_limited(req, limit, hint).await?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::invalid("body", "the body is not UTF-8 text; save it as UTF-8"))
}

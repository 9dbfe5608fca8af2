//! `Idempotency-Key` on mutating requests (POST, PUT, PATCH, DELETE).
//!
//! The first answer for (editor, key) is stored and replayed for every
//! retry with the same key, so a client that lost the answer to "send now"
//! can simply send it again. The key covers the method, path, query and
//! body: the same key on a different request is refused (422), and a retry
//! while the first request still runs is told to wait (409), following the
//! IETF httpapi draft. Server errors (5xx) are not stored: nothing was done,
//! so the retry runs again. A key is remembered for 24 hours.
//!
//! The request runs in its own task: a client that disconnects does not
//! cancel it half-way, and its answer is stored for the retry.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::problem::ApiError;
use crate::editors::{Editor, IdempotencyClaim};
use crate::web::WebState;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on a replayed answer.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
const MAX_KEY_LEN: usize = 255;
/// The largest body an idempotent request may carry (the digest import's
/// limit); larger ones (CSV uploads) are streamed and not keyed.
pub const MAX_KEYED_BODY: usize = crate::digest_file::MAX_FILE_BYTES as usize;
/// Stored answers are JSON documents; a larger one is answered but not kept.
const MAX_STORED_ANSWER: usize = 1024 * 1024;

pub async fn idempotent(State(s): State<WebState>, req: Request, next: Next) -> Response {
    let mutating = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let Some(key) = req.headers().get(&IDEMPOTENCY_KEY).cloned() else {
        return next.run(req).await;
    };
    if !mutating {
        return next.run(req).await;
    }
    let key = match key.to_str() {
        Ok(k)
            if !k.is_empty()
                && k.len() <= MAX_KEY_LEN
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            k.to_owned()
        }
        _ => {
            return ApiError::invalid(
                "Idempotency-Key",
                format!("the key must be 1 to {MAX_KEY_LEN} visible ASCII characters (a UUID is a good choice)"),
            )
            .into_response();
        }
    };
    let Some(editor) = req.extensions().get::<Editor>().cloned() else {
        return ApiError::Unauthorized("this route needs a bearer token").into_response();
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_KEYED_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::TooLarge {
                limit_kib: MAX_KEYED_BODY / 1024,
                hint: "requests with an Idempotency-Key are buffered to be compared; send a larger upload without the key",
            }
            .into_response();
        }
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update(b"\n");
    hasher.update(parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(""));
    hasher.update(b"\n");
    hasher.update(&bytes);
    let request_hash = hex::encode(hasher.finalize());

    match s.app.claim_idempotency_key(&editor, &key, &request_hash).await {
        Err(e) => ApiError::from(e).into_response(),
        Ok(IdempotencyClaim::Mismatch) => ApiError::invalid(
            "Idempotency-Key",
            "this key was already used for a different request; use a fresh key for a new request",
        )
        .into_response(),
        Ok(IdempotencyClaim::InProgress) => ApiError::Conflict(
            "a request with this Idempotency-Key is still running; retry in a moment to get its answer".into(),
        )
        .into_response(),
        Ok(IdempotencyClaim::Replay {
            status,
            content_type,
            body,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = (status, body).into_response();
            if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            response
        }
        Ok(IdempotencyClaim::Claimed) => {
            let req = Request::from_parts(parts, Body::from(bytes));
            let task = tokio::spawn(run_and_store(s, editor, key, req, next));
            match task.await {
                Ok(response) => response,
                Err(e) => ApiError::internal(format!("idempotent request task failed: {e}"))
                    .into_response(),
            }
        }
    }
}

async fn run_and_store(
    s: WebState,
    editor: Editor,
    key: String,
    req: Request,
    next: Next,
) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if status.is_server_error() {
        if let Err(e) = s.app.release_idempotency_key(&editor, &key).await {
            tracing::warn!(error = %e, "could not release an idempotency key after a failed request; retries with it are answered 409 until it is released");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_STORED_ANSWER).await {
        Ok(b) => b,
        Err(e) => {
            let _ = s.app.release_idempotency_key(&editor, &key).await;
            return ApiError::internal(format!(
                "answer too large to store for Idempotency-Key: {e}"
            ))
            .into_response();
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = s
        .app
        .complete_idempotent(&editor, &key, status.as_u16(), content_type, &bytes)
        .await
    {
        // The work is done; only the replay is lost. Say so in the log, free
        // the key (a retry runs again, and every mutation here is safe to
        // repeat: sending enqueues each recipient once) and still answer.
        tracing::error!(error = %e, "could not store the answer of an idempotent request");
        let _ = s.app.release_idempotency_key(&editor, &key).await;
    }
    Response::from_parts(parts, Body::from(bytes))
}

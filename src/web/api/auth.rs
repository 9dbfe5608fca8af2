//! Bearer authentication of every `/api/v1` route but the OpenAPI document.
//!
//! A middleware rather than a per-handler extractor, so that no route can
//! forget it, and so that it runs before the body is read: an anonymous
//! client learns nothing from 413/415/422 answers. The token is never
//! logged; the request span carries only the editor's token id.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;
use crate::editors::ApiToken;
use crate::web::WebState;

pub async fn require_editor(State(s): State<WebState>, mut req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return ApiError::Unauthorized(
            "this API needs a bearer token: send `Authorization: Bearer hrld_…` (an administrator issues one with `herald editor token EMAIL`)",
        )
        .into_response();
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|(_, token)| ApiToken::parse(token.trim()));
    let Some(token) = token else {
        return ApiError::Unauthorized(
            "the Authorization header is not `Bearer` followed by a Herald token (hrld_…)",
        )
        .into_response();
    };
    match s.app.authenticate_editor(&token).await {
        Ok(Some(editor)) => {
            tracing::Span::current().record("token_id", editor.token_id);
            req.extensions_mut().insert(editor);
            next.run(req).await
        }
        Ok(None) => ApiError::Unauthorized(
            "this token is unknown or was revoked; ask an administrator for a new one (`herald editor token EMAIL`)",
        )
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

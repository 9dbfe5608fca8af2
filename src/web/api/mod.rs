//! The editors' HTTP API under `/api/v1`: JSON in and out, bearer tokens,
//! RFC 9457 problems, `Idempotency-Key` on mutations, and an OpenAPI 3.1
//! document generated from the handlers' own annotations.
//!
//! Handlers translate HTTP to `App` services, like the public pages do.
//! Routes are registered only through `utoipa_axum::routes!`, which takes
//! each route's path and methods from its `#[utoipa::path]` annotation: a
//! route cannot exist without being documented, nor be documented at a path
//! it is not served on (`tests/api_openapi.rs` checks both over HTTP).
//!
//! The API has its own layers instead of the public pages' (it is merged
//! after them): problem bodies for every error, including the framework's
//! own 404/405; `nosniff`, `no-store` and a CSP that lets nothing load
//! (answers are data, never pages, and must not be cached by proxies); no
//! request body limit of the framework's, as each body extractor applies
//! its own (JSON 256 KiB, digest files 4 MB, CSV uploads streamed).

mod auth;
mod body;
mod idempotency;
mod issues;
mod items;
mod problem;
mod schedule;
mod subscribers;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::WebState;
pub(crate) use problem::problem_response;
pub use problem::{FieldError, PROBLEM_JSON, Problem};

/// Where the API lives; its version is in the path.
pub const PREFIX: &str = "/api/v1";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald editors' API",
        description = "Items, issues, the schedule and subscribers of a Herald newsletter. Authenticate with `Authorization: Bearer hrld_…` (issued by `herald editor token EMAIL`). Errors are RFC 9457 problem documents. Mutating requests accept an `Idempotency-Key` header: the first answer is replayed for retries with the same key.",
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(Problem, FieldError)),
    tags(
        (name = "items", description = "The week's items, before they are composed into an issue"),
        (name = "issues", description = "Composed issues: preview, test, send, control, progress"),
        (name = "schedule", description = "The weekly schedule: next slots, history, one-off sends; send at a time, hold, release, recompose, cancel"),
        (name = "subscribers", description = "Readers: list, add, import, export, show, unsubscribe, erase"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A Herald API token (hrld_…)"))
                    .build(),
            ),
        );
    }
}

/// `?newsletter=SLUG` on every route that acts on one newsletter (the
/// configured default when absent).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NewsletterQuery {
    /// Newsletter slug; default: the configured newsletter.
    pub newsletter: Option<String>,
}

/// The newsletter a request names by slug (default: the configured one) and its issue
/// `reference` (number or slug).
pub async fn newsletter_issue(
    s: &WebState,
    newsletter: Option<&str>,
    reference: &str,
) -> Result<
    (
        Arc<crate::store::Newsletter>,
        crate::store::content::IssueRow,
    ),
    problem::ApiError,
> {
    let nl = s.app.newsletter(newsletter).await?;
    let row = s.app.find_issue(&nl, reference).await?;
    Ok((nl, row))
}

/// Every documented route, authenticated ones behind the bearer check.
fn documented(state: &WebState) -> OpenApiRouter<WebState> {
    let protected = OpenApiRouter::new()
        .routes(routes!(items::list, items::create))
        .routes(routes!(items::show, items::update, items::delete))
        .routes(routes!(items::mark_ready))
        .routes(routes!(items::mark_draft))
        .routes(routes!(items::import))
        .routes(routes!(issues::list, issues::compose))
        .routes(routes!(issues::show))
        .routes(routes!(issues::preview))
        .routes(routes!(issues::test_send))
        .routes(routes!(issues::send))
        .routes(routes!(issues::pause))
        .routes(routes!(issues::resume))
        .routes(routes!(issues::cancel))
        .routes(routes!(issues::retry))
        .routes(routes!(issues::progress))
        .routes(routes!(schedule::overview))
        .routes(routes!(schedule::send_at))
        .routes(routes!(schedule::hold))
        .routes(routes!(schedule::release))
        .routes(routes!(schedule::recompose))
        .routes(routes!(schedule::cancel))
        .routes(routes!(schedule::skip))
        .routes(routes!(schedule::unskip))
        .routes(routes!(subscribers::list, subscribers::add))
        .routes(routes!(subscribers::import))
        .routes(routes!(subscribers::export))
        .routes(routes!(subscribers::show, subscribers::erase))
        .routes(routes!(subscribers::unsubscribe))
        // Outermost last: authenticate, then look at the Idempotency-Key.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotent,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_editor,
        ));
    let open = OpenApiRouter::new().routes(routes!(openapi_json));
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(PREFIX, protected.merge(open))
}

/// The API's routes, to be merged into the public router after its layers.
pub(super) fn router(state: &WebState) -> Router<WebState> {
    let (routes, mut doc) = documented(state).split_for_parts();
    document_idempotency_key(&mut doc);
    let json = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"OpenAPI document not serialisable: {e}\"}}"));
    routes
        .route(&format!("{PREFIX}/{{*rest}}"), any(no_such_route))
        .route(PREFIX, any(no_such_route))
        .layer(Extension(OpenApiJson(Arc::from(json))))
        .layer(middleware::from_fn(api_layer))
}

/// Every mutating operation accepts `Idempotency-Key` (the middleware
/// covers them all), so the document says so on each, in one place.
fn document_idempotency_key(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{Object, RefOr, Required, Type};
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            let params = op.parameters.get_or_insert_with(Vec::new);
            let present = params.iter().any(
                |p| matches!(p, RefOr::T(p) if p.name.eq_ignore_ascii_case("Idempotency-Key")),
            );
            if !present {
                params.push(RefOr::T(
                    ParameterBuilder::new()
                        .name("Idempotency-Key")
                        .parameter_in(ParameterIn::Header)
                        .required(Required::False)
                        .description(Some(
                            "Retry-safe: the first answer for this key is replayed for 24 hours",
                        ))
                        .schema(Some(Object::with_type(Type::String)))
                        .build(),
                ));
            }
        }
    }
}

#[derive(Clone)]
struct OpenApiJson(Arc<str>);

/// This document: OpenAPI 3.1, generated from the code.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
async fn openapi_json(Extension(OpenApiJson(json)): Extension<OpenApiJson>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json.to_string(),
    )
        .into_response()
}

async fn no_such_route() -> Response {
    problem::problem_response(
        StatusCode::NOT_FOUND,
        "no_such_route",
        format!(
            "there is no API route at this path; the routes are listed in {PREFIX}/openapi.json"
        ),
        Vec::new(),
    )
}

/// Problem bodies for every error (the framework's 405 and extractor
/// rejections write text/plain), the API's headers, and a request span
/// that never records headers (tokens stay out of the log).
async fn api_layer(req: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!(
        "api",
        id = %request_id,
        method = %req.method(),
        path = %req.uri().path(),
        token_id = tracing::field::Empty,
    );
    let mut response = tracing::Instrument::instrument(next.run(req), span).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let is_problem = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
        if !is_problem {
            response = framework_problem(response);
        }
        if status.is_server_error() {
            response = with_instance(response, &request_id).await;
        }
    }
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'; sandbox",
        ));
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// An error the framework wrote (405, a path that does not parse): the same
/// status as a problem, keeping headers such as `Allow`.
fn framework_problem(response: Response) -> Response {
    let status = response.status();
    let (code, detail) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not accept that method; the Allow header lists those it does"
                .to_owned(),
        ),
        StatusCode::NOT_FOUND => ("not_found", "there is nothing at this address".to_owned()),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than this route accepts".to_owned(),
        ),
        s if s.is_server_error() => ("internal", "something went wrong on our side".to_owned()),
        _ => (
            "bad_request",
            "the request could not be understood (check the path's ids and the query parameters)"
                .to_owned(),
        ),
    };
    let (mut parts, _) = response.into_parts();
    let problem = problem::problem_response(status, code, detail, Vec::new());
    let (problem_parts, body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(ct) = problem_parts.headers.get(header::CONTENT_TYPE) {
        parts.headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    Response::from_parts(parts, body)
}

/// Server errors name the request (`instance`), so a report can be matched
/// to the log line.
async fn with_instance(response: Response, request_id: &str) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut value) => {
            value["instance"] = serde_json::Value::String(format!("urn:uuid:{request_id}"));
            parts.headers.remove(header::CONTENT_LENGTH);
            serde_json::to_vec(&value).unwrap_or_else(|_| bytes.to_vec())
        }
        Err(_) => bytes.to_vec(),
    };
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// API times are RFC 3339 in UTC (the store keeps milliseconds).
fn rfc3339(ms: crate::domain::Millis) -> String {
    crate::domain::ms_to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

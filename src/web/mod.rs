//! HTTP: the public subscriber pages (and, later, the editors' API).
//! Handlers translate HTTP to service calls on `App`; rules live there.
//! Every answer passes two layers: `error::error_bodies` (errors in the
//! client's format, JSON or HTML) and `security_headers` (CSP and friends).

pub mod admin;
pub mod api;
mod client_ip;
pub(crate) mod error;
mod health;
pub mod metrics;
mod pages;
mod rate_limit;
mod security_headers;
mod subscribe_queue;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router, middleware};
use maud::Markup;
use serde::Deserialize;

use crate::app::App;
use crate::store::subscribers::ConsentContext;
use crate::subscribers::links::ConfirmationView;
use crate::subscribers::{ConfirmOutcome, UnsubscribeOutcome, clean_name, parse_email};
pub use client_ip::{Cidr, CidrError, ClientIp, TrustedProxies};
use error::{BODY_LIMIT, WebError};
use rate_limit::IpLimiter;
use subscribe_queue::{QueueWorkers, SubscribeJob, SubscribeQueue};

#[derive(Clone)]
pub struct WebState {
    pub app: App,
    limiter: Arc<IpLimiter>,
    queue: SubscribeQueue,
}

impl WebState {
    /// Starts the subscribe workers; must run inside a Tokio runtime.
    fn start(app: App) -> (WebState, QueueWorkers) {
        let limiter = Arc::new(IpLimiter::per_hour(app.config.subscribe.per_ip_per_hour));
        let (queue, workers) = SubscribeQueue::start(app.clone());
        (
            WebState {
                app,
                limiter,
                queue,
            },
            workers,
        )
    }
}

/// The public router. Its subscribe workers stop once it is dropped; use
/// [`serve`] to also wait for their backlog at shutdown. Must be called
/// inside a Tokio runtime.
pub fn router(app: App) -> Router {
    let (state, _workers) = WebState::start(app);
    routes(state)
}

fn routes(state: WebState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/subscribe") }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(health::readyz))
        .route(
            "/subscribe",
            get(subscribe_form_default).post(subscribe_default),
        )
        .route(
            "/n/{newsletter}/subscribe",
            get(subscribe_form).post(subscribe),
        )
        .route("/confirm/{token}", get(confirm_page).post(confirm))
        .route(
            "/unsubscribe/{token}",
            get(unsubscribe_page).post(unsubscribe),
        )
        .route("/resubscribe/{token}", post(resubscribe))
        .route("/archive", get(archive))
        .route("/archive/{slug}", get(archive_issue))
        .fallback(|| async { WebError::NotFound })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(error::error_bodies))
        .layer(middleware::from_fn(security_headers::security_headers))
        // After the layers above: the API has its own (see `api`).
        .merge(api::router(&state))
        // Public, with their own limits and answers: providers authenticate
        // by signature or Basic credentials, never a bearer token.
        .merge(webhooks::router(&state.app))
        .merge(admin_unless_elsewhere(&state))
        .merge(metrics::metrics_router(state.app.clone()))
        .route_layer(middleware::from_fn(metrics::note_route))
        .layer(middleware::from_fn_with_state(
            state.app.clone(),
            metrics::observe_http,
        ))
        .with_state(state)
}

/// `/admin` beside the public pages, unless `http.admin_bind` puts it on
/// its own listener ([`serve_admin`]).
fn admin_unless_elsewhere(state: &WebState) -> Router<WebState> {
    match state.app.config.http.admin_bind {
        None => admin::router(state),
        Some(_) => Router::new(),
    }
}

/// Serves only `/admin` and `/metrics` (for `http.admin_bind`) until `shutdown` resolves.
pub async fn serve_admin(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (state, _workers) = WebState::start(app);
    // Operators scrape where the editors' pages are, off the public address.
    let router = admin::router(&state)
        .merge(metrics::metrics_router(state.app.clone()))
        .fallback(|| async { WebError::NotFound })
        .with_state(state);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

type WebResult = Result<Response, WebError>;

fn page(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

fn context(ip: ClientIp, headers: &HeaderMap, source: &str, app: &App) -> ConsentContext {
    ConsentContext {
        ip: Some(ip.0.to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(500).collect()),
        source: source.to_owned(),
        consent_text_version: Some(app.config.subscribe.consent_text_version.clone()),
        method: None,
    }
}

async fn subscribe_form_default(State(s): State<WebState>) -> WebResult {
    Ok(page(pages::subscribe_form(
        &s.app.newsletter.name,
        "/subscribe",
        None,
        "",
    )))
}

async fn subscribe_form(State(s): State<WebState>, Path(slug): Path<String>) -> WebResult {
    let nl = s.app.newsletter(Some(&slug)).await?;
    Ok(page(pages::subscribe_form(
        &nl.name,
        &format!("/n/{}/subscribe", nl.slug),
        None,
        "",
    )))
}

#[derive(Deserialize, Default)]
struct SubscribeBody {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: Option<String>,
    /// The honeypot: people never see it, form-filling bots do.
    #[serde(default)]
    website: Option<String>,
}

/// The form posts urlencoded; API clients post JSON. Same rules for both.
struct SubscribeInput {
    body: SubscribeBody,
    json: bool,
}

impl<S: Send + Sync> FromRequest<S> for SubscribeInput {
    type Rejection = WebError;
    async fn from_request(req: Request, state: &S) -> Result<Self, WebError> {
        if error::is_json_content_type(req.headers()) {
            // Read the body ourselves: the `Json` extractor would insist on
            // a lower-case `application/json`.
            let bytes = Bytes::from_request(req, state).await?;
            let Json(body) = Json::<SubscribeBody>::from_bytes(&bytes)?;
            return Ok(SubscribeInput { body, json: true });
        }
        match error::content_type(req.headers()).as_deref() {
            Some("application/x-www-form-urlencoded") => {
                let Form(body) = Form::<SubscribeBody>::from_request(req, state).await?;
                Ok(SubscribeInput { body, json: false })
            }
            other => Err(WebError::UnsupportedMediaType(
                other.unwrap_or("no Content-Type").to_owned(),
            )),
        }
    }
}

async fn subscribe_default(
    State(s): State<WebState>,
    ip: ClientIp,
    headers: HeaderMap,
    input: SubscribeInput,
) -> WebResult {
    handle_subscribe(s, None, ip, headers, input).await
}

async fn subscribe(
    State(s): State<WebState>,
    Path(slug): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
    input: SubscribeInput,
) -> WebResult {
    handle_subscribe(s, Some(slug), ip, headers, input).await
}

/// Validates what was typed, answers, and leaves everything that depends
/// on the address's state to the subscribe queue: the answer is the same in
/// bytes and in time whether the address is new, pending, confirmed,
/// unsubscribed or suppressed (and for the honeypot and the rate limit).
#[tracing::instrument(skip_all, fields(ip = %ip.0, newsletter = slug.as_deref().unwrap_or("default")))]
async fn handle_subscribe(
    s: WebState,
    slug: Option<String>,
    ip: ClientIp,
    headers: HeaderMap,
    input: SubscribeInput,
) -> WebResult {
    let nl = s.app.newsletter(slug.as_deref()).await?;
    let SubscribeInput { body, json } = input;
    let email = match parse_email(&body.email) {
        Ok(e) => e,
        Err(e) => {
            let message = format!("Please enter a valid email address: {}", error_reason(&e));
            return Ok(if json {
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(serde_json::json!({
                        "error": {"code": "invalid_email", "message": message, "field": "email"},
                        "status": "invalid", "field": "email", "message": message,
                    })),
                )
                    .into_response()
            } else {
                let action = if slug.is_some() {
                    format!("/n/{}/subscribe", nl.slug)
                } else {
                    "/subscribe".into()
                };
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    page(pages::subscribe_form(
                        &nl.name,
                        &action,
                        Some(&message),
                        &body.email,
                    )),
                )
                    .into_response()
            });
        }
    };
    // A bad name does not stop the subscription; the answer says it was
    // dropped (it depends only on what was typed, so it reveals nothing).
    let (name, name_not_kept) = match clean_name(body.name.as_deref()) {
        Ok(name) => (name.map(str::to_owned), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let answer = check_inbox_answer(json, name_not_kept.as_deref());
    if body
        .website
        .as_deref()
        .is_some_and(|w| !w.trim().is_empty())
    {
        tracing::info!("honeypot filled; ignoring");
        return Ok(answer);
    }
    if !s.limiter.allow(ip.0) {
        tracing::info!("per-IP limit reached; nothing sent");
        return Ok(answer);
    }
    s.queue.submit(SubscribeJob::Subscribe {
        email,
        name,
        newsletter: nl,
        context: context(ip, &headers, "web-form", &s.app),
    });
    Ok(answer)
}

fn check_inbox_answer(json: bool, name_not_kept: Option<&str>) -> Response {
    if json {
        let mut body = serde_json::json!({
            "status": "check_your_inbox",
            "message": "If the address can receive our newsletter, a confirmation link is on its way.",
        });
        if let Some(reason) = name_not_kept {
            body["name_not_kept"] = serde_json::Value::String(format!(
                "{reason}; the subscription request went ahead without the name"
            ));
        }
        (StatusCode::ACCEPTED, Json(body)).into_response()
    } else {
        page(pages::check_inbox(name_not_kept))
    }
}

fn error_reason(e: &crate::subscribers::SubscriberError) -> String {
    match e {
        crate::subscribers::SubscriberError::InvalidEmail { reason, .. } => reason.to_string(),
        other => other.to_string(),
    }
}

async fn confirm_page(State(s): State<WebState>, Path(token): Path<String>) -> WebResult {
    // Link scanners follow GETs: this page only offers the button.
    Ok(match s.app.confirmation_view(&token).await? {
        ConfirmationView::Ready { newsletter } => page(pages::confirm_button(
            &newsletter.name,
            &format!("/confirm/{token}"),
        )),
        ConfirmationView::Expired => (
            StatusCode::GONE,
            page(pages::bad_confirmation_link(true, "/subscribe")),
        )
            .into_response(),
        ConfirmationView::Unknown => (
            StatusCode::NOT_FOUND,
            page(pages::bad_confirmation_link(false, "/subscribe")),
        )
            .into_response(),
    })
}

async fn confirm(
    State(s): State<WebState>,
    Path(token): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
) -> WebResult {
    let ctx = context(ip, &headers, "confirmation-link", &s.app);
    Ok(match s.app.confirm_subscription(&token, ctx).await? {
        ConfirmOutcome::Confirmed { newsletter_id }
        | ConfirmOutcome::AlreadyConfirmed { newsletter_id } => {
            let nl = s.app.newsletter_by_id(newsletter_id).await?;
            page(pages::confirmed(&nl.name))
        }
        ConfirmOutcome::Expired => (
            StatusCode::GONE,
            page(pages::bad_confirmation_link(true, "/subscribe")),
        )
            .into_response(),
        ConfirmOutcome::Invalid => (
            StatusCode::NOT_FOUND,
            page(pages::bad_confirmation_link(false, "/subscribe")),
        )
            .into_response(),
    })
}

/// A verified unsubscribe token from the path. A forged or mangled one is
/// answered 404 with a friendly page before any handler runs.
struct UnsubscribeLink {
    token: crate::domain::UnsubscribeToken,
    raw: String,
}

impl axum::extract::FromRequestParts<WebState> for UnsubscribeLink {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &WebState,
    ) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match state.app.check_unsubscribe_token(&raw) {
            Some(token) => Ok(UnsubscribeLink { token, raw }),
            None => Err((
                StatusCode::NOT_FOUND,
                page(pages::invalid_unsubscribe_link()),
            )
                .into_response()),
        }
    }
}

async fn unsubscribe_page(
    State(s): State<WebState>,
    UnsubscribeLink {
        token: t,
        raw: token,
    }: UnsubscribeLink,
) -> WebResult {
    let nl = s.app.newsletter_by_id(t.newsletter_id).await?;
    Ok(page(pages::unsubscribe_button(
        &nl.name,
        &format!("/unsubscribe/{token}"),
    )))
}

/// RFC 8058: a POST with `List-Unsubscribe=One-Click`, urlencoded or
/// multipart, no cookies, answered 200 without a redirect. Our own page's
/// button posts here too; the token is the authority either way.
async fn unsubscribe(
    State(s): State<WebState>,
    UnsubscribeLink {
        token: t,
        raw: token,
    }: UnsubscribeLink,
    ip: ClientIp,
    req: Request,
) -> WebResult {
    let headers = req.headers().clone();
    let one_click = body_says_one_click(req).await;
    let mut ctx = context(ip, &headers, "unsubscribe-link", &s.app);
    ctx.method = Some(if one_click { "one-click" } else { "web-page" }.into());
    let nl = s.app.newsletter_by_id(t.newsletter_id).await?;
    Ok(match s.app.unsubscribe(t, ctx).await? {
        UnsubscribeOutcome::Unsubscribed { email, .. }
        | UnsubscribeOutcome::AlreadyUnsubscribed { email, .. } => page(pages::unsubscribed(
            &nl.name,
            &email,
            &format!("/resubscribe/{token}"),
        )),
        UnsubscribeOutcome::Gone => {
            page(pages::unsubscribed(&nl.name, "Your address", "/subscribe"))
        }
    })
}

async fn body_says_one_click(req: Request) -> bool {
    let content_type = error::content_type(req.headers()).unwrap_or_default();
    if content_type == "multipart/form-data" {
        let Ok(mut multipart) = Multipart::from_request(req, &()).await else {
            return false;
        };
        while let Ok(Some(field)) = multipart.next_field().await {
            if field.name() == Some("List-Unsubscribe") {
                return field.text().await.is_ok_and(|v| v.trim() == "One-Click");
            }
        }
        false
    } else {
        let Ok(Form(fields)) = Form::<Vec<(String, String)>>::from_request(req, &()).await else {
            return false;
        };
        fields
            .iter()
            .any(|(k, v)| k == "List-Unsubscribe" && v == "One-Click")
    }
}

/// The unsubscribe page's "Subscribe again": double opt-in once more, done
/// by the subscribe queue like a form request.
async fn resubscribe(
    State(s): State<WebState>,
    UnsubscribeLink { token: t, .. }: UnsubscribeLink,
    ip: ClientIp,
    headers: HeaderMap,
) -> WebResult {
    if s.limiter.allow(ip.0) {
        s.queue.submit(SubscribeJob::Resubscribe {
            token: t,
            context: context(ip, &headers, "unsubscribe-page", &s.app),
        });
    }
    Ok(page(pages::check_inbox(None)))
}

/// The public web versions of issues whose sending has begun.
async fn archive(State(s): State<WebState>) -> WebResult {
    let issues = s.app.archive_index().await?;
    Ok(page(pages::archive(
        &s.app.newsletter.name,
        &issues,
        &s.app.links,
    )))
}

/// The stored web rendering: the email's content without personal parts.
/// Its own CSP: the email's inline styles and remote images must load.
async fn archive_issue(State(s): State<WebState>, Path(slug): Path<String>) -> WebResult {
    let html = s
        .app
        .archived_web_page(&slug)
        .await?
        .ok_or(WebError::NotFound)?;
    let mut response = Html(html).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(security_headers::ARCHIVE_ISSUE_CSP),
    );
    Ok(response)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish
/// and the subscribe queue work off what it holds (bounded wait).
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (state, workers) = WebState::start(app);
    let router = routes(state);
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    workers.finish(QUEUE_DRAIN_LIMIT).await;
    served
}

/// Long enough for a confirmation mail's retries (1 s + 5 s + 25 s).
const QUEUE_DRAIN_LIMIT: Duration = Duration::from_secs(35);

//! HTTP: the public subscriber pages (and, later, the editors' API).
//! Handlers translate HTTP to service calls on `App`; rules live there.

mod health;
mod pages;
mod rate_limit;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::Markup;
use serde::Deserialize;

use crate::app::App;
use crate::store::Newsletter;
use crate::store::subscribers::ConsentContext;
use crate::subscribers::{
    ConfirmOutcome, SubscribeOutcome, SubscribeRequest, UnsubscribeOutcome, clean_name, parse_email,
};
use rate_limit::IpLimiter;

#[derive(Clone)]
pub struct WebState {
    pub app: App,
    limiter: Arc<IpLimiter>,
}

pub fn router(app: App) -> Router {
    let limiter = Arc::new(IpLimiter::per_hour(app.config.subscribe.per_ip_per_hour));
    let state = WebState { app, limiter };
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
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Html(pages::not_found().into_string()),
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// Every failure a handler can meet; logged in full, shown as a calm page.
struct WebError(String);

impl<E: std::fmt::Display> From<E> for WebError {
    fn from(e: E) -> Self {
        WebError(e.to_string())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self.0, "request failed");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(pages::error_page().into_string()),
        )
            .into_response()
    }
}

type WebResult = Result<Response, WebError>;

fn page(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

fn context(addr: &SocketAddr, headers: &HeaderMap, source: &str, app: &App) -> ConsentContext {
    ConsentContext {
        ip: Some(addr.ip().to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(500).collect()),
        source: source.to_owned(),
        consent_text_version: Some(app.config.subscribe.consent_text_version.clone()),
        method: None,
    }
}

async fn newsletter_or_404(
    app: &App,
    slug: Option<&str>,
) -> Result<Result<Arc<Newsletter>, Response>, WebError> {
    match app.newsletter(slug).await {
        Ok(n) => Ok(Ok(n)),
        Err(crate::app::LookupError::NoNewsletter(_)) => Ok(Err((
            StatusCode::NOT_FOUND,
            Html(pages::not_found().into_string()),
        )
            .into_response())),
        Err(e) => Err(e.into()),
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
    let nl = match newsletter_or_404(&s.app, Some(&slug)).await? {
        Ok(nl) => nl,
        Err(resp) => return Ok(resp),
    };
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
    type Rejection = Response;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        if is_json {
            let Json(body) = Json::<SubscribeBody>::from_request(req, state)
                .await
                .map_err(IntoResponse::into_response)?;
            Ok(SubscribeInput { body, json: true })
        } else {
            let Form(body) = Form::<SubscribeBody>::from_request(req, state)
                .await
                .map_err(IntoResponse::into_response)?;
            Ok(SubscribeInput { body, json: false })
        }
    }
}

async fn subscribe_default(
    State(s): State<WebState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    input: SubscribeInput,
) -> WebResult {
    handle_subscribe(s, None, addr, headers, input).await
}

async fn subscribe(
    State(s): State<WebState>,
    Path(slug): Path<String>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    input: SubscribeInput,
) -> WebResult {
    handle_subscribe(s, Some(slug), addr, headers, input).await
}

#[tracing::instrument(skip_all, fields(ip = %addr.ip(), newsletter = slug.as_deref().unwrap_or("default")))]
async fn handle_subscribe(
    s: WebState,
    slug: Option<String>,
    addr: SocketAddr,
    headers: HeaderMap,
    input: SubscribeInput,
) -> WebResult {
    let nl = match newsletter_or_404(&s.app, slug.as_deref()).await? {
        Ok(nl) => nl,
        Err(resp) => return Ok(resp),
    };
    let SubscribeInput { body, json } = input;
    let generic = || {
        if json {
            (StatusCode::ACCEPTED, Json(serde_json::json!({"status": "check_your_inbox", "message": "If the address can receive our newsletter, a confirmation link is on its way."}))).into_response()
        } else {
            page(pages::check_inbox())
        }
    };
    if body
        .website
        .as_deref()
        .is_some_and(|w| !w.trim().is_empty())
    {
        tracing::info!("honeypot filled; ignoring");
        return Ok(generic());
    }
    let email = match parse_email(&body.email) {
        Ok(e) => e,
        Err(e) => {
            let message = format!("Please enter a valid email address: {}", error_reason(&e));
            return Ok(if json {
                (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({"status": "invalid", "field": "email", "message": message}))).into_response()
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
    let name = clean_name(body.name.as_deref()).ok().flatten();
    if !s.limiter.allow(addr.ip()) {
        tracing::info!("per-IP limit reached; nothing sent");
        return Ok(generic());
    }
    let req = SubscribeRequest {
        email: &email,
        name,
        newsletter: &nl,
        context: context(&addr, &headers, "web-form", &s.app),
    };
    match s.app.request_subscription(req).await? {
        SubscribeOutcome::ConfirmationSent(mail) => {
            let app = s.app.clone();
            tokio::spawn(async move { app.send_confirmation(&mail).await });
        }
        other => tracing::info!(outcome = ?other, "no confirmation mail"),
    }
    Ok(generic())
}

fn error_reason(e: &crate::subscribers::SubscriberError) -> String {
    match e {
        crate::subscribers::SubscriberError::InvalidEmail { reason, .. } => reason.to_string(),
        other => other.to_string(),
    }
}

async fn confirm_page(State(s): State<WebState>, Path(token): Path<String>) -> WebResult {
    // Link scanners follow GETs: this page only offers the button.
    let token_hash = match crate::domain::ConfirmationToken::from_url(&token) {
        Some(t) => t.hash(),
        None => {
            return Ok((
                StatusCode::NOT_FOUND,
                page(pages::bad_confirmation_link(false, "/subscribe")),
            )
                .into_response());
        }
    };
    use crate::store::subscribers::TokenLookup;
    Ok(
        match s
            .app
            .db
            .lookup_confirmation_token(&token_hash, crate::domain::now_ms())
            .await?
        {
            TokenLookup::Valid { newsletter_id, .. }
            | TokenLookup::AlreadyUsed { newsletter_id, .. } => {
                let nl = s.app.db.newsletter_by_id(newsletter_id).await?;
                page(pages::confirm_button(
                    &nl.name,
                    &format!("/confirm/{token}"),
                ))
            }
            TokenLookup::Expired => (
                StatusCode::GONE,
                page(pages::bad_confirmation_link(true, "/subscribe")),
            )
                .into_response(),
            TokenLookup::Unknown => (
                StatusCode::NOT_FOUND,
                page(pages::bad_confirmation_link(false, "/subscribe")),
            )
                .into_response(),
        },
    )
}

async fn confirm(
    State(s): State<WebState>,
    Path(token): Path<String>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> WebResult {
    let ctx = context(&addr, &headers, "confirmation-link", &s.app);
    Ok(match s.app.confirm_subscription(&token, ctx).await? {
        ConfirmOutcome::Confirmed { newsletter_id }
        | ConfirmOutcome::AlreadyConfirmed { newsletter_id } => {
            let nl = s.app.db.newsletter_by_id(newsletter_id).await?;
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
    let nl = s.app.db.newsletter_by_id(t.newsletter_id).await?;
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
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> WebResult {
    let headers = req.headers().clone();
    let one_click = body_says_one_click(req).await;
    let mut ctx = context(&addr, &headers, "unsubscribe-link", &s.app);
    ctx.method = Some(if one_click { "one-click" } else { "web-page" }.into());
    let nl = s.app.db.newsletter_by_id(t.newsletter_id).await?;
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
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type.starts_with("multipart/form-data") {
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

/// The unsubscribe page's "Subscribe again": double opt-in once more.
async fn resubscribe(
    State(s): State<WebState>,
    UnsubscribeLink { token: t, .. }: UnsubscribeLink,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> WebResult {
    let Some(subscriber) = s.app.db.subscriber_by_id(t.subscriber_id).await? else {
        return Ok(page(pages::check_inbox()));
    };
    let email = parse_email(&subscriber.email)?;
    let nl = s.app.db.newsletter_by_id(t.newsletter_id).await?;
    if s.limiter.allow(addr.ip()) {
        let req = SubscribeRequest {
            email: &email,
            name: None,
            newsletter: &nl,
            context: context(&addr, &headers, "unsubscribe-page", &s.app),
        };
        if let SubscribeOutcome::ConfirmationSent(mail) = s.app.request_subscription(req).await? {
            let app = s.app.clone();
            tokio::spawn(async move { app.send_confirmation(&mail).await });
        }
    }
    Ok(page(pages::check_inbox()))
}

/// The public web versions of issues whose sending has begun.
async fn archive(State(s): State<WebState>) -> WebResult {
    let issues = s.app.db.archived_issues().await?;
    Ok(page(pages::archive(
        &s.app.newsletter.name,
        &issues,
        &s.app.links,
    )))
}

/// The stored web rendering: the email's content without personal parts.
async fn archive_issue(State(s): State<WebState>, Path(slug): Path<String>) -> WebResult {
    Ok(match s.app.db.archived_issue(&slug).await? {
        Some(issue) => Html(issue.web_html).into_response(),
        None => (StatusCode::NOT_FOUND, page(pages::not_found())).into_response(),
    })
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(app);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

//! The editors' web page under `/admin`: server-rendered (maud), no
//! JavaScript framework, no build step. Handlers translate HTTP to the same
//! `App` services as the CLI and the API.
//!
//! Its own layers (merged after the public ones, like the API):
//! - `admin_headers`: a CSP that loads only our own `/admin/static/*` files
//!   (no inline script or style), `frame-ancestors 'none'`, `no-store`;
//! - `guard`: every request but the login page and the static files needs a
//!   live session (GET: redirect to the login; anything else: 403), and
//!   every POST must come from our own origin (`Origin`, `Sec-Fetch-Site`)
//!   and carry the session's CSRF token (form field `csrf`, or the
//!   `X-CSRF-Token` header, or `?csrf=` on multipart forms).

mod dashboard;
mod issues;
mod items;
mod layout;
mod subscribers;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{Markup, html};
use serde::Deserialize;

use super::{ClientIp, WebState};
use crate::admin::{AdminError, AdminSession, LoginOutcome, Password, SESSION_ABSOLUTE_MS};
use crate::content::ContentError;
use crate::delivery::control::ControlError;
use crate::domain::now_ms;
use crate::store::StoreError;
pub use layout::{ADMIN_CSS, ADMIN_JS};

/// The session cookie; scoped to `/admin`.
pub const SESSION_COOKIE: &str = "herald_admin";
/// The largest urlencoded form the guard reads to find the CSRF token.
const FORM_LIMIT: usize = 1024 * 1024;

/// The admin router, to be merged after the public layers.
pub fn router(state: &WebState) -> Router<WebState> {
    let guarded = Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/") }))
        .route("/admin/", get(dashboard::dashboard))
        .route("/admin/logout", post(logout))
        .merge(issues::routes())
        .merge(items::routes())
        .merge(subscribers::routes())
        .layer(middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .route("/admin/login", get(login_page).post(login))
        .route("/admin/static/admin.css", get(static_css))
        .route("/admin/static/admin.js", get(static_js))
        .merge(guarded)
        .layer(middleware::from_fn_with_state(state.clone(), same_origin))
        .layer(middleware::from_fn(admin_headers))
}

/// The one policy of admin pages: our own files only. The issue previews
/// (`issues::preview_document`) set their own: inline styles, sandbox, and
/// framing by our own pages only.
const ADMIN_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

async fn admin_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    let framable = headers.contains_key(header::CONTENT_SECURITY_POLICY);
    if !framable {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(ADMIN_CSP),
        );
    }
    for (name, value) in [
        (
            header::X_FRAME_OPTIONS,
            if framable { "SAMEORIGIN" } else { "DENY" },
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Refuses a state-changing request a browser says came from elsewhere.
/// Browsers send `Sec-Fetch-Site` and `Origin` on POST; a client that sends
/// neither is not a browser another site can drive (the CSRF token still
/// applies to it).
async fn same_origin(State(s): State<WebState>, req: Request, next: Next) -> Response {
    if is_safe(req.method()) || from_our_origin(&s, req.headers()) {
        return next.run(req).await;
    }
    tracing::info!("admin POST from another origin refused");
    forbidden(
        "This form was sent from another site, so it was refused. Open the admin page yourself and try again.",
    )
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn from_our_origin(s: &WebState, headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str(), Ok("same-origin") | Ok("none"))
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let base = s.app.links.base();
    let base_origin = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| &base[..i + 3 + j]))
        .unwrap_or(base);
    if origin.eq_ignore_ascii_case(base_origin) {
        return true;
    }
    // With `http.admin_bind` the page is not at the base URL: its own host.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    host.is_some_and(|host| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host))
    })
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// The session requirement and the CSRF check (see the module comment).
async fn guard(State(s): State<WebState>, req: Request, next: Next) -> Response {
    let session = match session_cookie(req.headers()) {
        Some(id) => match s.app.admin_session(id).await {
            Ok(session) => session,
            Err(e) => return AdminFail::from(e).into_response(),
        },
        None => None,
    };
    let Some(session) = session else {
        if is_safe(req.method()) {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/admin/");
            let to = format!(
                "/admin/login?next={}",
                form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
            );
            return Redirect::to(&to).into_response();
        }
        return forbidden(
            "You are not logged in (or your session ended), so nothing was changed. Log in and try again.",
        );
    };
    let mut req = req;
    if !is_safe(req.method()) {
        let (sent, rebuilt) = match csrf_token_of(req).await {
            Ok(found) => found,
            Err(response) => return response,
        };
        req = rebuilt;
        if !sent.is_some_and(|t| session.csrf_matches(&t)) {
            tracing::info!(
                editor_id = session.editor_id,
                "admin POST with a wrong CSRF token refused"
            );
            return forbidden(
                "This form is out of date or was not sent by this admin page, so nothing was changed. Go back, reload the page and try again.",
            );
        }
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// The token from the header, the query, or an urlencoded body (read and
/// put back for the handler).
async fn csrf_token_of(req: Request) -> Result<(Option<String>, Request), Response> {
    if let Some(t) = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        let t = t.to_owned();
        return Ok((Some(t), req));
    }
    if let Some(t) = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned())
    }) {
        return Ok((Some(t), req));
    }
    let urlencoded = super::error::content_type(req.headers()).as_deref()
        == Some("application/x-www-form-urlencoded");
    if !urlencoded {
        return Ok((None, req));
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, FORM_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return Err(AdminFail::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "The form is larger than the {} KiB this page accepts.",
                    FORM_LIMIT / 1024
                ),
            )
            .into_response());
        }
    };
    let token = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    Ok((token, Request::from_parts(parts, Body::from(bytes))))
}

fn forbidden(message: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        layout::bare("Refused", html! { p role="alert" { (message) } p { a href="/admin/" { "Back to the admin page" } } }),
    )
        .into_response()
}

/// A form's optional text field: trimmed, `None` when left empty.
fn optional(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn page(markup: Markup) -> Response {
    axum::response::Html(markup.into_string()).into_response()
}

async fn static_css() -> Response {
    static_file("text/css; charset=utf-8", ADMIN_CSS)
}

async fn static_js() -> Response {
    static_file("text/javascript; charset=utf-8", ADMIN_JS)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

// --- login -------------------------------------------------------------

#[derive(Deserialize, Default)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Only our own pages: never an absolute or protocol-relative URL.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/admin/") && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/admin/",
    }
}

async fn login_page(
    State(s): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, AdminFail> {
    if let Some(id) = session_cookie(&headers)
        && s.app.admin_session(id).await?.is_some()
    {
        return Ok(Redirect::to(safe_next(q.next.as_deref())).into_response());
    }
    Ok(page(layout::login(safe_next(q.next.as_deref()), "", None)))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

#[tracing::instrument(skip_all, fields(ip = %ip.0))]
async fn login(
    State(s): State<WebState>,
    ip: ClientIp,
    Form(f): Form<LoginForm>,
) -> Result<Response, AdminFail> {
    let next = safe_next(f.next.as_deref()).to_owned();
    let outcome = s
        .app
        .admin_login(&f.email, Password::attempt(&f.password), ip.0)
        .await?;
    Ok(match outcome {
        LoginOutcome::LoggedIn { session_id } => {
            let secure = crate::render::starts_with_ci(s.app.links.base(), "https://");
            let cookie = format!(
                "{SESSION_COOKIE}={session_id}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{}",
                SESSION_ABSOLUTE_MS / 1000,
                if secure { "; Secure" } else { "" }
            );
            let mut response = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        LoginOutcome::Refused => (
            StatusCode::UNAUTHORIZED,
            page(layout::login(
                &next,
                &f.email,
                Some("That email and password do not match an editor. Check both and try again."),
            )),
        )
            .into_response(),
        LoginOutcome::Locked { until } => {
            let minutes = ((until - now_ms()) as f64 / 60_000.0).ceil().max(1.0) as i64;
            let message = format!(
                "Too many failed logins for this account or from your network. Wait {minutes} minute{} and try again; an administrator can set a new password with `herald editor passwd`.",
                if minutes == 1 { "" } else { "s" }
            );
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                page(layout::login(&next, &f.email, Some(&message))),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&(minutes * 60).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
    })
}

async fn logout(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
) -> Result<Response, AdminFail> {
    s.app.admin_logout(&session).await?;
    let mut response = Redirect::to("/admin/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "herald_admin=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(response)
}

// --- errors ------------------------------------------------------------

/// An admin page's error: a page with the message (ours are logged, the
/// editor sees a generic sentence).
#[derive(Debug)]
pub struct AdminFail {
    status: StatusCode,
    message: String,
}

impl AdminFail {
    fn new(status: StatusCode, message: impl Into<String>) -> AdminFail {
        AdminFail {
            status,
            message: message.into(),
        }
    }
    fn internal(cause: impl std::fmt::Display) -> AdminFail {
        tracing::error!(error = %cause, "admin request failed");
        AdminFail::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong on our side; nothing was changed. Try again in a minute; the server log has the details.",
        )
    }
    fn not_found(message: impl Into<String>) -> AdminFail {
        AdminFail::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for AdminFail {
    fn into_response(self) -> Response {
        (
            self.status,
            layout::bare(
                "Could not do that",
                html! { p role="alert" { (self.message) } p { a href="/admin/" { "Back to the admin page" } } },
            ),
        )
            .into_response()
    }
}

impl From<StoreError> for AdminFail {
    fn from(e: StoreError) -> Self {
        AdminFail::internal(e)
    }
}

impl From<AdminError> for AdminFail {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Store(e) => e.into(),
            AdminError::Hash(_) => AdminFail::internal(e),
            other => AdminFail::new(StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
        }
    }
}

impl From<crate::app::LookupError> for AdminFail {
    fn from(e: crate::app::LookupError) -> Self {
        match e {
            crate::app::LookupError::Store(e) => e.into(),
            other => AdminFail::not_found(other.to_string()),
        }
    }
}

impl From<ContentError> for AdminFail {
    fn from(e: ContentError) -> Self {
        use ContentError as C;
        match e {
            C::NoIssue(_) | C::NoItem(_) | C::NoIssues => AdminFail::not_found(e.to_string()),
            C::Lookup(e) => e.into(),
            C::Store(e) => e.into(),
            C::Read { .. } | C::Css { .. } | C::Render(_) => AdminFail::internal(e),
            other => AdminFail::new(StatusCode::CONFLICT, other.to_string()),
        }
    }
}

impl From<ControlError> for AdminFail {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::WrongStatus { .. } => AdminFail::new(StatusCode::CONFLICT, e.to_string()),
            ControlError::Content(e) => e.into(),
            ControlError::Store(e) => e.into(),
            ControlError::TestSend { .. } => AdminFail::new(StatusCode::BAD_GATEWAY, e.to_string()),
        }
    }
}

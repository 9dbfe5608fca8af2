//! Subscribers: search by email, filter by state, keyset paging, detail
//! (consent and delivery history), add, unsubscribe, erase, CSV import with
//! a summary, CSV export.

use axum::body::Body;
use axum::extract::{Multipart, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use futures::TryStreamExt;
use maud::{Markup, html};
use serde::Deserialize;

use super::issues::when;
use super::layout::{self, Section, csrf_field, field};
use super::{AdminFail, page};
use crate::admin::AdminSession;
use crate::domain::SubscriptionState;
use crate::subscribers::import::{ImportError, ImportOptions, ImportReport};
use crate::subscribers::{SubscribeOutcome, SubscriberError, clean_name, parse_email};
use crate::web::WebState;

type AdminResult = Result<Response, AdminFail>;

const PAGE: i64 = 50;
/// An upload larger than this is refused (the CLI and the API stream any size).
const IMPORT_LIMIT: usize = 20 * 1024 * 1024;
/// Refused rows listed on the summary; the rest are counted.
const REJECTS_SHOWN: usize = 200;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/admin/subscribers", get(list))
        .route("/admin/subscribers/show", get(show))
        .route("/admin/subscribers/new", get(new_form).post(add))
        .route("/admin/subscribers/unsubscribe", post(unsubscribe))
        .route("/admin/subscribers/erase", post(erase))
        .route("/admin/subscribers/import", get(import_form).post(import))
        .route("/admin/subscribers/export.csv", get(export))
        .layer(axum::extract::DefaultBodyLimit::max(
            IMPORT_LIMIT + 64 * 1024,
        ))
}

impl From<SubscriberError> for AdminFail {
    fn from(e: SubscriberError) -> Self {
        match e {
            SubscriberError::Store(e) => e.into(),
            SubscriberError::Lookup(e) => e.into(),
            SubscriberError::NotFound(_) => AdminFail::not_found(e.to_string()),
            other => AdminFail::new(StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
        }
    }
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    after: Option<i64>,
}

fn state_filter(s: &str) -> Result<Option<SubscriptionState>, AdminFail> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e: String| AdminFail::new(StatusCode::UNPROCESSABLE_ENTITY, e))
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn list(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Query(q): Query<ListQuery>,
) -> AdminResult {
    let nl = s.app.newsletter(None).await?;
    let state = state_filter(&q.state)?;
    let rows = s
        .app
        .search_subscribers(&nl, &q.q, state, q.after.unwrap_or(0), PAGE)
        .await?;
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(page(layout::page(
        "Subscribers",
        &session,
        Section::Subscribers,
        html! {
            div class="actions" {
                a class="button" href="/admin/subscribers/new" { "Add a subscriber" }
                a class="button secondary" href="/admin/subscribers/import" { "Import CSV" }
                a class="button secondary" href={ "/admin/subscribers/export.csv?state=" (enc(&q.state)) } { "Export CSV" }
            }
            form method="get" action="/admin/subscribers" class="card" role="search" {
                label for="q" { "Email contains" }
                input type="search" id="q" name="q" value=(q.q);
                label for="state" { "State" }
                select id="state" name="state" {
                    option value="" selected[q.state.is_empty()] { "any" }
                    @for st in SubscriptionState::ALL {
                        option value=(st.as_str()) selected[q.state == st.as_str()] { (st.as_str()) }
                    }
                }
                p { button type="submit" { "Search" } }
            }
            @if rows.is_empty() {
                p class="muted" { "No subscribers match." }
            } @else {
                div class="table-wrap" {
                    table {
                        thead { tr {
                            th scope="col" { "Email" } th scope="col" class="hide-narrow" { "Name" }
                            th scope="col" { "State" } th scope="col" class="hide-narrow" { "Since" }
                        } }
                        tbody {
                            @for r in &rows {
                                tr {
                                    td { a href={ "/admin/subscribers/show?email=" (enc(&r.email)) } { (r.email) } }
                                    td class="hide-narrow" { (r.name.as_deref().unwrap_or("")) }
                                    td { (r.state.as_str()) }
                                    td class="hide-narrow" { (when(r.created_at)) }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(after) = next {
                p { a rel="next" href={ "/admin/subscribers?q=" (enc(&q.q)) "&state=" (enc(&q.state)) "&after=" (after) } { "Next page" } }
            }
        },
    )))
}

#[derive(Deserialize)]
struct EmailQuery {
    #[serde(default)]
    email: String,
}

async fn show(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Query(q): Query<EmailQuery>,
) -> AdminResult {
    show_page(&s, &session, &q.email, None).await
}

async fn show_page(
    s: &WebState,
    session: &AdminSession,
    email: &str,
    notice: Option<&str>,
) -> AdminResult {
    let email = parse_email(email)?;
    let profile = s
        .app
        .subscriber_profile(&email)
        .await?
        .ok_or_else(|| AdminFail::not_found(format!("No subscriber with address {email}.")))?;
    let deliveries = s.app.subscriber_deliveries(&profile.subscriber, 50).await?;
    let hidden = |session: &AdminSession| {
        html! { (csrf_field(session)) input type="hidden" name="email" value=(profile.subscriber.email); }
    };
    Ok(page(layout::page(
        &profile.subscriber.email,
        session,
        Section::Subscribers,
        html! {
            @if let Some(n) = notice { p class="notice" role="status" { (n) } }
            @if profile.suppressed { p class="alert" { "This address is suppressed: Herald will not mail it without a fresh confirmation." } }
            p { "Name: " (profile.subscriber.name.as_deref().unwrap_or("—")) " · added " (when(profile.subscriber.created_at)) }
            h2 { "Subscriptions" }
            ul {
                @for (slug, sub) in &profile.subscriptions {
                    li { (slug) ": " strong { (sub.state.as_str()) }
                        @if let Some(at) = sub.confirmed_at { " · confirmed " (when(at)) }
                        @if let Some(at) = sub.unsubscribed_at { " · unsubscribed " (when(at)) } }
                }
            }
            div class="actions" {
                form method="post" action="/admin/subscribers/unsubscribe" {
                    (hidden(session))
                    button type="submit" class="secondary" { "Unsubscribe" }
                }
                form method="post" action="/admin/subscribers/erase" {
                    (hidden(session))
                    label { input type="checkbox" name="sure" required; " Erase this person (cannot be undone)" }
                    button type="submit" class="danger" { "Erase" }
                }
            }
            h2 { "Consent history" }
            div class="table-wrap" { table {
                thead { tr { th scope="col" { "When" } th scope="col" { "What" } th scope="col" { "Source" } th scope="col" class="hide-narrow" { "IP" } } }
                tbody { @for e in &profile.consent_history { tr {
                    td { (when(e.at)) } td { (e.kind.as_str()) } td { (e.source) @if let Some(m) = &e.method { " (" (m) ")" } }
                    td class="hide-narrow" { (e.ip.as_deref().unwrap_or("")) }
                } } }
            } }
            h2 { "Deliveries" }
            @if deliveries.is_empty() { p class="muted" { "None yet." } } @else {
                div class="table-wrap" { table {
                    thead { tr { th scope="col" { "Issue" } th scope="col" { "State" } th scope="col" class="num" { "Attempts" } th scope="col" { "Last reply" } } }
                    tbody { @for d in &deliveries { tr {
                        td { a href={ "/admin/issues/" (d.issue_number) } { "#" (d.issue_number) } }
                        td { (d.state.as_str()) } td class="num" { (d.attempts) } td { (d.last_reply.as_deref().unwrap_or("")) }
                    } } }
                } }
            }
        },
    )))
}

#[derive(Deserialize, Default)]
struct AddForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    confirmed: Option<String>,
}

fn add_form(
    session: &AdminSession,
    f: &AddForm,
    email_error: Option<&str>,
    name_error: Option<&str>,
) -> Markup {
    html! {
        form method="post" action="/admin/subscribers/new" {
            (csrf_field(session))
            (field("Email", "email", "email", &f.email, email_error, true))
            (field("Name (optional)", "name", "text", &f.name, name_error, false))
            label { input type="checkbox" name="confirmed" checked[f.confirmed.is_some()];
                " Already confirmed (they agreed elsewhere; otherwise a confirmation link is mailed)" }
            p { button type="submit" { "Add" } }
        }
    }
}

async fn new_form(Extension(session): Extension<AdminSession>) -> AdminResult {
    Ok(page(layout::page(
        "Add a subscriber",
        &session,
        Section::Subscribers,
        add_form(&session, &AddForm::default(), None, None),
    )))
}

async fn add(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Form(f): Form<AddForm>,
) -> AdminResult {
    let again = |email_error: Option<String>, name_error: Option<String>| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            page(layout::page(
                "Add a subscriber",
                &session,
                Section::Subscribers,
                add_form(&session, &f, email_error.as_deref(), name_error.as_deref()),
            )),
        )
            .into_response()
    };
    let email = match parse_email(&f.email) {
        Ok(e) => e,
        Err(e) => return Ok(again(Some(e.to_string()), None)),
    };
    let name = match clean_name(Some(f.name.as_str()).filter(|n| !n.trim().is_empty())) {
        Ok(n) => n,
        Err(e) => return Ok(again(None, Some(e.to_string()))),
    };
    let nl = s.app.newsletter(None).await?;
    let source = format!("admin:{}", session.email);
    let outcome = match s
        .app
        .add_subscriber_from(&email, name, &nl, f.confirmed.is_some(), &source)
        .await
    {
        Ok(o) => o,
        Err(e @ SubscriberError::NeedsConfirmation { .. }) => {
            return Ok(again(Some(e.to_string()), None));
        }
        Err(e) => return Err(e.into()),
    };
    let notice = match outcome {
        SubscribeOutcome::ConfirmationSent(mail) => {
            if s.app.send_confirmation(&mail).await {
                "Added as pending; a confirmation link was mailed."
            } else {
                "Added as pending, but the confirmation mail could not be sent; see the server log and add the address again."
            }
        }
        SubscribeOutcome::AlreadyConfirmed => "Confirmed.",
        SubscribeOutcome::RateLimited => {
            "A confirmation link was mailed recently; not sent again yet."
        }
    };
    show_page(&s, &session, email.as_str(), Some(notice)).await
}

#[derive(Deserialize)]
struct EmailForm {
    #[serde(default)]
    email: String,
}

async fn unsubscribe(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Form(f): Form<EmailForm>,
) -> AdminResult {
    let email = parse_email(&f.email)?;
    let nl = s.app.newsletter(None).await?;
    s.app
        .remove_subscriber_from(&email, &nl, &format!("admin:{}", session.email))
        .await?;
    show_page(&s, &session, email.as_str(), Some("Unsubscribed.")).await
}

async fn erase(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Form(f): Form<EmailForm>,
) -> AdminResult {
    let email = parse_email(&f.email)?;
    s.app.erase_subscriber(&email).await?;
    tracing::info!(
        editor_id = session.editor_id,
        "subscriber erased from the admin page"
    );
    Ok(Redirect::to("/admin/subscribers").into_response())
}

fn import_page(session: &AdminSession, error: Option<&str>) -> Markup {
    html! {
        p { "A CSV file with a header row and an " code { "email" } " column (" code { "name" } " and other columns optional). Import never resubscribes anyone who unsubscribed or is suppressed." }
        // Multipart bodies are not read by the CSRF check: the token rides in the URL.
        form method="post" action={ "/admin/subscribers/import?csrf=" (session.csrf_token) } enctype="multipart/form-data" {
            label for="file" { "CSV file" }
            input type="file" id="file" name="file" accept=".csv,text/csv" required
                aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| "file-error")];
            @if let Some(e) = error { p class="field-error" id="file-error" { (e) } }
            label { input type="checkbox" name="confirmed"; " They are already confirmed (otherwise each gets a confirmation link)" }
            p { button type="submit" { "Import" } }
        }
    }
}

async fn import_form(Extension(session): Extension<AdminSession>) -> AdminResult {
    Ok(page(layout::page(
        "Import subscribers",
        &session,
        Section::Subscribers,
        import_page(&session, None),
    )))
}

/// Keeps the first refused rows for the summary and counts the rest.
#[derive(Default)]
struct Rejects {
    text: Vec<u8>,
    lines: usize,
}

impl std::io::Write for Rejects {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if self.lines < REJECTS_SHOWN {
                self.text.push(b);
            }
            if b == b'\n' {
                self.lines += 1;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn import(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    mut multipart: Multipart,
) -> AdminResult {
    let mut file: Option<Vec<u8>> = None;
    let mut confirmed = false;
    let refuse = |message: String| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            page(layout::page(
                "Import subscribers",
                &session,
                Section::Subscribers,
                import_page(&session, Some(&message)),
            )),
        )
            .into_response()
    };
    loop {
        let next = match multipart.next_field().await {
            Ok(n) => n,
            Err(e) => {
                return Ok(refuse(format!(
                    "The upload could not be read ({e}); try again."
                )));
            }
        };
        let Some(field) = next else { break };
        match field.name() {
            Some("file") => match field.bytes().await {
                Ok(b) => file = Some(b.to_vec()),
                Err(e) => {
                    return Ok(refuse(format!(
                        "The file could not be read ({e}); files up to {} MB are accepted here, larger ones with `herald subscribers import`.",
                        IMPORT_LIMIT / 1024 / 1024
                    )));
                }
            },
            Some("confirmed") => confirmed = true,
            _ => {}
        }
    }
    let Some(bytes) = file.filter(|b| !b.is_empty()) else {
        return Ok(refuse("Choose a CSV file to import.".into()));
    };
    let nl = s.app.newsletter(None).await?;
    let mut rejects = Rejects::default();
    let progress = |_: u64, _: &ImportReport| {};
    let report = match s
        .app
        .import_subscribers_from(
            "the upload".into(),
            format!("import:admin:{}", session.email),
            std::io::Cursor::new(bytes),
            ImportOptions {
                confirmed,
                newsletter: &nl,
                progress: &progress,
            },
            &mut rejects,
        )
        .await
    {
        Ok(r) => r,
        Err(ImportError::Store(e)) => return Err(e.into()),
        Err(ImportError::Subscriber(e)) => return Err(e.into()),
        Err(e) => return Ok(refuse(e.to_string())),
    };
    let rejected = String::from_utf8_lossy(&rejects.text).into_owned();
    Ok(page(layout::page(
        "Import finished",
        &session,
        Section::Subscribers,
        html! {
            table class="card" {
                tbody {
                    tr { th scope="row" { "Imported" } td class="num" data-count="imported" { (report.imported) } }
                    tr { th scope="row" { "Updated" } td class="num" data-count="updated" { (report.updated) } }
                    tr { th scope="row" { "Invalid" } td class="num" data-count="invalid" { (report.invalid) } }
                    tr { th scope="row" { "Suppressed (not imported)" } td class="num" data-count="suppressed" { (report.suppressed) } }
                    tr { th scope="row" { "Duplicates in the file" } td class="num" data-count="duplicate" { (report.duplicate) } }
                    tr { th scope="row" { "Confirmation links mailed" } td class="num" data-count="confirmations_sent" { (report.confirmations_sent) } }
                }
            }
            @if rejects.lines > 0 {
                h2 { "Refused rows" @if rejects.lines > REJECTS_SHOWN { " (first " (REJECTS_SHOWN) " of " (rejects.lines) ")" } }
                pre class="text-part" { (rejected) }
            }
            p { a href="/admin/subscribers" { "Back to the subscribers" } }
        },
    )))
}

#[derive(Deserialize, Default)]
struct ExportQuery {
    #[serde(default)]
    state: String,
}

/// Streamed page by page: any size in constant memory.
async fn export(State(s): State<WebState>, Query(q): Query<ExportQuery>) -> AdminResult {
    let state = state_filter(&q.state)?;
    let nl = s.app.newsletter(None).await?;
    let stream = s
        .app
        .export_subscribers_csv(&nl, state, false)
        .map_err(std::io::Error::other);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"subscribers.csv\"",
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

//! Issues: list, compose, preview, test copies, send (with a confirmation),
//! schedule, pause/resume/cancel/retry, and the live progress view.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::layout::{self, Section, csrf_field, field};
use super::{AdminFail, optional, page};
use crate::admin::AdminSession;
use crate::app::App;
use crate::clock::Clock;
use crate::content::ComposeOptions;
use crate::domain::{DeliveryState, EmailAddress, IssueStatus, ItemState, ms_to_datetime};
use crate::schedule::spec::ScheduleTz;
use crate::store::content::IssueRow;
use crate::store::deliveries::DeliveryCounts;
use crate::subscribers::parse_email;
use crate::web::WebState;

type AdminResult = Result<Response, AdminFail>;

/// At most this many test copies per request (as in the API).
const MAX_TEST_COPIES: usize = 20;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/admin/issues", get(list))
        .route("/admin/issues/compose", post(compose))
        .route("/admin/issues/{n}", get(show))
        .route("/admin/issues/{n}/preview.html", get(preview_document))
        .route("/admin/issues/{n}/test", post(test_send))
        .route("/admin/issues/{n}/send", get(confirm_send).post(send))
        .route("/admin/issues/{n}/schedule", post(schedule))
        .route("/admin/issues/{n}/pause", post(pause))
        .route("/admin/issues/{n}/resume", post(resume))
        .route("/admin/issues/{n}/cancel", post(cancel))
        .route("/admin/issues/{n}/retry", post(retry))
        .route("/admin/issues/{n}/progress", get(progress))
        .route("/admin/issues/{n}/progress.json", get(progress_json))
}

async fn issue(s: &WebState, n: &str) -> Result<IssueRow, AdminFail> {
    let nl = s.app.newsletter(None).await?;
    Ok(s.app.find_issue(&nl, n).await?)
}

pub(super) fn when(ms: i64) -> String {
    ms_to_datetime(ms).format("%Y-%m-%d %H:%M UTC").to_string()
}

fn status_badge(status: IssueStatus) -> Markup {
    html! { span class={ "status status-" (status.as_str()) } { (status.as_str()) } }
}

fn issue_url(row: &IssueRow) -> String {
    format!("/admin/issues/{}", row.number)
}

/// The delivery states as columns, generically: a state added by another
/// part of Herald shows up without a change here.
fn counts_cells(counts: &DeliveryCounts) -> Markup {
    html! {
        @for state in DeliveryState::ALL {
            td class="num hide-narrow" { (counts.get(*state)) }
        }
        td class="num" { (counts.total) }
    }
}

fn counts_header() -> Markup {
    html! {
        @for state in DeliveryState::ALL {
            th class="num hide-narrow" scope="col" { (state.as_str().replace('_', " ")) }
        }
        th class="num" scope="col" { "total" }
    }
}

// --- the issues table (also on the dashboard) ---------------------------

pub(super) fn issues_table(issues: &[crate::admin::IssueWithCounts]) -> Markup {
    html! {
        @if issues.is_empty() {
            p class="muted" { "No issues yet." }
        } @else {
            div class="table-wrap" {
                table {
                    thead { tr {
                        th scope="col" { "#" }
                        th scope="col" { "Issue" }
                        th scope="col" { "Status" }
                        th scope="col" class="hide-narrow" { "Composed" }
                        (counts_header())
                    } }
                    tbody {
                        @for i in issues {
                            tr {
                                td class="num" { (i.issue.number) }
                                td { a href={ "/admin/issues/" (i.issue.number) } { (i.issue.subject) } }
                                td { (status_badge(i.issue.status)) }
                                td class="hide-narrow" { (when(i.issue.created_at)) }
                                (counts_cells(&i.counts))
                            }
                        }
                    }
                }
            }
        }
    }
}

// --- list and compose ---------------------------------------------------

async fn list(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
) -> AdminResult {
    list_page(&s, &session, None, StatusCode::OK).await
}

async fn list_page(
    s: &WebState,
    session: &AdminSession,
    compose_error: Option<(&str, &str)>,
    status: StatusCode,
) -> AdminResult {
    let nl = s.app.newsletter(None).await?;
    let issues = s.app.issues_with_counts(&nl, 50).await?;
    let ready = s.app.list_items(&nl, Some(ItemState::Ready)).await?;
    let error_for = |f: &str| {
        compose_error
            .filter(|(field, _)| *field == f)
            .map(|(_, m)| m)
    };
    Ok((
        status,
        page(layout::page(
            "Issues",
            session,
            Section::Issues,
            html! {
                section class="card" aria-labelledby="compose-h" {
                    h2 id="compose-h" { "Compose the next issue" }
                    @if let Some(message) = error_for("items") {
                        p class="alert" role="alert" { (message) }
                    }
                    @if ready.is_empty() {
                        p class="muted" { "No items are ready. Mark items ready first (" code { "herald item ready" } " or the API)." }
                    } @else {
                        p { "These " (ready.len()) " ready item(s) go into the issue, in this order:" }
                        ol { @for item in &ready { li { (item.headline) " " span class="muted" { "(" (item.outlet) ")" } } } }
                        form method="post" action="/admin/issues/compose" {
                            (csrf_field(session))
                            (field("Subject (empty: from the first headline)", "subject", "text", "", error_for("subject"), false))
                            (field("Title (empty: the newsletter's name and the date)", "title", "text", "", error_for("title"), false))
                            p { button type="submit" { "Compose issue" } }
                        }
                    }
                }
                h2 { "All issues" }
                (issues_table(&issues))
            },
        )),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ComposeForm {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    title: String,
}

async fn compose(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Form(f): Form<ComposeForm>,
) -> AdminResult {
    let nl = s.app.newsletter(None).await?;
    let options = ComposeOptions {
        subject: optional(&f.subject),
        title: optional(&f.title),
        ..ComposeOptions::default()
    };
    use crate::content::ContentError as C;
    match s.app.compose_issue(&nl, options).await {
        Ok(row) => Ok(Redirect::to(&issue_url(&row)).into_response()),
        Err(e @ (C::NotOneLine { field } | C::TooLong { field, .. })) => {
            let message = e.to_string();
            list_page(
                &s,
                &session,
                Some((field, &message)),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e @ (C::NoReadyItems(_) | C::TooManyItems { .. } | C::Clipped(_))) => {
            let message = e.to_string();
            list_page(
                &s,
                &session,
                Some(("items", &message)),
                StatusCode::CONFLICT,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

// --- one issue ----------------------------------------------------------

#[derive(Default)]
struct ShowNotes<'a> {
    notice: Option<&'a str>,
    test_error: Option<&'a str>,
    test_value: &'a str,
    schedule_error: Option<&'a str>,
}

impl<'a> ShowNotes<'a> {
    fn notice(notice: &'a str) -> ShowNotes<'a> {
        ShowNotes {
            notice: Some(notice),
            ..ShowNotes::default()
        }
    }

    /// A form on the page was refused: 422, else 200.
    fn status(&self) -> StatusCode {
        if self.test_error.is_some() || self.schedule_error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        }
    }
}

async fn show(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Path(n): Path<String>,
) -> AdminResult {
    let row = issue(&s, &n).await?;
    show_page(&s, &session, &row, ShowNotes::default()).await
}

async fn show_page(
    s: &WebState,
    session: &AdminSession,
    row: &IssueRow,
    notes: ShowNotes<'_>,
) -> AdminResult {
    let status = notes.status();
    let report = s.app.issue_status(row).await?;
    let rendered = App::rendered(row);
    let text = rendered.personal_text(None, &s.app.links.unsubscribe("preview"));
    let base = issue_url(row);
    let zone = s.app.config.newsletter.timezone;
    let action = |what: &str, label: &str, class: &str| {
        html! {
            form method="post" action={ (base) "/" (what) } {
                (csrf_field(session))
                button type="submit" class=(class) { (label) }
            }
        }
    };
    Ok((
        status,
        page(layout::page(
            &format!("Issue #{}: {}", row.number, row.subject),
            session,
            Section::Issues,
            html! {
                @if let Some(n) = notes.notice {
                    p class="notice" role="status" { (n) }
                }
                p { (status_badge(row.status)) " " (report.summary) }
                @if let Some(reason) = &report.pause_reason {
                    p class="alert" role="alert" { "Paused by Herald: " (reason) }
                }
                div class="actions" {
                    @if matches!(row.status, IssueStatus::Draft | IssueStatus::Scheduled) {
                        a class="button" href={ (base) "/send" } { "Send now…" }
                    }
                    @if row.send_started_at.is_some() {
                        a class="button secondary" href={ (base) "/progress" } { "Progress" }
                    }
                    @if row.status == IssueStatus::Sending { (action("pause", "Pause", "secondary")) }
                    @if row.status == IssueStatus::Paused { (action("resume", "Resume", "")) }
                    @if report.failed() > 0 { (action("retry", "Retry failures", "secondary")) }
                    @if !matches!(row.status, IssueStatus::Sent | IssueStatus::Cancelled) {
                        (action("cancel", "Cancel issue", "danger"))
                    }
                }
                @if row.status == IssueStatus::Draft {
                    section class="card" aria-labelledby="schedule-h" {
                        h2 id="schedule-h" { "Schedule" }
                        form method="post" action={ (base) "/schedule" } {
                            (csrf_field(session))
                            (field(&format!("Send at ({zone})"), "at", "datetime-local", "", notes.schedule_error, true))
                            p { button type="submit" class="secondary" { "Schedule" } }
                        }
                    }
                }
                section class="card" aria-labelledby="test-h" {
                    h2 id="test-h" { "Send a test" }
                    form method="post" action={ (base) "/test" } {
                        (csrf_field(session))
                        (field("To (addresses separated by commas)", "to", "text", notes.test_value, notes.test_error, true))
                        p { button type="submit" class="secondary" { "Send test copies" } }
                    }
                }
                h2 { "Preview" }
                p class="muted" { "Exactly what subscribers receive (with a placeholder unsubscribe link). Subject: " strong { (row.subject) } }
                div class="previews" {
                    figure {
                        figcaption { "Desktop" }
                        iframe class="preview preview-desktop" title="Desktop preview" sandbox="" src={ (base) "/preview.html" } {}
                    }
                    figure {
                        figcaption { "Phone (390 px)" }
                        iframe class="preview preview-phone" title="Phone preview" sandbox="" src={ (base) "/preview.html" } {}
                    }
                }
                h2 { "Text part" }
                pre class="text-part" { (text) }
            },
        )),
    )
        .into_response())
}

/// The email's HTML for the preview iframes: its own CSP (inline styles,
/// remote images, sandboxed, framable only by our own pages).
async fn preview_document(State(s): State<WebState>, Path(n): Path<String>) -> AdminResult {
    let row = issue(&s, &n).await?;
    let html = App::rendered(&row).personal_html(None, &s.app.links.unsubscribe("preview"));
    let mut response = axum::response::Html(html).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'none'; base-uri 'none'; frame-ancestors 'self'",
        ),
    );
    Ok(response)
}

#[derive(Deserialize)]
struct TestForm {
    #[serde(default)]
    to: String,
}

/// The test form's addresses: 1 to [`MAX_TEST_COPIES`], separated by
/// commas, semicolons, spaces or lines; else what the editor should fix.
fn test_addresses(to: &str) -> Result<Vec<EmailAddress>, String> {
    let raw: Vec<&str> = to
        .split([',', ';', '\n', ' '])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if raw.is_empty() || raw.len() > MAX_TEST_COPIES {
        return Err(format!(
            "Give 1 to {MAX_TEST_COPIES} addresses, separated by commas."
        ));
    }
    raw.into_iter()
        .map(|a| parse_email(a).map_err(|e| format!("{a}: {e}")))
        .collect()
}

async fn test_send(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Path(n): Path<String>,
    Form(f): Form<TestForm>,
) -> AdminResult {
    let row = issue(&s, &n).await?;
    let addresses = match test_addresses(&f.to) {
        Ok(addresses) => addresses,
        Err(message) => {
            let notes = ShowNotes {
                test_error: Some(&message),
                test_value: &f.to,
                ..ShowNotes::default()
            };
            return show_page(&s, &session, &row, notes).await;
        }
    };
    let nl = s.app.newsletter(None).await?;
    s.app.send_test_copies(&nl, &row, &addresses).await?;
    let list = addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let notice = format!("Test copies sent to {list}.");
    show_page(&s, &session, &row, ShowNotes::notice(&notice)).await
}

/// The confirmation: how many people will receive it, before anything is queued.
async fn confirm_send(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Path(n): Path<String>,
) -> AdminResult {
    let row = issue(&s, &n).await?;
    let nl = s.app.newsletter(None).await?;
    let confirmed = s
        .app
        .subscription_counts(&nl)
        .await?
        .into_iter()
        .find(|(state, _)| *state == crate::domain::SubscriptionState::Confirmed)
        .map_or(0, |(_, n)| n);
    let base = issue_url(&row);
    Ok(page(layout::page(
        &format!("Send issue #{} now?", row.number),
        &session,
        Section::Issues,
        html! {
            p class="big" data-recipients=(confirmed) { (confirmed) " " @if confirmed == 1 { "person" } @else { "people" } }
            p { "will receive " strong { (row.subject) } " as soon as you confirm: every confirmed subscriber, once (an address unsubscribed or suppressed in the meantime is skipped). This cannot be undone; you can pause or cancel while it is sending." }
            div class="actions" {
                form method="post" action={ (base) "/send" } {
                    (csrf_field(&session))
                    button type="submit" { "Yes, send to " (confirmed) " now" }
                }
                a class="button secondary" href=(base) { "No, go back" }
            }
        },
    )))
}

async fn send(State(s): State<WebState>, Path(n): Path<String>) -> AdminResult {
    let row = issue(&s, &n).await?;
    s.app.send_issue(&row).await?;
    Ok(Redirect::to(&format!("{}/progress", issue_url(&row))).into_response())
}

#[derive(Deserialize)]
struct ScheduleForm {
    #[serde(default)]
    at: String,
}

async fn schedule(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Path(n): Path<String>,
    Form(f): Form<ScheduleForm>,
) -> AdminResult {
    let row = issue(&s, &n).await?;
    let zone: ScheduleTz = s.app.config.newsletter.timezone;
    let wall = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|fmt| chrono::NaiveDateTime::parse_from_str(f.at.trim(), fmt).ok());
    let result = match wall {
        None => Err(format!(
            "{:?} is not a date and time; pick one, e.g. 2026-05-08 09:00",
            f.at
        )),
        Some(wall) => s
            .app
            .send_issue_at(&row, wall, zone, crate::clock::SystemClock.now())
            .await
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(one_off) => {
            let notice = format!(
                "Issue #{} will be sent at {}.",
                row.number,
                when(one_off.send_at)
            );
            let row = issue(&s, &n).await?;
            show_page(&s, &session, &row, ShowNotes::notice(&notice)).await
        }
        Err(message) => {
            show_page(
                &s,
                &session,
                &row,
                ShowNotes {
                    schedule_error: Some(&message),
                    ..ShowNotes::default()
                },
            )
            .await
        }
    }
}

async fn pause(State(s): State<WebState>, Path(n): Path<String>) -> AdminResult {
    let row = issue(&s, &n).await?;
    s.app.pause_issue(&row).await?;
    Ok(Redirect::to(&issue_url(&row)).into_response())
}

async fn resume(State(s): State<WebState>, Path(n): Path<String>) -> AdminResult {
    let row = issue(&s, &n).await?;
    s.app.resume_issue(&row).await?;
    Ok(Redirect::to(&format!("{}/progress", issue_url(&row))).into_response())
}

async fn cancel(State(s): State<WebState>, Path(n): Path<String>) -> AdminResult {
    let row = issue(&s, &n).await?;
    s.app.cancel_issue(&row).await?;
    Ok(Redirect::to(&issue_url(&row)).into_response())
}

async fn retry(State(s): State<WebState>, Path(n): Path<String>) -> AdminResult {
    let row = issue(&s, &n).await?;
    s.app.retry_issue(&row, true).await?;
    Ok(Redirect::to(&format!("{}/progress", issue_url(&row))).into_response())
}

// --- progress -----------------------------------------------------------

/// What the progress view shows, for the page and its JSON twin.
#[derive(Serialize)]
struct Progress {
    total: i64,
    done: i64,
    finished: bool,
    /// Element text by `data-field` name.
    fields: std::collections::BTreeMap<&'static str, String>,
    failures: Vec<String>,
}

async fn progress_of(s: &WebState, row: &IssueRow) -> Result<Progress, AdminFail> {
    let report = s.app.issue_status(row).await?;
    let total = report.counts.total;
    let open = report.counts.open();
    let done = total - open;
    let percent = if total > 0 { done * 100 / total } else { 100 };
    let eta = if open == 0 {
        "done".to_owned()
    } else if report.rate_per_sec > 0.0 {
        let secs = (open as f64 / report.rate_per_sec).ceil() as i64;
        match secs {
            s if s < 90 => format!("about {s} s"),
            s if s < 5400 => format!("about {} min", (s + 59) / 60),
            s => format!("about {:.1} h", s as f64 / 3600.0),
        }
    } else {
        "unknown (nothing sent in the last minute)".to_owned()
    };
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("status", report.status.clone());
    fields.insert("summary", report.summary.clone());
    fields.insert("percent", format!("{percent} %"));
    fields.insert("rate", format!("{:.1}/s", report.rate_per_sec));
    fields.insert("eta", eta);
    fields.insert("total", total.to_string());
    for state in DeliveryState::ALL {
        fields.insert(state.as_str(), report.counts.get(*state).to_string());
    }
    let failures = s
        .app
        .delivery_listing(row, Some(DeliveryState::Failed), 10)
        .await?
        .into_iter()
        .map(|d| {
            let reply = d
                .delivery
                .last_reply
                .or(d.delivery.failure_reason)
                .unwrap_or_default();
            format!("{}: {reply}", d.delivery.email)
        })
        .collect();
    let status: IssueStatus = report.status.parse().unwrap_or(IssueStatus::Sending);
    Ok(Progress {
        total,
        done,
        finished: open == 0 || !matches!(status, IssueStatus::Sending),
        fields,
        failures,
    })
}

async fn progress(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Path(n): Path<String>,
) -> AdminResult {
    let row = issue(&s, &n).await?;
    let p = progress_of(&s, &row).await?;
    let base = issue_url(&row);
    let f = |k: &str| p.fields.get(k).cloned().unwrap_or_default();
    // Without script, the page reloads itself while the issue is sending.
    let refresh = if p.finished {
        html! {}
    } else {
        html! { noscript { meta http-equiv="refresh" content="5"; } }
    };
    Ok(page(layout::page_with_head(
        &format!("Sending issue #{}", row.number),
        &session,
        Section::Issues,
        refresh,
        html! {
            div data-progress-url={ (base) "/progress.json" } {
                p { span class="status" data-field="status" { (f("status")) } " " span data-field="summary" { (f("summary")) } }
                p class="big" data-field="percent" aria-live="polite" { (f("percent")) }
                progress max=(p.total.max(1)) value=(p.done) aria-label="Delivered or finished" { (f("percent")) }
                div class="grid" {
                    div class="card" { div class="muted" { "Rate" } div class="big" data-field="rate" { (f("rate")) } }
                    div class="card" { div class="muted" { "Time left" } div data-field="eta" { (f("eta")) } }
                }
                div class="table-wrap" {
                    table {
                        thead { tr { @for state in DeliveryState::ALL { th class="num" scope="col" { (state.as_str().replace('_', " ")) } } th class="num" scope="col" { "total" } } }
                        tbody { tr {
                            @for state in DeliveryState::ALL { td class="num" data-field=(state.as_str()) { (f(state.as_str())) } }
                            td class="num" data-field="total" { (f("total")) }
                        } }
                    }
                }
                h2 { "Latest failures" }
                ul data-failures {
                    @for failure in &p.failures { li { (failure) } }
                }
            }
            p { a href={ (base) "/progress" } { "Refresh" } " · " a href=(base) { "Back to the issue" } }
        },
    )))
}

async fn progress_json(State(s): State<WebState>, Path(n): Path<String>) -> AdminResult {
    let row = issue(&s, &n).await?;
    Ok(Json(progress_of(&s, &row).await?).into_response())
}

//! `/api/v1/issues`: compose, list, show, preview, test copies, send now,
//! pause, resume, cancel, retry, progress. An issue is named by its number
//! or its slug, like on the command line.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::NewsletterQuery;
use super::body::ApiJson;
use super::problem::{ApiError, FieldError, Problem};
use crate::app::App;
use crate::content::ComposeOptions;
use crate::domain::DeliveryState;
use crate::store::content::IssueRow;
use crate::subscribers::parse_email;
use crate::web::WebState;

/// An issue: rendered once when composed, then frozen.
#[derive(Debug, Serialize, ToSchema)]
pub struct Issue {
    pub id: i64,
    pub number: i64,
    pub slug: String,
    pub title: String,
    pub subject: String,
    pub preheader: String,
    /// Markdown.
    pub intro: String,
    /// `draft`, `scheduled`, `sending`, `paused`, `sent` or `cancelled`.
    pub status: String,
    /// Why delivery paused the issue by itself (a relay that refuses the login, a message the
    /// relay refuses, a run of policy refusals, an unreachable relay), with what to do; null
    /// unless the issue is paused, and when an editor paused it.
    pub pause_reason: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub send_started_at: Option<String>,
    pub completed_at: Option<String>,
    /// The public web version.
    pub web_url: String,
    pub html_bytes: usize,
    pub text_bytes: usize,
}

impl Issue {
    pub(super) fn new(app: &App, r: &IssueRow) -> Issue {
        Issue {
            id: r.id,
            number: r.number,
            slug: r.slug.clone(),
            title: r.title.clone(),
            subject: r.subject.clone(),
            preheader: r.preheader.clone(),
            intro: r.intro.clone(),
            status: r.status.to_string(),
            pause_reason: r.pause_reason.clone(),
            created_at: super::rfc3339(r.created_at),
            send_started_at: r.send_started_at.map(super::rfc3339),
            completed_at: r.completed_at.map(super::rfc3339),
            web_url: app.links.archive_issue(&r.slug),
            html_bytes: r.html.len(),
            text_bytes: r.text_body.len(),
        }
    }
}

/// One issue with the items it froze.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssueDetail {
    #[serde(flatten)]
    pub issue: Issue,
    pub items: Vec<super::items::Item>,
}

/// An issue in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssueSummary {
    pub id: i64,
    pub number: i64,
    pub slug: String,
    pub title: String,
    pub subject: String,
    pub status: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub send_started_at: Option<String>,
    pub completed_at: Option<String>,
}

impl From<&crate::store::content::IssueSummary> for IssueSummary {
    fn from(r: &crate::store::content::IssueSummary) -> IssueSummary {
        IssueSummary {
            id: r.id,
            number: r.number,
            slug: r.slug.clone(),
            title: r.title.clone(),
            subject: r.subject.clone(),
            status: r.status.to_string(),
            created_at: super::rfc3339(r.created_at),
            send_started_at: r.send_started_at.map(super::rfc3339),
            completed_at: r.completed_at.map(super::rfc3339),
        }
    }
}

/// A page of issues, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuePage {
    pub issues: Vec<IssueSummary>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IssueListQuery {
    /// Newsletter slug; default: the configured newsletter.
    pub newsletter: Option<String>,
    /// Only issues with a number below this (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<usize>,
}

/// Compose options; whatever is absent comes from the last imported
/// digest file's header, then from the newsletter's defaults.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComposeRequest {
    pub subject: Option<String>,
    pub title: Option<String>,
    pub preheader: Option<String>,
    /// Markdown.
    pub intro: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// `html` (default), `text` or `eml` (the whole message, as a subscriber would get it).
    pub format: Option<String>,
    /// Newsletter slug; default: the configured newsletter.
    pub newsletter: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSendRequest {
    /// Addresses that get a "[TEST]" copy (1 to 20).
    pub to: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestSendResult {
    pub sent_to: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SendResult {
    pub number: i64,
    /// Recipients queued by this request (0 when a retry found them queued).
    pub queued: u64,
    /// Deliveries of the issue in all.
    pub total: i64,
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeResult {
    pub number: i64,
    pub status: String,
    /// Deliveries this action touched (cancelled or queued again).
    pub deliveries: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetryQuery {
    /// Also queue permanent failures again (after fixing, say, a relay password).
    #[serde(default)]
    pub failed: bool,
    /// Newsletter slug; default: the configured newsletter.
    pub newsletter: Option<String>,
}

/// Where an issue's delivery stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    pub number: i64,
    pub slug: String,
    pub status: String,
    /// What happened in words, e.g. `finished: 48 sent, 2 failed`.
    pub summary: String,
    /// Why delivery paused the issue by itself, with what to do; null otherwise.
    pub pause_reason: Option<String>,
    /// Deliveries by state (`queued`, `sending`, `sent`, `retry_wait`, `failed`, …).
    pub counts: BTreeMap<String, i64>,
    pub total: i64,
    /// Messages per second over the last minute.
    pub rate_per_sec: f64,
    pub next_retry_at: Option<String>,
    pub top_replies: Vec<ReplyCount>,
    /// Deliveries reported failed after the relay accepted them (`bounced`).
    pub bounced_after_delivery: i64,
    /// Readers who complained about this issue.
    pub complaints: i64,
    /// complaints / delivered (`sent`); keep it under 0.001 (Gmail's guidance).
    pub complaint_rate: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplyCount {
    pub state: String,
    pub reply: String,
    pub count: i64,
}

async fn find(s: &WebState, newsletter: Option<&str>, issue: &str) -> Result<IssueRow, ApiError> {
    let nl = s.app.newsletter(newsletter).await?;
    Ok(s.app.find_issue(&nl, issue).await?)
}

/// List issues, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/issues",
    tag = "issues",
    params(IssueListQuery),
    responses(
        (status = 200, body = IssuePage),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(s): State<WebState>,
    Query(q): Query<IssueListQuery>,
) -> Result<Json<IssuePage>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit {limit} is out of range: use 1 to 100"),
        ));
    }
    let nl = s.app.newsletter(q.newsletter.as_deref()).await?;
    // A weekly newsletter has tens of issues, not millions: the rows are
    // read whole and paged by number.
    let rows = s.app.list_issues(&nl).await?;
    let mut rows: Vec<_> = rows
        .into_iter()
        .filter(|r| q.before.is_none_or(|b| r.number < b))
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.number));
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_before = more.then(|| rows.last().map(|r| r.number)).flatten();
    Ok(Json(IssuePage {
        issues: rows.iter().map(IssueSummary::from).collect(),
        next_before,
    }))
}

/// Compose the next issue from every ready item.
#[utoipa::path(
    post,
    path = "/issues",
    tag = "issues",
    params(NewsletterQuery),
    request_body = ComposeRequest,
    responses(
        (status = 201, body = Issue),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No items are ready, or too many", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn compose(
    State(s): State<WebState>,
    Query(q): Query<NewsletterQuery>,
    ApiJson(c): ApiJson<ComposeRequest>,
) -> Result<Response, ApiError> {
    let nl = s.app.newsletter(q.newsletter.as_deref()).await?;
    let issue = s
        .app
        .compose_issue(
            &nl,
            ComposeOptions {
                title: c.title,
                subject: c.subject,
                preheader: c.preheader,
                intro: c.intro,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(Issue::new(&s.app, &issue))).into_response())
}

/// Show an issue with its items.
#[utoipa::path(
    get,
    path = "/issues/{issue}",
    tag = "issues",
    params(("issue" = String, Path, description = "Issue number or slug"), NewsletterQuery),
    responses(
        (status = 200, body = IssueDetail),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn show(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<NewsletterQuery>,
) -> Result<Json<IssueDetail>, ApiError> {
    let row = find(&s, q.newsletter.as_deref(), &issue).await?;
    let items = s.app.items_of_issue(&row).await?;
    Ok(Json(IssueDetail {
        issue: Issue::new(&s.app, &row),
        items: items.into_iter().map(Into::into).collect(),
    }))
}

/// Exactly what a subscriber would receive (placeholder recipient).
#[utoipa::path(
    get,
    path = "/issues/{issue}/preview",
    tag = "issues",
    params(("issue" = String, Path, description = "Issue number or slug"), PreviewQuery),
    responses(
        (status = 200, description = "The HTML, the plain text, or the whole message", content(
            (String = "text/html"),
            (String = "text/plain"),
            (String = "message/rfc822"),
        )),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn preview(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<PreviewQuery>,
) -> Result<Response, ApiError> {
    let (nl, row) = super::newsletter_issue(&s, q.newsletter.as_deref(), &issue).await?;
    let rendered = App::rendered(&row);
    let unsubscribe = s.app.links.unsubscribe("preview");
    let (content_type, body) = match q.format.as_deref().unwrap_or("html") {
        "html" => (
            "text/html; charset=utf-8",
            rendered.personal_html(None, &unsubscribe).into_bytes(),
        ),
        "text" => (
            "text/plain; charset=utf-8",
            rendered.personal_text(None, &unsubscribe).into_bytes(),
        ),
        "eml" => (
            "message/rfc822",
            s.app
                .sample_message(&nl, &row, "subscriber@example.com", false)?,
        ),
        other => {
            return Err(ApiError::invalid(
                "format",
                format!("{other:?} is not a preview format: use html, text or eml"),
            ));
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The email's HTML, shown on our origin: inline styles and remote
    // images as in the archive, no script, and a sandbox so it is never
    // same-origin with the API even if it were opened directly.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    Ok(response)
}

/// Send "[TEST]" copies; the list and the issue's state are untouched.
#[utoipa::path(
    post,
    path = "/issues/{issue}/test",
    tag = "issues",
    params(("issue" = String, Path, description = "Issue number or slug"), NewsletterQuery),
    request_body = TestSendRequest,
    responses(
        (status = 200, body = TestSendResult),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The mail relay refused or was unreachable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn test_send(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<NewsletterQuery>,
    ApiJson(body): ApiJson<TestSendRequest>,
) -> Result<Json<TestSendResult>, ApiError> {
    const MAX_TEST_COPIES: usize = 20;
    if body.to.is_empty() || body.to.len() > MAX_TEST_COPIES {
        return Err(ApiError::invalid(
            "to",
            format!("give 1 to {MAX_TEST_COPIES} addresses"),
        ));
    }
    let mut addresses = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in body.to.iter().enumerate() {
        match parse_email(raw) {
            Ok(a) => addresses.push(a),
            Err(e) => errors.push(FieldError::new(format!("to[{i}]"), e.to_string())),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let (nl, row) = super::newsletter_issue(&s, q.newsletter.as_deref(), &issue).await?;
    s.app.send_test_copies(&nl, &row, &addresses).await?;
    Ok(Json(TestSendResult {
        sent_to: addresses.iter().map(ToString::to_string).collect(),
    }))
}

/// Send now: queue every confirmed subscriber (each once, however often
/// this is called); `herald serve`'s workers deliver. Send it with an
/// `Idempotency-Key` to retry safely.
#[utoipa::path(
    post,
    path = "/issues/{issue}/send",
    tag = "issues",
    params(
        ("issue" = String, Path, description = "Issue number or slug"),
        NewsletterQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retry"),
    ),
    responses(
        (status = 202, body = SendResult),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The issue is cancelled or paused", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The Idempotency-Key was used for another request", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn send(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<NewsletterQuery>,
) -> Result<Response, ApiError> {
    let row = find(&s, q.newsletter.as_deref(), &issue).await?;
    let queued = s.app.send_issue(&row).await?;
    let progress = s.app.issue_status(&row).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SendResult {
            number: row.number,
            queued,
            total: progress.counts.total,
            status: progress.status,
        }),
    )
        .into_response())
}

async fn changed(
    s: &WebState,
    row: &IssueRow,
    deliveries: Option<u64>,
) -> Result<Json<ChangeResult>, ApiError> {
    let progress = s.app.issue_status(row).await?;
    Ok(Json(ChangeResult {
        number: row.number,
        status: progress.status,
        deliveries,
    }))
}

/// Pause: messages in flight finish, nothing more is handed to SMTP.
#[utoipa::path(
    post,
    path = "/issues/{issue}/pause",
    tag = "issues",
    params(("issue" = String, Path, description = "Issue number or slug"), NewsletterQuery),
    responses(
        (status = 200, body = ChangeResult),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Only a sending issue can be paused", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn pause(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<NewsletterQuery>,
) -> Result<Json<ChangeResult>, ApiError> {
    let row = find(&s, q.newsletter.as_deref(), &issue).await?;
    s.app.pause_issue(&row).await?;
    changed(&s, &row, None).await
}

/// Resume a paused issue where it stopped.
#[utoipa::path(
    post,
    path = "/issues/{issue}/resume",
    tag = "issues",
    params(("issue" = String, Path, description = "Issue number or slug"), NewsletterQuery),
    responses(
        (status = 200, body = ChangeResult),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Only a paused issue can be resumed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn resume(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<NewsletterQuery>,
) -> Result<Json<ChangeResult>, ApiError> {
    let row = find(&s, q.newsletter.as_deref(), &issue).await?;
    s.app.resume_issue(&row).await?;
    changed(&s, &row, None).await
}

/// Cancel for good: nothing more is sent.
#[utoipa::path(
    post,
    path = "/issues/{issue}/cancel",
    tag = "issues",
    params(("issue" = String, Path, description = "Issue number or slug"), NewsletterQuery),
    responses(
        (status = 200, body = ChangeResult),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already sent or cancelled", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<NewsletterQuery>,
) -> Result<Json<ChangeResult>, ApiError> {
    let row = find(&s, q.newsletter.as_deref(), &issue).await?;
    let n = s.app.cancel_issue(&row).await?;
    changed(&s, &row, Some(n)).await
}

/// Retry waiting deliveries now; with `failed=true`, permanent failures too.
#[utoipa::path(
    post,
    path = "/issues/{issue}/retry",
    tag = "issues",
    params(("issue" = String, Path, description = "Issue number or slug"), RetryQuery),
    responses(
        (status = 200, body = ChangeResult),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The issue is cancelled", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn retry(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<RetryQuery>,
) -> Result<Json<ChangeResult>, ApiError> {
    let row = find(&s, q.newsletter.as_deref(), &issue).await?;
    let n = s.app.retry_issue(&row, q.failed).await?;
    changed(&s, &row, Some(n)).await
}

/// Delivery progress: counts by state, rate, next retry, common failures.
#[utoipa::path(
    get,
    path = "/issues/{issue}/progress",
    tag = "issues",
    params(("issue" = String, Path, description = "Issue number or slug"), NewsletterQuery),
    responses(
        (status = 200, body = Progress),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn progress(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<NewsletterQuery>,
) -> Result<Json<Progress>, ApiError> {
    let row = find(&s, q.newsletter.as_deref(), &issue).await?;
    let report = s.app.issue_status(&row).await?;
    Ok(Json(Progress {
        number: report.number,
        slug: report.slug,
        status: report.status,
        summary: report.summary,
        pause_reason: report.pause_reason,
        counts: DeliveryState::ALL
            .iter()
            .map(|st| (st.to_string(), report.counts.get(*st)))
            .collect(),
        total: report.counts.total,
        rate_per_sec: report.rate_per_sec,
        next_retry_at: report.next_retry_at.map(super::rfc3339),
        bounced_after_delivery: report.bounced_after_delivery,
        complaints: report.complaints,
        complaint_rate: report.complaint_rate,
        top_replies: report
            .top_replies
            .into_iter()
            .map(|(state, reply, count)| ReplyCount {
                state: state.to_string(),
                reply,
                count,
            })
            .collect(),
    }))
}

//! `/api/v1/subscribers`: list (keyset cursor), add, CSV import (streamed
//! into the importer) and export (streamed from the store page by page),
//! show, unsubscribe, erase. A subscriber is named by address, in any
//! spelling (`Ann@Example.com` is `ann@example.com`).

use std::io::Write;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::NewsletterQuery;
use super::body::ApiJson;
use super::problem::{ApiError, Problem};
use crate::domain::{EmailAddress, SubscriptionState};
use crate::editors::Editor;
use crate::store::subscribers::ListedSubscriber;
use crate::subscribers::import::{ImportError, ImportOptions, ImportReport};
use crate::subscribers::{SubscribeOutcome, UnsubscribeOutcome, clean_name, parse_email};
use crate::web::WebState;
use crate::web::error::content_type;

/// A subscriber of one newsletter, as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriberEntry {
    /// The cursor for `after`.
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    /// `pending`, `confirmed`, `unsubscribed`, `bounced` or `complained`.
    pub state: String,
    /// Extra CSV columns kept at import.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub confirmed_at: Option<String>,
    pub unsubscribed_at: Option<String>,
}

fn attributes(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

impl From<ListedSubscriber> for SubscriberEntry {
    fn from(s: ListedSubscriber) -> SubscriberEntry {
        SubscriberEntry {
            id: s.id,
            attributes: attributes(&s.attributes),
            email: s.email,
            name: s.name,
            state: s.state.to_string(),
            created_at: super::rfc3339(s.created_at),
            confirmed_at: s.confirmed_at.map(super::rfc3339),
            unsubscribed_at: s.unsubscribed_at.map(super::rfc3339),
        }
    }
}

/// A page of subscribers, by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriberPage {
    pub subscribers: Vec<SubscriberEntry>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Newsletter slug; default: the configured newsletter.
    pub newsletter: Option<String>,
    /// Only subscribers in this state.
    pub state: Option<String>,
    /// The previous page's `next_after` (default: from the start).
    pub after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Newsletter slug; default: the configured newsletter.
    pub newsletter: Option<String>,
    /// Only subscribers in this state.
    pub state: Option<String>,
    /// Every cell exactly as stored (no formula neutralising), for programs.
    #[serde(default)]
    pub raw: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Newsletter slug; default: the configured newsletter.
    pub newsletter: Option<String>,
    /// The subscribers already consented elsewhere: no confirmation mail.
    #[serde(default)]
    pub confirmed: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscriber {
    pub email: String,
    pub name: Option<String>,
    /// Already consented elsewhere: skip double opt-in (refused for an
    /// address that unsubscribed or is suppressed).
    #[serde(default)]
    pub confirmed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AddResult {
    pub email: String,
    /// `confirmation_sent`, `already_confirmed`, `confirmed` or `recently_asked`
    /// (a confirmation mail went out lately; none is sent again yet).
    pub outcome: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    pub imported: u64,
    pub updated: u64,
    pub invalid: u64,
    pub suppressed: u64,
    pub duplicate: u64,
    pub confirmations_sent: u64,
    /// The rows that were refused, in file order (the first 1,000).
    pub rejected: Vec<RejectedRow>,
    /// Refused rows beyond those listed.
    pub rejected_not_listed: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedRow {
    pub line: u64,
    pub email: String,
    pub reason: String,
}

/// Everything Herald knows about one reader.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriberProfile {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    pub created_at: String,
    /// On the suppression list (hard bounce, complaint, erasure).
    pub suppressed: bool,
    pub subscriptions: Vec<SubscriptionView>,
    /// Append-only, oldest first.
    pub consent_history: Vec<ConsentEvent>,
    /// The most recent deliveries (at most 100), newest first.
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub newsletter: String,
    pub state: String,
    pub created_at: String,
    pub confirmed_at: Option<String>,
    pub unsubscribed_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentEvent {
    pub kind: String,
    pub at: String,
    pub newsletter_id: i64,
    pub source: String,
    pub method: Option<String>,
    pub consent_text_version: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub issue_number: i64,
    pub state: String,
    pub attempts: i64,
    pub last_reply: Option<String>,
    pub sent_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnsubscribeResult {
    pub email: String,
    /// `unsubscribed`, `already_unsubscribed`.
    pub outcome: String,
}

fn parse_state(state: Option<&str>) -> Result<Option<SubscriptionState>, ApiError> {
    state
        .map(|s| {
            s.parse::<SubscriptionState>().map_err(|_| {
                ApiError::invalid(
                    "state",
                    format!("{s:?} is not a subscription state: use pending, confirmed, unsubscribed, bounced or complained"),
                )
            })
        })
        .transpose()
}

/// Who made a change, for the consent history.
fn source(editor: &Editor) -> String {
    format!("api:{}", editor.email)
}

fn address(raw: &str) -> Result<EmailAddress, ApiError> {
    Ok(parse_email(raw)?)
}

/// List subscribers a page at a time (keyset on id).
#[utoipa::path(
    get,
    path = "/subscribers",
    tag = "subscribers",
    params(ListQuery),
    responses(
        (status = 200, body = SubscriberPage),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such newsletter", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(s): State<WebState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<SubscriberPage>, ApiError> {
    let state = parse_state(q.state.as_deref())?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit {limit} is out of range: use 1 to 1000"),
        ));
    }
    let nl = s.app.newsletter(q.newsletter.as_deref()).await?;
    let rows = s
        .app
        .subscribers_page(&nl, state, q.after.unwrap_or(0), limit)
        .await?;
    let next_after = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(SubscriberPage {
        subscribers: rows.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

/// Add one subscriber; without `confirmed` a confirmation mail is sent.
#[utoipa::path(
    post,
    path = "/subscribers",
    tag = "subscribers",
    params(NewsletterQuery),
    request_body = NewSubscriber,
    responses(
        (status = 201, description = "Added (pending until confirmed, or confirmed)", body = AddResult),
        (status = 200, description = "Already a subscriber, or asked recently", body = AddResult),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`confirmed` for an address that unsubscribed or is suppressed", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The confirmation mail could not be sent", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn add(
    State(s): State<WebState>,
    Extension(editor): Extension<Editor>,
    Query(q): Query<NewsletterQuery>,
    ApiJson(new): ApiJson<NewSubscriber>,
) -> Result<Response, ApiError> {
    let email = address(&new.email)?;
    let name = clean_name(new.name.as_deref())?;
    let nl = s.app.newsletter(q.newsletter.as_deref()).await?;
    let (status, outcome) = match s
        .app
        .add_subscriber_from(&email, name, &nl, new.confirmed, &source(&editor))
        .await?
    {
        SubscribeOutcome::ConfirmationSent(mail) => {
            if !s.app.send_confirmation(&mail).await {
                return Err(ApiError::BadGateway(format!(
                    "{email} was added as pending, but the confirmation mail could not be sent via {}; see the server log, then add the address again",
                    s.app.mailer.describe()
                )));
            }
            (StatusCode::CREATED, "confirmation_sent")
        }
        SubscribeOutcome::AlreadyConfirmed if new.confirmed => (StatusCode::CREATED, "confirmed"),
        SubscribeOutcome::AlreadyConfirmed => (StatusCode::OK, "already_confirmed"),
        SubscribeOutcome::RateLimited => (StatusCode::OK, "recently_asked"),
    };
    Ok((
        status,
        Json(AddResult {
            email: email.to_string(),
            outcome: outcome.to_owned(),
        }),
    )
        .into_response())
}

/// Import a CSV upload (header row with an `email` column), streamed: an
/// upload of any size is read and written in chunks. Invalid rows are
/// reported, not fatal; import never resubscribes anyone.
#[utoipa::path(
    post,
    path = "/subscribers/import",
    tag = "subscribers",
    params(ImportQuery),
    request_body(content = String, content_type = "text/csv", description = "CSV with a header row"),
    responses(
        (status = 200, body = ImportResult),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "The upload was cut off", body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a subscriber CSV (no header, no email column)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn import(
    State(s): State<WebState>,
    Query(q): Query<ImportQuery>,
    req: Request,
) -> Result<Json<ImportResult>, ApiError> {
    let media = content_type(req.headers());
    if !media
        .as_deref()
        .is_some_and(|m| matches!(m, "text/csv" | "application/csv" | "text/plain"))
    {
        return Err(ApiError::UnsupportedMediaType {
            expected: "text/csv",
            got: media.unwrap_or_else(|| "no Content-Type".into()),
        });
    }
    let nl = s.app.newsletter(q.newsletter.as_deref()).await?;
    let stream = req
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    let input = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let mut rejects = RejectSink::default();
    let progress = |_: u64, _: &ImportReport| {};
    let report = s
        .app
        .import_subscribers_from(
            "the upload".into(),
            "import:api".into(),
            input,
            ImportOptions {
                confirmed: q.confirmed,
                newsletter: &nl,
                progress: &progress,
            },
            &mut rejects,
        )
        .await
        .map_err(|e| match e {
            ImportError::Subscriber(e) => ApiError::from(e),
            ImportError::Store(e) => ApiError::from(e),
            ImportError::Open { .. } | ImportError::Read { .. } => {
                ApiError::Web(crate::web::error::WebError::BadRequest {
                    code: "upload_cut_off",
                    message: format!(
                        "{e}; rows before that point were imported, importing again is safe"
                    ),
                })
            }
            other => ApiError::invalid("body", other.to_string()),
        })?;
    let (rejected, rejected_not_listed) = rejects.rows();
    Ok(Json(ImportResult {
        imported: report.imported,
        updated: report.updated,
        invalid: report.invalid,
        suppressed: report.suppressed,
        duplicate: report.duplicate,
        confirmations_sent: report.confirmations_sent,
        rejected,
        rejected_not_listed,
    }))
}

/// The importer writes one CSV line `line,email,reason` per refused row;
/// the first [`RejectSink::MAX_LINES`] are kept for the answer, the rest
/// only counted, so a file of garbage cannot fill memory.
#[derive(Default)]
struct RejectSink {
    kept: Vec<u8>,
    lines: u64,
    not_listed: u64,
}

impl RejectSink {
    const MAX_LINES: u64 = 1000;

    fn rows(self) -> (Vec<RejectedRow>, u64) {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(self.kept.as_slice());
        let rows = reader
            .records()
            .filter_map(Result::ok)
            .map(|r| RejectedRow {
                line: r.get(0).and_then(|l| l.parse().ok()).unwrap_or(0),
                email: r.get(1).unwrap_or("").to_owned(),
                reason: r.get(2).unwrap_or("").to_owned(),
            })
            .collect();
        (rows, self.not_listed)
    }
}

impl Write for RejectSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if self.lines < Self::MAX_LINES {
                self.kept.push(b);
            }
            if b == b'\n' {
                if self.lines >= Self::MAX_LINES {
                    self.not_listed += 1;
                }
                self.lines += 1;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Export as CSV, streamed page by page (constant memory at any size).
/// Cells a spreadsheet would run as formulas get a leading `'` unless `raw`.
#[utoipa::path(
    get,
    path = "/subscribers/export",
    tag = "subscribers",
    params(ExportQuery),
    responses(
        (status = 200, description = "CSV: email,name,state,created_at,confirmed_at,unsubscribed_at,attributes", content_type = "text/csv", body = String),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such newsletter", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn export(
    State(s): State<WebState>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let state = parse_state(q.state.as_deref())?;
    let nl = s.app.newsletter(q.newsletter.as_deref()).await?;
    let stream = s
        .app
        .export_subscribers_csv(&nl, state, q.raw)
        .map_err(|e| {
            // The status line is gone already: the client sees a cut-off
            // body (no final chunk), and the cause is in the log.
            tracing::error!(error = %e, "subscriber export failed mid-stream");
            std::io::Error::other(e.to_string())
        });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}-subscribers.csv\"",
        nl.slug
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// One reader: subscriptions, consent history, recent deliveries.
#[utoipa::path(
    get,
    path = "/subscribers/{email}",
    tag = "subscribers",
    params(("email" = String, Path, description = "The address, any spelling")),
    responses(
        (status = 200, body = SubscriberProfile),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn show(
    State(s): State<WebState>,
    Path(email): Path<String>,
) -> Result<Json<SubscriberProfile>, ApiError> {
    let email = address(&email)?;
    let profile = s
        .app
        .subscriber_profile(&email)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no subscriber with address {email}")))?;
    let deliveries = s
        .app
        .subscriber_deliveries(&profile.subscriber, 100)
        .await?;
    let sub = profile.subscriber;
    Ok(Json(SubscriberProfile {
        id: sub.id,
        attributes: attributes(&sub.attributes),
        email: sub.email,
        name: sub.name,
        created_at: super::rfc3339(sub.created_at),
        suppressed: profile.suppressed,
        subscriptions: profile
            .subscriptions
            .into_iter()
            .map(|(slug, r)| SubscriptionView {
                newsletter: slug,
                state: r.state.to_string(),
                created_at: super::rfc3339(r.created_at),
                confirmed_at: r.confirmed_at.map(super::rfc3339),
                unsubscribed_at: r.unsubscribed_at.map(super::rfc3339),
            })
            .collect(),
        consent_history: profile
            .consent_history
            .into_iter()
            .map(|e| ConsentEvent {
                kind: e.kind.to_string(),
                at: super::rfc3339(e.at),
                newsletter_id: e.newsletter_id,
                source: e.source,
                method: e.method,
                consent_text_version: e.consent_text_version,
                ip: e.ip,
                user_agent: e.user_agent,
            })
            .collect(),
        deliveries: deliveries
            .into_iter()
            .map(|d| DeliveryView {
                issue_number: d.issue_number,
                state: d.state.to_string(),
                attempts: d.attempts,
                last_reply: d.last_reply,
                sent_at: d.sent_at.map(super::rfc3339),
            })
            .collect(),
    }))
}

/// Unsubscribe an address (the record and its history stay).
#[utoipa::path(
    post,
    path = "/subscribers/{email}/unsubscribe",
    tag = "subscribers",
    params(("email" = String, Path, description = "The address, any spelling"), NewsletterQuery),
    responses(
        (status = 200, body = UnsubscribeResult),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn unsubscribe(
    State(s): State<WebState>,
    Extension(editor): Extension<Editor>,
    Path(email): Path<String>,
    Query(q): Query<NewsletterQuery>,
) -> Result<Json<UnsubscribeResult>, ApiError> {
    let email = address(&email)?;
    let nl = s.app.newsletter(q.newsletter.as_deref()).await?;
    let outcome = match s
        .app
        .remove_subscriber_from(&email, &nl, &source(&editor))
        .await?
    {
        UnsubscribeOutcome::Unsubscribed { .. } => "unsubscribed",
        UnsubscribeOutcome::AlreadyUnsubscribed { .. } => "already_unsubscribed",
        UnsubscribeOutcome::Gone => {
            return Err(ApiError::NotFound(format!(
                "{email} is not subscribed to {}",
                nl.slug
            )));
        }
    };
    Ok(Json(UnsubscribeResult {
        email: email.to_string(),
        outcome: outcome.to_owned(),
    }))
}

/// GDPR erasure: personal data deleted, only a hashed suppression kept.
#[utoipa::path(
    delete,
    path = "/subscribers/{email}",
    tag = "subscribers",
    params(("email" = String, Path, description = "The address, any spelling")),
    responses(
        (status = 204, description = "Erased"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn erase(
    State(s): State<WebState>,
    Path(email): Path<String>,
) -> Result<StatusCode, ApiError> {
    let email = address(&email)?;
    s.app.erase_subscriber(&email).await?;
    Ok(StatusCode::NO_CONTENT)
}

//! `/api/v1/schedule` and the scheduling actions on an issue: send at a
//! time (`/issues/{issue}/send-at`), and hold, release, recompose or cancel
//! what is scheduled (`/issues/{issue}/schedule/…`). Thin over the
//! scheduler's services (`schedule::service`), read with the same clock the
//! CLI uses.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::NewsletterQuery;
use super::body::ApiJson;
use super::issues::Issue;
use super::problem::{ApiError, Problem};
use crate::clock::{Clock, SystemClock};
use crate::schedule::spec::ScheduleTz;
use crate::schedule::{ScheduleError, Unscheduled};
use crate::store::schedule::{OneOffRow, RunHistoryRow, RunRow};
use crate::web::WebState;

/// The same bounds as `herald schedule show --next/--history`.
const MAX_NEXT: usize = 100;
const MAX_HISTORY: i64 = 1000;

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::NotScheduled { .. }
            | ScheduleError::NotDraft { .. }
            | ScheduleError::NoSchedule(_)
            | ScheduleError::SlotTaken { .. }
            | ScheduleError::NotSkipped(_) => ApiError::Conflict(e.to_string()),
            ScheduleError::BadTime(_) | ScheduleError::NotASlot { .. } => {
                ApiError::invalid("at", e.to_string())
            }
            ScheduleError::Store(e) => e.into(),
            ScheduleError::Content(e) => e.into(),
            ScheduleError::Control(e) => e.into(),
            ScheduleError::GaveUp(_) => ApiError::internal(e),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScheduleQuery {
    /// Newsletter slug; default: the configured newsletter.
    pub newsletter: Option<String>,
    /// Coming slots to list, 1 to 100 (default 5).
    pub next: Option<usize>,
    /// Past slots to list, newest first, 1 to 1000 (default 20).
    pub history: Option<i64>,
}

/// The newsletter's schedule: its rule, coming slots, one-off sends
/// waiting, and what happened at past slots.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub newsletter: String,
    /// Absent: the newsletter has no schedule (one-off sends still work).
    pub schedule: Option<ScheduleRule>,
    pub next: Vec<Slot>,
    pub one_offs: Vec<OneOff>,
    /// Newest slot first.
    pub history: Vec<Run>,
}

/// The configured rule (`newsletter.schedule` and friends).
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleRule {
    /// Cron expression, read in `timezone`.
    pub expression: String,
    /// IANA zone.
    pub timezone: String,
    /// `skip` or `send_anyway` when no items are ready.
    pub on_empty: String,
    /// Human durations, e.g. `2h`.
    pub catch_up: String,
    pub jitter: String,
    pub preview_before: String,
    pub preview_to: Vec<String>,
}

/// A coming slot, in the newsletter's zone and in UTC.
#[derive(Debug, Serialize, ToSchema)]
pub struct Slot {
    /// RFC 3339 with the zone's offset.
    pub local: String,
    /// RFC 3339, UTC.
    pub utc: String,
    /// Skipped ahead of time by an editor: nothing is composed or sent.
    pub skipped: bool,
}

impl From<&crate::schedule::NextSlot> for Slot {
    fn from(n: &crate::schedule::NextSlot) -> Slot {
        Slot {
            local: n.local.clone(),
            utc: n.utc.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            skipped: n.skipped,
        }
    }
}

/// A one-off send (`send-at`).
#[derive(Debug, Serialize, ToSchema)]
pub struct OneOff {
    pub number: i64,
    pub slug: String,
    /// RFC 3339, UTC.
    pub send_at: String,
    /// RFC 3339 with the offset of `timezone`.
    pub send_at_local: String,
    /// The zone the time was given in.
    pub timezone: String,
    /// `waiting` until `herald serve` sends it.
    pub state: String,
}

impl From<&OneOffRow> for OneOff {
    fn from(r: &OneOffRow) -> OneOff {
        let at = crate::domain::ms_to_datetime(r.send_at);
        // Stored from a parsed zone; should it not parse, UTC still names
        // the instant correctly.
        let zone = r.timezone.parse::<ScheduleTz>().unwrap_or_default();
        OneOff {
            number: r.issue_number,
            slug: r.issue_slug.clone(),
            send_at: super::rfc3339(r.send_at),
            send_at_local: local(at, zone),
            timezone: r.timezone.clone(),
            state: r.state.to_string(),
        }
    }
}

/// One slot of the schedule and what became of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Run {
    /// RFC 3339, UTC: the slot, without jitter.
    pub slot_at: String,
    /// RFC 3339, UTC: when the issue goes (or went) out.
    pub fire_at: String,
    /// RFC 3339, UTC: when it is composed and previewed, if earlier.
    pub preview_at: Option<String>,
    /// `pending`, `composed`, `waiting`, `held`, `enqueued` (fired),
    /// `skipped`, `missed`, `cancelled`, `failed`.
    pub state: String,
    /// Why it is in that state (`no items ready`, `held by an editor`, …).
    pub reason: Option<String>,
    /// The issue composed for the slot, if any.
    pub issue_number: Option<i64>,
}

impl Run {
    fn new(r: &RunRow, issue_number: Option<i64>) -> Run {
        Run {
            slot_at: super::rfc3339(r.slot_at),
            fire_at: super::rfc3339(r.fire_at),
            preview_at: r.preview_at.map(super::rfc3339),
            state: r.state.as_str().to_owned(),
            reason: r.reason.clone(),
            issue_number,
        }
    }
}

impl From<&RunHistoryRow> for Run {
    fn from(h: &RunHistoryRow) -> Run {
        Run::new(&h.run, h.issue_number)
    }
}

/// When to send: a wall time read in `timezone`, or an RFC 3339 instant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendAtRequest {
    /// `2026-05-08 09:00` (also with seconds or a `T`), read in `timezone`;
    /// or an RFC 3339 instant such as `2026-05-08T07:00:00Z`.
    pub at: String,
    /// IANA zone, e.g. `Europe/Berlin`; default: the newsletter's `timezone`.
    pub timezone: Option<String>,
}

/// Which slot to skip or reinstate.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotRequest {
    /// The slot as a wall time in the schedule's zone (`2026-05-08 09:00`)
    /// or an RFC 3339 instant. Skip: default the next slot. Unskip: required.
    pub at: Option<String>,
}

/// What `schedule/cancel` stopped.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    pub number: i64,
    /// `one_off` (the issue is a draft again) or `slot` (the issue is
    /// cancelled; its slot sends nothing).
    pub kind: String,
    /// RFC 3339, UTC; for `slot`.
    pub slot_at: Option<String>,
    /// The issue's status now.
    pub status: String,
}

fn local(at: DateTime<Utc>, zone: ScheduleTz) -> String {
    at.with_timezone(&zone.0)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// The wall time and zone to hand to `send_issue_at`. An RFC 3339 instant
/// becomes its wall time in the zone, which names the same instant except
/// in the repeated hour of a clock change; that case is refused rather
/// than silently moved an hour.
fn parse_send_at(at: &str, zone: ScheduleTz) -> Result<NaiveDateTime, ApiError> {
    let at = at.trim();
    if let Ok(instant) = DateTime::parse_from_rfc3339(at) {
        let wall = instant.with_timezone(&zone.0).naive_local();
        let round_trip = match wall.and_local_timezone(zone.0) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
                Some(t.with_timezone(&Utc))
            }
            chrono::LocalResult::None => None,
        };
        if round_trip != Some(instant.with_timezone(&Utc)) {
            return Err(ApiError::invalid(
                "at",
                format!(
                    "{at} falls in the repeated hour of {zone}'s clock change; give \"timezone\": \"UTC\" with this instant"
                ),
            ));
        }
        return Ok(wall);
    }
    [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(at, f).ok())
    .ok_or_else(|| {
        ApiError::invalid(
            "at",
            format!(
                "{at:?} is not a time: give a wall time like \"2026-05-08 09:00\" (read in \"timezone\") or an RFC 3339 instant like \"2026-05-08T07:00:00Z\""
            ),
        )
    })
}

/// The schedule: next slots, one-off sends waiting, recent history.
#[utoipa::path(
    get,
    path = "/schedule",
    tag = "schedule",
    params(ScheduleQuery),
    responses(
        (status = 200, body = ScheduleView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such newsletter", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn overview(
    State(s): State<WebState>,
    Query(q): Query<ScheduleQuery>,
) -> Result<Json<ScheduleView>, ApiError> {
    let next = q.next.unwrap_or(5);
    if !(1..=MAX_NEXT).contains(&next) {
        return Err(ApiError::invalid(
            "next",
            format!("next {next} is out of range: use 1 to {MAX_NEXT}"),
        ));
    }
    let history = q.history.unwrap_or(20);
    if !(1..=MAX_HISTORY).contains(&history) {
        return Err(ApiError::invalid(
            "history",
            format!("history {history} is out of range: use 1 to {MAX_HISTORY}"),
        ));
    }
    let nl = s.app.newsletter(q.newsletter.as_deref()).await?;
    let o = s
        .app
        .schedule_overview(&nl, next, history, SystemClock.now())
        .await?;
    Ok(Json(ScheduleView {
        newsletter: o.newsletter,
        schedule: o.schedule.map(|r| ScheduleRule {
            expression: r.expression,
            timezone: r.timezone,
            on_empty: r.on_empty,
            catch_up: r.catch_up,
            jitter: r.jitter,
            preview_before: r.preview_before,
            preview_to: r.preview_to,
        }),
        next: o.next.iter().map(Slot::from).collect(),
        one_offs: o.one_offs.iter().map(OneOff::from).collect(),
        history: o.history.iter().map(Run::from).collect(),
    }))
}

/// Send a draft issue at a time; `herald serve` sends it then.
#[utoipa::path(
    post,
    path = "/issues/{issue}/send-at",
    tag = "schedule",
    params(("issue" = String, Path, description = "Issue number or slug"), NewsletterQuery),
    request_body = SendAtRequest,
    responses(
        (status = 201, body = OneOff),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Only a draft issue can be scheduled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`at` is not a time, is in the past or does not exist in the zone; or `timezone` is not an IANA zone", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn send_at(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<NewsletterQuery>,
    ApiJson(body): ApiJson<SendAtRequest>,
) -> Result<Response, ApiError> {
    let zone = match body.timezone.as_deref() {
        Some(z) => z
            .parse::<ScheduleTz>()
            .map_err(|e| ApiError::invalid("timezone", e))?,
        None => s.app.config.newsletter.timezone,
    };
    let wall = parse_send_at(&body.at, zone)?;
    let (_, row) = super::newsletter_issue(&s, q.newsletter.as_deref(), &issue).await?;
    let one_off = s
        .app
        .send_issue_at(&row, wall, zone, SystemClock.now())
        .await?;
    Ok((StatusCode::CREATED, Json(OneOff::from(&one_off))).into_response())
}

/// Keep a scheduled issue from going out at its slot until released.
#[utoipa::path(
    post,
    path = "/issues/{issue}/schedule/hold",
    tag = "schedule",
    params(("issue" = String, Path, description = "Issue number or slug"), NewsletterQuery),
    responses(
        (status = 200, body = Run),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The issue is not waiting for its slot", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn hold(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<NewsletterQuery>,
) -> Result<Json<Run>, ApiError> {
    let (_, row) = super::newsletter_issue(&s, q.newsletter.as_deref(), &issue).await?;
    let run = s.app.hold_scheduled(&row, SystemClock.now()).await?;
    Ok(Json(Run::new(&run, Some(row.number))))
}

/// Let a held issue go out at its slot (at once if the slot has passed).
#[utoipa::path(
    post,
    path = "/issues/{issue}/schedule/release",
    tag = "schedule",
    params(("issue" = String, Path, description = "Issue number or slug"), NewsletterQuery),
    responses(
        (status = 200, body = Run),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The issue is not held", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn release(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<NewsletterQuery>,
) -> Result<Json<Run>, ApiError> {
    let (_, row) = super::newsletter_issue(&s, q.newsletter.as_deref(), &issue).await?;
    let run = s.app.release_scheduled(&row, SystemClock.now()).await?;
    Ok(Json(Run::new(&run, Some(row.number))))
}

/// Compose a scheduled issue again from the items ready now (its own
/// included); it replaces the old issue at the same slot, and a new
/// preview goes out on the scheduler's next round.
#[utoipa::path(
    post,
    path = "/issues/{issue}/schedule/recompose",
    tag = "schedule",
    params(("issue" = String, Path, description = "Issue number or slug"), NewsletterQuery),
    responses(
        (status = 200, description = "The new issue", body = Issue),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The issue is not waiting for its slot", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn recompose(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<NewsletterQuery>,
) -> Result<Json<Issue>, ApiError> {
    let (nl, row) = super::newsletter_issue(&s, q.newsletter.as_deref(), &issue).await?;
    let new = s
        .app
        .recompose_scheduled(&nl, &row, SystemClock.now())
        .await?;
    Ok(Json(Issue::new(&s.app, &new)))
}

/// Cancel what is scheduled: a one-off send (the issue is a draft again)
/// or an issue waiting for its slot (cancelled; the slot sends nothing).
#[utoipa::path(
    post,
    path = "/issues/{issue}/schedule/cancel",
    tag = "schedule",
    params(("issue" = String, Path, description = "Issue number or slug"), NewsletterQuery),
    responses(
        (status = 200, body = Cancelled),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing is scheduled for the issue", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    State(s): State<WebState>,
    Path(issue): Path<String>,
    Query(q): Query<NewsletterQuery>,
) -> Result<Json<Cancelled>, ApiError> {
    let (_, row) = super::newsletter_issue(&s, q.newsletter.as_deref(), &issue).await?;
    let (kind, slot_at) = match s.app.cancel_scheduled(&row, SystemClock.now()).await? {
        Unscheduled::OneOff { .. } => ("one_off", None),
        Unscheduled::Slot { slot_at, .. } => (
            "slot",
            Some(slot_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        ),
    };
    let status = s.app.issue_status(&row).await?.status;
    Ok(Json(Cancelled {
        number: row.number,
        kind: kind.to_owned(),
        slot_at,
        status,
    }))
}

/// Skip a coming slot (default: the next) before anything is composed for
/// it: nothing is sent then. Skipping twice is the same as once.
#[utoipa::path(
    post,
    path = "/schedule/skip",
    tag = "schedule",
    params(NewsletterQuery),
    request_body = SlotRequest,
    responses(
        (status = 200, body = Slot),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No schedule, or the slot's issue is already composed (cancel the issue) or sent", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`at` is not a coming slot of the schedule", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn skip(
    State(s): State<WebState>,
    Query(q): Query<NewsletterQuery>,
    ApiJson(body): ApiJson<SlotRequest>,
) -> Result<Json<Slot>, ApiError> {
    let (nl, at) = slot_request(&s, &q, body).await?;
    let slot = s.app.skip_slot(&nl, at, SystemClock.now()).await?;
    Ok(Json(Slot::from(&slot)))
}

/// Reinstate a slot skipped ahead of time: it is composed and sent as usual.
#[utoipa::path(
    post,
    path = "/schedule/unskip",
    tag = "schedule",
    params(NewsletterQuery),
    request_body = SlotRequest,
    responses(
        (status = 200, body = Slot),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The slot was not skipped", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`at` is missing or not a coming slot of the schedule", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn unskip(
    State(s): State<WebState>,
    Query(q): Query<NewsletterQuery>,
    ApiJson(body): ApiJson<SlotRequest>,
) -> Result<Json<Slot>, ApiError> {
    let (nl, at) = slot_request(&s, &q, body).await?;
    let Some(at) = at else {
        return Err(ApiError::invalid(
            "at",
            "give the skipped slot to reinstate, e.g. {\"at\": \"2026-05-08 09:00\"}".to_owned(),
        ));
    };
    let slot = s.app.unskip_slot(&nl, at, SystemClock.now()).await?;
    Ok(Json(Slot::from(&slot)))
}

/// The newsletter and the slot (a wall time in the newsletter's zone) a
/// skip or unskip request names.
async fn slot_request(
    s: &WebState,
    q: &NewsletterQuery,
    body: SlotRequest,
) -> Result<
    (
        std::sync::Arc<crate::store::Newsletter>,
        Option<NaiveDateTime>,
    ),
    ApiError,
> {
    let nl = s.app.newsletter(q.newsletter.as_deref()).await?;
    let zone = s.app.config.newsletter.timezone;
    let at = body.at.map(|at| parse_send_at(&at, zone)).transpose()?;
    Ok((nl, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> ScheduleTz {
        "Europe/Berlin".parse().unwrap()
    }

    fn wall(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn wall_times_and_instants_become_the_zones_wall_time() {
        assert_eq!(
            parse_send_at(" 2026-05-08 09:00 ", berlin()).ok(),
            Some(wall("2026-05-08 09:00"))
        );
        assert_eq!(
            parse_send_at("2026-05-08T09:00:30", berlin()).ok(),
            NaiveDateTime::parse_from_str("2026-05-08 09:00:30", "%Y-%m-%d %H:%M:%S").ok()
        );
        // 07:00 UTC is 09:00 in Berlin in summer, whatever offset it is written in.
        for instant in ["2026-05-08T07:00:00Z", "2026-05-08T12:00:00+05:00"] {
            assert_eq!(
                parse_send_at(instant, berlin()).ok(),
                Some(wall("2026-05-08 09:00")),
                "{instant}"
            );
        }
        assert!(matches!(
            parse_send_at("Friday at nine", berlin()),
            Err(ApiError::Invalid(e)) if e[0].field == "at"
        ));
    }

    #[test]
    fn an_instant_in_the_repeated_hour_is_refused_not_moved() {
        // 25 October 2026: Berlin's 02:30 happens at 00:30 and at 01:30 UTC.
        assert_eq!(
            parse_send_at("2026-10-25T00:30:00Z", berlin()).ok(),
            Some(wall("2026-10-25 02:30"))
        );
        assert!(matches!(
            parse_send_at("2026-10-25T01:30:00Z", berlin()),
            Err(ApiError::Invalid(e)) if e[0].field == "at" && e[0].detail.contains("repeated hour")
        ));
        let utc: ScheduleTz = "UTC".parse().unwrap();
        assert_eq!(
            parse_send_at("2026-10-25T01:30:00Z", utc).ok(),
            Some(wall("2026-10-25 01:30"))
        );
    }
}

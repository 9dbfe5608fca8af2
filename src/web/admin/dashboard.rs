//! The dashboard: subscribers by state and their growth (server-rendered
//! SVG), the next send and its ready items, the last issues with their
//! counts and complaint rate, skipped/missed slots, failures by reply.

use std::str::FromStr;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use super::issues::{issues_table, when};
use super::layout::{self, Section};
use super::{AdminFail, page};
use crate::admin::{AdminSession, WeekCount};
use crate::clock::Clock;
use crate::domain::{DeliveryState, ItemState, RunState};
use crate::web::WebState;

const GROWTH_WEEKS: usize = 12;

pub async fn dashboard(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
) -> Result<Response, AdminFail> {
    let nl = s.app.newsletter(None).await?;
    let subs = s.app.subscription_counts(&nl).await?;
    let growth = s.app.subscriber_growth(&nl, GROWTH_WEEKS).await?;
    let issues = s.app.issues_with_counts(&nl, 5).await?;
    let ready = s.app.list_items(&nl, Some(ItemState::Ready)).await?;
    let failures = s.app.recent_failures_by_reply(30, 10).await?;
    // The schedule is optional: its errors (a bad stored expression) are
    // shown, not fatal to the page.
    let overview = s
        .app
        .schedule_overview(&nl, 1, 30, crate::clock::SystemClock.now())
        .await;
    // Complaints are a delivery state once bounce processing records them.
    let complained = DeliveryState::from_str("complained").ok();
    Ok(page(layout::page(
        &nl.name,
        &session,
        Section::Dashboard,
        html! {
            section aria-labelledby="subs-h" {
                h2 id="subs-h" { "Subscribers" }
                div class="grid" {
                    @for (state, n) in &subs {
                        div class="card" {
                            div class="muted" { (state.as_str()) }
                            div class="big" data-state=(state.as_str()) { (n) }
                        }
                    }
                }
                (growth_chart(&growth))
            }
            section aria-labelledby="next-h" {
                h2 id="next-h" { "Next send" }
                div class="card" {
                    @match &overview {
                        Ok(o) => {
                            @if let Some(one_off) = o.one_offs.first() {
                                p { "Issue #" (one_off.issue_number) " at " strong { (when(one_off.send_at)) } " (one-off)." }
                            }
                            @if let Some(slot) = o.next.first() {
                                p { "Next scheduled slot: " strong { (slot.local) } }
                            } @else if o.one_offs.is_empty() {
                                p class="muted" { "Nothing scheduled." }
                            }
                        }
                        Err(e) => { p class="alert" { "The schedule could not be read: " (e.to_string()) } }
                    }
                    p { (ready.len()) " item(s) ready" @if !ready.is_empty() { ":" } }
                    @if !ready.is_empty() {
                        ul { @for item in ready.iter().take(10) { li { (item.headline) } } }
                    }
                    p { a href="/admin/issues" { "Compose or send an issue" } }
                }
            }
            section aria-labelledby="issues-h" {
                h2 id="issues-h" { "Latest issues" }
                (issues_table(&issues))
                @if let Some(c) = complained {
                    ul class="muted" {
                        @for i in &issues {
                            @let sent = i.counts.get(DeliveryState::Sent) + i.counts.get(c);
                            li { "#" (i.issue.number) " complaint rate: "
                                @if sent > 0 { (format!("{:.2} %", i.counts.get(c) as f64 * 100.0 / sent as f64)) } @else { "—" } }
                        }
                    }
                }
            }
            @if let Ok(o) = &overview {
                @let skipped: Vec<_> = o.history.iter().filter(|r| matches!(r.run.state, RunState::Skipped | RunState::Missed)).take(10).collect();
                @if !skipped.is_empty() {
                    section aria-labelledby="slots-h" {
                        h2 id="slots-h" { "Skipped and missed slots" }
                        ul {
                            @for r in skipped {
                                li { (when(r.run.slot_at)) ": " (r.run.state.as_str()) @if let Some(reason) = &r.run.reason { " — " (reason) } }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="fail-h" {
                h2 id="fail-h" { "Permanent failures in the last 30 days" }
                @if failures.is_empty() {
                    p class="muted" { "None." }
                } @else {
                    div class="table-wrap" {
                        table {
                            thead { tr { th scope="col" { "Reply" } th class="num" scope="col" { "Recipients" } } }
                            tbody { @for (reply, n) in &failures { tr { td { (reply) } td class="num" { (n) } } } }
                        }
                    }
                }
            }
        },
    )))
}

/// A bar per week, drawn on the server: no script, no chart library.
fn growth_chart(weeks: &[WeekCount]) -> Markup {
    const W: i64 = 600;
    const H: i64 = 160;
    const TOP: i64 = 16;
    const BOTTOM: i64 = 22;
    let max = weeks.iter().map(|w| w.confirmed).max().unwrap_or(0).max(1);
    let n = i64::try_from(weeks.len()).unwrap_or(1).max(1);
    let slot = W / n;
    let bar_w = (slot - 6).max(2);
    let first = weeks.first().map(|w| w.confirmed).unwrap_or(0);
    let last = weeks.last().map(|w| w.confirmed).unwrap_or(0);
    html! {
        figure {
            svg class="chart" viewBox=(format!("0 0 {W} {H}")) role="img"
                aria-label=(format!("Confirmed subscribers over the last {n} weeks: from {first} to {last}")) {
                @for (i, w) in weeks.iter().enumerate() {
                    @let i = i64::try_from(i).unwrap_or(0);
                    @let h = (H - TOP - BOTTOM) * w.confirmed / max;
                    @let x = i * slot + 3;
                    @let y = H - BOTTOM - h;
                    rect class="bar" x=(x) y=(y) width=(bar_w) height=(h.max(1)) {
                        title { (crate::domain::ms_to_datetime(w.week_start).format("week of %Y-%m-%d")) ": " (w.confirmed) }
                    }
                    text x=(x + bar_w / 2) y=(y - 3) text-anchor="middle" { (w.confirmed) }
                    @if i % 2 == 0 {
                        text x=(x + bar_w / 2) y=(H - 6) text-anchor="middle" { (crate::domain::ms_to_datetime(w.week_start).format("%d %b")) }
                    }
                }
            }
            figcaption class="muted" { "Confirmed subscribers at the end of each of the last " (n) " weeks." }
        }
    }
}

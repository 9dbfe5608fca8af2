//! The scheduler with a controllable clock, on SQLite and PostgreSQL: one
//! firing per slot (also with two schedulers on one database), catch-up and
//! missed slots after downtime, skipped weeks, DST in Europe/Berlin, the
//! editorial preview and cancel, one-off sends, and a slot resumed after a
//! process died half way.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use herald::app::App;
use herald::clock::{Clock, ManualClock};
use herald::config::{Config, HumanDuration};
use herald::digest_file::ItemInput;
use herald::domain::{IssueStatus, RunState};
use herald::schedule::Scheduler;
use herald::schedule::spec::{AddressList, CronSchedule, OnEmpty, ScheduleTz};
use support::app::{Backend, TestApp};

const READER: &str = "reader@example.com";
const EDITOR: &str = "editor@herald.test";

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

/// A Herald whose newsletter sends on `cron` in `zone`, one confirmed reader.
async fn scheduled(
    backend: Backend,
    cron: &str,
    zone: &str,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let cron = CronSchedule::parse(cron).unwrap();
    let zone: ScheduleTz = zone.parse().unwrap();
    let t = TestApp::spawn_with(backend, |c| {
        c.newsletter.schedule = Some(cron);
        c.newsletter.timezone = zone;
        configure(c);
    })
    .await;
    t.add_confirmed(READER).await;
    t
}

fn scheduler(app: &App, clock: &ManualClock) -> Scheduler {
    Scheduler::new(app.clone(), Arc::new(clock.clone()))
}

async fn add_ready_item(t: &TestApp, headline: &str) {
    let item = ItemInput {
        headline: headline.to_owned(),
        outlet: "Test Outlet".into(),
        url: format!("https://example.org/{}", herald::content::slugify(headline)),
        published: None,
        author: None,
        author_role: None,
        summary_markdown: "A summary.".into(),
        quote: None,
        section: None,
        lang: None,
    };
    t.app
        .add_items(&t.app.newsletter, &[item], true)
        .await
        .expect("add item");
}

async fn runs_in(t: &TestApp, state: RunState) -> i64 {
    t.count(&format!(
        "SELECT COUNT(*) FROM schedule_runs WHERE state = '{state}'"
    ))
    .await
}

async fn issues(t: &TestApp) -> i64 {
    t.count("SELECT COUNT(*) FROM issues").await
}

async fn deliveries(t: &TestApp) -> i64 {
    t.count("SELECT COUNT(*) FROM deliveries").await
}

async fn weekly_schedule_fires_once_per_slot(backend: Backend) {
    let t = scheduled(backend, "0 9 * * FRI", "UTC", |_| {}).await;
    // Wednesday 2026-05-06; the slots are Friday 8 and 15 May, 09:00 UTC.
    let clock = ManualClock::new(utc(2026, 5, 6, 12, 0));
    let s = scheduler(&t.app, &clock);
    s.tick().await.unwrap();
    add_ready_item(&t, "First week").await;

    clock.set(utc(2026, 5, 8, 8, 59));
    s.tick().await.unwrap();
    assert_eq!(issues(&t).await, 0, "nothing before the slot");

    clock.set(utc(2026, 5, 8, 9, 0) + chrono::Duration::seconds(1));
    let report = s.tick().await.unwrap();
    assert_eq!((report.composed, report.enqueued), (1, 1), "{report:?}");
    for _ in 0..3 {
        clock.advance(chrono::Duration::minutes(10));
        assert_eq!(s.tick().await.unwrap().enqueued, 0);
    }
    assert_eq!((issues(&t).await, deliveries(&t).await), (1, 1));
    let issue = t.app.latest_issue(&t.app.newsletter).await.unwrap();
    support::engine::run_until_complete(&t.app, &t.db, issue.id, Duration::from_secs(30)).await;
    assert_eq!(t.settled_mail_count(READER).await, 1);

    add_ready_item(&t, "Second week").await;
    clock.set(utc(2026, 5, 15, 9, 0) + chrono::Duration::seconds(30));
    s.tick().await.unwrap();
    s.tick().await.unwrap();
    assert_eq!(runs_in(&t, RunState::Enqueued).await, 2);
    assert_eq!((issues(&t).await, deliveries(&t).await), (2, 2));
    let overview = t
        .app
        .schedule_overview(&t.app.newsletter, 3, 10, clock.now())
        .await
        .unwrap();
    assert_eq!(overview.next.len(), 3);
    assert_eq!(overview.next[0].utc, utc(2026, 5, 22, 9, 0));
    assert_eq!(overview.history.len(), 2);
}

async fn two_schedulers_on_one_database_fire_each_slot_once(backend: Backend) {
    let t = scheduled(backend, "0 9 * * *", "UTC", |_| {}).await;
    let other = App::open((*t.app.config).clone())
        .await
        .expect("second process");
    let clock = ManualClock::new(utc(2026, 5, 6, 12, 0));
    let (a, b) = (scheduler(&t.app, &clock), scheduler(&other, &clock));
    a.tick().await.unwrap();
    for day in 7..=9 {
        add_ready_item(&t, &format!("News of day {day}")).await;
        clock.set(utc(2026, 5, day, 9, 0) + chrono::Duration::seconds(2));
        for _ in 0..3 {
            let (x, y) = tokio::join!(a.tick(), b.tick());
            x.unwrap();
            y.unwrap();
        }
    }
    assert_eq!(t.count("SELECT COUNT(*) FROM schedule_runs").await, 3);
    assert_eq!(runs_in(&t, RunState::Enqueued).await, 3);
    assert_eq!((issues(&t).await, deliveries(&t).await), (3, 3));
    other.close().await;
}

async fn downtime_catches_up_once_or_records_missed(backend: Backend) {
    let t = scheduled(backend, "0 9 * * FRI", "UTC", |_| {}).await;
    let clock = ManualClock::new(utc(2026, 5, 7, 12, 0));
    scheduler(&t.app, &clock).tick().await.unwrap();
    add_ready_item(&t, "Caught up").await;

    // Down over Friday's slot, back 2 h later: it fires once.
    clock.set(utc(2026, 5, 8, 11, 0));
    let restarted = scheduler(&t.app, &clock);
    assert_eq!(restarted.tick().await.unwrap().enqueued, 1);
    assert_eq!(restarted.tick().await.unwrap().enqueued, 0);
    assert_eq!((issues(&t).await, deliveries(&t).await), (1, 1));

    // Down over the next Friday, back 2 days later: recorded as missed, not sent.
    add_ready_item(&t, "Too late").await;
    clock.set(utc(2026, 5, 17, 9, 0));
    let restarted = scheduler(&t.app, &clock);
    restarted.tick().await.unwrap();
    restarted.tick().await.unwrap();
    assert_eq!(runs_in(&t, RunState::Missed).await, 1);
    assert_eq!((issues(&t).await, deliveries(&t).await), (1, 1));
    let overview = t
        .app
        .schedule_overview(&t.app.newsletter, 1, 10, clock.now())
        .await
        .unwrap();
    let missed = &overview.history[0].run;
    assert_eq!(missed.state, RunState::Missed);
    assert!(
        missed.reason.as_deref().unwrap_or("").contains("catch_up"),
        "{missed:?}"
    );
}

async fn a_week_with_nothing_ready_is_skipped_and_recorded(backend: Backend) {
    let t = scheduled(backend, "0 9 * * FRI", "UTC", |_| {}).await;
    let clock = ManualClock::new(utc(2026, 5, 6, 12, 0));
    let s = scheduler(&t.app, &clock);
    s.tick().await.unwrap();
    clock.set(utc(2026, 5, 8, 9, 1));
    assert_eq!(s.tick().await.unwrap().skipped, 1);
    s.tick().await.unwrap();
    assert_eq!(runs_in(&t, RunState::Skipped).await, 1);
    assert_eq!((issues(&t).await, deliveries(&t).await), (0, 0));
    let runs = t.db.runs(t.app.newsletter.id, 5).await.unwrap();
    assert!(
        runs[0]
            .run
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("no items were ready"),
        "{:?}",
        runs[0]
    );
}

async fn send_anyway_sends_an_issue_without_items(backend: Backend) {
    let t = scheduled(backend, "0 9 * * FRI", "UTC", |c| {
        c.newsletter.on_empty = OnEmpty::SendAnyway;
    })
    .await;
    let clock = ManualClock::new(utc(2026, 5, 6, 12, 0));
    let s = scheduler(&t.app, &clock);
    s.tick().await.unwrap();
    clock.set(utc(2026, 5, 8, 9, 1));
    assert_eq!(s.tick().await.unwrap().enqueued, 1);
    assert_eq!((issues(&t).await, deliveries(&t).await), (1, 1));
}

/// Ticks every 10 minutes from `from` to `to`.
async fn tick_through(s: &Scheduler, clock: &ManualClock, from: DateTime<Utc>, to: DateTime<Utc>) {
    clock.set(from);
    while clock.now() < to {
        s.tick().await.unwrap();
        clock.advance(chrono::Duration::minutes(10));
    }
}

async fn berlin_dst_gap_and_overlap_fire_exactly_once(backend: Backend) {
    // 02:30 does not exist on 29 March 2026 in Berlin and happens twice on 25 October.
    let t = scheduled(backend, "30 2 * * *", "Europe/Berlin", |_| {}).await;
    let clock = ManualClock::new(utc(2026, 3, 28, 12, 0));
    let s = scheduler(&t.app, &clock);
    s.tick().await.unwrap();
    add_ready_item(&t, "Spring").await;
    tick_through(&s, &clock, utc(2026, 3, 28, 12, 0), utc(2026, 3, 29, 12, 0)).await;
    let runs = t.db.runs(t.app.newsletter.id, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    // The first instant after the gap: 03:00 CEST.
    assert_eq!(
        runs[0].run.slot_at,
        utc(2026, 3, 29, 1, 0).timestamp_millis()
    );
    assert_eq!(runs[0].run.state, RunState::Enqueued);

    // Autumn: the schedule's cursor jumps ahead (as after downtime longer
    // than the lookback), then the overlap night fires once.
    t.exec(&format!(
        "UPDATE schedules SET checked_until = {}",
        utc(2026, 10, 24, 12, 0).timestamp_millis()
    ))
    .await;
    add_ready_item(&t, "Autumn").await;
    tick_through(
        &s,
        &clock,
        utc(2026, 10, 24, 12, 0),
        utc(2026, 10, 25, 12, 0),
    )
    .await;
    let runs = t.db.runs(t.app.newsletter.id, 10).await.unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        runs[0].run.slot_at,
        utc(2026, 10, 25, 0, 30).timestamp_millis()
    );
    assert_eq!(runs_in(&t, RunState::Enqueued).await, 2);
    assert_eq!((issues(&t).await, deliveries(&t).await), (2, 2));
}

async fn preview_goes_out_before_the_slot_and_cancel_sends_nothing(backend: Backend) {
    let t = scheduled(backend, "0 9 * * FRI", "UTC", |c| {
        c.newsletter.preview_before = HumanDuration(Duration::from_secs(18 * 3600));
        c.newsletter.preview_to = AddressList::parse_text(EDITOR).unwrap();
    })
    .await;
    let clock = ManualClock::new(utc(2026, 5, 6, 12, 0));
    let s = scheduler(&t.app, &clock);
    s.tick().await.unwrap();
    add_ready_item(&t, "Previewed").await;

    clock.set(utc(2026, 5, 7, 14, 59));
    s.tick().await.unwrap();
    assert_eq!(issues(&t).await, 0, "not before slot - 18 h");
    clock.set(utc(2026, 5, 7, 15, 0) + chrono::Duration::seconds(5));
    let report = s.tick().await.unwrap();
    assert_eq!(
        (report.composed, report.previews, report.enqueued),
        (1, 1, 0),
        "{report:?}"
    );
    let preview = t.nth_mail_to(EDITOR, 1).await;
    assert!(
        preview
            .header("Subject")
            .unwrap_or_default()
            .contains("[TEST]"),
        "{:?}",
        preview.header("Subject")
    );
    let issue = t.app.latest_issue(&t.app.newsletter).await.unwrap();
    assert_eq!(issue.status, IssueStatus::Scheduled);
    assert_eq!(deliveries(&t).await, 0);

    // The editors cancel before the slot: nothing goes out at it.
    t.app.cancel_scheduled(&issue, clock.now()).await.unwrap();
    clock.set(utc(2026, 5, 8, 9, 1));
    s.tick().await.unwrap();
    assert_eq!(deliveries(&t).await, 0);
    assert_eq!(runs_in(&t, RunState::Cancelled).await, 1);
    assert_eq!(
        t.db.issue_status(issue.id).await.unwrap(),
        IssueStatus::Cancelled
    );

    // Next week, held then released after a recompose: sent as it stands at the slot.
    add_ready_item(&t, "Next week").await;
    clock.set(utc(2026, 5, 14, 15, 1));
    s.tick().await.unwrap();
    t.nth_mail_to(EDITOR, 2).await;
    let second = t.app.latest_issue(&t.app.newsletter).await.unwrap();
    assert_eq!(second.status, IssueStatus::Scheduled);
    add_ready_item(&t, "Late addition").await;
    let recomposed = t
        .app
        .recompose_scheduled(&t.app.newsletter, &second, clock.now())
        .await
        .unwrap();
    assert_eq!(t.db.items_of_issue(recomposed.id).await.unwrap().len(), 2);
    s.tick().await.unwrap();
    t.nth_mail_to(EDITOR, 3).await;
    t.app
        .hold_scheduled(&recomposed, clock.now())
        .await
        .unwrap();
    clock.set(utc(2026, 5, 15, 9, 1));
    s.tick().await.unwrap();
    assert_eq!(deliveries(&t).await, 0, "held at the slot");
    t.app
        .release_scheduled(&recomposed, clock.now())
        .await
        .unwrap();
    assert_eq!(s.tick().await.unwrap().enqueued, 1);
    assert_eq!(deliveries(&t).await, 1);
    assert_eq!(t.settled_mail_count(EDITOR).await, 3);
}

async fn a_slot_left_half_done_completes_after_restart_without_sending_twice(backend: Backend) {
    let t = scheduled(backend, "0 9 * * FRI", "UTC", |_| {}).await;
    let clock = ManualClock::new(utc(2026, 5, 6, 12, 0));
    scheduler(&t.app, &clock).tick().await.unwrap();
    add_ready_item(&t, "Interrupted").await;

    // A process recorded and claimed the slot, then died: a live lease is respected…
    let slot = utc(2026, 5, 8, 9, 0).timestamp_millis();
    t.exec(&format!(
        "INSERT INTO schedule_runs (newsletter_id, slot_at, jitter_ms, fire_at, state, lease_until, worker_id, created_at, updated_at)
         VALUES ({}, {slot}, 0, {slot}, 'pending', {}, 'dead-process', {slot}, {slot})",
        t.app.newsletter.id,
        slot + 5 * 60_000
    ))
    .await;
    t.exec(&format!("UPDATE schedules SET checked_until = {slot}"))
        .await;
    clock.set(utc(2026, 5, 8, 9, 1));
    let restarted = scheduler(&t.app, &clock);
    restarted.tick().await.unwrap();
    assert_eq!(
        issues(&t).await,
        0,
        "the dead process's lease is still live"
    );
    // …and once it expires, another process finishes the slot.
    clock.set(utc(2026, 5, 8, 9, 6));
    assert_eq!(restarted.tick().await.unwrap().enqueued, 1);
    assert_eq!((issues(&t).await, deliveries(&t).await), (1, 1));

    // Died after enqueueing, before recording it: the slot is completed, nobody enqueued twice.
    t.exec(&format!(
        "UPDATE schedule_runs SET state = 'waiting', worker_id = 'dead-process', lease_until = {}",
        slot + 6 * 60_000
    ))
    .await;
    clock.set(utc(2026, 5, 8, 9, 30));
    let again = scheduler(&t.app, &clock);
    again.tick().await.unwrap();
    again.tick().await.unwrap();
    assert_eq!(runs_in(&t, RunState::Enqueued).await, 1);
    assert_eq!((issues(&t).await, deliveries(&t).await), (1, 1));
    let issue = t.app.latest_issue(&t.app.newsletter).await.unwrap();
    support::engine::run_until_complete(&t.app, &t.db, issue.id, Duration::from_secs(30)).await;
    assert_eq!(t.settled_mail_count(READER).await, 1);
}

async fn one_off_send_waits_is_listed_and_can_be_cancelled(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    t.add_confirmed(READER).await;
    add_ready_item(&t, "One-off").await;
    let issue = t
        .app
        .compose_issue(&t.app.newsletter, Default::default())
        .await
        .unwrap();
    let clock = ManualClock::new(utc(2026, 5, 6, 12, 0));
    let s = scheduler(&t.app, &clock);
    let berlin: ScheduleTz = "Europe/Berlin".parse().unwrap();
    let at = chrono::NaiveDate::from_ymd_opt(2026, 5, 8)
        .unwrap()
        .and_hms_opt(9, 0, 0)
        .unwrap();
    let past = chrono::NaiveDate::from_ymd_opt(2026, 5, 1)
        .unwrap()
        .and_hms_opt(9, 0, 0)
        .unwrap();
    let err = t
        .app
        .send_issue_at(&issue, past, berlin, clock.now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("in the past"), "{err}");
    let o = t
        .app
        .send_issue_at(&issue, at, berlin, clock.now())
        .await
        .unwrap();
    assert_eq!(
        o.send_at,
        utc(2026, 5, 8, 7, 0).timestamp_millis(),
        "09:00 CEST"
    );
    let overview = t
        .app
        .schedule_overview(&t.app.newsletter, 5, 5, clock.now())
        .await
        .unwrap();
    assert!(overview.schedule.is_none());
    assert_eq!(overview.one_offs.len(), 1);

    // Cancelled: a draft again, nothing sent; scheduled again: sent at its time.
    t.app.cancel_scheduled(&issue, clock.now()).await.unwrap();
    assert_eq!(
        t.db.issue_status(issue.id).await.unwrap(),
        IssueStatus::Draft
    );
    t.app
        .send_issue_at(&issue, at, berlin, clock.now())
        .await
        .unwrap();
    clock.set(utc(2026, 5, 8, 6, 59));
    s.tick().await.unwrap();
    assert_eq!(deliveries(&t).await, 0);
    clock.set(utc(2026, 5, 8, 7, 0));
    assert_eq!(s.tick().await.unwrap().one_offs_sent, 1);
    s.tick().await.unwrap();
    assert_eq!(deliveries(&t).await, 1);
    assert!(
        t.app
            .schedule_overview(&t.app.newsletter, 5, 5, clock.now())
            .await
            .unwrap()
            .one_offs
            .is_empty()
    );
}

/// A holiday week: the editors skip a coming slot before anything is
/// composed; it sends nothing, the next one fires as usual, and a skipped
/// slot can be reinstated until it comes.
async fn a_slot_skipped_ahead_sends_nothing_and_can_be_reinstated(backend: Backend) {
    let t = scheduled(backend, "0 9 * * FRI", "Asia/Almaty", |c| {
        c.newsletter.preview_before = HumanDuration(Duration::from_secs(18 * 3600));
        c.newsletter.preview_to = AddressList::parse_text(EDITOR).unwrap();
    })
    .await;
    let nl = &t.app.newsletter;
    // Monday 4 May 2026; the slots are Fridays 09:00 in Almaty (04:00 UTC).
    let clock = ManualClock::new(utc(2026, 5, 4, 12, 0));
    let s = scheduler(&t.app, &clock);
    s.tick().await.unwrap();
    add_ready_item(&t, "Holiday week").await;

    let skipped = t.app.skip_slot(nl, None, clock.now()).await.unwrap();
    assert_eq!(
        skipped.utc,
        utc(2026, 5, 8, 4, 0),
        "the next slot by default"
    );
    assert!(skipped.skipped);
    // Twice is the same as once; a wall time names the same slot.
    let at = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    let again = t
        .app
        .skip_slot(nl, Some(at("2026-05-08 09:00")), clock.now())
        .await
        .unwrap();
    assert_eq!(again.utc, skipped.utc);
    let o = t
        .app
        .schedule_overview(nl, 2, 10, clock.now())
        .await
        .unwrap();
    assert_eq!(
        o.next.iter().map(|n| n.skipped).collect::<Vec<_>>(),
        [true, false],
        "{:?}",
        o.next
    );

    // Not a slot, a past time, a second skip of a slot that is composed.
    let err = t
        .app
        .skip_slot(nl, Some(at("2026-05-07 09:00")), clock.now())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a slot") && err.contains("2026-05-08T09:00:00+05:00"),
        "{err}"
    );
    let err = t
        .app
        .skip_slot(nl, Some(at("2026-05-01 09:00")), clock.now())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("has passed"), "{err}");

    // Through the preview time and the slot: nothing composed, previewed or sent.
    for at in [
        utc(2026, 5, 7, 10, 1),
        utc(2026, 5, 8, 4, 1),
        utc(2026, 5, 8, 5, 0),
    ] {
        clock.set(at);
        s.tick().await.unwrap();
    }
    assert_eq!((issues(&t).await, deliveries(&t).await), (0, 0));
    let o = t
        .app
        .schedule_overview(nl, 1, 10, clock.now())
        .await
        .unwrap();
    assert_eq!(o.history.len(), 1, "{:?}", o.history);
    assert_eq!(o.history[0].run.state, RunState::Skipped);
    assert!(
        o.history[0]
            .run
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("by an editor")),
        "{:?}",
        o.history[0]
    );
    let err = t
        .app
        .unskip_slot(nl, at("2026-05-08 09:00"), clock.now())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has passed"),
        "a passed slot stays skipped: {err}"
    );

    // Skip 15 May, change our minds: it is previewed and sent as usual.
    t.app
        .skip_slot(nl, Some(at("2026-05-15 09:00")), clock.now())
        .await
        .unwrap();
    let back = t
        .app
        .unskip_slot(nl, at("2026-05-15 09:00"), clock.now())
        .await
        .unwrap();
    assert!(!back.skipped);
    let err = t
        .app
        .unskip_slot(nl, at("2026-05-15 09:00"), clock.now())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not skipped"), "{err}");
    clock.set(utc(2026, 5, 14, 10, 1));
    assert_eq!(s.tick().await.unwrap().previews, 1);
    // Now that it is composed, skipping points at the issue to cancel.
    let err = t
        .app
        .skip_slot(nl, Some(at("2026-05-15 09:00")), clock.now())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("herald schedule cancel 1"), "{err}");
    clock.set(utc(2026, 5, 15, 4, 1));
    assert_eq!(s.tick().await.unwrap().enqueued, 1);
    assert_eq!(deliveries(&t).await, 1);
}

on_each_backend!(
    weekly_schedule_fires_once_per_slot,
    two_schedulers_on_one_database_fire_each_slot_once,
    downtime_catches_up_once_or_records_missed,
    a_week_with_nothing_ready_is_skipped_and_recorded,
    send_anyway_sends_an_issue_without_items,
    berlin_dst_gap_and_overlap_fire_exactly_once,
    preview_goes_out_before_the_slot_and_cancel_sends_nothing,
    a_slot_left_half_done_completes_after_restart_without_sending_twice,
    one_off_send_waits_is_listed_and_can_be_cancelled,
    a_slot_skipped_ahead_sends_nothing_and_can_be_reinstated,
);

#[test]
#[allow(clippy::result_large_err)]
fn schedule_keys_come_from_the_environment_and_bad_ones_name_key_and_example() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("HERALD_NEWSLETTER_SCHEDULE", "0 9 * * FRI");
        jail.set_env("HERALD_NEWSLETTER_TIMEZONE", "Asia/Almaty");
        jail.set_env("HERALD_NEWSLETTER_ON_EMPTY", "send_anyway");
        jail.set_env("HERALD_NEWSLETTER_JITTER", "10m");
        jail.set_env("HERALD_NEWSLETTER_PREVIEW_BEFORE", "18h");
        jail.set_env(
            "HERALD_NEWSLETTER_PREVIEW_TO",
            "a@example.com,b@example.com",
        );
        let cfg = Config::load(None).unwrap();
        let n = &cfg.newsletter;
        assert_eq!(n.schedule.as_ref().map(|c| c.as_str()), Some("0 9 * * FRI"));
        assert_eq!(n.timezone.to_string(), "Asia/Almaty");
        assert_eq!(n.on_empty, OnEmpty::SendAnyway);
        assert_eq!(n.catch_up.0, Duration::from_secs(6 * 3600));
        assert_eq!(n.jitter.0, Duration::from_secs(600));
        assert_eq!(n.preview_to.0.len(), 2);

        for (var, value, key) in [
            (
                "HERALD_NEWSLETTER_SCHEDULE",
                "0 9 * * FRIDAY",
                "newsletter.schedule",
            ),
            ("HERALD_NEWSLETTER_SCHEDULE", "9 * *", "newsletter.schedule"),
            (
                "HERALD_NEWSLETTER_TIMEZONE",
                "Mars/Olympus",
                "newsletter.timezone",
            ),
            ("HERALD_NEWSLETTER_ON_EMPTY", "maybe", "newsletter.on_empty"),
            ("HERALD_NEWSLETTER_CATCH_UP", "90d", "newsletter.catch_up"),
            (
                "HERALD_NEWSLETTER_PREVIEW_TO",
                "nobody",
                "newsletter.preview_to",
            ),
        ] {
            jail.clear_env();
            jail.set_env("HERALD_NEWSLETTER_PREVIEW_TO", "a@example.com");
            jail.set_env(var, value);
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
            if key == "newsletter.schedule" {
                assert!(err.contains("0 9 * * FRI"), "the example is shown: {err}");
            }
            if key == "newsletter.timezone" {
                assert!(err.contains("Europe/Berlin"), "{err}");
            }
        }
        jail.clear_env();
        jail.set_env("HERALD_NEWSLETTER_PREVIEW_BEFORE", "18h");
        let err = Config::load(None).unwrap_err().to_string();
        assert!(err.contains("newsletter.preview_to"), "{err}");
        Ok(())
    });
}

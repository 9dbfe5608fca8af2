//! The schedule through the editors' API over real HTTP, on SQLite and
//! PostgreSQL: the overview (next slots in the newsletter's zone and UTC,
//! history with reasons and issue numbers), send at a time (wall time or
//! RFC 3339, idempotent), and hold / release / recompose / cancel, with
//! their 401/404/409/422.
//!
//! The scheduler itself runs on a `ManualClock` driven by the test (slots
//! in May 2026); the API reads the real clock, which only matters for
//! "next slots" and "is this time in the past".

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use herald::clock::ManualClock;
use herald::config::HumanDuration;
use herald::schedule::Scheduler;
use herald::schedule::spec::{AddressList, CronSchedule, ScheduleTz};
use serde_json::{Value, json};
use support::api::{Api, ApiResponse};
use support::app::{Backend, TestApp};

const PREVIEW_TO: &str = "desk@herald.test";

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

/// The API's spelling of an instant.
fn api_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn weekly(backend: Backend, zone: &str, preview: bool) -> TestApp {
    let cron = CronSchedule::parse("0 9 * * FRI").unwrap();
    let zone: ScheduleTz = zone.parse().unwrap();
    TestApp::spawn_with(backend, |c| {
        c.newsletter.schedule = Some(cron);
        c.newsletter.timezone = zone;
        if preview {
            c.newsletter.preview_before = HumanDuration(Duration::from_secs(18 * 3600));
            c.newsletter.preview_to = AddressList::parse_text(PREVIEW_TO).unwrap();
        }
    })
    .await
}

fn scheduler(t: &TestApp, clock: &ManualClock) -> Scheduler {
    Scheduler::new(t.app.clone(), Arc::new(clock.clone()))
}

async fn issue_status(api: &Api<'_>, number: i64) -> String {
    let r = api.get(&format!("/issues/{number}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["status"].as_str().unwrap_or_default().to_owned()
}

async fn keyed(api: &Api<'_>, path: &str, key: &str, body: Value) -> ApiResponse {
    Api::send(
        api.request(reqwest::Method::POST, path)
            .header("Idempotency-Key", key)
            .json(&body),
    )
    .await
}

async fn overview_lists_slots_and_history(backend: Backend) {
    let t = weekly(backend, "Europe/Berlin", false).await;
    let api = Api::new(&t).await;

    let r = api.get("/schedule").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let o = r.json();
    assert_eq!(o["schedule"]["expression"], "0 9 * * FRI", "{o}");
    assert_eq!(o["schedule"]["timezone"], "Europe/Berlin", "{o}");
    let next = o["next"].as_array().expect("next");
    assert_eq!(next.len(), 5, "default 5 slots: {o}");
    let mut previous = Utc::now();
    for slot in next {
        // Friday 09:00 on Berlin's wall clock, and the same instant in UTC.
        let local = DateTime::parse_from_rfc3339(slot["local"].as_str().expect("local"))
            .unwrap_or_else(|e| panic!("{slot}: {e}"));
        assert_eq!(
            (local.weekday(), local.hour(), local.minute()),
            (chrono::Weekday::Fri, 9, 0),
            "{slot}"
        );
        let offset = local.offset().local_minus_utc();
        assert!(offset == 3600 || offset == 7200, "Berlin's offset: {slot}");
        let at_utc = DateTime::parse_from_rfc3339(slot["utc"].as_str().expect("utc"))
            .unwrap_or_else(|e| panic!("{slot}: {e}"));
        assert_eq!(at_utc.offset().local_minus_utc(), 0, "{slot}");
        assert_eq!(local, at_utc, "{slot}");
        assert!(at_utc > previous, "slots ascend, after now: {o}");
        previous = at_utc.with_timezone(&Utc);
    }
    assert_eq!(o["history"], json!([]), "{o}");
    assert_eq!(o["one_offs"], json!([]), "{o}");

    let r = api.get("/schedule?next=2&history=3").await;
    assert_eq!(r.json()["next"].as_array().map(Vec::len), Some(2));
    for (query, field) in [
        ("next=0", "next"),
        ("next=101", "next"),
        ("history=0", "history"),
        ("history=1001", "history"),
    ] {
        let p = api.get(&format!("/schedule?{query}")).await.problem(422);
        assert_eq!(p["errors"][0]["field"], field, "{query}: {p}");
    }
    api.get("/schedule?newsletter=no-such-letter")
        .await
        .problem(404);
    let anonymous = Api::send(t.client.get(api.url("/schedule"))).await;
    anonymous.problem(401);

    // Two past slots: nothing ready the first week, an issue the second.
    let clock = ManualClock::new(utc(2026, 5, 6, 12, 0));
    let s = scheduler(&t, &clock);
    s.tick().await.unwrap();
    clock.set(utc(2026, 5, 8, 7, 1)); // 09:01 in Berlin (CEST)
    assert_eq!(s.tick().await.unwrap().skipped, 1);
    api.item("Second week's story", true).await;
    clock.set(utc(2026, 5, 15, 7, 1));
    assert_eq!(s.tick().await.unwrap().enqueued, 1);

    let o = api.get("/schedule").await.json();
    let history = o["history"].as_array().expect("history");
    assert_eq!(history.len(), 2, "{o}");
    assert_eq!(history[0]["state"], "enqueued", "newest first: {o}");
    assert_eq!(history[0]["issue_number"], 1, "{o}");
    assert_eq!(
        history[0]["slot_at"],
        api_time(utc(2026, 5, 15, 7, 0)),
        "{o}"
    );
    assert_eq!(history[1]["state"], "skipped", "{o}");
    assert_eq!(history[1]["issue_number"], Value::Null, "{o}");
    assert!(
        history[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no items")),
        "{o}"
    );
    let r = api.get("/schedule?history=1").await.json();
    assert_eq!(r["history"].as_array().map(Vec::len), Some(1));
}

async fn send_at_is_listed_then_cancelled(backend: Backend) {
    let berlin: ScheduleTz = "Europe/Berlin".parse().unwrap();
    let t = TestApp::spawn_with(backend, |c| c.newsletter.timezone = berlin).await;
    let api = Api::new(&t).await;
    api.item("Story", true).await;
    assert_eq!(api.post("/issues", json!({})).await.status, 201);

    // 09:00 on Berlin's wall clock, a month from now (09:00 always exists).
    let day = (Utc::now() + chrono::Duration::days(30))
        .with_timezone(&berlin.0)
        .date_naive();
    let wall = format!("{} 09:00", day.format("%Y-%m-%d"));
    let expected = berlin
        .0
        .from_local_datetime(&day.and_hms_opt(9, 0, 0).unwrap())
        .single()
        .unwrap()
        .with_timezone(&Utc);
    let body = json!({"at": wall, "timezone": "Europe/Berlin"});
    let first = keyed(&api, "/issues/1/send-at", "send-at-1", body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let o = first.json();
    assert_eq!(o["number"], 1, "{o}");
    assert_eq!(o["timezone"], "Europe/Berlin", "{o}");
    assert_eq!(o["send_at"], api_time(expected), "{o}");
    assert!(
        o["send_at_local"]
            .as_str()
            .is_some_and(|l| l.starts_with(&format!("{}T09:00:00+0", day.format("%Y-%m-%d")))),
        "{o}"
    );
    // A retry with the same key replays the answer; nothing is scheduled twice.
    let retry = keyed(&api, "/issues/1/send-at", "send-at-1", body.clone()).await;
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.json(), o);
    assert_eq!(issue_status(&api, 1).await, "scheduled");

    let listed = api.get("/schedule").await.json();
    assert_eq!(listed["schedule"], Value::Null, "no schedule configured");
    assert_eq!(listed["next"], json!([]));
    assert_eq!(
        listed["one_offs"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["one_offs"][0]["number"], 1);
    assert_eq!(listed["one_offs"][0]["send_at"], api_time(expected));

    // A new request (another key) for an issue that is no longer a draft.
    let p = keyed(&api, "/issues/1/send-at", "send-at-2", body.clone())
        .await
        .problem(409);
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("draft")),
        "{p}"
    );
    // A one-off send has no slot to hold or release.
    for action in ["hold", "release", "recompose"] {
        let p = api
            .post_empty(&format!("/issues/1/schedule/{action}"))
            .await
            .problem(409);
        assert!(
            p["detail"]
                .as_str()
                .is_some_and(|d| d.contains("not waiting")),
            "{action}: {p}"
        );
    }

    let cancelled = api.post_empty("/issues/1/schedule/cancel").await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    let c = cancelled.json();
    assert_eq!(
        (c["kind"].as_str(), c["status"].as_str()),
        (Some("one_off"), Some("draft")),
        "{c}"
    );
    assert_eq!(issue_status(&api, 1).await, "draft");
    assert_eq!(api.get("/schedule").await.json()["one_offs"], json!([]));
    api.post_empty("/issues/1/schedule/cancel")
        .await
        .problem(409);

    // An RFC 3339 instant; the zone defaults to the newsletter's.
    let instant = (Utc::now() + chrono::Duration::days(2))
        .with_nanosecond(0)
        .unwrap();
    let r = api
        .post(
            "/issues/1/send-at",
            json!({"at": instant.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let o = r.json();
    assert_eq!(o["send_at"], api_time(instant), "{o}");
    assert_eq!(o["timezone"], "Europe/Berlin", "{o}");
    assert_eq!(
        api.post_empty("/issues/1/schedule/cancel").await.json()["status"],
        "draft"
    );

    // Unacceptable times and zones name their field.
    for (body, field, says) in [
        (json!({"at": "2020-01-03 09:00"}), "at", "past"),
        (json!({"at": "2020-01-03T08:00:00Z"}), "at", "past"),
        (json!({"at": "next friday"}), "at", "2026-05-08 09:00"),
        (
            json!({"at": wall, "timezone": "Mars/Olympus_Mons"}),
            "timezone",
            "IANA",
        ),
        // Berlin's clocks skip 02:00-03:00 on 28 March 2027.
        (
            json!({"at": "2027-03-28 02:30", "timezone": "Europe/Berlin"}),
            "at",
            "does not exist",
        ),
        (json!({"timezone": "UTC"}), "at", "at"),
        (json!({"at": wall, "zone": "UTC"}), "zone", "zone"),
    ] {
        let p = api
            .post("/issues/1/send-at", body.clone())
            .await
            .problem(422);
        assert_eq!(p["errors"][0]["field"], field, "{body}: {p}");
        assert!(
            p["detail"].as_str().is_some_and(|d| d.contains(says)),
            "{body}: {p}"
        );
    }
    assert_eq!(
        issue_status(&api, 1).await,
        "draft",
        "nothing scheduled by a refusal"
    );

    // Unknown issues, and no token.
    api.post("/issues/99/send-at", json!({"at": wall}))
        .await
        .problem(404);
    for action in ["hold", "release", "recompose", "cancel"] {
        api.post_empty(&format!("/issues/99/schedule/{action}"))
            .await
            .problem(404);
        Api::send(
            t.client
                .post(api.url(&format!("/issues/1/schedule/{action}"))),
        )
        .await
        .problem(401);
    }
    Api::send(
        t.client
            .post(api.url("/issues/1/send-at"))
            .json(&json!({"at": wall})),
    )
    .await
    .problem(401);
    assert_eq!(issue_status(&api, 1).await, "draft");
}

async fn hold_release_recompose_and_cancel_a_scheduled_issue(backend: Backend) {
    let t = weekly(backend, "UTC", true).await;
    let api = Api::new(&t).await;
    let clock = ManualClock::new(utc(2026, 5, 6, 12, 0));
    let s = scheduler(&t, &clock);
    s.tick().await.unwrap();
    api.item("Previewed story", true).await;
    // 18 h before Friday 09:00: composed and previewed, waiting for its slot.
    clock.set(utc(2026, 5, 7, 15, 1));
    assert_eq!(s.tick().await.unwrap().composed, 1);
    t.nth_mail_to(PREVIEW_TO, 1).await;
    assert_eq!(issue_status(&api, 1).await, "scheduled");
    let slot = api_time(utc(2026, 5, 8, 9, 0));

    // A scheduled issue is not a draft: it cannot also be sent at a time.
    api.post("/issues/1/send-at", json!({"at": "2099-01-01 09:00"}))
        .await
        .problem(409);

    let held = keyed(&api, "/issues/1/schedule/hold", "hold-1", json!({})).await;
    assert_eq!(held.status, 200, "{}", held.text());
    let h = held.json();
    assert_eq!(
        (h["state"].as_str(), h["issue_number"].as_i64()),
        (Some("held"), Some(1)),
        "{h}"
    );
    assert_eq!(h["slot_at"], slot, "{h}");
    assert!(
        h["reason"].as_str().is_some_and(|r| r.contains("held")),
        "{h}"
    );
    let replay = keyed(&api, "/issues/1/schedule/hold", "hold-1", json!({})).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    api.post_empty("/issues/1/schedule/hold").await.problem(409);

    let released = api.post_empty("/issues/1/schedule/release").await;
    assert_eq!(released.status, 200, "{}", released.text());
    assert_eq!(released.json()["state"], "waiting");
    api.post_empty("/issues/1/schedule/release")
        .await
        .problem(409);

    // A late item: recompose takes it in, at the same slot.
    api.item("Late addition", true).await;
    let r = api.post_empty("/issues/1/schedule/recompose").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new = r.json();
    assert_eq!(new["status"], "scheduled", "{new}");
    let number = new["number"].as_i64().expect("number");
    let shown = api.get(&format!("/issues/{number}")).await.json();
    assert_eq!(shown["items"].as_array().map(Vec::len), Some(2), "{shown}");

    let r = api
        .post_empty(&format!("/issues/{number}/schedule/cancel"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!(
        (c["kind"].as_str(), c["status"].as_str()),
        (Some("slot"), Some("cancelled")),
        "{c}"
    );
    assert_eq!(c["slot_at"], slot, "{c}");
    api.post_empty(&format!("/issues/{number}/schedule/hold"))
        .await
        .problem(409);

    // The slot passes and sends nothing; the history says why.
    clock.set(utc(2026, 5, 8, 9, 1));
    s.tick().await.unwrap();
    assert_eq!(t.count("SELECT COUNT(*) FROM deliveries").await, 0);
    let o = api.get("/schedule").await.json();
    assert_eq!(o["history"][0]["state"], "cancelled", "{o}");
    assert_eq!(o["history"][0]["slot_at"], slot, "{o}");
    assert!(
        o["history"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cancelled by an editor")),
        "{o}"
    );
}

async fn skip_and_unskip_a_slot(backend: Backend) {
    let t = weekly(backend, "Asia/Almaty", false).await;
    let api = Api::new(&t).await;

    let r = Api::send(
        api.request(reqwest::Method::POST, "/schedule/skip")
            .json(&json!({})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let slot = r.json();
    assert_eq!(slot["skipped"], true, "{slot}");
    let next = api.get("/schedule?next=2").await.json();
    assert_eq!(next["next"][0]["utc"], slot["utc"], "the next slot: {next}");
    assert_eq!(next["next"][0]["skipped"], true, "{next}");
    assert_eq!(next["next"][1]["skipped"], false, "{next}");

    // Reinstated by its instant; a second unskip is a conflict.
    let body = json!({ "at": slot["utc"] });
    let r = Api::send(
        api.request(reqwest::Method::POST, "/schedule/unskip")
            .json(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["skipped"], false);
    Api::send(
        api.request(reqwest::Method::POST, "/schedule/unskip")
            .json(&body),
    )
    .await
    .problem(409);
    // Not a slot, no time, an unknown field.
    let p = Api::send(
        api.request(reqwest::Method::POST, "/schedule/skip")
            .json(&json!({ "at": "2099-01-01 10:17" })),
    )
    .await
    .problem(422);
    assert!(
        p["errors"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not a slot")),
        "{p}"
    );
    Api::send(
        api.request(reqwest::Method::POST, "/schedule/unskip")
            .json(&json!({})),
    )
    .await
    .problem(422);
    Api::send(
        api.request(reqwest::Method::POST, "/schedule/skip")
            .json(&json!({ "when": "x" })),
    )
    .await
    .problem(422);
    let anonymous = Api::send(t.client.post(api.url("/schedule/skip")).json(&json!({}))).await;
    anonymous.problem(401);
}

on_each_backend!(
    overview_lists_slots_and_history,
    send_at_is_listed_then_cancelled,
    hold_release_recompose_and_cancel_a_scheduled_issue,
    skip_and_unskip_a_slot,
);

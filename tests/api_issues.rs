//! Issues through the editors' API over real HTTP: compose, list with
//! paging, show, previews, test copies over SMTP, send now (idempotent
//! retry), pause/resume/cancel/retry and progress, with their 404/409/422.

mod support;

use serde_json::json;
use support::api::{Api, ApiResponse};
use support::app::{Backend, TestApp};

async fn send_keyed(api: &Api<'_>, path: &str, key: &str) -> ApiResponse {
    Api::send(
        api.request(reqwest::Method::POST, path)
            .header("Idempotency-Key", key),
    )
    .await
}

async fn compose_preview_and_test_copies(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let api = Api::new(&t).await;

    // Nothing ready: 409 with the reason.
    let p = api.post("/issues", json!({})).await.problem(409);
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("no items")),
        "{p}"
    );

    api.item("First story", true).await;
    api.item("Second story", true).await;
    // A bad field is 422 naming it.
    let p = api
        .post("/issues", json!({"subject": "two\nlines"}))
        .await
        .problem(422);
    assert_eq!(p["errors"][0]["field"], "subject", "{p}");

    let composed = api.post("/issues", json!({"subject": "Week one"})).await;
    assert_eq!(composed.status, 201, "{}", composed.text());
    let issue = composed.json();
    assert_eq!(issue["number"], 1);
    assert_eq!(issue["subject"], "Week one");
    assert_eq!(issue["status"], "draft");

    // Show by number and by slug, with the frozen items.
    let by_number = api.get("/issues/1").await;
    assert_eq!(by_number.status, 200, "{}", by_number.text());
    let shown = by_number.json();
    assert_eq!(shown["items"].as_array().map(Vec::len), Some(2), "{shown}");
    assert_eq!(shown["items"][0]["state"], "published");
    let slug = issue["slug"].as_str().expect("slug");
    assert_eq!(
        api.get(&format!("/issues/{slug}")).await.json()["number"],
        1
    );
    api.get("/issues/42").await.problem(404);

    // Previews: HTML (sandboxed), text, the whole message.
    let html = api.get("/issues/1/preview").await;
    assert_eq!(html.status, 200);
    assert!(
        html.header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
    assert!(
        html.header("content-security-policy")
            .is_some_and(|c| c.contains("sandbox"))
    );
    assert!(html.text().contains("First story"));
    let text = api.get("/issues/1/preview?format=text").await;
    assert!(
        text.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    assert!(text.text().contains("Second story"));
    let eml = api.get("/issues/1/preview?format=eml").await;
    assert_eq!(eml.header("content-type"), Some("message/rfc822"));
    assert!(eml.text().contains("Subject: Week one"), "{}", eml.text());
    let p = api.get("/issues/1/preview?format=pdf").await.problem(422);
    assert_eq!(p["errors"][0]["field"], "format");

    // Test copies go over real SMTP; bad addresses are named one by one.
    let p = api
        .post(
            "/issues/1/test",
            json!({"to": ["ok@example.com", "not an address"]}),
        )
        .await
        .problem(422);
    assert_eq!(p["errors"][0]["field"], "to[1]", "{p}");
    api.post("/issues/1/test", json!({"to": []}))
        .await
        .problem(422);
    let sent = api
        .post("/issues/1/test", json!({"to": ["proof@example.com"]}))
        .await;
    assert_eq!(sent.status, 200, "{}", sent.text());
    let mail = t.nth_mail_to("proof@example.com", 1).await;
    assert!(mail.data_str().contains("[TEST] Week one"));
    // The issue is untouched.
    assert_eq!(api.get("/issues/1").await.json()["status"], "draft");

    // Paging: three issues, two per page, newest first.
    for n in 2..=3 {
        api.item(&format!("Story {n}"), true).await;
        assert_eq!(api.post("/issues", json!({})).await.status, 201);
    }
    let page = api.get("/issues?limit=2").await.json();
    let numbers: Vec<i64> = page["issues"]
        .as_array()
        .expect("issues")
        .iter()
        .filter_map(|i| i["number"].as_i64())
        .collect();
    assert_eq!(numbers, vec![3, 2]);
    assert_eq!(page["next_before"], 2);
    let page = api.get("/issues?limit=2&before=2").await.json();
    assert_eq!(page["issues"][0]["number"], 1);
    assert_eq!(page["next_before"], serde_json::Value::Null);
    api.get("/issues?limit=0").await.problem(422);
}

/// A retried "send now" with the same Idempotency-Key replays the first
/// answer and enqueues nobody twice; the same key on another request is
/// refused; the controls answer 409 where the issue's state forbids them.
async fn send_now_is_idempotent_and_controls_follow_state(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    for n in 0..3 {
        t.add_confirmed(&format!("reader{n}@example.com")).await;
    }
    let api = Api::new(&t).await;
    api.item("Only story", true).await;
    assert_eq!(api.post("/issues", json!({})).await.status, 201);

    let first = send_keyed(&api, "/issues/1/send", "send-issue-1").await;
    assert_eq!(first.status, 202, "{}", first.text());
    assert_eq!(first.json()["queued"], 3);
    assert_eq!(first.header("idempotent-replayed"), None);
    let retry = send_keyed(&api, "/issues/1/send", "send-issue-1").await;
    assert_eq!(retry.status, 202);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    // The very same answer: "3 queued", not a second run's "0 queued".
    assert_eq!(retry.body, first.body);
    assert_eq!(t.count("SELECT COUNT(*) FROM deliveries").await, 3);
    // Same key, another request: refused, nothing done.
    let p = send_keyed(&api, "/issues/1/pause", "send-issue-1")
        .await
        .problem(422);
    assert_eq!(p["errors"][0]["field"], "Idempotency-Key", "{p}");
    assert_eq!(api.get("/issues/1").await.json()["status"], "sending");
    // A key is remembered for a day; after that it may name a new request.
    t.exec("UPDATE idempotency_keys SET created_at = created_at - 90000000")
        .await;
    let fresh = send_keyed(&api, "/issues/1/send", "send-issue-1").await;
    assert_eq!(fresh.status, 202, "{}", fresh.text());
    assert_eq!(fresh.header("idempotent-replayed"), None);
    assert_eq!(fresh.json()["queued"], 0, "nobody is enqueued twice");
    // A malformed key is refused before anything runs.
    send_keyed(&api, "/issues/1/send", "").await.problem(422);

    let progress = api.get("/issues/1/progress").await.json();
    assert_eq!(progress["total"], 3, "{progress}");
    assert_eq!(progress["counts"]["queued"], 3, "{progress}");
    assert_eq!(progress["status"], "sending");

    // Resume of a sending issue is a conflict; pause, then resume.
    let p = api.post_empty("/issues/1/resume").await.problem(409);
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("paused")),
        "{p}"
    );
    assert_eq!(
        api.post_empty("/issues/1/pause").await.json()["status"],
        "paused"
    );
    api.post_empty("/issues/1/send").await.problem(409);
    assert_eq!(
        api.post_empty("/issues/1/resume").await.json()["status"],
        "sending"
    );

    let cancelled = api.post_empty("/issues/1/cancel").await.json();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["deliveries"], 3);
    // Sending or retrying a cancelled issue: 409 with the reason.
    let p = api.post_empty("/issues/1/send").await.problem(409);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("cancelled")),
        "{p}"
    );
    api.post_empty("/issues/1/retry?failed=true")
        .await
        .problem(409);
    api.post_empty("/issues/1/cancel").await.problem(409);
    api.post_empty("/issues/9/send").await.problem(404);
    api.get("/issues/9/progress").await.problem(404);
}

/// Retries racing the first request: each gets the first answer or "still
/// running" (409), never a second run.
async fn concurrent_retries_run_once(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    for n in 0..3 {
        t.add_confirmed(&format!("reader{n}@example.com")).await;
    }
    let api = Api::new(&t).await;
    api.item("Only story", true).await;
    assert_eq!(api.post("/issues", json!({})).await.status, 201);
    let answers =
        futures::future::join_all((0..6).map(|_| send_keyed(&api, "/issues/1/send", "race-key")))
            .await;
    let mut ran = 0;
    for a in &answers {
        match a.status {
            202 => {
                assert_eq!(a.json()["queued"], 3, "every 202 is the first run's answer");
                ran += u16::from(a.header("idempotent-replayed").is_none());
            }
            409 => {
                a.problem(409);
            }
            other => panic!("unexpected {other}: {}", a.text()),
        }
    }
    assert_eq!(ran, 1, "exactly one request ran");
    assert_eq!(t.count("SELECT COUNT(*) FROM deliveries").await, 3);
    // Once it has finished, a retry gets the stored answer.
    let late = send_keyed(&api, "/issues/1/send", "race-key").await;
    assert_eq!(late.header("idempotent-replayed"), Some("true"));
    assert_eq!(late.json()["queued"], 3);
}

on_each_backend!(
    compose_preview_and_test_copies,
    send_now_is_idempotent_and_controls_follow_state,
    concurrent_retries_run_once,
);

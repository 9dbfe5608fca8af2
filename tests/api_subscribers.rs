//! Subscribers through the editors' API over real HTTP: cursor paging with
//! a state filter, add (double opt-in over real SMTP), CSV import streamed
//! with its per-row report, CSV export streamed page by page, show with
//! consent history and deliveries, unsubscribe, erase.

mod support;

use serde_json::json;
use support::api::{Api, ApiResponse};
use support::app::{Backend, TestApp};

async fn upload_csv(api: &Api<'_>, query: &str, csv: String) -> ApiResponse {
    Api::send(
        api.request(
            reqwest::Method::POST,
            &format!("/subscribers/import{query}"),
        )
        .header("content-type", "text/csv")
        .body(csv),
    )
    .await
}

async fn paging_add_and_import(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let api = Api::new(&t).await;
    for n in 0..5 {
        t.add_confirmed(&format!("reader{n}@example.com")).await;
    }

    // Add: double opt-in by default, over real SMTP.
    let added = api
        .post(
            "/subscribers",
            json!({"email": "New@Example.com", "name": "Neu"}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text());
    assert_eq!(added.json()["outcome"], "confirmation_sent");
    t.nth_mail_to("New@Example.com", 1).await;
    let p = api
        .post("/subscribers", json!({"email": "not an address"}))
        .await
        .problem(422);
    assert_eq!(p["errors"][0]["field"], "email", "{p}");

    // Keyset pages of two: 5 confirmed → 2 + 2 + 1, no repeats.
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    for _ in 0..5 {
        let query = match after {
            Some(a) => format!("/subscribers?state=confirmed&limit=2&after={a}"),
            None => "/subscribers?state=confirmed&limit=2".to_owned(),
        };
        let page = api.get(&query).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        for s in page["subscribers"].as_array().expect("subscribers") {
            assert_eq!(s["state"], "confirmed");
            seen.push(s["email"].as_str().expect("email").to_owned());
        }
        match page["next_after"].as_i64() {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    seen.dedup();
    assert_eq!(seen.len(), 5);
    let pending = api.get("/subscribers?state=pending").await.json();
    assert_eq!(
        pending["subscribers"].as_array().map(Vec::len),
        Some(1),
        "{pending}"
    );
    // The local part is kept as typed; the domain is normalised.
    assert_eq!(pending["subscribers"][0]["email"], "New@example.com");
    api.get("/subscribers?state=happy").await.problem(422);
    api.get("/subscribers?limit=5000").await.problem(422);

    // Import: the per-row report names each refused line.
    let report = upload_csv(
        &api,
        "?confirmed=true",
        "email,name,city\nimported1@example.com,Ann,Paris\nbad-address,Bob,\nimported2@example.com,,Oslo\nreader0@example.com,,\n".into(),
    )
    .await;
    assert_eq!(report.status, 200, "{}", report.text());
    let r = report.json();
    assert_eq!(r["imported"], 2, "{r}");
    assert_eq!(r["updated"], 1, "{r}");
    assert_eq!(r["invalid"], 1, "{r}");
    assert_eq!(r["rejected"][0]["line"], 3, "{r}");
    assert_eq!(r["rejected"][0]["email"], "bad-address", "{r}");
    assert!(
        r["rejected"][0]["reason"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    let shown = api.get("/subscribers/imported1@example.com").await.json();
    assert_eq!(shown["attributes"]["city"], "Paris", "{shown}");

    // Not a subscriber CSV: 422; not CSV at all: 415.
    let p = upload_csv(&api, "", "name,city\nAnn,Paris\n".into())
        .await
        .problem(422);
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("email")),
        "{p}"
    );
    let r = Api::send(
        api.request(reqwest::Method::POST, "/subscribers/import")
            .json(&json!({"email": "x@example.com"})),
    )
    .await;
    r.problem(415);

    // A large upload streams through (far past the JSON body limit).
    let mut big = String::from("email\n");
    for n in 0..20_000 {
        big.push_str(&format!("bulk{n}@example.com\n"));
    }
    let r = upload_csv(&api, "?confirmed=true", big).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["imported"], 20_000);
}

async fn export_show_unsubscribe_erase(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let api = Api::new(&t).await;
    // 2,500 rows: the export spans three pages of the store.
    let mut csv = String::from("email,name\n=danger@example.com,=HYPERLINK(\"x\")\n");
    for n in 0..2_499 {
        csv.push_str(&format!("row{n}@example.com,Row {n}\n"));
    }
    let r = upload_csv(&api, "?confirmed=true", csv).await;
    assert_eq!(r.json()["imported"], 2_500, "{}", r.text());

    let export = api.get("/subscribers/export").await;
    assert_eq!(export.status, 200);
    assert!(
        export
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/csv"))
    );
    let text = export.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "email,name,state,created_at,confirmed_at,unsubscribed_at,attributes"
    );
    assert_eq!(lines.len(), 2_501, "header + every row once");
    let mut emails: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap_or(""))
        .collect();
    emails.sort();
    emails.dedup();
    assert_eq!(emails.len(), 2_500);
    // Formula cells are neutralised unless raw.
    assert!(text.contains("'=danger@example.com"), "{}", &text[..300]);
    let raw = api
        .get("/subscribers/export?raw=true&state=confirmed")
        .await
        .text();
    assert!(raw.lines().any(|l| l.starts_with("=danger@example.com")));
    assert_eq!(
        api.get("/subscribers/export?state=pending")
            .await
            .text()
            .lines()
            .count(),
        1
    );

    // Show: consent history and deliveries.
    api.item("Story", true).await;
    assert_eq!(api.post("/issues", json!({})).await.status, 201);
    assert_eq!(api.post_empty("/issues/1/send").await.status, 202);
    let profile = api.get("/subscribers/ROW7@example.com").await;
    assert_eq!(profile.status, 200, "{}", profile.text());
    let p = profile.json();
    assert_eq!(p["email"], "row7@example.com");
    assert_eq!(p["subscriptions"][0]["state"], "confirmed");
    assert!(
        p["consent_history"]
            .as_array()
            .is_some_and(|h| !h.is_empty()),
        "{p}"
    );
    assert_eq!(p["deliveries"][0]["issue_number"], 1, "{p}");
    assert_eq!(p["deliveries"][0]["state"], "queued", "{p}");
    api.get("/subscribers/nobody@example.com")
        .await
        .problem(404);
    let bad = api.get("/subscribers/not-an-address").await.problem(422);
    assert_eq!(bad["errors"][0]["field"], "email");

    // Unsubscribe, twice; the history grows, the record stays.
    let u = api
        .post_empty("/subscribers/row7@example.com/unsubscribe")
        .await;
    assert_eq!(u.status, 200, "{}", u.text());
    assert_eq!(u.json()["outcome"], "unsubscribed");
    let again = api
        .post_empty("/subscribers/row7@example.com/unsubscribe")
        .await;
    assert_eq!(again.json()["outcome"], "already_unsubscribed");
    let after = api.get("/subscribers/row7@example.com").await.json();
    assert_eq!(after["subscriptions"][0]["state"], "unsubscribed");
    // The history says who did it.
    let last = after["consent_history"]
        .as_array()
        .and_then(|h| h.last())
        .cloned()
        .expect("event");
    assert_eq!(last["kind"], "unsubscribe", "{last}");
    assert_eq!(
        last["source"],
        format!("api:{}", support::api::EDITOR),
        "{last}"
    );
    api.post_empty("/subscribers/nobody@example.com/unsubscribe")
        .await
        .problem(404);
    // Adding it back as confirmed is refused: only a fresh opt-in may.
    api.post(
        "/subscribers",
        json!({"email": "row7@example.com", "confirmed": true}),
    )
    .await
    .problem(409);

    // Erase: gone, and a second erase is 404.
    assert_eq!(
        api.delete("/subscribers/row8@example.com").await.status,
        204
    );
    api.get("/subscribers/row8@example.com").await.problem(404);
    api.delete("/subscribers/row8@example.com")
        .await
        .problem(404);
}

on_each_backend!(paging_add_and_import, export_show_unsubscribe_erase);

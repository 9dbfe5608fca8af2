//! The editors' API through real HTTP: tokens (issued by the real `herald
//! editor` commands), RFC 9457 problems, items.

mod support;

use serde_json::json;
use support::api::{Api, ApiResponse, EDITOR};
use support::app::{Backend, TestApp};
use support::cli::{herald_async, text};

async fn get_with_auth(t: &TestApp, auth: Option<&str>) -> ApiResponse {
    let mut request = t.client.get(t.url("/api/v1/items"));
    if let Some(value) = auth {
        request = request.header("Authorization", value);
    }
    Api::send(request).await
}

#[track_caller]
fn assert_unauthorized(r: &ApiResponse) {
    r.problem(401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{:?}",
        r.headers
    );
}

/// Tokens come from the CLI, are printed once, never listed, and stop
/// working when revoked; anything else is 401 with a Bearer challenge.
async fn tokens_from_the_cli_authenticate_until_revoked(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let add = herald_async(&t, &["editor", "add", EDITOR, "--name", "Ed Itor"])
        .output()
        .await
        .expect("herald editor add");
    assert!(add.status.success(), "{}", text(&add.stderr));
    let token = text(&add.stdout).trim().to_owned();
    assert!(token.starts_with("hrld_"), "stdout: {token:?}");
    // Shown once, on stdout only (stderr is what ends up in logs).
    assert!(!text(&add.stderr).contains(&token));

    let ok = get_with_auth(&t, Some(&format!("Bearer {token}"))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json(), json!([]));
    // The scheme is case-insensitive (RFC 9110).
    let ok = get_with_auth(&t, Some(&format!("bearer {token}"))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());

    assert_unauthorized(&get_with_auth(&t, None).await);
    assert_unauthorized(&get_with_auth(&t, Some("Bearer nonsense")).await);
    assert_unauthorized(&get_with_auth(&t, Some(&format!("Basic {token}"))).await);
    let mut wrong = token.clone();
    let last = wrong.pop().expect("token char");
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    assert_unauthorized(&get_with_auth(&t, Some(&format!("Bearer {wrong}"))).await);
    // 401 comes before the body is looked at.
    let r = Api::send(
        t.client
            .post(t.url("/api/v1/items"))
            .header("content-type", "text/plain")
            .body("x"),
    )
    .await;
    assert_unauthorized(&r);

    // A second token; the list shows ids and dates, never a token.
    let second = herald_async(&t, &["editor", "token", "EDITOR@news.herald.test"])
        .output()
        .await
        .expect("herald editor token");
    assert!(second.status.success(), "{}", text(&second.stderr));
    let second = text(&second.stdout).trim().to_owned();
    assert!(second.starts_with("hrld_") && second != token);
    let list = herald_async(&t, &["editor", "list"])
        .output()
        .await
        .expect("herald editor list");
    let listing = text(&list.stdout);
    assert!(listing.contains(EDITOR), "{listing}");
    assert!(!listing.contains("hrld_"), "a token was listed: {listing}");
    assert!(listing.contains("live, last used"), "{listing}");
    assert!(listing.contains("live, never used"), "{listing}");
    // Nothing but hashes in the database.
    assert_eq!(
        t.count(&format!(
            "SELECT COUNT(*) FROM api_tokens WHERE token_hash IN ('{token}', '{second}')"
        ))
        .await,
        0
    );

    let first_id = t.count("SELECT MIN(id) FROM api_tokens").await;
    let revoke = herald_async(&t, &["editor", "revoke", &first_id.to_string()])
        .output()
        .await
        .expect("herald editor revoke");
    assert!(revoke.status.success(), "{}", text(&revoke.stderr));
    assert_unauthorized(&get_with_auth(&t, Some(&format!("Bearer {token}"))).await);
    let still = get_with_auth(&t, Some(&format!("Bearer {second}"))).await;
    assert_eq!(still.status, 200, "{}", still.text());

    // Revoking twice, or an editor twice, is an error that says what to do.
    let again = herald_async(&t, &["editor", "revoke", &first_id.to_string()])
        .output()
        .await
        .expect("herald editor revoke");
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("herald editor list"),
        "{}",
        text(&again.stderr)
    );
    let dup = herald_async(&t, &["editor", "add", "Editor@News.Herald.Test"])
        .output()
        .await
        .expect("herald editor add");
    assert!(!dup.status.success());
    assert!(
        text(&dup.stderr).contains("herald editor token"),
        "{}",
        text(&dup.stderr)
    );
}

/// Create, show, list, update, ready/draft, delete; each failure is a
/// problem document with the right status.
async fn items_lifecycle_and_problems(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let api = Api::new(&t).await;

    let created = api
        .post(
            "/items",
            json!({"headline": "Rust 2027", "outlet": "Blog", "url": "https://example.com/a",
                   "summary": "It is *here*.", "published": "2026-11-30", "author": "Ann"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let item = created.json();
    let id = item["id"].as_i64().expect("id");
    assert_eq!(item["state"], "draft");
    assert_eq!(item["published"], "2026-11-30");
    assert!(
        item["created_at"]
            .as_str()
            .is_some_and(|c| c.ends_with('Z')),
        "{item}"
    );
    assert_eq!(created.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(created.header("cache-control"), Some("no-store"));

    let shown = api.get(&format!("/items/{id}")).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json()["headline"], "Rust 2027");

    let patched = api
        .patch(
            &format!("/items/{id}"),
            json!({"headline": "Rust 2027, again", "author": ""}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(patched.json()["headline"], "Rust 2027, again");
    assert_eq!(patched.json()["author"], serde_json::Value::Null);
    assert_eq!(patched.json()["summary"], "It is *here*.");

    let ready = api.post_empty(&format!("/items/{id}/ready")).await;
    assert_eq!(ready.json()["state"], "ready");
    let listed = api.get("/items?state=ready").await;
    assert_eq!(listed.json().as_array().map(Vec::len), Some(1));
    let draft = api.post_empty(&format!("/items/{id}/draft")).await;
    assert_eq!(draft.json()["state"], "draft");
    assert_eq!(api.get("/items?state=ready").await.json(), json!([]));

    // 422 names every bad field at once.
    let bad = api
        .post(
            "/items",
            json!({"headline": "", "outlet": "Blog", "url": "ftp://example.com",
                   "published": "yesterday", "author_role": "Editor"}),
        )
        .await;
    let p = bad.problem(422);
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    for f in ["headline", "url", "published", "author_role"] {
        assert!(fields.contains(&f), "{f} not named: {p}");
    }
    assert!(!fields.contains(&"outlet"), "{p}");
    // A missing field, a wrong type and a typo are 422 naming the field.
    let p = api
        .post("/items", json!({"outlet": "Blog", "url": "https://e.com"}))
        .await
        .problem(422);
    assert_eq!(p["errors"][0]["field"], "headline", "{p}");
    let p = api
        .post(
            "/items",
            json!({"headline": "h", "outlet": "o", "url": "https://e.com", "ready": "yes"}),
        )
        .await
        .problem(422);
    assert_eq!(p["errors"][0]["field"], "ready", "{p}");
    let p = api
        .patch(&format!("/items/{id}"), json!({"headlnie": "typo"}))
        .await
        .problem(422);
    assert_eq!(p["errors"][0]["field"], "headlnie", "{p}");
    let p = api.get("/items?state=sideways").await.problem(422);
    assert_eq!(p["errors"][0]["field"], "state", "{p}");

    // Malformed JSON is 400, a non-JSON body 415, an oversized one 413.
    api_send_raw(&api, "/items", "application/json", "{\"headline\": ")
        .await
        .problem(400);
    api_send_raw(&api, "/items", "text/plain", "headline=x")
        .await
        .problem(415);
    let huge = format!("{{\"headline\": \"{}\"}}", "x".repeat(300 * 1024));
    api_send_raw(&api, "/items", "application/json", &huge)
        .await
        .problem(413);

    // Unknown ids are 404; a path that is not a number is 400; an unknown
    // route 404 and a wrong method 405, all as problems.
    api.get("/items/999999").await.problem(404);
    api.delete("/items/999999").await.problem(404);
    api.post_empty("/items/999999/ready").await.problem(404);
    api.get("/items/abc").await.problem(400);
    let p = api.get("/nothing-here").await.problem(404);
    assert_eq!(p["type"], "urn:herald:problem:no_such_route");
    let r = Api::send(api.request(reqwest::Method::PUT, "/items")).await;
    r.problem(405);
    assert!(r.header("allow").is_some(), "{:?}", r.headers);
    // Unknown newsletter: 404 naming it.
    let p = api.get("/items?newsletter=nope").await.problem(404);
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("nope")),
        "{p}"
    );

    let deleted = api.delete(&format!("/items/{id}")).await;
    assert_eq!(deleted.status, 204);
    api.get(&format!("/items/{id}")).await.problem(404);
}

async fn api_send_raw(api: &Api<'_>, path: &str, content_type: &str, body: &str) -> ApiResponse {
    Api::send(
        api.request(reqwest::Method::POST, path)
            .header("content-type", content_type)
            .body(body.to_owned()),
    )
    .await
}

/// A digest file posted as the body imports all of its items or none.
async fn digest_file_import(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let api = Api::new(&t).await;
    let file = "+++\ntitle = \"Week 48\"\n+++\nHello readers.\n\n+++\nheadline = \"One\"\noutlet = \"A\"\nurl = \"https://example.com/1\"\n+++\nFirst.\n\n+++\nheadline = \"Two\"\noutlet = \"B\"\nurl = \"https://example.com/2\"\n+++\nSecond.\n";
    let r = api_send_raw(
        &api,
        "/items/import?ready=true",
        "text/markdown; charset=utf-8",
        file,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let body = r.json();
    assert_eq!(body["ids"].as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(body["intro_saved"], true);
    assert_eq!(
        api.get("/items?state=ready")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // One bad item: nothing is imported, and the problem names the line.
    let bad = "+++\nheadline = \"Fine\"\noutlet = \"A\"\nurl = \"https://example.com/1\"\n+++\nok\n\n+++\nheadline = \"Bad\"\noutlet = \"B\"\nurl = \"javascript:alert(1)\"\n+++\nno\n";
    let p = api_send_raw(&api, "/items/import", "text/markdown", bad)
        .await
        .problem(422);
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("url")),
        "{p}"
    );
    assert_eq!(
        api.get("/items").await.json().as_array().map(Vec::len),
        Some(2)
    );

    // JSON is not a digest file.
    api_send_raw(&api, "/items/import", "application/json", "{}")
        .await
        .problem(415);
    // Over 4 MB: 413 before parsing.
    let huge = "x".repeat(4 * 1024 * 1024 + 10);
    api_send_raw(&api, "/items/import", "text/markdown", &huge)
        .await
        .problem(413);
}

on_each_backend!(
    tokens_from_the_cli_authenticate_until_revoked,
    items_lifecycle_and_problems,
    digest_file_import,
);

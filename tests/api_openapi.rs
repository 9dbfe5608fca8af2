//! The OpenAPI document against the live router, over HTTP: every
//! documented (path, method) is served, and every other method on a
//! documented path is refused (405), so the document and the router agree.
//! Routes can only be registered through `utoipa_axum::routes!` (see
//! `src/web/api/mod.rs`), which documents them by construction; this test
//! checks the result rather than trusting it.

mod support;

use serde_json::Value;
use support::api::Api;
use support::app::{Backend, TestApp};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Fills path parameters with values that name nothing in a fresh database.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                if seg.contains("email") {
                    "nobody@example.com".to_owned()
                } else {
                    "999999".to_owned()
                }
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn document_and_router_agree(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let api = Api::new(&t).await;

    // Public, so tools can fetch it without a token.
    let doc = Api::send(t.client.get(t.url("/api/v1/openapi.json"))).await;
    assert_eq!(doc.status, 200, "{}", doc.text());
    let doc: Value = doc.json();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let paths = doc["paths"].as_object().expect("paths");

    // What this slice serves must be documented (a regression guard: a
    // route removed from the router would otherwise vanish unnoticed).
    for expected in [
        "/api/v1/openapi.json",
        "/api/v1/items",
        "/api/v1/items/{id}",
        "/api/v1/items/{id}/ready",
        "/api/v1/items/{id}/draft",
        "/api/v1/items/import",
        "/api/v1/issues",
        "/api/v1/issues/{issue}",
        "/api/v1/issues/{issue}/preview",
        "/api/v1/issues/{issue}/test",
        "/api/v1/issues/{issue}/send",
        "/api/v1/issues/{issue}/pause",
        "/api/v1/issues/{issue}/resume",
        "/api/v1/issues/{issue}/cancel",
        "/api/v1/issues/{issue}/retry",
        "/api/v1/issues/{issue}/progress",
        "/api/v1/issues/{issue}/send-at",
        "/api/v1/issues/{issue}/schedule/hold",
        "/api/v1/issues/{issue}/schedule/release",
        "/api/v1/issues/{issue}/schedule/recompose",
        "/api/v1/issues/{issue}/schedule/cancel",
        "/api/v1/schedule",
        "/api/v1/subscribers",
        "/api/v1/subscribers/import",
        "/api/v1/subscribers/export",
        "/api/v1/subscribers/{email}",
        "/api/v1/subscribers/{email}/unsubscribe",
    ] {
        assert!(paths.contains_key(expected), "{expected} is not documented");
    }

    let mut checked = 0;
    for (path, item) in paths {
        assert!(
            path.starts_with("/api/v1/"),
            "{path} outside the API prefix"
        );
        let url = concrete(path);
        for method in METHODS {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = Api::send(t.client.request(m, t.url(&url)).bearer_auth(&api.token)).await;
            let body = r.text();
            match item.get(method) {
                Some(op) => {
                    checked += 1;
                    assert_ne!(
                        r.status, 405,
                        "{method} {path} is documented but not served"
                    );
                    assert!(
                        !body.contains("urn:herald:problem:no_such_route"),
                        "{method} {path} is documented but not routed: {body}"
                    );
                    if matches!(method, "post" | "put" | "patch" | "delete") {
                        let documents_key = op["parameters"].as_array().is_some_and(|ps| {
                            ps.iter()
                                .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
                        });
                        assert!(
                            documents_key,
                            "{method} {path} does not document Idempotency-Key"
                        );
                    }
                    // Every operation but the document itself needs a token,
                    // and says so.
                    if path != "/api/v1/openapi.json" {
                        assert!(
                            op["responses"]["401"].is_object(),
                            "{method} {path} does not document 401"
                        );
                        let anonymous = Api::send(
                            t.client.request(
                                reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
                                    .expect("method"),
                                t.url(&url),
                            ),
                        )
                        .await;
                        assert_eq!(anonymous.status, 401, "{method} {path} without a token");
                    }
                }
                None => assert_eq!(
                    r.status, 405,
                    "{method} {path} is served but not documented: {body}"
                ),
            }
        }
    }
    assert!(checked >= 25, "only {checked} operations documented");
}

on_each_backend!(document_and_router_agree);

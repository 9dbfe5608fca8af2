//! The API under the real `herald serve` binary, beside the public pages:
//! both answer on one bind with their own headers, and with debug logging
//! on, no token (nor its hash) reaches the log.

mod support;

use support::app::{Backend, TestApp};
use support::cli::spawn_serve;

async fn serve_answers_the_api_and_never_logs_tokens(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let served = spawn_serve(&t, &[("HERALD_LOG", "debug")]);
    served.wait_healthy(&t.client).await;
    let base = served.base.clone();

    let issued = t
        .app
        .add_editor(&TestApp::email(support::api::EDITOR), None)
        .await
        .expect("editor");
    let token = issued.token.expose().to_owned();
    let ok = t
        .client
        .get(format!("{base}/api/v1/items"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET items");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    let mut wrong = token.clone();
    wrong.pop();
    wrong.push('_');
    let refused = t
        .client
        .post(format!("{base}/api/v1/issues/1/send"))
        .bearer_auth(&wrong)
        .header("Idempotency-Key", "k1")
        .send()
        .await
        .expect("POST send");
    assert_eq!(refused.status(), 401);
    let conflict = t
        .client
        .post(format!("{base}/api/v1/issues"))
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("POST compose");
    assert_eq!(conflict.status(), 409);

    // The public pages keep their own policy; the API has its own.
    let page = t
        .client
        .get(format!("{base}/subscribe"))
        .send()
        .await
        .expect("GET form");
    assert_eq!(page.status(), 200);
    let page_csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(page_csp.contains("style-src 'sha256-"), "{page_csp}");
    assert!(!page_csp.contains("sandbox"), "{page_csp}");

    let (_, log) = served.stop().await;
    assert!(
        log.contains("/api/v1/items"),
        "debug log saw no API request: {log}"
    );
    assert!(!log.contains("hrld_"), "a token reached the log");
    assert!(
        !log.contains(&issued.token.hash()),
        "a token hash reached the log"
    );
}

on_each_backend!(serve_answers_the_api_and_never_logs_tokens);

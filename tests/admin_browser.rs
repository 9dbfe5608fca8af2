//! The editors' web page in real headless Chromium: log in, add an item
//! (with its live Markdown preview), compose, send a test, send to a few
//! subscribers through the test SMTP server and watch the progress view
//! reach 100 % by itself; a wrong password, a forged CSRF token and a
//! missing session are refused.
//!
//! With `HERALD_SCREENSHOTS=docs/screenshots` it also writes the dashboard,
//! the issue preview and the progress view at 1280 and 390 px
//! (`admin-*.png`, shown in the README).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::admin::{EDITOR, PASSWORD, make_editor};
use support::app::{Backend, TestApp};
use support::browser::Browser;

const WIDTHS: [u32; 2] = [1280, 390];

/// Polls `condition` (a script returning a boolean) until it holds.
async fn wait_for(b: &Browser, what: &str, condition: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if b.eval(condition, json!([])).await == Value::Bool(true) {
            return;
        }
        let body = b
            .eval(
                "return document.body ? document.body.innerText : '';",
                json!([]),
            )
            .await;
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}; the page says: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn text(b: &Browser) -> String {
    b.eval("return document.body.innerText;", json!([]))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn path_is(b: &Browser, path: &str) {
    wait_for(
        b,
        &format!("at {path}"),
        &format!("return location.pathname === {path:?} && document.readyState === 'complete';"),
        Duration::from_secs(20),
    )
    .await;
}

/// Sets form fields by id and submits the form the first one belongs to.
async fn submit(b: &Browser, fields: &[(&str, &str)], form: &str) {
    let pairs: Vec<Value> = fields.iter().map(|(k, v)| json!([k, v])).collect();
    b.eval(
        "for (const [id, v] of arguments[0]) { const el = document.getElementById(id); \
           if (el.type === 'checkbox') { el.checked = v === 'on'; } else { el.value = v; } } \
         document.querySelector(arguments[1]).requestSubmit();",
        json!([pairs, form]),
    )
    .await;
}

async fn shoot(b: &Browser, dir: &Option<PathBuf>, name: &str) {
    let Some(dir) = dir else { return };
    std::fs::create_dir_all(dir).expect("screenshot folder");
    for width in WIDTHS {
        b.set_viewport(width, 900).await;
        let png = dir.join(format!("admin-{name}-{width}.png"));
        b.screenshot_full_page(width, &png).await;
        eprintln!("wrote {}", png.display());
    }
    b.set_viewport(1280, 900).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_runs_an_issue_in_the_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let shots = std::env::var_os("HERALD_SCREENSHOTS").map(PathBuf::from);
    let t = TestApp::spawn(Backend::Sqlite).await;
    make_editor(&t, EDITOR, PASSWORD).await;
    let readers: Vec<String> = (0..3).map(|i| format!("reader{i}@example.org")).collect();
    support::engine::add_confirmed(&t.app, &t.db, t.dir.path(), &readers).await;
    let b = &browser;
    b.set_viewport(1280, 900).await;

    // A missing session: the login page, which then leads back.
    b.open(&t.url("/admin/issues")).await;
    path_is(b, "/admin/login").await;
    submit(
        b,
        &[("email", EDITOR), ("password", "wrong password!")],
        "form",
    )
    .await;
    wait_for(
        b,
        "refusal",
        "return document.body.innerText.includes('do not match');",
        Duration::from_secs(20),
    )
    .await;
    submit(b, &[("email", EDITOR), ("password", PASSWORD)], "form").await;
    path_is(b, "/admin/issues").await;

    // An item, with the live preview rendered by the server as it is typed.
    b.open(&t.url("/admin/items/new")).await;
    path_is(b, "/admin/items/new").await;
    b.eval(
        "const s = document.getElementById('summary'); s.value = 'The rivers are **back**.'; \
         s.dispatchEvent(new Event('input'));",
        json!([]),
    )
    .await;
    wait_for(
        b,
        "live preview",
        "return document.querySelector('#summary-preview strong')?.textContent === 'back';",
        Duration::from_secs(20),
    )
    .await;
    submit(
        b,
        &[
            ("headline", "Rivers return to the steppe"),
            ("outlet", "Steppe Daily"),
            ("url", "https://example.org/rivers"),
        ],
        "form[action='/admin/items']",
    )
    .await;
    path_is(b, "/admin/items").await;
    b.eval(
        "document.querySelector('form[action$=\"/ready\"]').requestSubmit();",
        json!([]),
    )
    .await;
    wait_for(
        b,
        "item ready",
        "return document.body.innerText.includes('Back to draft');",
        Duration::from_secs(20),
    )
    .await;

    // Compose, then a test copy.
    b.open(&t.url("/admin/issues")).await;
    path_is(b, "/admin/issues").await;
    submit(
        b,
        &[("subject", "Rivers are back")],
        "form[action='/admin/issues/compose']",
    )
    .await;
    path_is(b, "/admin/issues/1").await;
    submit(
        b,
        &[("to", "me@herald.test")],
        "form[action='/admin/issues/1/test']",
    )
    .await;
    wait_for(
        b,
        "test sent",
        "return document.body.innerText.includes('Test copies sent to me@herald.test');",
        Duration::from_secs(30),
    )
    .await;
    let tests = t.smtp.wait_for_messages(1, Duration::from_secs(10)).await;
    assert_eq!(tests.len(), 1);
    assert!(
        tests[0]
            .header("Subject")
            .unwrap_or_default()
            .contains("[TEST]")
    );
    // The preview iframes show the email itself.
    wait_for(
        b,
        "preview loaded",
        "const f = document.querySelector('iframe.preview-desktop'); return !!f && f.getBoundingClientRect().height > 300;",
        Duration::from_secs(20),
    )
    .await;
    shoot(b, &shots, "issue").await;

    // Send now: the confirmation names the number of people.
    b.open(&t.url("/admin/issues/1/send")).await;
    path_is(b, "/admin/issues/1/send").await;
    assert!(text(b).await.contains("3 people"), "{}", text(b).await);
    b.eval(
        "document.querySelector('form[action=\"/admin/issues/1/send\"]').requestSubmit();",
        json!([]),
    )
    .await;
    path_is(b, "/admin/issues/1/progress").await;
    assert!(
        text(b).await.contains("0 %"),
        "nothing sent before the engine runs: {}",
        text(b).await
    );

    // The engine runs now; the page updates itself (no reload: script polling).
    b.eval("window.__notReloaded = true;", json!([])).await;
    let app = t.app.clone();
    let db = t.db.clone();
    let issue = t
        .app
        .find_issue(&t.app.newsletter, "1")
        .await
        .expect("issue");
    let engine = tokio::spawn(async move {
        support::engine::run_until_complete(&app, &db, issue.id, Duration::from_secs(60)).await;
    });
    wait_for(
        b,
        "progress at 100 %",
        "return document.querySelector('[data-field=percent]').textContent === '100 %' && window.__notReloaded === true;",
        Duration::from_secs(60),
    )
    .await;
    engine.await.expect("engine");
    assert_eq!(
        t.smtp
            .wait_for_messages(4, Duration::from_secs(10))
            .await
            .len(),
        4
    );
    assert!(
        text(b).await.contains("finished: 3 sent"),
        "{}",
        text(b).await
    );
    shoot(b, &shots, "progress").await;

    b.open(&t.url("/admin/")).await;
    path_is(b, "/admin/").await;
    shoot(b, &shots, "dashboard").await;

    // A forged CSRF token is refused, and nothing changes.
    b.open(&t.url("/admin/items")).await;
    path_is(b, "/admin/items").await;
    b.eval(
        "document.querySelectorAll('input[name=csrf]').forEach(i => i.value = 'forged'); \
         document.querySelector('form[action=\"/admin/logout\"]').requestSubmit();",
        json!([]),
    )
    .await;
    wait_for(
        b,
        "CSRF refusal",
        "return document.body.innerText.includes('out of date');",
        Duration::from_secs(20),
    )
    .await;
    b.open(&t.url("/admin/")).await;
    path_is(b, "/admin/").await;

    // Without the cookie, the session is gone.
    b.delete_cookies().await;
    b.open(&t.url("/admin/")).await;
    path_is(b, "/admin/login").await;
    browser.close().await;
}

//! The scheduler end to end, under the real `herald serve` and the real
//! clock: an every-minute schedule fires, composes and delivers to the test
//! SMTP server, and `/readyz` lists the scheduler; after a restart and
//! another slot with nothing ready, nothing more is sent. Each slot is at
//! most a minute away, so the test takes about two.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use herald::digest_file::ItemInput;
use support::app::{Backend, TestApp};
use support::cli::herald_async;
use tokio::process::Child;
use tokio::time::Instant;

const READER: &str = "reader@example.com";
/// A slot is at most 60 s away; the rest is start-up, compose and delivery.
const SLOT_WAIT: Duration = Duration::from_secs(80);

fn spawn_serve(t: &TestApp, tag: &str) -> Child {
    let log = |kind: &str| {
        std::fs::File::create(t.dir.path().join(format!("{tag}.{kind}"))).expect("log file")
    };
    herald_async(t, &["serve"])
        .env("HERALD_NEWSLETTER_SCHEDULE", "* * * * *")
        .env("HERALD_HTTP_BIND", "127.0.0.1:0")
        .env("HERALD_LOG", "info,sqlx=warn")
        .stdin(Stdio::null())
        .stdout(log("stdout"))
        .stderr(log("stderr"))
        .spawn()
        .expect("spawn herald serve")
}

fn logs(dir: &Path, tag: &str) -> String {
    let read =
        |kind: &str| std::fs::read_to_string(dir.join(format!("{tag}.{kind}"))).unwrap_or_default();
    format!(
        "--- {tag} stdout\n{}\n--- {tag} stderr\n{}",
        read("stdout"),
        read("stderr")
    )
}

async fn stop(child: &mut Child, dir: &Path, tag: &str) {
    let pid = child.id().expect("serve still running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{tag} did not stop on SIGTERM\n{}", logs(dir, tag)))
        .expect("wait");
    assert!(
        status.success(),
        "{tag} exits cleanly: {status}\n{}",
        logs(dir, tag)
    );
}

/// Waits until `check` holds, up to `timeout`.
async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The address `herald serve` printed ("… on http://127.0.0.1:PORT").
async fn served_url(dir: &Path, tag: &str) -> String {
    let mut url = None;
    wait_until(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(dir.join(format!("{tag}.stdout"))).unwrap_or_default();
        url = text
            .lines()
            .find_map(|l| l.split(" on ").nth(1).filter(|u| u.starts_with("http://")))
            .map(str::to_owned);
        std::future::ready(url.is_some())
    })
    .await;
    url.unwrap_or_else(|| panic!("serve printed no address\n{}", logs(dir, tag)))
}

async fn every_minute_schedule_fires_then_skips_after_restart(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let dir = t.dir.path().to_owned();
    t.add_confirmed(READER).await;
    let item = ItemInput {
        headline: "Fresh off the scheduler".into(),
        outlet: "Test Outlet".into(),
        url: "https://example.org/fresh".into(),
        published: None,
        author: None,
        author_role: None,
        summary_markdown: "Composed and sent by the schedule.".into(),
        quote: None,
        section: None,
        lang: None,
    };
    t.app
        .add_items(&t.app.newsletter, &[item], true)
        .await
        .expect("add item");

    let mut first = spawn_serve(&t, "serve1");
    let url = served_url(&dir, "serve1").await;
    let ready = wait_until(Duration::from_secs(20), || async {
        match t.client.get(format!("{url}/readyz")).send().await {
            Ok(r) if r.status() == 200 => r
                .text()
                .await
                .is_ok_and(|body| body.contains("scheduler") && body.contains("delivery")),
            _ => false,
        }
    })
    .await;
    assert!(
        ready,
        "/readyz lists a running scheduler\n{}",
        logs(&dir, "serve1")
    );
    let delivered = wait_until(SLOT_WAIT, || {
        std::future::ready(!t.smtp.messages_to(READER).is_empty())
    })
    .await;
    assert!(
        delivered,
        "no scheduled mail within {SLOT_WAIT:?}\n{}",
        logs(&dir, "serve1")
    );
    let mail = t.smtp.messages_to(READER).remove(0);
    assert!(
        mail.data_str().contains("Fresh off the scheduler"),
        "the composed issue was delivered"
    );
    stop(&mut first, &dir, "serve1").await;

    // Restarted with nothing ready: the next slot is recorded as skipped.
    let mut second = spawn_serve(&t, "serve2");
    let skipped = wait_until(SLOT_WAIT, || async {
        t.count("SELECT COUNT(*) FROM schedule_runs WHERE state = 'skipped'")
            .await
            > 0
    })
    .await;
    assert!(
        skipped,
        "no skipped slot after the restart\n{}",
        logs(&dir, "serve2")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(&mut second, &dir, "serve2").await;
    assert_eq!(t.smtp.messages_to(READER).len(), 1, "nothing more was sent");
    assert_eq!(t.count("SELECT COUNT(*) FROM issues").await, 1);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM schedule_runs WHERE state = 'enqueued'")
            .await,
        1
    );
}

on_each_backend!(every_minute_schedule_fires_then_skips_after_restart);

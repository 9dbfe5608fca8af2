//! The delivery engine never gets stuck or silent (issue #7):
//! - `/readyz` is 503 without a running engine, 200 while it runs;
//! - a database outage mid-send under the real `herald serve` (PostgreSQL
//!   behind a proxy the test cuts): `/readyz` is 503 during it and 200 after,
//!   and every recipient gets the issue exactly once without a restart;
//! - SIGTERM with a very slow pacer: `herald send --wait` and `herald serve`
//!   exit within seconds and leave no delivery `sending`;
//! - completion and enqueue racing: an issue is never `sent` while one of its
//!   deliveries is still open.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::config::{Config, HumanDuration};
use herald::delivery::engine::{Engine, EngineOptions, RunUntil};
use herald::domain::{DeliveryState, IssueStatus, now_ms};
use support::db_proxy::DbProxy;
use support::engine::{Backend, Fixture, TestDb, test_config};
use support::smtp_server::{Script, TestSmtpServer};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

crate::on_each_backend!(
    readyz_follows_the_engine,
    completion_and_enqueue_race,
    sigterm_interrupts_a_slow_pacer_in_send_wait,
    sigterm_interrupts_a_slow_pacer_in_serve
);

// --- helpers ---------------------------------------------------------------

fn emails(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("{prefix}{i:05}@example.net"))
        .collect()
}

/// Writes `config` as herald.toml in the fixture's directory.
fn write_config(fx: &Fixture, config: &Config) -> PathBuf {
    let path = fx.db.path().join("herald.toml");
    std::fs::write(&path, toml::to_string(config).expect("config as TOML"))
        .expect("write herald.toml");
    path
}

fn spawn_herald(fx: &Fixture, config: &PathBuf, args: &[&str], tag: &str) -> Child {
    let dir = fx.db.path();
    let log =
        |kind: &str| std::fs::File::create(dir.join(format!("{tag}.{kind}"))).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(dir)
        .env("HERALD_LOG", "info,sqlx=warn")
        .stdin(Stdio::null())
        .stdout(log("stdout"))
        .stderr(log("stderr"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn herald")
}

fn logs(fx: &Fixture, tag: &str) -> String {
    let dir = fx.db.path();
    let read =
        |kind: &str| std::fs::read_to_string(dir.join(format!("{tag}.{kind}"))).unwrap_or_default();
    // The tail is what matters when something hangs.
    let tail = |s: String| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    format!(
        "--- {tag} stdout\n{}\n--- {tag} stderr\n{}",
        tail(read("stdout")),
        tail(read("stderr"))
    )
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(status.success(), "kill -TERM {pid}");
}

async fn wait_exit(
    child: &mut Child,
    fx: &Fixture,
    tag: &str,
    timeout: Duration,
) -> std::process::ExitStatus {
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            let _ = child.kill().await;
            panic!(
                "{tag} still running {timeout:?} after SIGTERM; counts {:?}\n{}",
                fx.store.delivery_counts(fx.issue.id).await.ok(),
                logs(fx, tag)
            );
        }
    }
}

async fn wait_for_count(server: &TestSmtpServer, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while server.message_count() < n {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn free_local_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Messages received per recipient.
fn received_counts(server: &TestSmtpServer) -> HashMap<String, usize> {
    server.with_messages(|ms| {
        let mut counts = HashMap::new();
        for m in ms {
            *counts.entry(m.rcpt_to[0].clone()).or_insert(0) += 1;
        }
        counts
    })
}

// --- /readyz ----------------------------------------------------------------

async fn readyz_follows_the_engine(backend: Backend) {
    let t = support::app::TestApp::spawn(backend).await;
    let health = t.get(&t.url("/healthz")).await;
    assert_eq!(health.status, 200, "alive: {}", health.body);
    // A web server with no delivery in the process delivers nothing.
    let page = t.get(&t.url("/readyz")).await;
    assert_eq!(page.status, 503, "{}", page.body);
    assert!(page.body.contains("no delivery engine"), "{}", page.body);

    let engine = Engine::new(
        t.app.clone(),
        EngineOptions::from_app(&t.app).expect("engine options"),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(engine.run(RunUntil::Shutdown, stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let page = t.get(&t.url("/readyz")).await;
        if page.status == 200 || Instant::now() >= deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(page.status, 200, "{}", page.body);
    let body: serde_json::Value = serde_json::from_str(&page.body).expect("JSON");
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["components"]["delivery"], "running", "{body}");

    stop.cancel();
    run.await.expect("engine task").expect("engine run");
    let page = t.get(&t.url("/readyz")).await;
    assert_eq!(page.status, 503, "{}", page.body);
    let body: serde_json::Value = serde_json::from_str(&page.body).expect("JSON");
    assert_eq!(body["problems"][0], "delivery: stopped", "{body}");
}

// --- SIGTERM and the pacer -------------------------------------------------

/// One message every 1,000 s: without a cancellable pacer the process would
/// outlive any sane stop timeout.
const SLOW_RATE: f64 = 0.001;

async fn slow_fixture(backend: Backend, recipients: usize) -> (Fixture, TestSmtpServer, PathBuf) {
    let server = TestSmtpServer::start(Script::new()).await;
    let mut config = test_config("", &server.url());
    config.smtp.rate = SLOW_RATE;
    let fx = Fixture::new(TestDb::new(backend).await, config).await;
    fx.add_confirmed(&emails("slow", 0..recipients)).await;
    let mut config = (*fx.app.config).clone();
    config.http.bind = free_local_addr();
    let path = write_config(&fx, &config);
    (fx, server, path)
}

async fn assert_nothing_left_sending(fx: &Fixture, tag: &str) {
    let c = fx.store.delivery_counts(fx.issue.id).await.expect("counts");
    assert_eq!(
        c.get(DeliveryState::Sending),
        0,
        "every claim was handed back: {c:?}\n{}",
        logs(fx, tag)
    );
    assert_eq!(
        c.open(),
        c.total - 1,
        "one message went out before the stop: {c:?}"
    );
}

async fn sigterm_interrupts_a_slow_pacer_in_send_wait(backend: Backend) {
    let (fx, server, config) = slow_fixture(backend, 20).await;
    let mut child = spawn_herald(&fx, &config, &["send", "1", "--wait"], "send");
    // The first message goes at once; every next one waits on the pacer.
    assert!(
        wait_for_count(&server, 1, Duration::from_secs(30)).await,
        "the first message never came\n{}",
        logs(&fx, "send")
    );
    // Let the first outcome be written, and the other workers reach the pacer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&child);
    let term_at = Instant::now();
    let status = wait_exit(&mut child, &fx, "send", Duration::from_secs(10)).await;
    eprintln!("send --wait exited {:.1?} after SIGTERM", term_at.elapsed());
    assert!(
        !status.success(),
        "an interrupted send --wait exits non-zero: {status}"
    );
    assert!(
        logs(&fx, "send").contains("interrupted"),
        "{}",
        logs(&fx, "send")
    );
    assert_eq!(server.message_count(), 1, "nothing more was sent");
    assert_nothing_left_sending(&fx, "send").await;
}

async fn sigterm_interrupts_a_slow_pacer_in_serve(backend: Backend) {
    let (fx, server, config) = slow_fixture(backend, 20).await;
    fx.send(&fx.issue).await;
    let mut child = spawn_herald(&fx, &config, &["serve"], "serve");
    assert!(
        wait_for_count(&server, 1, Duration::from_secs(30)).await,
        "the first message never came\n{}",
        logs(&fx, "serve")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&child);
    let term_at = Instant::now();
    let status = wait_exit(&mut child, &fx, "serve", Duration::from_secs(10)).await;
    eprintln!("serve exited {:.1?} after SIGTERM", term_at.elapsed());
    assert!(
        status.success(),
        "serve stops cleanly on SIGTERM: {status}\n{}",
        logs(&fx, "serve")
    );
    assert_eq!(server.message_count(), 1, "nothing more was sent");
    assert_nothing_left_sending(&fx, "serve").await;
}

// --- completion vs enqueue -------------------------------------------------

/// Marks every open delivery of the issue as sent, as workers would.
async fn deliver_all_open(fx: &Fixture) {
    let issue_id = fx.issue.id;
    let now = now_ms();
    herald::with_pool!(&fx.store, |p| {
        sqlx::query(
            "UPDATE deliveries SET state = 'sent', sent_at = $2, attempts = attempts + 1, updated_at = $2
             WHERE issue_id = $1 AND state IN ('queued', 'sending', 'retry_wait')",
        )
        .bind(issue_id)
        .bind(now)
        .execute(p)
        .await
        .expect("mark open deliveries sent");
    });
}

async fn completion_and_enqueue_race(backend: Backend) {
    const ROUNDS: usize = 40;
    let server = TestSmtpServer::start(Script::new()).await;
    let fx = Fixture::new(TestDb::new(backend).await, test_config("", &server.url())).await;
    let issue_id = fx.issue.id;
    fx.add_confirmed(&emails("race", 0..5)).await;
    fx.send(&fx.issue).await;
    let mut subscribers = 5;
    let mut completed_rounds = 0;
    for round in 0..ROUNDS {
        // Everyone so far has it; a few subscribers confirmed since then.
        deliver_all_open(&fx).await;
        let fresh = 1 + round % 3;
        fx.add_confirmed(&emails("race", subscribers..subscribers + fresh))
            .await;
        subscribers += fresh;
        // `herald send` again while the engine's completion checks run.
        let issue = fx.issue(issue_id).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(3));
        let send = {
            let (app, barrier) = (fx.app.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                app.send_issue(&issue).await
            })
        };
        let checks: Vec<_> = (0..2)
            .map(|_| {
                let (store, barrier) = (fx.store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.complete_issue_if_done(issue_id, now_ms()).await
                })
            })
            .collect();
        let added = send.await.expect("send task").expect("send_issue");
        for c in checks {
            if c.await.expect("check task").expect("completion check") {
                completed_rounds += 1;
            }
        }
        assert_eq!(
            added as usize, fresh,
            "round {round}: the new subscribers are queued"
        );
        let status = fx.store.issue_status(issue_id).await.expect("status");
        let counts = fx.store.delivery_counts(issue_id).await.expect("counts");
        assert_eq!(counts.total as usize, subscribers, "round {round}");
        assert!(
            !(status == IssueStatus::Sent && counts.open() > 0),
            "round {round}: the issue is sent with {} open deliveries that nobody will claim: {counts:?}",
            counts.open()
        );
        if counts.open() > 0 {
            assert_eq!(status, IssueStatus::Sending, "round {round}");
        }
    }
    // Finally everything is delivered and the check completes the issue.
    deliver_all_open(&fx).await;
    assert!(
        fx.store
            .complete_issue_if_done(issue_id, now_ms())
            .await
            .expect("completion")
    );
    eprintln!(
        "{completed_rounds} of {ROUNDS} rounds completed the issue before the send re-opened it"
    );
}

// --- a database outage under `herald serve` ---------------------------------

/// `host:port` of a PostgreSQL URL, and the URL with that replaced.
fn split_pg_url(url: &str, new_host_port: &str) -> (String, String) {
    let after_scheme = url.find("://").map(|i| i + 3).expect("scheme");
    let rest = &url[after_scheme..];
    let host_start = rest.find('@').map(|i| i + 1).unwrap_or(0);
    let host_end = rest[host_start..]
        .find('/')
        .map(|i| host_start + i)
        .unwrap_or(rest.len());
    let host_port = rest[host_start..host_end].to_owned();
    let proxied = format!(
        "{}{}{}{}",
        &url[..after_scheme],
        &rest[..host_start],
        new_host_port,
        &rest[host_end..]
    );
    (host_port, proxied)
}

async fn readyz(client: &reqwest::Client, base: &str) -> Option<(u16, String)> {
    let r = client.get(format!("{base}/readyz")).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.unwrap_or_default()))
}

/// A PostgreSQL fixture with `recipients` queued for issue #1, a proxy in
/// front of its server, and a herald.toml that reaches the database through
/// the proxy (and serves HTTP on a free port). None without PostgreSQL.
struct OutageSetup {
    fx: Fixture,
    server: TestSmtpServer,
    proxy: DbProxy,
    config_path: PathBuf,
    base: String,
}

async fn outage_setup(
    recipients: usize,
    configure: impl FnOnce(&mut Config),
) -> Option<OutageSetup> {
    let Some(backend) = Backend::postgres() else {
        eprintln!(
            "skipped: set {} to run this test",
            support::app::POSTGRES_ENV
        );
        return None;
    };
    let server = TestSmtpServer::start(Script::new()).await;
    let mut config = test_config("", &server.url());
    // Slow enough that the outage lands mid-send, fast enough to finish soon.
    config.smtp.rate = 250.0;
    // The default lease (5 min, far beyond these tests): nothing may rely on
    // a lease lapsing to get a delivery unstuck.
    config.delivery.lease = HumanDuration(Duration::from_secs(300));
    configure(&mut config);
    let fx = Fixture::new(TestDb::new(backend).await, config).await;
    fx.add_confirmed(&emails("out", 0..recipients)).await;

    let (upstream, _) = split_pg_url(&fx.db.url, "");
    let proxy = DbProxy::start(upstream).await;
    let (_, proxied_url) = split_pg_url(&fx.db.url, &format!("127.0.0.1:{}", proxy.port()));
    let mut config = (*fx.app.config).clone();
    config.database.url = proxied_url;
    config.http.bind = free_local_addr();
    let base = format!("http://{}", config.http.bind);
    config.http.base_url = base.clone();
    let config_path = write_config(&fx, &config);
    Some(OutageSetup {
        fx,
        server,
        proxy,
        config_path,
        base,
    })
}

/// Every recipient received exactly one message and is recorded as sent.
async fn assert_everyone_once(s: &OutageSetup, recipients: usize) {
    let counts = received_counts(&s.server);
    assert_eq!(counts.len(), recipients, "every recipient received it");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "received more than once: {twice:?}");
    let c =
        s.fx.store
            .delivery_counts(s.fx.issue.id)
            .await
            .expect("counts");
    assert_eq!(c.get(DeliveryState::Sent) as usize, recipients, "{c:?}");
}

/// PostgreSQL only: the outage is a lost network connection, which an
/// embedded SQLite file does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_mid_send_under_serve() {
    const RECIPIENTS: usize = 3_000;
    let Some(s) = outage_setup(RECIPIENTS, |_| {}).await else {
        return;
    };
    let (fx, server, proxy, base) = (&s.fx, &s.server, &s.proxy, s.base.clone());
    fx.send(&fx.issue).await;
    let mut child = spawn_herald(fx, &s.config_path, &["serve"], "serve");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    // Ready once it runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _)) = readyz(&client, &base).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never 200\n{}",
            logs(fx, "serve")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        wait_for_count(server, RECIPIENTS / 4, Duration::from_secs(60)).await,
        "no progress before the outage\n{}",
        logs(fx, "serve")
    );

    // The database "restarts": every connection reset, none accepted for 5 s.
    let before = server.message_count();
    proxy.cut();
    let cut_at = Instant::now();
    let mut unready = None;
    while cut_at.elapsed() < Duration::from_secs(5) {
        if let Some((503, body)) = readyz(&client, &base).await {
            unready.get_or_insert(body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.restore();
    eprintln!(
        "outage: {before} sent before, {} when restored",
        server.message_count()
    );
    let body = unready
        .unwrap_or_else(|| panic!("/readyz never 503 during the outage\n{}", logs(fx, "serve")));
    assert!(body.contains("database"), "{body}");
    assert!(
        before < RECIPIENTS,
        "the outage landed after the send was over; lower smtp.rate"
    );

    // The same process finishes the issue.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if fx.store.issue_status(fx.issue.id).await.expect("status") == IssueStatus::Sent {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "serve exited during the outage: {status}\n{}",
                logs(fx, "serve")
            );
        }
        assert!(
            Instant::now() < deadline,
            "the issue did not complete after the outage: {:?}\n{}",
            fx.store.delivery_counts(fx.issue.id).await.ok(),
            logs(fx, "serve")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_everyone_once(&s, RECIPIENTS).await;

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match readyz(&client, &base).await {
            Some((200, _)) => break,
            other => assert!(
                Instant::now() < deadline,
                "/readyz not back to 200: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(child.try_wait().expect("try_wait").is_none(), "no restart");
    sigterm(&child);
    let status = wait_exit(&mut child, fx, "serve", Duration::from_secs(15)).await;
    assert!(status.success(), "{status}\n{}", logs(fx, "serve"));
}

/// `herald send --wait` rides out the same outage and finishes the issue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_mid_send_wait() {
    const RECIPIENTS: usize = 2_000;
    let Some(s) = outage_setup(RECIPIENTS, |_| {}).await else {
        return;
    };
    let mut child = spawn_herald(&s.fx, &s.config_path, &["send", "1", "--wait"], "send");
    assert!(
        wait_for_count(&s.server, RECIPIENTS / 4, Duration::from_secs(60)).await,
        "no progress before the outage\n{}",
        logs(&s.fx, "send")
    );
    s.proxy.outage(Duration::from_secs(5)).await;
    assert!(
        s.server.message_count() < RECIPIENTS,
        "the outage landed after the send was over; lower smtp.rate"
    );
    let status = match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
        Ok(status) => status.expect("wait"),
        Err(_) => panic!(
            "send --wait did not finish after the outage: {:?}\n{}",
            s.fx.store.delivery_counts(s.fx.issue.id).await.ok(),
            logs(&s.fx, "send")
        ),
    };
    assert!(status.success(), "{status}\n{}", logs(&s.fx, "send"));
    assert_everyone_once(&s, RECIPIENTS).await;
}

/// When the database stays away longer than `delivery.max_outage`,
/// `herald serve` exits non-zero and says why, so its supervisor restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_gone_for_good_ends_serve() {
    let Some(s) = outage_setup(500, |c| {
        c.delivery.max_outage = HumanDuration(Duration::from_secs(2));
    })
    .await
    else {
        return;
    };
    s.fx.send(&s.fx.issue).await;
    let mut child = spawn_herald(&s.fx, &s.config_path, &["serve"], "serve");
    assert!(
        wait_for_count(&s.server, 50, Duration::from_secs(60)).await,
        "no progress before the outage\n{}",
        logs(&s.fx, "serve")
    );
    s.proxy.cut();
    let cut_at = Instant::now();
    // Generous: a database call may wait out the pool's acquire timeout (30 s).
    let status = match tokio::time::timeout(Duration::from_secs(90), child.wait()).await {
        Ok(status) => status.expect("wait"),
        Err(_) => panic!(
            "serve still running with the database gone\n{}",
            logs(&s.fx, "serve")
        ),
    };
    eprintln!(
        "serve exited {:.1?} after the database went away",
        cut_at.elapsed()
    );
    assert!(!status.success(), "exits non-zero: {status}");
    let out = logs(&s.fx, "serve");
    eprintln!(
        "{}",
        out.lines()
            .filter(|l| l.contains("gave up"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(out.contains("delivery gave up"), "{out}");
    assert!(out.contains("delivery.max_outage"), "{out}");
}

/// SIGTERM while the database is away: the process still stops within a
/// service manager's usual stop timeout instead of waiting for the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigterm_during_outage_still_stops() {
    let Some(s) = outage_setup(500, |_| {}).await else {
        return;
    };
    s.fx.send(&s.fx.issue).await;
    let mut child = spawn_herald(&s.fx, &s.config_path, &["serve"], "serve");
    assert!(
        wait_for_count(&s.server, 50, Duration::from_secs(60)).await,
        "no progress before the outage\n{}",
        logs(&s.fx, "serve")
    );
    s.proxy.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    sigterm(&child);
    let term_at = Instant::now();
    // systemd's default stop timeout is 90 s; the engine's own bounds add up
    // to about 30 s (outcomes 20 s, hand-back 10 s).
    let status = wait_exit(&mut child, &s.fx, "serve", Duration::from_secs(60)).await;
    eprintln!(
        "serve exited {:.1?} after SIGTERM with the database away: {status}",
        term_at.elapsed()
    );
    assert!(
        !status.success(),
        "claims it could not hand back make the stop a failure\n{}",
        logs(&s.fx, "serve")
    );
}

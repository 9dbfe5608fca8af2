//! Crash safety with the real binary: `herald send 1 --wait` is killed with SIGKILL at random
//! points of a 5,000-recipient send and restarted; recipients unsubscribe mid-send. Afterwards
//! every confirmed recipient has the issue, nobody received it later than the engine's bound
//! (`RECHECK_AFTER`, plus a margin) after unsubscribing, and the
//! duplicates are bounded by what was in flight (accepted by the server, not yet recorded) at
//! each kill. Then three `herald send 1 --wait` processes share one database: nobody gets it
//! twice. SQLite always; PostgreSQL when `HERALD_TEST_POSTGRES_URL` is set.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use herald::domain::{DeliveryState, UnsubscribeToken};
use herald::store::subscribers::ConsentContext;
use rand::RngExt;
use support::engine::{Backend, Fixture, TestDb, test_config};
use support::smtp_server::{Script, TestSmtpServer};
use tokio::process::{Child, Command};

const RECIPIENTS: usize = 5_000;
const CONCURRENCY: usize = 4;

struct Setup {
    fx: Fixture,
    server: TestSmtpServer,
    config_path: PathBuf,
    emails: Vec<String>,
    ids: Vec<i64>,
}

async fn setup(backend: Backend) -> Setup {
    setup_n(backend, RECIPIENTS).await
}

async fn setup_n(backend: Backend, recipients: usize) -> Setup {
    let server = TestSmtpServer::start(Script::new()).await;
    let mut config = test_config("", &server.url());
    config.smtp.concurrency = CONCURRENCY;
    config.smtp.timeout = herald::config::HumanDuration(Duration::from_secs(10));
    config.delivery.lease = herald::config::HumanDuration(Duration::from_secs(2));
    let fx = Fixture::new(TestDb::new(backend).await, config).await;
    let emails: Vec<String> = (0..recipients)
        .map(|i| format!("sub{i:05}@example.net"))
        .collect();
    let started = Instant::now();
    let ids = fx.add_confirmed(&emails).await;
    eprintln!(
        "{recipients} subscribers imported in {:.1?}",
        started.elapsed()
    );
    let config_path = fx.db.path().join("herald.toml");
    std::fs::write(
        &config_path,
        toml::to_string(&*fx.app.config).expect("config as TOML"),
    )
    .expect("write herald.toml");
    Setup {
        fx,
        server,
        config_path,
        emails,
        ids,
    }
}

fn spawn_send(s: &Setup, tag: &str) -> Child {
    let dir = s.fx.db.path();
    let log =
        |kind: &str| std::fs::File::create(dir.join(format!("{tag}.{kind}"))).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--config")
        .arg(&s.config_path)
        .args(["send", "1", "--wait"])
        .current_dir(dir)
        .env("HERALD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log("stdout"))
        .stderr(log("stderr"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn herald")
}

fn logs(s: &Setup, tag: &str) -> String {
    let dir = s.fx.db.path();
    let read =
        |kind: &str| std::fs::read_to_string(dir.join(format!("{tag}.{kind}"))).unwrap_or_default();
    format!(
        "--- {tag} stdout\n{}--- {tag} stderr\n{}",
        read("stdout"),
        read("stderr")
    )
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

async fn sent_in_db(s: &Setup) -> i64 {
    s.fx.store
        .delivery_counts(s.fx.issue.id)
        .await
        .expect("counts")
        .get(DeliveryState::Sent)
}

async fn wait_exit(
    child: &mut Child,
    s: &Setup,
    tag: &str,
    timeout: Duration,
) -> std::process::ExitStatus {
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            let _ = child.kill().await;
            panic!(
                "{tag} did not exit within {timeout:?}; counts {:?}\n{}",
                s.fx.store.delivery_counts(s.fx.issue.id).await.ok(),
                logs(s, tag)
            );
        }
    }
}

crate::on_each_backend!(
    sigkill_and_restart,
    three_processes_one_issue,
    sigterm_hands_claims_back
);

async fn sigkill_and_restart(backend: Backend) {
    let s = setup(backend.clone()).await;
    let started = Instant::now();
    let mut rng = rand::rng();
    let kills = rng.random_range(3..=4usize);
    let nl = s.fx.app.newsletter.id;
    // (recipient, when the unsubscribe had committed)
    let mut unsubscribed: Vec<(usize, Instant)> = Vec::new();
    let mut in_flight_at_kills = Vec::new();

    for round in 0..=kills {
        let tag = format!("run{round}");
        let mut child = spawn_send(&s, &tag);
        if round == kills {
            let status = wait_exit(&mut child, &s, &tag, Duration::from_secs(120)).await;
            assert!(
                status.success(),
                "the last run finishes cleanly: {status}\n{}",
                logs(&s, &tag)
            );
            let out = logs(&s, &tag);
            assert!(
                out.contains(&format!(
                    ": 0 recipients queued ({RECIPIENTS} deliveries in all)"
                )),
                "a restart enqueues nobody twice\n{out}"
            );
            break;
        }
        // Kill after a random number of further messages (spread over the send).
        let have = s.server.message_count();
        let share = (RECIPIENTS - have) / (kills - round + 1);
        let target = have + rng.random_range(share / 3..=share);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut unsubscribed_this_round = false;
        while s.server.message_count() < target {
            assert!(
                Instant::now() < deadline,
                "no progress in {tag}\n{}",
                logs(&s, &tag)
            );
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{tag} exited early: {status}\n{}", logs(&s, &tag));
            }
            // Mid-send, unsubscribe two recipients just ahead of the send's progress.
            if !unsubscribed_this_round && s.server.message_count() > have + (target - have) / 2 {
                unsubscribed_this_round = true;
                let progress = s.server.message_count();
                for _ in 0..2 {
                    let i = (progress + rng.random_range(20..400)).min(RECIPIENTS - 1);
                    let ctx = ConsentContext {
                        source: "crash-test".into(),
                        ..Default::default()
                    };
                    s.fx.app
                        .unsubscribe(UnsubscribeToken::new(s.ids[i], nl), ctx)
                        .await
                        .expect("unsubscribe");
                    unsubscribed.push((i, Instant::now()));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().await.expect("SIGKILL");
        // Connections the dead process left are closed now; let the server finish with them.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let received = received_counts(&s.server).len() as i64;
        let recorded = sent_in_db(&s).await;
        in_flight_at_kills.push(received - recorded);
        eprintln!(
            "kill {}: server has {received} recipients, db records {recorded} sent",
            round + 1
        );
    }

    let elapsed = started.elapsed();
    let counts = received_counts(&s.server);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    let in_flight: i64 = in_flight_at_kills.iter().sum();
    eprintln!(
        "{backend:?}: {kills} kills, {} messages for {RECIPIENTS} recipients in {elapsed:.1?}; duplicates {duplicates}; \
         accepted-but-unrecorded at each kill {in_flight_at_kills:?} (sum {in_flight})",
        s.server.message_count()
    );
    let unsub_set: HashMap<usize, Instant> = unsubscribed.iter().copied().collect();
    for (i, email) in s.emails.iter().enumerate() {
        if !unsub_set.contains_key(&i) {
            assert!(
                counts.contains_key(email),
                "{email} never received the issue"
            );
        }
    }
    let before_unsubscribing = unsubscribed
        .iter()
        .filter(|(i, _)| counts.contains_key(&s.emails[*i]))
        .count();
    eprintln!(
        "{} unsubscribed mid-send: {before_unsubscribing} had received it before, {} never did",
        unsubscribed.len(),
        unsubscribed.len() - before_unsubscribing
    );
    // A worker reads its next few claims together and sends each within
    // RECHECK_AFTER of reading it; the margin is for this noisy machine.
    let stop_bound = herald::delivery::engine::RECHECK_AFTER + Duration::from_millis(400);
    s.server.with_messages(|ms| {
        for (i, at) in &unsubscribed {
            let late: Vec<_> = ms
                .iter()
                .filter(|m| m.rcpt_to[0] == s.emails[*i] && m.mail_at > *at + stop_bound)
                .collect();
            assert!(
                late.is_empty(),
                "{} received the issue {:?} after unsubscribing",
                s.emails[*i],
                late[0].mail_at - *at
            );
        }
    });
    assert!(
        duplicates as i64 <= in_flight,
        "duplicates ({duplicates}) exceed the messages in flight at the kills ({in_flight})"
    );
    assert!(
        duplicates <= kills * (CONCURRENCY + 200),
        "duplicates bounded by kills × (connections + one batch)"
    );

    let issue = s.fx.issue(s.fx.issue.id).await;
    assert_eq!(issue.status, "sent");
    let c = s.fx.store.delivery_counts(s.fx.issue.id).await.unwrap();
    assert_eq!(c.open(), 0, "{c:?}");
    assert_eq!(c.get(DeliveryState::Failed), 0, "{c:?}");
    assert_eq!(
        (c.get(DeliveryState::Sent) + c.get(DeliveryState::Skipped)) as usize,
        RECIPIENTS,
        "{c:?}"
    );
}

async fn three_processes_one_issue(backend: Backend) {
    let s = setup(backend.clone()).await;
    let started = Instant::now();
    let mut children: Vec<(String, Child)> = (0..3)
        .map(|n| (format!("proc{n}"), spawn_send(&s, &format!("proc{n}"))))
        .collect();
    for (tag, child) in &mut children {
        let status = wait_exit(child, &s, tag, Duration::from_secs(180)).await;
        assert!(status.success(), "{tag}: {status}\n{}", logs(&s, tag));
    }
    let counts = received_counts(&s.server);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "{backend:?}: 3 processes, {} messages for {RECIPIENTS} recipients in {:.1?}; duplicates {duplicates}",
        s.server.message_count(),
        started.elapsed()
    );
    for email in &s.emails {
        assert!(
            counts.contains_key(email),
            "{email} never received the issue"
        );
    }
    assert_eq!(duplicates, 0, "nobody receives the issue twice");
    // Each process did part of the work.
    let workers = s.fx.store.delivery_counts(s.fx.issue.id).await.unwrap();
    assert_eq!(
        workers.get(DeliveryState::Sent) as usize,
        RECIPIENTS,
        "{workers:?}"
    );
    assert_eq!(s.fx.issue(s.fx.issue.id).await.status, "sent");
}

/// Graceful shutdown: SIGTERM mid-send stops claiming, finishes or hands back what was claimed,
/// flushes results and exits; nothing stays claimed, and the restart sends nobody twice.
async fn sigterm_hands_claims_back(backend: Backend) {
    let n = 1_500;
    let s = setup_n(backend.clone(), n).await;
    let mut child = spawn_send(&s, "term");
    let target = rand::rng().random_range(200..800);
    s.server
        .wait_for_messages(target, Duration::from_secs(60))
        .await;
    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(killed.success());
    let term_at = Instant::now();
    let status = wait_exit(&mut child, &s, "term", Duration::from_secs(15)).await;
    eprintln!(
        "{backend:?}: exited {:.1?} after SIGTERM ({status}) with {} messages sent",
        term_at.elapsed(),
        s.server.message_count()
    );
    assert!(
        !status.success(),
        "an interrupted send --wait exits non-zero"
    );
    let c = s.fx.store.delivery_counts(s.fx.issue.id).await.unwrap();
    assert_eq!(
        c.get(DeliveryState::Sending),
        0,
        "every claim was handed back: {c:?}"
    );
    assert_eq!(
        c.get(DeliveryState::Sent) as usize,
        s.server.message_count(),
        "every accepted message was recorded: {c:?}\n{}",
        logs(&s, "term")
    );

    let mut child = spawn_send(&s, "resume");
    let status = wait_exit(&mut child, &s, "resume", Duration::from_secs(120)).await;
    assert!(status.success(), "{status}\n{}", logs(&s, "resume"));
    let counts = received_counts(&s.server);
    assert_eq!(counts.len(), n, "everyone received it");
    assert!(
        counts.values().all(|c| *c == 1),
        "nobody twice after a graceful stop"
    );
}

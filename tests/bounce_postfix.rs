//! Issue #11 end to end with a real Postfix as Herald's relay: `herald
//! serve` (with `bounce.domain` and `bounce.listen`) sends an issue through
//! Postfix, which accepts every message, then fails to hand some on (their
//! domain's server does not know the user) and sends its DSNs to the VERP
//! return path, which its transport map routes to Herald's receiver. Exactly
//! those readers end `bounced` and suppressed, and the next issue skips
//! them. Skipped (with a message) only where Postfix is not installed.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::engine::{Backend, Fixture, TestDb, test_config};
use support::postfix::{PostfixOptions, PostfixRelay, free_port};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

crate::on_each_backend!(postfix_dsns_bounce_exactly_the_unknown_readers);

const BOUNCE_DOMAIN: &str = "bounces.test";
/// Generous: Postfix hands a DSN on within a second here.
const SETTLE: Duration = Duration::from_secs(60);

fn readers(prefix: &str, domain: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}@{domain}")).collect()
}

struct Serve {
    child: Child,
    log: std::path::PathBuf,
}

impl Serve {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `herald serve` on the fixture's database, relaying through Postfix, with
/// the receiver on `bounce_port`.
async fn herald_serve(fx: &Fixture, relay: &PostfixRelay, bounce_port: u16) -> Serve {
    let http = format!("127.0.0.1:{}", free_port());
    let log = fx.db.path().join("serve.stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("serve")
        .current_dir(fx.db.path())
        .env_remove("HERALD_CONFIG")
        .env("HERALD_DATABASE_URL", &fx.db.url)
        .env("HERALD_SMTP_URL", relay.url())
        .env(
            "HERALD_SECURITY_SECRET",
            fx.app.config.security.secret.expose_text(),
        )
        .env(
            "HERALD_NEWSLETTER_FROM",
            fx.app.config.newsletter.from.to_string(),
        )
        .env("HERALD_HTTP_BIND", &http)
        .env("HERALD_HTTP_BASE_URL", format!("http://{http}"))
        .env("HERALD_BOUNCE_DOMAIN", BOUNCE_DOMAIN)
        .env("HERALD_BOUNCE_LISTEN", format!("127.0.0.1:{bounce_port}"))
        .env("HERALD_LOG", "info,sqlx=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn herald serve");
    let serve = Serve { child, log };
    // Ready when the receiver greets.
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", bounce_port)).await {
            let mut line = String::new();
            let mut reader = BufReader::new(stream);
            if reader.read_line(&mut line).await.is_ok() && line.starts_with("220 ") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the bounce receiver never greeted\n{}",
            serve.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serve
}

/// Waits until every delivery of the issue is in one of the `done` states
/// (by their database spelling).
async fn settle(fx: &Fixture, issue_id: i64, done: &[&str], serve: &Serve, relay: &PostfixRelay) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let deliveries = fx.deliveries(issue_id).await;
        if !deliveries.is_empty()
            && deliveries
                .values()
                .all(|(d, _)| done.contains(&d.state.as_str()))
        {
            return;
        }
        if Instant::now() > deadline {
            let states: Vec<(String, String)> = deliveries
                .iter()
                .map(|(e, (d, _))| (e.clone(), d.state.to_string()))
                .collect();
            panic!(
                "issue {issue_id} not settled within {SETTLE:?}: {states:?}\n--- herald\n{}\n--- postfix\n{}",
                serve.logs(),
                relay.maillog()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn postfix_dsns_bounce_exactly_the_unknown_readers(backend: Backend) {
    let bounce_port = free_port();
    let Some(relay) = PostfixRelay::start(PostfixOptions {
        deliver_domains: &["mail.test"],
        unknown_user_domains: &["gone.test"],
        bounce_domain: BOUNCE_DOMAIN,
        bounce_port,
    }) else {
        return;
    };
    let mut config = test_config("", &relay.url());
    config.bounce.domain = BOUNCE_DOMAIN.into();
    let fx = Fixture::new(TestDb::new(backend).await, config).await;
    let staying = readers("reader", "mail.test", 5);
    let gone = readers("nobody", "gone.test", 3);
    let everyone: Vec<String> = staying.iter().chain(&gone).cloned().collect();
    fx.add_confirmed(&everyone).await;

    let mut serve = herald_serve(&fx, &relay, bounce_port).await;
    assert_eq!(fx.send(&fx.issue).await, everyone.len() as u64);

    // Postfix took every message (250), so all start `sent`; the DSNs then
    // turn exactly the unknown readers `bounced`.
    settle(&fx, fx.issue.id, &["sent", "bounced"], &serve, &relay).await;
    let deadline = Instant::now() + SETTLE;
    loop {
        let deliveries = fx.deliveries(fx.issue.id).await;
        let bounced = gone
            .iter()
            .all(|e| deliveries[e].0.state.as_str() == "bounced");
        if bounced {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the DSNs did not bounce {gone:?}: {:?}\n--- herald\n{}\n--- postfix\n{}",
            deliveries
                .iter()
                .map(|(e, (d, _))| (e.clone(), d.state.to_string()))
                .collect::<Vec<_>>(),
            serve.logs(),
            relay.maillog()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deliveries = fx.deliveries(fx.issue.id).await;
    for e in &gone {
        assert_eq!(deliveries[e].0.state.to_string(), "bounced", "{e}");
        assert_eq!(fx.subscription_state(e).await, "bounced", "{e}");
        assert!(fx.is_suppressed(e).await, "{e}");
        // Postfix really bounced it after accepting it, and its DSN was taken.
        let lines = relay.log_lines_to(e);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("status=bounced") && l.contains("dsn=5.1.1")),
            "{e}: {lines:?}"
        );
    }
    for e in &staying {
        assert_eq!(deliveries[e].0.state.to_string(), "sent", "{e}");
        assert_eq!(fx.subscription_state(e).await, "confirmed", "{e}");
        assert!(!fx.is_suppressed(e).await, "{e}");
    }
    let maillog = relay.maillog();
    let dsns_taken = maillog
        .lines()
        .filter(|l| {
            l.contains(&format!("@{BOUNCE_DOMAIN}>"))
                && l.contains(&format!(":{bounce_port}"))
                && l.contains("status=sent")
        })
        .count();
    assert_eq!(dsns_taken, gone.len(), "one DSN each, accepted\n{maillog}");

    // The next issue goes to the others only.
    let next = fx.compose_next_issue("After the bounces").await;
    assert_eq!(fx.send(&next).await, staying.len() as u64);
    settle(&fx, next.id, &["sent"], &serve, &relay).await;
    let deliveries = fx.deliveries(next.id).await;
    assert_eq!(deliveries.len(), staying.len());
    for e in &gone {
        assert!(!deliveries.contains_key(e), "{e} was mailed again");
        assert_eq!(
            relay
                .log_lines_to(e)
                .iter()
                .filter(|l| l.contains("status="))
                .count(),
            1,
            "{e} reached Postfix once, for the first issue only"
        );
    }
    // Nothing left in Postfix's queue: every DSN was delivered to Herald.
    assert_eq!(relay.queued(), 0, "{}", relay.maillog());

    // SIGTERM: the receiver stops with the rest, and the process exits 0.
    let pid = serve.child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(killed.success());
    let status = tokio::time::timeout(SETTLE, serve.child.wait())
        .await
        .unwrap_or_else(|_| panic!("herald serve did not stop\n{}", serve.logs()))
        .expect("wait");
    assert!(status.success(), "{status}\n{}", serve.logs());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", bounce_port))
            .await
            .is_err(),
        "the receiver stopped listening"
    );
}

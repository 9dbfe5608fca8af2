//! The two halves of issue #9 section 4 together: a real TLS relay with AUTH (the test server
//! with a certificate from a CA generated here) and the engine's pausing. A wrong password or
//! an untrusted certificate pauses the issue after ONE login/handshake, says what to fix, and
//! after the fix `herald resume` + `herald send --wait` delivers everyone exactly once.
//! Every test runs on SQLite, and on PostgreSQL when `HERALD_TEST_POSTGRES_URL` is set.

mod support;

use herald::domain::DeliveryState;
use support::engine::{Backend, Fixture, TestDb, test_config};
use support::smtp_server::{Script, TestSmtpServer};
use support::tls::{Cert, Security, TestPki};

crate::on_each_backend!(
    a_wrong_password_pauses_after_one_login_and_resume_delivers_once,
    an_untrusted_certificate_pauses_until_smtp_ca_file_is_set,
);

const USER: &str = "ann@corp.test";
const PASSWORD: &str = "c0rrect-Horse-battery";

fn starttls_url(server: &TestSmtpServer, password: &str) -> String {
    format!(
        "smtp://{}:{password}@{}?tls=starttls",
        USER.replace('@', "%40"),
        server.addr()
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn count_commands(server: &TestSmtpServer, verb: &str) -> usize {
    server
        .commands()
        .iter()
        .filter(|(_, c)| c.to_ascii_uppercase().starts_with(verb))
        .count()
}

fn readers(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}{i:02}@example.net"))
        .collect()
}

/// After the pause, nothing is held against the recipients: they are all still queued.
async fn assert_all_queued_untouched(fx: &Fixture) {
    for (email, (d, attempts)) in fx.deliveries(fx.issue.id).await {
        assert_eq!(
            (d.state, d.attempts, attempts.len()),
            (DeliveryState::Queued, 0, 0),
            "{email}: the recipient is not at fault"
        );
    }
}

async fn resume_and_finish(
    fx: &Fixture,
    smtp_url: &str,
    env: &[(&str, &str)],
    emails: &[String],
    server: &TestSmtpServer,
) {
    let resumed = fx.herald(smtp_url, &["resume", "1"], env).await;
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let out = fx.herald(smtp_url, &["send", "1", "--wait"], env).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    for e in emails {
        assert_eq!(
            server.messages_to(e).len(),
            1,
            "{e} gets exactly one message"
        );
    }
    let issue = fx.issue(fx.issue.id).await;
    assert_eq!(issue.status.to_string(), "sent");
    assert_eq!(issue.pause_reason, None);
}

async fn a_wrong_password_pauses_after_one_login_and_resume_delivers_once(backend: Backend) {
    let pki = TestPki::new();
    let server = TestSmtpServer::start_secured(
        Script::new(),
        Security::starttls(pki.server_config(Cert::CaSigned))
            .auth(USER, PASSWORD)
            .auth_tls_only(),
    )
    .await;
    let wrong = starttls_url(&server, "wr0ng-password");
    let fx = Fixture::new(TestDb::new(backend).await, test_config("", &wrong)).await;
    let ca = pki.write_ca_file(fx.db.path());
    let ca = ca.to_str().expect("UTF-8 path");
    let trust = [("HERALD_SMTP_CA_FILE", ca)];
    let emails = readers("pw", 10);
    fx.add_confirmed(&emails).await;

    let out = fx.herald(&wrong, &["send", "1", "--wait"], &trust).await;
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("535"),
        "the relay's reply is shown: {stderr}"
    );
    assert!(stderr.contains("smtp.url"), "says what to fix: {stderr}");
    assert!(stderr.contains("herald resume 1"), "{stderr}");
    assert!(
        !stderr.contains("wr0ng-password"),
        "never the password: {stderr}"
    );
    assert_eq!(
        count_commands(&server, "AUTH"),
        1,
        "one failed login, not a storm that locks the account: {:?}",
        server.commands()
    );
    assert_eq!(server.message_count(), 0);
    let issue = fx.issue(fx.issue.id).await;
    assert_eq!(issue.status.to_string(), "paused");
    let reason = issue.pause_reason.expect("a pause reason");
    assert!(reason.contains("535"), "{reason}");
    assert!(!reason.contains("wr0ng-password"), "{reason}");
    assert_all_queued_untouched(&fx).await;

    let status = fx.herald(&wrong, &["status", "1"], &trust).await;
    assert!(
        text(&status.stdout).contains(&reason),
        "{}",
        text(&status.stdout)
    );

    // The operator fixes smtp.url and resumes.
    let right = starttls_url(&server, PASSWORD);
    resume_and_finish(&fx, &right, &trust, &emails, &server).await;
}

async fn an_untrusted_certificate_pauses_until_smtp_ca_file_is_set(backend: Backend) {
    let pki = TestPki::new();
    let server = TestSmtpServer::start_secured(
        Script::new(),
        Security::starttls(pki.server_config(Cert::CaSigned)).auth(USER, PASSWORD),
    )
    .await;
    let url = starttls_url(&server, PASSWORD);
    let fx = Fixture::new(TestDb::new(backend).await, test_config("", &url)).await;
    let emails = readers("ca", 6);
    fx.add_confirmed(&emails).await;

    let out = fx.herald(&url, &["send", "1", "--wait"], &[]).await;
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("smtp.ca_file"),
        "says what to fix: {stderr}"
    );
    assert_eq!(
        count_commands(&server, "STARTTLS"),
        1,
        "one handshake, then the issue waits: {:?}",
        server.commands()
    );
    assert_eq!(
        count_commands(&server, "AUTH"),
        0,
        "no password over an untrusted channel"
    );
    let issue = fx.issue(fx.issue.id).await;
    assert_eq!(issue.status.to_string(), "paused");
    let reason = issue.pause_reason.expect("a pause reason");
    assert!(reason.contains("not trusted"), "{reason}");
    assert_all_queued_untouched(&fx).await;

    let ca = pki.write_ca_file(fx.db.path());
    let ca = ca.to_str().expect("UTF-8 path");
    resume_and_finish(&fx, &url, &[("HERALD_SMTP_CA_FILE", ca)], &emails, &server).await;
}

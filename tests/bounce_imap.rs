//! IMAP polling of a bounce mailbox against a real Dovecot started by each
//! test (`support/dovecot.rs`): reports are applied once and moved to
//! `bounce.imap_done_folder`; a connection cut between recording a report
//! and moving it reprocesses it harmlessly; a wrong password is a clear
//! error naming `bounce.imap_url`; an oversized message is not downloaded,
//! but marked; a server that drops the connection is retried by the
//! supervised poller of `herald serve`.

mod support;

use std::time::Duration;

use herald::bounce::imap::{ImapError, Outcome, Processed, READINESS_COMPONENT, REFUSED_KEYWORD};
use herald::bounce::{MAX_REPORT_BYTES, ReportEffect};
use herald::domain::SubscriptionState;
use herald::mail::CaFile;
use herald::readiness::ComponentState;
use support::app::{Backend, TestApp};
use support::cli::{herald, spawn_serve, text};
use support::dovecot::{CuttingProxy, Dovecot, PASSWORD, StoredMessage};
use tokio_util::sync::CancellationToken;

const DONE: &str = "Herald/Processed";

/// A delivery status notification as Postfix writes it (RFC 3464, `bounce(8)`'s
/// layout): a hard bounce (5.1.1) for `rcpt`, about the message `message_id`.
fn postfix_dsn(rcpt: &str, message_id: &str) -> Vec<u8> {
    format!(
        "Return-Path: <>\r\n\
Received: by mx.example.net (Postfix) id 4Q1; Wed,  2 Dec 2026 09:00:01 +0000 (UTC)\r\n\
Date: Wed,  2 Dec 2026 09:00:01 +0000 (UTC)\r\n\
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
To: digest@news.herald.test\r\n\
Auto-Submitted: auto-replied\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n\
\tboundary=\"B0UND4RY\"\r\n\
Message-Id: <dsn-{rcpt}@mx.example.net>\r\n\
\r\n\
This is a MIME-encapsulated message.\r\n\
\r\n\
--B0UND4RY\r\n\
Content-Description: Notification\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
I'm sorry to have to inform you that your message could not\r\n\
be delivered to one or more recipients.\r\n\
\r\n\
<{rcpt}>: host mx.example.net[192.0.2.7] said: 550 5.1.1 <{rcpt}>:\r\n\
    Recipient address rejected: User unknown in local recipient table\r\n\
\r\n\
--B0UND4RY\r\n\
Content-Description: Delivery report\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.net\r\n\
X-Postfix-Queue-ID: 4Q1\r\n\
Arrival-Date: Wed,  2 Dec 2026 09:00:00 +0000 (UTC)\r\n\
\r\n\
Final-Recipient: rfc822; {rcpt}\r\n\
Original-Recipient: rfc822;{rcpt}\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Remote-MTA: dns; mx.example.net\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User\r\n\
    unknown in local recipient table\r\n\
\r\n\
--B0UND4RY\r\n\
Content-Description: Undelivered Message Headers\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
From: Weekly Digest <digest@news.herald.test>\r\n\
To: {rcpt}\r\n\
Subject: Weekly Digest #1\r\n\
Message-ID: <{message_id}>\r\n\
\r\n\
--B0UND4RY--\r\n"
    )
    .into_bytes()
}

/// A message far over `MAX_REPORT_BYTES` (what a mail loop or a returned attachment makes).
fn oversized_message() -> Vec<u8> {
    let mut raw = b"From: someone@example.net\r\nSubject: huge\r\n\r\n".to_vec();
    let line = [b'x'; 998];
    while raw.len() <= MAX_REPORT_BYTES + 1000 {
        raw.extend_from_slice(&line);
        raw.extend_from_slice(b"\r\n");
    }
    raw
}

async fn spawn_polling(backend: Backend, url: &str, server: &Dovecot) -> TestApp {
    let url = url.to_owned();
    let ca = CaFile::load(server.ca_file()).expect("test CA");
    TestApp::spawn_with(backend, move |c| {
        c.bounce.imap_url = url.parse().expect("test IMAP URL");
        c.bounce.imap_ca_file = Some(ca);
        c.bounce.imap_poll_interval = herald::config::HumanDuration(Duration::from_secs(5));
    })
    .await
}

async fn poll(
    t: &TestApp,
) -> (
    Result<herald::bounce::imap::PollSummary, ImapError>,
    Vec<Processed>,
) {
    let mut seen = Vec::new();
    let result = t
        .app
        .poll_bounce_mailbox(&CancellationToken::new(), |p| seen.push(p.clone()))
        .await;
    (result, seen)
}

/// Sends issue #1 (the sample digest) to `readers` through the test SMTP server and returns
/// the Message-ID (without brackets) each of them got: what a real DSN quotes.
async fn send_first_issue(t: &TestApp, readers: &[&str]) -> Vec<String> {
    let nl = t.app.newsletter.clone();
    t.app
        .import_items_file(&nl, &support::engine::sample_digest(), true)
        .await
        .expect("import the sample digest");
    let issue = t
        .app
        .compose_issue(&nl, herald::content::ComposeOptions::default())
        .await
        .expect("compose");
    for r in readers {
        t.add_confirmed(r).await;
    }
    t.app.send_issue(&issue).await.expect("send_issue");
    support::engine::run_until_complete(&t.app, &t.db, issue.id, Duration::from_secs(60)).await;
    readers
        .iter()
        .map(|r| {
            let got = t.smtp.messages_to(r);
            assert_eq!(got.len(), 1, "one message for {r}");
            let raw = String::from_utf8_lossy(&got[0].data).into_owned();
            raw.split("\r\n")
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("message-id")
                        .then(|| value.trim().trim_matches(['<', '>']).to_owned())
                })
                .expect("a Message-ID")
        })
        .collect()
}

fn has_keyword(m: &StoredMessage, keyword: &str) -> bool {
    m.flags.iter().any(|f| f.contains(keyword))
}

async fn applies_each_report_once_and_moves_it(backend: Backend) {
    let Some(server) = Dovecot::start().await else {
        return;
    };
    let t = spawn_polling(backend, &server.url(true, "INBOX"), &server).await;
    let ids = send_first_issue(
        &t,
        &["gone@example.net", "moved@example.org", "stays@example.com"],
    )
    .await;
    let reports = [
        postfix_dsn("gone@example.net", &ids[0]),
        postfix_dsn("moved@example.org", &ids[1]),
        // About no message Herald sent: refused as bad input, moved all the same.
        postfix_dsn("stranger@example.org", "not-ours@elsewhere.example"),
    ];
    for raw in &reports {
        server.append("INBOX", raw).await;
    }

    let (result, seen) = poll(&t).await;
    let summary = result.expect("poll over imaps with bounce.imap_ca_file");
    assert_eq!(
        (summary.applied, summary.refused, summary.oversized),
        (2, 1, 0),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 3);
    for p in &seen[..2] {
        assert!(
            matches!(&p.outcome, Outcome::Applied(a) if matches!(a.effect, ReportEffect::Suppressed { issue_id: Some(_), .. })),
            "{p:?}"
        );
    }
    assert!(
        matches!(seen[2].outcome, Outcome::Refused(_)),
        "{:?}",
        seen[2]
    );
    for gone in ["gone@example.net", "moved@example.org"] {
        assert_eq!(
            t.subscription_state(gone).await,
            Some(SubscriptionState::Bounced),
            "{gone}"
        );
        assert!(t.is_suppressed(gone).await, "{gone}");
    }
    assert_eq!(
        t.subscription_state("stays@example.com").await,
        Some(SubscriptionState::Confirmed)
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM bounce_reports WHERE source = 'imap'")
            .await,
        2,
        "the refused one is not recorded"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM deliveries WHERE state = 'bounced'")
            .await,
        2
    );
    assert!(server.messages("INBOX").await.is_empty(), "INBOX emptied");
    let done = server.messages(DONE).await;
    assert_eq!(done.len(), 3, "all moved to {DONE}");
    let bodies: Vec<&[u8]> = done.iter().map(|m| m.body.as_slice()).collect();
    assert!(
        reports.iter().all(|r| bodies.contains(&r.as_slice())),
        "moved byte for byte"
    );
    for (m, p) in done.iter().zip(&seen) {
        let refused = !matches!(p.outcome, Outcome::Applied(_));
        assert_eq!(has_keyword(m, REFUSED_KEYWORD), refused, "{m:?} {p:?}");
    }

    // A second poll finds nothing: nothing is applied twice.
    let (again, seen_again) = poll(&t).await;
    assert_eq!(again.expect("second poll").processed(), 0);
    assert!(seen_again.is_empty());
    assert_eq!(server.messages(DONE).await.len(), 3);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM bounce_reports").await,
        2,
        "nothing recorded twice"
    );
}

async fn a_cut_between_recording_and_moving_reprocesses_harmlessly(backend: Backend) {
    let Some(server) = Dovecot::start().await else {
        return;
    };
    // The connection dies as Herald asks to move the message it just handed to
    // apply_report: what a crash at that moment leaves behind.
    let proxy = CuttingProxy::start(server.imap_port, "UID MOVE", 1).await;
    let url = server
        .url(false, "INBOX")
        .replace(&server.imap_port.to_string(), &proxy.port.to_string());
    let t = spawn_polling(backend, &url, &server).await;
    let ids = send_first_issue(&t, &["gone@example.net"]).await;
    let raw = postfix_dsn("gone@example.net", &ids[0]);
    server.append("INBOX", &raw).await;

    let (first, seen_first) = poll(&t).await;
    let err = first.expect_err("the cut fails the poll");
    assert!(
        matches!(err, ImapError::Protocol { doing: "MOVE", .. }),
        "{err}"
    );
    assert_eq!(proxy.cuts(), 1);
    assert!(
        seen_first.is_empty(),
        "not reported as done: {seen_first:?}"
    );
    assert_eq!(
        server.messages("INBOX").await.len(),
        1,
        "the message stays until it is moved"
    );
    // Recorded and applied before the cut.
    assert_eq!(t.count("SELECT COUNT(*) FROM bounce_reports").await, 1);
    assert_eq!(
        t.subscription_state("gone@example.net").await,
        Some(SubscriptionState::Bounced)
    );

    let (second, seen_second) = poll(&t).await;
    assert_eq!(second.expect("second poll").processed(), 1);
    assert_eq!(seen_second.len(), 1);
    assert!(server.messages("INBOX").await.is_empty());
    assert_eq!(server.messages(DONE).await.len(), 1);
    assert!(
        matches!(&seen_second[0].outcome, Outcome::Applied(a) if matches!(a.effect, ReportEffect::Duplicate { .. })),
        "the second time is a duplicate of the first: {:?}",
        seen_second[0]
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM bounce_reports").await,
        1,
        "recorded once"
    );
    assert!(t.is_suppressed("gone@example.net").await);
}

async fn a_report_that_cannot_be_recorded_stays_for_the_next_poll(backend: Backend) {
    let Some(server) = Dovecot::start().await else {
        return;
    };
    let t = spawn_polling(backend, &server.url(true, "INBOX"), &server).await;
    let ids = send_first_issue(&t, &["gone@example.net"]).await;
    server
        .append("INBOX", &postfix_dsn("gone@example.net", &ids[0]))
        .await;
    // The store fails as an unreachable database would (BounceError::Unavailable).
    t.exec("ALTER TABLE bounce_reports RENAME TO bounce_reports_away")
        .await;
    let (result, seen) = poll(&t).await;
    let err = result.expect_err("nothing could be recorded");
    assert!(matches!(err, ImapError::Unavailable(_)), "{err}");
    assert!(
        matches!(
            seen.as_slice(),
            [Processed {
                outcome: Outcome::Deferred(_),
                ..
            }]
        ),
        "{seen:?}"
    );
    assert_eq!(
        server.messages("INBOX").await.len(),
        1,
        "left in the mailbox"
    );
    assert!(server.messages(DONE).await.is_empty());

    t.exec("ALTER TABLE bounce_reports_away RENAME TO bounce_reports")
        .await;
    let (result, seen) = poll(&t).await;
    assert_eq!(result.expect("the next poll").applied, 1, "{seen:?}");
    assert_eq!(
        t.subscription_state("gone@example.net").await,
        Some(SubscriptionState::Bounced)
    );
    assert!(server.messages("INBOX").await.is_empty());
}

on_each_backend!(
    applies_each_report_once_and_moves_it,
    a_cut_between_recording_and_moving_reprocesses_harmlessly,
    a_report_that_cannot_be_recorded_stays_for_the_next_poll,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_names_the_key_and_hides_the_password() {
    let Some(server) = Dovecot::start().await else {
        return;
    };
    let wrong = "N0t-the-R1ght-one";
    let url = server
        .url(true, "INBOX")
        .replace(&PASSWORD.replace('/', "%2F"), wrong);
    let t = spawn_polling(Backend::Sqlite, &url, &server).await;
    server
        .append("INBOX", &postfix_dsn("a@example.net", "x@news.herald.test"))
        .await;
    let (result, seen) = poll(&t).await;
    let err = result.expect_err("refused login").to_string();
    assert!(
        err.contains("bounce.imap_url")
            && err.contains("refused the login")
            && err.contains("bounces"),
        "{err}"
    );
    assert!(!err.contains(wrong), "the password leaked: {err}");
    assert!(seen.is_empty());
    assert_eq!(server.messages("INBOX").await.len(), 1, "nothing touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_without_imap_ca_file_says_which_key_to_set() {
    let Some(server) = Dovecot::start().await else {
        return;
    };
    let url = server.url(true, "INBOX");
    let t = TestApp::spawn_with(Backend::Sqlite, move |c| {
        c.bounce.imap_url = url.parse().expect("test IMAP URL");
    })
    .await;
    let (result, _) = poll(&t).await;
    let err = result.expect_err("the test CA is not trusted").to_string();
    assert!(
        err.contains("UnknownIssuer") && err.contains("bounce.imap_ca_file"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_not_read_but_marked() {
    let Some(server) = Dovecot::start().await else {
        return;
    };
    let t = spawn_polling(Backend::Sqlite, &server.url(true, "INBOX"), &server).await;
    let big = oversized_message();
    server.append("INBOX", &big).await;
    server
        .append("INBOX", &postfix_dsn("a@example.net", "y@news.herald.test"))
        .await;

    let (result, seen) = poll(&t).await;
    let summary = result.expect("poll");
    assert_eq!(summary.oversized, 1, "{seen:?}");
    assert_eq!(summary.processed(), 2, "the next message is still handled");
    assert!(
        matches!(seen[0].outcome, Outcome::Oversized(size) if size as usize >= big.len()),
        "{:?}",
        seen[0]
    );
    assert!(server.messages("INBOX").await.is_empty());
    let done = server.messages(DONE).await;
    let moved_big = done
        .iter()
        .find(|m| m.body.len() == big.len())
        .expect("the big message moved whole");
    assert!(
        has_keyword(moved_big, REFUSED_KEYWORD),
        "{:?}",
        moved_big.flags
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_drops_the_connection_is_retried() {
    let Some(server) = Dovecot::start().await else {
        return;
    };
    let proxy = CuttingProxy::start(server.imap_port, "SELECT", 2).await;
    let url = server
        .url(false, "INBOX")
        .replace(&server.imap_port.to_string(), &proxy.port.to_string());
    let t = spawn_polling(Backend::Sqlite, &url, &server).await;
    server
        .append("INBOX", &postfix_dsn("a@example.net", "z@news.herald.test"))
        .await;

    let stop = CancellationToken::new();
    let readiness = t.app.readiness.clone();
    let state = move || {
        readiness
            .components()
            .into_iter()
            .find(|(name, _)| *name == READINESS_COMPONENT)
            .map(|(_, s)| s)
    };
    // What /readyz would have shown, sampled often (each failure shows for a second or two).
    let states = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = {
        let (states, state) = (states.clone(), state.clone());
        tokio::spawn(async move {
            loop {
                let now = state();
                {
                    let mut seen = states.lock().unwrap();
                    if seen.last() != Some(&now) {
                        seen.push(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let poller = tokio::spawn(herald::bounce::imap::run(t.app.clone(), stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(server.messages("INBOX").await.is_empty() && state() == Some(ComponentState::Running)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not retried: {:?}, {} cuts, {} connections",
            state(),
            proxy.cuts(),
            proxy.connections()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(proxy.cuts(), 2);
    assert!(proxy.connections() >= 3, "a new connection per retry");
    sampler.abort();
    let seen = states.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|s| matches!(s, Some(ComponentState::Degraded(why)) if why.contains("SELECT"))),
        "the failures showed on /readyz: {seen:?}"
    );
    assert_eq!(server.messages(DONE).await.len(), 1);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), poller)
        .await
        .expect("the poller stops when asked")
        .expect("no panic");
    assert_eq!(state(), Some(ComponentState::Stopped));
}

/// The real binary: `herald serve` starts the poller, logs a WARN for an oversized
/// message, never logs the password, and stops on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_serve_polls_the_mailbox() {
    let Some(server) = Dovecot::start().await else {
        return;
    };
    let t = TestApp::spawn(Backend::Sqlite).await;
    server.append("INBOX", &oversized_message()).await;
    server
        .append("INBOX", &postfix_dsn("a@example.net", "w@news.herald.test"))
        .await;
    let (url, ca_file) = (
        server.url(true, "INBOX"),
        server.ca_file().display().to_string(),
    );
    let served = spawn_serve(
        &t,
        &[
            ("HERALD_BOUNCE_IMAP_URL", &url),
            ("HERALD_BOUNCE_IMAP_CA_FILE", &ca_file),
            ("HERALD_LOG", "info"),
        ],
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while server.messages(DONE).await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "herald serve did not poll the mailbox; Dovecot's log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, log) = served.stop().await;
    assert!(status.success(), "{log}");
    assert!(
        log.contains("WARN") && log.contains("over the size limit"),
        "no WARN for the oversized message: {log}"
    );
    assert!(log.contains("polling the bounce mailbox"), "{log}");
    assert!(!log.contains(PASSWORD), "the password reached the log");
    assert!(server.messages("INBOX").await.is_empty());
}

/// `herald bounces poll`: one poll now, saying what it did; a wrong password
/// exits non-zero with the key to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_bounces_poll_says_what_it_did() {
    let Some(server) = Dovecot::start().await else {
        return;
    };
    let t = TestApp::spawn(Backend::Sqlite).await;
    server
        .append("INBOX", &postfix_dsn("a@example.net", "v@news.herald.test"))
        .await;
    let run = |url: String| {
        let mut cmd = support::cli::herald_command(&t, &["bounces", "poll"]);
        cmd.env("HERALD_BOUNCE_IMAP_URL", url)
            .env("HERALD_BOUNCE_IMAP_CA_FILE", server.ca_file());
        cmd.output().expect("run herald")
    };
    let wrong = "N0t-the-R1ght-one";
    let out = run(server
        .url(true, "INBOX")
        .replace(&PASSWORD.replace('/', "%2F"), wrong));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("bounce.imap_url") && !said.contains(wrong),
        "{said}"
    );

    let out = run(server.url(true, "INBOX"));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("1 message"), "{said}");
    assert!(!said.contains(PASSWORD), "{said}");
    assert_eq!(server.messages(DONE).await.len(), 1);

    let empty = herald(&t, &["bounces", "poll"]);
    assert!(!empty.status.success());
    assert!(text(&empty.stderr).contains("bounce.imap_url is empty"));
}

//! `herald bounces list | show | import` and the after-delivery figures of
//! `herald status` / `herald deliveries`, through the real binary, on both
//! backends. An issue goes over real SMTP to the test server with VERP
//! return paths first.
//!
//! `import_postfix_dsn_through_the_binary` needs the real parser
//! (`bounce::parse`, the parse slice of issue #11): against the interface
//! stub it prints "skipped" and passes.

mod support;

use std::time::Duration;

use herald::bounce::{DsnAction, OriginalMessage, RecipientStatus, Report};
use herald::domain::{DeliveryState, ReportKind, ReportSource};
use support::engine::{Backend, Fixture, TestDb, test_config};
use support::smtp_server::{Script, TestSmtpServer};

crate::on_each_backend!(
    list_show_status_and_deliveries_show_a_bounce,
    import_refuses_bad_files_with_one_line_each,
    import_postfix_dsn_through_the_binary,
);

const BOUNCE_DOMAIN: &str = "bounces.herald.test";

struct Setup {
    fx: Fixture,
    server: TestSmtpServer,
    readers: Vec<String>,
}

async fn setup(backend: Backend) -> Setup {
    let server = TestSmtpServer::start(Script::new()).await;
    let mut config = test_config("", &server.url());
    config.bounce.domain = BOUNCE_DOMAIN.into();
    let fx = Fixture::new(TestDb::new(backend).await, config).await;
    let readers: Vec<String> = (0..3)
        .map(|n| format!("reader{n:02}@example.net"))
        .collect();
    fx.add_confirmed(&readers).await;
    fx.send(&fx.issue).await;
    fx.run_until_complete(fx.issue.id, Duration::from_secs(60))
        .await;
    Setup {
        fx,
        server,
        readers,
    }
}

impl Setup {
    async fn herald(&self, args: &[&str]) -> (bool, String, String) {
        let out = self
            .fx
            .herald(
                &self.server.url(),
                args,
                &[("HERALD_BOUNCE_DOMAIN", BOUNCE_DOMAIN)],
            )
            .await;
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn verp(&self, to: &str) -> String {
        self.server
            .messages_to(to)
            .last()
            .unwrap_or_else(|| panic!("no message to {to}"))
            .mail_from
            .clone()
    }

    fn message_id(&self, to: &str) -> String {
        self.server.messages_to(to)[0]
            .header("Message-ID")
            .expect("Message-ID")
            .trim()
            .to_owned()
    }
}

fn hard_bounce(verp: &str, rcpt: &str) -> Report {
    Report {
        kind: ReportKind::Bounce,
        recipients: vec![RecipientStatus {
            address: rcpt.into(),
            action: DsnAction::Failed,
            status: Some("5.1.1".into()),
            diagnostic: Some("smtp; 550 5.1.1 User unknown".into()),
            remote_mta: Some("dns; mx.example.net".into()),
        }],
        original: OriginalMessage {
            return_paths: vec![verp.into()],
            message_id: None,
            test_copy: false,
        },
        feedback_type: None,
        provider_event_id: None,
        summary: Some("Undelivered Mail Returned to Sender".into()),
    }
}

async fn list_show_status_and_deliveries_show_a_bounce(backend: Backend) {
    let s = setup(backend).await;
    let gone = &s.readers[1];
    let raw = "From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered\r\n\r\nUser unknown \u{1b}[31m\r\n";
    let applied =
        s.fx.app
            .apply_report(
                hard_bounce(&s.verp(gone), gone),
                ReportSource::Smtp,
                Some(raw.as_bytes()),
            )
            .await
            .expect("applied");

    let (ok, out, err) = s.herald(&["bounces", "list"]).await;
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(&applied.report_id.to_string()))
        .unwrap_or_else(|| panic!("report {} not listed:\n{out}", applied.report_id));
    for needle in ["smtp", "bounce", "suppressed", "#1", "5.1.1", gone.as_str()] {
        assert!(line.contains(needle), "{needle:?} not in {line:?}");
    }

    let (ok, out, err) = s
        .herald(&["bounces", "list", "--issue", "1", "--json"])
        .await;
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(listed[0]["effect"], "suppressed");
    assert_eq!(listed[0]["issue_number"], 1);

    let id = applied.report_id.to_string();
    let (ok, out, err) = s.herald(&["bounces", "show", &id]).await;
    assert!(ok, "{err}");
    for needle in [
        "effect             suppressed",
        "matched by         verp",
        "diagnostic         smtp; 550 5.1.1 User unknown",
        "remote MTA         dns; mx.example.net",
        "kept until",
        "Subject: Undelivered",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
    assert!(
        !out.contains('\u{1b}'),
        "escape sequences from a report never reach the terminal"
    );

    let (ok, _, err) = s.herald(&["bounces", "show", "999999"]).await;
    assert!(!ok);
    assert!(err.contains("no report 999999"), "{err}");

    let (ok, out, err) = s.herald(&["status", "1", "--json"]).await;
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(status["bounced_after_delivery"], 1, "{out}");
    assert_eq!(status["complaints"], 0, "{out}");
    let (ok, out, err) = s.herald(&["status", "1"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("after delivery  1 bounced, 0 complaints"),
        "{out}"
    );

    let (ok, out, err) = s.herald(&["deliveries", "1"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("issue #1 after delivery: 1 bounced, 0 complaints"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with(gone.as_str()))
        .unwrap_or_else(|| panic!("{gone} not in:\n{out}"));
    assert!(
        line.contains("bounced") && line.contains("bounced after delivery: 5.1.1"),
        "{line}"
    );
}

async fn import_refuses_bad_files_with_one_line_each(backend: Backend) {
    let s = setup(backend).await;
    let dir = s.fx.db.path();
    let huge = dir.join("huge.eml");
    std::fs::write(&huge, vec![b'a'; herald::bounce::MAX_REPORT_BYTES + 1]).expect("write");
    let stranger = dir.join("stranger.eml");
    std::fs::write(
        &stranger,
        "From: someone@example.com\r\nTo: nobody@example.org\r\nSubject: hello\r\n\r\nnot a report\r\n",
    )
    .expect("write");
    let missing = dir.join("missing.eml");
    let (ok, out, err) = s
        .herald(&[
            "bounces",
            "import",
            huge.to_str().unwrap(),
            missing.to_str().unwrap(),
            stranger.to_str().unwrap(),
        ])
        .await;
    assert!(!ok, "refused files make the command fail:\n{out}");
    assert_eq!(out.lines().count(), 3, "one line per file:\n{out}");
    assert!(out.contains("huge.eml: refused: larger than"), "{out}");
    assert!(out.contains("missing.eml: refused: cannot open"), "{out}");
    assert!(out.contains("stranger.eml: refused:"), "{out}");
    assert!(err.contains("3 of 3 files were refused"), "{err}");
    let count = herald::with_pool!(&s.fx.store, |p| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM bounce_reports"
    )
    .fetch_one(p)
    .await
    .expect("count"));
    assert_eq!(count, 0, "nothing refused is recorded");
}

/// A DSN as Postfix writes it (bounce(8)'s default template: a text part,
/// `message/delivery-status` with `X-Postfix-*` fields, the returned
/// headers as `text/rfc822-headers`), sent to the VERP address.
fn postfix_dsn(verp: &str, rcpt: &str, message_id: &str) -> String {
    format!(
        "Return-Path: <>\r
Delivered-To: {verp}\r
Received: by mail.example.net (Postfix)\r
\tid 3F2A1C0123; Wed,  2 Dec 2026 10:00:00 +0000 (UTC)\r
Date: Wed,  2 Dec 2026 10:00:00 +0000 (UTC)\r
From: MAILER-DAEMON@mail.example.net (Mail Delivery System)\r
Subject: Undelivered Mail Returned to Sender\r
To: {verp}\r
Auto-Submitted: auto-replied\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status;\r
\tboundary=\"3F2A1C0123.1764669600/mail.example.net\"\r
Content-Transfer-Encoding: 8bit\r
Message-Id: <20261202100000.3F2A1C0123@mail.example.net>\r
\r
This is a MIME-encapsulated message.\r
\r
--3F2A1C0123.1764669600/mail.example.net\r
Content-Description: Notification\r
Content-Type: text/plain; charset=us-ascii\r
\r
This is the mail system at host mail.example.net.\r
\r
I'm sorry to have to inform you that your message could not\r
be delivered to one or more recipients. It's attached below.\r
\r
                   The mail system\r
\r
<{rcpt}>: host mx.example.net[192.0.2.25] said: 550 5.1.1\r
    <{rcpt}>: Recipient address rejected: User unknown in local recipient\r
    table (in reply to RCPT TO command)\r
\r
--3F2A1C0123.1764669600/mail.example.net\r
Content-Description: Delivery report\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mail.example.net\r
X-Postfix-Queue-ID: 3F2A1C0123\r
X-Postfix-Sender: rfc822; {verp}\r
Arrival-Date: Wed,  2 Dec 2026 09:59:58 +0000 (UTC)\r
\r
Final-Recipient: rfc822; {rcpt}\r
Original-Recipient: rfc822;{rcpt}\r
Action: failed\r
Status: 5.1.1\r
Remote-MTA: dns; mx.example.net\r
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User\r
    unknown in local recipient table\r
\r
--3F2A1C0123.1764669600/mail.example.net\r
Content-Description: Undelivered Message Headers\r
Content-Type: text/rfc822-headers\r
\r
Return-Path: <{verp}>\r
From: Weekly Digest <digest@herald.test>\r
To: {rcpt}\r
Subject: Weekly Digest\r
Message-ID: {message_id}\r
\r
--3F2A1C0123.1764669600/mail.example.net--\r
"
    )
}

async fn import_postfix_dsn_through_the_binary(backend: Backend) {
    let probe = postfix_dsn("b-d1-1-00@x.test", "a@example.net", "<issue-1.00@x.test>");
    if herald::bounce::parse_report(probe.as_bytes())
        .map(|r| r.kind == ReportKind::Unrecognised)
        .unwrap_or(true)
    {
        eprintln!(
            "skipped: bounce::parse is the interface stub; this test runs once the parse slice is merged"
        );
        return;
    }
    let s = setup(backend).await;
    let gone = &s.readers[0];
    let good = s.fx.db.path().join("postfix.eml");
    std::fs::write(&good, postfix_dsn(&s.verp(gone), gone, &s.message_id(gone))).expect("write");
    // The same DSN, but to a VERP address whose MAC was tampered with.
    let forged_verp = {
        let v = s.verp(gone);
        let (local, domain) = v.rsplit_once('@').expect("address");
        let flipped = if local.ends_with('0') { '1' } else { '0' };
        format!("{}{flipped}@{domain}", &local[..local.len() - 1])
    };
    let forged = s.fx.db.path().join("forged.eml");
    std::fs::write(&forged, postfix_dsn(&forged_verp, gone, "<x@example.org>")).expect("write");
    let (ok, out, err) = s
        .herald(&[
            "bounces",
            "import",
            forged.to_str().unwrap(),
            good.to_str().unwrap(),
        ])
        .await;
    assert!(!ok, "one refused file fails the command:\n{out}\n{err}");
    assert!(out.contains("forged.eml: refused:"), "{out}");
    assert!(out.contains("postfix.eml: report"), "{out}");
    assert!(out.contains("hard bounce"), "{out}");
    assert!(err.contains("1 of 2 files were refused"), "{err}");
    assert_eq!(s.fx.subscription_state(gone).await, "bounced");
    assert!(s.fx.is_suppressed(gone).await);
    assert_eq!(
        s.fx.deliveries(s.fx.issue.id).await[gone.as_str()].0.state,
        DeliveryState::Bounced
    );
    assert_eq!(s.fx.subscription_state(&s.readers[1]).await, "confirmed");
    let (ok, out, _) = s.herald(&["bounces", "list", "--json"]).await;
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(listed[0]["source"], "import");
}

//! `App::apply_report` (issue #11) on both backends: issues go over real
//! SMTP to the test server with VERP return paths, then reports built in
//! code (as the parser and the providers' webhooks hand them over) are
//! applied, and the test reads what became of the deliveries, the
//! subscriptions, the suppression list, the consent history and the
//! `bounce_reports` rows.

mod support;

use std::time::Duration;

use herald::bounce::{
    Applied, BounceError, DsnAction, OriginalMessage, RecipientStatus, Report, ReportEffect,
};
use herald::domain::{BounceTag, DeliveryState, ReportKind, ReportSource};
use support::engine::{Backend, Fixture, TestDb, test_config};
use support::smtp_server::{Reply, Script, TestSmtpServer};

crate::on_each_backend!(
    hard_bounce_via_verp_suppresses_and_the_next_issue_skips_them,
    verp_envelope_is_stable_across_a_retry,
    soft_bounces_on_three_issues_in_a_row_suppress,
    complaint_unsubscribes_and_is_counted,
    test_copy_and_confirmation_reports_leave_the_list_alone,
    forged_or_unknown_reports_are_refused_and_nothing_is_recorded,
    message_id_and_recipient_match_without_verp,
    duplicate_provider_event_is_applied_once,
    raw_message_is_kept_then_purged,
    delays_auto_replies_and_policy_refusals_do_not_blame_the_reader,
);

const BOUNCE_DOMAIN: &str = "bounces.herald.test";

struct Setup {
    fx: Fixture,
    server: TestSmtpServer,
    readers: Vec<String>,
    ids: Vec<i64>,
}

async fn setup(backend: Backend, readers: usize, script: Script, verp: bool) -> Setup {
    let server = TestSmtpServer::start(script).await;
    let mut config = test_config("", &server.url());
    if verp {
        config.bounce.domain = BOUNCE_DOMAIN.into();
    }
    let fx = Fixture::new(TestDb::new(backend).await, config).await;
    let readers: Vec<String> = (0..readers)
        .map(|n| format!("reader{n:02}@example.net"))
        .collect();
    let ids = fx.add_confirmed(&readers).await;
    Setup {
        fx,
        server,
        readers,
        ids,
    }
}

impl Setup {
    /// Sends `issue` to everyone and waits until it is complete.
    async fn deliver(&self, issue: &herald::store::content::IssueRow) {
        self.fx.send(issue).await;
        self.fx
            .run_until_complete(issue.id, Duration::from_secs(60))
            .await;
    }

    /// The MAIL FROM the test server saw for the last message to `to`.
    fn mail_from(&self, to: &str) -> String {
        self.server
            .messages_to(to)
            .last()
            .unwrap_or_else(|| panic!("no message to {to}"))
            .mail_from
            .clone()
    }

    fn message_id(&self, to: &str) -> String {
        self.server
            .messages_to(to)
            .last()
            .unwrap_or_else(|| panic!("no message to {to}"))
            .header("Message-ID")
            .expect("Message-ID")
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned()
    }

    async fn count(&self, sql: &str) -> i64 {
        let sql = sql.to_owned();
        herald::with_pool!(&self.fx.store, |p| sqlx::query_scalar::<_, i64>(
            sqlx::AssertSqlSafe(sql.clone())
        )
        .fetch_one(p)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}")))
    }

    async fn delivery_state(&self, issue_id: i64, email: &str) -> DeliveryState {
        self.fx.deliveries(issue_id).await[email].0.state
    }

    async fn consent_kinds(&self, subscriber_id: i64) -> Vec<String> {
        herald::with_pool!(&self.fx.store, |p| sqlx::query_scalar::<_, String>(
            "SELECT kind FROM consent_events WHERE subscriber_id = $1 ORDER BY id"
        )
        .bind(subscriber_id)
        .fetch_all(p)
        .await
        .expect("consent events"))
    }

    async fn apply(&self, report: Report) -> Result<Applied, BounceError> {
        self.fx
            .app
            .apply_report(report, ReportSource::Smtp, Some(b"raw report bytes"))
            .await
    }
}

fn bounce(return_path: &str, rcpt: &str, status: &str, diagnostic: &str) -> Report {
    Report {
        kind: ReportKind::Bounce,
        recipients: vec![RecipientStatus {
            address: format!("rfc822; {rcpt}"),
            action: DsnAction::Failed,
            status: Some(status.into()),
            diagnostic: Some(diagnostic.into()),
            remote_mta: Some("dns; mx.example.net".into()),
        }],
        original: OriginalMessage {
            return_paths: vec![return_path.into()],
            message_id: None,
            test_copy: false,
        },
        feedback_type: None,
        provider_event_id: None,
        summary: Some("Undelivered Mail Returned to Sender".into()),
    }
}

fn complaint(return_path: Option<&str>, rcpt: &str, message_id: Option<&str>) -> Report {
    Report {
        kind: ReportKind::Complaint,
        recipients: vec![RecipientStatus {
            address: rcpt.into(),
            action: DsnAction::Delivered,
            status: None,
            diagnostic: None,
            remote_mta: None,
        }],
        original: OriginalMessage {
            return_paths: return_path.into_iter().map(str::to_owned).collect(),
            message_id: message_id.map(str::to_owned),
            test_copy: false,
        },
        feedback_type: Some("abuse".into()),
        provider_event_id: None,
        summary: Some("Complaint about message".into()),
    }
}

async fn hard_bounce_via_verp_suppresses_and_the_next_issue_skips_them(backend: Backend) {
    let s = setup(backend, 3, Script::new(), true).await;
    s.deliver(&s.fx.issue).await;
    let gone = &s.readers[1];
    let verp = s.mail_from(gone);
    let tag = BounceTag::Delivery {
        issue_id: s.fx.issue.id,
        subscriber_id: s.ids[1],
    };
    assert_eq!(
        verp,
        tag.address(BOUNCE_DOMAIN, &s.fx.app.secret),
        "the envelope sender is the delivery's VERP address"
    );
    for other in [&s.readers[0], &s.readers[2]] {
        assert_ne!(s.mail_from(other), verp, "one return path per message");
    }

    // Some MTAs lower-case (or upper-case) the local part on the way back.
    let applied = s
        .apply(bounce(
            &verp.to_ascii_uppercase(),
            gone,
            "5.1.1",
            "smtp; 550 5.1.1 <reader01@example.net>: Recipient address rejected: User unknown",
        ))
        .await
        .expect("a hard bounce is applied");
    assert_eq!(
        applied.effect,
        ReportEffect::Suppressed {
            issue_id: Some(s.fx.issue.id),
            subscriber_id: s.ids[1]
        }
    );
    assert_eq!(
        s.delivery_state(s.fx.issue.id, gone).await,
        DeliveryState::Bounced
    );
    assert_eq!(s.fx.subscription_state(gone).await, "bounced");
    assert!(s.fx.is_suppressed(gone).await);
    assert_eq!(
        s.consent_kinds(s.ids[1]).await.last().map(String::as_str),
        Some("bounce")
    );
    // The others are untouched.
    assert_eq!(
        s.delivery_state(s.fx.issue.id, &s.readers[0]).await,
        DeliveryState::Sent
    );
    assert_eq!(s.fx.subscription_state(&s.readers[0]).await, "confirmed");
    let row =
        s.fx.app
            .bounce_report(applied.report_id)
            .await
            .expect("read")
            .expect("recorded");
    assert_eq!(row.effect.as_str(), "suppressed");
    assert_eq!(row.matched_by.map(|m| m.as_str()), Some("verp"));
    assert_eq!(row.status.as_deref(), Some("5.1.1"));
    assert_eq!(row.issue_number, Some(s.fx.issue.number));

    // The next issue is not sent to the bounced reader.
    let next = s.fx.compose_next_issue("After the bounce").await;
    s.deliver(&next).await;
    assert!(
        !s.fx.deliveries(next.id).await.contains_key(gone.as_str()),
        "a bounced reader is not enqueued again"
    );
    assert_eq!(s.server.messages_to(gone).len(), 1);
    assert_eq!(s.server.messages_to(&s.readers[0]).len(), 2);

    // Status shows it.
    let status =
        s.fx.app
            .issue_report_counts(s.fx.issue.id)
            .await
            .expect("counts");
    assert_eq!(status.bounced_after_delivery, 1);
    assert_eq!(status.complaints, 0);
}

async fn verp_envelope_is_stable_across_a_retry(backend: Backend) {
    let grey = "reader00@example.net";
    let script = Script::new().rcpt(
        grey,
        [Reply::code(451, "4.7.1 Greylisted, try again"), Reply::ok()],
    );
    let s = setup(backend, 1, script, true).await;
    s.deliver(&s.fx.issue).await;
    let tag = BounceTag::Delivery {
        issue_id: s.fx.issue.id,
        subscriber_id: s.ids[0],
    };
    let expected = format!("<{}>", tag.address(BOUNCE_DOMAIN, &s.fx.app.secret));
    let mail_froms: Vec<String> = s
        .server
        .commands()
        .into_iter()
        .filter(|(_, c)| c.to_ascii_uppercase().starts_with("MAIL FROM:"))
        .map(|(_, c)| c)
        .collect();
    assert!(
        mail_froms.len() >= 2,
        "greylisted, then retried: {mail_froms:?}"
    );
    for c in &mail_froms {
        assert!(c.contains(&expected), "{c} carries {expected}");
    }
    assert_eq!(
        s.delivery_state(s.fx.issue.id, grey).await,
        DeliveryState::Sent
    );
}

async fn soft_bounces_on_three_issues_in_a_row_suppress(backend: Backend) {
    let s = setup(backend, 2, Script::new(), true).await;
    let full = &s.readers[0];
    let mut issue = s.fx.issue.clone();
    for round in 1..=3 {
        if round > 1 {
            issue = s.fx.compose_next_issue(&format!("Round {round}")).await;
        }
        s.deliver(&issue).await;
        // The relay's 250 came first; the mailbox-full DSN follows.
        let applied = s
            .apply(bounce(
                &s.mail_from(full),
                full,
                "5.2.2",
                "smtp; 552 5.2.2 Mailbox full",
            ))
            .await
            .expect("a soft bounce is applied");
        assert_eq!(
            applied.effect,
            ReportEffect::SoftBounce {
                issue_id: Some(issue.id),
                subscriber_id: s.ids[0],
                suppressed: round == 3
            },
            "round {round}"
        );
        assert_eq!(
            s.delivery_state(issue.id, full).await,
            DeliveryState::Bounced
        );
        let expected = if round < 3 { "confirmed" } else { "bounced" };
        assert_eq!(
            s.fx.subscription_state(full).await,
            expected,
            "round {round}"
        );
        assert_eq!(s.fx.is_suppressed(full).await, round == 3, "round {round}");
    }
    // A second report about the same message does not count twice.
    assert_eq!(s.fx.subscription_state(&s.readers[1]).await, "confirmed");
    let other = &s.readers[1];
    for _ in 0..2 {
        s.apply(bounce(
            &s.mail_from(other),
            other,
            "4.2.2",
            "smtp; 452 4.2.2 over quota",
        ))
        .await
        .expect("applied");
    }
    assert_eq!(
        s.count(&format!(
            "SELECT soft_bounces FROM subscriptions WHERE subscriber_id = {}",
            s.ids[1]
        ))
        .await,
        1
    );
}

async fn complaint_unsubscribes_and_is_counted(backend: Backend) {
    let s = setup(backend, 4, Script::new(), true).await;
    s.deliver(&s.fx.issue).await;
    let angry = &s.readers[2];
    // ARF reports often redact the recipient: the VERP address is enough.
    let applied = s
        .apply(complaint(
            Some(&s.mail_from(angry)),
            "redacted@example.net",
            None,
        ))
        .await
        .expect("a complaint is applied");
    assert_eq!(
        applied.effect,
        ReportEffect::Complaint {
            issue_id: Some(s.fx.issue.id),
            subscriber_id: s.ids[2]
        }
    );
    assert_eq!(s.fx.subscription_state(angry).await, "complained");
    assert!(s.fx.is_suppressed(angry).await);
    assert_eq!(
        s.consent_kinds(s.ids[2]).await.last().map(String::as_str),
        Some("complaint")
    );
    // Delivered all the same: the delivery stays `sent`.
    assert_eq!(
        s.delivery_state(s.fx.issue.id, angry).await,
        DeliveryState::Sent
    );
    let counts =
        s.fx.app
            .issue_report_counts(s.fx.issue.id)
            .await
            .expect("counts");
    assert_eq!(counts.complaints, 1);
    assert_eq!(counts.bounced_after_delivery, 0);
    assert!(
        !s.fx
            .app
            .is_sendable(
                &herald::domain::EmailAddress::parse(angry).expect("address"),
                s.fx.app.newsletter.id
            )
            .await
            .expect("db")
    );
}

async fn test_copy_and_confirmation_reports_leave_the_list_alone(backend: Backend) {
    let s = setup(backend, 1, Script::new(), true).await;
    let reader = &s.readers[0];
    let secret = &s.fx.app.secret;
    let test_copy = BounceTag::TestCopy {
        issue_id: s.fx.issue.id,
    }
    .address(BOUNCE_DOMAIN, secret);
    let confirmation = BounceTag::Confirmation {
        subscriber_id: s.ids[0],
        newsletter_id: s.fx.app.newsletter.id,
    }
    .address(BOUNCE_DOMAIN, secret);
    for return_path in [&test_copy, &confirmation] {
        let applied = s
            .apply(bounce(
                return_path,
                reader,
                "5.1.1",
                "smtp; 550 5.1.1 User unknown",
            ))
            .await
            .expect("recorded");
        assert_eq!(
            applied.effect,
            ReportEffect::NotAboutTheList,
            "{return_path}"
        );
    }
    // Without VERP: the X-Herald-Test header of the returned message.
    let mut report = bounce("bounces@example.org", reader, "5.1.1", "550 5.1.1 unknown");
    report.original.test_copy = true;
    assert_eq!(
        s.apply(report).await.expect("recorded").effect,
        ReportEffect::NotAboutTheList
    );
    assert_eq!(s.fx.subscription_state(reader).await, "confirmed");
    assert!(!s.fx.is_suppressed(reader).await);
    assert_eq!(s.count("SELECT COUNT(*) FROM bounce_reports").await, 3);

    // And the test copies really go out with their VERP address.
    let editor = herald::domain::EmailAddress::parse("editor@example.org").expect("address");
    s.fx.app
        .send_test_copies(&s.fx.app.newsletter, &s.fx.issue, &[editor])
        .await
        .expect("test copy");
    assert_eq!(s.mail_from("editor@example.org"), test_copy);
}

async fn forged_or_unknown_reports_are_refused_and_nothing_is_recorded(backend: Backend) {
    let s = setup(backend, 1, Script::new(), true).await;
    s.deliver(&s.fx.issue).await;
    let reader = &s.readers[0];
    let verp = s.mail_from(reader);
    let other_secret = herald::domain::Secret::from("another-instance-secret-0123456789abcdef");
    let foreign = BounceTag::Delivery {
        issue_id: s.fx.issue.id,
        subscriber_id: s.ids[0],
    }
    .address(BOUNCE_DOMAIN, &other_secret);
    let tampered = verp.replacen(
        &format!("b-d{}-", s.fx.issue.id),
        &format!("b-d{}-", s.fx.issue.id + 1),
        1,
    );
    let cases = [
        (
            bounce(&foreign, reader, "5.1.1", "550 5.1.1 unknown"),
            "carries no valid token",
        ),
        (
            bounce(&tampered, reader, "5.1.1", "550 5.1.1 unknown"),
            "carries no valid token",
        ),
        (
            bounce("b-d1-1-zz@bounces.herald.test", reader, "5.1.1", "550"),
            "carries no valid token",
        ),
        (
            bounce(
                "postmaster@example.org",
                "stranger@example.com",
                "5.1.1",
                "550 5.1.1 unknown",
            ),
            "stranger@example.com",
        ),
        (
            complaint(
                None,
                "nobody@example.com",
                Some("issue-1.0123456789abcdef@herald.test"),
            ),
            "no subscriber",
        ),
    ];
    for (report, needle) in cases {
        match s.apply(report.clone()).await {
            Err(BounceError::Rejected(message)) => {
                assert!(message.contains(needle), "{message:?} lacks {needle:?}");
                assert!(message.contains("nothing was recorded"), "{message}");
            }
            other => panic!("{report:?} was not refused: {other:?}"),
        }
    }
    assert_eq!(s.count("SELECT COUNT(*) FROM bounce_reports").await, 0);
    assert_eq!(s.fx.subscription_state(reader).await, "confirmed");
    assert!(!s.fx.is_suppressed(reader).await);
    assert_eq!(
        s.delivery_state(s.fx.issue.id, reader).await,
        DeliveryState::Sent
    );
}

async fn message_id_and_recipient_match_without_verp(backend: Backend) {
    let s = setup(backend, 3, Script::new(), false).await;
    s.deliver(&s.fx.issue).await;
    let (a, b) = (&s.readers[0], &s.readers[1]);
    // No VERP: the envelope sender is the configured one.
    assert_eq!(s.mail_from(a), "digest@herald.test");
    // By Message-ID (its tag must be that recipient's).
    let mut report = bounce("digest@herald.test", a, "5.1.1", "550 5.1.1 no such user");
    report.original.message_id = Some(s.message_id(a));
    let applied = s.apply(report).await.expect("matched by Message-ID");
    assert!(
        matches!(applied.effect, ReportEffect::Suppressed { subscriber_id, .. } if subscriber_id == s.ids[0])
    );
    let row =
        s.fx.app
            .bounce_report(applied.report_id)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(row.matched_by.map(|m| m.as_str()), Some("message_id"));
    // By recipient alone (the reader's latest delivery).
    let applied = s
        .apply(bounce(
            "digest@herald.test",
            &b.to_ascii_uppercase(),
            "5.1.1",
            "550 5.1.1 unknown",
        ))
        .await
        .expect("matched by recipient");
    assert!(
        matches!(applied.effect, ReportEffect::Suppressed { subscriber_id, issue_id } if subscriber_id == s.ids[1] && issue_id == Some(s.fx.issue.id))
    );
    let row =
        s.fx.app
            .bounce_report(applied.report_id)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(row.matched_by.map(|m| m.as_str()), Some("recipient"));
    assert_eq!(s.fx.subscription_state(&s.readers[2]).await, "confirmed");
}

async fn duplicate_provider_event_is_applied_once(backend: Backend) {
    let s = setup(backend, 1, Script::new(), true).await;
    s.deliver(&s.fx.issue).await;
    let reader = &s.readers[0];
    let mut report = complaint(Some(&s.mail_from(reader)), reader, None);
    report.provider_event_id = Some("evt-0001".into());
    let first = s.apply(report.clone()).await.expect("first");
    assert!(matches!(first.effect, ReportEffect::Complaint { .. }));
    let again = s.apply(report.clone()).await.expect("second");
    assert_eq!(
        again.effect,
        ReportEffect::Duplicate {
            report_id: first.report_id
        }
    );
    assert_eq!(s.count("SELECT COUNT(*) FROM bounce_reports").await, 1);
    assert_eq!(
        s.consent_kinds(s.ids[0])
            .await
            .iter()
            .filter(|k| *k == "complaint")
            .count(),
        1
    );
    // The same id from another source is another event.
    let other =
        s.fx.app
            .apply_report(report, ReportSource::Postmark, None)
            .await
            .expect("other source");
    assert_ne!(other.report_id, first.report_id);
}

async fn raw_message_is_kept_then_purged(backend: Backend) {
    let s = setup(backend, 1, Script::new(), true).await;
    s.deliver(&s.fx.issue).await;
    let reader = &s.readers[0];
    let applied = s
        .apply(bounce(&s.mail_from(reader), reader, "4.4.1", "timeout"))
        .await
        .expect("applied");
    let row =
        s.fx.app
            .bounce_report(applied.report_id)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(row.raw.as_deref(), Some(&b"raw report bytes"[..]));
    assert!(row.raw_purge_at.is_some());
    // Not yet due: nothing purged.
    assert_eq!(s.fx.app.purge_report_raw().await.expect("purge"), 0);
    // Age it past bounce.keep_raw.
    herald::with_pool!(&s.fx.store, |p| {
        sqlx::query("UPDATE bounce_reports SET raw_purge_at = 1")
            .execute(p)
            .await
            .map(|_| ())
            .expect("age")
    });
    assert_eq!(s.fx.app.purge_report_raw().await.expect("purge"), 1);
    let row =
        s.fx.app
            .bounce_report(applied.report_id)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(row.raw, None);
    assert_eq!(row.status.as_deref(), Some("4.4.1"), "the rest stays");
}

async fn delays_auto_replies_and_policy_refusals_do_not_blame_the_reader(backend: Backend) {
    let s = setup(backend, 1, Script::new(), true).await;
    s.deliver(&s.fx.issue).await;
    let reader = &s.readers[0];
    let verp = s.mail_from(reader);
    let mut delayed = bounce(&verp, reader, "4.4.1", "smtp; 451 4.4.1 no answer");
    delayed.kind = ReportKind::Delay;
    delayed.recipients[0].action = DsnAction::Delayed;
    let mut auto = bounce(&verp, reader, "2.0.0", "");
    auto.kind = ReportKind::AutoReply;
    auto.recipients.clear();
    for report in [delayed, auto] {
        assert_eq!(
            s.apply(report).await.expect("recorded").effect,
            ReportEffect::Ignored
        );
    }
    assert_eq!(
        s.delivery_state(s.fx.issue.id, reader).await,
        DeliveryState::Sent
    );
    let applied = s
        .apply(bounce(
            &verp,
            reader,
            "5.7.1",
            "smtp; 550 5.7.1 Message rejected due to local policy",
        ))
        .await
        .expect("recorded");
    assert!(matches!(
        applied.effect,
        ReportEffect::DeliveryFailed { .. }
    ));
    assert_eq!(
        s.delivery_state(s.fx.issue.id, reader).await,
        DeliveryState::Bounced
    );
    assert_eq!(s.fx.subscription_state(reader).await, "confirmed");
    assert!(!s.fx.is_suppressed(reader).await);
    assert_eq!(s.count("SELECT COUNT(*) FROM bounce_reports").await, 3);
}

//! One identity per address (issue #7 §2): `Ann@`, `ann@` and `ANN@` are one
//! reader for lookup, uniqueness, suppression, erasure, import, the public
//! form and enqueue, while the spelling the reader typed is kept for
//! display and sending. Also: confirming is one transaction, and probes do
//! not pile `request` events onto someone's consent history.
//! Each scenario runs on SQLite, and on PostgreSQL when
//! `HERALD_TEST_POSTGRES_URL` is set.

mod support;

use std::path::Path;

use herald::content::ComposeOptions;
use herald::delivery::engine::{Engine, EngineOptions, RunUntil};
use herald::domain::EmailAddress;
use herald::domain::SubscriptionState::{Confirmed, Pending, Unsubscribed};
use herald::store::subscribers::ConsentContext;
use herald::subscribers::import::ImportOptions;
use herald::subscribers::{SubscribeRequest, SubscriberError};
use support::app::{Backend, TestApp};
use tokio_util::sync::CancellationToken;

crate::on_each_backend!(
    the_public_form_makes_one_subscriber_of_two_spellings,
    removed_address_stays_out_in_any_case,
    erase_finds_the_address_in_any_case,
    suppression_in_another_case_stops_the_engine,
    one_reader_gets_one_copy,
    a_failed_confirmation_leaves_the_link_usable,
    probes_do_not_add_request_events,
);

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/emails/samples/week-2024-18.md"
);

async fn subscribers_with_key(t: &TestApp, canonical: &str) -> i64 {
    t.count(&format!(
        "SELECT COUNT(*) FROM subscribers WHERE lower(email) = '{canonical}'"
    ))
    .await
}

async fn stored_spelling(t: &TestApp, canonical: &str) -> String {
    let sql = format!("SELECT email FROM subscribers WHERE lower(email) = '{canonical}'");
    herald::with_pool!(&t.db, |p| sqlx::query_scalar::<_, String>(
        sqlx::AssertSqlSafe(sql)
    )
    .fetch_one(p)
    .await
    .expect("stored address"))
}

async fn the_public_form_makes_one_subscriber_of_two_spellings(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let page = t.post_subscribe_form("Alice@Example.com", None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    // The form answers before the request is processed: let the first one
    // land before the second spelling arrives.
    let mail = t.confirmation_mail("alice@example.com").await;
    let page = t.post_subscribe_form("alice@example.com", None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        t.settled_mail_count("alice@example.com").await,
        1,
        "the second spelling is the same reader: no second mail within the resend interval"
    );

    assert_eq!(subscribers_with_key(&t, "alice@example.com").await, 1);
    assert_eq!(
        stored_spelling(&t, "alice@example.com").await,
        "Alice@example.com",
        "the first spelling is kept for display and sending"
    );
    // Any spelling finds the one subscriber.
    assert_eq!(
        t.subscriber_id("ALICE@example.com").await,
        t.subscriber_id("alice@example.com").await
    );
    assert_eq!(
        t.subscription_state("aLiCe@example.com").await,
        Some(Pending)
    );

    // Confirming the mail (sent to the spelling typed first) confirms the reader.
    assert_eq!(mail.rcpt_to, vec!["Alice@example.com".to_owned()]);
    let link = t.confirmation_link(&mail);
    let page = t.post_form(&link, &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        t.subscription_state("alice@example.com").await,
        Some(Confirmed)
    );
    assert!(t.is_sendable("ALICE@EXAMPLE.COM").await);
}

async fn removed_address_stays_out_in_any_case(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    t.add_confirmed("ok1@example.com").await;
    t.app
        .remove_subscriber(&TestApp::email("ok1@example.com"), &t.app.newsletter)
        .await
        .unwrap();

    // Import in another case: refused, not a second subscriber.
    let csv = t.dir.path().join("list.csv");
    std::fs::write(
        &csv,
        "email,name\nOK1@example.com,Shouty\nnew@example.com,New\n",
    )
    .unwrap();
    let mut rejects = Vec::new();
    let report = t
        .app
        .import_subscribers(
            &csv,
            ImportOptions {
                confirmed: true,
                newsletter: &t.app.newsletter,
                progress: &|_, _| {},
            },
            &mut rejects,
        )
        .await
        .unwrap();
    assert_eq!((report.imported, report.suppressed), (1, 1), "{report}");
    assert_eq!(subscribers_with_key(&t, "ok1@example.com").await, 1);
    assert_eq!(
        t.subscription_state("ok1@example.com").await,
        Some(Unsubscribed)
    );

    // `add --confirmed` in a third spelling is refused too.
    let err = t
        .app
        .add_subscriber(
            &TestApp::email("Ok1@Example.com"),
            None,
            &t.app.newsletter,
            true,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, SubscriberError::NeedsConfirmation { .. }),
        "{err}"
    );
    assert_eq!(subscribers_with_key(&t, "ok1@example.com").await, 1);
    assert!(!t.is_sendable("OK1@example.com").await);

    // Two spellings in one file are one row.
    std::fs::write(&csv, "email\nTwin@example.com\ntwin@example.com\n").unwrap();
    let report = t
        .app
        .import_subscribers(
            &csv,
            ImportOptions {
                confirmed: true,
                newsletter: &t.app.newsletter,
                progress: &|_, _| {},
            },
            &mut rejects,
        )
        .await
        .unwrap();
    assert_eq!((report.imported, report.duplicate), (1, 1), "{report}");
    assert_eq!(subscribers_with_key(&t, "twin@example.com").await, 1);
}

async fn erase_finds_the_address_in_any_case(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    t.add_confirmed("ok3@example.com").await;
    t.app
        .erase_subscriber(&TestApp::email("OK3@example.com"))
        .await
        .expect("erasure in another case finds the subscriber");
    assert_eq!(subscribers_with_key(&t, "ok3@example.com").await, 0);
    assert!(t.is_suppressed("ok3@example.com").await);
    assert!(t.is_suppressed("Ok3@Example.COM").await);
}

/// Composes the sample digest, enqueues it and runs the engine to the end.
async fn send_sample_issue(t: &TestApp) {
    let nl = t.app.newsletter.clone();
    t.app
        .import_items_file(&nl, Path::new(SAMPLE), true)
        .await
        .unwrap();
    let issue = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap();
    t.app.send_issue(&issue).await.unwrap();
    Engine::new(t.app.clone(), EngineOptions::from_app(&t.app).unwrap())
        .run(RunUntil::IssueComplete(issue.id), CancellationToken::new())
        .await
        .unwrap();
}

async fn suppression_in_another_case_stops_the_engine(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    t.add_confirmed("Bob@example.com").await;
    t.add_confirmed("carol@example.com").await;
    // The suppression list got the address in another spelling (a bounce
    // report, say) after Bob was enqueued-to-be.
    t.db.suppress(
        &TestApp::email("bob@EXAMPLE.com"),
        "bounced",
        herald::domain::now_ms(),
    )
    .await
    .unwrap();
    assert!(t.is_suppressed("BOB@example.com").await);
    assert!(!t.is_sendable("Bob@example.com").await);

    send_sample_issue(&t).await;
    assert_eq!(t.smtp.messages_to("carol@example.com").len(), 1);
    assert_eq!(
        t.smtp.messages_to("bob@example.com").len(),
        0,
        "a suppressed reader must not be mailed, whatever the spelling"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM deliveries WHERE state = 'skipped'")
            .await,
        1
    );
}

async fn one_reader_gets_one_copy(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    t.add_confirmed("Dana@example.com").await;
    t.add_confirmed("dana@example.com").await;
    t.add_confirmed("DANA@EXAMPLE.COM").await;
    assert_eq!(subscribers_with_key(&t, "dana@example.com").await, 1);

    send_sample_issue(&t).await;
    let mails = t.smtp.messages_to("dana@example.com");
    assert_eq!(mails.len(), 1, "one reader, one copy");
    assert_eq!(mails[0].rcpt_to, vec!["Dana@example.com".to_owned()]);
}

async fn a_failed_confirmation_leaves_the_link_usable(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let email = "eve@example.com";
    let page = t.post_subscribe_form(email, None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let link = t.confirmation_link(&t.confirmation_mail(email).await);
    let token = link.rsplit('/').next().expect("token in the link");

    // A real failure between spending the token and confirming: the
    // database refuses the consent event, the last write of the confirmation.
    let postgres = t.db.is_postgres();
    if postgres {
        t.exec(
            "CREATE FUNCTION herald_test_fail() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
        )
        .await;
        t.exec(
            "CREATE TRIGGER herald_test_fail BEFORE INSERT ON consent_events
             FOR EACH ROW WHEN (NEW.kind = 'confirm') EXECUTE FUNCTION herald_test_fail()",
        )
        .await;
    } else {
        t.exec(
            "CREATE TRIGGER herald_test_fail BEFORE INSERT ON consent_events
             WHEN NEW.kind = 'confirm' BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        )
        .await;
    }
    let failed = t
        .app
        .confirm_subscription(token, ConsentContext::default())
        .await;
    assert!(failed.is_err(), "the injected failure surfaces: {failed:?}");
    assert_eq!(
        t.count("SELECT COUNT(*) FROM confirmation_tokens WHERE used_at IS NOT NULL")
            .await,
        0,
        "the token is not spent when the confirmation did not happen"
    );
    assert_eq!(t.subscription_state(email).await, Some(Pending));

    t.exec(if postgres {
        "DROP TRIGGER herald_test_fail ON consent_events"
    } else {
        "DROP TRIGGER herald_test_fail"
    })
    .await;
    // The same link works once the failure is gone.
    let page = t.post_form(&link, &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(t.subscription_state(email).await, Some(Confirmed));
    assert!(t.consent_kinds(email).await.contains(&"confirm".to_owned()));
}

async fn probes_do_not_add_request_events(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let email = TestApp::email("frank@example.com");
    fn request<'a>(t: &'a TestApp, email: &'a EmailAddress) -> SubscribeRequest<'a> {
        SubscribeRequest {
            email,
            name: None,
            newsletter: &t.app.newsletter,
            context: ConsentContext {
                source: "test".into(),
                ..Default::default()
            },
        }
    }
    for spelling in [
        "frank@example.com",
        "Frank@example.com",
        "frank@example.com",
        "FRANK@example.com",
    ] {
        let address = TestApp::email(spelling);
        t.app
            .request_subscription(request(&t, &address))
            .await
            .unwrap();
    }
    let requests = |kinds: Vec<String>| kinds.iter().filter(|k| *k == "request").count();
    assert_eq!(
        requests(t.consent_kinds(email.as_str()).await),
        1,
        "repeated requests within the resend interval record one request"
    );

    // Once confirmed, further requests change nothing and record nothing.
    t.add_confirmed("frank@example.com").await;
    let other = TestApp::email("Frank@Example.com");
    for _ in 0..3 {
        t.app
            .request_subscription(request(&t, &other))
            .await
            .unwrap();
    }
    assert_eq!(requests(t.consent_kinds(email.as_str()).await), 1);
}

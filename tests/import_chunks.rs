//! CSV import across several of the importer's chunks (5,000 rows each):
//! duplicates in a later chunk, rows in the file's order rather than the
//! address order, existing readers in every state, re-import as a set-wise
//! update. Each scenario runs on SQLite, and on PostgreSQL when
//! `HERALD_TEST_POSTGRES_URL` is set.

mod support;

use herald::domain::SubscriptionState::{Confirmed, Pending, Unsubscribed};
use herald::subscribers::import::{ImportOptions, ImportReport};
use support::app::{Backend, TestApp};

crate::on_each_backend!(a_file_of_several_chunks_keeps_every_rule);

const ROWS: usize = 25_000;

async fn a_file_of_several_chunks_keeps_every_rule(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    // Before the import: one unsubscribed, one pending (double opt-in under
    // way), one suppressed address that never subscribed.
    t.add_confirmed("r17000@example.com").await;
    t.app
        .remove_subscriber(&TestApp::email("r17000@example.com"), &t.app.newsletter)
        .await
        .unwrap();
    t.post_subscribe_form("r23000@example.com", None).await;
    t.confirmation_mail("r23000@example.com").await;
    t.db.suppress(
        &TestApp::email("r12000@example.com"),
        "complained",
        herald::domain::now_ms(),
    )
    .await
    .unwrap();

    // Descending addresses, so the file's order is not the index's; every
    // row has a city, every 7th a plan too.
    let mut csv = String::from("email,name,city,plan\n");
    for i in (0..ROWS).rev() {
        let plan = if i % 7 == 0 { "pro" } else { "" };
        csv.push_str(&format!(
            "R{i}@Example.com,Reader {i},City {},{plan}\n",
            i % 100
        ));
    }
    // Repeats of addresses from the first chunk, in later chunks, in another case.
    csv.push_str("r24999@example.com,Repeated,Nowhere,\n");
    csv.push_str("r0@EXAMPLE.com,Repeated,Nowhere,\n");
    csv.push_str("not-an-address,Broken,Nowhere,\n");
    let path = t.dir.path().join("big.csv");
    std::fs::write(&path, csv).unwrap();

    let run = || async {
        let options = ImportOptions {
            confirmed: true,
            newsletter: &t.app.newsletter,
            progress: &|_, _| {},
        };
        let mut rejects = Vec::new();
        let report = t
            .app
            .import_subscribers(&path, options, &mut rejects)
            .await
            .expect("import");
        (report, String::from_utf8(rejects).unwrap())
    };

    let (report, rejects) = run().await;
    assert_eq!(
        report,
        ImportReport {
            imported: ROWS as u64 - 3,
            // the pending reader is confirmed by the editor's import
            updated: 1,
            invalid: 1,
            // the unsubscribed reader and the suppressed address
            suppressed: 2,
            duplicate: 2,
            confirmations_sent: 0,
        },
        "rejects: {rejects}"
    );
    assert!(
        rejects.starts_with(&format!("{},not-an-address,", ROWS + 4)),
        "{rejects}"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM subscribers").await,
        ROWS as i64 - 1
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM subscriptions WHERE state = 'confirmed'")
            .await,
        ROWS as i64 - 2
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM consent_events WHERE kind = 'import'")
            .await,
        ROWS as i64 - 2
    );
    assert_eq!(
        t.subscription_state("r17000@example.com").await,
        Some(Unsubscribed)
    );
    assert_eq!(
        t.subscription_state("r23000@example.com").await,
        Some(Confirmed)
    );
    assert_eq!(t.subscriber_id("r12000@example.com").await, None);
    // The first row of an address wins; the spelling is kept.
    let first =
        t.db.subscriber_by_email(&TestApp::email("r24999@example.com"))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(first.email.as_str(), "R24999@example.com");
    assert_eq!(first.name.as_deref(), Some("Reader 24999"));
    assert_eq!(first.attributes, r#"{"city":"City 99"}"#);
    let with_plan =
        t.db.subscriber_by_email(&TestApp::email("r14000@example.com"))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(with_plan.attributes, r#"{"city":"City 0","plan":"pro"}"#);

    // Again: nobody new, every known reader's row refreshed in place, no
    // second consent event, nobody resubscribed.
    let (report, _) = run().await;
    assert_eq!(
        report,
        ImportReport {
            imported: 0,
            updated: ROWS as u64 - 2,
            invalid: 1,
            suppressed: 2,
            duplicate: 2,
            confirmations_sent: 0,
        }
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM subscribers").await,
        ROWS as i64 - 1
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM consent_events WHERE kind = 'import'")
            .await,
        ROWS as i64 - 2
    );
    assert_eq!(
        t.subscription_state("r17000@example.com").await,
        Some(Unsubscribed)
    );
    assert_ne!(
        t.subscription_state("r100@example.com").await,
        Some(Pending)
    );
    assert_eq!(
        t.smtp.messages().len(),
        1,
        "only the form's confirmation mail"
    );
}

//! CSV import and erasure, through the library and through the real
//! `herald` binary. Each scenario runs on SQLite, and on PostgreSQL when
//! `HERALD_TEST_POSTGRES_URL` is set.

mod support;

use std::path::Path;

use herald::domain::SubscriptionState::{Confirmed, Pending, Unsubscribed};
use herald::subscribers::SubscriberError;
use herald::subscribers::import::{ImportError, ImportOptions, ImportReport};
use support::app::{Backend, TestApp};
use support::cli::{herald, text};

crate::on_each_backend!(
    mixed_file_across_chunks_gives_exact_counts_and_rejects,
    files_that_are_not_subscriber_csv_are_refused_cleanly,
    erased_address_stays_suppressed,
    the_binary_imports_erases_and_refuses,
    duplicate_columns_and_bad_names_are_reported,
);

async fn import(
    t: &TestApp,
    path: &Path,
    confirmed: bool,
) -> (Result<ImportReport, ImportError>, String) {
    let mut rejects = Vec::new();
    let options = ImportOptions {
        confirmed,
        newsletter: &t.app.newsletter,
        progress: &|_, _| {},
    };
    let result = t.app.import_subscribers(path, options, &mut rejects).await;
    (result, String::from_utf8(rejects).expect("utf-8 rejects"))
}

async fn mixed_file_across_chunks_gives_exact_counts_and_rejects(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    t.db.suppress(
        &TestApp::email("supp@example.com"),
        "complained",
        herald::domain::now_ms(),
    )
    .await
    .unwrap();
    t.add_confirmed("gone@example.com").await;
    t.app
        .remove_subscriber(&TestApp::email("gone@example.com"), &t.app.newsletter)
        .await
        .unwrap();
    t.add_confirmed("already@example.com").await;
    t.post_subscribe_form("waiting@example.com", None).await;
    t.confirmation_mail("waiting@example.com").await;
    assert_eq!(
        t.subscription_state("waiting@example.com").await,
        Some(Pending)
    );

    // Data rows; a row's file line is its index + 2 (line 1 is the header).
    let mut rows: Vec<String> = Vec::new();
    let mut expect_rejected: Vec<(usize, &str, &str)> = Vec::new();
    for i in 0..1200 {
        rows.push(format!("user{i}@example.com,User {i},Astana"));
        match i {
            3 => rows.push("user3@example.com,Duplicate in the same chunk,Almaty".into()),
            10 => {
                expect_rejected.push((rows.len() + 2, "not-an-email", "@"));
                rows.push("not-an-email,Bad,X".into());
            }
            20 => {
                expect_rejected.push((rows.len() + 2, "two@@example.com", ""));
                rows.push("two@@example.com,Bad,X".into());
            }
            30 => {
                expect_rejected.push((
                    rows.len() + 2,
                    "short@example.com",
                    "expected 3 fields, found 2",
                ));
                rows.push("short@example.com,Only two".into());
            }
            40 => rows.push("supp@example.com,Suppressed,X".into()),
            50 => rows.push("gone@example.com,Unsubscribed earlier,X".into()),
            60 => rows.push("waiting@example.com,Pending before,X".into()),
            70 => rows.push("already@example.com,Confirmed before,X".into()),
            _ => {}
        }
    }
    // More than 1000 rows later, in another chunk: a duplicate of an early row.
    rows.push("user1@example.com,Duplicate in a later chunk,Almaty".into());
    let path = t.dir.path().join("subscribers.csv");
    std::fs::write(&path, format!("email,name,city\n{}\n", rows.join("\n"))).unwrap();

    let (report, rejects) = import(&t, &path, true).await;
    let report = report.expect("import");
    assert_eq!(
        report,
        ImportReport {
            imported: 1200,
            updated: 2,
            invalid: 3,
            suppressed: 2,
            duplicate: 2,
            confirmations_sent: 0
        },
        "rejects:\n{rejects}"
    );
    let reject_lines: Vec<&str> = rejects.lines().collect();
    assert_eq!(reject_lines.len(), 3, "{rejects}");
    for ((line, email, reason), got) in expect_rejected.iter().zip(&reject_lines) {
        assert!(
            got.starts_with(&format!("{line},{email},")),
            "expected line {line} for {email}, got {got:?}"
        );
        assert!(
            got.len() > format!("{line},{email},").len() && got.contains(reason),
            "no reason in {got:?}"
        );
    }

    assert_eq!(t.count("SELECT COUNT(*) FROM subscribers").await, 1203);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM subscriptions WHERE state = 'confirmed'")
            .await,
        1202
    );
    assert_eq!(
        t.subscription_state("gone@example.com").await,
        Some(Unsubscribed),
        "import never resubscribes"
    );
    assert_eq!(t.subscriber_id("supp@example.com").await, None);
    assert_eq!(
        t.subscription_state("waiting@example.com").await,
        Some(Confirmed)
    );
    assert_eq!(
        t.subscription_state("user1199@example.com").await,
        Some(Confirmed)
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM consent_events WHERE kind = 'import'")
            .await,
        1201
    );
    let user5 =
        t.db.subscriber_by_email(&TestApp::email("user5@example.com"))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(user5.name.as_deref(), Some("User 5"));
    assert!(
        user5.attributes.contains("\"city\":\"Astana\""),
        "{}",
        user5.attributes
    );
    assert_eq!(
        t.smtp.messages().len(),
        1,
        "only the form's confirmation; an import with --confirmed mails nobody"
    );

    // Importing the same file again adds nobody.
    let (report, _) = import(&t, &path, true).await;
    let report = report.expect("second import");
    assert_eq!(
        (report.imported, report.invalid, report.suppressed),
        (0, 3, 2)
    );
    assert_eq!(t.count("SELECT COUNT(*) FROM subscribers").await, 1203);
}

async fn files_that_are_not_subscriber_csv_are_refused_cleanly(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    t.add_confirmed("existing@example.com").await;
    let before = t.count("SELECT COUNT(*) FROM subscribers").await;

    let no_email = t.dir.path().join("people.csv");
    std::fs::write(&no_email, "name,city\nBob,Astana\nAlice,Almaty\n").unwrap();
    let (result, rejects) = import(&t, &no_email, true).await;
    let err = result.expect_err("no email column");
    assert!(matches!(err, ImportError::NoEmailColumn { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("no `email` column")
            && message.contains("name,city")
            && message.contains("people.csv"),
        "{message}"
    );
    assert!(rejects.is_empty());

    let binary = t.dir.path().join("photo.csv");
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x01\0\0\0\x01\0\x08\x06\0\0\0".to_vec();
    png.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&binary, png).unwrap();
    let (result, _) = import(&t, &binary, true).await;
    let err = result.expect_err("binary file");
    assert!(matches!(err, ImportError::NotCsv { .. }), "{err:?}");
    assert!(
        err.to_string().contains("photo.csv is not a CSV file"),
        "{err}"
    );

    assert_eq!(
        t.count("SELECT COUNT(*) FROM subscribers").await,
        before,
        "nothing changed"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM consent_events WHERE kind = 'import'")
            .await,
        0
    );
}

async fn erased_address_stays_suppressed(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let email = "forget-me@example.com";
    t.subscribe_and_confirm(email).await;
    t.subscribe_and_confirm("stays@example.com").await;
    let id = t.subscriber_id(email).await.unwrap();
    let events_before = t.count("SELECT COUNT(*) FROM consent_events").await;

    t.app
        .erase_subscriber(&TestApp::email(email))
        .await
        .expect("erase");
    assert_eq!(
        t.subscriber_id(email).await,
        None,
        "the subscriber row is gone"
    );
    assert_eq!(
        t.count(&format!(
            "SELECT COUNT(*) FROM subscriptions WHERE subscriber_id = {id}"
        ))
        .await,
        0
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM consent_events").await,
        events_before,
        "the audit trail stays"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM consent_events WHERE subscriber_id IS NULL")
            .await,
        2
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM consent_events WHERE subscriber_id IS NULL AND (ip IS NOT NULL OR user_agent IS NOT NULL)").await,
        0,
        "IP and user agent of the erased subscriber are gone"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM consent_events WHERE ip IS NOT NULL")
            .await,
        2,
        "other subscribers keep theirs"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM suppressions WHERE email IS NOT NULL")
            .await,
        0,
        "only the hash is kept"
    );
    assert!(t.is_suppressed(email).await);
    assert!(!t.is_sendable(email).await);

    // A later import skips it as suppressed.
    let path = t.dir.path().join("old-list.csv");
    std::fs::write(&path, format!("email\n{email}\nnew@example.com\n")).unwrap();
    let (report, _) = import(&t, &path, true).await;
    let report = report.expect("import");
    assert_eq!((report.imported, report.suppressed), (1, 1), "{report:?}");
    assert_eq!(t.subscriber_id(email).await, None);

    // The editor cannot vouch for it either, and the refusal stores nothing.
    let err = t
        .app
        .add_subscriber(
            &TestApp::email(email),
            Some("Forget Me"),
            &t.app.newsletter,
            true,
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(err, SubscriberError::NeedsConfirmation { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("suppressed"), "{err}");
    assert_eq!(
        t.subscriber_id(email).await,
        None,
        "a refused add must not re-create the erased subscriber"
    );
}

async fn the_binary_imports_erases_and_refuses(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let csv = t.dir.path().join("list.csv");
    std::fs::write(&csv, "Email,Name\na@example.com,Ann\nb@example.com,Bob\nnope,Nobody\nb@example.com,Bob again\nc@example.com,\n").unwrap();
    let rejects = t.dir.path().join("rejects.csv");

    let out = herald(
        &t,
        &[
            "subscribers",
            "import",
            "list.csv",
            "--confirmed",
            "--rejects",
            "rejects.csv",
        ],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("imported 3 / updated 0 / skipped(invalid: 1, suppressed: 0, duplicate: 1)"),
        "stdout: {}",
        text(&out.stdout)
    );
    let rejected = std::fs::read_to_string(&rejects).unwrap();
    assert!(rejected.starts_with("4,nope,"), "{rejected}");
    assert_eq!(rejected.lines().count(), 1);
    assert_eq!(t.subscription_state("a@example.com").await, Some(Confirmed));

    let out = herald(&t, &["subscribers", "erase", "a@example.com"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(t.subscriber_id("a@example.com").await, None);

    let out = herald(&t, &["subscribers", "add", "a@example.com", "--confirmed"]);
    assert!(
        !out.status.success(),
        "add --confirmed of an erased address must fail"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("suppressed") && stderr.contains("without --confirmed"),
        "{stderr}"
    );
    assert_eq!(t.subscriber_id("a@example.com").await, None);

    let out = herald(
        &t,
        &[
            "subscribers",
            "import",
            "list.csv",
            "--confirmed",
            "--rejects",
            "rejects.csv",
        ],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("imported 0 / updated 2 / skipped(invalid: 1, suppressed: 1, duplicate: 1)"),
        "stdout: {}",
        text(&out.stdout)
    );
    assert_eq!(t.subscriber_id("a@example.com").await, None);

    std::fs::write(t.dir.path().join("no-email.csv"), "name\nBob\n").unwrap();
    let out = herald(&t, &["subscribers", "import", "no-email.csv"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no `email` column"), "{stderr}");
    assert_eq!(t.count("SELECT COUNT(*) FROM subscribers").await, 2);
}

async fn duplicate_columns_and_bad_names_are_reported(backend: Backend) {
    let t = TestApp::spawn(backend).await;

    // `email,name,email`: an error naming the column, nothing imported.
    let dup = t.dir.path().join("dup.csv");
    std::fs::write(&dup, "email,name,Email\na@example.com,Ann,b@example.com\n").unwrap();
    let (result, _) = import(&t, &dup, true).await;
    let err = result.expect_err("duplicate column");
    assert!(
        matches!(&err, ImportError::DuplicateColumn { column, .. } if column == "email"),
        "{err:?}"
    );
    assert!(err.to_string().contains("`email`"), "{err}");
    assert_eq!(t.count("SELECT COUNT(*) FROM subscribers").await, 0);

    // Names with a line break, a NUL or over 200 characters are not dropped
    // silently: the row is rejected with the reason.
    let names = t.dir.path().join("names.csv");
    let long = "x".repeat(201);
    std::fs::write(
        &names,
        format!(
            "email,name\nok@example.com,Fine\nnul@example.com,Bad\u{0}Name\n\"cr@example.com\",\"Two\r\nLines\"\nlong@example.com,{long}\n"
        ),
    )
    .unwrap();
    let (result, rejects) = import(&t, &names, true).await;
    let report = result.unwrap();
    assert_eq!((report.imported, report.invalid), (1, 3), "{report}");
    for address in ["nul@example.com", "cr@example.com", "long@example.com"] {
        let line = rejects
            .lines()
            .find(|l| l.contains(address))
            .unwrap_or_else(|| panic!("{address} in rejects: {rejects}"));
        assert!(line.contains("the name must be a single line"), "{line}");
    }

    // `subscribers add` with such a name fails and says why.
    let out = herald(
        &t,
        &[
            "subscribers",
            "add",
            "dan@example.com",
            "--name",
            &long,
            "--confirmed",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("at most 200 characters"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(t.subscriber_id("dan@example.com").await, None);
}

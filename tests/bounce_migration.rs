//! Migration 0009 on a database that already holds deliveries and consent
//! events: the widened CHECKs accept `bounced` / `complaint` on every pooled
//! connection (on SQLite the CHECK text is edited in place, so a connection
//! that read the old schema must see the new one), still refuse anything
//! else, and the rows are intact.

mod support;

use std::borrow::Cow;

use herald::store::Db;
use support::app::{Backend, create_postgres_database, with_database};

crate::on_each_backend!(widened_checks_hold_on_every_connection_after_0009);

async fn exec(db: &Db, sql: &str) -> Result<u64, sqlx::Error> {
    let sql = sql.to_owned();
    herald::with_pool!(db, |p| sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(p)
        .await
        .map(|r| r.rows_affected()))
}

async fn widened_checks_hold_on_every_connection_after_0009(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = match &backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("old.db").display()),
        Backend::Postgres(admin) => {
            with_database(admin, &create_postgres_database(admin, "herald_mig9").await)
        }
    };
    let db = Db::connect(&url, 4, std::time::Duration::from_secs(10))
        .await
        .expect("connect");
    // Everything before 0009.
    herald::with_pool!(&db, |p| {
        let mut migrator = if db.is_postgres() {
            sqlx::migrate!("migrations/postgres")
        } else {
            sqlx::migrate!("migrations/sqlite")
        };
        let before: Vec<_> = migrator
            .migrations
            .iter()
            .filter(|m| m.version < 9)
            .cloned()
            .collect();
        migrator.migrations = Cow::Owned(before);
        migrator.run(p).await.expect("migrations before 0009");
    });
    for sql in [
        "INSERT INTO newsletters (id, slug, name, from_mailbox, postal_address, list_id, subject_template, created_at)
         VALUES (1, 'weekly', 'Weekly', 'a@example.org', 'Street 1', 'weekly.example.org', '{newsletter}', 0)",
        "INSERT INTO subscribers (id, email, attributes, created_at) VALUES (1, 'ann@example.com', '{}', 1), (2, 'bob@example.com', '{}', 1)",
        "INSERT INTO issues (id, newsletter_id, number, slug, title, subject, preheader, intro, html, text_body, web_html, status, created_at)
         VALUES (1, 1, 1, 'one', 't', 's', 'p', 'i', 'h', 't', 'w', 'sent', 10)",
        "INSERT INTO deliveries (id, issue_id, subscriber_id, state, next_attempt_at, updated_at) VALUES (1, 1, 1, 'sent', 0, 0), (2, 1, 2, 'sent', 0, 0)",
        "INSERT INTO consent_events (subscriber_id, newsletter_id, kind, at, source) VALUES (1, 1, 'confirm', 1, 'web')",
    ] {
        exec(&db, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // Several connections of the pool read the old schema.
    let warm: Vec<_> = (0..4)
        .map(|_| exec(&db, "UPDATE deliveries SET updated_at = updated_at + 1"))
        .collect();
    for w in futures::future::join_all(warm).await {
        w.expect("warm a connection");
    }
    db.migrate().await.expect("0009");
    // Every pooled connection accepts the new spellings…
    for round in 0..8 {
        let (id, subscriber) = (1 + round % 2, 1 + round % 2);
        exec(
            &db,
            &format!("UPDATE deliveries SET state = 'bounced' WHERE id = {id}"),
        )
        .await
        .expect("'bounced' is a delivery state now");
        exec(
            &db,
            &format!(
                "INSERT INTO consent_events (subscriber_id, newsletter_id, kind, at, source) VALUES ({subscriber}, 1, 'complaint', 2, 'report:smtp')"
            ),
        )
        .await
        .expect("'complaint' is a consent kind now");
    }
    // …and still refuses what the code does not know.
    for sql in [
        "UPDATE deliveries SET state = 'bogus' WHERE id = 1",
        "UPDATE consent_events SET kind = 'bogus'",
    ] {
        let err = exec(&db, sql).await.expect_err(sql);
        assert!(err.to_string().contains("_check"), "{sql}: {err}");
    }
    let n: i64 = herald::with_pool!(&db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries WHERE state = 'bounced'"
    )
    .fetch_one(p)
    .await
    .expect("count"));
    assert_eq!(n, 2, "the rows are all there");
    if !db.is_postgres() {
        let check: String =
            herald::with_pool!(&db, |p| sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_one(p)
                .await
                .expect("integrity_check"));
        assert_eq!(check, "ok");
    }
    db.close().await;
}

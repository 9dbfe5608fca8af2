//! The schema's own guarantees, on both backends: every state column has a
//! CHECK constraint listing exactly the spellings of `domain/state.rs`, and
//! rejects anything else; migration 0002 merges subscribers whose
//! addresses differ only in case, keeping the most restrictive state and
//! recording what it merged.

mod support;

use std::borrow::Cow;

use herald::content::ComposeOptions;
use herald::domain::{
    ConsentKind, DeliveryState, IssueStatus, ItemState, OneOffState, ReportKind, RunState,
    SubscriptionState,
};
use herald::store::Db;
use support::app::{Backend, TestApp, create_postgres_database, with_database};

crate::on_each_backend!(
    every_state_column_has_a_check_constraint_with_the_enum_spellings,
    migration_merges_case_duplicates,
);

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/emails/samples/week-2024-18.md"
);

/// (table, column, the spellings the code knows)
fn state_columns() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    fn all<T: Copy>(values: &[T], f: fn(T) -> &'static str) -> Vec<&'static str> {
        values.iter().map(|v| f(*v)).collect()
    }
    vec![
        (
            "subscriptions",
            "state",
            all(SubscriptionState::ALL, SubscriptionState::as_str),
        ),
        (
            "consent_events",
            "kind",
            all(ConsentKind::ALL, ConsentKind::as_str),
        ),
        ("items", "state", all(ItemState::ALL, ItemState::as_str)),
        (
            "issues",
            "status",
            all(IssueStatus::ALL, IssueStatus::as_str),
        ),
        (
            "deliveries",
            "state",
            all(DeliveryState::ALL, DeliveryState::as_str),
        ),
        (
            "schedule_runs",
            "state",
            all(RunState::ALL, RunState::as_str),
        ),
        (
            "one_off_sends",
            "state",
            all(OneOffState::ALL, OneOffState::as_str),
        ),
        (
            "bounce_reports",
            "kind",
            all(ReportKind::ALL, ReportKind::as_str),
        ),
    ]
}

/// The single-quoted literals of a constraint's text, in order.
fn quoted(text: &str) -> Vec<String> {
    text.split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

async fn text_rows(db: &Db, sql: String) -> Vec<String> {
    herald::with_pool!(db, |p| sqlx::query_scalar::<_, String>(
        sqlx::AssertSqlSafe(sql)
    )
    .fetch_all(p)
    .await
    .expect("schema query"))
}

async fn every_state_column_has_a_check_constraint_with_the_enum_spellings(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let db = &t.db;

    // Every column named like a state is in the list: a new one without a
    // CHECK fails here.
    let named_like_states = if db.is_postgres() {
        text_rows(
            db,
            "SELECT table_name || '.' || column_name FROM information_schema.columns
             WHERE table_schema = 'public' AND column_name IN ('state', 'status', 'kind')
             ORDER BY 1"
                .into(),
        )
        .await
    } else {
        text_rows(
            db,
            "SELECT m.name || '.' || c.name FROM sqlite_master m, pragma_table_info(m.name) c
             WHERE m.type = 'table' AND c.name IN ('state', 'status', 'kind') ORDER BY 1"
                .into(),
        )
        .await
    };
    let mut listed: Vec<String> = state_columns()
        .iter()
        .map(|(table, column, _)| format!("{table}.{column}"))
        .collect();
    listed.sort();
    assert_eq!(named_like_states, listed);

    // The CHECK lists exactly the enum's spellings.
    for (table, column, spellings) in state_columns() {
        let name = format!("{table}_{column}_check");
        let definition = if db.is_postgres() {
            text_rows(
                db,
                format!(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = '{name}'"
                ),
            )
            .await
        } else {
            let sql = text_rows(
                db,
                format!("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '{table}'"),
            )
            .await;
            sql.iter()
                .filter_map(|s| {
                    let start = s.find(&format!("CONSTRAINT {name}"))?;
                    let rest = &s[start..];
                    Some(rest[..rest.find(')')? + 1].to_owned())
                })
                .collect()
        };
        assert_eq!(definition.len(), 1, "{name}: {definition:?}");
        assert_eq!(quoted(&definition[0]), spellings, "{name}");
    }

    // And it rejects anything else: one row in every table, then 'bogus'.
    let nl = t.app.newsletter.clone();
    t.add_confirmed("reader@example.org").await;
    t.app
        .import_items_file(&nl, std::path::Path::new(SAMPLE), true)
        .await
        .unwrap();
    let issue = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap();
    t.app.send_issue(&issue).await.unwrap();
    t.exec(&format!(
        "INSERT INTO schedule_runs (newsletter_id, slot_at, jitter_ms, fire_at, state, created_at, updated_at) VALUES ({}, 0, 0, 0, 'pending', 0, 0)",
        nl.id
    ))
    .await;
    t.exec(&format!(
        "INSERT INTO one_off_sends (issue_id, send_at, timezone, state, created_at, updated_at) VALUES ({}, 0, 'UTC', 'waiting', 0, 0)",
        issue.id
    ))
    .await;
    t.exec(
        "INSERT INTO bounce_reports (received_at, source, kind, effect) VALUES (0, 'import', 'unrecognised', 'ignored')",
    )
    .await;
    for (table, column, _) in state_columns() {
        let sql = format!("UPDATE {table} SET {column} = 'bogus'");
        let err = herald::with_pool!(db, |p| sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(p)
            .await
            .expect_err(&sql));
        let name = format!("{table}_{column}_check");
        let is_check = err
            .as_database_error()
            .is_some_and(|e| e.is_check_violation() || e.message().contains(&name));
        assert!(is_check, "{sql}: {err}");
        assert!(err.to_string().contains(&name), "{sql}: {err}");
    }
}

/// A database at migration 0001 (before one identity per address).
async fn database_at_0001(backend: &Backend, dir: &std::path::Path) -> (Db, String) {
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("old.db").display()),
        Backend::Postgres(admin) => {
            with_database(admin, &create_postgres_database(admin, "herald_mig").await)
        }
    };
    let db = Db::connect(&url, 2, std::time::Duration::from_secs(10))
        .await
        .expect("connect");
    herald::with_pool!(&db, |p| {
        let mut migrator = if db.is_postgres() {
            sqlx::migrate!("migrations/postgres")
        } else {
            sqlx::migrate!("migrations/sqlite")
        };
        migrator.migrations = Cow::Owned(migrator.migrations[..1].to_vec());
        migrator.run(p).await.expect("migration 0001");
    });
    (db, url)
}

async fn exec(db: &Db, sql: &str) {
    let sql = sql.to_owned();
    herald::with_pool!(db, |p| sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .execute(p)
        .await
        .map(|_| ())
        .unwrap_or_else(|e| panic!("{sql}: {e}")));
}

async fn count(db: &Db, sql: &str) -> i64 {
    let sql = sql.to_owned();
    herald::with_pool!(db, |p| sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(
        sql.clone()
    ))
    .fetch_one(p)
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}")))
}

async fn migration_merges_case_duplicates(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (db, url) = database_at_0001(&backend, dir.path()).await;
    for sql in [
        "INSERT INTO newsletters (id, slug, name, from_mailbox, postal_address, list_id, subject_template, created_at)
         VALUES (1, 'weekly', 'Weekly', 'a@example.org', 'Street 1', 'weekly.example.org', '{newsletter}', 0)",
        // Ann: confirmed, unsubscribed and pending under three spellings.
        "INSERT INTO subscribers (id, email, name, attributes, created_at) VALUES
           (1, 'ann@example.com', 'Ann', '{}', 1), (2, 'Ann@example.com', NULL, '{}', 2),
           (3, 'ANN@example.com', NULL, '{}', 3),
           (4, 'bob@example.com', 'Bob', '{}', 4), (5, 'Bob@example.com', NULL, '{}', 5),
           (6, 'cy@example.com', 'Cy', '{}', 6)",
        "INSERT INTO subscriptions (subscriber_id, newsletter_id, state, created_at, updated_at, confirmed_at, unsubscribed_at) VALUES
           (1, 1, 'confirmed', 1, 1, 1, NULL), (2, 1, 'unsubscribed', 2, 2, NULL, 20),
           (3, 1, 'pending', 3, 3, NULL, NULL),
           (5, 1, 'confirmed', 5, 5, 5, NULL), (6, 1, 'confirmed', 6, 6, 6, NULL)",
        "INSERT INTO consent_events (subscriber_id, newsletter_id, kind, at, source) VALUES
           (2, 1, 'unsubscribe', 20, 'web'), (3, 1, 'request', 3, 'web'), (5, 1, 'import', 5, 'cli')",
        "INSERT INTO confirmation_tokens (token_hash, subscriber_id, newsletter_id, created_at, expires_at)
         VALUES ('t3', 3, 1, 3, 99)",
        "INSERT INTO issues (id, newsletter_id, number, slug, title, subject, preheader, intro, html, text_body, web_html, status, created_at)
         VALUES (1, 1, 1, 'one', 't', 's', 'p', 'i', 'h', 't', 'w', 'sent', 10),
                (2, 1, 2, 'two', 't', 's', 'p', 'i', 'h', 't', 'w', 'sent', 11)",
        // Issue 1 went to Ann twice (the bug); issue 2 only to her second spelling.
        "INSERT INTO deliveries (id, issue_id, subscriber_id, state, next_attempt_at, updated_at) VALUES
           (1, 1, 1, 'sent', 0, 0), (2, 1, 2, 'sent', 0, 0), (3, 2, 2, 'sent', 0, 0), (4, 2, 3, 'queued', 0, 0)",
        "INSERT INTO delivery_attempts (delivery_id, at, duration_ms, outcome, worker_id) VALUES (2, 0, 1, 'sent', 'w')",
    ] {
        exec(&db, sql).await;
    }
    db.close().await;

    // The rest of the migrations, as `App::open` runs them.
    let db = Db::connect(&url, 2, std::time::Duration::from_secs(10))
        .await
        .expect("connect");
    db.migrate()
        .await
        .expect("migration 0002 on a database with duplicates");

    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM subscribers").await,
        3,
        "ann, bob, cy"
    );
    let state = |id: i64| {
        let db = db.clone();
        async move {
            herald::with_pool!(&db, |p| sqlx::query_scalar::<_, String>(
                "SELECT state FROM subscriptions WHERE subscriber_id = $1"
            )
            .bind(id)
            .fetch_one(p)
            .await
            .expect("kept subscription"))
        }
    };
    assert_eq!(
        state(1).await,
        "unsubscribed",
        "the most restrictive state wins"
    );
    assert_eq!(
        state(4).await,
        "confirmed",
        "a subscription only the duplicate had moves over"
    );
    assert_eq!(state(6).await, "confirmed", "others are untouched");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM subscriptions").await, 3);

    // What was merged is recorded.
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM merged_subscribers WHERE (kept_id = 1 AND merged_id IN (2, 3)) OR (kept_id = 4 AND merged_id = 5)"
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM consent_events WHERE kind = 'admin-change' AND method = 'merge-case-duplicates' AND subscriber_id IN (1, 4)"
        )
        .await,
        2
    );
    // History moves to the kept subscriber.
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM consent_events WHERE subscriber_id = 1 AND kind IN ('unsubscribe', 'request')").await,
        2
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM confirmation_tokens WHERE subscriber_id = 1"
        )
        .await,
        1
    );
    // One delivery per issue and reader: issue 1 keeps Ann's own, issue 2
    // moves the first duplicate's; the second copies are gone.
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM deliveries WHERE subscriber_id = 1"
        )
        .await,
        2
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM deliveries").await, 2);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM deliveries WHERE id IN (1, 3)").await,
        2
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM delivery_attempts").await,
        0
    );

    // From now on the database itself refuses a second spelling.
    let dup = herald::with_pool!(&db, |p| {
        sqlx::query(
        "INSERT INTO subscribers (email, attributes, created_at) VALUES ('aNN@example.com', '{}', 9)"
    )
    .execute(p)
    .await
    .map(|_| ())
    });
    let err = dup.expect_err("a case duplicate must violate the unique index");
    assert!(
        err.as_database_error()
            .is_some_and(|e| e.is_unique_violation()),
        "{err}"
    );
    // Foreign keys still hold after the SQLite table rebuilds.
    let orphan = herald::with_pool!(&db, |p| {
        sqlx::query(
        "INSERT INTO deliveries (issue_id, subscriber_id, state, next_attempt_at, updated_at) VALUES (99, 1, 'queued', 0, 0)"
    )
    .execute(p)
    .await
    .map(|_| ())
    });
    assert!(orphan.is_err(), "a delivery of a missing issue is refused");
    // The merge record goes with the reader on erasure: no address outlives it.
    exec(&db, "DELETE FROM subscribers WHERE id = 1").await;
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM merged_subscribers").await,
        1,
        "only bob's merge record is left"
    );
    db.close().await;
    if let Backend::Postgres(admin) = &backend {
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        let pool = sqlx::PgPool::connect(admin)
            .await
            .expect("admin connection");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&pool)
        .await
        .expect("drop the test database");
        pool.close().await;
    }
}

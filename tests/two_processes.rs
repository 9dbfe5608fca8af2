//! Several processes on one database, as editors and the coming scheduler
//! run Herald: composes at the same moment get distinct issue numbers and
//! slugs (both backends, separate pools and real `herald` processes), and on
//! SQLite a large `herald subscribers import` runs while `herald send --wait`
//! delivers an issue from the same file, without `database is locked`.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use herald::app::App;
use herald::content::{ComposeOptions, ContentError};
use herald::store::content::IssueRow;
use support::app::{Backend, TestApp};
use support::cli::{herald_async as herald, text};

crate::on_each_backend!(
    parallel_composes_get_distinct_numbers_and_slugs,
    two_compose_processes_at_once,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_import_while_a_send_is_under_way() {
    import_while_sending(Backend::Sqlite).await
}

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/emails/samples/week-2024-18.md"
);

/// Another process's view of the test's database: its own `App` and pool,
/// with `slug` as its default newsletter (same display name, so the same
/// slug base on the same day).
async fn other_app(t: &TestApp, slug: &str) -> App {
    let mut config = (*t.app.config).clone();
    config.newsletter.slug = slug.to_owned();
    config.database.max_connections = 2;
    App::open(config)
        .await
        .expect("second App on the same database")
}

async fn add_ready_items(app: &App) {
    let nl = app.newsletter.clone();
    app.import_items_file(&nl, Path::new(SAMPLE), true)
        .await
        .expect("items");
}

/// Composes from every app at once; returns what each got.
async fn compose_all(apps: &[App]) -> Vec<Result<IssueRow, ContentError>> {
    let tasks: Vec<_> = apps
        .iter()
        .map(|app| {
            let app = app.clone();
            tokio::spawn(async move {
                let nl = app.newsletter.clone();
                app.compose_issue(&nl, ComposeOptions::default()).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("compose task"));
    }
    out
}

async fn parallel_composes_get_distinct_numbers_and_slugs(backend: Backend) {
    let t = TestApp::spawn(backend).await;

    // Four newsletters with the same name, composed at the same moment by
    // four pools: four issues #1 with four different slugs.
    let mut apps = vec![t.app.clone()];
    for slug in ["second", "third", "fourth"] {
        apps.push(other_app(&t, slug).await);
    }
    for app in &apps {
        add_ready_items(app).await;
    }
    let issues: Vec<IssueRow> = compose_all(&apps)
        .await
        .into_iter()
        .map(|r| r.expect("every newsletter composes"))
        .collect();
    let mut slugs: Vec<&str> = issues.iter().map(|i| i.slug.as_str()).collect();
    slugs.sort();
    slugs.dedup();
    assert_eq!(slugs.len(), 4, "distinct slugs: {slugs:?}");
    assert!(issues.iter().all(|i| i.number == 1));

    // One newsletter, four processes racing for the same ready items, a few
    // rounds: each round exactly one issue, numbered in sequence; the losers
    // are told there is nothing to compose (not a constraint error).
    let mut racers = vec![t.app.clone()];
    for _ in 0..3 {
        racers.push(other_app(&t, &t.app.newsletter.slug).await);
    }
    for round in 2..=4 {
        add_ready_items(&t.app).await;
        let results = compose_all(&racers).await;
        let won: Vec<&IssueRow> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        assert_eq!(won[0].number, round);
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, ContentError::NoReadyItems(_)),
                    "round {round}: {e}"
                );
            }
        }
    }
    let numbers: Vec<i64> =
        t.db.issue_summaries(t.app.newsletter.id)
            .await
            .unwrap()
            .iter()
            .map(|i| i.number)
            .collect();
    assert_eq!(numbers, vec![4, 3, 2, 1]);
    for app in apps.iter().chain(&racers).skip(1) {
        app.close().await;
    }
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !text(stream).contains("database is locked"),
            "{what}: {}",
            text(stream)
        );
    }
}

async fn two_compose_processes_at_once(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let second = other_app(&t, "second").await;
    add_ready_items(&t.app).await;
    add_ready_items(&second).await;
    second.close().await;

    let a = herald(&t, &["issue", "compose"]).output();
    let b = herald(&t, &["issue", "compose", "--newsletter", "second"]).output();
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a.expect("run herald"), b.expect("run herald"));
    assert_success("compose weekly", &a);
    assert_success("compose second", &b);
    let slugs: Vec<String> = herald::with_pool!(&t.db, |p| sqlx::query_scalar(
        "SELECT slug FROM issues ORDER BY slug"
    )
    .fetch_all(p)
    .await
    .expect("slugs"));
    assert_eq!(slugs.len(), 2, "{slugs:?}");
    assert_ne!(slugs[0], slugs[1]);
}

/// Items, an issue and `readers` confirmed subscribers.
async fn issue_for(t: &TestApp, readers: usize, round: usize) -> IssueRow {
    let csv = t.dir.path().join(format!("readers-{round}.csv"));
    let mut rows = String::from("email,name\n");
    for i in 0..readers {
        rows.push_str(&format!("reader{round}-{i}@example.org,Reader {i}\n"));
    }
    std::fs::write(&csv, rows).unwrap();
    let mut rejects = Vec::new();
    t.app
        .import_subscribers(
            &csv,
            herald::subscribers::import::ImportOptions {
                confirmed: true,
                newsletter: &t.app.newsletter,
                progress: &|_, _| {},
            },
            &mut rejects,
        )
        .await
        .unwrap();
    add_ready_items(&t.app).await;
    let nl = t.app.newsletter.clone();
    t.app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap()
}

async fn import_while_sending(backend: Backend) {
    const IMPORTED: usize = 30_000;
    const READERS: usize = 150;
    let t = TestApp::spawn(backend).await;
    for round in 1..=2 {
        let issue = issue_for(&t, READERS, round).await;
        let big = t.dir.path().join(format!("big-{round}.csv"));
        let mut rows = String::with_capacity(IMPORTED * 48);
        rows.push_str("email,name,city\n");
        for i in 0..IMPORTED {
            rows.push_str(&format!("bulk{round}-{i}@example.net,Bulk {i},Oslo\n"));
        }
        std::fs::write(&big, rows).unwrap();
        let sent_before = t.smtp.message_count();

        let number = issue.number.to_string();
        let mut send = herald(&t, &["send", &number, "--wait"]);
        let mut import = herald(
            &t,
            &[
                "subscribers",
                "import",
                big.to_str().unwrap(),
                "--confirmed",
            ],
        );
        let send = send.output();
        // Let the send get under way before the import starts writing.
        let import = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            import.output().await
        };
        let (send, import) = tokio::time::timeout(Duration::from_secs(300), async {
            tokio::join!(send, import)
        })
        .await
        .expect("send and import finish");
        let (send, import) = (send.expect("run send"), import.expect("run import"));
        assert_success("herald send --wait", &send);
        assert_success("herald subscribers import", &import);
        assert!(
            text(&import.stdout).contains(&format!("imported {IMPORTED} ")),
            "{}",
            text(&import.stdout)
        );

        // Every recipient enqueued got the issue, once.
        let deliveries = t
            .count(&format!(
                "SELECT COUNT(*) FROM deliveries WHERE issue_id = {}",
                issue.id
            ))
            .await;
        let unsent = t
            .count(&format!(
                "SELECT COUNT(*) FROM deliveries WHERE issue_id = {} AND state <> 'sent'",
                issue.id
            ))
            .await;
        assert!(deliveries >= (READERS * round) as i64, "{deliveries}");
        assert_eq!(unsent, 0);
        assert_eq!(
            (t.smtp.message_count() - sent_before) as i64,
            deliveries,
            "one message per delivery"
        );
        assert_eq!(
            t.count(&format!(
                "SELECT COUNT(*) FROM subscribers WHERE email LIKE 'bulk{round}-%'"
            ))
            .await,
            IMPORTED as i64
        );
    }
}

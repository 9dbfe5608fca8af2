//! Fixture for delivery-engine tests: a fresh database (SQLite file in a temp dir, or a new
//! PostgreSQL database when `HERALD_TEST_POSTGRES_URL` is set), an `App` pointed at a
//! `TestSmtpServer`, the sample digest composed into issue #1, N confirmed subscribers, and
//! helpers to run the engine and read delivery states and attempts.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald::app::App;
use herald::config::{Config, HumanDuration};
use herald::content::ComposeOptions;
use herald::delivery::engine::{Engine, EngineOptions, RunUntil};
use herald::digest_file::ItemInput;
use herald::domain::EmailAddress;
use herald::store::Db;
use herald::store::content::IssueRow;
use herald::store::deliveries::{AttemptListing, DeliveryListing};
use herald::subscribers::import::ImportOptions;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub use super::app::Backend;
/// A fresh, empty database. The temp dir (SQLite) lives as long as this value.
pub struct TestDb {
    pub url: String,
    pub dir: TempDir,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("herald.db").display()),
            Backend::Postgres(admin) => {
                let name = super::app::create_postgres_database(&admin, "herald_eng").await;
                super::app::with_database(&admin, &name)
            }
        };
        TestDb { url, dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A config for tests: fast retries, short timeouts, a fixed secret.
pub fn test_config(database_url: &str, smtp_url: &str) -> Config {
    let mut c = Config::default();
    c.database.url = database_url.to_owned();
    c.smtp.url = smtp_url.parse().expect("test SMTP URL");
    c.smtp.concurrency = 4;
    c.smtp.timeout = HumanDuration(Duration::from_secs(1));
    c.security.secret = "engine-test-secret-0123456789abcdef".into();
    c.newsletter.from =
        herald::domain::Mailbox::parse("Weekly Digest <digest@herald.test>").expect("test From");
    c.delivery.retry_schedule = "1s".parse().expect("test retry schedule");
    c.delivery.give_up_after = HumanDuration(Duration::from_secs(3600));
    c.delivery.lease = HumanDuration(Duration::from_secs(30));
    c.delivery.flush_interval = HumanDuration(Duration::from_millis(50));
    c
}

pub fn sample_digest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("emails/samples/week-2024-18.md")
}

/// An app with the sample digest composed into an issue (not yet sent).
pub struct Fixture {
    pub app: App,
    pub issue: IssueRow,
    pub db: TestDb,
    /// The test's own pool on the same database (see `app::store_handle`).
    pub store: Db,
}

impl Fixture {
    /// Opens an app on `db` with `config` (whose database.url is replaced by db's), imports the
    /// sample digest as ready items and composes issue #1.
    pub async fn new(db: TestDb, mut config: Config) -> Fixture {
        config.database.url = db.url.clone();
        let app = App::open(config).await.expect("open app");
        app.import_items_file(&app.newsletter, &sample_digest(), true)
            .await
            .expect("import the sample digest");
        let issue = app
            .compose_issue(&app.newsletter, ComposeOptions::default())
            .await
            .expect("compose");
        let store = super::app::store_handle(&db.url).await;
        Fixture {
            app,
            issue,
            db,
            store,
        }
    }

    /// Adds confirmed subscribers through a generated CSV; returns their subscriber ids, in order.
    pub async fn add_confirmed(&self, emails: &[String]) -> Vec<i64> {
        add_confirmed(&self.app, &self.store, self.db.path(), emails).await
    }

    /// Runs the real `herald` binary against this fixture's database, its secret and From,
    /// with mail going to `smtp_url`; `env` adds or overrides settings. Killed after 120 s.
    pub async fn herald(
        &self,
        smtp_url: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> std::process::Output {
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(args)
            .current_dir(self.db.path())
            .env_remove("HERALD_CONFIG")
            .env("HERALD_DATABASE_URL", &self.db.url)
            .env("HERALD_SMTP_URL", smtp_url)
            .env(
                "HERALD_SECURITY_SECRET",
                self.app.config.security.secret.expose_text(),
            )
            .env(
                "HERALD_NEWSLETTER_FROM",
                self.app.config.newsletter.from.to_string(),
            )
            .env("HERALD_LOG", "warn")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .unwrap_or_else(|_| panic!("herald {args:?} did not end within 120 s"))
            .expect("run herald")
    }

    /// Enqueues the issue (like `herald send`).
    pub async fn send(&self, issue: &IssueRow) -> u64 {
        self.app.send_issue(issue).await.expect("send_issue")
    }

    pub async fn issue(&self, issue_id: i64) -> IssueRow {
        self.store.issue_by_id(issue_id).await.expect("issue")
    }

    /// Composes a new issue from one fresh ready item.
    pub async fn compose_next_issue(&self, headline: &str) -> IssueRow {
        let item = ItemInput {
            headline: headline.to_owned(),
            outlet: "Test Outlet".into(),
            url: format!("https://example.org/{}", herald::content::slugify(headline)),
            published: None,
            author: None,
            author_role: None,
            summary_markdown: "A short summary for the next issue.".into(),
            quote: None,
            section: None,
            lang: None,
        };
        self.app
            .add_items(&self.app.newsletter, &[item], true)
            .await
            .expect("add item");
        self.app
            .compose_issue(&self.app.newsletter, ComposeOptions::default())
            .await
            .expect("compose next issue")
    }

    /// Runs the engine until the issue has no open delivery; panics after `timeout`.
    pub async fn run_until_complete(&self, issue_id: i64, timeout: Duration) {
        run_until_complete(&self.app, &self.store, issue_id, timeout).await
    }

    /// Every delivery of the issue with its attempts, by recipient address.
    pub async fn deliveries(
        &self,
        issue_id: i64,
    ) -> HashMap<String, (DeliveryListing, Vec<AttemptListing>)> {
        deliveries(&self.store, issue_id).await
    }

    /// The subscription state (`confirmed`, `bounced`, …) of an address for the default newsletter.
    pub async fn subscription_state(&self, email: &str) -> String {
        let addr = EmailAddress::parse(email).expect("address");
        let sub = self
            .store
            .subscriber_by_email(&addr)
            .await
            .expect("lookup")
            .expect("subscriber exists");
        self.store
            .subscription(sub.id, self.app.newsletter.id)
            .await
            .expect("subscription")
            .expect("subscription exists")
            .state
            .to_string()
    }

    pub async fn is_suppressed(&self, email: &str) -> bool {
        self.store
            .is_suppressed(&EmailAddress::parse(email).expect("address"))
            .await
            .expect("suppression lookup")
    }
}

pub async fn add_confirmed(app: &App, store: &Db, dir: &Path, emails: &[String]) -> Vec<i64> {
    let csv = dir.join(format!("subscribers-{:08x}.csv", rand::random::<u32>()));
    let mut text = String::from("email,name\n");
    for (n, e) in emails.iter().enumerate() {
        text.push_str(&format!("{e},Reader {n}\n"));
    }
    std::fs::write(&csv, text).expect("write csv");
    let progress = |_: u64, _: &herald::subscribers::import::ImportReport| {};
    let report = app
        .import_subscribers(
            &csv,
            ImportOptions {
                confirmed: true,
                newsletter: &app.newsletter,
                progress: &progress,
            },
            &mut std::io::sink(),
        )
        .await
        .expect("import subscribers");
    assert_eq!(report.imported as usize, emails.len(), "{report}");
    let mut ids = Vec::with_capacity(emails.len());
    for e in emails {
        let addr = EmailAddress::parse(e).expect("address");
        ids.push(
            store
                .subscriber_by_email(&addr)
                .await
                .expect("lookup")
                .expect("imported")
                .id,
        );
    }
    ids
}

pub async fn run_until_complete(app: &App, store: &Db, issue_id: i64, timeout: Duration) {
    let engine = Engine::new(
        app.clone(),
        EngineOptions::from_app(app).expect("engine options"),
    );
    let shutdown = CancellationToken::new();
    match tokio::time::timeout(
        timeout,
        engine.run(RunUntil::IssueComplete(issue_id), shutdown.clone()),
    )
    .await
    {
        Ok(result) => result.expect("engine run"),
        Err(_) => {
            let counts = store.delivery_counts(issue_id).await.ok();
            panic!("issue {issue_id} not complete after {timeout:?}; counts {counts:?}");
        }
    }
}

pub async fn deliveries(
    store: &Db,
    issue_id: i64,
) -> HashMap<String, (DeliveryListing, Vec<AttemptListing>)> {
    let list = store
        .list_deliveries(issue_id, None, i64::MAX)
        .await
        .expect("list deliveries");
    let ids: Vec<i64> = list.iter().map(|d| d.id).collect();
    let mut attempts: HashMap<i64, Vec<AttemptListing>> = HashMap::new();
    for chunk in ids.chunks(500) {
        for a in store.attempts_of(chunk).await.expect("attempts") {
            attempts.entry(a.delivery_id).or_default().push(a);
        }
    }
    list.into_iter()
        .map(|d| {
            let a = attempts.remove(&d.id).unwrap_or_default();
            (d.email.clone(), (d, a))
        })
        .collect()
}

//! `TestApp`: a real Herald (database, web server, SMTP transport) per test.
//!
//! Each `TestApp` gets its own database: a SQLite file in a temporary
//! directory, or, when `HERALD_TEST_POSTGRES_URL` is set (for example
//! `postgres://postgres@127.0.0.1:55432/postgres`), a fresh
//! `herald_test_<random>` database on that server, dropped again when the
//! `TestApp` is dropped. Mail goes over SMTP to a `TestSmtpServer`; HTTP goes
//! through a real socket with reqwest (no redirects followed, no cookies).
//!
//! Behavioural tests are written once as `async fn name(backend: Backend)` and
//! listed in `on_each_backend!`, which generates `sqlite::name` and
//! `postgres::name` tests; the PostgreSQL one prints "skipped" and passes when
//! the environment variable is not set.
#![allow(dead_code)]

use std::time::Duration;

use base64::Engine;
use herald::app::App;
use herald::config::Config;
use herald::domain::{EmailAddress, SubscriptionState};
use herald::store::Db;
use herald::store::subscribers::ConsentEventRow;
use tempfile::TempDir;

use super::smtp_server::{ReceivedMessage, Script, TestSmtpServer};

pub const POSTGRES_ENV: &str = "HERALD_TEST_POSTGRES_URL";
pub const USER_AGENT: &str = "herald-integration-tests/1.0";

/// How long to wait for a mail that should arrive, and for one that should not.
pub const MAIL_TIMEOUT: Duration = Duration::from_secs(10);
pub const QUIET_PERIOD: Duration = Duration::from_millis(600);

#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    /// The URL of a server where the tests may create databases.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL if `HERALD_TEST_POSTGRES_URL` is set.
    pub fn postgres() -> Option<Backend> {
        std::env::var(POSTGRES_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty())
            .map(Backend::Postgres)
    }
}

/// Generates one test per backend for each listed `async fn(Backend)`.
#[macro_export]
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::app::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backend) = $crate::support::app::Backend::postgres() else {
                        eprintln!("skipped: set {} to run this test on PostgreSQL", $crate::support::app::POSTGRES_ENV);
                        return;
                    };
                    super::$name(backend).await
                }
            )*
        }
    };
}

pub struct TestApp {
    pub app: App,
    /// A pool of the test's own on the same database, for looking at what
    /// the services wrote (the app keeps its store private to its services).
    pub db: Db,
    pub smtp: TestSmtpServer,
    pub base_url: String,
    pub database_url: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// (admin URL, database name) of a PostgreSQL database to drop at the end.
    pg_cleanup: Option<(String, String)>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, |_| {}).await
    }

    /// Like `spawn`, with a chance to change the configuration first.
    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let (database_url, pg_cleanup) = match &backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("herald.db").display()),
                None,
            ),
            Backend::Postgres(admin) => {
                let name = create_postgres_database(admin, "herald_test").await;
                (with_database(admin, &name), Some((admin.clone(), name)))
            }
        };
        let smtp = TestSmtpServer::start(Script::new()).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let base_url = format!("http://{addr}");

        let mut config = Config::default();
        config.database.url = database_url.clone();
        config.database.max_connections = 4;
        config.http.bind = addr.to_string();
        config.http.base_url = base_url.clone();
        config.smtp.url = smtp.url().parse().expect("test SMTP URL");
        config.smtp.hello_name = "tests.herald.test".into();
        config.smtp.outbox_dir = dir.path().join("outbox");
        config.newsletter.from =
            herald::domain::Mailbox::parse("Weekly Digest <digest@news.herald.test>")
                .expect("test From");
        config.security.secret = "integration-test-secret-0123456789abcdef".into();
        configure(&mut config);

        let app = App::open(config).await.expect("App::open");
        let db = store_handle(&database_url).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(herald::web::serve(app.clone(), listener, async move {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client");
        TestApp {
            app,
            db,
            smtp,
            base_url,
            database_url,
            client,
            dir,
            shutdown: Some(tx),
            server: Some(server),
            pg_cleanup,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    // --- HTTP -------------------------------------------------------------

    pub async fn get(&self, url: &str) -> Page {
        Page::read(self.client.get(url).send().await.expect("GET")).await
    }

    pub async fn post_form(&self, url: &str, pairs: &[(&str, &str)]) -> Page {
        Page::read(
            self.client
                .post(url)
                .form(pairs)
                .send()
                .await
                .expect("POST form"),
        )
        .await
    }

    /// A `multipart/form-data` POST, built by hand (as a mail provider's
    /// one-click unsubscriber would send it).
    pub async fn post_multipart(&self, url: &str, pairs: &[(&str, &str)]) -> Page {
        let boundary = format!("------------------------{}", uuid::Uuid::new_v4().simple());
        let mut body = String::new();
        for (name, value) in pairs {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let response = self
            .client
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("POST multipart");
        Page::read(response).await
    }

    pub async fn post_subscribe_form(&self, email: &str, name: Option<&str>) -> Page {
        let mut pairs = vec![("email", email)];
        if let Some(name) = name {
            pairs.push(("name", name));
        }
        self.post_form(&self.url("/subscribe"), &pairs).await
    }

    pub async fn post_subscribe_json(&self, body: serde_json::Value) -> Page {
        Page::read(
            self.client
                .post(self.url("/subscribe"))
                .json(&body)
                .send()
                .await
                .expect("POST json"),
        )
        .await
    }

    // --- Mail -------------------------------------------------------------

    /// Waits for the `n`th mail (1-based) to `email` and returns it.
    pub async fn nth_mail_to(&self, email: &str, n: usize) -> ReceivedMessage {
        let deadline = tokio::time::Instant::now() + MAIL_TIMEOUT;
        loop {
            let mails = self.smtp.messages_to(email);
            if mails.len() >= n {
                return mails[n - 1].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no mail #{n} to {email} within {MAIL_TIMEOUT:?}; got {}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn confirmation_mail(&self, email: &str) -> ReceivedMessage {
        self.nth_mail_to(email, 1).await
    }

    /// How many mails arrived for `email` after giving in-flight sends time to land.
    pub async fn settled_mail_count(&self, email: &str) -> usize {
        tokio::time::sleep(QUIET_PERIOD).await;
        self.smtp.messages_to(email).len()
    }

    /// The confirmation link, read from the text part of the mail.
    pub fn confirmation_link(&self, mail: &ReceivedMessage) -> String {
        let text = text_part(mail);
        let prefix = format!("{}/confirm/", self.base_url);
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}… line in the text part:\n{text}"))
            .to_owned()
    }

    /// Subscribes through the form, receives the mail, presses Confirm.
    pub async fn subscribe_and_confirm(&self, email: &str) -> String {
        let before = self.smtp.messages_to(email).len();
        let page = self.post_subscribe_form(email, None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let mail = self.nth_mail_to(email, before + 1).await;
        let link = self.confirmation_link(&mail);
        let page = self.post_form(&link, &[]).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(
            self.subscription_state(email).await,
            Some(SubscriptionState::Confirmed)
        );
        link
    }

    // --- Database ---------------------------------------------------------

    pub fn email(address: &str) -> EmailAddress {
        EmailAddress::parse(address).expect("test address")
    }

    pub async fn subscriber_id(&self, email: &str) -> Option<i64> {
        self.db
            .subscriber_by_email(&Self::email(email))
            .await
            .expect("db")
            .map(|s| s.id)
    }

    pub async fn subscription_state(&self, email: &str) -> Option<SubscriptionState> {
        let id = self.subscriber_id(email).await?;
        let row = self
            .db
            .subscription(id, self.app.newsletter.id)
            .await
            .expect("db")?;
        Some(row.state)
    }

    pub async fn consent_events(&self, email: &str) -> Vec<ConsentEventRow> {
        match self.subscriber_id(email).await {
            Some(id) => self.db.consent_history(id).await.expect("db"),
            None => Vec::new(),
        }
    }

    pub async fn consent_kinds(&self, email: &str) -> Vec<String> {
        self.consent_events(email)
            .await
            .into_iter()
            .map(|e| e.kind.to_string())
            .collect()
    }

    pub async fn is_sendable(&self, email: &str) -> bool {
        self.app
            .is_sendable(&Self::email(email), self.app.newsletter.id)
            .await
            .expect("db")
    }

    pub async fn is_suppressed(&self, email: &str) -> bool {
        self.db
            .is_suppressed(&Self::email(email))
            .await
            .expect("db")
    }

    pub async fn unsubscribe_url_for(&self, email: &str) -> String {
        let id = self
            .subscriber_id(email)
            .await
            .unwrap_or_else(|| panic!("no subscriber {email}"));
        self.app.unsubscribe_url(id, self.app.newsletter.id)
    }

    /// Adds a confirmed subscriber directly (the editor's `add --confirmed`).
    pub async fn add_confirmed(&self, email: &str) {
        self.app
            .add_subscriber(&Self::email(email), None, &self.app.newsletter, true)
            .await
            .expect("add_subscriber");
    }

    /// Runs one statement on either backend (to age tokens and the like).
    pub async fn exec(&self, sql: &str) -> u64 {
        let sql = sql.to_owned();
        herald::with_pool!(&self.db, |p| sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(p)
            .await
            .expect("exec")
            .rows_affected())
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let sql = sql.to_owned();
        herald::with_pool!(&self.db, |p| sqlx::query_scalar::<_, i64>(
            sqlx::AssertSqlSafe(sql)
        )
        .fetch_one(p)
        .await
        .expect("count"))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if let Some((admin, name)) = self.pg_cleanup.take() {
            // Drop runs inside the test's runtime: do the async clean-up on a
            // thread of its own. FORCE ends the app's own pooled connections.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&pool)
                        .await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// `postgres://u@h:p/db?x` with the database replaced by `name`.
/// `CREATE DATABASE {prefix}_<random>` on the server at `admin`; returns its name.
pub async fn create_postgres_database(admin: &str, prefix: &str) -> String {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={admin}: {e}"));
    // Concurrent CREATE DATABASEs can collide on template1; retry briefly.
    for attempt in 1.. {
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await;
        match created {
            Ok(_) => break,
            Err(e) if attempt < 10 => {
                eprintln!("CREATE DATABASE {name} (attempt {attempt}): {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("CREATE DATABASE {name}: {e}"),
        }
    }
    pool.close().await;
    name
}

pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub async fn from_response(response: reqwest::Response) -> Page {
        Page::read(response).await
    }

    async fn read(response: reqwest::Response) -> Page {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("response body");
        Page {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

// --- MIME, just enough for the mails Herald sends --------------------------

/// The decoded parts of a multipart message as (content type, text), in order.
pub fn mime_parts(mail: &ReceivedMessage) -> Vec<(String, String)> {
    let raw = mail.data_str();
    let content_type = mail.header("Content-Type").unwrap_or_default();
    let Some(boundary) = param(&content_type, "boundary") else {
        let (_, body) = raw.split_once("\r\n\r\n").unwrap_or_default();
        let cte = mail.header("Content-Transfer-Encoding").unwrap_or_default();
        return vec![(content_type, decode(&cte, body))];
    };
    let delimiter = format!("--{boundary}");
    raw.split(&delimiter)
        .skip(1)
        .filter(|part| !part.starts_with("--"))
        .filter_map(|part| {
            let part = part.strip_prefix("\r\n").unwrap_or(part);
            let (head, body) = part.split_once("\r\n\r\n")?;
            let head = head.replace("\r\n ", " ").replace("\r\n\t", " ");
            let field = |name: &str| {
                head.split("\r\n")
                    .filter_map(|l| l.split_once(':'))
                    .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_owned())
                    .unwrap_or_default()
            };
            let body = body.strip_suffix("\r\n").unwrap_or(body);
            Some((
                field("Content-Type"),
                decode(&field("Content-Transfer-Encoding"), body),
            ))
        })
        .collect()
}

pub fn text_part(mail: &ReceivedMessage) -> String {
    mime_parts(mail)
        .into_iter()
        .find(|(ct, _)| ct.to_ascii_lowercase().starts_with("text/plain"))
        .map(|(_, body)| body)
        .expect("a text/plain part")
}

fn param(content_type: &str, name: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn decode(cte: &str, body: &str) -> String {
    match cte.to_ascii_lowercase().as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .expect("base64 part");
            String::from_utf8(bytes).expect("utf-8 part")
        }
        "quoted-printable" => decode_quoted_printable(body),
        _ => body.to_owned(),
    }
}

fn decode_quoted_printable(body: &str) -> String {
    let joined = body.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(hex) = joined.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8 part")
}

/// A second, small pool on a test's database: tests inspect the store
/// directly, the application goes through its services.
pub async fn store_handle(database_url: &str) -> Db {
    Db::connect(database_url, 2, Duration::from_secs(10))
        .await
        .expect("open a store handle for the test")
}

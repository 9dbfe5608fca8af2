//! Storage: every SQL statement Herald runs lives under `store/`, one file
//! per table family. SQLite and PostgreSQL share the SQL text (`$N`
//! placeholders, BIGINT millisecond times, TEXT states); `with_pool!` runs
//! it on whichever native pool is configured. Dialect branches exist only
//! where semantics differ (claiming deliveries).

pub mod bounces;
pub mod content;
pub mod deliveries;
pub mod editors;
mod health;
pub mod schedule;
pub mod subscriber_pages;
pub mod subscribers;
mod text_enum;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::config::Config;
use crate::domain::{Mailbox, Millis, Secret, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {source}. Check database.url (HERALD_DATABASE_URL)")]
    Connect { url: String, source: sqlx::Error },
    #[error(
        "cannot connect to PostgreSQL at {target} ({reason}): is the server running and is database.url (HERALD_DATABASE_URL) right?"
    )]
    Unreachable { target: String, reason: String },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("corrupt value in the database: {0}")]
    Corrupt(String),
    #[error("the database did not answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// Another writer got there first; nothing was written. Callers retry
    /// (compose) or say so.
    #[error("{0} changed while this command ran; run it again")]
    Conflict(&'static str),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The configured database. Cloning is cheap (pools are shared handles).
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the native pool; the body is compiled
/// once per backend, so the same query text serves both.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, |$p:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($p) => $body,
            $crate::store::Db::Postgres($p) => $body,
        }
    };
}
pub use with_pool;

/// Like `with_pool!`, but inside one transaction that commits when the body
/// returns `Ok` and rolls back otherwise.
///
/// On SQLite the transaction starts with `BEGIN IMMEDIATE`: a deferred
/// transaction that reads and then writes cannot wait for the write lock in
/// WAL mode (SQLite answers `database is locked` at once, busy timeout or
/// not), so a second process on the same file (an import while `herald
/// serve` sends) would fail. Taking the lock up front makes it wait.
#[macro_export]
macro_rules! with_tx {
    ($db:expr, |$tx:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite(pool) => {
                let mut $tx = pool.begin_with($crate::store::SQLITE_BEGIN_WRITE).await?;
                let out = $body;
                if out.is_ok() {
                    $tx.commit().await?;
                }
                out
            }
            $crate::store::Db::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let out = $body;
                if out.is_ok() {
                    $tx.commit().await?;
                }
                out
            }
        }
    };
}
pub use with_tx;

/// sqlx logs every statement at DEBUG but a slow one (over 1 s) at WARN,
/// with its whole SQL text. A large import or enqueue is slow by nature, and
/// the WARN landed on the editor's terminal in the middle of the command's
/// own output: these are the library's diagnostics, for the log at debug
/// level (`HERALD_LOG=sqlx=debug`), not for the user.
pub(crate) fn quiet_statement_logs<O: sqlx::ConnectOptions>(opts: O) -> O {
    // Statements stay at DEBUG, where `HERALD_LOG=debug` shows them inside
    // the request's span (tests/api_serve.rs reads the path from there).
    opts.log_statements(log::LevelFilter::Debug)
        .log_slow_statements(log::LevelFilter::Debug, SLOW_STATEMENT)
}

/// When sqlx calls a statement slow (at debug level, see `quiet_statement_logs`).
pub const SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// How every SQLite write transaction begins (see `with_tx!`).
pub const SQLITE_BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

impl Db {
    /// `connect_timeout` bounds the first contact with a PostgreSQL server;
    /// later waits for a pooled connection keep the pool's own 30 s.
    pub async fn connect(url: &str, max_connections: u32, connect_timeout: Duration) -> Result<Db> {
        let connect_err = |source| StoreError::Connect {
            url: crate::config::redact_url(url),
            source,
        };
        if url.starts_with("postgres") {
            let opts = quiet_statement_logs(PgConnectOptions::from_str(url).map_err(connect_err)?);
            // One direct connection first: the pool retries a refused
            // connection until its acquire timeout and then reports only
            // "pool timed out", hiding the cause.
            let target = format!("{}:{}", opts.get_host(), opts.get_port());
            let unreachable = |reason: String| StoreError::Unreachable {
                target: target.clone(),
                reason,
            };
            match tokio::time::timeout(connect_timeout, sqlx::ConnectOptions::connect(&opts)).await
            {
                Err(_) => {
                    return Err(unreachable(format!(
                        "no answer within {}; database.connect_timeout sets the wait",
                        humantime::format_duration(connect_timeout)
                    )));
                }
                Ok(Err(sqlx::Error::Io(e)))
                    if e.kind() == std::io::ErrorKind::ConnectionRefused =>
                {
                    return Err(unreachable("connection refused".into()));
                }
                Ok(Err(sqlx::Error::Io(e))) => return Err(unreachable(e.to_string())),
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Ok(Ok(conn)) => {
                    let _ = sqlx::Connection::close(conn).await;
                }
            }
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts)
                .await
                .map_err(connect_err)?;
            Ok(Db::Postgres(pool))
        } else {
            // WAL lets the web server read while delivery workers write.
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30));
            let opts = quiet_statement_logs(opts);
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .connect_with(opts)
                .await
                .map_err(connect_err)?;
            Ok(Db::Sqlite(pool))
        }
    }

    pub async fn migrate(&self) -> Result<()> {
        match self {
            Db::Sqlite(p) => sqlx::migrate!("migrations/sqlite").run(p).await?,
            Db::Postgres(p) => sqlx::migrate!("migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    pub async fn close(&self) {
        with_pool!(self, |p| p.close().await)
    }

    /// The secret that keys unsubscribe links when config sets none:
    /// generated once, then kept, so links survive restarts.
    pub async fn instance_secret(&self) -> Result<Secret> {
        let fresh = Secret::generate().to_text();
        with_pool!(self, |p| {
            sqlx::query("INSERT INTO instance_settings (key, value) VALUES ('secret', $1) ON CONFLICT (key) DO NOTHING")
                .bind(&fresh)
                .execute(p)
                .await?;
        });
        let text: String = with_pool!(self, |p| {
            sqlx::query_scalar("SELECT value FROM instance_settings WHERE key = 'secret'")
                .fetch_one(p)
                .await?
        });
        Ok(Secret::new(text.into_bytes()))
    }
}

/// A newsletter as stored; the default one mirrors the `[newsletter]` config.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Newsletter {
    pub id: i64,
    pub slug: String,
    pub name: String,
    /// Parsed when the row is read: a row that does not hold a mailbox is
    /// an error there, not a panic wherever the From is needed.
    #[sqlx(try_from = "String")]
    #[serde(serialize_with = "serialize_display")]
    pub from_mailbox: Mailbox,
    pub reply_to: Option<String>,
    pub postal_address: String,
    pub list_id: String,
    pub subject_template: String,
    pub preheader: String,
    pub lang: String,
    pub created_at: Millis,
}

impl Newsletter {
    pub fn from(&self) -> Mailbox {
        self.from_mailbox.clone()
    }
}

impl TryFrom<String> for Mailbox {
    type Error = crate::domain::EmailError;

    fn try_from(s: String) -> std::result::Result<Self, Self::Error> {
        Mailbox::parse(&s)
    }
}

fn serialize_display<S: serde::Serializer>(
    v: &impl std::fmt::Display,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

const NEWSLETTER_COLUMNS: &str = "id, slug, name, from_mailbox, reply_to, postal_address, list_id, subject_template, preheader, lang, created_at";

impl Db {
    /// Creates or refreshes the config's default newsletter; returns it.
    pub async fn sync_default_newsletter(&self, config: &Config) -> Result<Newsletter> {
        let n = &config.newsletter;
        let from = &n.from;
        let list_id = if n.list_id.is_empty() {
            format!("{}.{}", n.slug, from.address.domain())
        } else {
            n.list_id.clone()
        };
        let reply_to = n.reply_to.as_ref().map(Mailbox::to_string);
        with_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO newsletters (slug, name, from_mailbox, reply_to, postal_address, list_id, subject_template, preheader, lang, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (slug) DO UPDATE SET name = excluded.name, from_mailbox = excluded.from_mailbox,
                   reply_to = excluded.reply_to, postal_address = excluded.postal_address, list_id = excluded.list_id,
                   subject_template = excluded.subject_template, preheader = excluded.preheader, lang = excluded.lang",
            )
            .bind(&n.slug)
            .bind(&n.name)
            .bind(from.to_string())
            .bind(reply_to)
            .bind(&n.postal_address)
            .bind(list_id)
            .bind(&n.subject_template)
            .bind(&n.preheader)
            .bind(n.language().as_str())
            .bind(now_ms())
            .execute(p)
            .await?;
        });
        let newsletter = self.newsletter_by_slug(&n.slug).await?.ok_or_else(|| {
            StoreError::Corrupt("default newsletter vanished after upsert".into())
        })?;
        let schedule = crate::schedule::schedule_row(newsletter.id, n);
        self.sync_schedule(newsletter.id, schedule.as_ref(), now_ms())
            .await?;
        Ok(newsletter)
    }

    pub async fn newsletter_by_slug(&self, slug: &str) -> Result<Option<Newsletter>> {
        let sql = format!("SELECT {NEWSLETTER_COLUMNS} FROM newsletters WHERE slug = $1");
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(slug)
        .fetch_optional(p)
        .await?))
    }

    pub async fn newsletter_by_id(&self, id: i64) -> Result<Newsletter> {
        let sql = format!("SELECT {NEWSLETTER_COLUMNS} FROM newsletters WHERE id = $1");
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(id)
        .fetch_one(p)
        .await?))
    }
}

/// Serialises a state enum in a row with its database spelling (serde's
/// derive would write `admin_change` for `admin-change`), so JSON output
/// shows what the database holds.
pub(crate) fn serialize_as_str<T: std::fmt::Display, S: serde::Serializer>(
    value: &T,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Appends `(v1, v2, …)`, each value bound: the right-hand side of an `IN`.
/// Callers keep lists under the backends' bind limits (they chunk).
pub(crate) fn push_list<DB, T>(q: &mut sqlx::QueryBuilder<DB>, values: impl IntoIterator<Item = T>)
where
    DB: sqlx::Database,
    for<'t> T: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push("(");
    let mut sep = q.separated(", ");
    for v in values {
        sep.push_bind(v);
    }
    q.push(")");
}

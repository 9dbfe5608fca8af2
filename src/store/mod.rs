//! Storage: every SQL statement Herald runs lives under `store/`, one file
//! per table family. SQLite and PostgreSQL share the SQL text (`$N`
//! placeholders, BIGINT millisecond times, TEXT states); `with_pool!` runs
//! it on whichever native pool is configured. Dialect branches exist only
//! where semantics differ (claiming deliveries).

pub mod content;
pub mod deliveries;
mod health;
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
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("corrupt value in the database: {0}")]
    Corrupt(String),
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
#[macro_export]
macro_rules! with_tx {
    ($db:expr, |$tx:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite(pool) => {
                let mut $tx = pool.begin().await?;
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

impl Db {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db> {
        let connect_err = |source| StoreError::Connect {
            url: crate::config::redact_url(url),
            source,
        };
        if url.starts_with("postgres") {
            let opts = PgConnectOptions::from_str(url).map_err(connect_err)?;
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
    pub from_mailbox: String,
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
        Mailbox::parse(&self.from_mailbox).expect("from_mailbox is validated before it is stored")
    }
}

const NEWSLETTER_COLUMNS: &str = "id, slug, name, from_mailbox, reply_to, postal_address, list_id, subject_template, preheader, lang, created_at";

impl Db {
    /// Creates or refreshes the config's default newsletter; returns it.
    pub async fn sync_default_newsletter(&self, config: &Config) -> Result<Newsletter> {
        let n = &config.newsletter;
        let from = Mailbox::parse(&n.from)
            .map_err(|e| StoreError::Corrupt(format!("newsletter.from: {e}")))?;
        let list_id = if n.list_id.is_empty() {
            format!("{}.{}", n.slug, from.address.domain())
        } else {
            n.list_id.clone()
        };
        let reply_to = (!n.reply_to.is_empty()).then(|| n.reply_to.clone());
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
            .bind(&n.lang)
            .bind(now_ms())
            .execute(p)
            .await?;
        });
        self.newsletter_by_slug(&n.slug)
            .await?
            .ok_or_else(|| StoreError::Corrupt("default newsletter vanished after upsert".into()))
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

/// Parses a state column; a value the code does not know is corruption, not a panic.
pub(crate) fn parse_state<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(StoreError::Corrupt)
}

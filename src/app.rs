//! `App`: everything a command or request needs, built once from config.

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::domain::{Secret, UnsubscribeToken};
use crate::mail::DkimSigner;
use crate::mail::transport::{Mailer, TransportConfig};
use crate::mail::trust::TlsTrust;
use crate::store::{Db, Newsletter, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    /// Private to the services: the CLI and the web layer go through `App`
    /// methods, so a rule lives in one place (a test keeps it so).
    pub(crate) db: Db,
    pub secret: Secret,
    pub mailer: Mailer,
    /// The newsletter `[newsletter]` configures; commands default to it.
    pub newsletter: Arc<Newsletter>,
    pub links: Links,
    /// What `GET /readyz` reports; the delivery engine (and later the scheduler) report into it.
    pub readiness: crate::readiness::Readiness,
    /// What `GET /metrics` shows; recorded where each event happens.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl App {
    /// Opens the database, runs migrations, syncs the default newsletter.
    pub async fn open(config: Config) -> Result<App, AppError> {
        config.validate()?;
        let mut mailer = Mailer::with_trust(transport_config(&config), tls_trust(&config));
        if let Some(signer) = dkim_signer(&config).await? {
            mailer = mailer.with_dkim(signer);
        }
        let db = Db::connect(
            &config.database.url,
            config.database.max_connections,
            config.database.connect_timeout.0,
        )
        .await?;
        db.migrate().await?;
        let newsletter = db.sync_default_newsletter(&config).await?;
        let secret = if config.security.secret.is_empty() {
            db.instance_secret().await?
        } else {
            config.security.secret.clone()
        };
        let links = Links::new(config.base_url());
        if links.one_click_unsubscribe() == OneClick::Omitted {
            tracing::warn!(
                base_url = links.base(),
                "http.base_url is not https: mail goes out WITHOUT List-Unsubscribe-Post (RFC 8058 one-click unsubscribe needs https), so Gmail and Yahoo show no unsubscribe button and may filter bulk mail; set http.base_url to the https:// address readers reach Herald at"
            );
        }
        Ok(App {
            links,
            metrics: crate::metrics::Metrics::new(crate::metrics::Transport::of(&config)),
            config: Arc::new(config),
            db,
            secret,
            mailer,
            newsletter: Arc::new(newsletter),
            readiness: Default::default(),
        })
    }

    /// Closes the database pool: pending writes are flushed, SQLite's WAL checkpointed.
    pub async fn close(&self) {
        self.db.close().await
    }

    /// Whether the database answers and every migration this binary carries is applied.
    pub async fn schema_is_current(&self) -> Result<bool, StoreError> {
        self.db.schema_is_current().await
    }

    /// The newsletter named by `--newsletter`, or the default one.
    pub async fn newsletter(&self, slug: Option<&str>) -> Result<Arc<Newsletter>, LookupError> {
        match slug {
            None => Ok(self.newsletter.clone()),
            Some(s) if s == self.newsletter.slug => Ok(self.newsletter.clone()),
            Some(s) => self
                .db
                .newsletter_by_slug(s)
                .await?
                .map(Arc::new)
                .ok_or_else(|| LookupError::NoNewsletter(s.to_owned())),
        }
    }

    /// The address bounces go to: `smtp.envelope_from`, else the From address.
    pub fn envelope_from(&self, newsletter: &Newsletter) -> String {
        match &self.config.smtp.envelope_from {
            Some(address) => address.to_string(),
            None => newsletter.from().address.to_string(),
        }
    }

    pub fn unsubscribe_url(&self, subscriber_id: i64, newsletter_id: i64) -> String {
        self.links
            .unsubscribe(&UnsubscribeToken::new(subscriber_id, newsletter_id).encode(&self.secret))
    }

    /// `List-Unsubscribe` and `List-Unsubscribe-Post` values (RFC 2369, RFC 8058);
    /// no `List-Unsubscribe-Post` when the base URL is plain http (see
    /// [`Links::one_click_unsubscribe`]).
    /// The mailto goes to the newsletter's reply address, read by people,
    /// until inbound mail processing exists.
    pub fn list_unsubscribe_headers(
        &self,
        subscriber_id: i64,
        newsletter: &Newsletter,
    ) -> (String, Option<String>) {
        let url = self.unsubscribe_url(subscriber_id, newsletter.id);
        let value = format!("<{url}>, <{}>", self.unsubscribe_mailto(newsletter));
        let post = (self.links.one_click_unsubscribe() != OneClick::Omitted)
            .then(|| "List-Unsubscribe=One-Click".to_owned());
        (value, post)
    }

    pub fn unsubscribe_mailto(&self, newsletter: &Newsletter) -> String {
        let to = newsletter
            .reply_to
            .as_deref()
            .and_then(|r| crate::domain::Mailbox::parse(r).ok())
            .unwrap_or_else(|| newsletter.from());
        format!("mailto:{}?subject=unsubscribe", to.address)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no newsletter with slug {0:?} (the default is set by newsletter.slug)")]
    NoNewsletter(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `smtp.url` was parsed and its neighbours bounded when the config was loaded.
fn transport_config(config: &Config) -> TransportConfig {
    let smtp = &config.smtp;
    match smtp.url.endpoint() {
        None => TransportConfig::FileOutbox {
            dir: smtp.outbox_dir.clone(),
        },
        Some(endpoint) => TransportConfig::Smtp {
            endpoint: endpoint.clone(),
            hello_name: (!smtp.hello_name.is_empty()).then(|| smtp.hello_name.clone()),
            timeout: smtp.timeout.0,
        },
    }
}

/// `smtp.ca_file` and `smtp.tls_insecure`, already parsed at load.
fn tls_trust(config: &Config) -> TlsTrust {
    TlsTrust {
        ca_file: config.smtp.ca_file.clone(),
        insecure: config.smtp.tls_insecure,
    }
}

/// The DKIM keys are read and checked once, at start: a bad key stops Herald before it sends
/// anything, rather than each message failing.
async fn dkim_signer(config: &Config) -> Result<Option<DkimSigner>, ConfigError> {
    let dkim = &config.dkim;
    if dkim.private_key_file.is_empty() {
        return Ok(None);
    }
    async fn read(key: &'static str, path: &str, generate: &str) -> Result<String, ConfigError> {
        tokio::fs::read_to_string(path)
            .await
            .map_err(|e| ConfigError::Value {
                key,
                value: path.to_owned(),
                expected: format!(
                    "a readable PEM private key file ({e}); create one with `herald dkim generate{generate} --out {path}`"
                ),
            })
    }
    let bad_key = |key: &'static str, path: &str, e: crate::mail::DkimError| ConfigError::Value {
        key,
        value: path.to_owned(),
        expected: e.to_string(),
    };
    let path = &dkim.private_key_file;
    let domain = format!(" --domain {}", dkim.domain);
    let pem = read("dkim.private_key_file", path, &domain).await?;
    let mut signer = DkimSigner::from_pem(&dkim.domain, &dkim.selector, &pem)
        .map_err(|e| bad_key("dkim.private_key_file", path, e))?;
    if !dkim.ed25519_private_key_file.is_empty() {
        let path = &dkim.ed25519_private_key_file;
        let generate = format!("{domain} --algorithm ed25519");
        let pem = read("dkim.ed25519_private_key_file", path, &generate).await?;
        signer = signer
            .with_ed25519(&dkim.ed25519_selector, &pem)
            .map_err(|e| bad_key("dkim.ed25519_private_key_file", path, e))?;
    }
    Ok(Some(signer))
}

/// Every public URL Herald puts in a page or a mail, built from
/// `http.base_url` (never from a request's Host header).
#[derive(Clone, Debug)]
pub struct Links {
    base: Arc<str>,
}

impl Links {
    pub fn new(base_url: &str) -> Links {
        Links {
            base: base_url.trim_end_matches('/').into(),
        }
    }
    pub fn base(&self) -> &str {
        &self.base
    }
    pub fn subscribe(&self, newsletter_slug: Option<&str>) -> String {
        match newsletter_slug {
            None => format!("{}/subscribe", self.base),
            Some(slug) => format!("{}/n/{slug}/subscribe", self.base),
        }
    }
    pub fn confirm(&self, token: &str) -> String {
        format!("{}/confirm/{token}", self.base)
    }
    pub fn unsubscribe(&self, token: &str) -> String {
        format!("{}/unsubscribe/{token}", self.base)
    }
    pub fn archive_issue(&self, slug: &str) -> String {
        format!("{}/archive/{slug}", self.base)
    }

    /// Whether mail may carry `List-Unsubscribe-Post` (RFC 8058 one-click).
    /// RFC 8058 requires an https URI; a plain-http base URL gets the header
    /// only when it names this machine (localhost, 127.x, ::1), which is a
    /// test or demo setup no mailbox provider ever sees.
    pub fn one_click_unsubscribe(&self) -> OneClick {
        let base = &*self.base;
        if crate::render::starts_with_ci(base, "https://") {
            return OneClick::Https;
        }
        let rest = base.get("http://".len()..).unwrap_or("");
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.split(':').next().unwrap_or(""),
        }
        .to_ascii_lowercase();
        let local = host == "localhost"
            || host.ends_with(".localhost")
            || host == "::1"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback());
        if local {
            OneClick::LocalTest
        } else {
            OneClick::Omitted
        }
    }
}

/// What [`Links::one_click_unsubscribe`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneClick {
    /// https base URL: the header is sent.
    Https,
    /// Plain http on this machine (tests, `herald demo`): sent, as real
    /// providers never see it.
    LocalTest,
    /// Plain http elsewhere: omitted, with a warning at start.
    Omitted,
}

#[cfg(test)]
mod one_click_tests {
    use super::{Links, OneClick};

    #[test]
    fn one_click_needs_https_or_a_local_test_setup() {
        let decide = |base: &str| Links::new(base).one_click_unsubscribe();
        assert_eq!(decide("https://news.example.com"), OneClick::Https);
        assert_eq!(decide("HTTPS://news.example.com/"), OneClick::Https);
        assert_eq!(decide("http://news.example.com"), OneClick::Omitted);
        assert_eq!(decide("http://10.0.0.5:8080"), OneClick::Omitted);
        assert_eq!(decide("http://localhost.example.com"), OneClick::Omitted);
        assert_eq!(decide("http://127.0.0.1:8080"), OneClick::LocalTest);
        assert_eq!(decide("http://localhost:3000/"), OneClick::LocalTest);
        assert_eq!(decide("http://herald.localhost"), OneClick::LocalTest);
        assert_eq!(decide("http://[::1]:8080"), OneClick::LocalTest);
    }
}

//! Configuration: `herald.toml` (path from `--config` or `HERALD_CONFIG`),
//! every key overridable by `HERALD_<SECTION>_<KEY>`, and working defaults
//! when there is no file at all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
    /// figment's error names the key, the value and what was expected.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid configuration: {key} = {value:?}: {expected}")]
    Value {
        key: &'static str,
        value: String,
        expected: String,
    },
}

/// A duration written the human way in config: "10m", "72h", "7d".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration like \"10m\", \"72h\" or \"7d\" ({e})"
                ))
            })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

fn dur(s: &str) -> HumanDuration {
    HumanDuration(humantime::parse_duration(s).expect("built-in default durations parse"))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub smtp: SmtpConfig,
    pub security: SecurityConfig,
    pub newsletter: NewsletterConfig,
    pub subscribe: SubscribeConfig,
    pub delivery: DeliveryConfig,
    pub dkim: DkimConfig,
    pub render: RenderConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path` (the embedded default) or `postgres://…`.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub bind: String,
    /// The public URL used in every link; never taken from a request's Host.
    pub base_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Empty: write mail to `outbox_dir`. Otherwise `smtp://`, `smtps://`.
    pub url: String,
    pub outbox_dir: PathBuf,
    /// Simultaneous SMTP connections used for newsletter delivery.
    pub concurrency: usize,
    /// Messages per second across all connections; 0 = unlimited.
    pub rate: f64,
    /// Optional caps over longer windows; 0 = unlimited.
    pub rate_per_hour: u64,
    pub rate_per_day: u64,
    pub timeout: HumanDuration,
    /// The bounce address used as MAIL FROM; empty = the newsletter's From.
    pub envelope_from: String,
    /// EHLO name; empty = this machine's hostname.
    pub hello_name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Keys unsubscribe links. Empty: a secret generated once and kept in
    /// the database is used, so links stay valid without any setup.
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NewsletterConfig {
    pub slug: String,
    pub name: String,
    pub from: String,
    pub reply_to: String,
    pub postal_address: String,
    /// `List-Id` identifier; empty = `{slug}.{from-domain}`.
    pub list_id: String,
    pub subject_template: String,
    pub preheader: String,
    pub lang: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscribeConfig {
    pub confirm_ttl: HumanDuration,
    /// At most one confirmation mail per address in this interval.
    pub resend_interval: HumanDuration,
    /// Subscribe requests per client IP per hour.
    pub per_ip_per_hour: u32,
    /// Recorded with every consent event; bump it when the form's wording changes.
    pub consent_text_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Comma-separated waits between attempts; the last one repeats.
    pub retry_schedule: String,
    pub give_up_after: HumanDuration,
    /// How long a worker's claim on a delivery lasts before another may take it.
    pub lease: HumanDuration,
    pub batch_size: u32,
    pub flush_interval: HumanDuration,
    /// How long delivery retries through a database outage before the process exits non-zero.
    pub max_outage: HumanDuration,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    pub domain: String,
    pub selector: String,
    pub private_key_file: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenderConfig {
    /// A stylesheet that replaces the built-in `emails/digest.css`.
    pub css_file: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://herald.db".into(),
            max_connections: 8,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: "127.0.0.1:8080".into(),
            base_url: "http://127.0.0.1:8080".into(),
        }
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            url: String::new(),
            outbox_dir: PathBuf::from("outbox"),
            concurrency: 8,
            rate: 0.0,
            rate_per_hour: 0,
            rate_per_day: 0,
            timeout: dur("30s"),
            envelope_from: String::new(),
            hello_name: String::new(),
        }
    }
}

impl Default for NewsletterConfig {
    fn default() -> Self {
        NewsletterConfig {
            slug: "weekly".into(),
            name: "Weekly Digest".into(),
            from: "Weekly Digest <digest@localhost.localdomain>".into(),
            reply_to: String::new(),
            postal_address: "Herald Newsroom, 1 Example Street, 010000 Astana, Kazakhstan".into(),
            list_id: String::new(),
            subject_template: "{newsletter}: {first_headline} and {n_more} more".into(),
            preheader: String::new(),
            lang: "en".into(),
        }
    }
}

impl Default for SubscribeConfig {
    fn default() -> Self {
        SubscribeConfig {
            confirm_ttl: dur("7d"),
            resend_interval: dur("10m"),
            per_ip_per_hour: 20,
            consent_text_version: "subscribe-form-v1".into(),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            retry_schedule: "5m,15m,30m,1h,2h,4h".into(),
            give_up_after: dur("72h"),
            lease: dur("5m"),
            batch_size: 200,
            flush_interval: dur("200ms"),
            max_outage: dur("10m"),
        }
    }
}

impl Config {
    /// Defaults, then the file (if any), then `HERALD_<SECTION>_<KEY>`.
    /// `path` is `--config`; `HERALD_CONFIG` is read by clap into the same flag.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::File {
                    path: path.to_owned(),
                    message: "not found (run `herald init` to write one, or leave --config out to use the defaults)".into(),
                });
            }
            fig = fig.merge(Toml::file(path));
        } else if Path::new("herald.toml").exists() {
            fig = fig.merge(Toml::file("herald.toml"));
        }
        fig = fig.merge(env_provider());
        let config: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(describe_figment_error(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: each error names the key, the value and what is expected.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(value_err(
                "database.url",
                url,
                "expected sqlite://FILE or postgres://USER@HOST/DB",
            ));
        }
        if self.http.bind.parse::<std::net::SocketAddr>().is_err() {
            return Err(value_err(
                "http.bind",
                &self.http.bind,
                "expected IP:PORT, e.g. 127.0.0.1:8080",
            ));
        }
        let base = &self.http.base_url;
        if !(base.starts_with("http://") || base.starts_with("https://"))
            || base.contains(char::is_whitespace)
        {
            return Err(value_err(
                "http.base_url",
                base,
                "expected an absolute http:// or https:// URL",
            ));
        }
        let smtp = &self.smtp.url;
        if !(smtp.is_empty() || smtp.starts_with("smtp://") || smtp.starts_with("smtps://")) {
            return Err(value_err(
                "smtp.url",
                &redact_url(smtp),
                "expected smtp://, smtps:// or empty (file outbox)",
            ));
        }
        if self.smtp.concurrency == 0 || self.smtp.concurrency > 512 {
            return Err(value_err(
                "smtp.concurrency",
                &self.smtp.concurrency.to_string(),
                "expected 1 to 512",
            ));
        }
        if !(self.smtp.rate >= 0.0 && self.smtp.rate.is_finite()) {
            return Err(value_err(
                "smtp.rate",
                &self.smtp.rate.to_string(),
                "expected messages per second ≥ 0 (0 = unlimited)",
            ));
        }
        if self.newsletter.slug.is_empty()
            || !self
                .newsletter
                .slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(value_err(
                "newsletter.slug",
                &self.newsletter.slug,
                "expected lower-case letters, digits and dashes",
            ));
        }
        for (key, v) in [
            ("newsletter.name", &self.newsletter.name),
            ("newsletter.from", &self.newsletter.from),
            ("newsletter.reply_to", &self.newsletter.reply_to),
            ("newsletter.postal_address", &self.newsletter.postal_address),
            (
                "newsletter.subject_template",
                &self.newsletter.subject_template,
            ),
            ("newsletter.preheader", &self.newsletter.preheader),
        ] {
            if v.contains(['\r', '\n']) {
                return Err(value_err(key, v, "must be a single line"));
            }
        }
        if self.newsletter.name.trim().is_empty() {
            return Err(value_err(
                "newsletter.name",
                &self.newsletter.name,
                "must not be empty",
            ));
        }
        crate::domain::Mailbox::parse(&self.newsletter.from).map_err(|e| {
            value_err(
                "newsletter.from",
                &self.newsletter.from,
                &format!("expected \"Name <address>\" or an address: {e}"),
            )
        })?;
        if !self.newsletter.reply_to.is_empty() {
            crate::domain::Mailbox::parse(&self.newsletter.reply_to).map_err(|e| {
                value_err(
                    "newsletter.reply_to",
                    &self.newsletter.reply_to,
                    &e.to_string(),
                )
            })?;
        }
        if !self.smtp.envelope_from.is_empty() {
            crate::domain::EmailAddress::parse(&self.smtp.envelope_from).map_err(|e| {
                value_err(
                    "smtp.envelope_from",
                    &self.smtp.envelope_from,
                    &e.to_string(),
                )
            })?;
        }
        if self.newsletter.postal_address.trim().is_empty() {
            return Err(value_err(
                "newsletter.postal_address",
                "",
                "a postal address is required in every newsletter footer (CAN-SPAM)",
            ));
        }
        if let Err(e) = crate::delivery::retry::parse_schedule(&self.delivery.retry_schedule) {
            return Err(value_err(
                "delivery.retry_schedule",
                &self.delivery.retry_schedule,
                &format!("expected comma-separated durations like \"5m,15m,1h\" ({e})"),
            ));
        }
        if self.delivery.batch_size == 0 {
            return Err(value_err("delivery.batch_size", "0", "expected at least 1"));
        }
        let dkim = &self.dkim;
        let dkim_set = [&dkim.domain, &dkim.selector, &dkim.private_key_file]
            .iter()
            .filter(|v| !v.is_empty())
            .count();
        if dkim_set != 0 && dkim_set != 3 {
            return Err(value_err(
                "dkim",
                &format!(
                    "domain={:?} selector={:?} private_key_file={:?}",
                    dkim.domain, dkim.selector, dkim.private_key_file
                ),
                "set all three of dkim.domain, dkim.selector and dkim.private_key_file, or none",
            ));
        }
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        self.database.url.starts_with("postgres")
    }

    /// `base_url` without a trailing slash, ready for `format!("{}/path")`.
    pub fn base_url(&self) -> &str {
        self.http.base_url.trim_end_matches('/')
    }
}

fn value_err(key: &'static str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Value {
        key,
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

/// `HERALD_HTTP_BASE_URL` → `http.base_url`: the first segment is the
/// section, the rest (underscores and all) is the key.
fn env_provider() -> Env {
    Env::prefixed("HERALD_")
        .ignore(&["CONFIG", "TEST_POSTGRES_URL", "LOG"])
        .map(|key| match key.as_str().split_once('_') {
            Some((section, rest)) => format!("{section}.{rest}").into(),
            None => key.into(),
        })
        .lowercase(true)
}

fn describe_figment_error(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Hides the password in an SMTP URL before it is printed anywhere.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The commented file `herald init` writes.
pub fn sample_toml(secret: &str) -> String {
    format!(
        r#"# Herald configuration. Every key can be overridden by an environment
# variable HERALD_<SECTION>_<KEY>, e.g. HERALD_SMTP_URL or HERALD_HTTP_BASE_URL.

[database]
# sqlite://FILE (embedded, zero setup) or postgres://USER:PASS@HOST/DB
# (several Herald processes can then share one delivery queue).
url = "sqlite://herald.db"

[http]
bind = "127.0.0.1:8080"
# The public URL put in every link (confirmation, unsubscribe, archive).
base_url = "http://127.0.0.1:8080"

[smtp]
# Empty: every message is written as a .eml file into outbox_dir.
# smtp://user:pass@host:587?tls=starttls, smtps://host:465, smtp://127.0.0.1:2525
url = ""
outbox_dir = "outbox"
# Simultaneous SMTP connections and messages per second (0 = unlimited).
concurrency = 8
rate = 0
# Bounce address used as MAIL FROM (empty: the newsletter's From address).
envelope_from = ""

[security]
# Keys every unsubscribe link. Changing it breaks links in mail already sent.
secret = "{secret}"

[newsletter]
slug = "weekly"
name = "Weekly Digest"
from = "Weekly Digest <digest@example.com>"
reply_to = ""
# Shown in every footer; required by CAN-SPAM.
postal_address = "Herald Newsroom, 1 Example Street, 010000 Astana, Kazakhstan"
subject_template = "{{newsletter}}: {{first_headline}} and {{n_more}} more"
lang = "en"

[subscribe]
confirm_ttl = "7d"
resend_interval = "10m"
per_ip_per_hour = 20
consent_text_version = "subscribe-form-v1"

[delivery]
# Waits between attempts after a temporary failure; the last one repeats.
retry_schedule = "5m,15m,30m,1h,2h,4h"
give_up_after = "72h"
lease = "5m"

# [dkim]
# domain = "example.com"
# selector = "herald"
# private_key_file = "dkim.pem"   # PKCS#1 or PKCS#8 PEM (herald dkim generate)
"#
    )
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use super::*;

    #[test]
    fn sample_file_parses_and_validates() {
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(&sample_toml("abc")))
            .extract()
            .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.security.secret, "abc");
    }

    #[test]
    fn env_keys_with_underscores_map_to_nested_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_HTTP_BASE_URL", "https://news.example.com");
            jail.set_env("HERALD_SMTP_CONCURRENCY", "3");
            jail.set_env("HERALD_NEWSLETTER_FROM", "News <news@example.com>");
            jail.set_env("HERALD_DELIVERY_RETRY_SCHEDULE", "1m,2m");
            let cfg = Config::load(None).unwrap();
            assert_eq!(cfg.http.base_url, "https://news.example.com");
            assert_eq!(cfg.smtp.concurrency, 3);
            assert_eq!(cfg.newsletter.from, "News <news@example.com>");
            assert_eq!(cfg.delivery.retry_schedule, "1m,2m");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_key_value_and_expectation() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_SMTP_URL", "http://user:pw@relay");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("smtp.url") && err.contains("expected smtp://") && !err.contains("pw"),
                "{err}"
            );
            jail.set_env("HERALD_SMTP_URL", "");
            jail.set_env("HERALD_SUBSCRIBE_CONFIRM_TTL", "soon");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.to_lowercase().contains("subscribe.confirm_ttl") && err.contains("soon"),
                "{err}"
            );
            Ok(())
        });
    }
}

//! Configuration: `herald.toml` (path from `--config` or `HERALD_CONFIG`),
//! every key overridable by `HERALD_<SECTION>_<KEY>`, and working defaults
//! when there is no file at all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::delivery::retry::RetrySchedule;
use crate::domain::{EmailAddress, Mailbox, Secret};
use crate::mail::smtp_url::SmtpUrl;
use crate::mail::trust::CaFile;
use crate::schedule::spec::{AddressList, CronSchedule, OnEmpty, ScheduleTz};

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

/// Built-in defaults are whole seconds or milliseconds, so no parsing can fail.
const fn secs(n: u64) -> HumanDuration {
    HumanDuration(Duration::from_secs(n))
}

/// `smtp.hello_name` as text. Through `HERALD_SMTP_HELLO_NAME`, figment
/// reads an address literal such as `[192.0.2.1]` as a one-element list;
/// that is turned back into the literal (`validate` checks the result).
fn hello_name_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a hostname or an address literal such as [192.0.2.1]")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
            match (seq.next_element::<String>()?, seq.next_element::<String>()?) {
                (Some(inner), None) => Ok(format!("[{inner}]")),
                _ => Err(serde::de::Error::custom(
                    "expected a hostname or an address literal such as [192.0.2.1]",
                )),
            }
        }
    }
    d.deserialize_any(Text)
}

/// `smtp.envelope_from`: empty means "the newsletter's From".
mod optional_address {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EmailAddress>, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Ok(None);
        }
        EmailAddress::parse(&s)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}; expected an address")))
    }

    pub fn serialize<S: Serializer>(a: &Option<EmailAddress>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(a.as_ref().map(EmailAddress::as_str).unwrap_or(""))
    }
}

/// `http.admin_bind`: empty means "the admin pages are served on `http.bind`".
mod optional_socket_addr {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<std::net::SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Ok(None);
        }
        s.trim().parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "{s:?} is not an IP address with a port; expected e.g. \"127.0.0.1:8081\" or \"[::1]:8081\", or empty to serve /admin on http.bind"
            ))
        })
    }

    pub fn serialize<S: Serializer>(
        a: &Option<std::net::SocketAddr>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(""),
        }
    }
}

/// `smtp.ca_file`: a path in the file, the certificates in the `Config` (read once, at load).
mod ca_file_path {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CaFile>, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Ok(None);
        }
        CaFile::load(Path::new(s.trim()))
            .map(Some)
            .map_err(|e| serde::de::Error::custom(e.to_string()))
    }

    pub fn serialize<S: Serializer>(f: &Option<CaFile>, s: S) -> Result<S::Ok, S::Error> {
        match f {
            Some(f) => s.collect_str(&f.path().display()),
            None => s.serialize_str(""),
        }
    }
}

/// `newsletter.from` and `newsletter.reply_to` are parsed once, here; the
/// rest of Herald only sees a `Mailbox`.
mod mailbox_text {
    use super::*;

    pub fn parse<E: serde::de::Error>(s: &str) -> Result<Mailbox, E> {
        Mailbox::parse(s).map_err(|e| {
            E::custom(format!(
                "{s:?} is not a mailbox ({e}): expected \"Name <address>\" or an address"
            ))
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mailbox, D::Error> {
        parse(&String::deserialize(d)?)
    }

    pub fn serialize<S: Serializer>(m: &Mailbox, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(m)
    }

    /// Empty means "none".
    pub mod optional {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mailbox>, D::Error> {
            let s = String::deserialize(d)?;
            if s.trim().is_empty() {
                Ok(None)
            } else {
                parse(&s).map(Some)
            }
        }

        pub fn serialize<S: Serializer>(m: &Option<Mailbox>, s: S) -> Result<S::Ok, S::Error> {
            match m {
                Some(m) => s.collect_str(m),
                None => s.serialize_str(""),
            }
        }
    }
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
    pub bounce: BounceConfig,
    pub log: LogConfig,

    pub webhooks: WebhooksConfig,
}

/// `Debug` hides the URL's password (see the impl below).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path` (the embedded default) or `postgres://…`.
    pub url: String,
    pub max_connections: u32,
    /// How long to wait for the database server to answer at start-up.
    pub connect_timeout: HumanDuration,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub bind: String,
    /// The public URL used in every link; never taken from a request's Host.
    pub base_url: String,
    /// CIDRs of reverse proxies whose `X-Forwarded-For`/`Forwarded` name the
    /// client; empty = trust nobody (the TCP peer is the client).
    pub trusted_proxies: crate::web::TrustedProxies,
    /// Bearer token that lets a scraper read `GET /metrics` from anywhere;
    /// empty = only loopback peers (without forwarding headers) may.
    pub metrics_token: Secret,

    /// Where the editors' pages (`/admin`) listen; `None` = on `bind`, beside
    /// the public pages. Set, `/admin` is served only there.
    #[serde(with = "optional_socket_addr")]
    pub admin_bind: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Empty: write mail to `outbox_dir`. Otherwise `smtp://`, `smtps://`.
    pub url: SmtpUrl,
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
    #[serde(with = "optional_address")]
    pub envelope_from: Option<EmailAddress>,
    /// EHLO name; empty = this machine's hostname. A hostname or an address
    /// literal such as `[192.0.2.1]` (checked at load: it goes onto the wire).
    #[serde(deserialize_with = "hello_name_text")]
    pub hello_name: String,
    /// PEM file with the CA certificate(s) of a relay whose certificate comes from a private
    /// (company) CA; trusted besides the web PKI roots and the system store. Read and parsed
    /// at load; empty = none.
    #[serde(with = "ca_file_path")]
    pub ca_file: Option<CaFile>,
    /// Accept any relay certificate: only for test setups (loudly logged).
    pub tls_insecure: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Keys unsubscribe links. Empty: a secret generated once and kept in
    /// the database is used, so links stay valid without any setup.
    /// Otherwise at least `Secret::MIN_LEN` bytes.
    pub secret: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NewsletterConfig {
    pub slug: String,
    pub name: String,
    #[serde(with = "mailbox_text")]
    pub from: Mailbox,
    /// Empty in the file: replies go to `from`.
    #[serde(with = "mailbox_text::optional")]
    pub reply_to: Option<Mailbox>,
    pub postal_address: String,
    /// `List-Id` identifier; empty = `{slug}.{from-domain}`.
    pub list_id: String,
    pub subject_template: String,
    pub preheader: String,
    /// BCP 47: the labels and dates of the email, and the language of every
    /// item without its own. Read it through [`NewsletterConfig::language`].
    /// (Optional here so that the defaults figment starts from do not
    /// collide with a file that uses the older key `lang`.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<crate::domain::LanguageTag>,
    /// The older spelling of `language`, still accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<crate::domain::LanguageTag>,
    /// Cron expression of the automatic sends; empty = none (see `schedule::spec`).
    #[serde(with = "crate::schedule::spec::optional_cron")]
    pub schedule: Option<CronSchedule>,
    /// IANA zone the schedule's wall times are in.
    pub timezone: ScheduleTz,
    /// What a slot with no ready items does.
    pub on_empty: OnEmpty,
    /// A slot missed while Herald was down still fires if it is younger than this.
    pub catch_up: HumanDuration,
    /// Each slot fires after a random delay up to this (chosen once per slot).
    pub jitter: HumanDuration,
    /// Compose this long before the slot and send a test copy to `preview_to`; 0 = compose at the slot.
    pub preview_before: HumanDuration,
    pub preview_to: AddressList,
}

impl NewsletterConfig {
    /// `newsletter.language`, else the older `newsletter.lang`, else English.
    pub fn language(&self) -> crate::domain::LanguageTag {
        self.language
            .clone()
            .or_else(|| self.lang.clone())
            .unwrap_or_default()
    }
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
    pub retry_schedule: RetrySchedule,
    pub give_up_after: HumanDuration,
    /// How long a worker's claim on a delivery lasts before another may take it.
    pub lease: HumanDuration,
    pub batch_size: u32,
    /// How long a delivery result waits for others to be written with it
    /// (a crash re-sends the messages whose results were not written yet).
    pub flush_interval: HumanDuration,
    /// How long delivery retries through a database outage before the process exits non-zero.
    pub max_outage: HumanDuration,
    /// How long the relay may stay unreachable (refused connections, timeouts) before the
    /// issue being sent is paused with the reason.
    pub relay_down_pause_after: HumanDuration,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    pub domain: String,
    pub selector: String,
    pub private_key_file: String,
    /// A second signature with an Ed25519 key (RFC 8463), besides the RSA one.
    pub ed25519_selector: String,
    pub ed25519_private_key_file: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenderConfig {
    /// A stylesheet that replaces the built-in `emails/digest.css`.
    pub css_file: String,
    /// `"warn"` (default) or `"refuse"`: what compose does when the HTML passes Gmail's 102 KB clipping point.
    pub clip_limit: crate::render::ClipPolicy,
    /// `"link"` (default), `"button"` or `"none"`: what follows each summary.
    pub read_more: crate::render::ReadMore,
    /// `"auto"` (default: from 4 items), `"always"` or `"never"`: the "In this issue" list.
    pub overview: crate::render::Overview,
}

/// `[log]`: how Herald logs (stderr) and where its traces go.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,herald::delivery=debug`;
    /// `HERALD_LOG`, when set, wins.
    pub level: LogLevel,
    /// The OpenTelemetry collector's OTLP/HTTP base URL
    /// (`http://127.0.0.1:4318`); traces go to `/v1/traces` there. Empty = no export.
    pub otlp_endpoint: OtlpEndpoint,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message, fields, spans.
    Json,
}

/// `log.level`: a filter `tracing_subscriber::EnvFilter` accepts (checked at load).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLevel(String);

impl LogLevel {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Adds a directive such as `herald::delivery::engine=warn`; a later
    /// directive for the same target wins.
    pub fn add_directive(&mut self, directive: &str) {
        self.0.push(',');
        self.0.push_str(directive);
    }
}

impl Default for LogLevel {
    /// sqlx logs PostgreSQL's notices (migrations' "already exists, skipping") at info.
    fn default() -> Self {
        LogLevel("info,sqlx=warn".into())
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let trimmed = s.trim();
        tracing_subscriber::EnvFilter::builder()
            .parse(trimmed)
            .map(|_| LogLevel(trimmed.to_owned()))
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a log filter ({e}): expected a level (error, warn, info, debug, trace) or directives like \"info,herald::delivery=debug\""
                ))
            })
    }
}

/// `log.otlp_endpoint`: empty, or an absolute http(s) URL (checked at load).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpEndpoint(Option<String>);

impl Serialize for OtlpEndpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_deref().unwrap_or(""))
    }
}

impl OtlpEndpoint {
    /// Where spans are posted: the base URL with `/v1/traces` (the OTLP/HTTP
    /// path), unless the configured URL already names it.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.0.as_deref()?;
        if base.trim_end_matches('/').ends_with("/v1/traces") {
            return Some(base.to_owned());
        }
        Some(format!("{}/v1/traces", base.trim_end_matches('/')))
    }
}

impl<'de> Deserialize<'de> for OtlpEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let s = s.trim();
        if s.is_empty() {
            return Ok(OtlpEndpoint(None));
        }
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"));
        match rest {
            Some(rest)
                if !rest.is_empty()
                    && !rest.starts_with('/')
                    && !s.contains(char::is_whitespace) =>
            {
                Ok(OtlpEndpoint(Some(s.to_owned())))
            }
            _ => Err(serde::de::Error::custom(format!(
                "{s:?} is not an OTLP/HTTP endpoint: expected the collector's base URL like \"http://127.0.0.1:4318\" (traces go to /v1/traces), or empty for no export"
            ))),
        }
    }
}

/// Reports that arrive after the relay said yes (DSNs, complaints).
/// `Debug` hides the IMAP URL's password.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BounceConfig {
    /// The domain of VERP return paths (`b-TOKEN@domain`); empty = the
    /// envelope sender stays `smtp.envelope_from` and reports are matched by
    /// Message-ID and recipient.
    pub domain: String,
    /// Where `herald serve` receives reports for `domain` by SMTP
    /// (`IP:PORT`); empty = no receiver.
    pub listen: String,
    /// `imaps://user:pass@host/INBOX` (or `imap://`): a mailbox polled for
    /// reports; empty = none. Parsed at load; the password is a `Secret`.
    pub imap_url: crate::bounce::imap::ImapUrl,
    pub imap_poll_interval: HumanDuration,
    /// Where processed messages are moved (`/` separates levels), created when missing.
    pub imap_done_folder: String,
    /// PEM file with the CA certificate(s) of an IMAP server whose certificate comes from a
    /// private CA; trusted besides the web PKI roots and the system store. Empty = none.
    #[serde(with = "ca_file_path")]
    pub imap_ca_file: Option<CaFile>,
    /// How long the raw message of each report is kept (0s = not at all).
    pub keep_raw: HumanDuration,
}

impl std::fmt::Debug for BounceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BounceConfig")
            .field("domain", &self.domain)
            .field("listen", &self.listen)
            .field("imap_url", &self.imap_url)
            .field("imap_poll_interval", &self.imap_poll_interval)
            .field("imap_done_folder", &self.imap_done_folder)
            .field("imap_ca_file", &self.imap_ca_file)
            .field("keep_raw", &self.keep_raw)
            .finish()
    }
}

impl Default for BounceConfig {
    fn default() -> Self {
        BounceConfig {
            domain: String::new(),
            listen: String::new(),
            imap_url: Default::default(),
            imap_poll_interval: secs(60),
            imap_done_folder: "Herald/Processed".into(),
            imap_ca_file: None,
            keep_raw: secs(30 * 86_400),
        }
    }
}

/// Bounce and complaint events posted by the providers Herald relays
/// through, under `/webhooks/{provider}` (`web::webhooks`). A provider whose
/// keys are empty is off: its endpoint answers 404. `Debug` hides the
/// secrets (`Secret` and `EventWebhookKey` print no key material).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Amazon SES through SNS: the ARN of the topic SES publishes to; a
    /// message from any other topic is refused.
    pub ses_topic_arn: String,
    /// FOR TESTS ONLY: an `http(s)://` prefix that SNS signing certificates
    /// and SubscribeURLs may start with instead of `https://sns.<region>.amazonaws.com/`.
    pub ses_cert_url_prefix: String,
    /// Postmark: the HTTP Basic credentials set on the webhook.
    pub postmark_user: String,
    pub postmark_password: Secret,
    /// Mailgun: the account's HTTP webhook signing key.
    pub mailgun_signing_key: Secret,
    /// SendGrid: the Signed Event Webhook's verification key (base64 DER).
    pub sendgrid_public_key: crate::web::webhooks::EventWebhookKey,
    /// How old a signed timestamp may be (and how long Mailgun tokens are
    /// remembered against replay).
    pub max_age: WebhookMaxAge,
}

/// `webhooks.max_age`, with its own default (1h) so that `WebhooksConfig`
/// can derive `Default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebhookMaxAge(pub HumanDuration);

impl Default for WebhookMaxAge {
    fn default() -> Self {
        WebhookMaxAge(secs(3600))
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://herald.db".into(),
            max_connections: 8,
            connect_timeout: secs(5),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: "127.0.0.1:8080".into(),
            base_url: "http://127.0.0.1:8080".into(),
            trusted_proxies: Default::default(),
            metrics_token: Secret::default(),

            admin_bind: None,
        }
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            url: SmtpUrl::default(),
            outbox_dir: PathBuf::from("outbox"),
            concurrency: 8,
            rate: 0.0,
            rate_per_hour: 0,
            rate_per_day: 0,
            timeout: secs(30),
            envelope_from: None,
            hello_name: String::new(),
            ca_file: None,
            tls_insecure: false,
        }
    }
}

impl Default for NewsletterConfig {
    fn default() -> Self {
        NewsletterConfig {
            slug: "weekly".into(),
            name: "Weekly Digest".into(),
            from: Mailbox {
                name: Some("Weekly Digest".into()),
                address: crate::domain::EmailAddress::parse("digest@localhost.localdomain")
                    .unwrap_or_else(|e| unreachable!("the built-in default From parses: {e}")),
            },
            reply_to: None,
            postal_address: "Herald Newsroom, 1 Example Street, 010000 Astana, Kazakhstan".into(),
            list_id: String::new(),
            subject_template: "{newsletter}: {first_headline} and {n_more} more".into(),
            preheader: String::new(),
            language: None,
            lang: None,
            schedule: None,
            timezone: ScheduleTz::default(),
            on_empty: OnEmpty::Skip,
            catch_up: secs(6 * 3600),
            jitter: secs(0),
            preview_before: secs(0),
            preview_to: AddressList::default(),
        }
    }
}

impl Default for SubscribeConfig {
    fn default() -> Self {
        SubscribeConfig {
            confirm_ttl: secs(7 * 86_400),
            resend_interval: secs(600),
            per_ip_per_hour: 20,
            consent_text_version: "subscribe-form-v1".into(),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            retry_schedule: RetrySchedule::default(),
            give_up_after: secs(72 * 3600),
            lease: secs(300),
            batch_size: 200,
            flush_interval: HumanDuration(Duration::from_millis(5)),
            max_outage: secs(600),
            relay_down_pause_after: secs(900),
        }
    }
}

impl Config {
    /// Defaults, then the file (if any), then `HERALD_<SECTION>_<KEY>`.
    /// `path` is `--config`; `HERALD_CONFIG` is read by clap into the same flag.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let config: Config = Config::figment(path)?
            .extract()
            .map_err(|e| ConfigError::Invalid(describe_figment_error(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Only `[log]`, for setting up logging before anything else is read
    /// (the rest of the file is checked, and its errors logged, by `load`).
    pub fn load_log(path: Option<&Path>) -> Result<LogConfig, ConfigError> {
        Config::figment(path)?
            .extract_inner("log")
            .map_err(|e| ConfigError::Invalid(describe_figment_error(e)))
    }

    /// The defaults, the file (`path`, else ./herald.toml if present) and `HERALD_*`, in that order.
    fn figment(path: Option<&Path>) -> Result<Figment, ConfigError> {
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
        Ok(fig.merge(env_provider()))
    }

    /// Checks what serde cannot: each error names the key, the value and what is expected.
    /// `App::open` calls it again, so a `Config` built in code is held to the same bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(value_err(
                "database.url",
                &redact_url(url),
                "expected sqlite://FILE or postgres://USER@HOST/DB",
            ));
        }
        self.validate_numbers()?;
        if let (Some(new), Some(old)) = (&self.newsletter.language, &self.newsletter.lang)
            && new != old
        {
            return Err(value_err(
                "newsletter.lang",
                old.as_str(),
                &format!(
                    "newsletter.language is {new} and its older spelling newsletter.lang is {old}; keep only language = \"…\""
                ),
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
        if !self.smtp.hello_name.is_empty() {
            check_hello_name(&self.smtp.hello_name).map_err(|why| {
                value_err(
                    "smtp.hello_name",
                    &self.smtp.hello_name,
                    &format!(
                        "{why}; expected a hostname such as mail.example.com or an address literal such as [192.0.2.1], or empty for this machine's name"
                    ),
                )
            })?;
        }
        let token = &self.http.metrics_token;
        if !token.is_empty() && token.len() < METRICS_TOKEN_MIN_LEN {
            return Err(value_err(
                "http.metrics_token",
                &format!("<{} bytes, not shown>", token.len()),
                &format!(
                    "expected at least {METRICS_TOKEN_MIN_LEN} characters of random text (openssl rand -base64 32), or empty to allow only local scrapers"
                ),
            ));
        }
        let secret = &self.security.secret;
        if !secret.is_empty() && secret.len() < Secret::MIN_LEN {
            return Err(value_err(
                "security.secret",
                &format!("<{} bytes, not shown>", secret.len()),
                &format!(
                    "expected at least {} bytes of random text: generate one with `openssl rand -base64 48` (or `herald init`), or leave it empty to use the secret Herald generates and keeps in the database",
                    Secret::MIN_LEN
                ),
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
        if self.newsletter.postal_address.trim().is_empty() {
            return Err(value_err(
                "newsletter.postal_address",
                "",
                "a postal address is required in every newsletter footer (CAN-SPAM)",
            ));
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
        let ed25519_set = [&dkim.ed25519_selector, &dkim.ed25519_private_key_file]
            .iter()
            .filter(|v| !v.is_empty())
            .count();
        if ed25519_set == 1 || (ed25519_set == 2 && dkim_set == 0) {
            return Err(value_err(
                "dkim",
                &format!(
                    "ed25519_selector={:?} ed25519_private_key_file={:?}",
                    dkim.ed25519_selector, dkim.ed25519_private_key_file
                ),
                "set both dkim.ed25519_selector and dkim.ed25519_private_key_file, or neither; \
                 they add an Ed25519 signature to the RSA one, so dkim.domain, dkim.selector and \
                 dkim.private_key_file must be set too",
            ));
        }
        self.validate_bounce()?;
        self.validate_webhooks()?;
        if ed25519_set == 2 && dkim.ed25519_selector.eq_ignore_ascii_case(&dkim.selector) {
            return Err(value_err(
                "dkim.ed25519_selector",
                &dkim.ed25519_selector,
                "a selector other than dkim.selector (each key has its own DNS record)",
            ));
        }
        Ok(())
    }

    fn validate_bounce(&self) -> Result<(), ConfigError> {
        let b = &self.bounce;
        if !b.domain.is_empty() && EmailAddress::parse(&format!("b@{}", b.domain)).is_err() {
            return Err(value_err(
                "bounce.domain",
                &b.domain,
                "expected a domain whose mail comes to Herald, e.g. bounces.example.org (MX to the host running `herald serve` with bounce.listen), or empty",
            ));
        }
        if !b.listen.is_empty() && b.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(value_err(
                "bounce.listen",
                &b.listen,
                "expected IP:PORT, e.g. 0.0.0.0:25 or 127.0.0.1:2526, or empty for no SMTP receiver",
            ));
        }
        if !b.listen.is_empty() && b.domain.is_empty() {
            return Err(value_err(
                "bounce.listen",
                &b.listen,
                "the receiver accepts only VERP addresses of bounce.domain: set bounce.domain too",
            ));
        }
        let done = &b.imap_done_folder;
        let same_as_polled = b
            .imap_url
            .endpoint()
            .is_some_and(|ep| ep.mailbox.eq_ignore_ascii_case(done.trim_matches('/')));
        if done.trim_matches('/').is_empty()
            || done
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '*' || c == '%')
            || same_as_polled
        {
            return Err(value_err(
                "bounce.imap_done_folder",
                done,
                "expected a folder name other than the polled mailbox, with `/` between levels, e.g. Herald/Processed (no control characters, `\"`, `*` or `%`)",
            ));
        }
        check_duration(
            "bounce.imap_poll_interval",
            b.imap_poll_interval,
            5 * SEC,
            DAY,
        )?;
        check_duration("bounce.keep_raw", b.keep_raw, Duration::ZERO, 3650 * DAY)?;
        Ok(())
    }

    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let w = &self.webhooks;
        if !w.ses_topic_arn.is_empty() && !is_sns_topic_arn(&w.ses_topic_arn) {
            return Err(value_err(
                "webhooks.ses_topic_arn",
                &w.ses_topic_arn,
                "expected the SNS topic's ARN, arn:aws:sns:REGION:ACCOUNT:TOPIC (as `aws sns list-topics` shows it), or empty to turn the SES endpoint off",
            ));
        }
        let prefix = &w.ses_cert_url_prefix;
        if !prefix.is_empty()
            && (!(prefix.starts_with("https://") || prefix.starts_with("http://"))
                || !prefix.ends_with('/')
                || prefix.contains(char::is_whitespace))
        {
            return Err(value_err(
                "webhooks.ses_cert_url_prefix",
                prefix,
                "for tests only: an http(s):// URL prefix ending in '/', e.g. http://127.0.0.1:8443/; leave it empty in production (certificates then come only from https://sns.<region>.amazonaws.com/)",
            ));
        }
        if w.postmark_user.is_empty() != w.postmark_password.is_empty() {
            return Err(value_err(
                "webhooks.postmark_user",
                &w.postmark_user,
                "set both webhooks.postmark_user and webhooks.postmark_password (the Basic auth credentials of the Postmark webhook), or neither",
            ));
        }
        if w.postmark_user.contains(':') || w.postmark_user.contains(char::is_control) {
            return Err(value_err(
                "webhooks.postmark_user",
                &w.postmark_user,
                "a user name without ':' or control characters (HTTP Basic auth)",
            ));
        }
        for (key, secret) in [
            ("webhooks.postmark_password", &w.postmark_password),
            ("webhooks.mailgun_signing_key", &w.mailgun_signing_key),
        ] {
            if !secret.is_empty() && secret.len() < 16 {
                return Err(value_err(
                    key,
                    &format!("<{} bytes, not shown>", secret.len()),
                    "at least 16 bytes (copy it from the provider's dashboard), or empty to turn the endpoint off",
                ));
            }
        }
        check_duration("webhooks.max_age", w.max_age.0, 60 * SEC, 7 * DAY)?;
        Ok(())
    }

    /// The bounds of `RANGES`, so that no value can overflow, divide by zero
    /// or allocate without limit later.
    fn validate_numbers(&self) -> Result<(), ConfigError> {
        let (db, smtp, sub, del) = (&self.database, &self.smtp, &self.subscribe, &self.delivery);
        check_int("database.max_connections", db.max_connections, 1, 1000)?;
        check_duration(
            "database.connect_timeout",
            db.connect_timeout,
            SEC,
            300 * SEC,
        )?;
        check_int("smtp.concurrency", smtp.concurrency, 1, 512)?;
        if !(smtp.rate == 0.0 || (0.001..=100_000.0).contains(&smtp.rate)) {
            return Err(range_err("smtp.rate", &smtp.rate.to_string()));
        }
        check_int("smtp.rate_per_hour", smtp.rate_per_hour, 0, 100_000_000)?;
        check_int("smtp.rate_per_day", smtp.rate_per_day, 0, 1_000_000_000)?;
        check_duration("smtp.timeout", smtp.timeout, SEC, 600 * SEC)?;
        check_duration(
            "subscribe.confirm_ttl",
            sub.confirm_ttl,
            Duration::from_nanos(1),
            365 * DAY,
        )?;
        check_duration(
            "subscribe.resend_interval",
            sub.resend_interval,
            Duration::ZERO,
            7 * DAY,
        )?;
        check_int(
            "subscribe.per_ip_per_hour",
            sub.per_ip_per_hour,
            1,
            1_000_000,
        )?;
        check_duration("delivery.give_up_after", del.give_up_after, SEC, 365 * DAY)?;
        check_duration("delivery.lease", del.lease, SEC, DAY)?;
        check_int("delivery.batch_size", del.batch_size, 1, 10_000)?;
        check_duration(
            "delivery.flush_interval",
            del.flush_interval,
            Duration::from_millis(1),
            60 * SEC,
        )?;
        check_duration("delivery.max_outage", del.max_outage, SEC, 7 * DAY)?;
        check_duration(
            "delivery.relay_down_pause_after",
            del.relay_down_pause_after,
            SEC,
            7 * DAY,
        )?;
        let nl = &self.newsletter;
        check_duration("newsletter.catch_up", nl.catch_up, Duration::ZERO, 30 * DAY)?;
        check_duration("newsletter.jitter", nl.jitter, Duration::ZERO, DAY)?;
        check_duration(
            "newsletter.preview_before",
            nl.preview_before,
            Duration::ZERO,
            30 * DAY,
        )?;
        if !nl.preview_before.0.is_zero() && nl.preview_to.0.is_empty() {
            return Err(value_err(
                "newsletter.preview_to",
                "",
                "newsletter.preview_before is set, so list the editors who get the preview copy, e.g. preview_to = [\"editor@example.com\"] (HERALD_NEWSLETTER_PREVIEW_TO=\"a@example.com,b@example.com\"), or set preview_before = \"0s\"",
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

const SEC: Duration = Duration::from_secs(1);
/// A bearer token short enough to guess is no protection.
const METRICS_TOKEN_MIN_LEN: usize = 24;
const DAY: Duration = Duration::from_secs(86_400);

/// The accepted values of every numeric and duration key, as error messages
/// and the README state them. One table, so that a value `validate` refuses
/// and a value serde cannot even read (`-1`, `4000000000` for a `u32`,
/// `"many"`) get the same explanation.
const RANGES: &[(&str, &str)] = &[
    (
        "database.max_connections",
        "expected a whole number from 1 to 1000",
    ),
    (
        "database.connect_timeout",
        "expected a duration from 1s to 5m, like \"5s\"",
    ),
    ("smtp.concurrency", "expected a whole number from 1 to 512"),
    (
        "smtp.rate",
        "expected 0 (unlimited) or between 0.001 and 100000 messages per second",
    ),
    (
        "smtp.rate_per_hour",
        "expected 0 (unlimited) or a whole number up to 100000000",
    ),
    (
        "smtp.rate_per_day",
        "expected 0 (unlimited) or a whole number up to 1000000000",
    ),
    (
        "smtp.timeout",
        "expected a duration from 1s to 10m, like \"30s\"",
    ),
    (
        "smtp.tls_insecure",
        "expected true or false (true only for test setups)",
    ),
    (
        "subscribe.confirm_ttl",
        "expected a duration above 0 and at most 365d, like \"7d\"",
    ),
    (
        "subscribe.resend_interval",
        "expected a duration from 0s to 7d, like \"10m\"",
    ),
    (
        "subscribe.per_ip_per_hour",
        "expected a whole number from 1 to 1000000",
    ),
    ("delivery.retry_schedule", RetrySchedule::EXPECTED),
    (
        "delivery.give_up_after",
        "expected a duration from 1s to 365d, like \"72h\"",
    ),
    (
        "delivery.lease",
        "expected a duration from 1s to 24h, like \"5m\"",
    ),
    (
        "delivery.batch_size",
        "expected a whole number from 1 to 10000",
    ),
    (
        "delivery.flush_interval",
        "expected a duration from 1ms to 1m, like \"200ms\"",
    ),
    (
        "delivery.max_outage",
        "expected a duration from 1s to 7d, like \"10m\"",
    ),
    (
        "delivery.relay_down_pause_after",
        "expected a duration from 1s to 7d, like \"15m\"",
    ),
    (
        "newsletter.catch_up",
        "expected a duration from 0s to 30d, like \"6h\"",
    ),
    (
        "newsletter.jitter",
        "expected a duration from 0s to 24h, like \"10m\"",
    ),
    (
        "newsletter.preview_before",
        "expected a duration from 0s (no preview) to 30d, like \"18h\"",
    ),
    ("log.format", "expected \"text\" or \"json\""),
    (
        "bounce.imap_poll_interval",
        "expected a duration from 5s to 24h, like \"1m\"",
    ),
    (
        "webhooks.max_age",
        "expected a duration from 1m to 7d, like \"1h\"",
    ),
    (
        "bounce.keep_raw",
        "expected a duration from 0s (keep no raw messages) to 3650d, like \"30d\"",
    ),
];

fn expected_range(key: &str) -> Option<&'static str> {
    RANGES.iter().find(|(k, _)| *k == key).map(|(_, e)| *e)
}

fn range_err(key: &'static str, value: &str) -> ConfigError {
    value_err(key, value, expected_range(key).unwrap_or("out of range"))
}

fn check_int<T: PartialOrd + std::fmt::Display>(
    key: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(range_err(key, &value.to_string()));
    }
    Ok(())
}

fn check_duration(
    key: &'static str,
    value: HumanDuration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if value.0 < min || value.0 > max {
        return Err(range_err(
            key,
            &humantime::format_duration(value.0).to_string(),
        ));
    }
    Ok(())
}

/// The EHLO argument (RFC 5321 4.1.1.1): a domain of LDH labels or an
/// address literal. Anything else, a CR/LF above all, would put a second
/// command on the wire.
fn check_hello_name(name: &str) -> Result<(), String> {
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        let ok = match literal.strip_prefix("IPv6:") {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => literal.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        return if ok {
            Ok(())
        } else {
            Err("not an address literal".into())
        };
    }
    if name.len() > 253 {
        return Err(format!(
            "{} characters, at most 253 are allowed",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label must have 1 to 63 characters".into());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!("{c:?} is not allowed in a hostname"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label must not begin or end with '-'".into());
        }
    }
    Ok(())
}

/// `arn:aws:sns:REGION:ACCOUNT:TOPIC` (partitions `aws`, `aws-cn`, `aws-us-gov`).
fn is_sns_topic_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    matches!(parts.as_slice(), ["arn", partition, "sns", region, account, topic]
        if partition.starts_with("aws")
            && !region.is_empty()
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && !topic.is_empty()
            && topic.len() <= 256
            && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'))
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
/// `HERALD_<SECTION>_<KEY>` for the sections `Config` has. A variable
/// naming another section (`HERALD_BIN` of a script, `HERALD_TEST_…`) is not
/// configuration and is left alone; an unknown key inside a known section is
/// still an error, so a typo in `HERALD_SMTP_URLL` does not pass unnoticed.
fn env_provider() -> Env {
    let sections: Vec<String> = match figment::value::Value::serialize(Config::default()) {
        Ok(figment::value::Value::Dict(_, dict)) => dict.into_keys().collect(),
        _ => Vec::new(),
    };
    Env::prefixed("HERALD_")
        .ignore(&["CONFIG", "TEST_POSTGRES_URL", "LOG"])
        .filter(move |key| {
            key.as_str().split_once('_').is_some_and(|(section, _)| {
                sections.iter().any(|s| s.eq_ignore_ascii_case(section))
            })
        })
        .map(|key| match key.as_str().split_once('_') {
            Some((section, rest)) => format!("{section}.{rest}").into(),
            None => key.into(),
        })
        .lowercase(true)
}

/// Says, for each error, which key, which value, what is accepted and where
/// the value came from (the file or the `HERALD_*` variable).
fn describe_figment_error(e: figment::Error) -> String {
    use figment::error::{Actual, Kind};
    e.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = match &e.metadata {
                Some(m) if m.name.contains("environment") => {
                    format!(" (from HERALD_{})", key.replace('.', "_").to_uppercase())
                }
                Some(m) => match &m.source {
                    Some(source) => format!(" (in {source})"),
                    None => String::new(),
                },
                None => String::new(),
            };
            let shown = |a: &Actual| match a {
                Actual::Str(s) => format!("{s:?}"),
                Actual::Signed(n) => n.to_string(),
                Actual::Unsigned(n) => n.to_string(),
                Actual::Float(n) => n.to_string(),
                Actual::Bool(b) => b.to_string(),
                other => other.to_string(),
            };
            let range = expected_range(&key);
            let what = match (&e.kind, range) {
                (Kind::InvalidType(a, _) | Kind::InvalidValue(a, _), Some(range)) => {
                    format!("{key} = {}: {range}", shown(a))
                }
                (Kind::Message(m), Some(range)) if !m.contains(range) => {
                    format!("{key}: {m}; {range}")
                }
                (kind, _) if key.is_empty() => kind.to_string(),
                (kind, _) => format!("{key}: {kind}"),
            };
            format!("{what}{origin}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Hides the password in a database or SMTP URL before it is printed
/// anywhere: `user:pass@` becomes `user:***@`, `password=…` becomes
/// `password=***`. Works on malformed URLs too (no scheme, unknown scheme),
/// since those are exactly the ones that end up in error messages.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let (before_query, query) = match rest.find('?') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let mut out = scheme.to_owned();
    match before_query.rfind('@') {
        Some(at) if before_query[..at].contains(':') => {
            let user = before_query[..at].split(':').next().unwrap_or("");
            out.push_str(user);
            out.push_str(":***");
            out.push_str(&before_query[at..]);
        }
        _ => out.push_str(before_query),
    }
    if let Some(q) = query.strip_prefix('?') {
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
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
# Pool size (1 to 1000) and how long start-up waits for PostgreSQL (1s to 5m).
max_connections = 8
connect_timeout = "5s"

[http]
bind = "127.0.0.1:8080"
# The public URL put in every link (confirmation, unsubscribe, archive).
base_url = "http://127.0.0.1:8080"
# Reverse proxies (CIDRs) whose X-Forwarded-For / Forwarded header names the
# client, e.g. ["127.0.0.1/32", "10.0.0.0/8"]. Empty: trust nobody.
trusted_proxies = []
# GET /metrics (Prometheus) answers local scrapers (loopback, not through a
# proxy) and, with this set, any scraper sending "Authorization: Bearer TOKEN"
# (at least 24 characters: openssl rand -base64 32). Empty: local only.
metrics_token = ""

# Where the editors' pages (/admin) listen, e.g. "127.0.0.1:8081", so that
# they need not face the internet. Empty: /admin is served on bind.
admin_bind = ""

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
# The relay's certificate must chain to the web PKI roots or the system store.
# A relay with a certificate from a company CA: that CA's PEM file here.
ca_file = ""
# true: accept ANY certificate (test setups only; logged as a warning).
tls_insecure = false

[security]
# Keys every unsubscribe link. Changing it breaks links in mail already sent.
# At least 32 bytes (openssl rand -base64 48); empty = generated and kept in the database.
secret = "{secret}"

[newsletter]
slug = "weekly"
name = "Weekly Digest"
from = "Weekly Digest <digest@example.com>"
reply_to = ""
# Shown in every footer; required by CAN-SPAM.
postal_address = "Herald Newsroom, 1 Example Street, 010000 Astana, Kazakhstan"
subject_template = "{{newsletter}}: {{first_headline}} and {{n_more}} more"
# BCP 47 tag (e.g. "en", "ru", "kk"): the email's labels ("Unsubscribe"…) and
# dates, and the language of items without their own `lang`. Labels exist for
# en, ru and kk; other languages get English labels. (Older spelling: lang.)
language = "en"
# Send automatically: a cron expression (minute hour day month weekday;
# weekday 0/7 = Sunday, 1 = Monday; or 6/7 fields with seconds/years) in an
# IANA time zone. Empty: only `herald send` sends.
schedule = ""          # e.g. "0 9 * * FRI"
timezone = "UTC"       # e.g. "Europe/Berlin", "Asia/Almaty"
# No ready items at the slot: "skip" the week (recorded) or "send_anyway".
on_empty = "skip"
# A slot missed while Herald was down fires if younger than this (0s to 30d).
catch_up = "6h"
# Random delay after each slot, chosen once per slot (0s to 24h).
jitter = "0s"
# Compose this long before the slot and mail a [TEST] copy to the editors;
# they can change and recompose, hold or cancel it until the slot (0s = off).
preview_before = "0s"
preview_to = []        # e.g. ["editor@example.com"]

[subscribe]
confirm_ttl = "7d"
resend_interval = "10m"
per_ip_per_hour = 20
consent_text_version = "subscribe-form-v1"

[delivery]
# Waits between attempts after a temporary failure; the last one repeats.
# At most 100 waits, each from 1s to 30d.
retry_schedule = "5m,15m,30m,1h,2h,4h"
give_up_after = "72h"
lease = "5m"
# How long delivery rides out an unreachable database before `herald serve`
# exits non-zero for its supervisor to restart it (1s to 7d).
max_outage = "10m"
# How long the relay may stay unreachable before the issue being sent is
# paused with the reason (1s to 7d); `herald resume N` goes on.
relay_down_pause_after = "15m"

[render]
# A stylesheet that replaces the built-in look (empty: emails/digest.css).
css_file = ""
# An issue whose HTML passes Gmail's 102 KB clipping point: "warn" or "refuse".
clip_limit = "warn"
# After each summary: "link" ("Read in OUTLET →"), "button" (the same words
# on a button, full width on phones; about 450 bytes more per item) or "none"
# (the headline is the only link).
read_more = "link"
# The "In this issue" list of headlines: "auto" (from 4 items), "always", "never".
overview = "auto"

[bounce]
# Reports that arrive after the relay accepted a message: bounces (DSNs) and
# complaints (feedback loops). With a domain, each message's envelope sender
# is b-TOKEN@domain (VERP), so every report names its delivery exactly.
domain = ""            # e.g. "bounces.example.org" (its MX: this host)
# SMTP receiver for that domain, started by `herald serve` (empty: none).
listen = ""            # e.g. "0.0.0.0:25" or "127.0.0.1:2526"
# A mailbox that collects reports, polled by `herald serve` (empty: none).
imap_url = ""          # e.g. "imaps://bounces:PASSWORD@imap.example.org/INBOX"
imap_poll_interval = "1m"
# Processed messages are moved there (created when missing); refused ones
# also carry the keyword $HeraldRefused.
imap_done_folder = "Herald/Processed"
# PEM with the CA of an IMAP server whose certificate a private CA signed.
imap_ca_file = ""
# How long each report's raw message is kept for `herald bounces show` (0s to 3650d).
keep_raw = "30d"

[log]
# "text" (one readable line per event) or "json" (one object per line, for
# log collectors). Addresses appear masked (a***@example.org) below debug.
format = "text"
# A level or tracing directives ("info,herald::delivery=debug"); the
# HERALD_LOG environment variable, when set, wins.
level = "info,sqlx=warn"
# Export traces (request, scheduler and delivery spans) to an OpenTelemetry
# collector over OTLP/HTTP, e.g. "http://127.0.0.1:4318". Empty: no export.
otlp_endpoint = ""

[webhooks]
# Bounce and complaint events from the provider you relay through, posted to
# {{base_url}}/webhooks/ses, /postmark, /mailgun or /sendgrid. Empty keys: that
# endpoint is off (404).
# Amazon SES via SNS: the topic SES publishes bounces and complaints to
# (the subscription is confirmed automatically once its signature verifies).
ses_topic_arn = ""     # e.g. "arn:aws:sns:eu-west-1:123456789012:herald-bounces"
# Postmark: the webhook's HTTP Basic auth user and password.
postmark_user = ""
postmark_password = ""
# Mailgun: Sending > Webhooks > HTTP webhook signing key.
mailgun_signing_key = ""
# SendGrid: Mail Settings > Signed Event Webhook > Verification Key (base64).
sendgrid_public_key = ""
# How old a signed timestamp may be before the event is refused (1m to 7d).
max_age = "1h"
# FOR TESTS ONLY: let SNS certificates come from this prefix instead of
# https://sns.<region>.amazonaws.com/. Never set it in production.
ses_cert_url_prefix = ""

# [dkim]
# domain = "example.com"
# selector = "herald"
# private_key_file = "dkim.pem"   # PKCS#1 or PKCS#8 PEM (herald dkim generate)
# # Optional second signature with Ed25519 (RFC 8463), its own selector and DNS record
# # (herald dkim generate --algorithm ed25519 --selector herald-ed --out dkim-ed25519.pem):
# ed25519_selector = "herald-ed"
# ed25519_private_key_file = "dkim-ed25519.pem"
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
            .merge(Toml::string(&sample_toml(&Secret::generate().to_text())))
            .extract()
            .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.security.secret.len(), 43);
    }

    #[test]
    fn log_section_and_metrics_token_parse_and_bad_values_are_named() {
        figment::Jail::expect_with(|jail| {
            let log = Config::load_log(None).unwrap();
            assert_eq!(log.format, LogFormat::Text);
            assert_eq!(log.otlp_endpoint.traces_url(), None);
            jail.set_env("HERALD_LOG_FORMAT", "json");
            jail.set_env("HERALD_LOG_LEVEL", "warn,herald::delivery=debug");
            jail.set_env("HERALD_LOG_OTLP_ENDPOINT", "http://127.0.0.1:4318/");
            let cfg = Config::load(None).unwrap();
            assert_eq!(cfg.log.format, LogFormat::Json);
            assert_eq!(cfg.log.level.as_str(), "warn,herald::delivery=debug");
            assert_eq!(
                cfg.log.otlp_endpoint.traces_url().as_deref(),
                Some("http://127.0.0.1:4318/v1/traces")
            );
            assert_eq!(Config::load_log(None).unwrap().format, LogFormat::Json);
            for (key, env, value, good) in [
                ("log.format", "HERALD_LOG_FORMAT", "yaml", "text"),
                ("log.level", "HERALD_LOG_LEVEL", "herald=loud", "info"),
                (
                    "log.otlp_endpoint",
                    "HERALD_LOG_OTLP_ENDPOINT",
                    "collector:4318",
                    "",
                ),
            ] {
                jail.set_env(env, value);
                let err = Config::load(None).unwrap_err().to_string();
                assert!(err.contains(key) && err.contains(value), "{err}");
                assert!(err.contains("expected"), "{err}");
                jail.set_env(env, good);
            }
            jail.set_env("HERALD_HTTP_METRICS_TOKEN", "short-token");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("http.metrics_token") && !err.contains("short-token"),
                "{err}"
            );
            jail.set_env(
                "HERALD_HTTP_METRICS_TOKEN",
                "a-long-enough-metrics-token-123",
            );
            let cfg = Config::load(None).unwrap();
            assert_eq!(cfg.http.metrics_token.len(), 31);
            Ok(())
        });
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
            assert_eq!(cfg.newsletter.from.to_string(), "News <news@example.com>");
            assert_eq!(cfg.delivery.retry_schedule.to_string(), "1m,2m");
            assert_eq!(cfg.smtp.envelope_from, None);
            jail.set_env("HERALD_SMTP_ENVELOPE_FROM", "bounces@example.com");
            let cfg = Config::load(None).unwrap();
            assert_eq!(
                cfg.smtp.envelope_from.map(|a| a.to_string()).as_deref(),
                Some("bounces@example.com")
            );
            jail.set_env("HERALD_SMTP_ENVELOPE_FROM", "not an address");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("smtp.envelope_from"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn env_vars_of_other_tools_are_not_configuration() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_BIN", "/usr/local/bin/herald");
            jail.set_env("HERALD_TEST_WHATEVER", "1");
            jail.set_env("HERALD_SMTP_CONCURRENCY", "3");
            assert_eq!(Config::load(None).unwrap().smtp.concurrency, 3);
            jail.set_env("HERALD_SMTP_CONCURENCY", "3");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("concurency"), "{err}");
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

    #[test]
    fn newsletter_language_is_a_parsed_tag_under_either_spelling() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(
                Config::load(None).unwrap().newsletter.language().as_str(),
                "en"
            );
            jail.create_file("herald.toml", "[newsletter]\nlang = \"kk\"\n")?;
            let cfg = Config::load(Some(std::path::Path::new("herald.toml"))).unwrap();
            assert_eq!(cfg.newsletter.language().as_str(), "kk", "the older key");
            jail.set_env("HERALD_NEWSLETTER_LANGUAGE", "RU");
            let err = Config::load(Some(std::path::Path::new("herald.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("newsletter.lang") && err.contains("keep only"),
                "{err}"
            );
            jail.create_file("herald.toml", "")?;
            let cfg = Config::load(Some(std::path::Path::new("herald.toml"))).unwrap();
            assert_eq!(cfg.newsletter.language().as_str(), "ru");
            jail.set_env("HERALD_NEWSLETTER_LANGUAGE", "russian please");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("newsletter.language")
                    && err.contains("russian please")
                    && err.contains("BCP 47"),
                "{err}"
            );
            jail.set_env("HERALD_NEWSLETTER_LANGUAGE", "en");
            jail.set_env("HERALD_RENDER_READ_MORE", "banner");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("render.read_more") && err.contains("banner"),
                "{err}"
            );
            Ok(())
        });
    }

    fn load_err(jail: &mut figment::Jail, var: &str, value: &str) -> String {
        jail.clear_env();
        jail.set_env(var, value);
        Config::load(None).unwrap_err().to_string()
    }

    #[test]
    fn ca_file_and_tls_insecure_errors_name_the_key_and_the_fix() {
        figment::Jail::expect_with(|jail| {
            let err = load_err(jail, "HERALD_SMTP_TLS_INSECURE", "maybe");
            assert_eq!(
                err,
                "invalid configuration: smtp.tls_insecure = \"maybe\": expected true or false (true only for test setups) (from HERALD_SMTP_TLS_INSECURE)"
            );
            let err = load_err(jail, "HERALD_SMTP_CA_FILE", "company-ca.pem");
            assert!(
                err.contains("smtp.ca_file: cannot read company-ca.pem")
                    && err.contains("expected a readable PEM file"),
                "{err}"
            );
            jail.create_file("empty.pem", "no certificate here\n")?;
            let err = load_err(jail, "HERALD_SMTP_CA_FILE", "empty.pem");
            assert!(
                err.contains("smtp.ca_file: empty.pem holds no certificate"),
                "{err}"
            );
            jail.clear_env();
            jail.set_env("HERALD_SMTP_CA_FILE", "");
            jail.set_env("HERALD_SMTP_TLS_INSECURE", "true");
            let cfg = Config::load(None).expect("empty ca_file is none");
            assert!(cfg.smtp.ca_file.is_none() && cfg.smtp.tls_insecure);
            Ok(())
        });
    }

    #[test]
    fn unreadable_numbers_name_key_value_range_and_variable() {
        figment::Jail::expect_with(|jail| {
            let err = load_err(jail, "HERALD_SMTP_CONCURRENCY", "many");
            assert_eq!(
                err,
                "invalid configuration: smtp.concurrency = \"many\": expected a whole number from 1 to 512 (from HERALD_SMTP_CONCURRENCY)"
            );
            let err = load_err(jail, "HERALD_DELIVERY_BATCH_SIZE", "-1");
            assert!(
                err.contains("delivery.batch_size = -1: expected a whole number from 1 to 10000"),
                "{err}"
            );
            let err = load_err(
                jail,
                "HERALD_DELIVERY_BATCH_SIZE",
                "99999999999999999999999",
            );
            assert!(err.contains("delivery.batch_size"), "{err}");
            let err = load_err(jail, "HERALD_DELIVERY_BATCH_SIZE", "4000000000");
            assert_eq!(
                err,
                "invalid configuration: delivery.batch_size = \"4000000000\": expected a whole number from 1 to 10000"
            );
            let err = load_err(jail, "HERALD_SMTP_RATE", "1e-20");
            assert!(
                err.contains("smtp.rate") && err.contains("between 0.001 and 100000"),
                "{err}"
            );
            let err = load_err(jail, "HERALD_SMTP_RATE", "NaN");
            assert!(err.contains("smtp.rate"), "{err}");
            let err = load_err(jail, "HERALD_DELIVERY_RETRY_SCHEDULE", "1000000y");
            assert!(
                err.contains("delivery.retry_schedule") && err.contains("1s to 30d"),
                "{err}"
            );
            let err = load_err(jail, "HERALD_DELIVERY_LEASE", "0s");
            assert!(err.contains("delivery.lease = \"0s\""), "{err}");
            jail.clear_env();
            jail.create_file("herald.toml", "[database]\nmax_connections = 0\n")?;
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains(
                    "database.max_connections = \"0\": expected a whole number from 1 to 1000"
                ),
                "{err}"
            );
            jail.create_file("herald.toml", "[database]\nmax_connections = -3\n")?;
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("database.max_connections = -3") && err.contains("herald.toml"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn secret_and_hello_name_are_checked() {
        figment::Jail::expect_with(|jail| {
            let err = load_err(jail, "HERALD_SECURITY_SECRET", "x");
            assert!(
                err.contains("security.secret")
                    && err.contains("at least 32 bytes")
                    && err.contains("openssl rand"),
                "{err}"
            );
            jail.set_env("HERALD_SECURITY_SECRET", "");
            assert!(Config::load(None).unwrap().security.secret.is_empty());
            for bad in [
                "mail.example.com\r\nRCPT TO:<x@y>",
                "two words",
                "-x.example",
                "[1.2.3]",
                "a..b",
            ] {
                let err = load_err(jail, "HERALD_SMTP_HELLO_NAME", bad);
                assert!(err.contains("smtp.hello_name"), "{bad:?}: {err}");
            }
            for literal in ["[192.0.2.1]", "[IPv6:2001:db8::1]"] {
                jail.set_env("HERALD_SMTP_HELLO_NAME", literal);
                assert_eq!(Config::load(None).unwrap().smtp.hello_name, literal);
            }
            for good in [
                "mail.example.com",
                "localhost",
                "[192.0.2.1]",
                "[IPv6:2001:db8::1]",
                "xn--bcher-kva.example",
            ] {
                let mut cfg = Config::default();
                cfg.smtp.hello_name = good.into();
                cfg.validate().unwrap();
            }
            Ok(())
        });
    }

    #[test]
    fn debug_of_a_config_shows_no_secret() {
        let mut cfg = Config::default();
        cfg.database.url = "postgres://bob:db-Pa55@db/herald".into();
        cfg.smtp.url = "smtp://bob:smtp-Pa55@relay:587".parse().unwrap();
        cfg.security.secret = "hmac-key-0123456789abcdef0123456789".into();
        let shown = format!("{cfg:?}");
        for secret in ["db-Pa55", "smtp-Pa55", "hmac-key"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("Secret(***)") && shown.contains("bob:***@db"),
            "{shown}"
        );
    }

    #[test]
    fn redact_url_hides_passwords_in_any_shape() {
        for (url, shown) in [
            ("mysql://bob:hunter2@db/x", "mysql://bob:***@db/x"),
            ("bob:hunter2@db/x", "bob:***@db/x"),
            (
                "postgres://bob:p@ss:w@db:5432/x",
                "postgres://bob:***@db:5432/x",
            ),
            (
                "postgres://db/x?user=bob&password=hunter2",
                "postgres://db/x?user=bob&password=***",
            ),
            ("sqlite://herald.db", "sqlite://herald.db"),
            ("smtp://relay:25", "smtp://relay:25"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn webhook_keys_are_checked_by_name() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_WEBHOOKS_SES_TOPIC_ARN", "herald-bounces");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("webhooks.ses_topic_arn") && err.contains("arn:aws:sns:"),
                "{err}"
            );
            jail.set_env(
                "HERALD_WEBHOOKS_SES_TOPIC_ARN",
                "arn:aws:sns:eu-west-1:123456789012:herald-bounces",
            );
            jail.set_env("HERALD_WEBHOOKS_SENDGRID_PUBLIC_KEY", "bm90IGEga2V5");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("sendgrid_public_key") && err.contains("Verification Key"),
                "{err}"
            );
            jail.set_env("HERALD_WEBHOOKS_SENDGRID_PUBLIC_KEY", "");
            jail.set_env("HERALD_WEBHOOKS_POSTMARK_USER", "hook");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("webhooks.postmark_user") && err.contains("postmark_password"),
                "{err}"
            );
            jail.set_env(
                "HERALD_WEBHOOKS_POSTMARK_PASSWORD",
                "pm-webhook-password-123",
            );
            jail.set_env("HERALD_WEBHOOKS_MAILGUN_SIGNING_KEY", "short-key");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("webhooks.mailgun_signing_key") && !err.contains("short-key"),
                "{err}"
            );
            jail.set_env(
                "HERALD_WEBHOOKS_MAILGUN_SIGNING_KEY",
                "mailgun-signing-key-0123456789",
            );
            jail.set_env("HERALD_WEBHOOKS_MAX_AGE", "5s");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("webhooks.max_age") && err.contains("1m to 7d"),
                "{err}"
            );
            jail.set_env("HERALD_WEBHOOKS_MAX_AGE", "2h");
            let cfg = Config::load(None).unwrap();
            let shown = format!("{:?}", cfg.webhooks);
            assert!(
                !shown.contains("pm-webhook-password") && !shown.contains("mailgun-signing-key"),
                "{shown}"
            );
            Ok(())
        });
    }
}

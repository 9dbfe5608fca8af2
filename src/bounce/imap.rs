//! IMAP polling of a bounce mailbox (`bounce.imap_url`): for the setups where
//! reports land in an ordinary mailbox rather than at Herald's SMTP receiver.
//!
//! Each poll logs in, selects the mailbox and takes its oldest messages in
//! batches of [`BATCH`]. Every message is first sized (`RFC822.SIZE`; over
//! [`MAX_REPORT_BYTES`] it is not downloaded), then fetched with
//! `BODY.PEEK[]` (bounded again by a partial fetch, should the server
//! misstate the size), parsed and handed to `App::apply_report`. Only when
//! that has answered (recorded, duplicate, or refused as bad input) is the
//! message marked processed, by moving it to `bounce.imap_done_folder`
//! (`MOVE` when offered, else `COPY` + `\Deleted` + `EXPUNGE`); a refused
//! or oversized message also gets the keyword `$HeraldRefused` first, so
//! people can find it there. So a crash between recording and moving
//! reprocesses a message rather than losing it, and reprocessing is
//! harmless: the report carries `imap://HOST:PORT/MAILBOX;UIDVALIDITY=V/;UID=U`
//! (RFC 5092) as its `provider_event_id` unless the parser gave it one,
//! and `apply_report` records one report per event id. A report that could
//! not be recorded now (`BounceError::Unavailable`: the database) stays in
//! the mailbox; the poll stops there and is retried.
//!
//! Moving rather than flagging keeps the polled mailbox small (each poll
//! reads only what is new, with no search over years of processed mail) and
//! works on servers without keywords.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_imap::types::Fetch;
use futures::TryStreamExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use super::{Applied, BounceError, MAX_REPORT_BYTES, parse_report_async};
use crate::app::App;
use crate::domain::{ReportSource, Secret};
use crate::mail::TlsTrust;
use crate::mail::smtp_url::percent_encode;
use crate::readiness::ComponentState;

/// The name the poller reports under in `Readiness` (`GET /readyz`).
pub const READINESS_COMPONENT: &str = "bounce-imap";
/// Messages sized and listed at a time; a poll goes on batch after batch
/// until the mailbox is empty.
pub const BATCH: u32 = 50;
/// The keyword a refused or oversized message gets before it is moved.
pub const REFUSED_KEYWORD: &str = "$HeraldRefused";
/// What `bounce_reports.provider_event_id` keeps (`apply_report` cuts longer ones).
const MAX_EVENT_ID_CHARS: usize = 255;
/// Longest wait for one IMAP step (connect, a command, a message's body).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a poll may go on after shutdown was asked for (it stops between messages).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The first retry after a failed poll; doubled each time, up to the poll interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// bounce.imap_url

/// Where the bounce mailbox is. `Debug` never shows the password; there is no `Display`
/// with it either (`describe` leaves it out).
#[derive(Clone)]
pub struct ImapEndpoint {
    pub host: String,
    pub port: u16,
    /// `imaps://`: TLS from the first byte. `imap://`: plain TCP (a trusted network only).
    pub tls: bool,
    pub user: String,
    pub password: Secret,
    /// The mailbox polled, percent-decoded (`INBOX` when the URL has no path).
    pub mailbox: String,
}

impl PartialEq for ImapEndpoint {
    fn eq(&self, other: &Self) -> bool {
        (&self.host, self.port, self.tls, &self.user, &self.mailbox)
            == (
                &other.host,
                other.port,
                other.tls,
                &other.user,
                &other.mailbox,
            )
            && self.password.expose_text() == other.password.expose_text()
    }
}
impl Eq for ImapEndpoint {}

impl ImapEndpoint {
    /// `imaps://user@host:993/INBOX`: no password.
    pub fn describe(&self) -> String {
        format!(
            "{}://{}@{}/{}",
            self.scheme(),
            self.user,
            self.host_port(),
            self.mailbox
        )
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "imaps" } else { "imap" }
    }

    fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The id of one message of this mailbox while `uid_validity` holds (RFC 5092 form).
    /// `bounce_reports.provider_event_id` keeps 255 characters and the UID comes last, so a
    /// longer one names the mailbox by a hash instead: cut short, two messages would share it.
    pub fn message_id(&self, uid_validity: u32, uid: u32) -> String {
        let mailbox = format!("{}://{}/{}", self.scheme(), self.host_port(), self.mailbox);
        let id = format!("{mailbox};UIDVALIDITY={uid_validity}/;UID={uid}");
        if id.chars().count() <= MAX_EVENT_ID_CHARS {
            return id;
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(mailbox.as_bytes());
        format!(
            "imap-sha256:{};UIDVALIDITY={uid_validity}/;UID={uid}",
            hex::encode(&digest[..16])
        )
    }

    /// The URL that parses back into this endpoint, password included: only for handing the
    /// configuration on (figment's defaults), never for printing.
    fn to_url(&self) -> String {
        format!(
            "{}://{}:{}@{}/{}",
            self.scheme(),
            percent_encode(&self.user),
            percent_encode(&self.password.expose_text()),
            self.host_port(),
            percent_encode(&self.mailbox)
        )
    }
}

impl fmt::Debug for ImapEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `bounce.imap_url` as configured: empty (no polling) or a mailbox parsed once at load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImapUrl(pub Option<ImapEndpoint>);

impl ImapUrl {
    pub fn endpoint(&self) -> Option<&ImapEndpoint> {
        self.0.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// Why `bounce.imap_url` was not accepted. Messages never contain the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImapUrlError {
    #[error("expected imaps:// or imap://, found {found}")]
    Scheme { found: String },
    #[error(
        "missing credentials: expected USER:PASSWORD@ before the host (percent-encode `:`, `@` and `/` inside them)"
    )]
    Credentials,
    #[error("missing host: expected imaps://USER:PASS@HOST[:PORT]/MAILBOX")]
    MissingHost,
    #[error("invalid port `{port}`: expected a number from 1 to 65535")]
    Port { port: String },
    #[error("{0}")]
    PercentEncoding(String),
    #[error(
        "the mailbox must not contain control characters or `\"`; expected a name such as INBOX or Bounces"
    )]
    Mailbox,
    #[error("unexpected query `?{query}`: imap URLs take no parameters")]
    Query { query: String },
}

impl FromStr for ImapUrl {
    type Err = ImapUrlError;

    fn from_str(s: &str) -> Result<Self, ImapUrlError> {
        if s.trim().is_empty() {
            Ok(ImapUrl(None))
        } else {
            s.parse().map(|e| ImapUrl(Some(e)))
        }
    }
}

impl FromStr for ImapEndpoint {
    type Err = ImapUrlError;

    fn from_str(input: &str) -> Result<Self, ImapUrlError> {
        let decode = |s: &str, part| {
            crate::mail::smtp_url::percent_decode(s, part)
                .map_err(|e| ImapUrlError::PercentEncoding(e.to_string()))
        };
        let input = input.trim();
        let Some((scheme, rest)) = input.split_once("://") else {
            // No scheme: show at most the part after any `@` so a password cannot leak.
            let shown = input.rsplit('@').next().unwrap_or_default();
            return Err(ImapUrlError::Scheme {
                found: format!("`{shown}` (no scheme)"),
            });
        };
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "imaps" => true,
            "imap" => false,
            other => {
                return Err(ImapUrlError::Scheme {
                    found: format!("{other}://…"),
                });
            }
        };
        if let Some((_, query)) = rest.split_once('?') {
            return Err(ImapUrlError::Query {
                query: query.to_owned(),
            });
        }
        // The password may hold a `/` only percent-encoded, so the first `/` after the last
        // `@` ends the authority.
        let at = rest.rfind('@').ok_or(ImapUrlError::Credentials)?;
        let (userinfo, after) = (&rest[..at], &rest[at + 1..]);
        let (hostport, path) = match after.find('/') {
            Some(i) => (&after[..i], &after[i + 1..]),
            None => (after, ""),
        };
        let (user, pass) = userinfo.split_once(':').ok_or(ImapUrlError::Credentials)?;
        if user.is_empty() {
            return Err(ImapUrlError::Credentials);
        }
        let user = decode(user, "user name")?;
        let password = Secret::from(decode(pass, "password")?);
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(ImapUrlError::MissingHost)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').unwrap_or(p)),
            };
            (h, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(ImapUrlError::MissingHost);
        }
        let port = match port {
            None if tls => 993,
            None => 143,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(ImapUrlError::Port {
                        port: p.to_string(),
                    });
                }
            },
        };
        let mailbox = match decode(path.trim_end_matches('/'), "mailbox")? {
            m if m.is_empty() => "INBOX".to_owned(),
            m => m,
        };
        if mailbox.chars().any(|c| c.is_control() || c == '"') {
            return Err(ImapUrlError::Mailbox);
        }
        Ok(ImapEndpoint {
            host: host.to_owned(),
            port,
            tls,
            user,
            password,
            mailbox,
        })
    }
}

impl<'de> serde::Deserialize<'de> for ImapUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| {
            serde::de::Error::custom(format!(
                "{:?}: {e} (expected imaps://USER:PASS@HOST[:PORT]/MAILBOX, imap:// on a trusted network, or empty)",
                crate::config::redact_url(&s)
            ))
        })
    }
}

impl serde::Serialize for ImapUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            &self
                .0
                .as_ref()
                .map(ImapEndpoint::to_url)
                .unwrap_or_default(),
        )
    }
}

// ---------------------------------------------------------------------------
// Errors

/// Why a poll failed. Each message names the key to look at; none shows the password.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("bounce.imap_url is empty: set it to imaps://USER:PASS@HOST/MAILBOX to poll a mailbox")]
    NotConfigured,
    #[error(
        "cannot reach the IMAP server {at} ({reason}); check the host and port in bounce.imap_url and that the server runs"
    )]
    Connect { at: String, reason: String },
    #[error("TLS with the IMAP server {at} failed: {reason}")]
    Tls { at: String, reason: String },
    #[error(
        "the IMAP server {at} refused the login of user {user:?} ({reply}); check the user name and password in bounce.imap_url"
    )]
    Login {
        at: String,
        user: String,
        reply: String,
    },
    #[error(
        "cannot select the mailbox {mailbox:?} on {at} ({reply}); check the mailbox at the end of bounce.imap_url"
    )]
    Mailbox {
        at: String,
        mailbox: String,
        reply: String,
    },
    #[error(
        "cannot create or use the folder {folder:?} on {at} ({reply}); set bounce.imap_done_folder to a folder the user may create"
    )]
    DoneFolder {
        at: String,
        folder: String,
        reply: String,
    },
    #[error("IMAP {doing} on {at} failed: {reason}; will retry")]
    Protocol {
        at: String,
        doing: &'static str,
        reason: String,
    },
    #[error("IMAP {doing} on {at} got no answer within {}s; will retry", STEP_TIMEOUT.as_secs())]
    Timeout { at: String, doing: &'static str },
    #[error("reports cannot be recorded now ({0}); they stay in the mailbox for the next poll")]
    Unavailable(String),
}

// ---------------------------------------------------------------------------
// One poll

/// What happened to one message of the mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `apply_report` recorded it (or found it recorded before: `ReportEffect::Duplicate`).
    Applied(Applied),
    /// Refused as bad input (not a report, malformed, a forged token): moved, with
    /// [`REFUSED_KEYWORD`].
    Refused(String),
    /// Bigger than [`MAX_REPORT_BYTES`]: not downloaded; moved, with [`REFUSED_KEYWORD`].
    Oversized(u64),
    /// Could not be recorded now: left in the mailbox; the poll stops here.
    Deferred(String),
}

/// One message handled by a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    pub uid: u32,
    pub size: u64,
    pub outcome: Outcome,
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollSummary {
    /// The mailbox as `imaps://user@host:port/MAILBOX`.
    pub mailbox: String,
    pub applied: usize,
    pub refused: usize,
    pub oversized: usize,
    /// Stopped (shutdown) with messages left for the next poll.
    pub stopped: bool,
}

impl PollSummary {
    pub fn processed(&self) -> usize {
        self.applied + self.refused + self.oversized
    }
}

type Stream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;
type Session = async_imap::Session<Stream>;

/// Runs `fut` with [`STEP_TIMEOUT`], turning both failures into an [`ImapError`].
async fn step<T>(
    at: &str,
    doing: &'static str,
    fut: impl std::future::Future<Output = async_imap::error::Result<T>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ImapError::Protocol {
            at: at.to_owned(),
            doing,
            reason: e.to_string(),
        }),
        Err(_) => Err(ImapError::Timeout {
            at: at.to_owned(),
            doing,
        }),
    }
}

impl App {
    /// One poll of `bounce.imap_url` now: every message in the mailbox, oldest first, until it
    /// is empty or `stop` is cancelled (checked between messages). `on_message` sees each
    /// message once it is handled (the CLI prints it, `herald serve` logs it).
    pub async fn poll_bounce_mailbox(
        &self,
        stop: &CancellationToken,
        mut on_message: impl FnMut(&Processed),
    ) -> Result<PollSummary, ImapError> {
        let ep = self
            .config
            .bounce
            .imap_url
            .endpoint()
            .ok_or(ImapError::NotConfigured)?;
        let trust = TlsTrust {
            ca_file: self.config.bounce.imap_ca_file.clone(),
            insecure: false,
        };
        let mut session = connect(ep, &trust).await?;
        let result = self
            .poll_session(&mut session, ep, stop, &mut on_message)
            .await;
        // A polite goodbye; the outcome is already decided.
        let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
        result
    }

    async fn poll_session(
        &self,
        session: &mut Session,
        ep: &ImapEndpoint,
        stop: &CancellationToken,
        on_message: &mut impl FnMut(&Processed),
    ) -> Result<PollSummary, ImapError> {
        let at = ep.host_port();
        let caps = step(&at, "CAPABILITY", session.capabilities()).await?;
        let can_move = caps.has_str("MOVE");
        let uidplus = caps.has_str("UIDPLUS");
        let done = done_folder(session, &at, &self.config.bounce.imap_done_folder).await?;
        let mailbox = tokio::time::timeout(STEP_TIMEOUT, session.select(&ep.mailbox))
            .await
            .map_err(|_| ImapError::Timeout {
                at: at.clone(),
                doing: "SELECT",
            })?
            .map_err(|e| match e {
                async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_) => {
                    ImapError::Mailbox {
                        at: at.clone(),
                        mailbox: ep.mailbox.clone(),
                        reply: server_words(&e),
                    }
                }
                other => lost(&at, "SELECT", other.to_string()),
            })?;
        let (mut exists, mut uid_validity) = selected(&at, &mailbox)?;
        let mut summary = PollSummary {
            mailbox: ep.describe(),
            ..PollSummary::default()
        };
        let marker = Marker {
            at: &at,
            done: &done,
            can_move,
            uidplus,
        };
        while exists > 0 {
            let listed = list_batch(session, &at, exists.min(BATCH)).await?;
            for (uid, size) in listed {
                if stop.is_cancelled() {
                    summary.stopped = true;
                    return Ok(summary);
                }
                let outcome = self
                    .handle_message(session, ep, &at, uid_validity, uid, size)
                    .await?;
                match &outcome {
                    Outcome::Deferred(why) => {
                        let why = why.clone();
                        on_message(&Processed { uid, size, outcome });
                        return Err(ImapError::Unavailable(why));
                    }
                    Outcome::Applied(_) => summary.applied += 1,
                    Outcome::Refused(_) => summary.refused += 1,
                    Outcome::Oversized(_) => summary.oversized += 1,
                }
                let refused = !matches!(outcome, Outcome::Applied(_));
                marker.mark(session, uid, refused).await?;
                on_message(&Processed { uid, size, outcome });
            }
            // What is left (new mail may have arrived meanwhile).
            let now = step(&at, "SELECT", session.select(&ep.mailbox)).await?;
            (exists, uid_validity) = selected(&at, &now)?;
        }
        Ok(summary)
    }

    async fn handle_message(
        &self,
        session: &mut Session,
        ep: &ImapEndpoint,
        at: &str,
        uid_validity: u32,
        uid: u32,
        size: u64,
    ) -> Result<Outcome, ImapError> {
        if size > MAX_REPORT_BYTES as u64 {
            return Ok(Outcome::Oversized(size));
        }
        // One byte past the limit tells a server that misstated the size.
        let query = format!("(UID BODY.PEEK[]<0.{}>)", MAX_REPORT_BYTES + 1);
        let fetched: Vec<Fetch> = step(at, "FETCH", async {
            session
                .uid_fetch(uid.to_string(), &query)
                .await?
                .try_collect()
                .await
        })
        .await?;
        // No body: the connection ended mid-answer (async-imap ends a FETCH quietly then), or
        // someone else expunged the message since the listing; either way the next poll sees.
        let Some(raw) = fetched
            .iter()
            .filter(|f| f.uid == Some(uid))
            .find_map(|f| f.body())
        else {
            return Err(lost(at, "FETCH", format!("no body came for UID {uid}")));
        };
        if raw.len() > MAX_REPORT_BYTES {
            return Ok(Outcome::Oversized(raw.len() as u64));
        }
        let mut report = match parse_report_async(raw).await {
            Ok(r) => r,
            Err(e) => return Ok(Outcome::Refused(e.to_string())),
        };
        if report.provider_event_id.is_none() {
            report.provider_event_id = Some(ep.message_id(uid_validity, uid));
        }
        Ok(
            match self
                .apply_report(report, ReportSource::Imap, Some(raw))
                .await
            {
                Ok(applied) => Outcome::Applied(applied),
                Err(BounceError::Rejected(why)) => Outcome::Refused(why),
                Err(e @ BounceError::Unavailable(_)) => Outcome::Deferred(e.to_string()),
            },
        )
    }
}

/// The oldest `count` messages' UIDs and sizes, oldest first.
async fn list_batch(
    session: &mut Session,
    at: &str,
    count: u32,
) -> Result<Vec<(u32, u64)>, ImapError> {
    let fetched: Vec<Fetch> = step(at, "FETCH", async {
        session
            .fetch(format!("1:{count}"), "(UID RFC822.SIZE)")
            .await?
            .try_collect()
            .await
    })
    .await?;
    let mut listed: Vec<(u32, u64)> = fetched
        .iter()
        .filter_map(|f| Some((f.uid?, u64::from(f.size?))))
        .collect();
    if listed.is_empty() {
        // async-imap ends a FETCH quietly when the connection drops.
        return Err(lost(
            at,
            "FETCH",
            format!("no answer for messages 1:{count}"),
        ));
    }
    listed.sort_unstable();
    Ok(listed)
}

/// (EXISTS, UIDVALIDITY) of a SELECT. Every server sends UIDVALIDITY (RFC 3501 §6.3.1);
/// without it the answer was cut short (async-imap ends a SELECT quietly on a dropped
/// connection, as if the mailbox were empty).
fn selected(at: &str, mailbox: &async_imap::types::Mailbox) -> Result<(u32, u32), ImapError> {
    match mailbox.uid_validity {
        Some(v) => Ok((mailbox.exists, v)),
        None => Err(lost(at, "SELECT", "the answer had no UIDVALIDITY".into())),
    }
}

fn lost(at: &str, doing: &'static str, what: String) -> ImapError {
    ImapError::Protocol {
        at: at.to_owned(),
        doing,
        reason: format!("{what}: the connection was lost or the server misbehaved"),
    }
}

/// How processed messages leave the polled mailbox.
struct Marker<'a> {
    at: &'a str,
    done: &'a str,
    can_move: bool,
    uidplus: bool,
}

impl Marker<'_> {
    async fn mark(&self, session: &mut Session, uid: u32, refused: bool) -> Result<(), ImapError> {
        let (at, uid) = (self.at, uid.to_string());
        if refused {
            // A server without keywords answers NO: the move still says "processed".
            let flagged = step(at, "STORE", async {
                let _ = session
                    .uid_store(&uid, format!("+FLAGS.SILENT ({REFUSED_KEYWORD})"))
                    .await?
                    .try_collect::<Vec<_>>()
                    .await?;
                Ok(())
            })
            .await;
            if let Err(e @ ImapError::Timeout { .. }) = flagged {
                return Err(e);
            }
        }
        if self.can_move {
            return step(at, "MOVE", session.uid_mv(&uid, self.done)).await;
        }
        step(at, "COPY", session.uid_copy(&uid, self.done)).await?;
        step(at, "STORE", async {
            let _ = session
                .uid_store(&uid, "+FLAGS.SILENT (\\Deleted)")
                .await?
                .try_collect::<Vec<_>>()
                .await?;
            Ok(())
        })
        .await?;
        if self.uidplus {
            step(at, "EXPUNGE", async {
                let _ = session
                    .uid_expunge(&uid)
                    .await?
                    .try_collect::<Vec<_>>()
                    .await?;
                Ok(())
            })
            .await?;
        } else {
            // Without UIDPLUS, EXPUNGE also removes what others marked \Deleted here: the
            // bounce mailbox is Herald's own.
            step(at, "EXPUNGE", async {
                let _ = session.expunge().await?.try_collect::<Vec<_>>().await?;
                Ok(())
            })
            .await?;
        }
        // STORE and EXPUNGE answers end quietly on a dropped connection; NOOP's does not.
        step(at, "NOOP", session.run_command_and_check_ok("NOOP")).await
    }
}

/// `bounce.imap_done_folder` in the server's own spelling (`/` becomes its hierarchy
/// delimiter), created when missing.
async fn done_folder(
    session: &mut Session,
    at: &str,
    configured: &str,
) -> Result<String, ImapError> {
    let root: Vec<_> = step(at, "LIST", async {
        session.list(Some(""), Some("")).await?.try_collect().await
    })
    .await?;
    let delimiter = root
        .first()
        .and_then(|n| n.delimiter())
        .unwrap_or("/")
        .to_owned();
    let folder = configured.replace('/', &delimiter);
    let found: Vec<_> = step(at, "LIST", async {
        session
            .list(Some(""), Some(&folder))
            .await?
            .try_collect()
            .await
    })
    .await?;
    if found.iter().any(|n| n.name() == folder) {
        return Ok(folder);
    }
    match tokio::time::timeout(STEP_TIMEOUT, session.create(&folder)).await {
        Ok(Ok(())) => {
            tracing::info!(folder = %folder, "created the IMAP folder for processed reports");
            Ok(folder)
        }
        Ok(Err(e @ (async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_)))) => {
            Err(ImapError::DoneFolder {
                at: at.to_owned(),
                folder,
                reply: server_words(&e),
            })
        }
        Ok(Err(e)) => Err(lost(at, "CREATE", e.to_string())),
        Err(_) => Err(ImapError::Timeout {
            at: at.to_owned(),
            doing: "CREATE",
        }),
    }
}

/// The server's own words of a NO/BAD, or the error.
fn server_words(e: &async_imap::error::Error) -> String {
    match e {
        async_imap::error::Error::No(s) | async_imap::error::Error::Bad(s) => s.trim().to_owned(),
        other => other.to_string(),
    }
}

/// Connects, reads the greeting and logs in.
async fn connect(ep: &ImapEndpoint, trust: &TlsTrust) -> Result<Session, ImapError> {
    let at = ep.host_port();
    let timeout = |doing| ImapError::Timeout {
        at: at.clone(),
        doing,
    };
    let tcp = tokio::time::timeout(
        STEP_TIMEOUT,
        TcpStream::connect((ep.host.as_str(), ep.port)),
    )
    .await
    .map_err(|_| timeout("connect"))?
    .map_err(|e| ImapError::Connect {
        at: at.clone(),
        reason: e.to_string(),
    })?;
    let stream: Stream = if ep.tls {
        let config = tls_config(trust).await?;
        let name = rustls::pki_types::ServerName::try_from(ep.host.clone()).map_err(|e| {
            ImapError::Tls {
                at: at.clone(),
                reason: format!("{e}; expected a host name or IP address in bounce.imap_url"),
            }
        })?;
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        Either::Right(
            tokio::time::timeout(STEP_TIMEOUT, tls)
                .await
                .map_err(|_| timeout("TLS handshake"))?
                .map_err(|e| ImapError::Tls {
                    at: at.clone(),
                    reason: tls_reason(&e),
                })?,
        )
    } else {
        Either::Left(tcp)
    };
    let mut client = async_imap::Client::new(stream);
    match tokio::time::timeout(STEP_TIMEOUT, client.read_response()).await {
        Err(_) => return Err(timeout("greeting")),
        Ok(Err(e)) => {
            return Err(ImapError::Protocol {
                at,
                doing: "greeting",
                reason: e.to_string(),
            });
        }
        Ok(Ok(None)) => {
            return Err(ImapError::Protocol {
                at,
                doing: "greeting",
                reason: "the server closed the connection".into(),
            });
        }
        Ok(Ok(Some(_))) => {}
    }
    let password = ep.password.expose_text();
    match tokio::time::timeout(STEP_TIMEOUT, client.login(&ep.user, &password)).await {
        Err(_) => Err(timeout("LOGIN")),
        Ok(Ok(session)) => Ok(session),
        Ok(Err((e @ (async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_)), _))) => {
            Err(ImapError::Login {
                at,
                user: ep.user.clone(),
                reply: server_words(&e),
            })
        }
        Ok(Err((e, _))) => Err(ImapError::Protocol {
            at,
            doing: "LOGIN",
            reason: e.to_string(),
        }),
    }
}

/// A rustls client trusting what Herald trusts for its relay, plus `bounce.imap_ca_file`.
async fn tls_config(trust: &TlsTrust) -> Result<Arc<rustls::ClientConfig>, ImapError> {
    let trust = trust.clone();
    // The system store is read from disk the first time.
    let roots = tokio::task::spawn_blocking(move || trust.root_store())
        .await
        .map_err(|e| ImapError::Tls {
            at: String::new(),
            reason: format!("loading the trust store failed: {e}"),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImapError::Tls {
            at: String::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn tls_reason(e: &std::io::Error) -> String {
    match crate::mail::trust::find_rustls_error(e) {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
            "the server's certificate is signed by an unknown CA (UnknownIssuer); if it is a company CA, set bounce.imap_ca_file to its PEM".into()
        }
        Some(rustls::Error::InvalidCertificate(c)) => format!(
            "the server's certificate was refused ({c:?}); connect by a name the certificate carries, or set bounce.imap_ca_file to the CA that signed it"
        ),
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The supervised poller of `herald serve`

/// Starts the poller when `bounce.imap_url` is set; it runs until `stop` is cancelled.
pub fn spawn(app: &App, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    app.config.bounce.imap_url.endpoint()?;
    Some(tokio::spawn(run(app.clone(), stop)))
}

/// Polls every `bounce.imap_poll_interval`. A failed poll is logged, shown on `/readyz` and
/// retried after 1 s, 2 s, 4 s … up to the poll interval; the poller never gives up (an
/// unreachable mailbox delays reports, it loses none, and delivery goes on).
pub async fn run(app: App, stop: CancellationToken) {
    let Some(ep) = app.config.bounce.imap_url.endpoint() else {
        return;
    };
    let interval = app.config.bounce.imap_poll_interval.0;
    let readiness = app.readiness.clone();
    readiness.report(READINESS_COMPONENT, ComponentState::Starting);
    tracing::info!(mailbox = %ep.describe(), every = ?interval, "polling the bounce mailbox");
    let mut retry = FIRST_RETRY;
    loop {
        // A poll stops between messages once `stop` is cancelled; a server that hangs is given
        // SHUTDOWN_GRACE, then the poll is dropped. Dropping is safe at any point: a report
        // half-recorded is rolled back with its transaction, a message not yet moved is read
        // again next time.
        let poll = app.poll_bounce_mailbox(&stop, log_message);
        let grace = async {
            stop.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let polled = tokio::select! {
            polled = poll => polled,
            _ = grace => {
                tracing::warn!("the bounce mailbox poll did not end in time at shutdown; dropped");
                break;
            }
        };
        let wait = match polled {
            Ok(summary) => {
                if summary.processed() > 0 {
                    tracing::info!(
                        mailbox = %summary.mailbox,
                        applied = summary.applied,
                        refused = summary.refused,
                        oversized = summary.oversized,
                        "bounce mailbox polled"
                    );
                }
                readiness.report(READINESS_COMPONENT, ComponentState::Running);
                retry = FIRST_RETRY;
                interval
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "polling the bounce mailbox failed");
                readiness.report(READINESS_COMPONENT, ComponentState::Degraded(e.to_string()));
                let wait = retry;
                retry = (retry * 2).min(interval);
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    readiness.report(READINESS_COMPONENT, ComponentState::Stopped);
}

fn log_message(p: &Processed) {
    match &p.outcome {
        Outcome::Applied(a) => tracing::info!(
            uid = p.uid,
            report = a.report_id,
            effect = ?a.effect,
            "bounce report from the mailbox recorded"
        ),
        Outcome::Refused(why) => tracing::warn!(
            uid = p.uid,
            reason = %why,
            "bounce mailbox message refused; moved with {REFUSED_KEYWORD}"
        ),
        Outcome::Oversized(size) => tracing::warn!(
            uid = p.uid,
            size,
            limit = MAX_REPORT_BYTES,
            "bounce mailbox message over the size limit, not read; moved with {REFUSED_KEYWORD}"
        ),
        Outcome::Deferred(why) => tracing::warn!(
            uid = p.uid,
            reason = %why,
            "bounce report not recorded now; left in the mailbox"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_an_operator_writes() {
        let ep: ImapEndpoint = "imaps://bounces:p%40ss%2Fw@imap.example.org/INBOX"
            .parse()
            .unwrap();
        assert_eq!(
            (ep.host.as_str(), ep.port, ep.tls, ep.user.as_str()),
            ("imap.example.org", 993, true, "bounces")
        );
        assert_eq!(ep.password.expose_text(), "p@ss/w");
        assert_eq!(ep.mailbox, "INBOX");
        let ep: ImapEndpoint = "imap://u:p@[::1]:1143".parse().unwrap();
        assert_eq!((ep.host.as_str(), ep.port, ep.tls), ("::1", 1143, false));
        assert_eq!(ep.mailbox, "INBOX", "no path means INBOX");
        let ep: ImapEndpoint = "imaps://u:p@h/Bounces%20FBL/".parse().unwrap();
        assert_eq!(ep.mailbox, "Bounces FBL");
        assert_eq!(ep.port, 993);
    }

    #[test]
    fn round_trips_through_its_url() {
        let url: ImapUrl = "imaps://a%3Ab:p%40ss@imap.example.org:1993/Bounces%2FIn"
            .parse()
            .unwrap();
        let text = serde_json::to_value(&url).unwrap();
        let back: ImapUrl = serde_json::from_value(text).unwrap();
        assert_eq!(back, url);
        assert!("".parse::<ImapUrl>().unwrap().is_empty());
    }

    #[test]
    fn errors_never_show_the_password() {
        for bad in [
            "imaps://imap.example.org/INBOX",
            "imaps://:hunter2secret@imap.example.org/INBOX",
            "imaps://u:hunter2secret@imap.example.org:0/INBOX",
            "imaps://u:hunter2secret@imap.example.org:99999/INBOX",
            "imaps://u:hunter2secret@/INBOX",
            "pop3://u:hunter2secret@h/INBOX",
            "u:hunter2secret@h/INBOX",
            "imaps://u:hunter2secret@h/INBOX?tls=none",
            "imaps://u:hunter2%zzsecret@h/INBOX",
        ] {
            let err = bad.parse::<ImapUrl>().unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{bad}: {err}");
            let shown = serde_json::from_value::<ImapUrl>(serde_json::Value::String(bad.into()))
                .unwrap_err()
                .to_string();
            assert!(
                !shown.contains("hunter2") && shown.contains("imaps://USER:PASS@HOST"),
                "{bad}: {shown}"
            );
        }
    }

    #[test]
    fn debug_and_describe_hide_the_password() {
        let url: ImapUrl = "imaps://bob:hunter2secret@imap.example.org/INBOX"
            .parse()
            .unwrap();
        let shown = format!("{url:?} {}", url.endpoint().unwrap().describe());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("imaps://bob@imap.example.org:993/INBOX"),
            "{shown}"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
    fn config_errors_name_the_key_and_never_the_password() {
        use crate::config::Config;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env(
                "HERALD_BOUNCE_IMAP_URL",
                "pop3://bob:hunter2secret@mail.example.org/",
            );
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("bounce.imap_url")
                    && err.contains("imaps://USER:PASS@HOST")
                    && !err.contains("hunter2"),
                "{err}"
            );
            jail.set_env(
                "HERALD_BOUNCE_IMAP_URL",
                "imaps://bob:hunter2secret@mail.example.org/Bounces",
            );
            for (folder, why) in [
                ("", "empty"),
                ("Bounces", "the polled mailbox"),
                ("a*b", "wildcard"),
            ] {
                jail.set_env("HERALD_BOUNCE_IMAP_DONE_FOLDER", folder);
                let err = Config::load(None).unwrap_err().to_string();
                assert!(
                    err.contains("bounce.imap_done_folder") && !err.contains("hunter2"),
                    "{why}: {err}"
                );
            }
            jail.set_env("HERALD_BOUNCE_IMAP_DONE_FOLDER", "Herald/Done");
            let config = Config::load(None).expect("a valid mailbox setup");
            let ep = config.bounce.imap_url.endpoint().expect("parsed");
            assert_eq!((ep.mailbox.as_str(), ep.port), ("Bounces", 993));
            assert!(!format!("{config:?}").contains("hunter2"));
            jail.set_env("HERALD_BOUNCE_IMAP_CA_FILE", "no-such-ca.pem");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("bounce.imap_ca_file") && err.contains("no-such-ca.pem"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn message_ids_follow_rfc_5092() {
        let ep: ImapEndpoint = "imaps://u:p@imap.example.org/INBOX".parse().unwrap();
        assert_eq!(
            ep.message_id(1_700_000_000, 42),
            "imaps://imap.example.org:993/INBOX;UIDVALIDITY=1700000000/;UID=42"
        );
        let long: ImapEndpoint = format!("imaps://u:p@imap.example.org/{}", "Bounces".repeat(40))
            .parse()
            .unwrap();
        let (a, b) = (
            long.message_id(7, 4_294_967_295),
            long.message_id(7, 4_294_967_294),
        );
        assert!(a.len() <= MAX_EVENT_ID_CHARS && a != b, "{a}");
        assert!(a.ends_with(";UIDVALIDITY=7/;UID=4294967295"), "{a}");
    }
}

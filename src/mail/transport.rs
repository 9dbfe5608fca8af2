//! One transport abstraction for every mail Herald sends: a file outbox (one `.eml` per
//! message, via lettre's `AsyncFileTransport`) or an SMTP relay.
//!
//! # Connection reuse (lettre 0.11 findings)
//!
//! lettre's `AsyncSmtpConnection::send` wraps every command in `try_smtp!`, which calls
//! `abort()` on **any** error: a 4xx/5xx to RCPT (or MAIL, DATA) sends QUIT and marks the
//! connection broken, so each rejected recipient would cost a reconnect; the pool additionally
//! NOOP-pings before every reuse. [`MailConnection`] therefore drives the transaction itself with
//! the public `AsyncSmtpConnection::command` (`MAIL`, `RCPT`, `DATA`) and `message` methods,
//! which do *not* abort on a negative reply. After a rejection it sends `RSET` and keeps the
//! connection; after a `421` (the server is closing), a network error, a timeout, or a failed
//! `RSET` it drops the connection and the next send reconnects.
//!
//! Unlike the pool, a reused connection is not NOOP-pinged before every message, only when it
//! has been idle for [`DEFAULT_IDLE_CHECK`] or longer (relays close idle connections, often
//! with an unsolicited `421 4.4.2 timeout`); if the NOOP fails the send silently reconnects.
//! A reused connection that the server closed anyway fails at `MAIL FROM` before anything was
//! sent for the message; on such a network error the send is retried once on a fresh
//! connection. A `421` *reply to a command of the transaction* is never retried transparently:
//! it is a throttle signal for the caller.
//!
//! # Bytes on the wire
//!
//! The message bytes are sent unchanged (lettre only dot-stuffs). lettre always appends
//! `CRLF . CRLF`; a message that already ends in CRLF is passed without that last CRLF so the
//! receiver gets exactly the input bytes.
//!
//! # Timeouts
//!
//! `timeout` bounds every command and, as a deadline, the whole message including a reconnect:
//! each step waits at most until `start + timeout`. lettre's own timeout only covers the TCP
//! connect (lettre issue #1027). A timeout drops the connection; after a timeout at DATA the
//! relay may still have queued the message (possible duplicate on retry).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use lettre::{Address, AsyncFileTransport, AsyncTransport, Tokio1Executor};
use tokio::time::{Instant, timeout_at};

use super::dkim::{DkimSigner, SigningPool};
use super::smtp_url::{SmtpEndpoint, Tls};

/// Which transport the app uses.
#[derive(Clone, Debug)]
pub enum TransportConfig {
    FileOutbox {
        dir: PathBuf,
    },
    Smtp {
        endpoint: SmtpEndpoint,
        /// EHLO name; `None` = this machine's hostname.
        hello_name: Option<String>,
        /// Per command; also the overall cap per message (see the module docs).
        timeout: Duration,
    },
}

/// RFC 3463 enhanced status code, e.g. `5.1.1`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct EnhancedStatus {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedStatus {
    /// Parses `class.subject.detail` at the start of a reply text (`"5.1.1 User unknown"`).
    pub fn parse_prefix(text: &str) -> Option<EnhancedStatus> {
        let word = text.split_whitespace().next()?;
        let mut parts = word.split('.');
        let (c, s, d) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let num = |p: &str, max_len: usize| {
            (!p.is_empty() && p.len() <= max_len && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
        };
        let class = num(c, 1)? as u8;
        if !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(EnhancedStatus {
            class,
            subject: num(s, 3)?,
            detail: num(d, 3)?,
        })
    }
}

impl std::fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// An SMTP reply (or the file outbox's equivalent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub enhanced: Option<EnhancedStatus>,
    /// The relay's text (multi-line replies joined with spaces), e.g. `2.0.0 Ok: queued as ABC`.
    pub text: String,
}

impl SmtpReply {
    pub fn new(code: u16, text: impl Into<String>) -> SmtpReply {
        let text = text.into();
        SmtpReply {
            code,
            enhanced: EnhancedStatus::parse_prefix(&text),
            text,
        }
    }

    fn from_response(r: &Response) -> SmtpReply {
        SmtpReply::new(
            u16::from(r.code()),
            r.message().collect::<Vec<_>>().join(" "),
        )
    }
}

impl std::fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// The SMTP step a failure happened at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SmtpStage {
    Connect,
    /// Greeting or first EHLO (lettre reads both inside `connect`).
    Greeting,
    /// EHLO after STARTTLS, or STARTTLS itself.
    Ehlo,
    Auth,
    MailFrom,
    RcptTo,
    /// `DATA`, the message transfer, or the reply after the final dot.
    Data,
}

impl SmtpStage {
    pub fn as_str(&self) -> &'static str {
        match self {
            SmtpStage::Connect => "connect",
            SmtpStage::Greeting => "greeting",
            SmtpStage::Ehlo => "EHLO",
            SmtpStage::Auth => "AUTH",
            SmtpStage::MailFrom => "MAIL FROM",
            SmtpStage::RcptTo => "RCPT TO",
            SmtpStage::Data => "DATA",
        }
    }
}

impl std::fmt::Display for SmtpStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message was not handed over.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    /// The server answered 4xx/5xx.
    #[error("{stage} rejected: {reply}")]
    Rejected { stage: SmtpStage, reply: SmtpReply },
    #[error("network error: {0}")]
    Network(String),
    #[error("timed out at {0}")]
    Timeout(SmtpStage),
    #[error("TLS error: {0}")]
    Tls(String),
    /// File outbox I/O.
    #[error("outbox I/O error: {0}")]
    Io(String),
    /// An envelope address lettre cannot parse; nothing was sent.
    #[error("invalid envelope address: {0}")]
    InvalidAddress(String),
    /// The relay's TLS certificate does not chain to a trusted root: nothing will get
    /// through until the operator fixes the trust (`smtp.ca_file`) or the relay's certificate.
    #[error("TLS certificate of the relay not trusted: {0}")]
    CertificateUntrusted(String),
    /// The relay offers no authentication mechanism Herald can use (often: AUTH is only
    /// offered after STARTTLS, and the URL does not ask for it).
    #[error("no usable authentication mechanism at the relay: {0}")]
    NoAuthMechanism(String),
    /// The message is larger than the relay's advertised `SIZE` limit; nothing was sent.
    #[error("message of {size} bytes exceeds the relay's SIZE limit of {limit} bytes")]
    TooBigForRelay { size: usize, limit: usize },
    /// DKIM is configured and the message could not be signed; nothing was sent.
    #[error("{0}")]
    Signing(String),
}

impl SendFailure {
    pub fn reply(&self) -> Option<&SmtpReply> {
        match self {
            SendFailure::Rejected { reply, .. } => Some(reply),
            _ => None,
        }
    }
}

fn map_err(stage: SmtpStage, err: lettre::transport::smtp::Error) -> SendFailure {
    if let Some(code) = err.status() {
        let text = std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default();
        return SendFailure::Rejected {
            stage,
            reply: SmtpReply::new(u16::from(code), text),
        };
    }
    if err.is_timeout() {
        return SendFailure::Timeout(stage);
    }
    if err.is_tls() {
        return SendFailure::Tls(err.to_string());
    }
    SendFailure::Network(format!("{stage}: {err}"))
}

struct SmtpSettings {
    endpoint: SmtpEndpoint,
    client_id: ClientId,
    timeout: Duration,
}

enum Backend {
    File {
        dir: PathBuf,
        transport: AsyncFileTransport<Tokio1Executor>,
    },
    Smtp(SmtpSettings),
}

/// The app's mail transport; cheap to clone. With DKIM configured, every message that goes
/// through it is signed ([`MailConnection::send_raw`]): nothing can leave unsigned.
#[derive(Clone)]
pub struct Mailer {
    backend: Arc<Backend>,
    dkim: Option<SigningPool>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Mailer").field(&self.describe()).finish()
    }
}

impl Mailer {
    pub fn new(cfg: TransportConfig) -> Mailer {
        let backend = match cfg {
            TransportConfig::FileOutbox { dir } => Backend::File {
                transport: AsyncFileTransport::new(&dir),
                dir,
            },
            TransportConfig::Smtp {
                endpoint,
                hello_name,
                timeout,
            } => Backend::Smtp(SmtpSettings {
                endpoint,
                client_id: hello_name.map(ClientId::Domain).unwrap_or_default(),
                timeout,
            }),
        };
        Mailer {
            backend: Arc::new(backend),
            dkim: None,
        }
    }

    /// Signs every message sent through this mailer with `signer`.
    pub fn with_dkim(mut self, signer: DkimSigner) -> Mailer {
        self.dkim = Some(SigningPool::new(signer));
        self
    }

    pub fn dkim(&self) -> Option<&DkimSigner> {
        self.dkim.as_ref().map(SigningPool::signer)
    }

    /// `file outbox ./outbox` or `smtp://host:587 (starttls)`; never a password.
    pub fn describe(&self) -> String {
        match &*self.backend {
            Backend::File { dir, .. } => format!("file outbox {}", dir.display()),
            Backend::Smtp(s) => s.endpoint.describe(),
        }
    }

    /// Opens a connection (SMTP) or makes sure the outbox directory exists.
    pub async fn connect(&self) -> Result<MailConnection, SendFailure> {
        match &*self.backend {
            Backend::File { dir, .. } => {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| SendFailure::Io(format!("creating {}: {e}", dir.display())))?;
                Ok(MailConnection {
                    mailer: self.clone(),
                    conn: None,
                    last_used: Instant::now(),
                    idle_check: DEFAULT_IDLE_CHECK,
                })
            }
            Backend::Smtp(s) => {
                let deadline = Instant::now() + s.timeout;
                let conn = open(s, deadline).await?;
                Ok(MailConnection {
                    mailer: self.clone(),
                    conn: Some(conn),
                    last_used: Instant::now(),
                    idle_check: DEFAULT_IDLE_CHECK,
                })
            }
        }
    }

    /// Connect, send one message, QUIT: for confirmation and test mails.
    pub async fn send_one(
        &self,
        envelope_from: &str,
        to: &str,
        message: &[u8],
    ) -> Result<SmtpReply, SendFailure> {
        let mut conn = self.connect().await?;
        let result = conn.send_raw(envelope_from, to, message).await;
        conn.close().await;
        result
    }
}

async fn step<T>(
    stage: SmtpStage,
    deadline: Instant,
    fut: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, SendFailure> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(result) => result.map_err(|e| map_err(stage, e)),
        Err(_) => Err(SendFailure::Timeout(stage)),
    }
}

/// TCP connect, greeting, EHLO, optional STARTTLS + EHLO, optional AUTH.
async fn open(s: &SmtpSettings, deadline: Instant) -> Result<AsyncSmtpConnection, SendFailure> {
    let ep = &s.endpoint;
    let tls_params =
        || TlsParameters::new(ep.host.clone()).map_err(|e| SendFailure::Tls(e.to_string()));
    let implicit = match ep.tls {
        Tls::Implicit => Some(tls_params()?),
        _ => None,
    };
    let connect = async {
        if implicit.is_some() {
            let conn = AsyncSmtpConnection::connect_tokio1(
                (ep.host.as_str(), ep.port),
                Some(s.timeout),
                &s.client_id,
                implicit,
                None,
            );
            return Ok(conn.await);
        }
        // Our own socket, for TCP_NODELAY: lettre writes a message and its
        // final "." in two writes, and with Nagle's algorithm the second
        // waits for the server's delayed ACK (40 ms on Linux) on every
        // message: 25 messages/s per connection at most. STARTTLS still
        // works on this stream (lettre upgrades any boxed stream).
        let network = |e: std::io::Error| {
            SendFailure::Network(format!("connecting to {}:{}: {e}", ep.host, ep.port))
        };
        let tcp = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(network)?;
        tcp.set_nodelay(true).map_err(network)?;
        Ok(AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &s.client_id).await)
    };
    let mut conn = match tokio::time::timeout_at(deadline, connect).await {
        Err(_) => return Err(SendFailure::Timeout(SmtpStage::Connect)),
        Ok(Err(failure)) => return Err(failure),
        Ok(Ok(Ok(conn))) => conn,
        Ok(Ok(Err(e))) if e.status().is_some() => return Err(map_err(SmtpStage::Greeting, e)),
        Ok(Ok(Err(e))) if e.is_tls() => return Err(SendFailure::Tls(e.to_string())),
        Ok(Ok(Err(e))) if e.is_timeout() => return Err(SendFailure::Timeout(SmtpStage::Connect)),
        Ok(Ok(Err(e))) => {
            return Err(SendFailure::Network(format!(
                "connecting to {}:{}: {e}",
                ep.host, ep.port
            )));
        }
    };
    if ep.tls == Tls::StartTls {
        if !conn.can_starttls() {
            return Err(SendFailure::Tls(format!(
                "{}:{} does not offer STARTTLS, which the URL requires",
                ep.host, ep.port
            )));
        }
        let params = tls_params()?;
        step(
            SmtpStage::Ehlo,
            deadline,
            conn.starttls(params, &s.client_id),
        )
        .await?;
    }
    if let Some((user, password)) = &ep.credentials {
        let creds = Credentials::new(user.clone(), password.clone());
        let auth = conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds);
        step(SmtpStage::Auth, deadline, auth).await?;
    }
    Ok(conn)
}

/// One open connection (SMTP) or a handle on the outbox directory.
pub struct MailConnection {
    mailer: Mailer,
    conn: Option<AsyncSmtpConnection>,
    last_used: Instant,
    idle_check: Duration,
}

/// A connection idle for longer than this is checked with NOOP before reuse.
pub const DEFAULT_IDLE_CHECK: Duration = Duration::from_secs(10);

impl MailConnection {
    /// Sends `message` unchanged to `to`, with `envelope_from` as the reverse path (`""` = `<>`),
    /// preceded by its DKIM signature(s) when the mailer signs.
    /// Reconnects transparently if the previous command broke the connection. Returns the final
    /// reply to DATA (file outbox: `250 written to <path>`).
    pub async fn send_raw(
        &mut self,
        envelope_from: &str,
        to: &str,
        message: &[u8],
    ) -> Result<SmtpReply, SendFailure> {
        let from = if envelope_from.is_empty() {
            None
        } else {
            Some(
                envelope_from
                    .parse::<Address>()
                    .map_err(|e| SendFailure::InvalidAddress(format!("{envelope_from}: {e}")))?,
            )
        };
        let rcpt = to
            .parse::<Address>()
            .map_err(|e| SendFailure::InvalidAddress(format!("{to}: {e}")))?;
        let mailer = self.mailer.clone();
        // Signed once, before a reconnect could send it twice.
        let signed = match &mailer.dkim {
            Some(pool) => Some(
                pool.sign(message)
                    .await
                    .map_err(|e| SendFailure::Signing(e.to_string()))?,
            ),
            None => None,
        };
        let message = signed.as_ref().map_or(message, |s| s.as_bytes());
        match &*mailer.backend {
            Backend::File { transport, dir } => {
                let envelope = Envelope::new(from, vec![rcpt])
                    .map_err(|e| SendFailure::InvalidAddress(e.to_string()))?;
                let id = transport
                    .send_raw(&envelope, message)
                    .await
                    .map_err(|e| SendFailure::Io(e.to_string()))?;
                let path = dir.join(format!("{id}.eml"));
                Ok(SmtpReply::new(
                    250,
                    format!("written to {}", path.display()),
                ))
            }
            Backend::Smtp(s) => {
                let deadline = Instant::now() + s.timeout;
                let reused = self.conn.as_ref().is_some_and(|c| !c.has_broken());
                match self.smtp_send(s, deadline, &from, &rcpt, message).await {
                    // The server closed the idle connection; nothing of this message was sent.
                    Err((SmtpStage::MailFrom, SendFailure::Network(_))) if reused => self
                        .smtp_send(s, deadline, &from, &rcpt, message)
                        .await
                        .map_err(|(_, e)| e),
                    other => other.map_err(|(_, e)| e),
                }
            }
        }
    }

    async fn smtp_send(
        &mut self,
        s: &SmtpSettings,
        deadline: Instant,
        from: &Option<Address>,
        rcpt: &Address,
        message: &[u8],
    ) -> Result<SmtpReply, (SmtpStage, SendFailure)> {
        let mut conn = match self.conn.take() {
            Some(mut c) if !c.has_broken() => {
                // Relays close idle connections (often with an unsolicited 421); check first.
                let idle = self.last_used.elapsed() >= self.idle_check;
                if idle && !matches!(timeout_at(deadline, c.test_connected()).await, Ok(true)) {
                    open(s, deadline)
                        .await
                        .map_err(|e| (SmtpStage::Connect, e))?
                } else {
                    c
                }
            }
            _ => open(s, deadline)
                .await
                .map_err(|e| (SmtpStage::Connect, e))?,
        };
        let result = transaction(&mut conn, deadline, from, rcpt, message).await;
        self.last_used = Instant::now();
        match &result {
            Ok(_) => self.conn = Some(conn),
            Err((_, SendFailure::Rejected { reply, .. })) if reply.code != 421 => {
                // The connection is still usable: reset the transaction and keep it.
                let rset_deadline = Instant::now() + s.timeout;
                if step(SmtpStage::MailFrom, rset_deadline, conn.command(Rset))
                    .await
                    .is_ok()
                {
                    self.conn = Some(conn);
                }
            }
            // 421, network error, timeout: the connection is dropped (closing the socket)
            // without QUIT, which could hang; the next send reconnects.
            Err(_) => {}
        }
        result
    }

    /// Sends QUIT (bounded by the timeout) and closes the connection.
    pub async fn close(mut self) {
        if let (Some(mut conn), Backend::Smtp(s)) = (self.conn.take(), &*self.mailer.backend) {
            let _ = tokio::time::timeout(s.timeout, conn.quit()).await;
        }
    }

    /// Sets after how much idle time a reused connection is first checked with NOOP
    /// (default [`DEFAULT_IDLE_CHECK`]; `Duration::ZERO` = before every reuse, like lettre's pool).
    pub fn set_idle_check(&mut self, after: Duration) {
        self.idle_check = after;
    }

    /// Whether an SMTP connection is currently open (always false for the file outbox).
    pub fn is_connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| !c.has_broken())
    }
}

async fn transaction(
    conn: &mut AsyncSmtpConnection,
    deadline: Instant,
    from: &Option<Address>,
    rcpt: &Address,
    message: &[u8],
) -> Result<SmtpReply, (SmtpStage, SendFailure)> {
    let info = conn.server_info();
    let mut params = Vec::new();
    let ascii = |a: &Address| AsRef::<str>::as_ref(a).is_ascii();
    let ascii_addrs = from.as_ref().is_none_or(ascii) && ascii(rcpt);
    if !ascii_addrs && info.supports_feature(Extension::SmtpUtfEight) {
        params.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() && info.supports_feature(Extension::EightBitMime) {
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let at = |stage| move |e| (stage, e);
    step(
        SmtpStage::MailFrom,
        deadline,
        conn.command(Mail::new(from.clone(), params)),
    )
    .await
    .map_err(at(SmtpStage::MailFrom))?;
    step(
        SmtpStage::RcptTo,
        deadline,
        conn.command(Rcpt::new(rcpt.clone(), vec![])),
    )
    .await
    .map_err(at(SmtpStage::RcptTo))?;
    step(SmtpStage::Data, deadline, conn.command(Data))
        .await
        .map_err(at(SmtpStage::Data))?;
    // The terminator adds CRLF.CRLF; strip our final CRLF so the receiver gets the exact bytes.
    let body = message.strip_suffix(b"\r\n").unwrap_or(message);
    let response = match std::str::from_utf8(body) {
        Ok(text) => step(SmtpStage::Data, deadline, conn.command(DataPayload(text))).await,
        Err(_) => step(SmtpStage::Data, deadline, conn.message(body)).await,
    }
    .map_err(at(SmtpStage::Data))?;
    Ok(SmtpReply::from_response(&response))
}

/// A message body as the DATA payload: dot-stuffed and terminated, the
/// same bytes lettre's `message()` sends. lettre stuffs byte by byte (an
/// eighth of the CPU of a send) and writes the final "." separately; this
/// finds the rare "\r\n." with a substring search and goes out in one write.
struct DataPayload<'a>(&'a str);

impl std::fmt::Display for DataPayload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.starts_with('.') {
            f.write_str(".")?;
        }
        let mut rest = self.0;
        while let Some(i) = rest.find("\r\n.") {
            f.write_str(&rest[..i + 3])?;
            f.write_str(".")?;
            rest = &rest[i + 3..];
        }
        f.write_str(rest)?;
        f.write_str("\r\n.\r\n")
    }
}

#[cfg(test)]
mod data_payload_tests {
    use super::DataPayload;

    #[test]
    fn stuffs_dots_at_line_starts_like_lettre_and_terminates() {
        let out = |s: &str| DataPayload(s).to_string();
        assert_eq!(
            out("a\r\n.b\r\n..c\r\n."),
            "a\r\n..b\r\n...c\r\n..\r\n.\r\n"
        );
        // Only after CRLF (and at the very start), as lettre's codec does.
        assert_eq!(out(".x\r.y\n.z"), "..x\r.y\n.z\r\n.\r\n");
        assert_eq!(out("\r\n\r\n.\r\n."), "\r\n\r\n..\r\n..\r\n.\r\n");
        assert_eq!(out(""), "\r\n.\r\n");
    }
}

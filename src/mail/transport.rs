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
#[allow(deprecated)]
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use lettre::{Address, AsyncFileTransport, AsyncTransport, Tokio1Executor};
use tokio::time::{Instant, timeout_at};

use super::dkim::{DkimSigner, SigningPool};
use super::smtp_url::{SmtpEndpoint, Tls};
use super::trust::{self, TlsTrust};

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
    /// An envelope address has a UTF-8 local part and the relay does not offer SMTPUTF8
    /// (RFC 6531); nothing was sent, and this relay never will take it.
    #[error("{0} needs SMTPUTF8, which the relay does not offer")]
    NeedsSmtpUtf8(String),
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
        return SendFailure::Tls(format!("{stage}: {}", root_cause(&err)));
    }
    SendFailure::Network(format!("{stage}: {}", root_cause(&err)))
}

/// The innermost message of a lettre error: lettre nests "Connection error: Connection
/// error: …" labels around the one that says what happened.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// A failure while setting the connection up (greeting, TLS, STARTTLS, AUTH), saying which
/// step at which `host:port`, once.
fn setup_failure(
    ep: &SmtpEndpoint,
    stage: SmtpStage,
    what: &str,
    err: lettre::transport::smtp::Error,
) -> SendFailure {
    if let Some(problem) = trust::certificate_problem(&ep.host, ep.port, &err) {
        return SendFailure::CertificateUntrusted(problem);
    }
    if err.status().is_some() {
        return map_err(stage, err);
    }
    if err.is_timeout() {
        return SendFailure::Timeout(stage);
    }
    let at = format!("{what} {}:{}: {}", ep.host, ep.port, root_cause(&err));
    if err.is_tls() || trust::find_rustls_error(&err).is_some() {
        SendFailure::Tls(at)
    } else {
        SendFailure::Network(at)
    }
}

/// Why AUTH could not even start: what the relay offers, and which URL would do.
fn no_auth_mechanism(ep: &SmtpEndpoint, conn: &AsyncSmtpConnection) -> SendFailure {
    let info = conn.server_info();
    let at = format!("{}:{}", ep.host, ep.port);
    let offered: Vec<String> = [Mechanism::Plain, Mechanism::Login, Mechanism::Xoauth2]
        .into_iter()
        .filter(|m| info.supports_auth_mechanism(*m))
        .map(|m| m.to_string())
        .collect();
    SendFailure::NoAuthMechanism(if !offered.is_empty() {
        format!(
            "{at} offers AUTH {} only, and Herald needs PLAIN or LOGIN: ask the relay's administrator for one of them",
            offered.join(" ")
        )
    } else if ep.tls == Tls::None {
        let starttls = if info.supports_feature(Extension::StartTls) {
            " (it offers STARTTLS)"
        } else {
            ""
        };
        format!(
            "{at} offers no AUTH on a plain connection{starttls}; relays offer it only after TLS: use STARTTLS (smtp://…:587, or ?tls=starttls in smtp.url) or implicit TLS (smtps://…:465)"
        )
    } else {
        format!(
            "{at} offers neither AUTH PLAIN nor LOGIN, even over TLS: ask the relay's administrator for one of them, check the port in smtp.url (submission is 587 or 465), or remove user:password from it if the relay needs no login"
        )
    })
}

struct SmtpSettings {
    endpoint: SmtpEndpoint,
    client_id: ClientId,
    timeout: Duration,
    trust: TlsTrust,
    /// Built once, on the first TLS connection (reading the system store blocks).
    tls: tokio::sync::OnceCell<TlsParameters>,
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
    /// A mailer trusting the web PKI roots and the system store.
    pub fn new(cfg: TransportConfig) -> Mailer {
        Mailer::with_trust(cfg, TlsTrust::default())
    }

    /// A mailer checking the relay's certificate with `trust` (`smtp.ca_file`, `smtp.tls_insecure`).
    pub fn with_trust(cfg: TransportConfig, trust: TlsTrust) -> Mailer {
        if trust.insecure && matches!(cfg, TransportConfig::Smtp { .. }) {
            tracing::warn!(
                "smtp.tls_insecure = true: the relay's TLS certificate is NOT checked, anyone on the path can read and change every message and the SMTP password; only for test setups"
            );
        }
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
                trust,
                tls: tokio::sync::OnceCell::new(),
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
            Backend::Smtp(s) if s.trust.insecure => {
                format!(
                    "{}, any certificate accepted (smtp.tls_insecure)",
                    s.endpoint.describe()
                )
            }
            Backend::Smtp(s) => match &s.trust.ca_file {
                Some(f) if s.endpoint.tls != Tls::None => format!(
                    "{}, also trusting {}",
                    s.endpoint.describe(),
                    f.path().display()
                ),
                _ => s.endpoint.describe(),
            },
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
                    extensions: None,
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
                    extensions: None,
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

/// The TLS parameters for the relay, built on first use.
async fn tls_parameters(s: &SmtpSettings) -> Result<TlsParameters, SendFailure> {
    let ep = &s.endpoint;
    s.tls
        .get_or_try_init(|| async {
            let (trust, host) = (s.trust.clone(), ep.host.clone());
            tokio::task::spawn_blocking(move || trust.parameters(&host))
                .await
                .map_err(|e| SendFailure::Tls(format!("preparing TLS for {}: {e}", ep.host)))?
                .map_err(|e| {
                    SendFailure::Tls(format!(
                        "preparing TLS for {}:{}: {}",
                        ep.host,
                        ep.port,
                        root_cause(&e)
                    ))
                })
        })
        .await
        .cloned()
}

/// TCP connect (always our own socket, for TCP_NODELAY), implicit TLS, greeting, EHLO,
/// optional STARTTLS + EHLO, optional AUTH.
async fn open(s: &SmtpSettings, deadline: Instant) -> Result<AsyncSmtpConnection, SendFailure> {
    let ep = &s.endpoint;
    let connect = async {
        // TCP_NODELAY: lettre writes a message and its final "." in two writes, and with
        // Nagle's algorithm the second waits for the server's delayed ACK (40 ms on Linux) on
        // every message: 25 messages/s per connection at most. lettre's own connect
        // (`connect_tokio1`, which smtps used) does not set it.
        let network = |e: std::io::Error| {
            SendFailure::Network(format!("connecting to {}:{}: {e}", ep.host, ep.port))
        };
        let tcp = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(network)?;
        tcp.set_nodelay(true).map_err(network)?;
        let stream: Box<dyn AsyncTokioStream> = if ep.tls == Tls::Implicit {
            let params = tls_parameters(s).await?;
            // lettre's own TLS upgrade, so both kinds of TLS share one trust configuration.
            #[allow(deprecated)]
            let mut tls = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
            tls.upgrade_tls(params)
                .await
                .map_err(|e| setup_failure(ep, SmtpStage::Connect, "TLS handshake with", e))?;
            Box::new(ImplicitTls(tls))
        } else {
            Box::new(tcp)
        };
        AsyncSmtpConnection::connect_with_transport(stream, &s.client_id)
            .await
            .map_err(|e| setup_failure(ep, SmtpStage::Greeting, "greeting/EHLO from", e))
    };
    let mut conn = match tokio::time::timeout_at(deadline, connect).await {
        Err(_) => return Err(SendFailure::Timeout(SmtpStage::Connect)),
        Ok(result) => result?,
    };
    if ep.tls == Tls::StartTls {
        if !conn.can_starttls() {
            return Err(SendFailure::Tls(format!(
                "{}:{} does not offer STARTTLS, which the URL requires",
                ep.host, ep.port
            )));
        }
        let params = tls_parameters(s).await?;
        match timeout_at(deadline, conn.starttls(params, &s.client_id)).await {
            Err(_) => return Err(SendFailure::Timeout(SmtpStage::Ehlo)),
            Ok(Err(e)) => return Err(setup_failure(ep, SmtpStage::Ehlo, "STARTTLS with", e)),
            Ok(Ok(())) => {}
        }
    }
    if let Some((user, password)) = &ep.credentials {
        let mechanisms = [Mechanism::Plain, Mechanism::Login];
        if conn.server_info().get_auth_mechanism(&mechanisms).is_none() {
            return Err(no_auth_mechanism(ep, &conn));
        }
        let creds = Credentials::new(user.clone(), password.clone());
        match timeout_at(deadline, conn.auth(&mechanisms, &creds)).await {
            Err(_) => return Err(SendFailure::Timeout(SmtpStage::Auth)),
            Ok(Err(e)) => return Err(setup_failure(ep, SmtpStage::Auth, "AUTH at", e)),
            Ok(Ok(_)) => {}
        }
    }
    // lettre's own protocol log is capped in the subscriber (it carries the password).
    tracing::debug!(
        relay = %format_args!("{}:{}", ep.host, ep.port),
        tls = ep.tls.as_str(),
        authenticated = ep.credentials.is_some(),
        "connected to the relay"
    );
    Ok(conn)
}

/// lettre's TLS stream (a futures-io stream) as the tokio stream `connect_with_transport` takes.
#[allow(deprecated)]
#[derive(Debug)]
struct ImplicitTls(AsyncNetworkStream);

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let dst = buf.initialize_unfilled();
        match futures::io::AsyncRead::poll_read(std::pin::Pin::new(&mut self.0), cx, dst) {
            std::task::Poll::Ready(Ok(n)) => {
                buf.advance(n);
                std::task::Poll::Ready(Ok(()))
            }
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        futures::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        futures::io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        futures::io::AsyncWrite::poll_close(std::pin::Pin::new(&mut self.0), cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.peer_addr()
    }
}

/// One open connection (SMTP) or a handle on the outbox directory.
pub struct MailConnection {
    mailer: Mailer,
    conn: Option<AsyncSmtpConnection>,
    /// What the relay of `conn` offers beyond lettre's `ServerInfo`; `None`
    /// until read (once per connection, see [`Extensions::probe`]).
    extensions: Option<Extensions>,
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
                    self.extensions = None;
                    open(s, deadline)
                        .await
                        .map_err(|e| (SmtpStage::Connect, e))?
                } else {
                    c
                }
            }
            _ => {
                self.extensions = None;
                open(s, deadline)
                    .await
                    .map_err(|e| (SmtpStage::Connect, e))?
            }
        };
        let extensions = match self.extensions {
            Some(x) => x,
            None => {
                let x = Extensions::probe(&mut conn, s, deadline)
                    .await
                    .map_err(|e| (SmtpStage::Ehlo, e))?;
                self.extensions = Some(x);
                x
            }
        };
        let result = transaction(&mut conn, extensions, deadline, from, rcpt, message).await;
        self.last_used = Instant::now();
        match result {
            Ok(reply) => {
                self.conn = Some(conn);
                Ok(reply)
            }
            Err(Failed {
                stage,
                failure,
                after,
            }) => {
                match after {
                    After::Keep => self.conn = Some(conn),
                    After::Reset => {
                        // The connection is still usable: reset the transaction and keep it.
                        let rset_deadline = Instant::now() + s.timeout;
                        if step(SmtpStage::MailFrom, rset_deadline, conn.command(Rset))
                            .await
                            .is_ok()
                        {
                            self.conn = Some(conn);
                        }
                    }
                    // 421, network error, timeout, a reply out of step: the connection
                    // is dropped (closing the socket) without QUIT, which could hang;
                    // the next send reconnects.
                    After::Drop => {}
                }
                Err((stage, failure))
            }
        }
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

/// What the relay offers that lettre's `ServerInfo` does not record:
/// PIPELINING (RFC 2920) and SIZE (RFC 1870).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Extensions {
    pipelining: bool,
    /// The advertised limit; `None` when not advertised or `SIZE 0` (no limit).
    size_limit: Option<usize>,
}

impl Extensions {
    /// Reads the keywords of an EHLO reply (the lines after the first).
    fn from_ehlo_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Extensions {
        let mut x = Extensions::default();
        for line in lines.into_iter().skip(1) {
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("");
            if keyword.eq_ignore_ascii_case("PIPELINING") {
                x.pipelining = true;
            } else if keyword.eq_ignore_ascii_case("SIZE") {
                x.size_limit = words
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| *n > 0);
            }
        }
        x
    }

    /// lettre keeps only the EHLO keywords it knows, so the extensions are
    /// read with a second EHLO (RFC 5321 allows it; it resets the
    /// transaction like RSET), once per connection. Not on an authenticated
    /// connection: some servers forget the login on EHLO, so there Herald
    /// sends without PIPELINING and SIZE, as before. Reading the first EHLO
    /// in `open()` would lift that.
    async fn probe(
        conn: &mut AsyncSmtpConnection,
        s: &SmtpSettings,
        deadline: Instant,
    ) -> Result<Extensions, SendFailure> {
        if s.endpoint.credentials.is_some() {
            return Ok(Extensions::default());
        }
        let reply = step(
            SmtpStage::Ehlo,
            deadline,
            conn.command(Ehlo::new(s.client_id.clone())),
        )
        .await?;
        Ok(Extensions::from_ehlo_lines(reply.message()))
    }
}

/// What to do with the connection after a failed transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// Nothing of the transaction went out.
    Keep,
    /// The server refused a step and waits for the next command: RSET.
    Reset,
    /// Out of step, closing, or gone: drop it.
    Drop,
}

struct Failed {
    stage: SmtpStage,
    failure: SendFailure,
    after: After,
}

/// A failure found before anything of the transaction went out: the connection stays usable.
fn nothing_sent(stage: SmtpStage, failure: SendFailure) -> Failed {
    Failed {
        stage,
        failure,
        after: After::Keep,
    }
}

impl Failed {
    fn new(stage: SmtpStage, failure: SendFailure) -> Failed {
        let after = match &failure {
            SendFailure::Rejected { reply, .. } if reply.code != 421 => After::Reset,
            _ => After::Drop,
        };
        Failed {
            stage,
            failure,
            after,
        }
    }
}

async fn transaction(
    conn: &mut AsyncSmtpConnection,
    extensions: Extensions,
    deadline: Instant,
    from: &Option<Address>,
    rcpt: &Address,
    message: &[u8],
) -> Result<SmtpReply, Failed> {
    needs_smtputf8(conn, from, rcpt)?;
    if let Some(limit) = extensions.size_limit
        && message.len() > limit
    {
        return Err(nothing_sent(
            SmtpStage::MailFrom,
            SendFailure::TooBigForRelay {
                size: message.len(),
                limit,
            },
        ));
    }
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
    if extensions.size_limit.is_some() {
        params.push(MailParameter::Size(message.len()));
    }
    let mail = Mail::new(from.clone(), params);
    let rcpt = Rcpt::new(rcpt.clone(), vec![]);
    if extensions.pipelining {
        pipelined_envelope(conn, deadline, mail, rcpt).await?;
    } else {
        let at = |stage| move |e| Failed::new(stage, e);
        step(SmtpStage::MailFrom, deadline, conn.command(mail))
            .await
            .map_err(at(SmtpStage::MailFrom))?;
        step(SmtpStage::RcptTo, deadline, conn.command(rcpt))
            .await
            .map_err(at(SmtpStage::RcptTo))?;
        step(SmtpStage::Data, deadline, conn.command(Data))
            .await
            .map_err(at(SmtpStage::Data))?;
    }
    // The terminator adds CRLF.CRLF; strip our final CRLF so the receiver gets the exact bytes.
    let body = message.strip_suffix(b"\r\n").unwrap_or(message);
    let response = match std::str::from_utf8(body) {
        Ok(text) => step(SmtpStage::Data, deadline, conn.command(DataPayload(text))).await,
        Err(_) => step(SmtpStage::Data, deadline, conn.message(body)).await,
    }
    .map_err(|e| Failed::new(SmtpStage::Data, e))?;
    Ok(SmtpReply::from_response(&response))
}

/// RFC 6531: an address with a UTF-8 local part can only go to a relay that offers SMTPUTF8;
/// without it the relay would refuse it or mangle it, so nothing is sent.
fn needs_smtputf8(
    conn: &AsyncSmtpConnection,
    from: &Option<Address>,
    rcpt: &Address,
) -> Result<(), Failed> {
    if conn.server_info().supports_feature(Extension::SmtpUtfEight) {
        return Ok(());
    }
    let utf8 = |a: &Address| !a.user().is_ascii();
    match from.as_ref().filter(|a| utf8(a)) {
        Some(a) => Err(nothing_sent(
            SmtpStage::MailFrom,
            SendFailure::NeedsSmtpUtf8(a.to_string()),
        )),
        None if utf8(rcpt) => Err(nothing_sent(
            SmtpStage::RcptTo,
            SendFailure::NeedsSmtpUtf8(rcpt.to_string()),
        )),
        None => Ok(()),
    }
}

/// MAIL, RCPT and DATA in one write (RFC 2920), then their three replies in
/// order. The first refusal is the one reported (a refused RCPT makes the
/// DATA after it fail too, with 503/554, which says nothing new). Every
/// reply is read before the connection is reused, so it stays in step; if
/// the server accepts DATA after a refusal, or a reply after a refusal
/// cannot be read, it is dropped.
async fn pipelined_envelope(
    conn: &mut AsyncSmtpConnection,
    deadline: Instant,
    mail: Mail,
    rcpt: Rcpt,
) -> Result<(), Failed> {
    // The commands' own Display (each ends in CRLF) makes the group.
    let group = format!("{mail}{rcpt}{Data}");
    let mut refused: Option<Failed> = None;
    for stage in [SmtpStage::MailFrom, SmtpStage::RcptTo, SmtpStage::Data] {
        let reply = if stage == SmtpStage::MailFrom {
            step(stage, deadline, conn.command(&group)).await
        } else {
            step(stage, deadline, conn.read_response()).await
        };
        match (reply, &mut refused) {
            (Ok(_), None) => {}
            (Err(e @ SendFailure::Rejected { .. }), None) => {
                let failed = Failed::new(stage, e);
                if failed.after == After::Drop {
                    // 421: the server is closing; the rest will not come.
                    return Err(failed);
                }
                refused = Some(failed);
            }
            (Err(e), None) => return Err(Failed::new(stage, e)),
            // After a refusal the rest is expected to fail; a 354 means the
            // server now waits for a message we will not send.
            (Ok(_), Some(first)) if stage == SmtpStage::Data => first.after = After::Drop,
            (Ok(_), Some(_)) => {}
            (Err(SendFailure::Rejected { .. }), Some(_)) => {}
            (Err(_), Some(first)) => {
                first.after = After::Drop;
                break;
            }
        }
    }
    match refused {
        Some(failed) => Err(failed),
        None => Ok(()),
    }
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
        let mut from = 0;
        // memmem, not str::find: its SIMD search is several times faster on
        // a 20 KB body, where the two-way search was 5 % of a send's CPU.
        for i in memchr::memmem::find_iter(self.0.as_bytes(), b"\r\n.") {
            // `i + 3` is just past an ASCII '.', so a char boundary.
            f.write_str(&self.0[from..i + 3])?;
            f.write_str(".")?;
            from = i + 3;
        }
        f.write_str(&self.0[from..])?;
        f.write_str("\r\n.\r\n")
    }
}

#[cfg(test)]
mod data_payload_tests {
    use super::{DataPayload, Extensions};

    #[test]
    fn ehlo_keywords_pipelining_and_size() {
        let x = Extensions::from_ehlo_lines([
            "mx.example.com greets you",
            "pipelining",
            "SIZE 10240000",
            "8BITMIME",
        ]);
        assert_eq!(
            x,
            Extensions {
                pipelining: true,
                size_limit: Some(10_240_000)
            }
        );
        // SIZE 0 and a bare SIZE set no limit; the greeting line is not a keyword.
        for lines in [["PIPELINING x", "SIZE 0"], ["PIPELINING x", "SIZE"]] {
            assert_eq!(Extensions::from_ehlo_lines(lines), Extensions::default());
        }
    }

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

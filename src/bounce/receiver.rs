//! The SMTP receiver for `bounce.domain`: where DSNs and feedback-loop
//! reports sent to a VERP return path (`b-TOKEN@bounce.domain`) arrive.
//! `herald serve` starts it when `bounce.listen` is set.
//!
//! It is an MX for one purpose, so it is deliberately small and strict: it
//! accepts a recipient only when it is a VERP address of `bounce.domain` whose
//! token verifies (so it can never relay, and a forged address is refused at
//! RCPT, before any data), reads at most [`MAX_REPORT_BYTES`] of a message
//! without buffering more, and answers only once the report is recorded (a
//! sender that gets 250 may forget the report; one that gets 451 keeps it and
//! retries). Every input is bounded: line length, recipients per message,
//! errors per connection, simultaneous connections, and the time a client may
//! take for a command, for a message and for a whole connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{BounceError, MAX_REPORT_BYTES};
use crate::app::App;
use crate::domain::{BounceTag, EmailAddress, ReportSource};
use crate::readiness::ComponentState;

/// The receiver's name on `/readyz`.
pub const COMPONENT: &str = "bounce-receiver";

/// RFC 5321 §4.5.3.1.4 allows 512 octets per command line; a little more
/// leaves room for extension parameters, never room for a memory attack.
const MAX_COMMAND_LINE: usize = 2048;

/// DATA is read in pieces of at most this much, so an endless line costs no
/// more memory than the message limit.
const DATA_PIECE: usize = 64 * 1024;

/// Limits and timeouts of the receiver. `herald serve` uses the defaults;
/// tests shorten them.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// Simultaneous connections; one more is answered 421 and closed. Each
    /// may hold up to `MAX_REPORT_BYTES` while a message arrives.
    pub max_connections: usize,
    /// Recipients of one message (RFC 5321 §4.5.3.1.8 asks for at least
    /// 100); the next ones get 452 and the sender tries them later.
    pub max_recipients: usize,
    /// How long the receiver waits for a command line (the idle timeout):
    /// RFC 5321 §4.5.3.2.7 suggests five minutes.
    pub command_timeout: Duration,
    /// How long a client may take to send one message after 354.
    pub data_timeout: Duration,
    /// The longest a connection may last, however busy (a client trickling
    /// NOOPs would otherwise hold a connection slot for ever).
    pub session_timeout: Duration,
    /// Refused commands and recipients before the connection is closed.
    pub max_errors: usize,
    /// On shutdown, how long connections may take to finish the message in hand.
    pub shutdown_grace: Duration,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        ReceiverOptions {
            max_connections: 32,
            max_recipients: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            session_timeout: Duration::from_secs(1800),
            max_errors: 20,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error(
        "cannot listen on {addr} (bounce.listen): {source}; choose a free IP:PORT this process may bind (ports below 1024 need CAP_NET_BIND_SERVICE), or leave bounce.listen empty"
    )]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "bounce.listen is set but bounce.domain = {0:?} is not a domain; set bounce.domain to the domain whose MX is this host, e.g. bounces.example.org"
    )]
    Domain(String),
}

/// A bound receiver, not yet accepting.
pub struct Receiver {
    app: App,
    listener: TcpListener,
    /// `bounce.domain` as it appears in a recipient address (lower case, IDN as punycode).
    domain: Arc<str>,
    options: ReceiverOptions,
}

impl Receiver {
    /// The receiver `bounce.listen` asks for, bound; `None` when it is empty.
    pub async fn from_config(app: &App) -> Result<Option<Receiver>, ReceiverError> {
        let listen = app.config.bounce.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        Receiver::bind(app, listen, ReceiverOptions::default())
            .await
            .map(Some)
    }

    /// Binds `addr` for `bounce.domain` (which must be set).
    pub async fn bind(
        app: &App,
        addr: &str,
        options: ReceiverOptions,
    ) -> Result<Receiver, ReceiverError> {
        let configured = app.config.bounce.domain.trim();
        let domain = EmailAddress::parse(&format!("b@{configured}"))
            .map_err(|_| ReceiverError::Domain(configured.to_owned()))?
            .domain()
            .to_ascii_lowercase();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ReceiverError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        app.readiness.report(COMPONENT, ComponentState::Starting);
        Ok(Receiver {
            app: app.clone(),
            listener,
            domain: domain.into(),
            options,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown`; then stops accepting, lets each
    /// connection finish the message in hand (at most `shutdown_grace`) and
    /// returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let Receiver {
            app,
            listener,
            domain,
            options,
        } = self;
        let readiness = app.readiness.clone();
        readiness.report(COMPONENT, ComponentState::Running);
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, domain = %domain, "bounce receiver listening");
        }
        let shared = Arc::new(Shared {
            app,
            domain,
            options,
            shutdown: shutdown.clone(),
        });
        let permits = Arc::new(Semaphore::new(shared.options.max_connections));
        let mut sessions = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(joined) = sessions.join_next(), if !sessions.is_empty() => {
                    if let Err(e) = joined
                        && e.is_panic()
                    {
                        tracing::error!(error = %e, "a bounce receiver connection panicked");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        readiness.report(COMPONENT, ComponentState::Running);
                        match permits.clone().try_acquire_owned() {
                            Ok(permit) => {
                                let shared = shared.clone();
                                sessions.spawn(async move {
                                    Session::run(shared, stream, peer).await;
                                    drop(permit);
                                });
                            }
                            Err(_) => {
                                // Not a task per refusal: a flood of
                                // connections must not become a flood of
                                // tasks. The greeting fits any fresh socket's
                                // send buffer, so this write does not block.
                                let _ = stream.try_write(
                                    b"421 4.7.0 Too many connections, try again later\r\n",
                                );
                                tracing::debug!(%peer, "bounce receiver full: connection refused with 421");
                            }
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: transient.
                        tracing::warn!(error = %e, "bounce receiver cannot accept a connection");
                        readiness.report(
                            COMPONENT,
                            ComponentState::Degraded(format!("cannot accept connections: {e}")),
                        );
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                },
            }
        }
        drop(listener);
        let grace = shared.options.shutdown_grace;
        let finished = tokio::time::timeout(grace, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                open = sessions.len(),
                "bounce receiver connections still open after {grace:?}; closing them"
            );
            sessions.abort_all();
            while sessions.join_next().await.is_some() {}
        }
        readiness.report(COMPONENT, ComponentState::Stopped);
        tracing::info!("bounce receiver stopped");
    }
}

struct Shared {
    app: App,
    domain: Arc<str>,
    options: ReceiverOptions,
    shutdown: CancellationToken,
}

/// Why a connection ends.
enum Close {
    /// QUIT, or the client went away.
    Done,
    /// A reply to send before closing (timeouts, shutdown, too many errors).
    With(&'static str),
}

/// One command line, read whole or found too long.
enum CommandLine {
    Line,
    TooLong,
}

/// What a DATA section turned out to be.
enum Data {
    Message(Vec<u8>),
    TooBig,
}

/// One SMTP transaction in progress (after MAIL FROM).
struct Transaction {
    /// Accepted VERP addresses, as the client wrote them.
    recipients: Vec<String>,
}

struct Session {
    shared: Arc<Shared>,
    peer: SocketAddr,
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    deadline: Instant,
    greeted: bool,
    transaction: Option<Transaction>,
    errors: usize,
    line: Vec<u8>,
}

impl Session {
    async fn run(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
        // Replies are small and a pipelining client waits for them.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let deadline = Instant::now() + shared.options.session_timeout;
        let mut session = Session {
            shared,
            peer,
            reader: BufReader::with_capacity(16 * 1024, read),
            writer: BufWriter::with_capacity(4 * 1024, write),
            deadline,
            greeted: false,
            transaction: None,
            errors: 0,
            line: Vec::with_capacity(512),
        };
        let greeting = format!(
            "220 {} ESMTP Herald bounce receiver\r\n",
            session.shared.domain
        );
        if session.send(&greeting).await.is_err() {
            return;
        }
        let close = session.serve().await;
        if let Close::With(reply) = close {
            let _ = session.send(reply).await;
        }
        let _ = session.writer.shutdown().await;
        tracing::debug!(peer = %session.peer, "bounce receiver connection closed");
    }

    async fn serve(&mut self) -> Close {
        loop {
            if self.errors >= self.shared.options.max_errors {
                return Close::With("421 4.7.0 Too many errors, closing the connection\r\n");
            }
            // RFC 2920: replies to a pipelined group go out together, once
            // the client has nothing more for us to read.
            if self.reader.buffer().is_empty() && self.writer.flush().await.is_err() {
                return Close::Done;
            }
            let until = self
                .deadline
                .min(Instant::now() + self.shared.options.command_timeout);
            let shutdown = self.shared.shutdown.clone();
            let read = tokio::select! {
                // Between messages nothing is in hand: close at once.
                _ = shutdown.cancelled() => {
                    return Close::With("421 4.3.2 Service shutting down, try again later\r\n");
                }
                read = tokio::time::timeout_at(until, read_command(&mut self.reader, &mut self.line)) => read,
            };
            let line = match read {
                Err(_) => {
                    return Close::With("421 4.4.2 Timeout waiting for a command, closing\r\n");
                }
                Ok(Err(_)) => return Close::Done,
                Ok(Ok(CommandLine::TooLong)) => {
                    self.errors += 1;
                    if self.reply("500 5.5.2 Line too long\r\n").await.is_err() {
                        return Close::Done;
                    }
                    continue;
                }
                Ok(Ok(CommandLine::Line)) => trim_crlf(&self.line),
            };
            let command = match std::str::from_utf8(line) {
                Ok(text) => text.to_owned(),
                Err(_) => {
                    self.errors += 1;
                    if self
                        .reply("500 5.5.2 Command unrecognized (not text)\r\n")
                        .await
                        .is_err()
                    {
                        return Close::Done;
                    }
                    continue;
                }
            };
            match self.command(&command).await {
                Ok(None) => {}
                Ok(Some(close)) => return close,
                Err(_) => return Close::Done,
            }
        }
    }

    /// Handles one command; `Some` ends the connection.
    async fn command(&mut self, line: &str) -> io::Result<Option<Close>> {
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v, a.trim()),
            None => (line, ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if arg.is_empty() => {
                self.error("501 5.5.4 Syntax: EHLO hostname\r\n").await?
            }
            "EHLO" => {
                self.greeted = true;
                self.transaction = None;
                let reply = format!(
                    "250-{} Hello {}\r\n250-SIZE {MAX_REPORT_BYTES}\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
                    self.shared.domain,
                    printable(arg, 64)
                );
                self.reply(&reply).await?;
            }
            "HELO" => {
                self.greeted = true;
                self.transaction = None;
                let reply = format!("250 {}\r\n", self.shared.domain);
                self.reply(&reply).await?;
            }
            "MAIL" => self.mail(arg).await?,
            "RCPT" => self.rcpt(arg).await?,
            "DATA" => return self.data(arg).await,
            "RSET" => {
                self.transaction = None;
                self.reply("250 2.0.0 Ok\r\n").await?;
            }
            "NOOP" => self.reply("250 2.0.0 Ok\r\n").await?,
            "QUIT" => {
                self.reply("221 2.0.0 Bye\r\n").await?;
                self.writer.flush().await?;
                return Ok(Some(Close::Done));
            }
            "VRFY" => {
                self.reply("252 2.5.0 Cannot VRFY; send the report\r\n")
                    .await?
            }
            "HELP" => {
                self.reply(
                    "214 2.0.0 This host receives delivery reports for its VERP addresses only\r\n",
                )
                .await?
            }
            "STARTTLS" | "AUTH" | "BDAT" | "EXPN" | "ETRN" | "TURN" => {
                self.error("502 5.5.1 Command not implemented\r\n").await?
            }
            _ => self.error("500 5.5.2 Command unrecognized\r\n").await?,
        }
        Ok(None)
    }

    async fn mail(&mut self, arg: &str) -> io::Result<()> {
        if !self.greeted {
            return self.error("503 5.5.1 Send EHLO or HELO first\r\n").await;
        }
        if self.transaction.is_some() {
            return self.error("503 5.5.1 Nested MAIL command\r\n").await;
        }
        let Some((_, params)) = path_after(arg, "FROM:") else {
            return self
                .error("501 5.5.4 Syntax: MAIL FROM:<address>\r\n")
                .await;
        };
        for param in params.split_ascii_whitespace() {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key.to_ascii_uppercase().as_str() {
                "SIZE" => match value.parse::<u64>() {
                    Ok(size) if size > MAX_REPORT_BYTES as u64 => {
                        let reply = format!(
                            "552 5.3.4 Message too big: this host takes reports of at most {MAX_REPORT_BYTES} bytes\r\n"
                        );
                        return self.error(&reply).await;
                    }
                    Ok(_) => {}
                    Err(_) => return self.error("501 5.5.4 Bad SIZE parameter\r\n").await,
                },
                "BODY"
                    if value.eq_ignore_ascii_case("7BIT")
                        || value.eq_ignore_ascii_case("8BITMIME") => {}
                _ => {
                    return self
                        .error("555 5.5.4 MAIL parameter not supported\r\n")
                        .await;
                }
            }
        }
        // Any reverse path, `<>` included: reports come from MAILER-DAEMON.
        self.transaction = Some(Transaction {
            recipients: Vec::new(),
        });
        self.reply("250 2.1.0 Ok\r\n").await
    }

    async fn rcpt(&mut self, arg: &str) -> io::Result<()> {
        let Some(transaction) = &self.transaction else {
            return self.error("503 5.5.1 Need MAIL before RCPT\r\n").await;
        };
        let Some((path, params)) = path_after(arg, "TO:") else {
            return self.error("501 5.5.4 Syntax: RCPT TO:<address>\r\n").await;
        };
        if !params.trim().is_empty() {
            return self
                .error("555 5.5.4 RCPT parameters not supported\r\n")
                .await;
        }
        if transaction.recipients.len() >= self.shared.options.max_recipients {
            self.errors += 1;
            return self.reply("452 4.5.3 Too many recipients\r\n").await;
        }
        if !self.is_verp_address(path) {
            let reply = format!(
                "550 5.1.1 <{}>: no such recipient: this host takes reports for the VERP addresses of {} only and relays nothing\r\n",
                printable(path, 256),
                self.shared.domain
            );
            return self.error(&reply).await;
        }
        if let Some(transaction) = &mut self.transaction {
            transaction.recipients.push(path.to_owned());
        }
        self.reply("250 2.1.5 Ok\r\n").await
    }

    /// `b-TOKEN@bounce.domain` with a token that verifies; nothing else,
    /// so a source route, another domain or a quoted local part is refused.
    fn is_verp_address(&self, path: &str) -> bool {
        let Some((local, domain)) = path.rsplit_once('@') else {
            return false;
        };
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        domain.eq_ignore_ascii_case(&self.shared.domain)
            && BounceTag::verify(local, &self.shared.app.secret).is_some()
    }

    async fn data(&mut self, arg: &str) -> io::Result<Option<Close>> {
        if !arg.is_empty() {
            self.error("501 5.5.4 Syntax: DATA\r\n").await?;
            return Ok(None);
        }
        let Some(transaction) = self.transaction.take() else {
            self.error("503 5.5.1 Need MAIL before DATA\r\n").await?;
            return Ok(None);
        };
        if transaction.recipients.is_empty() {
            // RFC 2920 §3.1: with pipelining the client learns here that
            // none of its recipients was taken.
            self.error("554 5.5.1 No valid recipients\r\n").await?;
            return Ok(None);
        }
        self.reply("354 End data with <CR><LF>.<CR><LF>\r\n")
            .await?;
        self.writer.flush().await?;
        let until = self
            .deadline
            .min(Instant::now() + self.shared.options.data_timeout);
        let data = match tokio::time::timeout_at(until, read_data(&mut self.reader)).await {
            Err(_) => {
                return Ok(Some(Close::With(
                    "421 4.4.2 Timeout waiting for the message, closing\r\n",
                )));
            }
            Ok(data) => data?,
        };
        let reply = match data {
            Data::TooBig => {
                self.errors += 1;
                format!(
                    "552 5.3.4 Message too big: this host takes reports of at most {MAX_REPORT_BYTES} bytes\r\n"
                )
            }
            Data::Message(message) => self.record(&message, &transaction.recipients).await,
        };
        self.reply(&reply).await?;
        Ok(None)
    }

    /// Hands the message to `apply_raw_report` once per recipient and says
    /// what to answer. A recipient recorded before a later one fails would be
    /// recorded again when the sender retries; DSNs name one VERP address
    /// each, so that is rare and only adds a duplicate report row.
    async fn record(&self, message: &[u8], recipients: &[String]) -> String {
        let mut rejected = None;
        for rcpt in recipients {
            match self
                .shared
                .app
                .apply_raw_report(message, ReportSource::Smtp, Some(rcpt))
                .await
            {
                Ok(applied) => {
                    tracing::debug!(
                        peer = %self.peer,
                        rcpt,
                        report_id = applied.report_id,
                        effect = ?applied.effect,
                        "report received by SMTP"
                    );
                }
                Err(BounceError::Unavailable(e)) => {
                    tracing::warn!(peer = %self.peer, rcpt, error = %e, "report not recorded: answering 451 so that the sender retries");
                    return "451 4.3.0 Cannot record the report now, try again later\r\n".into();
                }
                Err(BounceError::Rejected(why)) => {
                    tracing::debug!(peer = %self.peer, rcpt, reason = %why, "report refused");
                    rejected.get_or_insert(why);
                }
            }
        }
        match rejected {
            None => "250 2.0.0 Ok: report recorded\r\n".into(),
            Some(why) => format!("554 5.6.0 Report refused: {}\r\n", printable(&why, 400)),
        }
    }

    /// Queues a reply (sent at the next flush).
    async fn reply(&mut self, reply: &str) -> io::Result<()> {
        self.writer.write_all(reply.as_bytes()).await
    }

    /// Queues a refusal and counts it toward `max_errors`.
    async fn error(&mut self, reply: &str) -> io::Result<()> {
        self.errors += 1;
        self.reply(reply).await
    }

    /// Sends a reply now (greeting, closing words).
    async fn send(&mut self, reply: &str) -> io::Result<()> {
        let write = async {
            self.writer.write_all(reply.as_bytes()).await?;
            self.writer.flush().await
        };
        tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }
}

/// `FROM:<path> params` → (path, params); the colon may be followed by a
/// space, as many clients write it.
fn path_after<'a>(arg: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some((&rest[..end], &rest[end + 1..]))
}

/// Text from outside, made safe to echo in a one-line reply.
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(max)
        .collect()
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads into `buf` up to and including the next LF, at most `max` bytes;
/// `Ok(false)` when it stopped at `max` with the line unfinished. The end
/// of the stream before a LF is an error: a message or command cut short
/// is never acted on.
async fn read_piece<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<bool> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let room = max - buf.len();
        let (take, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(i) if i < room => (i + 1, true),
            _ => (available.len().min(room), false),
        };
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if ended {
            return Ok(true);
        }
        if buf.len() == max {
            return Ok(false);
        }
    }
}

/// One command line into `line`; an over-long one is read to its end and dropped.
async fn read_command<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> io::Result<CommandLine> {
    line.clear();
    if read_piece(reader, line, MAX_COMMAND_LINE).await? {
        return Ok(CommandLine::Line);
    }
    loop {
        line.clear();
        if read_piece(reader, line, MAX_COMMAND_LINE).await? {
            line.clear();
            return Ok(CommandLine::TooLong);
        }
    }
}

/// The message after 354, dot-unstuffed (RFC 5321 §4.5.2), up to the
/// `CRLF.CRLF` that ends it. Past `MAX_REPORT_BYTES` the rest is read and
/// dropped, so the connection stays in step for the next command. Only a
/// line that follows a CRLF starts a line: a bare LF does not end the data
/// (no SMTP smuggling).
async fn read_data<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Data> {
    let mut message = Vec::with_capacity(16 * 1024);
    let mut piece = Vec::with_capacity(DATA_PIECE);
    let mut at_line_start = true;
    let mut too_big = false;
    loop {
        piece.clear();
        read_piece(reader, &mut piece, DATA_PIECE).await?;
        let mut bytes = piece.as_slice();
        if at_line_start {
            if bytes == b".\r\n" {
                break;
            }
            if let Some(unstuffed) = bytes.strip_prefix(b".") {
                bytes = unstuffed;
            }
        }
        at_line_start = piece.ends_with(b"\r\n");
        if too_big {
            continue;
        }
        if message.len() + bytes.len() > MAX_REPORT_BYTES {
            too_big = true;
            message = Vec::new();
        } else {
            message.extend_from_slice(bytes);
        }
    }
    Ok(if too_big {
        Data::TooBig
    } else {
        Data::Message(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn data_of(input: &[u8]) -> io::Result<Data> {
        let mut reader = BufReader::with_capacity(7, input);
        read_data(&mut reader).await
    }

    #[tokio::test]
    async fn data_is_unstuffed_and_ends_only_at_crlf_dot_crlf() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\nbare\n.\nstill data\r\n.\r\nNOOP\r\n";
        let Ok(Data::Message(m)) = data_of(input).await else {
            panic!("a message")
        };
        assert_eq!(
            m,
            b"Subject: x\r\n\r\n.leading dot\r\nbare\n.\nstill data\r\n".to_vec()
        );
    }

    #[tokio::test]
    async fn data_cut_short_is_an_error_not_a_message() {
        assert!(data_of(b"Subject: x\r\n\r\nno end").await.is_err());
    }

    #[tokio::test]
    async fn an_over_long_command_is_consumed_to_its_end() {
        let mut long = vec![b'A'; MAX_COMMAND_LINE * 3];
        long.extend_from_slice(b"\r\nNOOP\r\n");
        let mut reader = BufReader::with_capacity(100, long.as_slice());
        let mut line = Vec::new();
        assert!(matches!(
            read_command(&mut reader, &mut line).await,
            Ok(CommandLine::TooLong)
        ));
        assert!(matches!(
            read_command(&mut reader, &mut line).await,
            Ok(CommandLine::Line)
        ));
        assert_eq!(line, b"NOOP\r\n");
    }

    #[test]
    fn paths_and_parameters() {
        assert_eq!(
            path_after("FROM:<> SIZE=10", "FROM:"),
            Some(("", " SIZE=10"))
        );
        assert_eq!(path_after("to: <b-x@d>", "TO:"), Some(("b-x@d", "")));
        assert_eq!(path_after("TO:b@d", "TO:"), None);
        assert_eq!(path_after("T", "TO:"), None);
        assert_eq!(printable("a\r\nb\u{e9}", 10), "a??b?");
    }
}

//! A small, scriptable SMTP server for integration tests.
//!
//! It listens on `127.0.0.1:0`, speaks enough ESMTP for lettre's client (EHLO, HELO, AUTH PLAIN/LOGIN,
//! MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT; STARTTLS, implicit TLS and checked AUTH
//! through `support::tls::Security`), records every accepted
//! message and counts connections. Replies can be scripted per recipient and per stage:
//!
//! ```ignore
//! let script = Script::new()
//!     .rcpt("greylist@x.test", [Reply::code(451, "4.7.1 Greylisted, try again"), Reply::ok()])
//!     .rcpt_where(|a| a.starts_with("hard"), [Reply::code(550, "5.1.1 User unknown")])
//!     .drop_after_data_for("flaky@x.test", 1)
//!     .close_with_421_after(5);
//! let server = TestSmtpServer::start(script).await;
//! ```
//!
//! A reply list is consumed in order per rule (across connections); once exhausted, its last
//! reply repeats. The server stops (all connections are closed) when the `TestSmtpServer` is dropped.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::tls::Security;

/// One single-line SMTP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn code(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            text: text.into(),
        }
    }

    /// `250 2.0.0 Ok`
    pub fn ok() -> Reply {
        Reply::code(250, "2.0.0 Ok")
    }

    fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    fn wire(&self) -> String {
        format!("{} {}\r\n", self.code, self.text)
    }
}

/// A message the server accepted (2xx after the final dot).
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Raw bytes as received, dot-unstuffed, without the terminating `.` line.
    pub data: Vec<u8>,
    pub connection_id: u64,
    /// When this transaction's `MAIL FROM` arrived (the client began handing it over).
    pub mail_at: Instant,
    /// When the final dot arrived.
    pub received_at: Instant,
}

impl ReceivedMessage {
    pub fn data_str(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The unfolded value of the first header called `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// Unfolded values of every header called `name`, in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        let text = self.data_str();
        let head = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .replace("\r\n ", " ")
            .replace("\r\n\t", " ");
        head.split("\r\n")
            .filter_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .collect()
    }
}

type Pred = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Mail,
    Rcpt,
    Data,
}

#[derive(Clone)]
enum Action {
    Replies(Vec<Reply>),
    Drop,
    Stall(Duration),
}

#[derive(Clone)]
struct Rule {
    stage: Stage,
    matches: Pred,
    action: Action,
    /// How many times the rule applies; `None` = forever.
    limit: Option<usize>,
    hits: usize,
}

fn exact(addr: &str) -> Pred {
    let addr = addr.to_string();
    Arc::new(move |a: &str| a.eq_ignore_ascii_case(&addr))
}

/// What the server does; built with a small builder.
#[derive(Clone)]
pub struct Script {
    rules: Vec<Rule>,
    default_rcpt: Reply,
    default_data: Option<Reply>,
    close_421_after: Option<usize>,
    close_silently_after: Option<usize>,
}

impl Default for Script {
    fn default() -> Self {
        Script::new()
    }
}

impl Script {
    pub fn new() -> Script {
        Script {
            rules: Vec::new(),
            default_rcpt: Reply::code(250, "2.1.5 Ok"),
            default_data: None,
            close_421_after: None,
            close_silently_after: None,
        }
    }

    fn rule(mut self, stage: Stage, matches: Pred, action: Action, limit: Option<usize>) -> Script {
        self.rules.push(Rule {
            stage,
            matches,
            action,
            limit,
            hits: 0,
        });
        self
    }

    /// Replies to successive `MAIL FROM` commands, whatever the sender (the last one repeats).
    pub fn mail_reply(self, replies: impl IntoIterator<Item = Reply>) -> Script {
        let replies: Vec<Reply> = replies.into_iter().collect();
        assert!(!replies.is_empty(), "a reply list needs at least one reply");
        self.rule(
            Stage::Mail,
            Arc::new(|_: &str| true),
            Action::Replies(replies),
            None,
        )
    }

    /// Replies to successive `RCPT TO:<addr>` commands (the last one repeats).
    pub fn rcpt(self, addr: &str, replies: impl IntoIterator<Item = Reply>) -> Script {
        let replies: Vec<Reply> = replies.into_iter().collect();
        assert!(!replies.is_empty(), "a reply list needs at least one reply");
        self.rule(Stage::Rcpt, exact(addr), Action::Replies(replies), None)
    }

    /// Like [`Script::rcpt`], for every address the predicate accepts.
    pub fn rcpt_where(
        self,
        pred: impl Fn(&str) -> bool + Send + Sync + 'static,
        replies: impl IntoIterator<Item = Reply>,
    ) -> Script {
        let replies: Vec<Reply> = replies.into_iter().collect();
        assert!(!replies.is_empty(), "a reply list needs at least one reply");
        self.rule(Stage::Rcpt, Arc::new(pred), Action::Replies(replies), None)
    }

    /// Replies after the end-of-data dot for messages with an accepted recipient `addr`.
    pub fn data_reply_for(self, addr: &str, replies: impl IntoIterator<Item = Reply>) -> Script {
        let replies: Vec<Reply> = replies.into_iter().collect();
        assert!(!replies.is_empty(), "a reply list needs at least one reply");
        self.rule(Stage::Data, exact(addr), Action::Replies(replies), None)
    }

    pub fn data_reply_where(
        self,
        pred: impl Fn(&str) -> bool + Send + Sync + 'static,
        replies: impl IntoIterator<Item = Reply>,
    ) -> Script {
        let replies: Vec<Reply> = replies.into_iter().collect();
        assert!(!replies.is_empty(), "a reply list needs at least one reply");
        self.rule(Stage::Data, Arc::new(pred), Action::Replies(replies), None)
    }

    /// Close the socket without replying after receiving a message for `addr`, `times` times.
    pub fn drop_after_data_for(self, addr: &str, times: usize) -> Script {
        self.rule(Stage::Data, exact(addr), Action::Drop, Some(times))
    }

    /// Once, wait `stall` after the end-of-data dot of a message for `addr` before replying.
    pub fn stall_for(self, addr: &str, stall: Duration) -> Script {
        self.rule(Stage::Data, exact(addr), Action::Stall(stall), Some(1))
    }

    /// Once, wait `stall` before answering `RCPT TO:<addr>`.
    pub fn stall_rcpt_for(self, addr: &str, stall: Duration) -> Script {
        self.rule(Stage::Rcpt, exact(addr), Action::Stall(stall), Some(1))
    }

    /// After `n` accepted messages on one connection, answer the next command (other than QUIT)
    /// with `421 4.7.0 Too many messages, closing` and close the connection.
    pub fn close_with_421_after(mut self, n: usize) -> Script {
        self.close_421_after = Some(n);
        self
    }

    /// After `n` accepted messages on one connection, close it without a word (like a relay
    /// dropping an idle connection).
    pub fn close_silently_after(mut self, n: usize) -> Script {
        self.close_silently_after = Some(n);
        self
    }

    /// The reply after the final dot when no rule matches (default `250 2.0.0 Ok: queued as …`).
    pub fn default_reply(mut self, reply: Reply) -> Script {
        self.default_data = Some(reply);
        self
    }

    /// The reply to RCPT when no rule matches (default `250 2.1.5 Ok`).
    pub fn default_rcpt_reply(mut self, reply: Reply) -> Script {
        self.default_rcpt = reply;
        self
    }

    /// Apply the matching rules for `stage`; returns (stall, drop, reply).
    fn decide(
        &mut self,
        stage: Stage,
        addrs: &[String],
    ) -> (Option<Duration>, bool, Option<Reply>) {
        let (mut stall, mut drop, mut reply) = (None, false, None);
        for rule in self.rules.iter_mut() {
            if rule.stage != stage
                || rule.limit.is_some_and(|l| rule.hits >= l)
                || !addrs.iter().any(|a| (rule.matches)(a))
            {
                continue;
            }
            match &rule.action {
                Action::Stall(d) if stall.is_none() => stall = Some(*d),
                Action::Drop if !drop => drop = true,
                Action::Replies(list) if reply.is_none() => {
                    reply = Some(list[rule.hits.min(list.len() - 1)].clone())
                }
                _ => continue,
            }
            rule.hits += 1;
        }
        (stall, drop, reply)
    }
}

#[derive(Default)]
struct State {
    messages: Vec<ReceivedMessage>,
    /// Messages whose connection was dropped (scripted) after the final dot, never accepted.
    dropped: Vec<ReceivedMessage>,
    commands: Vec<(u64, String)>,
    total_connections: u64,
    open_connections: u64,
    max_concurrent: u64,
}

struct Shared {
    script: Mutex<Script>,
    state: Mutex<State>,
    security: Security,
}

/// The running server; stops when dropped.
pub struct TestSmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for TestSmtpServer {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

impl TestSmtpServer {
    pub async fn start(script: Script) -> TestSmtpServer {
        TestSmtpServer::start_secured(script, Security::default()).await
    }

    /// A server with TLS and/or AUTH (see `support::tls`).
    pub async fn start_secured(script: Script, security: Security) -> TestSmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            script: Mutex::new(script),
            state: Mutex::new(State::default()),
            security,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        TestSmtpServer { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the script (the relay "fixed"); open connections follow it from their next command.
    pub fn set_script(&self, script: Script) {
        *self.shared.script.lock().unwrap() = script;
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `smtp://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.state.lock().unwrap().messages.clone()
    }

    /// How many messages were accepted (cheaper than `messages().len()`).
    pub fn message_count(&self) -> usize {
        self.shared.state.lock().unwrap().messages.len()
    }

    /// Runs `f` on the accepted messages without cloning them (thousands of 20 KB messages).
    pub fn with_messages<R>(&self, f: impl FnOnce(&[ReceivedMessage]) -> R) -> R {
        f(&self.shared.state.lock().unwrap().messages)
    }

    /// Messages received in full but dropped without a reply (`drop_after_data_for`).
    pub fn dropped_messages(&self) -> Vec<ReceivedMessage> {
        self.shared.state.lock().unwrap().dropped.clone()
    }

    pub fn messages_to(&self, addr: &str) -> Vec<ReceivedMessage> {
        self.messages()
            .into_iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(addr)))
            .collect()
    }

    /// Waits until at least `n` messages were accepted or `timeout` passed; returns them all.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n || Instant::now() >= deadline {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every command line received, with its connection id (AUTH payloads included).
    pub fn commands(&self) -> Vec<(u64, String)> {
        self.shared.state.lock().unwrap().commands.clone()
    }

    pub fn total_connections(&self) -> u64 {
        self.shared.state.lock().unwrap().total_connections
    }

    pub fn open_connections(&self) -> u64 {
        self.shared.state.lock().unwrap().open_connections
    }

    pub fn max_concurrent_connections(&self) -> u64 {
        self.shared.state.lock().unwrap().max_concurrent
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let id = {
            let mut st = shared.state.lock().unwrap();
            st.total_connections += 1;
            st.open_connections += 1;
            st.max_concurrent = st.max_concurrent.max(st.open_connections);
            st.total_connections
        };
        let guard = OpenGuard(shared.clone());
        connections.spawn(async move {
            let _ = handle(stream, id, &guard.0).await;
            drop(guard);
        });
    }
}

/// Decrements the open-connection count even when the task is aborted.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.state.lock().unwrap().open_connections -= 1;
    }
}

const EHLO_REPLY: &str = "250-herald-test greets you\r\n250-8BITMIME\r\n250-SIZE 52428800\r\n\
                          250-SMTPUTF8\r\n250 AUTH PLAIN LOGIN\r\n";

/// The address between `<` and `>` after the colon (or the first word after it).
fn parse_path(line: &str) -> String {
    let rest = line.split_once(':').map(|(_, r)| r).unwrap_or("").trim();
    match (rest.find('<'), rest.find('>')) {
        (Some(a), Some(b)) if a < b => rest[a + 1..b].to_string(),
        _ => rest.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// Removes the leading dot that the client added to lines starting with `.`.
fn unstuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut line_start = true;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if !(line_start && b == b'.') {
            out.push(b);
        }
        line_start = b == b'\n' && i > 0 && body[i - 1] == b'\r';
        i += 1;
    }
    out
}

async fn handle(stream: TcpStream, id: u64, shared: &Shared) -> std::io::Result<()> {
    let (stream, mut secured) = shared.security.accept_connection(stream).await?;
    let mut authed = false;
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    w.write_all(b"220 herald-test ESMTP ready\r\n").await?;
    let mut mail_from: Option<String> = None;
    let mut mail_at = Instant::now();
    let mut rcpts: Vec<String> = Vec::new();
    let mut accepted_here = 0usize;
    let mut queued = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        shared
            .state
            .lock()
            .unwrap()
            .commands
            .push((id, text.clone()));
        let verb = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let limit = shared.script.lock().unwrap().close_421_after;
        if verb != "QUIT" && limit.is_some_and(|n| accepted_here >= n) {
            w.write_all(b"421 4.7.0 Too many messages, closing\r\n")
                .await?;
            return Ok(());
        }
        let reply = match verb.as_str() {
            "EHLO" => {
                let ehlo = shared.security.ehlo(EHLO_REPLY, secured);
                w.write_all(ehlo.as_bytes()).await?;
                continue;
            }
            "HELO" => Reply::code(250, "herald-test"),
            "STARTTLS" if shared.security.can_starttls(secured) => {
                w.write_all(b"220 2.0.0 Ready to start TLS\r\n").await?;
                let tls = shared.security.upgrade(r.into_inner().unsplit(w)).await?;
                let (tr, tw) = tokio::io::split(tls);
                (r, w, secured) = (BufReader::new(tr), tw, true);
                (mail_from, authed) = (None, false);
                rcpts.clear();
                continue;
            }
            "AUTH" if !shared.security.auth_offered(secured) => {
                Reply::code(503, "5.5.1 Error: authentication not enabled")
            }
            "AUTH" => {
                let args: Vec<&str> = text.split_whitespace().skip(1).collect();
                let mech = args
                    .first()
                    .map(|m| m.to_ascii_uppercase())
                    .unwrap_or_default();
                let mut answers = Vec::new();
                let prompts: &[&str] = match (mech.as_str(), args.len()) {
                    ("PLAIN", 1) => &["334 "],
                    ("LOGIN", 1) => &["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"],
                    ("LOGIN", _) => &["334 UGFzc3dvcmQ6"],
                    _ => &[],
                };
                for prompt in prompts {
                    w.write_all(format!("{prompt}\r\n").as_bytes()).await?;
                    line.clear();
                    if r.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    answers.push(String::from_utf8_lossy(&line).trim_end().to_string());
                }
                let reply = shared.security.auth_reply(&args, &answers);
                authed = reply.code == 235;
                reply
            }
            "MAIL" if shared.security.needs_auth(authed) => {
                Reply::code(530, "5.7.0 Authentication required")
            }
            "MAIL" => {
                let from = parse_path(&text);
                let scripted = shared
                    .script
                    .lock()
                    .unwrap()
                    .decide(Stage::Mail, std::slice::from_ref(&from))
                    .2;
                rcpts.clear();
                match scripted.filter(|r| !r.is_positive()) {
                    Some(refusal) => {
                        mail_from = None;
                        refusal
                    }
                    None => {
                        mail_from = Some(from);
                        mail_at = Instant::now();
                        Reply::code(250, "2.1.0 Ok")
                    }
                }
            }
            "RCPT" if mail_from.is_none() => Reply::code(503, "5.5.1 Need MAIL first"),
            "RCPT" => {
                let addr = parse_path(&text);
                let decision = shared
                    .script
                    .lock()
                    .unwrap()
                    .decide(Stage::Rcpt, std::slice::from_ref(&addr));
                if let Some(stall) = decision.0 {
                    tokio::time::sleep(stall).await;
                }
                if decision.1 {
                    return Ok(());
                }
                let reply = decision
                    .2
                    .unwrap_or_else(|| shared.script.lock().unwrap().default_rcpt.clone());
                if reply.is_positive() {
                    rcpts.push(addr);
                }
                reply
            }
            "DATA" if rcpts.is_empty() => Reply::code(503, "5.5.1 No valid recipients"),
            "DATA" => {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut buf = Vec::new();
                loop {
                    if r.read_until(b'\n', &mut buf).await? == 0 {
                        return Ok(());
                    }
                    if buf == b".\r\n" || buf.ends_with(b"\r\n.\r\n") {
                        break;
                    }
                }
                let body = unstuff(&buf[..buf.len() - 3]);
                let received_at = Instant::now();
                let (stall, drop_it, reply) =
                    shared.script.lock().unwrap().decide(Stage::Data, &rcpts);
                if let Some(stall) = stall {
                    tokio::time::sleep(stall).await;
                }
                if drop_it {
                    shared.state.lock().unwrap().dropped.push(ReceivedMessage {
                        mail_from: mail_from.take().unwrap_or_default(),
                        rcpt_to: std::mem::take(&mut rcpts),
                        data: body,
                        connection_id: id,
                        mail_at,
                        received_at,
                    });
                    return Ok(());
                }
                queued += 1;
                let reply = reply
                    .or_else(|| shared.script.lock().unwrap().default_data.clone())
                    .unwrap_or_else(|| {
                        Reply::code(250, format!("2.0.0 Ok: queued as T{id}M{queued}"))
                    });
                let close_after = shared.script.lock().unwrap().close_silently_after;
                if reply.is_positive() {
                    accepted_here += 1;
                    shared.state.lock().unwrap().messages.push(ReceivedMessage {
                        mail_from: mail_from.take().unwrap_or_default(),
                        rcpt_to: std::mem::take(&mut rcpts),
                        data: body,
                        connection_id: id,
                        mail_at,
                        received_at,
                    });
                }
                mail_from = None;
                rcpts.clear();
                if close_after.is_some_and(|n| accepted_here >= n) {
                    w.write_all(reply.wire().as_bytes()).await?;
                    return Ok(());
                }
                reply
            }
            "RSET" => {
                mail_from = None;
                rcpts.clear();
                Reply::ok()
            }
            "NOOP" => Reply::ok(),
            "QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => Reply::code(502, "5.5.2 Command not recognized"),
        };
        w.write_all(reply.wire().as_bytes()).await?;
    }
}

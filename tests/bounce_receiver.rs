//! The SMTP receiver for `bounce.domain` over real TCP: who it accepts
//! (only VERP addresses of the bounce domain whose token verifies), the
//! limits that keep a hostile client cheap (size, line length, errors,
//! recipients, connections, time), pipelining, shutdown, and what a report
//! does once recorded. Tests that depend on the database run on SQLite and
//! on PostgreSQL when `HERALD_TEST_POSTGRES_URL` is set.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use herald::bounce::MAX_REPORT_BYTES;
use herald::bounce::receiver::{COMPONENT, Receiver, ReceiverOptions};
use herald::domain::BounceTag;
use herald::readiness::ComponentState;
use support::engine::{Backend, Fixture, TestDb, test_config};
use support::smtp_server::{Script, TestSmtpServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;

crate::on_each_backend!(
    a_dsn_to_a_verp_address_is_recorded_and_bounces_the_subscriber,
    a_report_that_cannot_be_recorded_gets_451,
);

const DOMAIN: &str = "bounces.test";
/// No test waits this long unless something is wrong.
const PATIENCE: Duration = Duration::from_secs(20);

// --- A raw SMTP client -------------------------------------------------------

struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// One reply: its code and its lines' text (after the code).
#[derive(Debug)]
struct Answer {
    code: u16,
    text: String,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (read, writer) = stream.into_split();
        Client {
            reader: BufReader::new(read),
            writer,
        }
    }

    /// Connects and reads the 220 greeting.
    async fn greeted(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr).await;
        let hello = c.answer().await;
        assert_eq!(hello.code, 220, "{hello:?}");
        c
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    async fn answer(&mut self) -> Answer {
        self.try_answer()
            .await
            .expect("a reply, not the end of the connection")
    }

    /// `None` when the server closed the connection.
    async fn try_answer(&mut self) -> Option<Answer> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(PATIENCE, self.reader.read_line(&mut line))
                .await
                .expect("a reply within the patience bound")
                .ok()?;
            if n == 0 {
                return None;
            }
            let line = line.trim_end();
            assert!(line.len() >= 3, "a reply line: {line:?}");
            let code: u16 = line[..3].parse().expect("a reply code");
            text.push_str(line.get(4..).unwrap_or(""));
            text.push('\n');
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some(Answer { code, text });
            }
        }
    }

    /// Sends one command line and reads its reply.
    async fn command(&mut self, line: &str) -> Answer {
        self.write(format!("{line}\r\n").as_bytes()).await;
        self.answer().await
    }

    async fn expect(&mut self, line: &str, code: u16) -> Answer {
        let a = self.command(line).await;
        assert_eq!(a.code, code, "{line} → {a:?}");
        a
    }

    /// The server closes the connection (after any reply still coming).
    async fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        tokio::time::timeout(PATIENCE, self.reader.read_to_end(&mut rest))
            .await
            .expect("the server closes the connection")
            .ok();
    }
}

/// The message, dot-stuffed, with the final dot.
fn stuffed(message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split("\r\n") {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

// --- Fixture -----------------------------------------------------------------

struct Bench {
    fx: Fixture,
    addr: SocketAddr,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<()>,
    /// The relay the fixture's issue went out through.
    relay: TestSmtpServer,
}

impl Bench {
    async fn start(backend: Backend, options: ReceiverOptions) -> Bench {
        let relay = TestSmtpServer::start(Script::new()).await;
        let mut config = test_config("", &relay.url());
        config.bounce.domain = DOMAIN.into();
        let fx = Fixture::new(TestDb::new(backend).await, config).await;
        let receiver = Receiver::bind(&fx.app, "127.0.0.1:0", options)
            .await
            .expect("bind the receiver");
        let addr = receiver.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(receiver.run(shutdown.clone()));
        Bench {
            fx,
            addr,
            shutdown,
            running,
            relay,
        }
    }

    async fn sqlite(options: ReceiverOptions) -> Bench {
        Bench::start(Backend::Sqlite, options).await
    }

    fn verp(&self, issue_id: i64, subscriber_id: i64) -> String {
        BounceTag::Delivery {
            issue_id,
            subscriber_id,
        }
        .address(DOMAIN, &self.fx.app.secret)
    }

    /// A client past EHLO.
    async fn client(&self) -> Client {
        let mut c = Client::greeted(self.addr).await;
        c.expect("EHLO sender.test", 250).await;
        c
    }

    async fn stop(self) -> Fixture {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.running)
            .await
            .expect("the receiver stops")
            .expect("the receiver task ends cleanly");
        self.fx
    }
}

/// A DSN as Postfix writes it (RFC 3464), about one failed recipient.
fn postfix_dsn(verp: &str, recipient: &str, message_id: &str) -> String {
    format!(
        "Return-Path: <>\r\n\
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
To: {verp}\r\n\
Auto-Submitted: auto-replied\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n\
\tboundary=\"B0UND.1\"\r\n\
Message-Id: <20261202.ABC123@mx.example.net>\r\n\
\r\n\
This is a MIME-encapsulated message.\r\n\
\r\n\
--B0UND.1\r\n\
Content-Description: Notification\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
I'm sorry to have to inform you that your message could not\r\n\
be delivered to one or more recipients.\r\n\
.A line that starts with a dot.\r\n\
\r\n\
<{recipient}>: host mx.example.net said: 550 5.1.1 User unknown\r\n\
\r\n\
--B0UND.1\r\n\
Content-Description: Delivery report\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.net\r\n\
X-Postfix-Queue-ID: ABC123\r\n\
Arrival-Date: Wed,  2 Dec 2026 10:00:00 +0000 (UTC)\r\n\
\r\n\
Final-Recipient: rfc822; {recipient}\r\n\
Original-Recipient: rfc822;{recipient}\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Remote-MTA: dns; mx.example.net\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown\r\n\
\r\n\
--B0UND.1\r\n\
Content-Description: Undelivered Message Headers\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
Return-Path: <{verp}>\r\n\
From: Weekly Digest <digest@herald.test>\r\n\
To: {recipient}\r\n\
Message-ID: <{message_id}>\r\n\
Subject: Weekly Digest\r\n\
\r\n\
--B0UND.1--"
    )
}

// --- Who may send what to whom -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_verp_addresses_of_the_bounce_domain_are_accepted() {
    let bench = Bench::sqlite(ReceiverOptions::default()).await;
    let valid = bench.verp(bench.fx.issue.id, 1);
    let (local, _) = valid.split_once('@').expect("an address");
    let mut forged = local.to_owned();
    // Change the MAC's last digit.
    let last = forged.pop().expect("a digit");
    forged.push(if last == '0' { '1' } else { '0' });

    let mut c = bench.client().await;
    c.expect("MAIL FROM:<>", 250).await;
    for (rcpt, why) in [
        (
            "someone@example.com".to_owned(),
            "a relay attempt to another domain",
        ),
        (
            format!("{local}@example.com"),
            "a valid token, another domain",
        ),
        (format!("{forged}@{DOMAIN}"), "a forged token"),
        (format!("postmaster@{DOMAIN}"), "not a VERP address"),
        (format!("b-d1-1-00@{DOMAIN}"), "a truncated token"),
        (format!("@mx.example.com:{valid}"), "a source route"),
        (format!("\"{local}\"@{DOMAIN}"), "a quoted local part"),
        (format!("{valid}@example.com"), "a nested address"),
    ] {
        let a = c.command(&format!("RCPT TO:<{rcpt}>")).await;
        assert_eq!(a.code, 550, "{why}: {rcpt} → {a:?}");
        assert!(a.text.starts_with("5.1.1"), "{why}: {a:?}");
        assert!(a.text.contains("relays nothing"), "{a:?}");
    }
    // Nothing accepted: DATA is refused before any data is read.
    let a = c.expect("DATA", 554).await;
    assert!(a.text.contains("No valid recipients"), "{a:?}");

    // Any case, any reverse path; a trailing dot on the domain is the same domain.
    c.expect(
        "MAIL FROM:<mailer-daemon@mx.example.net> BODY=8BITMIME",
        250,
    )
    .await;
    c.expect(&format!("RCPT TO:<{}>", valid.to_ascii_uppercase()), 250)
        .await;
    c.expect(&format!("rcpt to: <{local}@{}.>", DOMAIN), 250)
        .await;
    c.expect("RSET", 250).await;
    c.expect("QUIT", 221).await;
    c.expect_closed().await;
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_out_of_order_and_unknown_ones_are_refused_without_harm() {
    let bench = Bench::sqlite(ReceiverOptions::default()).await;
    let valid = bench.verp(bench.fx.issue.id, 1);
    let mut c = Client::greeted(bench.addr).await;
    c.expect("MAIL FROM:<>", 503).await;
    c.expect("EHLO", 501).await;
    let ehlo = c.expect("EHLO sender.test", 250).await;
    for extension in [
        format!("SIZE {MAX_REPORT_BYTES}"),
        "8BITMIME".into(),
        "PIPELINING".into(),
    ] {
        assert!(
            ehlo.text.lines().any(|l| l == extension),
            "{extension}: {ehlo:?}"
        );
    }
    assert!(!ehlo.text.contains("STARTTLS") && !ehlo.text.contains("AUTH"));
    c.expect(&format!("RCPT TO:<{valid}>"), 503).await;
    c.expect("DATA", 503).await;
    c.expect("MAIL FROM:<> SMTPUTF8", 555).await;
    c.expect("MAIL FROM:<> SIZE=lots", 501).await;
    c.expect("MAIL FROM:nobody", 501).await;
    c.expect("MAIL FROM:<>", 250).await;
    c.expect("MAIL FROM:<>", 503).await;
    c.expect(&format!("RCPT TO:<{valid}> NOTIFY=NEVER"), 555)
        .await;
    c.expect("DATA now", 501).await;
    c.expect("NOOP", 250).await;
    c.expect("VRFY postmaster", 252).await;
    c.expect("HELP", 214).await;
    c.expect("STARTTLS", 502).await;
    c.expect("AUTH PLAIN AGFubgBwdw==", 502).await;
    c.expect("FROB nicate", 500).await;
    c.expect("HELO sender.test", 250).await;
    c.expect("QUIT", 221).await;
    bench.stop().await;
}

// --- Limits ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_gets_552_and_the_connection_stays_usable() {
    let bench = Bench::sqlite(ReceiverOptions::default()).await;
    let valid = bench.verp(bench.fx.issue.id, 1);
    let mut c = bench.client().await;

    // Announced too big: refused at MAIL.
    let a = c
        .expect(&format!("MAIL FROM:<> SIZE={}", MAX_REPORT_BYTES + 1), 552)
        .await;
    assert!(a.text.starts_with("5.3.4"), "{a:?}");

    // Not announced: read to its end, dropped, 552.
    c.expect("MAIL FROM:<>", 250).await;
    c.expect(&format!("RCPT TO:<{valid}>"), 250).await;
    c.expect("DATA", 354).await;
    c.write(b"Subject: big\r\n\r\n").await;
    let line = format!("{}\r\n", "x".repeat(998));
    let chunk = line.repeat(1024);
    let mut sent = 0;
    while sent <= MAX_REPORT_BYTES + chunk.len() {
        c.write(chunk.as_bytes()).await;
        sent += chunk.len();
    }
    // One endless line too: it must not be buffered whole.
    c.write(&vec![b'y'; 3 * 1024 * 1024]).await;
    c.write(b"\r\n.\r\n").await;
    let a = c.answer().await;
    assert_eq!(a.code, 552, "{a:?}");
    assert!(a.text.starts_with("5.3.4"), "{a:?}");

    // In step for the next transaction.
    c.expect("NOOP", 250).await;
    c.expect("MAIL FROM:<>", 250).await;
    c.expect(&format!("RCPT TO:<{valid}>"), 250).await;
    c.expect("RSET", 250).await;
    c.expect("QUIT", 221).await;
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_over_long_lines_are_refused_then_the_connection_closed() {
    let bench = Bench::sqlite(ReceiverOptions {
        max_errors: 5,
        ..ReceiverOptions::default()
    })
    .await;
    let mut c = bench.client().await;
    let a = c.command(&format!("NOOP {}", "z".repeat(100_000))).await;
    assert_eq!(a.code, 500, "{a:?}");
    assert!(a.text.contains("too long"), "{a:?}");
    c.expect("NOOP", 250).await;
    c.write(b"\x00\xff\xfe binary\r\n").await;
    assert_eq!(c.answer().await.code, 500);
    c.expect("GET / HTTP/1.1", 500).await;
    c.expect("\u{1b}[2J", 500).await;
    // The fifth error ends the connection.
    c.write(b"garbage\r\n").await;
    assert_eq!(c.answer().await.code, 500);
    let last = c.answer().await;
    assert_eq!(last.code, 421, "{last:?}");
    c.expect_closed().await;

    // The receiver itself is fine.
    let mut again = bench.client().await;
    again.expect("NOOP", 250).await;
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_recipients_get_452() {
    let bench = Bench::sqlite(ReceiverOptions {
        max_recipients: 3,
        ..ReceiverOptions::default()
    })
    .await;
    let mut c = bench.client().await;
    c.expect("MAIL FROM:<>", 250).await;
    for subscriber in 1..=3 {
        c.expect(
            &format!("RCPT TO:<{}>", bench.verp(bench.fx.issue.id, subscriber)),
            250,
        )
        .await;
    }
    let a = c
        .expect(
            &format!("RCPT TO:<{}>", bench.verp(bench.fx.issue.id, 4)),
            452,
        )
        .await;
    assert!(a.text.starts_with("4.5.3"), "{a:?}");
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_are_timed_out() {
    let bench = Bench::sqlite(ReceiverOptions {
        command_timeout: Duration::from_millis(500),
        data_timeout: Duration::from_secs(1),
        ..ReceiverOptions::default()
    })
    .await;
    let valid = bench.verp(bench.fx.issue.id, 1);

    // Silent after the greeting.
    let mut idle = Client::greeted(bench.addr).await;
    let a = idle.answer().await;
    assert_eq!(a.code, 421, "{a:?}");
    assert!(a.text.starts_with("4.4.2"), "{a:?}");
    idle.expect_closed().await;

    // Half a command line, then nothing.
    let mut half = bench.client().await;
    half.write(b"MAIL FROM:<").await;
    assert_eq!(half.answer().await.code, 421);
    half.expect_closed().await;

    // A message that never ends (each line in time, the whole too slow).
    let mut slow = bench.client().await;
    slow.expect("MAIL FROM:<>", 250).await;
    slow.expect(&format!("RCPT TO:<{valid}>"), 250).await;
    slow.expect("DATA", 354).await;
    let started = std::time::Instant::now();
    let answer = loop {
        slow.write(b"Subject: still coming\r\n").await;
        tokio::select! {
            a = slow.try_answer() => break a,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        assert!(started.elapsed() < PATIENCE, "the data timeout never fired");
    };
    let a = answer.expect("a 421 before closing");
    assert_eq!(a.code, 421, "{a:?}");
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_get_421() {
    let bench = Bench::sqlite(ReceiverOptions {
        max_connections: 2,
        ..ReceiverOptions::default()
    })
    .await;
    let first = Client::greeted(bench.addr).await;
    let _second = Client::greeted(bench.addr).await;
    let mut third = Client::connect(bench.addr).await;
    let a = third.answer().await;
    assert_eq!(a.code, 421, "{a:?}");
    assert!(a.text.contains("Too many connections"), "{a:?}");
    third.expect_closed().await;

    // A slot frees when a connection ends.
    drop(first);
    let started = std::time::Instant::now();
    loop {
        let mut next = Client::connect(bench.addr).await;
        let a = next.answer().await;
        if a.code == 220 {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "no slot freed: {a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bench.stop().await;
}

// --- Pipelining, shutdown, readiness -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_are_answered_in_order() {
    let bench = Bench::sqlite(ReceiverOptions::default()).await;
    let valid = bench.verp(bench.fx.issue.id, 1);
    let mut c = Client::greeted(bench.addr).await;
    c.write(
        format!(
            "EHLO sender.test\r\nMAIL FROM:<>\r\nRCPT TO:<nobody@example.com>\r\nRCPT TO:<{valid}>\r\nDATA\r\n"
        )
        .as_bytes(),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(c.answer().await.code);
    }
    assert_eq!(got, vec![250, 250, 550, 250, 354]);
    // The message, then the next transaction and QUIT, in one write.
    let mut batch = stuffed("Subject: not a report\r\n\r\nhello");
    batch.extend_from_slice(b"MAIL FROM:<>\r\nRCPT TO:<x@example.com>\r\nDATA\r\nQUIT\r\n");
    c.write(&batch).await;
    let after_data = c.answer().await;
    // Recorded (250) or refused as a report (554): either way the reply
    // to the message, then the pipelined group's.
    assert!([250, 554].contains(&after_data.code), "{after_data:?}");
    let mut rest = Vec::new();
    for _ in 0..4 {
        rest.push(c.answer().await.code);
    }
    assert_eq!(rest, vec![250, 550, 554, 221]);
    c.expect_closed().await;
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_message_in_hand_then_closes() {
    let bench = Bench::sqlite(ReceiverOptions::default()).await;
    let started = std::time::Instant::now();
    while !bench
        .fx
        .app
        .readiness
        .components()
        .contains(&(COMPONENT, ComponentState::Running))
    {
        assert!(
            started.elapsed() < PATIENCE,
            "{:?}",
            bench.fx.app.readiness.components()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let valid = bench.verp(bench.fx.issue.id, 1);
    let mut idle = bench.client().await;
    let mut busy = bench.client().await;
    busy.expect("MAIL FROM:<>", 250).await;
    busy.expect(&format!("RCPT TO:<{valid}>"), 250).await;
    busy.expect("DATA", 354).await;
    busy.write(b"Subject: half a report\r\n").await;

    bench.shutdown.cancel();
    // The idle connection is told at once.
    let a = idle.answer().await;
    assert_eq!(a.code, 421, "{a:?}");
    assert!(a.text.starts_with("4.3.2"), "{a:?}");
    idle.expect_closed().await;
    // The message in hand still gets its answer, then the connection closes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    busy.write(b"\r\nbody\r\n.\r\n").await;
    let a = busy.answer().await;
    assert!([250, 554].contains(&a.code), "{a:?}");
    let closing = busy.answer().await;
    assert_eq!(closing.code, 421, "{closing:?}");
    busy.expect_closed().await;

    let app = bench.fx.app.clone();
    tokio::time::timeout(PATIENCE, bench.running)
        .await
        .expect("the receiver stops")
        .expect("cleanly");
    assert!(
        app.readiness
            .components()
            .contains(&(COMPONENT, ComponentState::Stopped))
    );
    // And no longer listens.
    assert!(TcpStream::connect(bench.addr).await.is_err());
}

// --- Reports into the database -------------------------------------------------

/// Sends issue #1 to two readers through the relay, then hands the
/// receiver a DSN for one of them.
async fn a_dsn_to_a_verp_address_is_recorded_and_bounces_the_subscriber(backend: Backend) {
    let bench = Bench::start(backend, ReceiverOptions::default()).await;
    let readers = vec![
        "gone@example.net".to_owned(),
        "stays@example.net".to_owned(),
    ];
    let ids = bench.fx.add_confirmed(&readers).await;
    bench.fx.send(&bench.fx.issue).await;
    bench
        .fx
        .run_until_complete(bench.fx.issue.id, PATIENCE)
        .await;
    let sent = bench.relay.messages_to(&readers[0]);
    let message_id = sent[0]
        .header("Message-ID")
        .expect("a Message-ID")
        .trim_matches(['<', '>'])
        .to_owned();
    let verp = bench.verp(bench.fx.issue.id, ids[0]);

    let mut c = bench.client().await;
    c.expect("MAIL FROM:<>", 250).await;
    // Some MTAs lower- or upper-case the local part on the way back.
    c.expect(&format!("RCPT TO:<{}>", verp.to_ascii_uppercase()), 250)
        .await;
    c.expect("DATA", 354).await;
    c.write(&stuffed(&postfix_dsn(&verp, &readers[0], &message_id)))
        .await;
    let a = c.answer().await;
    assert_eq!(a.code, 250, "{a:?}");
    c.expect("QUIT", 221).await;

    let fx = bench.stop().await;
    assert_eq!(fx.subscription_state(&readers[0]).await, "bounced");
    assert!(fx.is_suppressed(&readers[0]).await);
    assert_eq!(fx.subscription_state(&readers[1]).await, "confirmed");
    assert!(!fx.is_suppressed(&readers[1]).await);
    let deliveries = fx.deliveries(fx.issue.id).await;
    assert_eq!(deliveries[&readers[0]].0.state.to_string(), "bounced");
    assert_eq!(deliveries[&readers[1]].0.state.to_string(), "sent");
}

/// With the database gone, the sender is told to try again (451), not
/// that the report is bad: it keeps the report and retries.
async fn a_report_that_cannot_be_recorded_gets_451(backend: Backend) {
    let bench = Bench::start(backend, ReceiverOptions::default()).await;
    let readers = vec!["later@example.net".to_owned()];
    let ids = bench.fx.add_confirmed(&readers).await;
    let verp = bench.verp(bench.fx.issue.id, ids[0]);
    let mut c = bench.client().await;
    c.expect("MAIL FROM:<>", 250).await;
    c.expect(&format!("RCPT TO:<{verp}>"), 250).await;
    c.expect("DATA", 354).await;
    bench.fx.app.close().await;
    c.write(&stuffed(&postfix_dsn(&verp, &readers[0], "x@herald.test")))
        .await;
    let a = c.answer().await;
    assert_eq!(a.code, 451, "{a:?}");
    assert!(a.text.starts_with("4.3.0"), "{a:?}");
    c.expect("NOOP", 250).await;
    bench.stop().await;
}

// --- herald serve ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_serve_will_not_start_when_bounce_listen_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let relay = "smtp://127.0.0.1:9";
    let fx = Fixture::new(TestDb::new(Backend::Sqlite).await, test_config("", relay)).await;
    let out = fx
        .herald(
            relay,
            &["serve"],
            &[
                ("HERALD_BOUNCE_DOMAIN", DOMAIN),
                ("HERALD_BOUNCE_LISTEN", &addr),
                ("HERALD_HTTP_BIND", &http),
            ],
        )
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("bounce.listen") && stderr.contains(&addr),
        "names the key and the value: {stderr}"
    );
}

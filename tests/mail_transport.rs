//! Integration tests for the test SMTP server and for `herald::mail`'s transports.

mod support;

use std::time::Duration;

use support::smtp_server::{Reply, Script, TestSmtpServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A minimal line-oriented SMTP client for poking the test server directly.
struct RawClient {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl RawClient {
    async fn connect(server: &TestSmtpServer) -> (RawClient, String) {
        let (r, w) = TcpStream::connect(server.addr())
            .await
            .unwrap()
            .into_split();
        let mut c = RawClient {
            r: BufReader::new(r),
            w,
        };
        let greeting = c.read_reply().await;
        (c, greeting)
    }

    /// Reads one (possibly multi-line) reply; returns its last line ("" on EOF).
    async fn read_reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).await.unwrap() == 0 {
                return String::new();
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_string();
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.read_reply().await
    }
}

#[tokio::test]
async fn server_records_unstuffed_data_and_scripts_rcpt_replies() {
    let script = Script::new()
        .rcpt(
            "greylist@x.test",
            [Reply::code(451, "4.7.1 Greylisted, try again"), Reply::ok()],
        )
        .rcpt_where(
            |a| a.starts_with("hard"),
            [Reply::code(550, "5.1.1 User unknown")],
        );
    let server = TestSmtpServer::start(script).await;
    let (mut c, greeting) = RawClient::connect(&server).await;
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(c.cmd("EHLO me").await.starts_with("250 AUTH"));
    assert!(c.cmd("MAIL FROM:<a@x.test>").await.starts_with("250"));
    assert!(
        c.cmd("RCPT TO:<greylist@x.test>")
            .await
            .starts_with("451 4.7.1")
    );
    assert!(
        c.cmd("RCPT TO:<hard1@x.test>")
            .await
            .starts_with("550 5.1.1")
    );
    assert!(c.cmd("RCPT TO:<greylist@x.test>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let reply = c.cmd("Subject: hi\r\n\r\n..leading dot\r\nend\r\n.").await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{reply}");
    assert!(c.cmd("QUIT").await.starts_with("221"));

    let msgs = server.wait_for_messages(1, Duration::from_secs(2)).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].mail_from, "a@x.test");
    assert_eq!(msgs[0].rcpt_to, vec!["greylist@x.test".to_string()]);
    assert_eq!(msgs[0].data, b"Subject: hi\r\n\r\n.leading dot\r\nend\r\n");
    assert_eq!(msgs[0].header("subject").as_deref(), Some("hi"));
    assert_eq!(server.messages_to("GREYLIST@x.test").len(), 1);
    assert_eq!(server.total_connections(), 1);
}

#[tokio::test]
async fn server_closes_with_421_after_n_messages_and_counts_concurrency() {
    let server = TestSmtpServer::start(Script::new().close_with_421_after(1)).await;
    let (mut c, _) = RawClient::connect(&server).await;
    let (mut c2, _) = RawClient::connect(&server).await;
    c.cmd("HELO me").await;
    c.cmd("MAIL FROM:<a@x.test>").await;
    c.cmd("RCPT TO:<b@x.test>").await;
    c.cmd("DATA").await;
    assert!(c.cmd("x\r\n.").await.starts_with("250"));
    assert_eq!(
        c.cmd("MAIL FROM:<a@x.test>").await,
        "421 4.7.0 Too many messages, closing"
    );
    assert_eq!(c.read_reply().await, "", "connection closed after 421");
    assert!(c2.cmd("NOOP").await.starts_with("250"));
    assert_eq!(server.max_concurrent_connections(), 2);
    assert_eq!(server.total_connections(), 2);
}

#[tokio::test]
async fn server_drops_and_stalls_after_data_as_scripted() {
    let script = Script::new()
        .drop_after_data_for("drop@x.test", 1)
        .stall_for("slow@x.test", Duration::from_millis(300))
        .data_reply_for("full@x.test", [Reply::code(452, "4.2.2 Mailbox full")]);
    let server = TestSmtpServer::start(script).await;
    for (rcpt, expect) in [
        ("drop@x.test", ""),
        ("drop@x.test", "250"),
        ("full@x.test", "452 4.2.2"),
        ("slow@x.test", "250"),
    ] {
        let (mut c, _) = RawClient::connect(&server).await;
        c.cmd("EHLO me").await;
        c.cmd("MAIL FROM:<a@x.test>").await;
        c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        c.cmd("DATA").await;
        let started = std::time::Instant::now();
        let reply = c.cmd("body\r\n.").await;
        assert!(reply.starts_with(expect), "{rcpt}: {reply:?}");
        if rcpt == "slow@x.test" {
            assert!(started.elapsed() >= Duration::from_millis(300));
        }
    }
    assert_eq!(server.messages().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// herald::mail transports against the test server
// ---------------------------------------------------------------------------------------------

use herald::mail::{
    EnhancedStatus, Mailer, SendFailure, SmtpEndpoint, SmtpStage, Tls, TransportConfig,
};

fn smtp_mailer(server: &TestSmtpServer, timeout: Duration) -> Mailer {
    Mailer::new(TransportConfig::Smtp {
        endpoint: server.url().parse().unwrap(),
        hello_name: Some("herald.test".into()),
        timeout,
    })
}

fn sample_message(n: usize) -> Vec<u8> {
    format!(
        "From: News <news@herald.test>\r\nTo: <reader@x.test>\r\nSubject: Issue {n}\r\n\
         Message-ID: <{n}@herald.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         Grüße, número {n}!\r\n.\r\n..two dots\r\n. dot space\r\nlast line\r\n"
    )
    .into_bytes()
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn message_arrives_byte_identical() {
    let server = TestSmtpServer::start(Script::new()).await;
    let mailer = smtp_mailer(&server, 5 * SECOND);
    let message = sample_message(1);
    let reply = mailer
        .send_one("bounce+1@herald.test", "reader@x.test", &message)
        .await
        .unwrap();
    assert_eq!(reply.code, 250);
    assert!(reply.text.starts_with("2.0.0 Ok: queued as"), "{reply:?}");
    assert_eq!(
        reply.enhanced,
        Some(EnhancedStatus {
            class: 2,
            subject: 0,
            detail: 0
        })
    );
    let got = server.wait_for_messages(1, SECOND).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, message);
    assert_eq!(got[0].mail_from, "bounce+1@herald.test");
    assert_eq!(got[0].rcpt_to, vec!["reader@x.test".to_string()]);
    let commands = server.commands();
    assert!(
        commands.iter().any(|(_, c)| c == "EHLO herald.test"),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|(_, c)| c.contains("BODY=8BITMIME")),
        "{commands:?}"
    );
    assert_eq!(commands.last().unwrap().1, "QUIT");
}

#[tokio::test]
async fn null_reverse_path_is_sent_as_empty() {
    let server = TestSmtpServer::start(Script::new()).await;
    let mailer = smtp_mailer(&server, 5 * SECOND);
    mailer
        .send_one("", "reader@x.test", b"Subject: x\r\n\r\nhi\r\n")
        .await
        .unwrap();
    // The test server offers SIZE, so the message's size follows the empty path.
    let commands = server.commands();
    assert!(
        commands
            .iter()
            .any(|(_, c)| c == &format!("MAIL FROM:<> SIZE={}", b"Subject: x\r\n\r\nhi\r\n".len())),
        "{commands:?}"
    );
}

#[tokio::test]
async fn ten_messages_reuse_one_connection() {
    let server = TestSmtpServer::start(Script::new()).await;
    let mailer = smtp_mailer(&server, 5 * SECOND);
    let mut conn = mailer.connect().await.unwrap();
    for n in 0..10 {
        let to = format!("r{n}@x.test");
        conn.send_raw("bounce@herald.test", &to, &sample_message(n))
            .await
            .unwrap();
    }
    conn.close().await;
    let got = server.wait_for_messages(10, SECOND).await;
    assert_eq!(got.len(), 10);
    for (n, m) in got.iter().enumerate() {
        assert_eq!(m.data, sample_message(n));
        assert_eq!(m.connection_id, got[0].connection_id);
    }
    assert_eq!(server.total_connections(), 1);
    assert_eq!(server.max_concurrent_connections(), 1);
    // No NOOP pings before reuse.
    assert!(!server.commands().iter().any(|(_, c)| c == "NOOP"));
}

#[tokio::test]
async fn rcpt_rejection_keeps_the_connection_usable() {
    let script = Script::new().rcpt_where(
        |a| a.starts_with("hard"),
        [Reply::code(550, "5.1.1 User unknown")],
    );
    let server = TestSmtpServer::start(script).await;
    let mailer = smtp_mailer(&server, 5 * SECOND);
    let mut conn = mailer.connect().await.unwrap();
    let err = conn
        .send_raw("bounce@herald.test", "hard1@x.test", &sample_message(1))
        .await
        .unwrap_err();
    let SendFailure::Rejected { stage, reply } = &err else {
        panic!("expected a rejection, got {err:?}");
    };
    assert_eq!(*stage, SmtpStage::RcptTo);
    assert_eq!(reply.code, 550);
    assert_eq!(reply.enhanced.unwrap().to_string(), "5.1.1");
    assert_eq!(reply.text, "5.1.1 User unknown");
    assert_eq!(err.to_string(), "RCPT TO rejected: 550 5.1.1 User unknown");
    assert!(conn.is_connected());

    conn.send_raw("bounce@herald.test", "ok@x.test", &sample_message(2))
        .await
        .unwrap();
    conn.close().await;
    assert_eq!(server.messages_to("ok@x.test").len(), 1);
    assert_eq!(server.total_connections(), 1, "same connection after RSET");
    assert!(server.commands().iter().any(|(_, c)| c == "RSET"));
}

#[tokio::test]
async fn data_rejection_keeps_the_connection_usable() {
    let script =
        Script::new().data_reply_for("full@x.test", [Reply::code(452, "4.2.2 Mailbox full")]);
    let server = TestSmtpServer::start(script).await;
    let mailer = smtp_mailer(&server, 5 * SECOND);
    let mut conn = mailer.connect().await.unwrap();
    let err = conn
        .send_raw("b@herald.test", "full@x.test", b"x\r\n")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SendFailure::Rejected { stage: SmtpStage::Data, reply } if reply.code == 452),
        "{err:?}"
    );
    conn.send_raw("b@herald.test", "ok@x.test", b"y\r\n")
        .await
        .unwrap();
    assert_eq!(server.total_connections(), 1);
}

#[tokio::test]
async fn reply_421_fails_then_next_send_reconnects() {
    let server = TestSmtpServer::start(Script::new().close_with_421_after(2)).await;
    let mailer = smtp_mailer(&server, 5 * SECOND);
    let mut conn = mailer.connect().await.unwrap();
    for n in 0..2 {
        conn.send_raw("b@herald.test", "r@x.test", &sample_message(n))
            .await
            .unwrap();
    }
    let err = conn
        .send_raw("b@herald.test", "r@x.test", &sample_message(2))
        .await
        .unwrap_err();
    match &err {
        SendFailure::Rejected { stage, reply } => {
            assert_eq!(*stage, SmtpStage::MailFrom);
            assert_eq!(reply.code, 421);
            assert_eq!(reply.enhanced.unwrap().to_string(), "4.7.0");
        }
        other => panic!("expected 421, got {other:?}"),
    }
    assert!(!conn.is_connected());
    conn.send_raw("b@herald.test", "r@x.test", &sample_message(2))
        .await
        .unwrap();
    assert_eq!(server.total_connections(), 2);
    assert_eq!(server.messages().len(), 3);
}

#[tokio::test]
async fn drop_after_data_is_a_network_failure() {
    let server = TestSmtpServer::start(Script::new().drop_after_data_for("r@x.test", 1)).await;
    let mailer = smtp_mailer(&server, 5 * SECOND);
    let mut conn = mailer.connect().await.unwrap();
    let err = conn
        .send_raw("b@herald.test", "r@x.test", b"x\r\n")
        .await
        .unwrap_err();
    assert!(matches!(err, SendFailure::Network(_)), "{err:?}");
    conn.send_raw("b@herald.test", "r@x.test", b"x\r\n")
        .await
        .unwrap();
    assert_eq!(server.total_connections(), 2);
}

#[tokio::test]
async fn stall_longer_than_timeout_is_a_timeout() {
    let script = Script::new()
        .stall_for("slow@x.test", 3 * SECOND)
        .stall_rcpt_for("slowrcpt@x.test", 3 * SECOND);
    let server = TestSmtpServer::start(script).await;
    let mailer = smtp_mailer(&server, Duration::from_millis(400));
    let mut conn = mailer.connect().await.unwrap();
    let started = std::time::Instant::now();
    let err = conn
        .send_raw("b@herald.test", "slow@x.test", b"x\r\n")
        .await
        .unwrap_err();
    assert_eq!(err, SendFailure::Timeout(SmtpStage::Data));
    assert!(started.elapsed() < 2 * SECOND);
    let err = conn
        .send_raw("b@herald.test", "slowrcpt@x.test", b"x\r\n")
        .await
        .unwrap_err();
    assert_eq!(err, SendFailure::Timeout(SmtpStage::RcptTo));
    // Each timeout dropped the connection; the next send reconnects.
    conn.send_raw("b@herald.test", "ok@x.test", b"x\r\n")
        .await
        .unwrap();
    assert_eq!(server.total_connections(), 3);
}

#[tokio::test]
async fn auth_plain_is_used_when_credentials_are_given() {
    let server = TestSmtpServer::start(Script::new()).await;
    let endpoint: SmtpEndpoint = format!("smtp://bob:s%40cret@{}", server.addr())
        .parse()
        .unwrap();
    assert_eq!(endpoint.tls, Tls::None);
    let mailer = Mailer::new(TransportConfig::Smtp {
        endpoint,
        hello_name: None,
        timeout: 5 * SECOND,
    });
    assert_eq!(
        mailer.describe(),
        format!("smtp://{} (plain)", server.addr())
    );
    mailer
        .send_one("b@herald.test", "r@x.test", b"x\r\n")
        .await
        .unwrap();
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode("\0bob\0s@cret");
    assert!(
        server
            .commands()
            .iter()
            .any(|(_, c)| *c == format!("AUTH PLAIN {expected}")),
        "{:?}",
        server.commands()
    );
}

#[tokio::test]
async fn starttls_required_but_not_offered_is_a_tls_failure() {
    let server = TestSmtpServer::start(Script::new()).await;
    let mailer = Mailer::new(TransportConfig::Smtp {
        endpoint: format!("{}?tls=starttls", server.url()).parse().unwrap(),
        hello_name: None,
        timeout: 5 * SECOND,
    });
    let err = mailer.connect().await.err().expect("must fail");
    assert!(
        matches!(&err, SendFailure::Tls(m) if m.contains("does not offer STARTTLS")),
        "{err:?}"
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn connection_refused_is_a_network_failure() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mailer = Mailer::new(TransportConfig::Smtp {
        endpoint: format!("smtp://127.0.0.1:{port}").parse().unwrap(),
        hello_name: None,
        timeout: 5 * SECOND,
    });
    let err = mailer
        .send_one("b@herald.test", "r@x.test", b"x\r\n")
        .await
        .unwrap_err();
    assert!(matches!(err, SendFailure::Network(_)), "{err:?}");
}

#[tokio::test]
async fn invalid_address_is_reported_without_sending() {
    let server = TestSmtpServer::start(Script::new()).await;
    let mailer = smtp_mailer(&server, 5 * SECOND);
    let mut conn = mailer.connect().await.unwrap();
    let err = conn
        .send_raw("b@herald.test", "not an address", b"x\r\n")
        .await
        .unwrap_err();
    assert!(matches!(err, SendFailure::InvalidAddress(_)), "{err:?}");
    conn.send_raw("b@herald.test", "r@x.test", b"x\r\n")
        .await
        .unwrap();
    assert_eq!(server.total_connections(), 1);
}

#[tokio::test]
async fn file_outbox_writes_identical_eml() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("outbox");
    let mailer = Mailer::new(TransportConfig::FileOutbox { dir: dir.clone() });
    assert_eq!(mailer.describe(), format!("file outbox {}", dir.display()));
    let message = sample_message(7);
    let reply = mailer
        .send_one("b@herald.test", "r@x.test", &message)
        .await
        .unwrap();
    assert_eq!(reply.code, 250);
    let path = reply
        .text
        .strip_prefix("written to ")
        .expect(&reply.text)
        .to_string();
    assert!(path.ends_with(".eml"), "{path}");
    assert_eq!(std::fs::read(&path).unwrap(), message);
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(entries.len(), 1);

    let mut conn = mailer.connect().await.unwrap();
    conn.send_raw("b@herald.test", "r2@x.test", b"second\r\n")
        .await
        .unwrap();
    conn.close().await;
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}

#[tokio::test]
async fn connection_closed_while_idle_is_reopened_transparently() {
    let server = TestSmtpServer::start(Script::new().close_silently_after(1)).await;
    let mailer = smtp_mailer(&server, 5 * SECOND);
    let mut conn = mailer.connect().await.unwrap();
    conn.send_raw("b@herald.test", "r@x.test", b"one\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The server hung up after message 1; MAIL FROM fails with EOF and the send is retried once.
    conn.send_raw("b@herald.test", "r@x.test", b"two\r\n")
        .await
        .unwrap();
    assert_eq!(server.messages().len(), 2);
    assert_eq!(server.total_connections(), 2);
}

#[tokio::test]
async fn idle_check_absorbs_an_unsolicited_421() {
    let server = TestSmtpServer::start(Script::new().close_with_421_after(1)).await;
    let mailer = smtp_mailer(&server, 5 * SECOND);
    let mut conn = mailer.connect().await.unwrap();
    conn.set_idle_check(Duration::ZERO);
    conn.send_raw("b@herald.test", "r@x.test", b"one\r\n")
        .await
        .unwrap();
    // The NOOP before reuse gets the 421; the send reconnects instead of failing.
    conn.send_raw("b@herald.test", "r@x.test", b"two\r\n")
        .await
        .unwrap();
    assert_eq!(server.messages().len(), 2);
    assert_eq!(server.total_connections(), 2);
    assert!(server.commands().iter().any(|(_, c)| c == "NOOP"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_can_hold_connections_in_spawned_tasks() {
    let server = TestSmtpServer::start(Script::new()).await;
    let mailer = smtp_mailer(&server, 5 * SECOND);
    let mut tasks = Vec::new();
    for w in 0..3 {
        let mailer = mailer.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = mailer.connect().await.unwrap();
            for n in 0..4 {
                let to = format!("w{w}n{n}@x.test");
                conn.send_raw("b@herald.test", &to, b"x\r\n").await.unwrap();
            }
            conn.close().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(server.messages().len(), 12);
    assert_eq!(server.total_connections(), 3);
    assert!(server.max_concurrent_connections() <= 3);
}

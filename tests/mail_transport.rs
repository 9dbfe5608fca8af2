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

//! Relays as they are in the wild: STARTTLS and implicit TLS with a certificate from a test CA
//! generated here (`rcgen`), AUTH PLAIN/LOGIN with right and wrong passwords, AUTH offered only
//! after TLS, untrusted certificates with and without `smtp.ca_file`, `smtp.tls_insecure`,
//! SMTPUTF8, and no password in the log of the real binary at debug/trace level.

mod support;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use herald::mail::{CaFile, Mailer, SendFailure, SmtpStage, TlsTrust, TransportConfig};
use support::app::{Backend, TestApp};
use support::cli::{herald_command, text};
use support::smtp_server::{Script, TestSmtpServer};
use support::tls::{Cert, Security, TestPki};

const TIMEOUT: Duration = Duration::from_secs(10);
const USER: &str = "ann@corp.test";
const PASSWORD: &str = "c0rrect-Horse-battery";

fn message(to: &str) -> Vec<u8> {
    format!(
        "From: News <news@herald.test>\r\nTo: <{to}>\r\nSubject: Relay test\r\n\
         Message-ID: <relay@herald.test>\r\n\r\nHello over TLS.\r\n"
    )
    .into_bytes()
}

fn mailer(url: &str, trust: TlsTrust) -> Mailer {
    Mailer::with_trust(
        TransportConfig::Smtp {
            endpoint: url.parse().expect("SMTP URL"),
            hello_name: Some("herald.test".into()),
            timeout: TIMEOUT,
        },
        trust,
    )
}

fn trusting(pki: &TestPki, dir: &Path) -> TlsTrust {
    TlsTrust {
        ca_file: Some(CaFile::load(&pki.write_ca_file(dir)).expect("CA file loads")),
        insecure: false,
    }
}

fn insecure() -> TlsTrust {
    TlsTrust {
        ca_file: None,
        insecure: true,
    }
}

/// `smtp://user:pass@127.0.0.1:PORT?tls=starttls` (or `smtps://` / `?tls=none`).
fn url(server: &TestSmtpServer, scheme: &str, tls: &str, password: Option<&str>) -> String {
    let creds = password
        .map(|p| format!("{}:{p}@", USER.replace('@', "%40")))
        .unwrap_or_default();
    format!("{scheme}://{creds}{}{tls}", server.addr())
}

async fn send(mailer: &Mailer, to: &str) -> Result<(), SendFailure> {
    mailer
        .send_one("news@herald.test", to, &message(to))
        .await
        .map(|_| ())
}

fn untrusted_text(result: Result<(), SendFailure>) -> String {
    match result {
        Err(SendFailure::CertificateUntrusted(text)) => text,
        other => panic!("expected CertificateUntrusted, got {other:?}"),
    }
}

#[tokio::test]
async fn starttls_with_the_company_ca_and_auth_plain_and_login() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    for mechanism in ["PLAIN", "LOGIN"] {
        let server = TestSmtpServer::start_secured(
            Script::new(),
            Security::starttls(pki.server_config(Cert::CaSigned))
                .auth(USER, PASSWORD)
                .auth_tls_only()
                .mechanisms(mechanism),
        )
        .await;
        let ok = mailer(
            &url(&server, "smtp", "?tls=starttls", Some(PASSWORD)),
            trusting(&pki, dir.path()),
        );
        send(&ok, "reader@x.test").await.expect(mechanism);
        assert_eq!(server.messages_to("reader@x.test").len(), 1, "{mechanism}");
        let commands: Vec<String> = server.commands().into_iter().map(|(_, c)| c).collect();
        assert!(
            commands.iter().any(|c| c.eq_ignore_ascii_case("STARTTLS")),
            "{commands:?}"
        );
        assert!(
            commands.iter().any(|c| c
                .to_ascii_uppercase()
                .starts_with(&format!("AUTH {mechanism}"))),
            "{mechanism}: {commands:?}"
        );

        let wrong = mailer(
            &url(&server, "smtp", "?tls=starttls", Some("wrong-password")),
            trusting(&pki, dir.path()),
        );
        match send(&wrong, "reader@x.test").await {
            Err(SendFailure::Rejected {
                stage: SmtpStage::Auth,
                reply,
            }) => {
                assert_eq!(reply.code, 535, "{mechanism}: {reply}");
                assert_eq!(
                    reply.enhanced.map(|e| e.to_string()).as_deref(),
                    Some("5.7.8")
                );
            }
            other => panic!("{mechanism}: expected a 535 at AUTH, got {other:?}"),
        }
        assert_eq!(
            server.message_count(),
            1,
            "nothing sent after a failed login"
        );
    }
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_needs_smtp_ca_file() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = TestSmtpServer::start_secured(
        Script::new(),
        Security::starttls(pki.server_config(Cert::CaSigned)),
    )
    .await;
    let u = url(&server, "smtp", "?tls=starttls", None);

    let err = untrusted_text(send(&mailer(&u, TlsTrust::default()), "a@x.test").await);
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(err.contains("set smtp.ca_file"), "{err}");
    assert!(
        err.contains(&server.addr().to_string()),
        "names host:port: {err}"
    );
    let shown = SendFailure::CertificateUntrusted(err.clone()).to_string();
    assert!(
        !shown.contains("Connection error") && shown.matches("not trusted").count() == 1,
        "no doubled labels: {shown}"
    );
    assert_eq!(server.message_count(), 0);

    send(&mailer(&u, trusting(&pki, dir.path())), "a@x.test")
        .await
        .expect("trusted through smtp.ca_file");
    assert_eq!(server.message_count(), 1);
}

#[tokio::test]
async fn self_signed_and_wrong_name_certificates_are_refused_unless_insecure() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let self_signed = TestSmtpServer::start_secured(
        Script::new(),
        Security::starttls(pki.server_config(Cert::SelfSigned)),
    )
    .await;
    let u = url(&self_signed, "smtp", "?tls=starttls", None);
    let err = untrusted_text(send(&mailer(&u, trusting(&pki, dir.path())), "a@x.test").await);
    assert!(
        err.contains("CaUsedAsEndEntity") && err.contains("smtp.tls_insecure"),
        "{err}"
    );
    send(&mailer(&u, insecure()), "a@x.test")
        .await
        .expect("smtp.tls_insecure accepts a self-signed certificate");
    assert_eq!(self_signed.message_count(), 1);

    let wrong_name = TestSmtpServer::start_secured(
        Script::new(),
        Security::starttls(pki.server_config(Cert::WrongName)),
    )
    .await;
    let u = url(&wrong_name, "smtp", "?tls=starttls", None);
    let err = untrusted_text(send(&mailer(&u, trusting(&pki, dir.path())), "a@x.test").await);
    assert!(
        err.contains("NotValidForName") && err.contains("other.example"),
        "{err}"
    );
    send(&mailer(&u, insecure()), "a@x.test")
        .await
        .expect("smtp.tls_insecure accepts any name");
    let m = mailer(&u, insecure());
    assert!(
        m.describe().contains("smtp.tls_insecure"),
        "{}",
        m.describe()
    );
}

#[tokio::test]
async fn auth_offered_only_after_tls_needs_a_starttls_url() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = TestSmtpServer::start_secured(
        Script::new(),
        Security::starttls(pki.server_config(Cert::CaSigned))
            .auth(USER, PASSWORD)
            .auth_tls_only(),
    )
    .await;
    let plain = mailer(
        &url(&server, "smtp", "?tls=none", Some(PASSWORD)),
        trusting(&pki, dir.path()),
    );
    match send(&plain, "a@x.test").await {
        Err(SendFailure::NoAuthMechanism(text)) => {
            assert!(
                text.contains("STARTTLS") && text.contains("smtps://"),
                "{text}"
            );
            assert!(text.contains(&server.addr().to_string()), "{text}");
        }
        other => panic!("expected NoAuthMechanism, got {other:?}"),
    }
    assert!(
        !server
            .commands()
            .iter()
            .any(|(_, c)| c.to_ascii_uppercase().starts_with("AUTH")),
        "no AUTH attempted in the clear"
    );
    let tls = mailer(
        &url(&server, "smtp", "?tls=starttls", Some(PASSWORD)),
        trusting(&pki, dir.path()),
    );
    send(&tls, "a@x.test").await.expect("AUTH after STARTTLS");
    assert_eq!(server.message_count(), 1);

    // Without credentials, a relay that requires AUTH refuses MAIL.
    let anonymous = mailer(
        &url(&server, "smtp", "?tls=starttls", None),
        trusting(&pki, dir.path()),
    );
    match send(&anonymous, "a@x.test").await {
        Err(SendFailure::Rejected {
            stage: SmtpStage::MailFrom,
            reply,
        }) => assert_eq!(reply.code, 530, "{reply}"),
        other => panic!("expected 530 at MAIL FROM, got {other:?}"),
    }
}

#[tokio::test]
async fn a_relay_offering_no_usable_mechanism_says_so() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = TestSmtpServer::start_secured(
        Script::new(),
        Security::starttls(pki.server_config(Cert::CaSigned))
            .auth(USER, PASSWORD)
            .mechanisms("CRAM-MD5"),
    )
    .await;
    let m = mailer(
        &url(&server, "smtp", "?tls=starttls", Some(PASSWORD)),
        trusting(&pki, dir.path()),
    );
    match send(&m, "a@x.test").await {
        Err(SendFailure::NoAuthMechanism(text)) => {
            assert!(text.contains("neither AUTH PLAIN nor LOGIN"), "{text}")
        }
        other => panic!("expected NoAuthMechanism, got {other:?}"),
    }
}

#[tokio::test]
async fn implicit_tls_sends_several_messages_on_one_connection() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = TestSmtpServer::start_secured(
        Script::new(),
        Security::implicit(pki.server_config(Cert::CaSigned)).auth(USER, PASSWORD),
    )
    .await;
    let u = url(&server, "smtps", "", Some(PASSWORD));
    let untrusted = send(&mailer(&u, TlsTrust::default()), "a@x.test").await;
    assert!(untrusted_text(untrusted).contains("UnknownIssuer"));

    let m = mailer(&u, trusting(&pki, dir.path()));
    let mut conn = m.connect().await.expect("smtps connect");
    for n in 0..5 {
        let to = format!("r{n}@x.test");
        conn.send_raw("news@herald.test", &to, &message(&to))
            .await
            .expect("send over smtps");
    }
    conn.close().await;
    let messages = server.messages();
    assert_eq!(messages.len(), 5);
    assert!(
        messages
            .iter()
            .all(|msg| msg.connection_id == messages[0].connection_id),
        "one connection for all"
    );
    assert!(String::from_utf8_lossy(&messages[0].data).contains("Hello over TLS."));
}

#[tokio::test]
async fn connection_errors_name_the_step_and_host_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let m = mailer(&format!("smtp://{addr}"), TlsTrust::default());
    let err = send(&m, "a@x.test").await.unwrap_err().to_string();
    assert!(err.contains(&format!("connecting to {addr}")), "{err}");
    assert_eq!(err.matches("network error").count(), 1, "{err}");
    assert!(!err.contains("Connection error"), "{err}");
}

#[tokio::test]
async fn utf8_addresses_go_only_to_relays_with_smtputf8() {
    let with = TestSmtpServer::start(Script::new()).await;
    let m = mailer(&with.url(), TlsTrust::default());
    send(&m, "jürgen@example.org")
        .await
        .expect("relay with SMTPUTF8");
    let mail_from = with
        .commands()
        .into_iter()
        .map(|(_, c)| c)
        .find(|c| c.starts_with("MAIL"))
        .unwrap();
    assert!(mail_from.contains("SMTPUTF8"), "{mail_from}");
    assert_eq!(with.messages()[0].rcpt_to, vec!["jürgen@example.org"]);

    let without =
        TestSmtpServer::start_secured(Script::new(), Security::default().without_smtputf8()).await;
    let m = mailer(&without.url(), TlsTrust::default());
    match send(&m, "jürgen@example.org").await {
        Err(failure @ SendFailure::NeedsSmtpUtf8(_)) => {
            let text = failure.to_string();
            assert!(
                text.contains("jürgen@example.org") && text.contains("needs SMTPUTF8"),
                "{text}"
            );
            assert_eq!(
                herald::delivery::classify::classify(&Err(failure)),
                herald::delivery::classify::Verdict::Permanent
            );
        }
        other => panic!("expected NeedsSmtpUtf8, got {other:?}"),
    }
    assert!(
        !without
            .commands()
            .iter()
            .any(|(_, c)| c.starts_with("MAIL")),
        "nothing sent"
    );
    // An ASCII address still goes through the same connection setup.
    send(&m, "ascii@example.org").await.expect("ASCII address");
}

on_each_backend!(
    confirmation_mail_goes_over_starttls_with_auth,
    utf8_subscribers_are_one_reader_whatever_the_case,
    the_binary_never_logs_the_password,
);

/// A `TestApp` whose mail goes to `server` at `smtp_url`, trusting `pki`'s CA.
async fn app_for(backend: Backend, smtp_url: String, ca: &Path) -> TestApp {
    let ca = ca.to_owned();
    TestApp::spawn_with(backend, move |c| {
        c.smtp.url = smtp_url.parse().expect("URL");
        c.smtp.ca_file = Some(CaFile::load(&ca).expect("CA"));
    })
    .await
}

async fn confirmation_mail_goes_over_starttls_with_auth(backend: Backend) {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = TestSmtpServer::start_secured(
        Script::new(),
        Security::starttls(pki.server_config(Cert::CaSigned))
            .auth(USER, PASSWORD)
            .auth_tls_only(),
    )
    .await;
    let u = url(&server, "smtp", "?tls=starttls", Some(PASSWORD));
    let t = app_for(backend, u, &pki.write_ca_file(dir.path())).await;
    let page = t.post_subscribe_form("Reader@Example.org", None).await;
    assert!(page.status < 400, "{}", page.status);
    let got = server.wait_for_messages(1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "the confirmation mail arrives over TLS");
    assert_eq!(got[0].rcpt_to, vec!["Reader@example.org"]);
    assert!(t.app.mailer.describe().contains("also trusting"));
}

async fn utf8_subscribers_are_one_reader_whatever_the_case(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    t.add_confirmed("Jürgen@Example.org").await;
    let id = t.subscriber_id("jürgen@example.org").await;
    assert!(id.is_some(), "stored and found");
    assert_eq!(t.subscriber_id("JÜRGEN@EXAMPLE.ORG").await, id);
    assert_eq!(
        t.subscriber_id("ju\u{308}rgen@example.org").await,
        id,
        "NFD spelling"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM subscribers WHERE email = 'jürgen@example.org'")
            .await,
        1
    );

    // Import through the real binary: the UTF-8 address is one reader with the one above,
    // and a new UTF-8 address is accepted, not rejected as "characters mail servers refuse".
    std::fs::write(
        t.dir.path().join("list.csv"),
        "email,name\nJÜRGEN@example.org,Jürgen\nзоя@example.org,Зоя\n",
    )
    .unwrap();
    let out = herald_command(&t, &["subscribers", "import", "list.csv", "--confirmed"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("invalid: 0"), "{stdout}");
    assert!(t.subscriber_id("ЗОЯ@example.org").await.is_some());
    assert_eq!(t.count("SELECT COUNT(*) FROM subscribers").await, 2);
}

async fn the_binary_never_logs_the_password(backend: Backend) {
    let pki = TestPki::new();
    let t = TestApp::spawn(backend).await;
    let ca = pki.write_ca_file(t.dir.path());
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secrets = [
        PASSWORD.to_string(),
        b64(PASSWORD),
        b64(&format!("\0{USER}\0{PASSWORD}")),
    ];
    for (mechanism, level) in [("PLAIN", "debug"), ("LOGIN", "trace")] {
        let server = TestSmtpServer::start_secured(
            Script::new(),
            Security::starttls(pki.server_config(Cert::CaSigned))
                .auth(USER, PASSWORD)
                .mechanisms(mechanism),
        )
        .await;
        let to = format!("{}@example.org", mechanism.to_lowercase());
        let out = herald_command(&t, &["subscribers", "add", &to])
            .env(
                "HERALD_SMTP_URL",
                url(&server, "smtp", "?tls=starttls", Some(PASSWORD)),
            )
            .env("HERALD_SMTP_CA_FILE", &ca)
            .env("HERALD_LOG", level)
            .output()
            .unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("confirmation mail sent"), "{stdout}");
        assert_eq!(server.message_count(), 1, "{mechanism}");
        // The level is really on: Herald's own debug lines are there.
        assert!(stderr.contains("DEBUG"), "{level}: {stderr}");
        for secret in &secrets {
            assert!(
                !stderr.contains(secret.as_str()) && !stdout.contains(secret.as_str()),
                "{mechanism} at {level}: {secret:?} in the output"
            );
        }
        // The password did cross the wire (so the check above means something).
        let auth_lines: Vec<String> = server.commands().into_iter().map(|(_, c)| c).collect();
        assert!(
            auth_lines.iter().any(|c| c.starts_with("AUTH")),
            "{auth_lines:?}"
        );
    }

    // A CA file that is not there stops the binary with the key and the path.
    let out = herald_command(&t, &["status"])
        .env("HERALD_SMTP_CA_FILE", t.dir.path().join("no-such-ca.pem"))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("smtp.ca_file") && stderr.contains("no-such-ca.pem"),
        "{stderr}"
    );

    // smtp.tls_insecure is shouted at start and shown where the transport is described.
    let out = herald_command(&t, &["subscribers", "add", "loud@example.org"])
        .env("HERALD_SMTP_TLS_INSECURE", "true")
        .env("HERALD_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("smtp.tls_insecure = true"),
        "{stderr}"
    );
    assert!(stdout.contains("any certificate accepted"), "{stdout}");
}

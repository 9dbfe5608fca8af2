//! The logs of the real binary through a real send (STARTTLS + AUTH relay,
//! a hard bounce that quotes the address, a greylisted recipient): at info
//! (as JSON lines) and at debug (as text) they carry no subscriber address
//! in full below debug, no unsubscribe token, no SMTP password and no
//! instance secret; every delivery attempt is logged with its issue and
//! newsletter and a masked address.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use herald::content::ComposeOptions;
use herald::mail::CaFile;
use support::app::{Backend, TestApp};
use support::cli::{herald_command, text};
use support::engine::{add_confirmed, sample_digest};
use support::smtp_server::{Reply, Script, TestSmtpServer};
use support::tls::{Cert, Security, TestPki};

const USER: &str = "relay-user@corp.test";
const PASSWORD: &str = "Sup3r-secret-relay-pass";

fn smtp_url(server: &TestSmtpServer) -> String {
    format!(
        "smtp://{}:{PASSWORD}@{}?tls=starttls",
        USER.replace('@', "%40"),
        server.addr()
    )
}

async fn a_send_logs_no_addresses_tokens_or_passwords(backend: Backend) {
    let pki = TestPki::new();
    let server = TestSmtpServer::start_secured(
        Script::new()
            .rcpt(
                "gone.reader@privacy.test",
                [Reply::code(
                    550,
                    "5.1.1 <gone.reader@privacy.test>: Recipient address rejected: User unknown",
                )],
            )
            .rcpt(
                "grey.reader@privacy.test",
                [
                    Reply::code(451, "4.7.1 <grey.reader@privacy.test>: greylisted"),
                    Reply::ok(),
                ],
            ),
        Security::starttls(pki.server_config(Cert::CaSigned)).auth(USER, PASSWORD),
    )
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = pki.write_ca_file(dir.path());
    let url = smtp_url(&server);
    let ca_for_config = ca.clone();
    let url_for_config = url.clone();
    let t = TestApp::spawn_with(backend, move |c| {
        c.smtp.url = url_for_config.parse().expect("URL");
        c.smtp.ca_file = Some(CaFile::load(&ca_for_config).expect("CA"));
        c.delivery.retry_schedule = "1s".parse().expect("retry schedule");
    })
    .await;
    let emails: Vec<String> = [
        "first.reader@privacy.test",
        "second.reader@privacy.test",
        "gone.reader@privacy.test",
        "grey.reader@privacy.test",
    ]
    .map(str::to_owned)
    .to_vec();
    add_confirmed(&t.app, &t.db, t.dir.path(), &emails).await;
    let mut tokens = Vec::new();
    for e in &emails {
        let link = t.unsubscribe_url_for(e).await;
        tokens.push(link.rsplit('/').next().expect("token").to_owned());
    }
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let instance_secret = t.app.config.security.secret.expose_text();
    let secrets = [
        PASSWORD.to_owned(),
        b64(PASSWORD),
        b64(&format!("\0{USER}\0{PASSWORD}")),
        instance_secret,
    ];

    for (level, format) in [("info", "json"), ("debug", "text")] {
        t.app
            .import_items_file(&t.app.newsletter, &sample_digest(), true)
            .await
            .expect("import items");
        let issue = t
            .app
            .compose_issue(&t.app.newsletter, ComposeOptions::default())
            .await
            .expect("compose");
        let before = server.message_count();
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::process::Command::from(herald_command(
                &t,
                &["send", &issue.number.to_string(), "--wait"],
            ))
            .env("HERALD_SMTP_URL", &url)
            .env("HERALD_SMTP_CA_FILE", &ca)
            .env("HERALD_DELIVERY_RETRY_SCHEDULE", "1s")
            .env("HERALD_LOG", level)
            .env("HERALD_LOG_FORMAT", format)
            .kill_on_drop(true)
            .output(),
        )
        .await
        .expect("herald send --wait ended within 120 s")
        .expect("run herald");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        // `send --wait` says so, in its exit status too, when a delivery failed for good
        // (the first issue's bounce; the second goes only to the readers left).
        assert!(
            out.status.success() || stderr.contains("error: 1 deliveries failed permanently"),
            "{stdout}{stderr}"
        );
        if std::env::var_os("SHOW_HERALD_LOGS").is_some() {
            eprintln!("--- {level} ---\n{stderr}");
        }
        // The bounced reader is refused at RCPT (and suppressed after the first issue).
        let expected = 3;
        assert_eq!(
            server.message_count() - before,
            expected,
            "{level}: {stderr}"
        );
        assert!(
            server.commands().iter().any(|(_, c)| c.starts_with("AUTH")),
            "the password crossed the wire, so its absence below means something"
        );

        for secret in &secrets {
            assert!(
                !stderr.contains(secret.as_str()),
                "{level}: a secret ({} characters) in the log:\n{stderr}",
                secret.len()
            );
        }
        for token in &tokens {
            assert!(
                !stderr.contains(token.as_str()),
                "{level}: an unsubscribe token in the log:\n{stderr}"
            );
        }
        let attempts: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("delivery attempt"))
            .collect();
        assert!(
            attempts.len() >= expected,
            "{level}: each attempt is logged:\n{stderr}"
        );
        for line in &attempts {
            assert!(
                line.contains(&issue.number.to_string())
                    && line.contains("newsletter")
                    && line.contains("***@privacy.test"),
                "{level}: {line}"
            );
        }
        if level == "info" {
            for e in &emails {
                assert!(
                    !stderr.contains(e.as_str()),
                    "info: {e} in full in the log:\n{stderr}"
                );
            }
            // JSON lines: one object each, with the fields a log collector reads.
            // (The command's own closing `error: …` line is not a log event.)
            for line in stderr
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with("error: "))
            {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                for key in ["timestamp", "level", "target", "fields"] {
                    assert!(v.get(key).is_some(), "no {key}: {line}");
                }
            }
            let attempt: serde_json::Value =
                serde_json::from_str(attempts[0]).expect("JSON attempt line");
            assert_eq!(attempt["fields"]["message"], "delivery attempt");
            assert_eq!(attempt["fields"]["issue"], issue.number);
            assert_eq!(attempt["fields"]["newsletter"], t.app.newsletter.id);
        } else {
            assert!(stderr.contains("DEBUG"), "the level is really on: {stderr}");
        }
    }
}

/// What the fake collector received: (body, Content-Type) per POST.
type Received = Arc<Mutex<Vec<(Vec<u8>, String)>>>;

/// A fake OpenTelemetry collector accepting `POST /v1/traces`; its base URL and what it got.
async fn collector() -> (String, Received) {
    let got: Received = Arc::default();
    let store = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let store = store.clone();
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    store
                        .lock()
                        .expect("lock")
                        .push((body.to_vec(), content_type));
                    // An empty ExportTraceServiceResponse: full success.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn send_wait_exports_its_spans_over_otlp(backend: Backend) {
    let (endpoint, got) = collector().await;
    let t = TestApp::spawn(backend).await;
    add_confirmed(
        &t.app,
        &t.db,
        t.dir.path(),
        &["otlp.reader@privacy.test".to_owned()],
    )
    .await;
    t.app
        .import_items_file(&t.app.newsletter, &sample_digest(), true)
        .await
        .expect("import items");
    let issue = t
        .app
        .compose_issue(&t.app.newsletter, ComposeOptions::default())
        .await
        .expect("compose");
    let out = herald_command(&t, &["send", &issue.number.to_string(), "--wait"])
        .env("HERALD_LOG", "info")
        .env("HERALD_LOG_OTLP_ENDPOINT", &endpoint)
        .output()
        .expect("run herald");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(t.smtp.message_count(), 1);
    // Exported before the process exited (flushed at shutdown, not left in a batch).
    let bodies = got.lock().expect("lock").clone();
    assert!(!bodies.is_empty(), "no POST /v1/traces: {stderr}");
    for (_, content_type) in &bodies {
        assert_eq!(content_type, "application/x-protobuf");
    }
    let all: Vec<u8> = bodies.into_iter().flat_map(|(b, _)| b).collect();
    for name in ["engine.batch", "herald"] {
        assert!(contains(&all, name), "no {name:?} in the exported spans");
    }
    // The attempt event rides on its span with the masked address only.
    assert!(!contains(&all, "otlp.reader@privacy.test"));

    // A collector that is not there costs a warning at most, never the send.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let issue = {
        t.app
            .import_items_file(&t.app.newsletter, &sample_digest(), true)
            .await
            .expect("import items");
        t.app
            .compose_issue(&t.app.newsletter, ComposeOptions::default())
            .await
            .expect("compose")
    };
    let started = std::time::Instant::now();
    let out = herald_command(&t, &["send", &issue.number.to_string(), "--wait"])
        .env("HERALD_LOG_OTLP_ENDPOINT", format!("http://{dead}"))
        .output()
        .expect("run herald");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(t.smtp.message_count(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "exit waits for the collector only a bounded time"
    );

    // A malformed endpoint is refused at start, naming the key.
    let out = herald_command(&t, &["status"])
        .env("HERALD_LOG_OTLP_ENDPOINT", "collector:4318")
        .output()
        .expect("run herald");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("log.otlp_endpoint"), "{stderr}");
}

/// `herald serve` at debug, as JSON, exporting traces: each request is a span named by
/// its route template, and the tokens in confirmation and unsubscribe paths reach
/// neither the log nor the collector.
async fn serve_traces_routes_never_tokens(backend: Backend) {
    let (endpoint, got) = collector().await;
    let t = TestApp::spawn(backend).await;
    t.add_confirmed("leaving.reader@privacy.test").await;
    let unsubscribe = t.unsubscribe_url_for("leaving.reader@privacy.test").await;
    let unsubscribe_token = unsubscribe.rsplit('/').next().expect("token").to_owned();
    let served = support::cli::spawn_serve(
        &t,
        &[
            ("HERALD_LOG", "debug"),
            ("HERALD_LOG_FORMAT", "json"),
            ("HERALD_LOG_OTLP_ENDPOINT", &endpoint),
        ],
    );
    served.wait_healthy(&t.client).await;
    let base = &served.base;
    let path = format!("/unsubscribe/{unsubscribe_token}");
    let r = t
        .client
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    let r = t
        .client
        .post(format!("{base}{path}"))
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);
    let r = t
        .client
        .post(format!("{base}/subscribe"))
        .form(&[("email", "new.reader@privacy.test")])
        .send()
        .await
        .expect("POST subscribe");
    assert_eq!(r.status(), 200);
    let mail = t.confirmation_mail("new.reader@privacy.test").await;
    let confirm_path = support::app::text_part(&mail)
        .lines()
        .find_map(|l| {
            l.split_once("/confirm/")
                .map(|(_, token)| token.trim().to_owned())
        })
        .expect("a confirmation link");
    let r = t
        .client
        .get(format!("{base}/confirm/{confirm_path}"))
        .send()
        .await
        .expect("GET confirm");
    assert_eq!(r.status(), 200);

    let (_, log) = served.stop().await;
    assert!(
        log.contains("\"route\":\"/unsubscribe/{token}\""),
        "no request span with the route template: {log}"
    );
    for secret in [&unsubscribe_token, &confirm_path] {
        assert!(!log.contains(secret.as_str()), "a token in the log: {log}");
    }
    let all: Vec<u8> = got
        .lock()
        .expect("lock")
        .iter()
        .flat_map(|(b, _)| b.clone())
        .collect();
    for name in ["http.request", "/unsubscribe/{token}", "/confirm/{token}"] {
        assert!(contains(&all, name), "no {name:?} in the exported spans");
    }
    for secret in [&unsubscribe_token, &confirm_path] {
        assert!(!contains(&all, secret), "a token in the exported spans");
    }
}

on_each_backend!(
    a_send_logs_no_addresses_tokens_or_passwords,
    send_wait_exports_its_spans_over_otlp,
    serve_traces_routes_never_tokens
);

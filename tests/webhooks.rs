//! Provider webhooks (`POST /webhooks/{provider}`) through real HTTP, on
//! both backends: each provider's events signed as the provider signs them
//! (SNS with an RSA certificate served by a loopback server, Mailgun's
//! HMAC, SendGrid's ECDSA, Postmark's Basic credentials), forged and
//! missing signatures, replays, malformed and oversized bodies, garbage.

mod support;

use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald::config::Config;
use herald::content::ComposeOptions;
use herald::web::webhooks::EventWebhookKey;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;
use support::app::{Backend, TestApp};
use support::engine::{run_until_complete, sample_digest};

const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:herald-bounces";
const POSTMARK_USER: &str = "postmark-hook";
const POSTMARK_PASSWORD: &str = "postmark-password-0123456789";
const MAILGUN_KEY: &str = "mailgun-signing-key-0123456789abcdef";

// ---------------------------------------------------------------- signers

/// The provider keys of one test: an SNS signing certificate served over
/// loopback HTTP (with the SubscribeURL requests it saw), SendGrid's key pair.
struct Providers {
    sns_key: aws_lc_rs::rsa::KeyPair,
    sns_key_pem: String,
    sns_base: String,
    subscribe_hits: Arc<Mutex<Vec<String>>>,
    sendgrid: EcdsaKeyPair,
    _server: tokio::task::JoinHandle<()>,
}

impl Providers {
    async fn start() -> Providers {
        let sns_key =
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key");
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&sns_key).expect("pkcs8");
        let rc_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec()),
            &rcgen::PKCS_RSA_SHA256,
        )
        .expect("rcgen key");
        let cert_pem = rcgen::CertificateParams::new(vec!["sns.eu-west-1.amazonaws.test".into()])
            .expect("params")
            .self_signed(&rc_key)
            .expect("certificate")
            .pem();
        let subscribe_hits = Arc::new(Mutex::new(Vec::new()));
        let hits = subscribe_hits.clone();
        let app = axum::Router::new()
            .route(
                "/SimpleNotificationService-test.pem",
                axum::routing::get(move || {
                    let pem = cert_pem.clone();
                    async move { pem }
                }),
            )
            .route(
                "/confirm",
                axum::routing::get(move |uri: axum::http::Uri| {
                    let hits = hits.clone();
                    async move {
                        hits.lock()
                            .unwrap()
                            .push(uri.query().unwrap_or("").to_owned());
                        "<ConfirmSubscriptionResponse/>"
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let sns_base = format!("http://{}/", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let sendgrid = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("ECDSA key");
        Providers {
            sns_key,
            sns_key_pem: rc_key.serialize_pem(),
            sns_base,
            subscribe_hits,
            sendgrid,
            _server: server,
        }
    }

    fn configure(&self, config: &mut Config) {
        let w = &mut config.webhooks;
        w.ses_topic_arn = TOPIC.into();
        w.ses_cert_url_prefix = self.sns_base.clone();
        w.postmark_user = POSTMARK_USER.into();
        w.postmark_password = POSTMARK_PASSWORD.into();
        w.mailgun_signing_key = MAILGUN_KEY.into();
        let der =
            AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(self.sendgrid.public_key())
                .expect("SPKI");
        w.sendgrid_public_key =
            EventWebhookKey::parse(&STANDARD.encode(der.as_ref())).expect("SendGrid key");
    }

    fn cert_url(&self) -> String {
        format!("{}SimpleNotificationService-test.pem", self.sns_base)
    }

    /// An SNS message of `kind` carrying `fields`, signed with `version`.
    fn sns(&self, kind: &str, fields: Value, version: u8) -> Value {
        let mut msg = fields;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        msg["Type"] = json!(kind);
        msg["TopicArn"] = msg.get("TopicArn").cloned().unwrap_or(json!(TOPIC));
        msg["Timestamp"] = msg.get("Timestamp").cloned().unwrap_or(json!(now));
        msg["SignatureVersion"] = json!(version.to_string());
        msg["SigningCertURL"] = msg
            .get("SigningCertURL")
            .cloned()
            .unwrap_or(json!(self.cert_url()));
        let keys: &[&str] = if kind == "Notification" {
            &[
                "Message",
                "MessageId",
                "Subject",
                "Timestamp",
                "TopicArn",
                "Type",
            ]
        } else {
            &[
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            ]
        };
        let mut canonical = String::new();
        for key in keys {
            if let Some(v) = msg.get(*key).and_then(Value::as_str) {
                canonical.push_str(&format!("{key}\n{v}\n"));
            }
        }
        msg["Signature"] = json!(STANDARD.encode(self.rsa_sign(canonical.as_bytes(), version)));
        msg
    }

    fn rsa_sign(&self, data: &[u8], version: u8) -> Vec<u8> {
        if version == 2 {
            let mut sig = vec![0; self.sns_key.public_modulus_len()];
            self.sns_key
                .sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    data,
                    &mut sig,
                )
                .expect("sign");
            return sig;
        }
        // Neither aws-lc-rs nor ring signs with SHA-1 any more; SNS still does
        // (SignatureVersion 1, the default), so the test signs with openssl.
        let dir = tempfile::tempdir().expect("dir");
        let key = dir.path().join("key.pem");
        std::fs::write(&key, &self.sns_key_pem).expect("key file");
        let data_file = dir.path().join("data");
        std::fs::write(&data_file, data).expect("data file");
        let out = std::process::Command::new("openssl")
            .args(["dgst", "-sha1", "-sign"])
            .arg(&key)
            .arg(&data_file)
            .output()
            .expect("openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn sendgrid_headers(&self, body: &[u8], timestamp: i64) -> Vec<(&'static str, String)> {
        let mut signed = timestamp.to_string().into_bytes();
        signed.extend_from_slice(body);
        let sig = self
            .sendgrid
            .sign(&SystemRandom::new(), &signed)
            .expect("sign");
        vec![
            (
                "X-Twilio-Email-Event-Webhook-Signature",
                STANDARD.encode(sig.as_ref()),
            ),
            (
                "X-Twilio-Email-Event-Webhook-Timestamp",
                timestamp.to_string(),
            ),
        ]
    }
}

fn mailgun_signature(key: &str, timestamp: i64, token: &str) -> Value {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac");
    mac.update(format!("{timestamp}{token}").as_bytes());
    json!({
        "timestamp": timestamp.to_string(),
        "token": token,
        "signature": hex::encode(mac.finalize().into_bytes()),
    })
}

fn token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), "0123456789abcdefgh")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

// ---------------------------------------------------------------- payloads

/// What the test SMTP server saw of the issue sent to `email`: the
/// envelope sender (VERP) and the Message-ID, without its brackets.
struct Sent {
    return_path: String,
    message_id: String,
}

fn sent(t: &TestApp, email: &str) -> Sent {
    let message = t
        .smtp
        .messages_to(email)
        .pop()
        .unwrap_or_else(|| panic!("no message to {email}"));
    Sent {
        return_path: message.mail_from.clone(),
        message_id: message
            .header("Message-ID")
            .expect("Message-ID")
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned(),
    }
}

fn ses_bounce(email: &str, feedback_id: &str) -> String {
    ses_bounce_of(
        email,
        feedback_id,
        "digest@news.herald.test",
        "issue-1.0000@news.herald.test",
    )
}

fn ses_bounce_of(email: &str, feedback_id: &str, source: &str, message_id: &str) -> String {
    json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": email, "action": "failed", "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
            "timestamp": "2026-12-02T10:00:00.000Z", "feedbackId": feedback_id,
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com"
        },
        "mail": {
            "timestamp": "2026-12-02T09:59:58.000Z", "source": source,
            "messageId": "0100018c-ses", "destination": [email], "headersTruncated": false,
            "headers": [{"name": "Message-ID", "value": format!("<{message_id}>")}],
            "commonHeaders": {"messageId": format!("<{message_id}>")}
        }
    })
    .to_string()
}

fn ses_complaint(email: &str, feedback_id: &str, message_id: &str) -> String {
    json!({
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": email}],
            "timestamp": "2026-12-02T10:00:00.000Z", "feedbackId": feedback_id,
            "complaintFeedbackType": "abuse", "userAgent": "Yahoo!-Mail-Feedback/1.0"
        },
        "mail": {"timestamp": "2026-12-02T09:59:58.000Z", "source": "digest@news.herald.test",
                 "messageId": "0100018c-ses2", "destination": [email],
                 "commonHeaders": {"messageId": format!("<{message_id}>")}}
    })
    .to_string()
}

fn postmark_bounce(email: &str, id: i64) -> Value {
    json!({
        "RecordType": "Bounce", "ID": id, "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": email, "From": "digest@news.herald.test", "BouncedAt": "2026-12-02T10:00:00Z",
        "Inactive": true, "CanActivate": true, "Metadata": {}
    })
}

fn postmark_complaint(email: &str, id: i64) -> Value {
    json!({
        "RecordType": "SpamComplaint", "ID": id, "Type": "SpamComplaint", "TypeCode": 100001,
        "Name": "Spam complaint", "Description": "The subscriber explicitly marked this message as spam.",
        "Details": "Test spam complaint details", "Email": email, "MessageStream": "outbound",
        "BouncedAt": "2026-12-02T10:00:00Z", "Inactive": true
    })
}

fn mailgun_event(event: &str, email: &str, id: &str) -> Value {
    mailgun_event_of(
        event,
        email,
        id,
        "digest@news.herald.test",
        "issue-1.0000@news.herald.test",
    )
}

fn mailgun_event_of(event: &str, email: &str, id: &str, sender: &str, message_id: &str) -> Value {
    let mut data = json!({
        "id": id, "timestamp": now() as f64, "event": event, "recipient": email,
        "message": {"headers": {"message-id": message_id,
                                 "from": "digest@news.herald.test", "to": email}},
        "envelope": {"sender": sender, "targets": email}
    });
    if event == "failed" {
        data["severity"] = json!("permanent");
        data["reason"] = json!("bounce");
        data["delivery-status"] = json!({"code": 550, "enhanced-code": "5.1.1",
            "message": "5.1.1 The email account that you tried to reach does not exist.",
            "description": "", "mx-host": "mx.example.com"});
    }
    data
}

fn mailgun_body(key: &str, event: Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"signature": mailgun_signature(key, now(), &token()), "event-data": event}),
    )
    .expect("json")
}

/// A processed event, a bounce and a spam report, with the Message-IDs
/// (`smtp-id`) of the messages they are about.
fn sendgrid_batch(bounced: (&str, &str), complained: (&str, &str), tag: &str) -> Vec<u8> {
    serde_json::to_vec(&json!([
        {"email": "processed@example.com", "timestamp": now(), "event": "processed",
         "sg_event_id": format!("{tag}-p"), "smtp-id": format!("<{}>", bounced.1)},
        {"email": bounced.0, "timestamp": now(), "event": "bounce", "type": "bounce",
         "status": "5.1.1", "reason": "550 5.1.1 The email account does not exist",
         "sg_event_id": format!("{tag}-b"), "smtp-id": format!("<{}>", bounced.1)},
        {"email": complained.0, "timestamp": now(), "event": "spamreport",
         "sg_event_id": format!("{tag}-s"), "smtp-id": format!("<{}>", complained.1)}
    ]))
    .expect("json")
}

// ---------------------------------------------------------------- helpers

struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn post(
    t: &TestApp,
    provider: &str,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, String)],
) -> Answer {
    let mut request = t
        .client
        .post(t.url(&format!("/webhooks/{provider}")))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("POST webhook");
    Answer {
        status: response.status().as_u16(),
        body: response.text().await.unwrap_or_default(),
    }
}

fn postmark_auth(user: &str, password: &str) -> Vec<(&'static str, String)> {
    vec![(
        "authorization",
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))),
    )]
}

const READERS: [&str; 3] = ["ann@example.com", "bob@example.com", "carol@example.com"];

/// A Herald with every provider configured, VERP return paths, and the
/// sample issue sent to the three readers over SMTP (reports are about
/// messages Herald sent, as in life).
async fn spawn(backend: Backend) -> (TestApp, Providers) {
    let providers = Providers::start().await;
    let t = TestApp::spawn_with(backend, |c| {
        providers.configure(c);
        c.bounce.domain = "bounces.herald.test".into();
    })
    .await;
    for email in READERS {
        t.add_confirmed(email).await;
    }
    let app = &t.app;
    app.import_items_file(&app.newsletter, &sample_digest(), true)
        .await
        .expect("import the sample digest");
    let issue = app
        .compose_issue(&app.newsletter, ComposeOptions::default())
        .await
        .expect("compose");
    app.send_issue(&issue).await.expect("send");
    run_until_complete(app, &t.db, issue.id, Duration::from_secs(60)).await;
    for email in READERS {
        assert!(
            sent(&t, email)
                .return_path
                .ends_with("@bounces.herald.test"),
            "a VERP return path"
        );
    }
    (t, providers)
}

/// Rows in `bounce_reports` (recorded reports, duplicates excluded).
async fn reports(t: &TestApp) -> i64 {
    t.count("SELECT COUNT(*) FROM bounce_reports").await
}

/// Recorded reports from `source` about `email`, matched by `by`.
async fn matched(t: &TestApp, source: &str, email: &str, by: &str) -> i64 {
    t.count(&format!(
        "SELECT COUNT(*) FROM bounce_reports WHERE source = '{source}' AND recipient = '{email}' AND matched_by = '{by}'"
    ))
    .await
}

/// The effects of a hard bounce (ann) and a complaint (bob), and that carol
/// was left alone.
async fn assert_effects(t: &TestApp) {
    assert_eq!(
        state(t, "ann@example.com").await,
        "bounced",
        "a hard bounce marks the subscription bounced"
    );
    assert!(
        t.is_suppressed("ann@example.com").await,
        "a hard bounce suppresses"
    );
    assert_eq!(
        state(t, "bob@example.com").await,
        "complained",
        "a complaint ends the subscription"
    );
    assert!(
        t.is_suppressed("bob@example.com").await,
        "a complaint suppresses"
    );
    assert!(
        t.consent_kinds("bob@example.com")
            .await
            .iter()
            .any(|k| k == "complaint"),
        "the complaint is a consent event: {:?}",
        t.consent_kinds("bob@example.com").await
    );
    assert_untouched(t, "carol@example.com").await;
}

async fn state(t: &TestApp, email: &str) -> String {
    t.subscription_state(email)
        .await
        .map(|s| s.to_string())
        .unwrap_or_default()
}

async fn assert_untouched(t: &TestApp, email: &str) {
    assert_eq!(
        state(t, email).await,
        "confirmed",
        "{email} must be untouched"
    );
    assert!(
        !t.is_suppressed(email).await,
        "{email} must not be suppressed"
    );
}

fn assert_refused(answer: &Answer, statuses: &[u16], what: &str) {
    assert!(
        statuses.contains(&answer.status),
        "{what}: expected one of {statuses:?}, got {} {}",
        answer.status,
        answer.body
    );
    let problem = answer.json();
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:herald:problem:"))
            && problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: a problem document saying why: {}",
        answer.body
    );
}

// ---------------------------------------------------------------- tests

async fn ses_events_are_verified_and_recorded(backend: Backend) {
    let (t, p) = spawn(backend).await;
    // The bounce names its message by the VERP return path (mail.source),
    // the complaint by the original Message-ID.
    let (ann, bob) = (sent(&t, "ann@example.com"), sent(&t, "bob@example.com"));
    // Forged first: nothing recorded, nobody touched.
    let mut forged = p.sns(
        "Notification",
        json!({"MessageId": "m-forged", "Message": ses_bounce("carol@example.com", "f-0")}),
        2,
    );
    forged["Message"] = json!(ses_bounce("ann@example.com", "f-0"));
    assert_refused(
        &post(&t, "ses", forged.to_string(), &[]).await,
        &[403],
        "changed Message",
    );
    let other_topic = p.sns(
        "Notification",
        json!({"MessageId": "m-t", "Message": ses_bounce("ann@example.com", "f-t"),
               "TopicArn": "arn:aws:sns:eu-west-1:123456789012:someone-else"}),
        2,
    );
    assert_refused(
        &post(&t, "ses", other_topic.to_string(), &[]).await,
        &[403],
        "other topic",
    );
    let foreign_cert = p.sns(
        "Notification",
        json!({"MessageId": "m-c", "Message": ses_bounce("ann@example.com", "f-c"),
               "SigningCertURL": "https://evil.example/SimpleNotificationService-x.pem"}),
        2,
    );
    assert_refused(
        &post(&t, "ses", foreign_cert.to_string(), &[]).await,
        &[403],
        "certificate from elsewhere",
    );
    let mut unsigned = p.sns(
        "Notification",
        json!({"MessageId": "m-u", "Message": ses_bounce("ann@example.com", "f-u")}),
        2,
    );
    unsigned["Signature"] = json!("");
    assert_refused(
        &post(&t, "ses", unsigned.to_string(), &[]).await,
        &[401, 403],
        "no signature",
    );
    let stale = p.sns(
        "Notification",
        json!({"MessageId": "m-s", "Message": ses_bounce("ann@example.com", "f-s"),
               "Timestamp": "2026-01-01T00:00:00.000Z"}),
        2,
    );
    assert_refused(
        &post(&t, "ses", stale.to_string(), &[]).await,
        &[403],
        "stale timestamp",
    );
    assert_untouched(&t, "ann@example.com").await;
    assert_eq!(
        reports(&t).await,
        0,
        "nothing recorded for refused messages"
    );

    // Version 1 (SHA-1) for the bounce, version 2 (SHA-256) for the complaint.
    let bounce = p.sns(
        "Notification",
        json!({"MessageId": "m-1", "Message": ses_bounce_of("ann@example.com", "ses-feedback-1", &ann.return_path, &ann.message_id)}),
        1,
    );
    let answer = post(&t, "ses", bounce.to_string(), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json()["events"][0]["effect"],
        "suppressed",
        "{}",
        answer.body
    );
    let complaint = p.sns(
        "Notification",
        json!({"MessageId": "m-2", "Subject": "Amazon SES Email Event Notification",
               "Message": ses_complaint("bob@example.com", "ses-feedback-2", &bob.message_id)}),
        2,
    );
    let answer = post(&t, "ses", complaint.to_string(), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_effects(&t).await;
    assert_eq!(reports(&t).await, 2);
    assert_eq!(
        matched(&t, "ses", "ann@example.com", "verp").await,
        1,
        "mail.source is the VERP address"
    );
    assert_eq!(
        matched(&t, "ses", "bob@example.com", "message_id").await,
        1,
        "commonHeaders.messageId"
    );

    // SNS delivers at least once: the same message again is a duplicate.
    let answer = post(&t, "ses", bounce.to_string(), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json()["events"][0]["effect"],
        "duplicate",
        "{}",
        answer.body
    );
    assert_eq!(reports(&t).await, 2, "a duplicate is recorded once");
}

async fn sns_subscription_is_confirmed_only_when_signed(backend: Backend) {
    let (t, p) = spawn(backend).await;
    let confirmation = |token: &str| {
        json!({"MessageId": format!("sub-{token}"), "Token": token,
               "Message": "You have chosen to subscribe to the topic. To confirm, visit the SubscribeURL.",
               "SubscribeURL": format!("{}confirm?Action=ConfirmSubscription&Token={token}", p.sns_base)})
    };
    let mut forged = p.sns("SubscriptionConfirmation", confirmation("t-forged"), 2);
    forged["Token"] = json!("t-other");
    assert_refused(
        &post(&t, "ses", forged.to_string(), &[]).await,
        &[403],
        "forged confirmation",
    );
    assert!(
        p.subscribe_hits.lock().unwrap().is_empty(),
        "no SubscribeURL fetched for a forged message"
    );

    let signed = p.sns("SubscriptionConfirmation", confirmation("t-1"), 1);
    let answer = post(&t, "ses", signed.to_string(), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let hits = p.subscribe_hits.lock().unwrap().clone();
    assert_eq!(
        hits,
        vec!["Action=ConfirmSubscription&Token=t-1".to_owned()]
    );

    // A SubscribeURL off the allowed prefix is never fetched, even signed.
    let mut elsewhere = confirmation("t-2");
    elsewhere["SubscribeURL"] = json!("http://127.0.0.1:9/confirm?Token=t-2");
    let answer = post(
        &t,
        "ses",
        p.sns("SubscriptionConfirmation", elsewhere, 2).to_string(),
        &[],
    )
    .await;
    assert_refused(&answer, &[403], "SubscribeURL elsewhere");
    assert_eq!(p.subscribe_hits.lock().unwrap().len(), 1);
}

async fn postmark_events_need_the_basic_credentials(backend: Backend) {
    let (t, _p) = spawn(backend).await;
    let bounce = postmark_bounce("ann@example.com", 4_323_372_036_854_775_807).to_string();
    let answer = post(&t, "postmark", bounce.clone(), &[]).await;
    assert_refused(&answer, &[401], "no credentials");
    assert!(
        answer.body.contains("postmark_user"),
        "the answer names what to set: {}",
        answer.body
    );
    let wrong = postmark_auth(POSTMARK_USER, "postmark-password-0123456780");
    assert_refused(
        &post(&t, "postmark", bounce.clone(), &wrong).await,
        &[401],
        "wrong password",
    );
    assert_untouched(&t, "ann@example.com").await;
    assert_eq!(reports(&t).await, 0);

    let auth = postmark_auth(POSTMARK_USER, POSTMARK_PASSWORD);
    let answer = post(&t, "postmark", bounce.clone(), &auth).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let complaint = postmark_complaint("bob@example.com", 77).to_string();
    let answer = post(&t, "postmark", complaint, &auth).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_effects(&t).await;
    assert_eq!(reports(&t).await, 2);
    assert_eq!(
        matched(&t, "postmark", "ann@example.com", "recipient").await,
        1
    );
    assert_eq!(
        matched(&t, "postmark", "bob@example.com", "recipient").await,
        1
    );
    let answer = post(&t, "postmark", bounce, &auth).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(reports(&t).await, 2, "Postmark's retry is recorded once");

    let answer = post(&t, "postmark", "{\"RecordType\": \"Bounce\", ", &auth).await;
    assert_refused(&answer, &[400], "malformed JSON");
    // Other record types are acknowledged and not recorded.
    let delivery = json!({"RecordType": "Delivery", "Recipient": "carol@example.com"}).to_string();
    let answer = post(&t, "postmark", delivery, &auth).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(reports(&t).await, 2);
}

async fn mailgun_signatures_timestamps_and_tokens_are_checked(backend: Backend) {
    let (t, _p) = spawn(backend).await;
    let (ann, bob) = (sent(&t, "ann@example.com"), sent(&t, "bob@example.com"));
    let ann_failed = |id: &str| {
        mailgun_event_of(
            "failed",
            "ann@example.com",
            id,
            &ann.return_path,
            &ann.message_id,
        )
    };
    let forged = mailgun_body(
        "not-the-signing-key-0123456789",
        mailgun_event("failed", "ann@example.com", "mg-f"),
    );
    assert_refused(&post(&t, "mailgun", forged, &[]).await, &[403], "wrong key");
    let unsigned = serde_json::to_vec(
        &json!({"event-data": mailgun_event("failed", "ann@example.com", "mg-u")}),
    )
    .unwrap();
    assert_refused(
        &post(&t, "mailgun", unsigned, &[]).await,
        &[401, 403],
        "no signature",
    );
    let old = now() - 2 * 3600;
    let stale = serde_json::to_vec(&json!({
        "signature": mailgun_signature(MAILGUN_KEY, old, &token()),
        "event-data": mailgun_event("failed", "ann@example.com", "mg-s"),
    }))
    .unwrap();
    assert_refused(
        &post(&t, "mailgun", stale, &[]).await,
        &[403],
        "a timestamp past webhooks.max_age",
    );
    assert_untouched(&t, "ann@example.com").await;
    assert_eq!(reports(&t).await, 0);

    let bounce = mailgun_body(MAILGUN_KEY, ann_failed("mg-1"));
    let answer = post(&t, "mailgun", bounce.clone(), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let complaint = mailgun_body(
        MAILGUN_KEY,
        mailgun_event_of(
            "complained",
            "bob@example.com",
            "mg-2",
            "digest@news.herald.test",
            &bob.message_id,
        ),
    );
    let answer = post(&t, "mailgun", complaint, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_effects(&t).await;
    assert_eq!(reports(&t).await, 2);
    assert_eq!(
        matched(&t, "mailgun", "ann@example.com", "verp").await,
        1,
        "envelope.sender"
    );
    assert_eq!(
        matched(&t, "mailgun", "bob@example.com", "message_id").await,
        1
    );

    // The same request again: a replayed token.
    assert_refused(
        &post(&t, "mailgun", bounce, &[]).await,
        &[403],
        "replayed token",
    );
    // The same event freshly signed (Mailgun's retry): a duplicate, recorded once.
    let retry = mailgun_body(MAILGUN_KEY, ann_failed("mg-1"));
    let answer = post(&t, "mailgun", retry, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(reports(&t).await, 2);
}

async fn sendgrid_batches_are_verified_and_recorded(backend: Backend) {
    let (t, p) = spawn(backend).await;
    let (ann, bob) = (sent(&t, "ann@example.com"), sent(&t, "bob@example.com"));
    let batch = sendgrid_batch(
        ("ann@example.com", &ann.message_id),
        ("bob@example.com", &bob.message_id),
        "sg1",
    );
    let ts = now();
    let headers = p.sendgrid_headers(&batch, ts);
    // The signature covers the timestamp and every byte of the body.
    let mut changed = batch.clone();
    let at = changed.iter().position(|&b| b == b'5').unwrap();
    changed[at] = b'4';
    assert_refused(
        &post(&t, "sendgrid", changed, &headers).await,
        &[403],
        "changed body",
    );
    let later = vec![headers[0].clone(), (headers[1].0, (ts + 1).to_string())];
    assert_refused(
        &post(&t, "sendgrid", batch.clone(), &later).await,
        &[403],
        "changed timestamp",
    );
    assert_refused(
        &post(&t, "sendgrid", batch.clone(), &[]).await,
        &[401, 403],
        "no signature",
    );
    let old = now() - 2 * 3600;
    let stale = p.sendgrid_headers(&batch, old);
    assert_refused(
        &post(&t, "sendgrid", batch.clone(), &stale).await,
        &[403],
        "stale timestamp",
    );
    assert_untouched(&t, "ann@example.com").await;
    assert_eq!(reports(&t).await, 0);

    let answer = post(&t, "sendgrid", batch.clone(), &headers).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json()["events"].as_array().map(Vec::len),
        Some(2),
        "{}",
        answer.body
    );
    assert_effects(&t).await;
    assert_eq!(reports(&t).await, 2, "the processed event is not a report");
    assert_eq!(
        matched(&t, "sendgrid", "ann@example.com", "message_id").await,
        1,
        "smtp-id"
    );
    assert_eq!(
        matched(&t, "sendgrid", "bob@example.com", "message_id").await,
        1
    );
    // SendGrid retries the whole batch: each event is recorded once.
    let answer = post(
        &t,
        "sendgrid",
        batch.clone(),
        &p.sendgrid_headers(&batch, now()),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(reports(&t).await, 2);
}

async fn malformed_oversized_and_unconfigured_requests_are_refused(backend: Backend) {
    let (t, p) = spawn(backend).await;
    let auth = postmark_auth(POSTMARK_USER, POSTMARK_PASSWORD);
    // Refused from its Content-Length, before it is read: the server may
    // close the connection while the client is still writing, which the
    // client sees as a cut connection instead of the 413.
    let big = vec![b' '; 3 * 1024 * 1024];
    for (provider, headers) in [
        ("ses", Vec::new()),
        ("mailgun", Vec::new()),
        ("sendgrid", Vec::new()),
        ("postmark", auth.clone()),
    ] {
        let mut request = t
            .client
            .post(t.url(&format!("/webhooks/{provider}")))
            .header("content-type", "application/json")
            .body(big.clone());
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        match request.send().await {
            Ok(response) => {
                let answer = Answer {
                    status: response.status().as_u16(),
                    body: response.text().await.unwrap_or_default(),
                };
                assert_refused(&answer, &[413], provider);
            }
            Err(e) => assert!(e.is_request(), "{provider}: {e}"),
        }
    }
    // Signed, but not the provider's JSON.
    let garbage = b"[\"not\", \"events\"".to_vec();
    assert_refused(
        &post(
            &t,
            "sendgrid",
            garbage.clone(),
            &p.sendgrid_headers(&garbage, now()),
        )
        .await,
        &[400],
        "SendGrid garbage",
    );
    assert_refused(
        &post(&t, "ses", "{\"Type\": 5}", &[]).await,
        &[400],
        "SNS garbage",
    );
    assert_refused(
        &post(&t, "mailgun", "nonsense", &[]).await,
        &[400],
        "Mailgun garbage",
    );
    let wrong_message = p.sns(
        "Notification",
        json!({"MessageId": "m-x", "Message": "not json"}),
        2,
    );
    assert_refused(
        &post(&t, "ses", wrong_message.to_string(), &[]).await,
        &[400],
        "SES Message not JSON",
    );
    assert_refused(
        &post(&t, "sparkpost", "{}", &[]).await,
        &[404],
        "unknown provider",
    );
    assert_eq!(reports(&t).await, 0);

    // A provider without keys is not there at all.
    let bare = TestApp::spawn(Backend::Sqlite).await;
    for provider in ["ses", "postmark", "mailgun", "sendgrid"] {
        assert_refused(&post(&bare, provider, "{}", &[]).await, &[404], provider);
    }
}

/// Garbage of every shape at every endpoint: always a 4xx answer, the
/// server stays up, nothing is recorded.
async fn hostile_input_never_panics(backend: Backend) {
    let (t, p) = spawn(backend).await;
    let auth = postmark_auth(POSTMARK_USER, POSTMARK_PASSWORD);
    let mut bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"{}".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
        "[".repeat(100_000).into_bytes(),
        format!("{{\"a\":\"{}\"}}", "\u{202e}".repeat(10_000)).into_bytes(),
        json!({"signature": {"timestamp": "99999999999999999999", "token": "", "signature": "zz"}})
            .to_string()
            .into_bytes(),
        json!({"signature": {"timestamp": [], "token": 5, "signature": null}})
            .to_string()
            .into_bytes(),
        json!({"Type": "Notification", "TopicArn": TOPIC, "Message": "{}", "MessageId": "x",
               "Timestamp": "yesterday", "SignatureVersion": "2", "Signature": "!!",
               "SigningCertURL": "file:///etc/passwd"})
        .to_string()
        .into_bytes(),
        json!({"Type": "Notification", "TopicArn": TOPIC, "Message": "{}", "MessageId": "x",
               "Timestamp": "2026-12-02T10:00:00Z", "SignatureVersion": "3", "Signature": "AA==",
               "SigningCertURL": p.cert_url()})
        .to_string()
        .into_bytes(),
        json!([{"event": "bounce", "email": null}, 5, "x"])
            .to_string()
            .into_bytes(),
        json!({"RecordType": "Bounce", "ID": {"x": 1}, "Email": "a@b.test", "TypeCode": "one"})
            .to_string()
            .into_bytes(),
    ];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for len in [1usize, 17, 300, 5000] {
        bodies.push(
            (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect(),
        );
    }
    for body in bodies {
        for (provider, headers) in [
            ("ses", Vec::new()),
            ("postmark", auth.clone()),
            ("mailgun", Vec::new()),
            // Signed, so that the parser sees the garbage.
            ("sendgrid", p.sendgrid_headers(&body, now())),
        ] {
            let answer = post(&t, provider, body.clone(), &headers).await;
            // A signed empty batch (`[]`) is a fine 200; nothing else passes.
            assert!(
                (400..500).contains(&answer.status)
                    || (answer.status == 200 && provider == "sendgrid" && body == b"[]"),
                "{provider} with {:?}: {} {}",
                String::from_utf8_lossy(&body[..body.len().min(60)]),
                answer.status,
                answer.body
            );
        }
    }
    assert_eq!(
        t.get(&t.url("/healthz")).await.status,
        200,
        "the server is still up"
    );
    assert_untouched(&t, "ann@example.com").await;
    assert_eq!(reports(&t).await, 0);
}

on_each_backend!(
    ses_events_are_verified_and_recorded,
    sns_subscription_is_confirmed_only_when_signed,
    postmark_events_need_the_basic_credentials,
    mailgun_signatures_timestamps_and_tokens_are_checked,
    sendgrid_batches_are_verified_and_recorded,
    malformed_oversized_and_unconfigured_requests_are_refused,
    hostile_input_never_panics,
);

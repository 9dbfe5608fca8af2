//! DKIM signatures checked with an independent verifier (`mail-auth`), DNS injected via a cache.

mod support;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use herald::mail::dkim::{DkimSigner, SIGNED_HEADERS, dns_txt_record, generate_key_pem};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};

/// One generated key for the whole test binary (RSA-2048 keygen is slow in debug builds).
fn key() -> &'static (String, String) {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    KEY.get_or_init(generate_key_pem)
}

/// An in-memory TXT "DNS" for mail-auth.
#[derive(Default)]
struct TxtCache(Mutex<HashMap<String, Txt>>);

impl ResolverCache<String, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        String: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        String: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }

    fn insert(&self, key: String, value: Txt, _valid_until: Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// Publishes the record exactly as `dns_txt_record` prints it (strings concatenated, as DNS does).
fn dns_with(selector: &str, domain: &str, public_b64: &str) -> TxtCache {
    let line = dns_txt_record(selector, domain, public_b64);
    let (name, rest) = line.split_once(" IN TXT ").unwrap();
    let value: String = rest.split('"').skip(1).step_by(2).collect();
    let cache = TxtCache::default();
    let record = DomainKey::parse(value.as_bytes()).expect("TXT record parses");
    cache.insert(name.to_string(), Txt::from(record), Instant::now());
    cache
}

/// Verifies with mail-auth; returns every signature's result and the first signature's `h=`.
async fn verify(dns: &TxtCache, message: &[u8]) -> (Vec<DkimResult>, Vec<String>) {
    let authenticator = MessageAuthenticator::new_cloudflare().unwrap();
    let parsed = AuthenticatedMessage::parse(message).expect("message parses");
    let out = authenticator
        .verify_dkim(Parameters::new(&parsed).with_txt_cache(dns))
        .await;
    let h = out
        .first()
        .and_then(|o| o.signature())
        .map(|s| s.h.clone())
        .unwrap_or_default();
    (out.iter().map(|o| o.result().clone()).collect(), h)
}

fn newsletter() -> Vec<u8> {
    concat!(
        "From: Herald News <news@example.com>\r\n",
        "To: reader@example.org\r\n",
        "Reply-To: editor@example.com\r\n",
        "Subject: Weekly   digest #12\r\n",
        "Date: Mon, 05 Jan 2026 10:00:00 +0000\r\n",
        "Message-ID: <issue-12.sub-34@example.com>\r\n",
        "List-ID: Herald Weekly <weekly.example.com>\r\n",
        "List-Unsubscribe: <https://example.com/u/abc>,\r\n <mailto:unsub+abc@example.com>\r\n",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        "Feedback-ID: 12:weekly:herald\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
        "Content-Transfer-Encoding: 8bit\r\n",
        "X-Not-Signed: whatever\r\n",
        "\r\n",
        "Hello reader,  \r\n",
        "\r\n",
        "Grüße from this week's issue.\r\n",
        ".leading dot line\r\n",
        "\r\n",
        "\r\n",
    )
    .as_bytes()
    .to_vec()
}

#[tokio::test]
async fn signed_message_verifies_and_h_covers_the_list() {
    let (pem, public) = key();
    let signer = DkimSigner::from_pem("example.com", "news", pem).unwrap();
    assert_eq!(&signer.public_key_base64(), public);
    let message = newsletter();
    let signed = signer.sign(&message);
    assert!(signed.starts_with(
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=news;"
    ));
    assert!(
        signed.ends_with(&message),
        "the original bytes follow unchanged"
    );

    let dns = dns_with("news", "example.com", public);
    let (results, h) = verify(&dns, &signed).await;
    assert_eq!(results, vec![DkimResult::Pass]);
    assert_eq!(
        h,
        SIGNED_HEADERS
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
    for must in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "feedback-id",
        "mime-version",
        "content-type",
        "reply-to",
    ] {
        assert!(h.iter().any(|x| x == must), "h= lacks {must}");
    }
    assert!(!h.iter().any(|x| x == "x-not-signed"));
}

#[tokio::test]
async fn only_present_headers_are_listed() {
    let (pem, public) = key();
    let signer = DkimSigner::from_pem("example.com", "news", pem).unwrap();
    let message = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n";
    let (results, h) = verify(
        &dns_with("news", "example.com", public),
        &signer.sign(message),
    )
    .await;
    assert_eq!(results, vec![DkimResult::Pass]);
    assert_eq!(h, vec!["from", "to", "subject"]);
}

#[tokio::test]
async fn tampering_with_subject_or_body_fails() {
    let (pem, public) = key();
    let signer = DkimSigner::from_pem("example.com", "news", pem).unwrap();
    let signed = String::from_utf8(signer.sign(&newsletter())).unwrap();
    let dns = dns_with("news", "example.com", public);

    let subject = signed.replace("Weekly   digest #12", "Weekly digest #13");
    let (results, _) = verify(&dns, subject.as_bytes()).await;
    assert!(matches!(results[..], [DkimResult::Fail(_)]), "{results:?}");

    let body = signed.replace("this week's issue", "this week's offer");
    let (results, _) = verify(&dns, body.as_bytes()).await;
    assert!(
        matches!(
            results[..],
            [DkimResult::Neutral(mail_auth::Error::FailedBodyHashMatch)]
        ),
        "{results:?}"
    );

    // A different key in DNS fails too.
    let (_, other_public) = generate_key_pem();
    let (results, _) = verify(
        &dns_with("news", "example.com", &other_public),
        signed.as_bytes(),
    )
    .await;
    assert!(matches!(results[..], [DkimResult::Fail(_)]), "{results:?}");
}

#[tokio::test]
async fn relaxed_canonicalization_tolerates_whitespace_and_refolding() {
    let (pem, public) = key();
    let signer = DkimSigner::from_pem("example.com", "news", pem).unwrap();
    let signed = String::from_utf8(signer.sign(&newsletter())).unwrap();
    let rewritten = signed
        .replace(
            "Subject: Weekly   digest #12",
            "Subject:  Weekly\r\n\tdigest   #12 ",
        )
        .replace("Hello reader,  \r\n", "Hello \t reader,\r\n")
        .replace("\r\n\r\n\r\n", "\r\n\r\n\r\n\r\n\r\n");
    let (results, _) = verify(
        &dns_with("news", "example.com", public),
        rewritten.as_bytes(),
    )
    .await;
    assert_eq!(results, vec![DkimResult::Pass]);
}

#[tokio::test]
async fn pkcs8_keys_load_and_verify() {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let (pem, public) = key();
    let pkcs8 = rsa::RsaPrivateKey::from_pkcs1_pem(pem)
        .unwrap()
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"));
    let signer = DkimSigner::from_pem("Example.COM.", "news", &pkcs8).unwrap();
    assert_eq!(signer.domain(), "example.com");
    let signed = signer.sign(&newsletter());
    let (results, _) = verify(&dns_with("news", "example.com", public), &signed).await;
    assert_eq!(results, vec![DkimResult::Pass]);
}

#[test]
fn generated_key_is_rsa_2048_pkcs1_and_record_is_well_formed() {
    use rsa::traits::PublicKeyParts;
    let (pem, public) = key();
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let k = <rsa::RsaPrivateKey as rsa::pkcs1::DecodeRsaPrivateKey>::from_pkcs1_pem(pem).unwrap();
    assert_eq!(k.n().bits(), 2048);
    let record = dns_txt_record("news", "example.com", public);
    assert!(
        record.starts_with("news._domainkey.example.com. IN TXT \"v=DKIM1; k=rsa; p="),
        "{record}"
    );
    assert!(record.split('"').skip(1).step_by(2).all(|s| s.len() <= 255));
}

/// The whole path: `[dkim]` config → the delivery engine signs each
/// personalised message → what the SMTP server received verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_sent_by_the_engine_are_signed() {
    use support::engine::{Backend, Fixture, TestDb, test_config};
    use support::smtp_server::{Script, TestSmtpServer};

    let (pem, public) = key();
    let server = TestSmtpServer::start(Script::new()).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let key_file = db.path().join("dkim.pem");
    std::fs::write(&key_file, pem).unwrap();
    let mut config = test_config(&db.url, &server.url());
    config.dkim.domain = "herald.test".into();
    config.dkim.selector = "news".into();
    config.dkim.private_key_file = key_file.display().to_string();
    let fx = Fixture::new(db, config).await;
    fx.add_confirmed(&["signed@example.org".to_string()]).await;
    fx.send(&fx.issue).await;
    fx.run_until_complete(fx.issue.id, std::time::Duration::from_secs(30))
        .await;

    let received = server.messages_to("signed@example.org");
    assert_eq!(received.len(), 1);
    let dns = dns_with("news", "herald.test", public);
    let (results, h) = verify(&dns, &received[0].data).await;
    assert_eq!(results, vec![DkimResult::Pass]);
    for must in [
        "list-unsubscribe",
        "list-unsubscribe-post",
        "list-id",
        "feedback-id",
    ] {
        assert!(h.iter().any(|x| x == must), "h= lacks {must}");
    }
}

//! DKIM signatures checked with an independent verifier (`mail-auth`), DNS injected via a cache:
//! the signer itself, and every kind of mail Herald sends (issues, confirmation mails, test
//! copies; over SMTP and into the file outbox), with RSA alone and RSA + Ed25519.

mod support;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use herald::config::Config;
use herald::content::ComposeOptions;
use herald::mail::dkim::{
    DkimSigner, KeyAlgorithm, SIGNED_HEADERS, dns_txt_record, dns_txt_record_for, generate_key,
};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use support::app::{Backend, TestApp};

crate::on_each_backend!(
    issues_sent_by_the_engine_carry_both_signatures,
    confirmation_mails_and_test_copies_are_signed,
    confirmation_mails_and_test_copies_in_the_file_outbox_are_signed,
);

/// One key per algorithm for the whole test binary.
fn key(algorithm: KeyAlgorithm) -> &'static (String, String) {
    static RSA: OnceLock<(String, String)> = OnceLock::new();
    static ED25519: OnceLock<(String, String)> = OnceLock::new();
    let cell = match algorithm {
        KeyAlgorithm::Rsa => &RSA,
        KeyAlgorithm::Ed25519 => &ED25519,
    };
    cell.get_or_init(|| generate_key(algorithm).expect("key generation"))
}

fn rsa() -> &'static (String, String) {
    key(KeyAlgorithm::Rsa)
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

impl TxtCache {
    /// Publishes the record exactly as Herald prints it (strings concatenated, as DNS does).
    fn publish(self, line: &str) -> TxtCache {
        let (name, rest) = line.split_once(" IN TXT ").unwrap();
        let value: String = rest.split('"').skip(1).step_by(2).collect();
        let record = DomainKey::parse(value.as_bytes()).expect("TXT record parses");
        self.insert(name.to_string(), Txt::from(record), Instant::now());
        self
    }
}

fn dns_with(selector: &str, domain: &str, public_b64: &str) -> TxtCache {
    TxtCache::default().publish(&dns_txt_record(selector, domain, public_b64))
}

/// DNS with the test RSA key under `news` and the test Ed25519 key under `news-ed`.
fn dns_both(domain: &str) -> TxtCache {
    let ed = &key(KeyAlgorithm::Ed25519).1;
    dns_with("news", domain, &rsa().1).publish(&dns_txt_record_for(
        KeyAlgorithm::Ed25519,
        "news-ed",
        domain,
        ed,
    ))
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
        .map(|s| s.h.iter().map(|h| h.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    (out.iter().map(|o| o.result().clone()).collect(), h)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
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
    let (pem, public) = rsa();
    let signer = DkimSigner::from_pem("example.com", "news", pem).unwrap();
    assert_eq!(&signer.public_key_base64(), public);
    let message = newsletter();
    let signed = signer.sign(&message).unwrap();
    assert!(
        signed.starts_with(
            b"DKIM-Signature: v=1; a=rsa-sha256; s=news; d=example.com; c=relaxed/relaxed;"
        ),
        "{}",
        String::from_utf8_lossy(&signed[..200])
    );
    assert!(
        signed.ends_with(&message),
        "the original bytes follow unchanged"
    );

    let dns = dns_with("news", "example.com", public);
    let (results, h) = verify(&dns, &signed).await;
    assert_eq!(results, vec![DkimResult::Pass]);
    assert_eq!(
        sorted(h.clone()),
        sorted(SIGNED_HEADERS.iter().map(|s| s.to_string()).collect()),
        "every listed header present in the message is signed, once"
    );
    assert!(!h.iter().any(|x| x == "x-not-signed"));
}

#[tokio::test]
async fn only_present_headers_are_listed() {
    let (pem, public) = rsa();
    let signer = DkimSigner::from_pem("example.com", "news", pem).unwrap();
    let message = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n";
    let (results, h) = verify(
        &dns_with("news", "example.com", public),
        &signer.sign(message).unwrap(),
    )
    .await;
    assert_eq!(results, vec![DkimResult::Pass]);
    assert_eq!(sorted(h), vec!["from", "subject", "to"]);
}

#[tokio::test]
async fn a_message_without_any_signed_header_is_refused() {
    let (pem, _) = rsa();
    let signer = DkimSigner::from_pem("example.com", "news", pem).unwrap();
    let err = signer.sign(b"X-Only: this\r\n\r\nbody\r\n").unwrap_err();
    assert!(
        err.to_string().contains("none of the header fields"),
        "{err}"
    );
}

#[tokio::test]
async fn tampering_with_subject_or_body_fails() {
    let (pem, public) = rsa();
    let signer = DkimSigner::from_pem("example.com", "news", pem).unwrap();
    let signed = String::from_utf8(signer.sign(&newsletter()).unwrap()).unwrap();
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
    let (_, other_public) = generate_key(KeyAlgorithm::Rsa).unwrap();
    let (results, _) = verify(
        &dns_with("news", "example.com", &other_public),
        signed.as_bytes(),
    )
    .await;
    assert!(matches!(results[..], [DkimResult::Fail(_)]), "{results:?}");
}

#[tokio::test]
async fn relaxed_canonicalization_tolerates_whitespace_and_refolding() {
    let (pem, public) = rsa();
    let signer = DkimSigner::from_pem("example.com", "news", pem).unwrap();
    let signed = String::from_utf8(signer.sign(&newsletter()).unwrap()).unwrap();
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
async fn ed25519_adds_a_second_signature_and_both_verify() {
    let signer = DkimSigner::from_pem("example.com", "news", &rsa().0)
        .unwrap()
        .with_ed25519("news-ed", &key(KeyAlgorithm::Ed25519).0)
        .unwrap();
    assert_eq!(
        signer.ed25519_public_key_base64().as_ref(),
        Some(&key(KeyAlgorithm::Ed25519).1)
    );
    let signed = signer.sign(&newsletter()).unwrap();
    let text = String::from_utf8_lossy(&signed);
    assert!(
        text.contains("a=ed25519-sha256; s=news-ed; d=example.com;"),
        "{text}"
    );
    let (results, _) = verify(&dns_both("example.com"), &signed).await;
    assert_eq!(results, vec![DkimResult::Pass, DkimResult::Pass]);

    // Each signature stands on its own: without the Ed25519 record only that one fails.
    let rsa_only = dns_with("news", "example.com", &rsa().1);
    let (results, _) = verify(&rsa_only, &signed).await;
    assert_eq!(results[0], DkimResult::Pass);
    assert!(!matches!(results[1], DkimResult::Pass), "{results:?}");
}

/// Keys made by OpenSSL, as an operator might bring them: PKCS#1 RSA and PKCS#8 v1 Ed25519
/// (no public key inside).
#[tokio::test]
async fn openssl_made_keys_load_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
    };
    let made = run(&["genrsa", "-traditional", "-out", "rsa.pem", "2048"])
        .map(|o| o.status.success())
        .and_then(|_| {
            run(&["genpkey", "-algorithm", "ed25519", "-out", "ed.pem"]).map(|o| o.status.success())
        });
    if !matches!(made, Ok(true)) {
        // .ci/run installs it: under CI a missing tool is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "the openssl command is needed: apt-get install openssl"
        );
        eprintln!("skipped: the openssl command is not available");
        return;
    }
    let rsa_pem = std::fs::read_to_string(dir.path().join("rsa.pem")).unwrap();
    assert!(rsa_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let ed_pem = std::fs::read_to_string(dir.path().join("ed.pem")).unwrap();
    let signer = DkimSigner::from_pem("Example.COM.", "news", &rsa_pem)
        .unwrap()
        .with_ed25519("news-ed", &ed_pem)
        .unwrap();
    assert_eq!(signer.domain(), "example.com");
    let dns =
        dns_with("news", "example.com", &signer.public_key_base64()).publish(&dns_txt_record_for(
            KeyAlgorithm::Ed25519,
            "news-ed",
            "example.com",
            &signer.ed25519_public_key_base64().unwrap(),
        ));
    let (results, _) = verify(&dns, &signer.sign(&newsletter()).unwrap()).await;
    assert_eq!(results, vec![DkimResult::Pass, DkimResult::Pass]);

    // An RSA key where the Ed25519 one belongs is refused with what is expected instead.
    let err = DkimSigner::from_pem("example.com", "news", &rsa_pem)
        .unwrap()
        .with_ed25519("news-ed", &rsa_pem)
        .unwrap_err();
    assert!(err.to_string().contains("Ed25519"), "{err}");
}

#[test]
fn generated_keys_are_pkcs8_and_records_are_well_formed() {
    let (pem, public) = rsa();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // A 2048-bit SubjectPublicKeyInfo is 294 bytes of DER.
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(public)
        .unwrap();
    assert_eq!(der.len(), 294);
    let record = dns_txt_record("news", "example.com", public);
    assert!(
        record.starts_with("news._domainkey.example.com. IN TXT \"v=DKIM1; k=rsa; p="),
        "{record}"
    );
    assert!(record.split('"').skip(1).step_by(2).all(|s| s.len() <= 255));

    let (ed_pem, ed_public) = key(KeyAlgorithm::Ed25519);
    assert!(ed_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(ed_public)
        .unwrap();
    assert_eq!(raw.len(), 32, "RFC 8463: p= is the raw 32-byte key");
}

/// Writes the test keys into `dir` and configures RSA (selector `news`) and, with `ed25519`,
/// the second signature (selector `news-ed`), for domain `herald.test`.
fn configure_dkim(config: &mut Config, dir: &Path, ed25519: bool) {
    let rsa_file = dir.join("dkim.pem");
    std::fs::write(&rsa_file, &rsa().0).unwrap();
    config.dkim.domain = "herald.test".into();
    config.dkim.selector = "news".into();
    config.dkim.private_key_file = rsa_file.display().to_string();
    if ed25519 {
        let ed_file = dir.join("dkim-ed25519.pem");
        std::fs::write(&ed_file, &key(KeyAlgorithm::Ed25519).0).unwrap();
        config.dkim.ed25519_selector = "news-ed".into();
        config.dkim.ed25519_private_key_file = ed_file.display().to_string();
    }
}

/// The whole path: `[dkim]` config → the engine sends each personalised message through the
/// mailer, which signs it → what the SMTP server received verifies, both signatures.
async fn issues_sent_by_the_engine_carry_both_signatures(backend: Backend) {
    use support::engine::{Fixture, TestDb, test_config};
    use support::smtp_server::{Script, TestSmtpServer};

    let server = TestSmtpServer::start(Script::new()).await;
    let db = TestDb::new(backend).await;
    let mut config = test_config(&db.url, &server.url());
    configure_dkim(&mut config, db.path(), true);
    let fx = Fixture::new(db, config).await;
    let readers: Vec<String> = (0..12).map(|i| format!("signed{i}@example.org")).collect();
    fx.add_confirmed(&readers).await;
    fx.send(&fx.issue).await;
    fx.run_until_complete(fx.issue.id, Duration::from_secs(60))
        .await;

    let dns = dns_both("herald.test");
    for reader in &readers {
        let received = server.messages_to(reader);
        assert_eq!(received.len(), 1, "{reader}");
        let (results, h) = verify(&dns, &received[0].data).await;
        assert_eq!(
            results,
            vec![DkimResult::Pass, DkimResult::Pass],
            "{reader}"
        );
        for must in [
            "list-unsubscribe",
            "list-unsubscribe-post",
            "list-id",
            "message-id",
            "to",
        ] {
            assert!(h.iter().any(|x| x == must), "h= lacks {must}");
        }
    }
}

async fn composed_issue(t: &TestApp) -> herald::store::content::IssueRow {
    let nl = t.app.newsletter.clone();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("emails/samples/week-2024-18.md");
    t.app.import_items_file(&nl, &sample, true).await.unwrap();
    t.app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap()
}

/// Confirmation mails and test copies go through the same mailer as issues: signed too.
async fn confirmation_mails_and_test_copies_are_signed(backend: Backend) {
    let keys = tempfile::tempdir().unwrap();
    let t = TestApp::spawn_with(backend, |c| configure_dkim(c, keys.path(), false)).await;
    let dns = dns_with("news", "herald.test", &rsa().1);

    assert_eq!(
        t.post_subscribe_form("new@example.org", None).await.status,
        200
    );
    let mail = t.confirmation_mail("new@example.org").await;
    let (results, _) = verify(&dns, &mail.data).await;
    assert_eq!(results, vec![DkimResult::Pass], "the confirmation mail");

    let issue = composed_issue(&t).await;
    let to = herald::domain::EmailAddress::parse("editor@example.org").unwrap();
    t.app
        .send_test_copies(&t.app.newsletter, &issue, std::slice::from_ref(&to))
        .await
        .unwrap();
    let copy = t.nth_mail_to("editor@example.org", 1).await;
    assert!(copy.header("Subject").unwrap().starts_with("[TEST] "));
    let (results, _) = verify(&dns, &copy.data).await;
    assert_eq!(results, vec![DkimResult::Pass], "the test copy");
}

/// The file outbox (no `smtp.url`) is a transport like SMTP: what lands there is signed.
async fn confirmation_mails_and_test_copies_in_the_file_outbox_are_signed(backend: Backend) {
    let keys = tempfile::tempdir().unwrap();
    let t = TestApp::spawn_with(backend, |c| {
        configure_dkim(c, keys.path(), true);
        c.smtp.url = Default::default();
    })
    .await;
    let outbox = t.dir.path().join("outbox");
    assert_eq!(
        t.post_subscribe_form("new@example.org", None).await.status,
        200
    );
    let issue = composed_issue(&t).await;
    let to = herald::domain::EmailAddress::parse("editor@example.org").unwrap();
    t.app
        .send_test_copies(&t.app.newsletter, &issue, std::slice::from_ref(&to))
        .await
        .unwrap();

    // The confirmation mail is sent from a background queue: wait for both files.
    let deadline = Instant::now() + Duration::from_secs(20);
    let files = loop {
        let files: Vec<Vec<u8>> = std::fs::read_dir(&outbox)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        if files.len() >= 2 || Instant::now() > deadline {
            break files;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(files.len(), 2, "a confirmation mail and a test copy");
    let dns = dns_both("herald.test");
    for file in &files {
        let (results, _) = verify(&dns, file).await;
        assert_eq!(
            results,
            vec![DkimResult::Pass, DkimResult::Pass],
            "{}",
            String::from_utf8_lossy(&file[..file.len().min(600)])
        );
    }
    let subjects: Vec<bool> = files
        .iter()
        .map(|f| String::from_utf8_lossy(f).contains("Subject: [TEST]"))
        .collect();
    assert_eq!(
        subjects.iter().filter(|t| **t).count(),
        1,
        "one of them is the test copy"
    );
}

/// A key that cannot be used stops Herald at start, naming the key and what to do.
#[tokio::test]
async fn a_bad_key_file_is_a_start_error_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let open = |edit: &dyn Fn(&mut Config)| {
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}", dir.path().join("herald.db").display());
        config.smtp.outbox_dir = dir.path().join("outbox");
        configure_dkim(&mut config, dir.path(), true);
        edit(&mut config);
        herald::app::App::open(config)
    };

    let missing = dir.path().join("missing.pem").display().to_string();
    let err = open(&|c| c.dkim.private_key_file = missing.clone())
        .await
        .err()
        .expect("a missing key file is an error")
        .to_string();
    assert!(
        err.contains("dkim.private_key_file")
            && err.contains("herald dkim generate --domain herald.test"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    let garbage = garbage.display().to_string();
    let err = open(&|c| c.dkim.ed25519_private_key_file = garbage.clone())
        .await
        .err()
        .expect("a bad Ed25519 key is an error")
        .to_string();
    assert!(
        err.contains("dkim.ed25519_private_key_file") && err.contains("BEGIN PRIVATE KEY"),
        "{err}"
    );

    let err = open(&|c| c.dkim.ed25519_selector = String::new())
        .await
        .err()
        .expect("half an Ed25519 setting is an error")
        .to_string();
    assert!(err.contains("dkim.ed25519_selector"), "{err}");

    let app = open(&|_| {}).await.expect("good keys open");
    assert_eq!(
        app.mailer.dkim().and_then(|s| s.ed25519_selector()),
        Some("news-ed")
    );
    app.close().await;
}

/// `herald dkim generate --algorithm ed25519` writes a key Herald loads and prints its record.
#[tokio::test]
async fn dkim_generate_ed25519_prints_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "dkim",
            "generate",
            "--algorithm",
            "ed25519",
            "--domain",
            "example.com",
            "--out",
            "ed.pem",
        ])
        .current_dir(dir.path())
        .env_clear()
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = stdout
        .lines()
        .find(|l| l.contains(" IN TXT "))
        .expect("a DNS record line");
    assert!(
        record
            .starts_with("herald-ed25519._domainkey.example.com. IN TXT \"v=DKIM1; k=ed25519; p="),
        "{record}"
    );
    assert!(
        stdout.contains("ed25519_private_key_file = \"ed.pem\""),
        "{stdout}"
    );

    let pem = std::fs::read_to_string(dir.path().join("ed.pem")).unwrap();
    let signer = DkimSigner::from_pem("example.com", "news", &rsa().0)
        .unwrap()
        .with_ed25519("herald-ed25519", &pem)
        .unwrap();
    let dns = dns_with("news", "example.com", &rsa().1).publish(record);
    let (results, _) = verify(&dns, &signer.sign(&newsletter()).unwrap()).await;
    assert_eq!(results, vec![DkimResult::Pass, DkimResult::Pass]);
}

/// Many senders at once on a single-threaded runtime: the pool signs every message on its
/// blocking threads (at most one per core at a time) and each signature verifies.
#[test]
fn the_signing_pool_serves_many_senders_at_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let signer = DkimSigner::from_pem("example.com", "news", &rsa().0).unwrap();
        let pool = herald::mail::SigningPool::new(signer);
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let message = String::from_utf8(newsletter())
                        .unwrap()
                        .replace("reader@example.org", &format!("reader{i}@example.org"));
                    let signed = pool.sign(message.as_bytes()).await.unwrap();
                    assert!(signed.as_bytes().ends_with(message.as_bytes()));
                    signed.as_bytes().to_vec()
                })
            })
            .collect();
        let dns = dns_with("news", "example.com", &rsa().1);
        for task in tasks {
            let (results, _) = verify(&dns, &task.await.unwrap()).await;
            assert_eq!(results, vec![DkimResult::Pass]);
        }
    });
}

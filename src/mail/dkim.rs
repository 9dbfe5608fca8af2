//! DKIM signing (RFC 6376) of complete raw messages, relaxed/relaxed: an RSA-SHA256 signature
//! and, when configured, a second Ed25519-SHA256 one (RFC 8463) for receivers that check it.
//!
//! Canonicalisation and the `DKIM-Signature:` header are mail-auth's (the library the tests
//! verify with); the private-key operations are aws-lc's. On the reference machine ring's
//! RSA-2048 signs about 800 times per second per core, aws-lc about 1,400 (`benches/README.md`,
//! "DKIM"): the signature is most of what DKIM costs, so the faster one.
//!
//! A signature is CPU work (about 0.7 ms): [`SigningPool`] runs it on tokio's blocking threads,
//! at most one per core at a time, so it never stalls the runtime that serves HTTP and drives
//! the other connections' SMTP I/O.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::common::crypto::{Algorithm, HashContext, HashImpl, HashOutput, Sha256};
use mail_auth::common::headers::{HeaderWriter, Writable, Writer};
use tokio::sync::Semaphore;

/// Headers signed when present (`h=`). Absent ones are left out rather than "over-signed":
/// a relay that adds one of them (Amazon SES adds `Feedback-ID`) must not break the signature.
pub const SIGNED_HEADERS: &[&str] = &[
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "feedback-id",
    "mime-version",
    "content-type",
];

/// Room kept in front of a message for its signature headers, so that signing moves the
/// message bytes once (an RSA-4096 and an Ed25519 header together take about 1.5 KB).
const HEADER_ROOM: usize = 3072;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DkimError {
    #[error(
        "not a usable RSA private key: {0}; expected PEM `-----BEGIN RSA PRIVATE KEY-----` (PKCS#1) \
         or `-----BEGIN PRIVATE KEY-----` (unencrypted PKCS#8) of 2048 to 8192 bits, \
         as `herald dkim generate` writes"
    )]
    Key(String),
    #[error(
        "not a usable Ed25519 private key: {0}; expected PEM `-----BEGIN PRIVATE KEY-----` \
         (unencrypted PKCS#8), as `herald dkim generate --algorithm ed25519` or \
         `openssl genpkey -algorithm ed25519` writes"
    )]
    Ed25519Key(String),
    #[error("invalid DKIM {what} `{value}`: expected a DNS name (letters, digits, `-`, `.`, `_`)")]
    Name { what: &'static str, value: String },
    #[error("DKIM signing failed: {0}")]
    Sign(String),
}

/// Which kind of key: the `k=` of the DNS record and `herald dkim generate --algorithm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Rsa,
    Ed25519,
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa => "rsa",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// Signs messages for one domain: RSA under one selector, optionally Ed25519 under another.
pub struct DkimSigner {
    domain: String,
    rsa_selector: String,
    rsa: RsaKey,
    ed25519: Option<(String, Ed25519Key)>,
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSigner")
            .field("domain", &self.domain)
            .field("selector", &self.rsa_selector)
            .field("ed25519_selector", &self.ed25519_selector())
            .finish_non_exhaustive()
    }
}

fn check_name(what: &'static str, value: &str) -> Result<String, DkimError> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(DkimError::Name {
            what,
            value: value.to_string(),
        })
    }
}

impl DkimSigner {
    /// Loads an RSA private key from PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8
    /// (`BEGIN PRIVATE KEY`) PEM.
    pub fn from_pem(domain: &str, selector: &str, pem: &str) -> Result<DkimSigner, DkimError> {
        let domain = check_name("domain", domain.trim_end_matches('.'))?;
        let selector = check_name("selector", selector)?;
        let (label, der) = pem_block(pem).map_err(DkimError::Key)?;
        let key = match label.as_str() {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            other => return Err(DkimError::Key(format!("a `{other}` PEM block"))),
        }
        .map_err(|e| DkimError::Key(format!("rejected ({e})")))?;
        Ok(DkimSigner {
            domain,
            rsa_selector: selector,
            rsa: RsaKey(key),
            ed25519: None,
        })
    }

    /// Adds a second signature with an Ed25519 key (PKCS#8 PEM) under its own selector.
    pub fn with_ed25519(mut self, selector: &str, pem: &str) -> Result<DkimSigner, DkimError> {
        let selector = check_name("Ed25519 selector", selector)?;
        let (label, der) = pem_block(pem).map_err(DkimError::Ed25519Key)?;
        if label != "PRIVATE KEY" {
            return Err(DkimError::Ed25519Key(format!("a `{label}` PEM block")));
        }
        // "maybe unchecked": OpenSSL writes PKCS#8 v1, without the public key to check against.
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|e| DkimError::Ed25519Key(format!("rejected ({e})")))?;
        self.ed25519 = Some((selector, Ed25519Key(key)));
        Ok(self)
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn selector(&self) -> &str {
        &self.rsa_selector
    }

    pub fn ed25519_selector(&self) -> Option<&str> {
        self.ed25519.as_ref().map(|(s, _)| s.as_str())
    }

    /// The `p=` value for the RSA key (base64 DER SubjectPublicKeyInfo).
    pub fn public_key_base64(&self) -> String {
        rsa_public_base64(&self.rsa.0).unwrap_or_default()
    }

    /// The `p=` value for the Ed25519 key (base64 of the raw 32-byte key, RFC 8463).
    pub fn ed25519_public_key_base64(&self) -> Option<String> {
        let (_, key) = self.ed25519.as_ref()?;
        Some(B64.encode(key.0.public_key().as_ref()))
    }

    /// Returns `message` with its `DKIM-Signature:` header(s) prepended (timestamp = now).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DkimError> {
        let mut out = self.signature_headers(message)?;
        out.extend_from_slice(message);
        Ok(out)
    }

    /// The `DKIM-Signature:` header fields for `message`, each ending in CRLF: RSA first,
    /// then Ed25519 if configured. Neither covers the other (`h=` never lists them).
    pub fn signature_headers(&self, message: &[u8]) -> Result<Vec<u8>, DkimError> {
        let names = present_signed_headers(message);
        if names.is_empty() {
            return Err(DkimError::Sign(format!(
                "the message has none of the header fields DKIM signs ({})",
                SIGNED_HEADERS.join(", ")
            )));
        }
        let failed = |e: mail_auth::Error| DkimError::Sign(e.to_string());
        let mut out = Vec::with_capacity(1024);
        mail_auth::dkim::DkimSigner::from_key(&self.rsa)
            .domain(self.domain.as_str())
            .selector(self.rsa_selector.as_str())
            .headers(names.iter().copied())
            .sign(message)
            .map_err(failed)?
            .write_header(&mut out);
        if let Some((selector, key)) = &self.ed25519 {
            mail_auth::dkim::DkimSigner::from_key(key)
                .domain(self.domain.as_str())
                .selector(selector.as_str())
                .headers(names.iter().copied())
                .sign(message)
                .map_err(failed)?
                .write_header(&mut out);
        }
        Ok(out)
    }

    /// Signs the message held in `buf` after [`HEADER_ROOM`] bytes of room, writing the
    /// headers into that room: the message itself is not moved again.
    fn sign_in_room(&self, mut buf: Vec<u8>) -> Result<SignedMessage, DkimError> {
        let headers = self.signature_headers(&buf[HEADER_ROOM..])?;
        match HEADER_ROOM.checked_sub(headers.len()) {
            Some(start) => {
                buf[start..HEADER_ROOM].copy_from_slice(&headers);
                Ok(SignedMessage { buf, start })
            }
            None => {
                buf.splice(..HEADER_ROOM, headers);
                Ok(SignedMessage { buf, start: 0 })
            }
        }
    }
}

/// A signed message: the signature headers followed by the original bytes.
pub struct SignedMessage {
    buf: Vec<u8>,
    start: usize,
}

impl SignedMessage {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Signs off the async runtime: on tokio's blocking threads, at most one signature per core
/// at a time (more would only queue on the CPU and take cores from the runtime's threads).
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct SigningPool {
    signer: Arc<DkimSigner>,
    permits: Arc<Semaphore>,
}

impl SigningPool {
    pub fn new(signer: DkimSigner) -> SigningPool {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        SigningPool {
            signer: Arc::new(signer),
            permits: Arc::new(Semaphore::new(cores)),
        }
    }

    pub fn signer(&self) -> &DkimSigner {
        &self.signer
    }

    /// Signs `message`; its bytes are copied once, into the buffer that is then sent.
    pub async fn sign(&self, message: &[u8]) -> Result<SignedMessage, DkimError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DkimError::Sign("the signing pool is closed".into()))?;
        let mut buf = Vec::with_capacity(HEADER_ROOM + message.len());
        buf.resize(HEADER_ROOM, 0);
        buf.extend_from_slice(message);
        let signer = self.signer.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            signer.sign_in_room(buf)
        })
        .await
        .map_err(|e| DkimError::Sign(format!("the signing thread ended abnormally: {e}")))?
    }
}

/// The names of [`SIGNED_HEADERS`] present in the message's header block, in that order.
fn present_signed_headers(message: &[u8]) -> Vec<&'static str> {
    let mut present = [false; SIGNED_HEADERS.len()];
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.first() {
            None => break, // the blank line that ends the header
            Some(b' ' | b'\t') => continue,
            Some(_) => {}
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if let Some(i) = SIGNED_HEADERS
            .iter()
            .position(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        {
            present[i] = true;
        }
    }
    SIGNED_HEADERS
        .iter()
        .zip(present)
        .filter_map(|(name, p)| p.then_some(*name))
        .collect()
}

struct RsaKey(RsaKeyPair);
struct Ed25519Key(Ed25519KeyPair);

impl mail_auth::common::crypto::SigningKey for &RsaKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        let mut data = Vec::with_capacity(1024);
        input.write(&mut data);
        let mut signature = vec![0; self.0.public_modulus_len()];
        self.0
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                &data,
                &mut signature,
            )
            .map_err(|e| mail_auth::Error::CryptoError(e.to_string()))?;
        Ok(signature)
    }

    fn hash(&self, data: impl Writable) -> HashOutput {
        batched_sha256(data)
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::RsaSha256
    }
}

impl mail_auth::common::crypto::SigningKey for &Ed25519Key {
    type Hasher = Sha256;

    /// RFC 8463: Ed25519 signs the SHA-256 hash of the signing input, not the input itself.
    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        let mut hasher = Sha256::hasher();
        input.write(&mut hasher);
        Ok(self.0.sign(hasher.complete().as_ref()).as_ref().to_vec())
    }

    fn hash(&self, data: impl Writable) -> HashOutput {
        batched_sha256(data)
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::Ed25519Sha256
    }
}

/// SHA-256 of what mail-auth writes. Its body canonicaliser writes one byte at a time, and a
/// digest update per byte costs more than the hashing itself: collect 4 KiB per update.
fn batched_sha256(data: impl Writable) -> HashOutput {
    struct Batched {
        ctx: ring::digest::Context,
        buf: Vec<u8>,
    }
    impl Writer for Batched {
        fn write(&mut self, bytes: &[u8]) {
            if self.buf.len() + bytes.len() > self.buf.capacity() {
                self.ctx.update(&self.buf);
                self.buf.clear();
            }
            if bytes.len() >= self.buf.capacity() {
                self.ctx.update(bytes);
            } else {
                self.buf.extend_from_slice(bytes);
            }
        }
    }
    let mut w = Batched {
        ctx: ring::digest::Context::new(&ring::digest::SHA256),
        buf: Vec::with_capacity(4096),
    };
    data.write(&mut w);
    w.ctx.update(&w.buf);
    HashOutput::Ring(w.ctx.finish())
}

/// The first PEM block: (label, DER bytes). A message names what is wrong.
fn pem_block(pem: &str) -> Result<(String, Vec<u8>), String> {
    let mut lines = pem.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or("no PEM block found")?
        .to_string();
    if label.contains("ENCRYPTED") {
        return Err("the key is encrypted".into());
    }
    let end = format!("-----END {label}-----");
    let mut b64 = String::new();
    let mut ended = false;
    for line in lines {
        if line == end {
            ended = true;
            break;
        }
        if line.contains(':') {
            return Err("the key is encrypted (PEM headers)".into());
        }
        b64.push_str(line);
    }
    if !ended {
        return Err(format!("the PEM block has no `{end}` line"));
    }
    let der = B64
        .decode(b64.as_bytes())
        .map_err(|e| format!("the PEM block is not valid base64 ({e})"))?;
    Ok((label, der))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn rsa_public_base64(key: &RsaKeyPair) -> Result<String, DkimError> {
    let der = key
        .public_key()
        .as_der()
        .map_err(|e| DkimError::Key(format!("cannot encode its public key ({e})")))?;
    Ok(B64.encode(der.as_ref()))
}

/// Generates a key: (PKCS#8 PEM private key, the `p=` value of its DNS record).
/// RSA keys are 2048 bits.
pub fn generate_key(algorithm: KeyAlgorithm) -> Result<(String, String), DkimError> {
    match algorithm {
        KeyAlgorithm::Rsa => {
            let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|e| DkimError::Key(format!("generation failed ({e})")))?;
            let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key)
                .map_err(|e| DkimError::Key(format!("cannot encode it ({e})")))?;
            Ok((
                pem_encode("PRIVATE KEY", der.as_ref()),
                rsa_public_base64(&key)?,
            ))
        }
        KeyAlgorithm::Ed25519 => {
            let key = Ed25519KeyPair::generate()
                .map_err(|e| DkimError::Ed25519Key(format!("generation failed ({e})")))?;
            let der = key
                .to_pkcs8()
                .map_err(|e| DkimError::Ed25519Key(format!("cannot encode it ({e})")))?;
            Ok((
                pem_encode("PRIVATE KEY", der.as_ref()),
                B64.encode(key.public_key().as_ref()),
            ))
        }
    }
}

/// Generates an RSA-2048 key: (PKCS#8 PEM private key, base64 DER SubjectPublicKeyInfo for `p=`).
pub fn generate_key_pem() -> Result<(String, String), DkimError> {
    generate_key(KeyAlgorithm::Rsa)
}

/// The zone-file line to publish for an RSA key, e.g.
/// `news._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=MIIB…" "…"`.
pub fn dns_txt_record(selector: &str, domain: &str, public_b64: &str) -> String {
    dns_txt_record_for(KeyAlgorithm::Rsa, selector, domain, public_b64)
}

/// The zone-file line to publish; the value is split into strings of at most 255 characters.
pub fn dns_txt_record_for(
    algorithm: KeyAlgorithm,
    selector: &str,
    domain: &str,
    public_b64: &str,
) -> String {
    let value = format!("v=DKIM1; k={}; p={public_b64}", algorithm.as_str());
    let chunks: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!(
        "{selector}._domainkey.{}. IN TXT {}",
        domain.trim_end_matches('.'),
        chunks.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_signed_headers_present_in_the_header_block_only() {
        let msg =
            b"From: a@x\r\nsubject : one\r\n two\r\nX-Other: y\r\nTO: b@y\r\n\r\nDate: body\r\n";
        assert_eq!(present_signed_headers(msg), vec!["from", "to", "subject"]);
        assert!(present_signed_headers(b"\r\nFrom: a@x\r\n").is_empty());
    }

    #[test]
    fn txt_record_is_split_into_255_char_strings() {
        let p = "A".repeat(392);
        let rec = dns_txt_record("news", "example.com.", &p);
        assert!(rec.starts_with("news._domainkey.example.com. IN TXT \"v=DKIM1; k=rsa; p=AAA"));
        let strings: Vec<&str> = rec.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2);
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.concat(), format!("v=DKIM1; k=rsa; p={p}"));
        let ed = dns_txt_record_for(KeyAlgorithm::Ed25519, "ed", "example.com", "abc=");
        assert_eq!(
            ed,
            "ed._domainkey.example.com. IN TXT \"v=DKIM1; k=ed25519; p=abc=\""
        );
    }

    #[test]
    fn rejects_bad_keys_with_format_hint() {
        let err = DkimSigner::from_pem("example.com", "news", "hello").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("BEGIN RSA PRIVATE KEY") && msg.contains("BEGIN PRIVATE KEY"),
            "{msg}"
        );
        let err = DkimSigner::from_pem("example.com", "bad selector", "x").unwrap_err();
        assert!(err.to_string().contains("selector `bad selector`"));
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = DkimSigner::from_pem("example.com", "news", encrypted).unwrap_err();
        assert!(err.to_string().contains("encrypted"), "{err}");
        let garbage = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = DkimSigner::from_pem("example.com", "news", garbage).unwrap_err();
        assert!(err.to_string().contains("rejected"), "{err}");
    }

    #[test]
    fn pem_round_trips_and_the_header_room_is_used() {
        let (pem, public) = generate_key(KeyAlgorithm::Rsa).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let signer = DkimSigner::from_pem("example.com", "news", &pem).unwrap();
        assert_eq!(signer.public_key_base64(), public);
        let message = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
        let mut buf = vec![0; HEADER_ROOM];
        buf.extend_from_slice(message);
        let signed = signer.sign_in_room(buf).unwrap();
        assert!(signed.start > 0, "the headers fit in the room");
        assert!(
            signed
                .as_bytes()
                .starts_with(b"DKIM-Signature: v=1; a=rsa-sha256")
        );
        assert!(signed.as_bytes().ends_with(message));
    }
}

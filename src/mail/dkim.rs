//! DKIM signing (RFC 6376) of complete raw messages: RSA-SHA256, relaxed/relaxed.
//!
//! Herald builds newsletter bytes itself, so lettre's `Message`-based DKIM does not fit; this
//! signs the bytes directly and prepends the `DKIM-Signature:` header. The parsed key and the
//! constant part of the header are prepared once in [`DkimSigner::from_pem`].

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::sha2::{Digest, Sha256};
use rsa::signature::{DigestSigner, SignatureEncoding};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};

/// Headers signed when present, in this order (`h=`).
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DkimError {
    #[error(
        "not a usable RSA private key: {0}; expected PEM `-----BEGIN RSA PRIVATE KEY-----` (PKCS#1) \
         or `-----BEGIN PRIVATE KEY-----` (unencrypted PKCS#8)"
    )]
    Key(String),
    #[error("RSA key is {0} bits; DKIM needs at least 1024 (2048 recommended)")]
    KeyTooSmall(usize),
    #[error("invalid DKIM {what} `{value}`: expected a DNS name (letters, digits, `-`, `.`, `_`)")]
    Name { what: &'static str, value: String },
}

/// Signs messages for one domain and selector.
#[derive(Clone)]
pub struct DkimSigner {
    domain: String,
    selector: String,
    key: SigningKey<Sha256>,
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSigner")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
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
        let pem = pem.trim();
        let key = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| DkimError::Key(e.to_string()))?
        } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
            RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| DkimError::Key(e.to_string()))?
        } else if pem.contains("ENCRYPTED PRIVATE KEY") {
            return Err(DkimError::Key("the key is encrypted".into()));
        } else {
            return Err(DkimError::Key("no RSA PEM block found".into()));
        };
        let bits = key.n().bits();
        if bits < 1024 {
            return Err(DkimError::KeyTooSmall(bits));
        }
        Ok(DkimSigner {
            domain,
            selector,
            key: SigningKey::<Sha256>::new(key),
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// Returns `message` with a `DKIM-Signature:` header prepended (timestamp = now).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.sign_at(message, now)
    }

    /// Like [`DkimSigner::sign`] with an explicit `t=` (Unix seconds); deterministic.
    pub fn sign_at(&self, message: &[u8], unix_time: u64) -> Vec<u8> {
        let (headers, body) = split_message(message);
        let body_hash = B64.encode(Sha256::digest(canonical_body(body)));

        // Pick the signed headers: for repeated names, bottom-up (RFC 6376 §5.4.2).
        let mut used = vec![false; headers.len()];
        let mut names = Vec::new();
        let mut hasher = Sha256::new();
        for name in SIGNED_HEADERS {
            let found = (0..headers.len()).rev().find(|&i| {
                !used[i]
                    && headers[i]
                        .0
                        .trim_ascii()
                        .eq_ignore_ascii_case(name.as_bytes())
            });
            if let Some(i) = found {
                used[i] = true;
                names.push(*name);
                hasher.update(canonical_header(headers[i].0, headers[i].1));
                hasher.update(b"\r\n");
            }
        }

        let header_value = format!(
            "v=1; a=rsa-sha256; c=relaxed/relaxed; d={}; s={};\r\n\tt={unix_time}; h={};\r\n\tbh={body_hash};\r\n\tb=",
            self.domain,
            self.selector,
            names.join(":"),
        );
        // The signature header itself, with an empty b=, no trailing CRLF.
        hasher.update(canonical_header(b"DKIM-Signature", header_value.as_bytes()));
        // PKCS#1 v1.5 over the incrementally hashed signing input.
        let signature = self.key.sign_digest(hasher).to_vec();

        let mut out = Vec::with_capacity(message.len() + header_value.len() + 400);
        out.extend_from_slice(b"DKIM-Signature: ");
        out.extend_from_slice(header_value.as_bytes());
        out.extend_from_slice(B64.encode(signature).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(message);
        out
    }
}

/// (name, raw value including folding, without the final line ending)
type HeaderField<'a> = (&'a [u8], &'a [u8]);

/// Splits a raw message into (header fields as (name, raw value incl. folding), body).
/// Lines may end in CRLF or bare LF.
fn split_message(message: &[u8]) -> (Vec<HeaderField<'_>>, &[u8]) {
    let mut headers: Vec<HeaderField<'_>> = Vec::new();
    let mut pos = 0;
    let mut current: Option<(usize, usize)> = None; // (field start, colon)
    let mut body_start = message.len();
    while pos < message.len() {
        let end = message[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..end];
        let is_blank = line == b"\r\n" || line == b"\n";
        let is_continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !is_continuation && let Some((start, colon)) = current.take() {
            headers.push((&message[start..colon], trim_eol(&message[colon + 1..pos])));
        }
        if is_blank {
            body_start = end;
            break;
        }
        if !is_continuation && let Some(colon) = line.iter().position(|&b| b == b':') {
            current = Some((pos, pos + colon));
        }
        pos = end;
    }
    if let Some((start, colon)) = current {
        headers.push((&message[start..colon], trim_eol(&message[colon + 1..pos])));
    }
    (headers, &message[body_start.min(message.len())..])
}

fn trim_eol(v: &[u8]) -> &[u8] {
    let v = v.strip_suffix(b"\n").unwrap_or(v);
    v.strip_suffix(b"\r").unwrap_or(v)
}

/// Relaxed header canonicalization: `name:value` with the name lower-cased, the value unfolded,
/// whitespace runs collapsed to one space and trimmed at both ends (no CRLF).
fn canonical_header(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + value.len() + 1);
    out.extend(name.iter().map(u8::to_ascii_lowercase));
    while out.last().is_some_and(|b| matches!(b, b' ' | b'\t')) {
        out.pop();
    }
    out.push(b':');
    let mut pending_space = false;
    let mut started = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => pending_space = started,
            _ => {
                if pending_space {
                    out.push(b' ');
                    pending_space = false;
                }
                out.push(b);
                started = true;
            }
        }
    }
    out
}

/// Relaxed body canonicalization: per line collapse whitespace runs to one space and drop
/// trailing whitespace; drop empty lines at the end; every line ends in CRLF.
fn canonical_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut pending_blank_lines = 0usize;
    let mut lines = body.split(|&b| b == b'\n').peekable();
    while let Some(raw) = lines.next() {
        // The piece after the final LF is not a line (unless the body lacks a final newline).
        if lines.peek().is_none() && raw.is_empty() {
            break;
        }
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let mut line = Vec::with_capacity(raw.len());
        let mut pending_space = false;
        for &b in raw {
            if b == b' ' || b == b'\t' {
                pending_space = true;
            } else {
                if pending_space {
                    line.push(b' ');
                    pending_space = false;
                }
                line.push(b);
            }
        }
        if line.is_empty() {
            pending_blank_lines += 1;
        } else {
            for _ in 0..pending_blank_lines {
                out.extend_from_slice(b"\r\n");
            }
            pending_blank_lines = 0;
            out.extend_from_slice(&line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Generates an RSA-2048 key: (PKCS#1 PEM private key, base64 DER SubjectPublicKeyInfo for `p=`).
pub fn generate_key_pem() -> (String, String) {
    let key = RsaPrivateKey::new(&mut rand_core_06::OsRng, 2048).expect("RSA key generation");
    let pem = key
        .to_pkcs1_pem(LineEnding::LF)
        .expect("PKCS#1 encoding")
        .to_string();
    (pem, public_key_base64(&RsaPublicKey::from(&key)))
}

fn public_key_base64(key: &RsaPublicKey) -> String {
    B64.encode(key.to_public_key_der().expect("SPKI encoding").as_bytes())
}

impl DkimSigner {
    /// The `p=` value for this signer's key (base64 DER SubjectPublicKeyInfo).
    pub fn public_key_base64(&self) -> String {
        public_key_base64(&RsaPublicKey::from(self.key.as_ref()))
    }
}

/// The zone-file line to publish, e.g.
/// `news._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=MIIB…" "…"`; the value is split
/// into strings of at most 255 characters.
pub fn dns_txt_record(selector: &str, domain: &str, public_b64: &str) -> String {
    let value = format!("v=DKIM1; k=rsa; p={public_b64}");
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
    fn relaxed_header_canonicalization() {
        let c = |n: &str, v: &str| String::from_utf8(canonical_header(n.as_bytes(), v.as_bytes()));
        assert_eq!(
            c("SubJect ", " Hello \t  World \r\n\t again  ").unwrap(),
            "subject:Hello World again"
        );
        assert_eq!(c("To", "").unwrap(), "to:");
    }

    #[test]
    fn relaxed_body_canonicalization() {
        let c = |b: &str| String::from_utf8(canonical_body(b.as_bytes())).unwrap();
        assert_eq!(
            c("Hi  there \t\r\n\r\nx\r\n\r\n\r\n"),
            "Hi there\r\n\r\nx\r\n"
        );
        assert_eq!(c(""), "");
        assert_eq!(c("\r\n\r\n"), "");
        assert_eq!(c("no newline"), "no newline\r\n");
        assert_eq!(c("lf only\n \n"), "lf only\r\n");
    }

    #[test]
    fn splits_folded_headers_and_body() {
        let msg = b"From: a@x\r\nSubject: one\r\n two\r\nTo: b@y\r\n\r\nbody\r\n";
        let (h, body) = split_message(msg);
        assert_eq!(h.len(), 3);
        assert_eq!(h[1], (&b"Subject"[..], &b" one\r\n two"[..]));
        assert_eq!(body, b"body\r\n");
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
    }
}

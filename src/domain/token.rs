//! Tokens that travel in links. They are types so that a confirmation token
//! can never be checked as an unsubscribe token and vice versa.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The instance secret that keys every HMAC. Never printed: `Debug` shows
/// `Secret(***)`, and there is no `Display`.
#[derive(Clone, Default)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The shortest `security.secret` accepted: 256 bits, so the key cannot
    /// be guessed even when an attacker holds many valid tokens.
    pub const MIN_LEN: usize = 32;

    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// Length in bytes; an empty secret in config means "use the generated one".
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret as configured, for the few places that must hand it on
    /// (writing a config, a child process's environment). Lossy for
    /// non-UTF-8 bytes, which only a generated secret could hold.
    pub fn expose_text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Secret(bytes.to_vec())
    }

    pub fn to_text(&self) -> String {
        B64.encode(&self.0)
    }

    /// The keyed HMAC with `purpose` already fed in: the part of every
    /// [`mac`](Self::mac) that does not depend on the ids.
    fn keyed(&self, purpose: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac
    }

    fn finish(mut mac: Hmac<Sha256>, parts: &[i64]) -> [u8; 32] {
        for p in parts {
            mac.update(b":");
            mac.update(&p.to_be_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    fn mac(&self, purpose: &str, parts: &[i64]) -> [u8; 32] {
        Self::finish(self.keyed(purpose), parts)
    }

    /// A short stable tag for a subscriber, used in Message-IDs so that the
    /// id reveals neither the address nor the row id.
    pub fn subscriber_tag(&self, subscriber_id: i64) -> String {
        let mac = self.mac(SUBSCRIBER_TAG, &[subscriber_id]);
        hex::encode(&mac[..8])
    }

    /// Whether a subscriber's [`subscriber_tag`](Self::subscriber_tag) is
    /// `tag`, for searching many subscribers: the key and the tag are
    /// prepared once, each call only hashes the id (no key schedule, no hex).
    /// `None` when `tag` is not a tag at all.
    pub fn subscriber_tag_matcher(&self, tag: &str) -> Option<impl Fn(i64) -> bool + Send + use<>> {
        let mut want = [0u8; 8];
        hex::decode_to_slice(tag, &mut want).ok()?;
        let keyed = self.keyed(SUBSCRIBER_TAG);
        Some(move |subscriber_id: i64| Self::finish(keyed.clone(), &[subscriber_id])[..8] == want)
    }
}

/// The HMAC purpose of [`Secret::subscriber_tag`].
const SUBSCRIBER_TAG: &str = "message-id";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Secret(text.as_bytes().to_vec())
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret(text.into_bytes())
    }
}

/// `security.secret` is text in `herald.toml`; its length is checked by
/// `Config::validate` so that the error can name the key.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::from)
    }
}

/// Only figment's defaults layer serializes a config; a secret read from
/// bytes that are not UTF-8 never comes from config.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expose_text())
    }
}

/// A double opt-in token: 256 random bits shown once in the mail; only its
/// SHA-256 is stored, so a database leak confirms nobody.
pub struct ConfirmationToken(String);

impl ConfirmationToken {
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        ConfirmationToken(B64.encode(bytes))
    }

    /// Accepts what came back in a URL; anything that is not the shape we
    /// issue is refused before it reaches the database.
    pub fn from_url(s: &str) -> Option<Self> {
        let ok = s.len() == 43
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| ConfirmationToken(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

/// The non-expiring, unforgeable unsubscribe token of one subscriber × newsletter:
/// the two ids and a 128-bit HMAC over them. Stateless, so a link in a
/// years-old issue still works and nothing needs storing per recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsubscribeToken {
    pub subscriber_id: i64,
    pub newsletter_id: i64,
}

impl UnsubscribeToken {
    pub fn new(subscriber_id: i64, newsletter_id: i64) -> Self {
        UnsubscribeToken {
            subscriber_id,
            newsletter_id,
        }
    }

    pub fn encode(&self, secret: &Secret) -> String {
        let mac = secret.mac("unsubscribe", &[self.subscriber_id, self.newsletter_id]);
        format!(
            "{}.{}.{}",
            self.subscriber_id,
            self.newsletter_id,
            B64.encode(&mac[..16])
        )
    }

    /// Checks the MAC in constant time; a forged or mangled token is `None`.
    pub fn verify(token: &str, secret: &Secret) -> Option<Self> {
        let mut parts = token.splitn(3, '.');
        let subscriber_id: i64 = parts.next()?.parse().ok()?;
        let newsletter_id: i64 = parts.next()?.parse().ok()?;
        let given = B64.decode(parts.next()?).ok()?;
        let expected = secret.mac("unsubscribe", &[subscriber_id, newsletter_id]);
        use subtle::ConstantTimeEq;
        (given.len() == 16 && bool::from(given.ct_eq(&expected[..16]))).then_some(
            UnsubscribeToken {
                subscriber_id,
                newsletter_id,
            },
        )
    }
}

/// What a VERP return path (`b-…@bounce.domain`) stands for: the one
/// message a bounce or complaint sent to that address is about. The local
/// part carries the ids and an 80-bit HMAC in lower-case letters and digits
/// only, because some MTAs lower-case local parts on the way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BounceTag {
    /// An issue sent to a subscriber (one `deliveries` row).
    Delivery { issue_id: i64, subscriber_id: i64 },
    /// A test copy or preview of an issue: recorded, never held against a subscriber.
    TestCopy { issue_id: i64 },
    /// A double opt-in confirmation mail to a subscriber of a newsletter.
    Confirmation {
        subscriber_id: i64,
        newsletter_id: i64,
    },
}

impl BounceTag {
    const PREFIX: &'static str = "b-";
    const MAC_BYTES: usize = 10;

    fn parts(&self) -> (char, [i64; 2]) {
        match *self {
            BounceTag::Delivery {
                issue_id,
                subscriber_id,
            } => ('d', [issue_id, subscriber_id]),
            BounceTag::TestCopy { issue_id } => ('t', [issue_id, 0]),
            BounceTag::Confirmation {
                subscriber_id,
                newsletter_id,
            } => ('c', [subscriber_id, newsletter_id]),
        }
    }

    fn mac(kind: char, ids: [i64; 2], secret: &Secret) -> [u8; 32] {
        secret.mac(&format!("verp-{kind}"), &ids)
    }

    /// The local part, e.g. `b-d12-3456-0a1b2c3d4e5f60718293`.
    pub fn local_part(&self, secret: &Secret) -> String {
        let (kind, [a, b]) = self.parts();
        let mac = hex::encode(&Self::mac(kind, [a, b], secret)[..Self::MAC_BYTES]);
        format!("{}{kind}{a}-{b}-{mac}", Self::PREFIX)
    }

    /// The whole return path at `domain` (`bounce.domain`).
    pub fn address(&self, domain: &str, secret: &Secret) -> String {
        format!("{}@{domain}", self.local_part(secret))
    }

    /// Reads a local part (any case) back; a forged, mangled or truncated one
    /// is `None`. The MAC is compared in constant time.
    pub fn verify(local_part: &str, secret: &Secret) -> Option<Self> {
        let lower = local_part.to_ascii_lowercase();
        let rest = lower.strip_prefix(Self::PREFIX)?;
        // ASCII only: slicing after a multi-byte first character would panic.
        let kind = char::from(*rest.as_bytes().first()?);
        let mut fields = rest.get(1..)?.splitn(3, '-');
        let a: i64 = fields.next()?.parse().ok()?;
        let b: i64 = fields.next()?.parse().ok()?;
        let given = hex::decode(fields.next()?).ok()?;
        let tag = match kind {
            'd' => BounceTag::Delivery {
                issue_id: a,
                subscriber_id: b,
            },
            't' if b == 0 => BounceTag::TestCopy { issue_id: a },
            'c' => BounceTag::Confirmation {
                subscriber_id: a,
                newsletter_id: b,
            },
            _ => return None,
        };
        // A canonical spelling only: "+1" or "01" would parse to the same ids.
        // The ids are compared as text, the MAC below in constant time.
        let canonical_ids = format!("{}{kind}{a}-{b}-", Self::PREFIX);
        if !lower.starts_with(&canonical_ids)
            || lower.len() != canonical_ids.len() + 2 * Self::MAC_BYTES
        {
            return None;
        }
        let expected = Self::mac(kind, [a, b], secret);
        use subtle::ConstantTimeEq;
        (given.len() == Self::MAC_BYTES && bool::from(given.ct_eq(&expected[..Self::MAC_BYTES])))
            .then_some(tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsubscribe_token_round_trips_and_rejects_forgery() {
        let secret = Secret::new(b"k".to_vec());
        let t = UnsubscribeToken::new(42, 1).encode(&secret);
        assert_eq!(
            UnsubscribeToken::verify(&t, &secret),
            Some(UnsubscribeToken::new(42, 1))
        );
        let forged = t.replacen("42.", "43.", 1);
        assert_eq!(UnsubscribeToken::verify(&forged, &secret), None);
        assert_eq!(
            UnsubscribeToken::verify(&t, &Secret::new(b"other".to_vec())),
            None
        );
        assert_eq!(UnsubscribeToken::verify("garbage", &secret), None);
    }

    #[test]
    fn subscriber_tag_matcher_agrees_with_subscriber_tag() {
        let secret = Secret::new(b"k".to_vec());
        let tag = secret.subscriber_tag(3456);
        let is_tag = secret.subscriber_tag_matcher(&tag).expect("a tag");
        assert!(is_tag(3456));
        assert!(!is_tag(3457));
        assert!(!Secret::new(b"other".to_vec())
            .subscriber_tag_matcher(&tag)
            .expect("a tag")(3456));
        assert!(secret.subscriber_tag_matcher("not-hex").is_none());
        assert!(secret.subscriber_tag_matcher("0123").is_none());
    }

    #[test]
    fn confirmation_token_shape() {
        let t = ConfirmationToken::generate();
        assert!(ConfirmationToken::from_url(t.as_str()).is_some());
        assert!(ConfirmationToken::from_url("short").is_none());
        assert_ne!(t.hash(), ConfirmationToken::generate().hash());
    }

    #[test]
    fn bounce_tag_round_trips_in_any_case_and_rejects_forgery() {
        let secret = Secret::new(b"k".to_vec());
        for tag in [
            BounceTag::Delivery {
                issue_id: 12,
                subscriber_id: 3456,
            },
            BounceTag::TestCopy { issue_id: 7 },
            BounceTag::Confirmation {
                subscriber_id: 9,
                newsletter_id: 1,
            },
        ] {
            let local = tag.local_part(&secret);
            assert!(local.len() <= 64, "{local}");
            assert!(
                local
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{local}"
            );
            assert_eq!(BounceTag::verify(&local, &secret), Some(tag));
            assert_eq!(
                BounceTag::verify(&local.to_ascii_uppercase(), &secret),
                Some(tag)
            );
            assert_eq!(
                BounceTag::verify(&local, &Secret::new(b"other".to_vec())),
                None
            );
        }
        let local = BounceTag::Delivery {
            issue_id: 12,
            subscriber_id: 3456,
        }
        .local_part(&secret);
        for forged in [
            local.replacen("d12-", "d13-", 1),
            local.replacen("d12-", "d012-", 1),
            local.replacen("d12-", "d+12-", 1),
            local[..local.len() - 2].to_owned(),
            format!("{local}00"),
            local.replacen("b-d", "b-t", 1),
            "b-".into(),
            "b-d1-2-".into(),
            "b-\u{e9}1-2-00".into(),
            "b-d\u{e9}-2-00".into(),
            "postmaster".into(),
            String::new(),
        ] {
            assert_eq!(BounceTag::verify(&forged, &secret), None, "{forged}");
        }
    }
}

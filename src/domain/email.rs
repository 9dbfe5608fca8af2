//! `EmailAddress`: an address that exists is a valid, normalised address.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use unicode_normalization::UnicodeNormalization;

/// Why an address was refused. The message is shown to users as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the address is empty")]
    Empty,
    #[error("the address contains a space, a control character or a line break")]
    ForbiddenCharacter,
    #[error("the address has no @ (expected local-part@domain)")]
    MissingAt,
    #[error("the part before the @ is empty")]
    EmptyLocal,
    #[error("the part before the @ is longer than 64 characters")]
    LocalTooLong,
    #[error("the part before the @ has characters that mail servers refuse ({0:?})")]
    BadLocal(String),
    #[error("the domain after the @ is missing")]
    MissingDomain,
    #[error(
        "the domain {0:?} is not a valid internet domain (expected something like example.com)"
    )]
    BadDomain(String),
    #[error("the address is longer than 254 characters")]
    TooLong,
}

/// A syntactically valid mailbox address (RFC 5321 practice: dot-atom local
/// part, a fully qualified domain). The domain is stored lower-cased in its
/// ASCII (punycode) form so that `A@Exämple.com` and `A@xn--exmple-cua.com`
/// are the same subscriber. The local part keeps the spelling the reader
/// typed (for display and sending), but identity ignores its case: see
/// `canonical`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

const LOCAL_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::ForbiddenCharacter);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(EmailError::MissingAt)?;
        if local.is_empty() {
            return Err(EmailError::EmptyLocal);
        }
        // RFC 6531: a UTF-8 local part (`jürgen@`) is deliverable through relays that offer
        // SMTPUTF8. It is kept in NFC and lower-cased, its one spelling: SQL lower() (the
        // unique index, lookups) folds only ASCII on SQLite, so a stored non-ASCII capital
        // would escape the identity rule.
        let utf8_local;
        let local = if local.is_ascii() {
            local
        } else {
            utf8_local = local.nfc().collect::<String>().to_lowercase();
            utf8_local.as_str()
        };
        if local.len() > 64 {
            return Err(EmailError::LocalTooLong);
        }
        // Beyond ASCII only letters and digits: no invisible, bidi-control or symbol
        // characters that would make two addresses look alike.
        let local_ok = local.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || LOCAL_SPECIALS.contains(c)
                || (!c.is_ascii() && c.is_alphanumeric())
        }) && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        if !local_ok {
            return Err(EmailError::BadLocal(local.to_owned()));
        }
        if domain.is_empty() {
            return Err(EmailError::MissingDomain);
        }
        let ascii = idna::domain_to_ascii(domain)
            .map_err(|_| EmailError::BadDomain(domain.to_owned()))?
            .to_ascii_lowercase();
        let labels: Vec<&str> = ascii.split('.').collect();
        let domain_ok = labels.len() >= 2
            && ascii.len() <= 253
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            && labels
                .last()
                .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()));
        if !domain_ok {
            return Err(EmailError::BadDomain(domain.to_owned()));
        }
        let full = format!("{local}@{ascii}");
        if full.len() > 254 {
            return Err(EmailError::TooLong);
        }
        Ok(EmailAddress(full))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }

    /// The one identity of the address: lookup, uniqueness, suppression,
    /// erasure and enqueue all compare this, never the spelling. RFC 5321
    /// lets a server treat `Ann@` and `ann@` as different mailboxes, but no
    /// major provider does, and treating them as two readers sends one
    /// person an issue twice or mails someone who unsubscribed in another
    /// case. The address is ASCII by construction (dot-atom local part,
    /// punycode domain) except for a UTF-8 local part, which is stored
    /// lower-cased already, so this equals SQL `lower(email)` on both
    /// backends, which the database's unique index and queries use.
    pub fn canonical(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    /// The key suppressions are stored under (a hash of `canonical`), so that
    /// an erased subscriber stays suppressed without keeping the address itself.
    pub fn suppression_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.canonical().as_bytes()))
    }

    /// The address for logs at WARN and above: first character of the local
    /// part and the domain (`a***@example.com`). The full address belongs
    /// at debug level only.
    pub fn redacted(&self) -> String {
        redact_address(&self.0)
    }
}

/// [`EmailAddress::redacted`] for an address kept as text (a delivery row).
pub fn redact_address(address: &str) -> String {
    RedactedAddress(address).to_string()
}

/// [`redact_address`] as a `Display`, written straight into a log line:
/// nothing allocated for a field logged once per message.
pub struct RedactedAddress<'a>(pub &'a str);

impl fmt::Display for RedactedAddress<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or(("", self.0));
        if let Some(first) = local.chars().next() {
            fmt::Write::write_char(f, first)?;
        }
        write!(f, "***@{domain}")
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.0)
    }
}

impl std::str::FromStr for EmailAddress {
    type Err = EmailError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for EmailAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EmailAddress::parse(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_normalises_domain() {
        let a = EmailAddress::parse("  Jane.Doe+news@Example.COM ").unwrap();
        assert_eq!(a.as_str(), "Jane.Doe+news@example.com");
    }

    #[test]
    fn idn_unicode_and_punycode_are_one_address() {
        let u = EmailAddress::parse("ivan@пример.рф").unwrap();
        let p = EmailAddress::parse("ivan@xn--e1afmkfd.xn--p1ai").unwrap();
        assert_eq!(u, p);
        assert_eq!(u.domain(), "xn--e1afmkfd.xn--p1ai");
    }

    #[test]
    fn rejects_hostile_and_malformed() {
        for bad in [
            "",
            "no-at-sign",
            "@example.com",
            "user@",
            "user@localhost",
            "user@exa mple.com",
            "us er@example.com",
            "user@example.com\r\nBcc: x@y.z",
            "user\n@example.com",
            ".user@example.com",
            "us..er@example.com",
            "user@-bad-.com",
            "user@example..com",
            "user@1.2.3.4",
            "\"quoted\"@example.com",
            "a(comment)@example.com",
        ] {
            assert!(
                EmailAddress::parse(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(
            EmailAddress::parse(&long_local),
            Err(EmailError::LocalTooLong)
        );
        let long_total = format!("a@{}.com", vec!["b".repeat(60); 5].join("."));
        assert!(EmailAddress::parse(&long_total).is_err());
    }

    #[test]
    fn canonical_ignores_case_but_spelling_is_kept() {
        let a = EmailAddress::parse("Ok1@Example.com").unwrap();
        let b = EmailAddress::parse("OK1@example.COM").unwrap();
        assert_eq!(a.canonical(), "ok1@example.com");
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.as_str(), "Ok1@example.com");
        assert_eq!(a.redacted(), "O***@example.com");
    }

    #[test]
    fn utf8_local_parts_are_one_lower_case_nfc_spelling() {
        let a = EmailAddress::parse("Jürgen@Example.org").unwrap();
        let b = EmailAddress::parse("JÜRGEN@example.org").unwrap();
        // "u" + combining diaeresis (NFD) is the same reader as the composed "ü".
        let c = EmailAddress::parse("ju\u{308}rgen@example.org").unwrap();
        assert_eq!(a.as_str(), "jürgen@example.org");
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.canonical(), "jürgen@example.org");
        assert_eq!(a.suppression_hash(), c.suppression_hash());
        assert!(EmailAddress::parse("用户@例子.广告").is_ok());
        for bad in [
            "jü rgen@example.org",
            "a\u{200b}b@example.org",
            "a\u{202e}b@example.org",
            "smile\u{263a}@example.org",
            "ü..x@example.org",
        ] {
            assert!(
                EmailAddress::parse(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
        let long = format!("{}@example.org", "ü".repeat(33));
        assert_eq!(EmailAddress::parse(&long), Err(EmailError::LocalTooLong));
    }

    #[test]
    fn suppression_hash_ignores_case() {
        let a = EmailAddress::parse("Bob@example.com").unwrap();
        let b = EmailAddress::parse("bob@EXAMPLE.com").unwrap();
        assert_eq!(a.suppression_hash(), b.suppression_hash());
    }
}

//! A mailbox as written in From/Reply-To: an optional display name and an address.

use std::fmt;

use super::{EmailAddress, EmailError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: EmailAddress,
}

impl Mailbox {
    /// Accepts `address`, `<address>`, `Name <address>` and `"Name" <address>`.
    pub fn parse(s: &str) -> Result<Mailbox, EmailError> {
        let s = s.trim();
        if s.contains(['\r', '\n']) {
            return Err(EmailError::ForbiddenCharacter);
        }
        match (s.rfind('<'), s.ends_with('>')) {
            (Some(open), true) => {
                let name = s[..open].trim().trim_matches('"').trim();
                let address = EmailAddress::parse(&s[open + 1..s.len() - 1])?;
                let name = (!name.is_empty()).then(|| name.to_owned());
                Ok(Mailbox { name, address })
            }
            _ => Ok(Mailbox {
                name: None,
                address: EmailAddress::parse(s)?,
            }),
        }
    }

    /// The header form: the name quoted when it needs to be, RFC 2047
    /// encoded when it is not ASCII.
    pub fn header_value(&self) -> String {
        match &self.name {
            None => self.address.to_string(),
            Some(name) => format!("{} <{}>", encode_display_name(name), self.address),
        }
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            None => write!(f, "{}", self.address),
            Some(name) => write!(f, "{name} <{}>", self.address),
        }
    }
}

/// Encodes a display name for a header: as is when it is plain ASCII words,
/// quoted when it has specials, RFC 2047 encoded-words when it is not ASCII.
/// Encoded-words are separated by single spaces, so the header writer can
/// fold there (the value itself never holds a line break).
pub fn encode_display_name(name: &str) -> String {
    if !name.is_ascii() {
        let mut out = Vec::with_capacity(name.len() * 2);
        write_encoded_words(&mut out, name, b" ");
        // Encoded-words are ASCII by construction.
        return String::from_utf8_lossy(&out).into_owned();
    }
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c))
    {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// RFC 2047 "B" encoded-words (UTF-8), each at most 75 characters (RFC 2047
/// §2), joined by `separator` (`b"\r\n "` to fold a header line, `b" "`
/// inside a value that is folded later). Control characters are dropped.
/// This is the one RFC 2047 encoder: every header that needs one calls it.
pub(crate) fn write_encoded_words(out: &mut Vec<u8>, s: &str, separator: &[u8]) {
    use base64::Engine as _;
    // 39 bytes → 52 base64 characters + 12 for `=?utf-8?B?` and `?=` = 64 ≤ 75.
    const CHUNK: usize = 39;
    let mut chunk = [0u8; CHUNK];
    let mut len = 0;
    let mut first = true;
    let mut flush = |out: &mut Vec<u8>, data: &[u8]| {
        if !first {
            out.extend_from_slice(separator);
        }
        first = false;
        out.extend_from_slice(b"=?utf-8?B?");
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(data)
                .as_bytes(),
        );
        out.extend_from_slice(b"?=");
    };
    let mut tmp = [0u8; 4];
    let mut any = false;
    for ch in s.chars() {
        if ch.is_control() {
            continue;
        }
        // A character is never split across two words (RFC 2047 §5).
        let e = ch.encode_utf8(&mut tmp).as_bytes();
        if len + e.len() > CHUNK {
            flush(out, &chunk[..len]);
            len = 0;
        }
        chunk[len..len + e.len()].copy_from_slice(e);
        len += e.len();
        any = true;
    }
    if len > 0 || !any {
        flush(out, &chunk[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let m = Mailbox::parse("Weekly Digest <news@Example.com>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Weekly Digest"));
        assert_eq!(m.address.as_str(), "news@example.com");
        assert_eq!(Mailbox::parse("news@example.com").unwrap().name, None);
        assert_eq!(
            Mailbox::parse("\"A, B\" <a@example.com>")
                .unwrap()
                .header_value(),
            "\"A, B\" <a@example.com>"
        );
        assert!(Mailbox::parse("Bad <nope>").is_err());
        assert!(Mailbox::parse("X <a@example.com>\r\nBcc: y@z.com").is_err());
        assert!(
            Mailbox::parse("Дайджест <a@example.com>")
                .unwrap()
                .header_value()
                .starts_with("=?utf-8?B?")
        );
    }

    #[test]
    fn long_non_ascii_names_become_several_short_encoded_words() {
        let name = "Еженедельный дайджест новостей ".repeat(8);
        let encoded = encode_display_name(&name);
        let words: Vec<&str> = encoded.split(' ').collect();
        assert!(words.len() > 1, "{encoded}");
        for w in &words {
            assert!(w.len() <= 75, "encoded-word longer than 75: {w}");
            assert!(w.starts_with("=?utf-8?B?") && w.ends_with("?="), "{w}");
        }
        let decoded: Vec<u8> = words
            .iter()
            .flat_map(|w| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(&w[10..w.len() - 2])
                    .unwrap()
            })
            .collect();
        assert_eq!(String::from_utf8(decoded).unwrap(), name);
    }
}

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
/// quoted when it has specials, RFC 2047 base64 when it is not ASCII.
pub fn encode_display_name(name: &str) -> String {
    if !name.is_ascii() {
        use base64::Engine;
        return format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(name)
        );
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
                .starts_with("=?utf-8?b?")
        );
    }
}

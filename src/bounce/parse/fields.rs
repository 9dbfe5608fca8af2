//! The machine-readable parts of a report — `message/delivery-status`
//! (RFC 3464) and `message/feedback-report` (RFC 5965) — are groups of
//! header fields separated by blank lines. mail-parser reads each group as it
//! reads a message header (folding, junk lines without a colon, CRLF or LF).

use mail_parser::parsers::MessageStream;
use mail_parser::{Header, HeaderValue, MessageParser};

use super::MAX_FIELD_CHARS;

/// One field of a group: its name as written and its value, unfolded and cut.
pub(super) struct Field {
    pub name: String,
    pub value: String,
}

/// A group of fields (the per-message block, or one recipient's block).
pub(super) struct Group(pub Vec<Field>);

impl Group {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value.as_str())
            .find(|v| !v.is_empty())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Reads at most `max_groups` non-empty groups; each call of the stream's
/// header parser consumes at least one byte, so this is linear in `body`.
pub(super) fn groups(body: &[u8], max_groups: usize, max_fields: usize) -> Vec<Group> {
    let parser = MessageParser::new();
    let mut stream = MessageStream::new(body);
    let mut out = Vec::new();
    let mut fields_seen = 0usize;
    while out.len() < max_groups && fields_seen < max_fields {
        let mut headers: Vec<Header<'_>> = Vec::new();
        let more = stream.parse_headers(&parser, &mut headers);
        if !headers.is_empty() {
            fields_seen += headers.len();
            out.push(Group(
                headers
                    .iter()
                    .filter_map(|h| {
                        // Room for the type ("smtp; ") the reader strips
                        // before cutting the value to its bound.
                        let value = match &h.value {
                            HeaderValue::Text(t) => clip_to(t, MAX_FIELD_CHARS + 64),
                            other => value_text(other)?,
                        };
                        Some(Field {
                            name: h.name.as_str().to_owned(),
                            value,
                        })
                    })
                    .collect(),
            ));
        }
        if !more {
            break;
        }
    }
    out
}

/// The text of a header value whatever parser mail-parser picked for it.
pub(super) fn value_text(value: &HeaderValue<'_>) -> Option<String> {
    match value {
        HeaderValue::Text(t) => Some(clip(t)),
        HeaderValue::TextList(list) => Some(clip(&list.join(", "))),
        HeaderValue::Address(a) => Some(clip(
            &a.iter()
                .filter_map(|addr| addr.address())
                .collect::<Vec<_>>()
                .join(", "),
        )),
        _ => None,
    }
}

/// Text from outside as Herald keeps it: folding and control characters
/// become single spaces, and at most [`MAX_FIELD_CHARS`] characters stay.
pub(super) fn clip(raw: &str) -> String {
    clip_to(raw, MAX_FIELD_CHARS)
}

fn clip_to(raw: &str, max: usize) -> String {
    let mut out = String::with_capacity(raw.len().min(max));
    let mut chars = 0usize;
    let mut pending_space = false;
    for c in raw.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            if chars + 1 >= max {
                break;
            }
            out.push(' ');
            chars += 1;
            pending_space = false;
        }
        if chars >= max {
            break;
        }
        out.push(c);
        chars += 1;
    }
    out
}

/// The value of a typed field (`rfc822; a@b`, `dns; mx.example`,
/// `smtp; 550 …`) without its type, which says how to read it, not what.
pub(super) fn untyped(value: &str) -> &str {
    match value.split_once(';') {
        Some((kind, rest))
            if !kind.trim().is_empty()
                && kind.trim().len() <= 16
                && !kind.trim().contains(char::is_whitespace) =>
        {
            rest.trim()
        }
        _ => value.trim(),
    }
}

/// An address as written in a field (`rfc822; <a@b>`, `"Name" <a@b>`, `a@b`),
/// or `None` when there is none. Never cut: a shortened address is another
/// address.
pub(super) fn address(value: &str) -> Option<String> {
    let v = untyped(value);
    let inner = match (v.find('<'), v.rfind('>')) {
        (Some(start), Some(end)) if start < end => &v[start + 1..end],
        _ => v,
    };
    let inner = inner.trim().trim_matches(|c| c == '"' || c == '\'');
    let valid = inner.len() <= MAX_FIELD_CHARS
        && inner.contains('@')
        && !inner.starts_with('@')
        && !inner.ends_with('@')
        && !inner
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    valid.then(|| inner.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_read_folded_fields_and_skip_junk() {
        let body = b"Reporting-MTA: dns; mx.example.org\r\n\r\n\r\nFinal-Recipient: rfc822;\r\n a@example.com\r\nthis line is junk\r\nAction: failed\r\n\r\nStatus: 5.1.1";
        let groups = groups(body, 10, 100);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].get("reporting-mta"), Some("dns; mx.example.org"));
        assert_eq!(
            groups[1].get("Final-Recipient"),
            Some("rfc822; a@example.com")
        );
        assert_eq!(groups[1].get("Action"), Some("failed"));
        assert_eq!(groups[2].get("Status"), Some("5.1.1"));
        assert_eq!(super::groups(body, 2, 100).len(), 2);
    }

    #[test]
    fn clip_unfolds_and_cuts_on_characters() {
        assert_eq!(
            clip("  550 5.1.1\r\n\t user  unknown \u{7}"),
            "550 5.1.1 user unknown"
        );
        let long = "é".repeat(5000);
        let cut = clip(&long);
        assert_eq!(cut.chars().count(), MAX_FIELD_CHARS);
    }

    #[test]
    fn addresses_come_out_of_every_spelling() {
        assert_eq!(
            address("rfc822; a@example.com").as_deref(),
            Some("a@example.com")
        );
        assert_eq!(
            address("rfc822;<a@example.com>").as_deref(),
            Some("a@example.com")
        );
        assert_eq!(
            address("\"A B\" <a@example.com>").as_deref(),
            Some("a@example.com")
        );
        assert_eq!(address("rfc822; not an address"), None);
        assert_eq!(address("<>"), None);
        assert_eq!(untyped("smtp; 550 5.1.1 no"), "550 5.1.1 no");
        assert_eq!(untyped("550 5.1.1 no; really"), "550 5.1.1 no; really");
    }
}

//! What mail-parser is given. It reads any structure in linear time, but
//! keeps every header field and part in memory and builds nested messages as
//! nested values: 300,000 nested `message/rfc822` parts in 10 MB overflow the
//! stack (an abort, not a panic), and 2.5 million one-line fields take
//! 300 MB. A real report has a few dozen fields per part and a handful of
//! parts, so one pass over the lines refuses the shapes only an attacker
//! sends, before any parsing.

use super::ParseError;

/// Parts and nested messages (each needs a `Content-Type` field to nest).
pub(super) const MAX_CONTENT_TYPES: usize = 500;
/// Lines that could be header fields, in all parts together. Any line with a
/// colon early on counts (mail-parser takes any name in a header block), so
/// body text counts too: Postfix returns at most 50 kB of the original
/// (`bounce_size_limit`), far below this.
pub(super) const MAX_FIELD_LINES: usize = 50_000;

/// Header names are read up to the colon; longer names are not fields.
const MAX_NAME_BYTES: usize = 80;

pub(super) fn check_shape(raw: &[u8]) -> Result<(), ParseError> {
    let mut content_types = 0usize;
    let mut field_lines = 0usize;
    let mut start = 0usize;
    while start < raw.len() {
        let end = memchr::memchr(b'\n', &raw[start..]).map_or(raw.len(), |p| start + p);
        let line = &raw[start..end];
        if let Some(colon) = memchr::memchr(b':', &line[..line.len().min(MAX_NAME_BYTES)]) {
            field_lines += 1;
            // mail-parser drops blanks inside a field name ("Content-Type :").
            if is_content_type(&line[..colon]) {
                content_types += 1;
            }
        }
        if content_types > MAX_CONTENT_TYPES {
            return Err(ParseError::Malformed(format!(
                "more than {MAX_CONTENT_TYPES} MIME parts or nested messages; \
                 a delivery report has a handful"
            )));
        }
        if field_lines > MAX_FIELD_LINES {
            return Err(ParseError::Malformed(format!(
                "more than {MAX_FIELD_LINES} lines that look like header fields; \
                 a delivery report has a few hundred"
            )));
        }
        start = end + 1;
    }
    Ok(())
}

fn is_content_type(name: &[u8]) -> bool {
    const WANTED: &[u8] = b"content-type";
    let mut letters = name.iter().filter(|c| !c.is_ascii_whitespace());
    WANTED
        .iter()
        .all(|w| letters.next().is_some_and(|c| c.eq_ignore_ascii_case(w)))
        && letters.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_is_recognised_however_spaced() {
        assert!(is_content_type(b"Content-Type"));
        assert!(is_content_type(b"  content-type "));
        assert!(is_content_type(b"Content - Type"));
        assert!(!is_content_type(b"Content-Types"));
        assert!(!is_content_type(b"Content-Typ"));
        assert!(!is_content_type(b"X-Content-Type"));
    }

    #[test]
    fn shapes_over_the_bounds_are_refused() {
        assert!(check_shape(b"Subject: hi\n\nbody").is_ok());
        let nested = "Content-Type: message/rfc822\n\n".repeat(MAX_CONTENT_TYPES + 1);
        assert!(
            matches!(check_shape(nested.as_bytes()), Err(ParseError::Malformed(m)) if m.contains("MIME parts"))
        );
        let fields = "a:b\n".repeat(MAX_FIELD_LINES + 1);
        assert!(
            matches!(check_shape(fields.as_bytes()), Err(ParseError::Malformed(m)) if m.contains("look like header fields"))
        );
        let body = "no colon here\n".repeat(MAX_FIELD_LINES * 2);
        assert!(check_shape(body.as_bytes()).is_ok());
    }
}

//! The raw RFC 5322 message: prepared once per issue, personalised per recipient
//! by concatenating pre-encoded byte ranges with short, freshly encoded values.

use std::ops::Range;

use super::{RenderError, RenderedIssue, Token, match_token, placeholder};

/// Fixed headers of one issue's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeaders {
    /// Already formatted mailbox, e.g. "Weekly Digest <news@example.com>".
    pub from: String,
    pub reply_to: Option<String>,
    pub subject: String,
    /// Fixed per issue so that retries are byte-identical.
    pub date: chrono::DateTime<chrono::FixedOffset>,
    /// e.g. "Weekly Digest <weekly.news.example.com>".
    pub list_id: String,
    pub feedback_id: String,
    /// Extra headers, e.g. ("X-Herald-Test", "1").
    pub extra: Vec<(String, String)>,
    /// Send `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058,
    /// which requires the unsubscribe URL to be https).
    pub one_click: bool,
}

/// Per-recipient values. CR, LF and all other control characters are **stripped**
/// from every value at fill time (never rejected), so they cannot inject headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient<'a> {
    /// Bare address.
    pub to: &'a str,
    pub name: Option<&'a str>,
    /// With angle brackets.
    pub message_id: &'a str,
    /// https URL.
    pub unsubscribe_url: &'a str,
    /// "mailto:unsubscribe@…?subject=…" or None.
    pub unsubscribe_mailto: Option<&'a str>,
}

/// MIME boundary. `=_` can never occur in quoted-printable output, so the boundary
/// cannot collide with the content.
pub const BOUNDARY: &str = "=_HeraldAlternative_7f3a";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(Range<usize>),
    To,
    MessageId,
    ListUnsubscribe,
    Unsub {
        html: bool,
    },
    Name {
        html: bool,
    },
    /// Start of the conditional greeting; `skip_to` is the segment index after its end.
    GreetStart {
        skip_to: usize,
    },
}

/// A message prepared once per issue; see [`MessageTemplate::personalise_into`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTemplate {
    buf: Vec<u8>,
    segs: Vec<Seg>,
}

/// Header names the template writes itself; `extra` may not repeat them.
const RESERVED: &[&str] = &[
    "date",
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "feedback-id",
    "precedence",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

impl MessageTemplate {
    /// Encode headers and both body parts once. Rejects header values containing
    /// CR or LF ([`RenderError::HeaderInjection`]).
    pub fn prepare(
        rendered: &RenderedIssue,
        headers: &MessageHeaders,
    ) -> Result<MessageTemplate, RenderError> {
        check_value("From", &headers.from)?;
        if let Some(r) = &headers.reply_to {
            check_value("Reply-To", r)?;
        }
        check_value("Subject", &headers.subject)?;
        check_value("List-Id", &headers.list_id)?;
        check_value("Feedback-ID", &headers.feedback_id)?;
        if !headers.feedback_id.is_ascii() || headers.feedback_id.trim().is_empty() {
            return Err(invalid("Feedback-ID", "must be non-empty ASCII"));
        }
        for (name, value) in &headers.extra {
            check_value(name, name)?;
            check_value(name, value)?;
            if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
                return Err(invalid(
                    name,
                    "header name must be printable ASCII without ':'",
                ));
            }
            if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                return Err(invalid(
                    name,
                    "is set by the template and may not be repeated",
                ));
            }
        }
        for (label, part) in [("html", &rendered.html), ("text", &rendered.text)] {
            if !part.contains(placeholder::UNSUBSCRIBE_URL) {
                return Err(RenderError::MissingPlaceholder(if label == "html" {
                    "UNSUBSCRIBE_URL (html)"
                } else {
                    "UNSUBSCRIBE_URL (text)"
                }));
            }
            if part.matches(placeholder::GREETING_START).count()
                != part.matches(placeholder::GREETING_END).count()
            {
                return Err(RenderError::UnbalancedGreeting);
            }
        }

        let mut t = Builder::default();
        let mut h = String::with_capacity(1024);
        h.push_str("Date: ");
        h.push_str(&headers.date.to_rfc2822());
        h.push_str("\r\n");
        h.push_str(&mailbox_header("From", &headers.from)?);
        t.lit(h.as_bytes());
        t.segs.push(Seg::To);
        h.clear();
        if let Some(r) = &headers.reply_to {
            h.push_str(&mailbox_header("Reply-To", r)?);
        }
        h.push_str(&unstructured_header("Subject", &headers.subject));
        t.lit(h.as_bytes());
        t.segs.push(Seg::MessageId);
        t.lit(mailbox_header("List-Id", &headers.list_id)?.as_bytes());
        t.segs.push(Seg::ListUnsubscribe);
        h.clear();
        if headers.one_click {
            h.push_str("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
        }
        h.push_str(&unstructured_header(
            "Feedback-ID",
            headers.feedback_id.trim(),
        ));
        h.push_str("Precedence: bulk\r\n");
        for (name, value) in &headers.extra {
            h.push_str(&unstructured_header(name, value));
        }
        h.push_str("MIME-Version: 1.0\r\n");
        h.push_str(&format!(
            "Content-Type: multipart/alternative; boundary=\"{BOUNDARY}\"\r\n\r\n"
        ));
        h.push_str("This is a multi-part message in MIME format.\r\n\r\n");
        h.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        ));
        t.lit(h.as_bytes());
        t.body(&rendered.text, false)?;
        t.lit(format!(
            "\r\n--{BOUNDARY}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).as_bytes());
        t.body(&rendered.html, true)?;
        t.lit(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        Ok(MessageTemplate {
            buf: t.buf,
            segs: t.segs,
        })
    }

    /// Complete message bytes (CRLF line endings), ready for SMTP DATA.
    pub fn personalise(&self, r: &Recipient<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        self.personalise_into(r, &mut out);
        out
    }

    /// Like [`personalise`](Self::personalise) but writes into `out`, which is
    /// cleared first (its capacity is reused).
    pub fn personalise_into(&self, r: &Recipient<'_>, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.buf.len() + 1024);
        let name = r
            .name
            .filter(|n| n.chars().any(|c| !c.is_control() && !c.is_whitespace()));
        let mut i = 0;
        while i < self.segs.len() {
            match &self.segs[i] {
                Seg::Lit(range) => out.extend_from_slice(&self.buf[range.clone()]),
                Seg::To => write_to(out, r.to, name),
                Seg::MessageId => {
                    out.extend_from_slice(b"Message-ID: ");
                    push_stripped(out, r.message_id, b"");
                    out.extend_from_slice(b"\r\n");
                }
                Seg::ListUnsubscribe => write_list_unsubscribe(out, r),
                Seg::Unsub { html } => qp_value(out, r.unsubscribe_url, *html),
                Seg::Name { html } => qp_value(out, name.unwrap_or("").trim(), *html),
                Seg::GreetStart { skip_to } => {
                    if name.is_none() {
                        i = *skip_to;
                        continue;
                    }
                }
            }
            i += 1;
        }
    }
}

fn invalid(field: &str, reason: &str) -> RenderError {
    RenderError::InvalidHeader {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

fn check_value(field: &str, v: &str) -> Result<(), RenderError> {
    if v.contains(['\r', '\n']) {
        return Err(RenderError::HeaderInjection {
            field: field.to_owned(),
        });
    }
    if v.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

#[derive(Default)]
struct Builder {
    buf: Vec<u8>,
    segs: Vec<Seg>,
}

impl Builder {
    fn lit(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        // Merge with a directly preceding literal.
        if let Some(Seg::Lit(r)) = self.segs.last_mut()
            && r.end == start
        {
            r.end = self.buf.len();
            return;
        }
        self.segs.push(Seg::Lit(start..self.buf.len()));
    }

    /// QP-encode a body with placeholders. Each literal run starts at column 0 and
    /// ends with a soft line break, so values can be encoded independently.
    fn body(&mut self, src: &str, html: bool) -> Result<(), RenderError> {
        let mut greet_open: Option<usize> = None;
        let mut rest = src;
        let mut enc = Vec::with_capacity(src.len() * 11 / 10);
        loop {
            let pos = rest.find('\u{1}').unwrap_or(rest.len());
            enc.clear();
            qp_literal(&rest[..pos], &mut enc);
            self.lit(&enc);
            if pos == rest.len() {
                break;
            }
            let (len, tok) = match_token(&rest[pos..]);
            match tok {
                Some(Token::Unsub) => self.segs.push(Seg::Unsub { html }),
                Some(Token::Name) => self.segs.push(Seg::Name { html }),
                Some(Token::GreetStart) => {
                    if greet_open.is_some() {
                        return Err(RenderError::UnbalancedGreeting);
                    }
                    greet_open = Some(self.segs.len());
                    self.segs.push(Seg::GreetStart { skip_to: 0 });
                }
                Some(Token::GreetEnd) => {
                    let start = greet_open.take().ok_or(RenderError::UnbalancedGreeting)?;
                    let end = self.segs.len();
                    self.segs[start] = Seg::GreetStart { skip_to: end };
                    // A fresh literal must start here so the skip target exists even
                    // when the greeting is followed by a merged literal.
                    self.segs.push(Seg::Lit(self.buf.len()..self.buf.len()));
                }
                None => {}
            }
            rest = &rest[pos + len.max(1)..];
        }
        if greet_open.is_some() {
            return Err(RenderError::UnbalancedGreeting);
        }
        Ok(())
    }
}

/// Quoted-printable writer state (RFC 2045 §6.7), lines ≤ 76 characters.
struct Qp {
    col: usize,
}

impl Qp {
    const MAX: usize = 75; // plus the '=' of a soft break = 76

    #[inline]
    fn put(&mut self, out: &mut Vec<u8>, b: u8, ws_safe: bool) {
        if self.col + 1 > Self::MAX {
            self.soft_break(out);
        }
        let literal = match b {
            b'=' => false,
            b' ' | b'\t' => ws_safe,
            b'.' => self.col > 0,
            33..=126 => true,
            _ => false,
        };
        if literal {
            out.push(b);
            self.col += 1;
        } else {
            if self.col + 3 > Self::MAX {
                self.soft_break(out);
            }
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            self.col += 3;
        }
    }

    #[inline]
    fn soft_break(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"=\r\n");
        self.col = 0;
    }

    #[inline]
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.col > 0 {
            self.soft_break(out);
        }
    }
}

/// Encode a literal run (LF or CRLF line endings) starting at column 0.
fn qp_literal(src: &str, out: &mut Vec<u8>) {
    let b = src.as_bytes();
    let mut q = Qp { col: 0 };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        if c == b'\n' {
            out.extend_from_slice(b"\r\n");
            q.col = 0;
            i += 1;
            continue;
        }
        // Whitespace is literal only when more non-newline content follows on this line.
        let ws_safe = matches!(b.get(i + 1), Some(&n) if n != b'\n' && n != b'\r');
        q.put(out, c, ws_safe);
        i += 1;
    }
    q.finish(out);
}

/// Encode a short per-recipient value: control characters stripped, optionally
/// HTML-escaped, spaces always encoded, ends with a soft break.
fn qp_value(out: &mut Vec<u8>, v: &str, html: bool) {
    let mut q = Qp { col: 0 };
    let mut tmp = [0u8; 4];
    for ch in v.chars() {
        if ch.is_control() {
            continue;
        }
        let bytes: &[u8] = if html {
            match ch {
                '&' => b"&amp;",
                '<' => b"&lt;",
                '>' => b"&gt;",
                '"' => b"&quot;",
                '\'' => b"&#39;",
                _ => ch.encode_utf8(&mut tmp).as_bytes(),
            }
        } else {
            ch.encode_utf8(&mut tmp).as_bytes()
        };
        for &b in bytes {
            q.put(out, b, false);
        }
    }
    q.finish(out);
}

/// Copy `s` without control characters and without any byte in `drop`.
#[inline]
fn push_stripped(out: &mut Vec<u8>, s: &str, drop: &[u8]) {
    if !s
        .bytes()
        .any(|b| b < 0x20 || b == 0x7f || drop.contains(&b))
        && !s.contains(|c: char| c.is_control())
    {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    let mut tmp = [0u8; 4];
    for ch in s.chars() {
        if ch.is_control() || (ch.is_ascii() && drop.contains(&(ch as u8))) {
            continue;
        }
        out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
    }
}

fn write_to(out: &mut Vec<u8>, to: &str, name: Option<&str>) {
    out.extend_from_slice(b"To: ");
    if let Some(name) = name {
        let name = name.trim();
        if name.is_ascii() && !name.contains("=?") {
            out.push(b'"');
            for ch in name.chars() {
                if ch.is_control() {
                    continue;
                }
                if ch == '"' || ch == '\\' {
                    out.push(b'\\');
                }
                out.push(ch as u8);
            }
            out.push(b'"');
        } else {
            encoded_words(out, name);
        }
        out.extend_from_slice(b" <");
        push_stripped(out, to.trim(), b"<> ,;\t");
        out.extend_from_slice(b">\r\n");
    } else {
        push_stripped(out, to.trim(), b"<> ,;\t");
        out.extend_from_slice(b"\r\n");
    }
}

fn write_list_unsubscribe(out: &mut Vec<u8>, r: &Recipient<'_>) {
    out.extend_from_slice(b"List-Unsubscribe: <");
    push_stripped(out, r.unsubscribe_url.trim(), b"<> \t");
    out.push(b'>');
    if let Some(m) = r.unsubscribe_mailto {
        out.extend_from_slice(b",\r\n <");
        push_stripped(out, m.trim(), b"<> \t");
        out.push(b'>');
    }
    out.extend_from_slice(b"\r\n");
}

/// RFC 2047 encoded-words folded with CRLF SP between words.
fn encoded_words(out: &mut Vec<u8>, s: &str) {
    crate::domain::mailbox::write_encoded_words(out, s, b"\r\n ");
}

/// An unstructured header (Subject, extras): RFC 2047 when non-ASCII, otherwise
/// folded at spaces near 78 columns.
fn unstructured_header(name: &str, value: &str) -> String {
    let value = value.trim();
    let mut out = Vec::with_capacity(name.len() + value.len() + 16);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    // A word that cannot fit on a line of its own is encoded, so it can fold.
    let fits = |w: &str| w.len() + name.len() + 3 <= MAX_LINE;
    if value.is_ascii() && !value.contains("=?") && value.split(' ').all(fits) {
        let mut col = name.len() + 2;
        let mut first = true;
        for word in value.split(' ') {
            if !first {
                if col + 1 + word.len() > 78 && col > name.len() + 2 {
                    out.extend_from_slice(b"\r\n");
                    col = 0;
                }
                out.push(b' ');
                col += 1;
            }
            out.extend_from_slice(word.as_bytes());
            col += word.len();
            first = false;
        }
    } else {
        encoded_words(&mut out, value);
    }
    out.extend_from_slice(b"\r\n");
    String::from_utf8(out).expect("ascii")
}

/// Header lines are folded before this many characters where a space allows
/// it, and never reach [`MAX_LINE`] (RFC 5322 §2.1.1).
const FOLD_AT: usize = 78;
const MAX_LINE: usize = 998;

/// A mailbox-like header ("Display Name <addr>", also List-Id): the display
/// name is RFC 2047 encoded when non-ASCII (or when one of its words could not
/// fit on a line), and the line is folded at spaces; a non-ASCII address is
/// rejected.
fn mailbox_header(name: &str, value: &str) -> Result<String, RenderError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(name, "must not be empty"));
    }
    let (phrase, addr) = match (value.rfind('<'), value.ends_with('>')) {
        (Some(lt), true) => (value[..lt].trim(), &value[lt..]),
        _ if value.is_ascii() => ("", value),
        _ => {
            return Err(invalid(
                name,
                "non-ASCII address; use \"Name <ascii@address>\"",
            ));
        }
    };
    if !addr.is_ascii() {
        return Err(invalid(name, "non-ASCII address is not supported"));
    }
    let too_long_word = |p: &str| {
        p.split(' ')
            .any(|w| w.len() > FOLD_AT.saturating_sub(name.len() + 2))
    };
    let encoded;
    let phrase = if phrase.is_ascii() && !too_long_word(phrase) {
        phrase
    } else {
        let bare = phrase
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .unwrap_or(phrase);
        let mut words = Vec::with_capacity(bare.len() * 2);
        crate::domain::mailbox::write_encoded_words(&mut words, bare, b" ");
        encoded = String::from_utf8_lossy(&words).into_owned();
        &encoded
    };
    let mut out = String::with_capacity(name.len() + value.len() + 16);
    out.push_str(name);
    out.push_str(": ");
    let mut col = out.len();
    let mut first = true;
    for word in phrase.split(' ').filter(|w| !w.is_empty()).chain([addr]) {
        if !std::mem::take(&mut first) {
            if col + 1 + word.len() > FOLD_AT {
                out.push_str("\r\n");
                col = 0;
            }
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
    }
    debug_assert!(out.split("\r\n").all(|l| l.len() <= MAX_LINE));
    out.push_str("\r\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qp_literal_rules() {
        let mut out = Vec::new();
        qp_literal("a=b \n.x é\n", &mut out);
        assert_eq!(out, b"a=3Db=20\r\n=2Ex =C3=A9\r\n");
        out.clear();
        qp_literal(&"x".repeat(200), &mut out);
        for l in out.split(|&b| b == b'\n') {
            assert!(l.len() <= 77);
        }
    }

    #[test]
    fn mailbox_headers_fold_and_stay_short() {
        assert_eq!(
            mailbox_header("From", "Weekly Digest <news@example.com>").unwrap(),
            "From: Weekly Digest <news@example.com>\r\n"
        );
        let long = format!("{} <weekly.news.example.com>", "Weekly news ".repeat(100));
        let h = mailbox_header("List-Id", &long).unwrap();
        for l in h.split("\r\n") {
            assert!(l.len() <= FOLD_AT, "{l}");
        }
        let unfolded = h.replace("\r\n", "");
        let words: Vec<&str> = long.split_whitespace().collect();
        assert_eq!(unfolded, format!("List-Id: {}", words.join(" ")));
        let one_word = format!("{} <a@example.com>", "x".repeat(1200));
        let h = mailbox_header("From", &one_word).unwrap();
        assert!(h.contains("=?utf-8?B?"), "{h}");
        for l in h.split("\r\n") {
            assert!(l.len() <= FOLD_AT, "{l}");
        }
        let h = mailbox_header("From", "Дайджест <a@example.com>").unwrap();
        assert!(h.starts_with("From: =?utf-8?B?"), "{h}");
        assert!(h.ends_with(" <a@example.com>\r\n"), "{h}");
        assert!(mailbox_header("From", "Дайджест").is_err());
    }

    #[test]
    fn an_unfoldable_ascii_subject_is_encoded() {
        let h = unstructured_header("Subject", &"x".repeat(1200));
        assert!(h.starts_with("Subject: =?utf-8?B?"), "{h}");
        for l in h.split("\r\n") {
            assert!(l.len() <= FOLD_AT, "{l}");
        }
        let h = unstructured_header("Subject", "Plain words stay plain");
        assert_eq!(h, "Subject: Plain words stay plain\r\n");
    }

    #[test]
    fn encoded_subject_is_folded() {
        let h = unstructured_header("Subject", &"Қазақстан ".repeat(10));
        assert!(h.starts_with("Subject: =?utf-8?B?"));
        for l in h.split("\r\n") {
            assert!(l.len() <= 76, "{l}");
        }
    }
}

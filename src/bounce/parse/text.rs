//! What the human-readable text of a report says, for the bounces that carry
//! no `message/delivery-status` part (Exim's default, Yahoo's "failure
//! notice", Gmail's text) and for diagnostics without a `Status:` field.
//! Every scan here is one forward pass: no backtracking, no regex.

/// The first RFC 3463 enhanced status code (`5.1.1`, `4.2.2`, `5.1.10`) in
/// `text`: class 2, 4 or 5, then one to three digits twice, not part of a
/// longer dotted number such as an IP address.
pub(super) fn enhanced_status(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if matches!(b[i], b'2' | b'4' | b'5')
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'))
            && let Some(end) = dotted_code_end(b, i)
        {
            return Some(text[i..end].to_owned());
        }
        i += 1;
    }
    None
}

/// `class.subject.detail` starting at `start`, returning its end.
fn dotted_code_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    for _ in 0..2 {
        if b.get(i) != Some(&b'.') {
            return None;
        }
        i += 1;
        let digits = b[i..]
            .iter()
            .take(4)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if !(1..=3).contains(&digits) {
            return None;
        }
        i += digits;
    }
    match b.get(i) {
        Some(c)
            if c.is_ascii_alphanumeric()
                || *c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) =>
        {
            None
        }
        _ => Some(i),
    }
}

/// The first basic SMTP reply code (`550 `, `451-`) in `text`, for a
/// diagnostic that gives no enhanced code: where it is, and its class as
/// RFC 3463 spells "no more detail" (`5.0.0`).
pub(super) fn basic_reply(text: &str) -> Option<(usize, String)> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(2)).find_map(|i| {
        let code = &b[i..i + 3];
        let before_ok = i == 0 || !b[i - 1].is_ascii_alphanumeric() && b[i - 1] != b'.';
        let after_ok = matches!(
            b.get(i + 3),
            None | Some(b' ' | b'-' | b':' | b'\r' | b'\n')
        );
        (before_ok
            && after_ok
            && matches!(code[0], b'4' | b'5')
            && code[1].is_ascii_digit()
            && code[2].is_ascii_digit())
        .then(|| (i, format!("{}.0.0", code[0] as char)))
    })
}

/// The first status in `text` and the diagnostic holding it (its line and
/// the lines after it up to a blank one). Without an enhanced code, the
/// class of a basic reply code stands in, made `5.1.1` when the words say
/// the mailbox does not exist (Yahoo's "554 delivery error: dd This user
/// doesn't have a yahoo.com account" carries no enhanced code).
pub(super) fn status_and_line(text: &str) -> Option<(String, String)> {
    if let Some(code) = enhanced_status(text) {
        let at = find_code(text, &code)?;
        return Some((code, paragraph_at(text, at).to_owned()));
    }
    let (at, class) = basic_reply(text)?;
    let diagnostic = paragraph_at(text, at);
    Some((refine_basic(class, diagnostic), diagnostic.to_owned()))
}

/// Phrases MTAs use, in lower case, for a mailbox that does not exist.
const NO_SUCH_MAILBOX: &[&str] = &[
    "user unknown",
    "unknown user",
    "no such user",
    "user not found",
    "not a valid recipient",
    "doesn't have a",
    "does not exist",
    "recipient not found",
    "mailbox not found",
    "no mailbox here",
    "invalid recipient",
];

/// A class-only status (`5.0.0`) made `5.1.1` when `diagnostic` says the
/// mailbox does not exist; any other stays as it is.
pub(super) fn refine_basic(class: String, diagnostic: &str) -> String {
    let lower = diagnostic.to_ascii_lowercase();
    if class == "5.0.0" && NO_SUCH_MAILBOX.iter().any(|p| lower.contains(p)) {
        "5.1.1".to_owned()
    } else {
        class
    }
}

/// From the start of the line holding byte `at` to the next blank line.
fn paragraph_at(text: &str, at: usize) -> &str {
    let start = text[..at].rfind('\n').map_or(0, |p| p + 1);
    let mut end = start;
    for line in text[start..].split_inclusive('\n') {
        if end > start && line.trim().is_empty() {
            break;
        }
        end += line.len();
        if end - start > 4 * super::MAX_FIELD_CHARS {
            break;
        }
    }
    text[start..end].trim()
}

fn find_code(text: &str, code: &str) -> Option<usize> {
    text.match_indices(code).map(|(i, _)| i).find(|&i| {
        let b = text.as_bytes();
        (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'))
            && dotted_code_end(b, i) == Some(i + code.len())
    })
}

fn is_local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b".!#$%&'*+/=?^_`{|}~-".contains(&c)
}

fn is_domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-'
}

/// Addresses written in free text (`<a@b.example>:`, `a@b.example`), in
/// order, at most `max`. Each `@` expands only up to its neighbours, so the
/// scan stays linear whatever the text.
pub(super) fn addresses_in(text: &str, max: usize) -> Vec<(usize, String)> {
    let b = text.as_bytes();
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut last_end = 0;
    for (at, _) in text.match_indices('@') {
        if out.len() >= max {
            break;
        }
        if at < last_end {
            continue;
        }
        let mut start = at;
        while start > last_end && is_local_char(b[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < b.len() && is_domain_char(b[end]) {
            end += 1;
        }
        // A sentence's full stop is not part of the domain.
        while end > at + 1 && matches!(b[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let local = &text[start..at];
        let domain = &text[at + 1..end];
        last_end = end;
        if local.is_empty()
            || local.starts_with('.')
            || !domain.contains('.')
            || domain.starts_with('.')
            || end - start > 254
        {
            continue;
        }
        let found = &text[start..end];
        if !out.iter().any(|(_, a)| a.eq_ignore_ascii_case(found)) {
            out.push((start, found.to_owned()));
        }
    }
    out
}

/// The returned header block quoted inside a body (non-standard bounces):
/// the run of lines around the first `Message-ID:` line that look like
/// header fields or their continuations. Returns the block and where it
/// starts, so that the text before it is the human explanation.
pub(super) fn inline_headers(text: &str) -> Option<(usize, &str)> {
    let lower_at = find_field_line(text, "message-id:")?;
    let mut start = lower_at;
    // Back to the first header-looking line of the block.
    while start > 0 {
        let prev_end = start - 1; // the '\n' ending the previous line
        let prev_start = text[..prev_end].rfind('\n').map_or(0, |p| p + 1);
        let line = text[prev_start..prev_end].trim_end_matches('\r');
        if line.trim().is_empty() || !(looks_like_field(line) || line.starts_with([' ', '\t'])) {
            break;
        }
        start = prev_start;
    }
    let mut end = lower_at;
    loop {
        let line_end = text[end..].find('\n').map_or(text.len(), |p| end + p);
        let line = text[end..line_end].trim_end_matches('\r');
        if line.trim().is_empty() || !(looks_like_field(line) || line.starts_with([' ', '\t'])) {
            break;
        }
        end = (line_end + 1).min(text.len());
        if line_end >= text.len() {
            break;
        }
    }
    Some((start, &text[start..end]))
}

/// The byte offset of the first line that starts with `field` (lower case,
/// compared without case), optionally after blanks.
fn find_field_line(text: &str, field: &str) -> Option<usize> {
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.len() >= field.len()
            && trimmed.is_char_boundary(field.len())
            && trimmed[..field.len()].eq_ignore_ascii_case(field)
        {
            return Some(line_start + (line.len() - trimmed.len()));
        }
        line_start += line.len();
    }
    None
}

fn looks_like_field(line: &str) -> bool {
    let line = line.trim_start_matches([' ', '\t']);
    match line.find(':') {
        Some(colon) if colon > 0 && colon <= 76 => line[..colon]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        _ => false,
    }
}

/// Subjects MTAs give their bounces, in lower case. Postfix: "Undelivered
/// Mail Returned to Sender"; Exim: "Mail delivery failed"; Exchange:
/// "Undeliverable:"; Gmail: "Delivery Status Notification (Failure)";
/// qmail and Yahoo: "failure notice"; sendmail: "Returned mail".
const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "delivery status notification",
    "mail delivery failed",
    "failure notice",
    "returned mail",
    "delivery failure",
    "delivery has failed",
    "could not be delivered",
    "non-delivery",
    "nondeliverable",
    "mail delivery system",
    "delivery notification",
];

/// Local parts bounces come from (RFC 5321 §4.5.5 sends them with a null
/// return path, and MTAs sign them as the mailer daemon or postmaster).
const BOUNCE_SENDERS: &[&str] = &[
    "mailer-daemon",
    "mailer_daemon",
    "mail-daemon",
    "postmaster",
];

/// A person answering or forwarding a bounce ("Re: Undeliverable …") is
/// not a bounce.
pub(super) fn subject_says_bounce(subject: &str) -> bool {
    let s = subject.trim_start().to_ascii_lowercase();
    let reply = ["re:", "fw:", "fwd:", "aw:", "wg:", "sv:", "tr:"]
        .iter()
        .any(|p| s.starts_with(p));
    !reply && BOUNCE_SUBJECTS.iter().any(|k| s.contains(k))
}

pub(super) fn subject_says_delay(subject: &str) -> bool {
    let s = subject.to_ascii_lowercase();
    s.contains("delayed") || s.contains("delay notification") || s.contains("still being retried")
}

pub(super) fn sender_is_mailer_daemon(from: &str) -> bool {
    let local = from
        .split('@')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    BOUNCE_SENDERS.contains(&local.as_str())
}

/// Subjects of out-of-office replies (Exchange, Outlook, Gmail's vacation
/// responder and common translations), in lower case.
const AUTO_REPLY_SUBJECTS: &[&str] = &[
    "automatic reply",
    "auto-reply",
    "autoreply",
    "auto reply",
    "out of office",
    "out of the office",
    "abwesenheitsnotiz",
    "automatische antwort",
    "réponse automatique",
    "respuesta automática",
];

pub(super) fn subject_says_auto_reply(subject: &str) -> bool {
    let s = subject.to_lowercase();
    s.starts_with("auto:") || AUTO_REPLY_SUBJECTS.iter().any(|k| s.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes_are_found_but_not_in_ip_addresses() {
        assert_eq!(
            enhanced_status("550 5.1.1 <a@b>: unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            enhanced_status("550-5.1.1 The email account").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            enhanced_status("smtp;550 5.1.10 RESOLVER").as_deref(),
            Some("5.1.10")
        );
        assert_eq!(
            enhanced_status("host [192.0.2.5] said 452 4.2.2").as_deref(),
            Some("4.2.2")
        );
        assert_eq!(enhanced_status("version 5.1.1.4 here"), None);
        assert_eq!(enhanced_status("x5.1.1"), None);
        assert_eq!(enhanced_status("5.1.1234"), None);
        assert_eq!(enhanced_status("5."), None);
        assert_eq!(enhanced_status(""), None);
    }

    #[test]
    fn basic_codes_give_a_class_only() {
        assert_eq!(
            basic_reply("said: 550 user unknown"),
            Some((6, "5.0.0".into()))
        );
        assert_eq!(basic_reply("port 2550 open"), None);
        assert_eq!(basic_reply("451"), Some((0, "4.0.0".into())));
        assert_eq!(
            status_and_line("x\n  550 no such user\n  here\n\nmore"),
            Some(("5.1.1".into(), "550 no such user\n  here".into()))
        );
        assert_eq!(
            status_and_line("554 message refused"),
            Some(("5.0.0".into(), "554 message refused".into()))
        );
        assert_eq!(refine_basic("4.0.0".into(), "user unknown"), "4.0.0");
    }

    #[test]
    fn addresses_in_text_keep_order_and_drop_sentence_ends() {
        let found = addresses_in(
            "to <a@example.com>: and b@example.org. Also @x and a@example.com",
            5,
        );
        let list: Vec<_> = found.iter().map(|(_, a)| a.as_str()).collect();
        assert_eq!(list, ["a@example.com", "b@example.org"]);
        assert!(addresses_in(&"@".repeat(10_000), 5).is_empty());
    }

    #[test]
    fn bounce_subjects_but_not_replies_to_them() {
        assert!(subject_says_bounce("Undelivered Mail Returned to Sender"));
        assert!(subject_says_bounce("Undeliverable: Example News #7"));
        assert!(subject_says_bounce("failure notice"));
        assert!(!subject_says_bounce("Re: Undeliverable: Example News #7"));
        assert!(!subject_says_bounce("Fwd: Mail delivery failed"));
        assert!(!subject_says_bounce("Example News #7"));
    }

    #[test]
    fn the_inline_header_block_is_cut_out_of_the_body() {
        let body = "Sorry.\n\n--- copy ---\n\nReturn-Path: <x@y.example>\nReceived: from a\n  by b\nMessage-ID: <m@n>\nSubject: hi\n\nbody text\n";
        let (start, block) = inline_headers(body).unwrap_or_default();
        assert!(block.starts_with("Return-Path:"), "{block}");
        assert!(block.ends_with("Subject: hi\n"), "{block}");
        assert_eq!(&body[..start], "Sorry.\n\n--- copy ---\n\n");
    }
}

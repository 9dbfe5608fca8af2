//! Raw message → [`Report`]: DSNs, ARF reports, auto-replies and
//! non-standard bounces.
//!
//! mail-parser reads the MIME structure, the charsets and every header
//! field, including the field groups of `message/delivery-status` and
//! `message/feedback-report` ([`fields`]). What is left here is deciding what
//! the message is, in this order (RFC 3834 §2: reports are themselves
//! auto-generated, so the report type wins over `Auto-Submitted`):
//!
//! 1. a `message/feedback-report` part: an ARF report (RFC 5965);
//! 2. a `message/delivery-status` part with recipients: a DSN (RFC 3464);
//! 3. a bounce without one (Exim, Yahoo, Gmail's text): recognised by its
//!    sender, subject or `X-Failed-Recipients`, read from its text ([`text`]);
//! 4. an automatic reply (RFC 3834 `Auto-Submitted`, `X-Autoreply`,
//!    `Precedence: auto_reply`, out-of-office subjects);
//! 5. anything else: `Unrecognised`, recorded and otherwise ignored.
//!
//! Bounds: at most [`MAX_RECIPIENTS`] recipients and [`MAX_RETURN_PATHS`]
//! return paths, every text field cut at [`MAX_FIELD_CHARS`] characters, no
//! recursion here (a returned message is read one level deep; mail-parser
//! keeps its own nesting on a heap stack and decodes encoded nested messages
//! at most three deep), and every scan a single forward pass.

mod fields;
mod limits;
mod text;

use std::borrow::Cow;

use mail_parser::{Header, HeaderName, HeaderValue, Message, MessageParser, MimeHeaders, PartType};

use super::{DsnAction, MAX_REPORT_BYTES, OriginalMessage, RecipientStatus, Report};
use crate::domain::ReportKind;
use fields::{Group, address, clip, untyped};

/// Recipients read from one report; a DSN from a list server can name
/// thousands, and Herald sends one recipient per message.
pub const MAX_RECIPIENTS: usize = 100;
/// Characters kept of any text field (diagnostic, subject, remote MTA).
pub const MAX_FIELD_CHARS: usize = 1000;
/// Candidate return paths kept (report headers plus returned headers).
pub const MAX_RETURN_PATHS: usize = 20;
/// Field groups read from a `message/delivery-status` part: the
/// per-message group plus the recipients, plus room for empty junk.
const MAX_GROUPS: usize = MAX_RECIPIENTS + 2;
/// Fields read from one machine-readable part, whatever their grouping.
const MAX_MACHINE_FIELDS: usize = MAX_GROUPS * 32;
/// Bytes read of one machine-readable part: 100 recipients' groups take a
/// few dozen kilobytes.
const MAX_MACHINE_BYTES: usize = 256 * 1024;
/// How much of the human-readable text a non-standard bounce is read from.
const MAX_TEXT_SCAN_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("the report is {size} bytes; Herald reads reports of at most {max} bytes")]
    TooBig { size: usize, max: usize },
    #[error("not an email message: {0}")]
    Malformed(String),
}

/// Reports up to this size are parsed where they arrive; a bigger one (a
/// DSN returning a whole message, or a hostile 10 MB) costs up to a few
/// hundred milliseconds and goes to the blocking pool, off the runtime that
/// also serves HTTP and delivery.
const PARSE_INLINE_BYTES: usize = 64 * 1024;

/// [`parse_report`] for async callers (the SMTP receiver, IMAP polling).
pub async fn parse_report_async(raw: &[u8]) -> Result<Report, ParseError> {
    if raw.len() <= PARSE_INLINE_BYTES || raw.len() > MAX_REPORT_BYTES {
        return parse_report(raw);
    }
    let owned = raw.to_vec();
    tokio::task::spawn_blocking(move || parse_report(&owned))
        .await
        .unwrap_or_else(|e| Err(ParseError::Malformed(format!("the parser stopped: {e}"))))
}

/// Parses one message as it arrived (headers and body, CRLF or LF).
pub fn parse_report(raw: &[u8]) -> Result<Report, ParseError> {
    if raw.len() > MAX_REPORT_BYTES {
        return Err(ParseError::TooBig {
            size: raw.len(),
            max: MAX_REPORT_BYTES,
        });
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Malformed(
            "the message is empty; send the whole report, header fields first".into(),
        ));
    }
    limits::check_shape(raw)?;
    let message = MessageParser::new().parse(raw).ok_or_else(|| {
        ParseError::Malformed(
            "no header fields found; a report starts with header lines such as \
             \"From:\" and \"Subject:\" followed by a blank line and the body"
                .into(),
        )
    })?;
    let top = message
        .parts
        .first()
        .map(|p| p.headers.as_slice())
        .unwrap_or_default();
    if !top.iter().any(|h| is_message_field(&h.name)) {
        return Err(ParseError::Malformed(
            "no known header field (From, To, Subject, Date, Message-ID, Content-Type); \
             is this an email message?"
                .into(),
        ));
    }

    let parts = Parts::collect(&message);
    let mut report = Report {
        kind: ReportKind::Unrecognised,
        recipients: Vec::new(),
        original: OriginalMessage::default(),
        feedback_type: None,
        provider_event_id: None,
        summary: text_header(top, "Subject"),
    };
    let mut return_paths = ReturnPaths::default();
    for name in ["X-Original-To", "Delivered-To", "Envelope-To", "To"] {
        for value in header_values(top, name) {
            return_paths.add_all(value);
        }
    }

    let returned = parts.returned();
    let human = human_text(&message);
    let inline = match &returned {
        Some(_) => None,
        None => human
            .as_deref()
            .and_then(text::inline_headers)
            .map(|(at, block)| (at, MessageParser::new().parse_headers(block.as_bytes()))),
    };
    let returned_headers: Option<&[Header<'_>]> = match (&returned, &inline) {
        (Some(r), _) => Some(r.headers()),
        (None, Some((_, Some(m)))) => m.parts.first().map(|p| p.headers.as_slice()),
        _ => None,
    };
    // The explanation people read ends where a returned copy starts.
    let explanation: Option<&str> = human.as_deref().map(|h| {
        let end = inline.as_ref().map_or(h.len(), |(at, _)| *at);
        &h[..floor_char_boundary(h, end)]
    });

    if let Some(headers) = returned_headers {
        report.original.message_id = message_id(headers);
        report.original.test_copy =
            header_values(headers, "X-Herald-Test").any(|v| v.trim() == "1");
        for value in header_values(headers, "Return-Path") {
            return_paths.add_all(value);
        }
    }

    if let Some(arf) = parts.feedback.as_deref() {
        read_feedback(arf, &mut report, &mut return_paths, returned_headers);
    } else if let Some(dsn) = parts
        .delivery_status
        .as_deref()
        .map(|body| read_delivery_status(body, &mut return_paths))
        && !dsn.is_empty()
    {
        report.kind = kind_of(&dsn);
        report.recipients = dsn;
    } else if looks_like_bounce(top) {
        read_plain_bounce(top, explanation.unwrap_or_default(), &mut report);
    } else if looks_like_auto_reply(top) {
        report.kind = ReportKind::AutoReply;
        if let Some(from) = header_values(top, "From").next().and_then(|f| address(&f)) {
            report.recipients.push(RecipientStatus {
                address: from,
                action: DsnAction::Delivered,
                status: None,
                diagnostic: None,
                remote_mta: None,
            });
        }
    }
    if report.original.message_id.is_none() {
        report.original.message_id = answered_id(top);
    }

    report.original.return_paths = return_paths.0;
    Ok(report)
}

/// Fields only a message header has: garbage that happens to hold a colon
/// is not a message.
fn is_message_field(name: &HeaderName<'_>) -> bool {
    matches!(
        name,
        HeaderName::From
            | HeaderName::To
            | HeaderName::Subject
            | HeaderName::Date
            | HeaderName::MessageId
            | HeaderName::ContentType
            | HeaderName::ReturnPath
            | HeaderName::Received
            | HeaderName::MimeVersion
    ) || [
        "Auto-Submitted",
        "X-Failed-Recipients",
        "Delivered-To",
        "X-Original-To",
    ]
    .iter()
    .any(|n| name.as_str().eq_ignore_ascii_case(n))
}

/// The parts of the report Herald reads, found in one pass over the
/// message's own parts (not those of a returned message inside it).
struct Parts<'m, 'x> {
    delivery_status: Option<Vec<u8>>,
    feedback: Option<Vec<u8>>,
    returned: Option<&'m mail_parser::MessagePart<'x>>,
}

impl<'m, 'x> Parts<'m, 'x> {
    fn collect(message: &'m Message<'x>) -> Self {
        let mut found = Parts {
            delivery_status: None,
            feedback: None,
            returned: None,
        };
        for part in message.parts.iter().skip(1) {
            let Some(ct) = part.content_type() else {
                continue;
            };
            let subtype = ct.subtype().unwrap_or_default().to_ascii_lowercase();
            match (ct.ctype().to_ascii_lowercase().as_str(), subtype.as_str()) {
                ("message", "delivery-status" | "global-delivery-status")
                    if found.delivery_status.is_none() =>
                {
                    found.delivery_status = Some(machine_readable(part.contents()));
                }
                ("message", "feedback-report") if found.feedback.is_none() => {
                    found.feedback = Some(machine_readable(part.contents()));
                }
                ("message", "rfc822" | "global")
                | ("text", "rfc822-headers" | "global-headers")
                    if found.returned.is_none() =>
                {
                    found.returned = Some(part);
                }
                _ => {}
            }
        }
        found
    }

    /// The returned message's header fields, from a `message/rfc822` part or
    /// a `text/rfc822-headers` one.
    fn returned(&self) -> Option<Returned<'m>> {
        let part = self.returned?;
        match &part.body {
            PartType::Message(inner) => inner.parts.first().map(|p| Returned::Part(&p.headers)),
            PartType::Text(t) | PartType::Html(t) => MessageParser::new()
                .parse_headers(t.as_bytes())
                .map(Returned::Block),
            PartType::Binary(b) | PartType::InlineBinary(b) => MessageParser::new()
                .parse_headers(b.as_ref())
                .map(Returned::Block),
            PartType::Multipart(_) => None,
        }
    }
}

/// The returned message's header fields, borrowed from the parsed report.
enum Returned<'m> {
    /// Those of a `message/rfc822` part, as mail-parser read them.
    Part(&'m [Header<'m>]),
    /// A `text/rfc822-headers` part (or one mail-parser could not nest),
    /// read as a header block.
    Block(Message<'m>),
}

impl<'m> Returned<'m> {
    fn headers(&self) -> &[Header<'m>] {
        match self {
            Returned::Part(headers) => headers,
            Returned::Block(m) => m.parts.first().map_or(&[], |p| p.headers.as_slice()),
        }
    }
}

/// The first human-readable text of the report (text/plain, or HTML turned
/// into text), where non-standard bounces say what happened; at most
/// [`MAX_TEXT_SCAN_BYTES`] of it.
fn human_text<'m>(message: &'m Message<'_>) -> Option<Cow<'m, str>> {
    let flagged = message
        .text_body
        .first()
        .and_then(|&i| message.parts.get(i as usize));
    // A broken multipart (a boundary that never comes) leaves no body part
    // flagged as text; its bytes are still the best explanation.
    let part = flagged.or_else(|| {
        message
            .parts
            .iter()
            .find(|p| matches!(p.body, PartType::Text(_)))
    })?;
    let text = match &part.body {
        PartType::Text(t) => Cow::Borrowed(t.as_ref()),
        PartType::Html(h) => Cow::Owned(mail_parser::decoders::html::html_to_text(h)),
        _ => return None,
    };
    let end = floor_char_boundary(&text, MAX_TEXT_SCAN_BYTES);
    Some(match text {
        Cow::Borrowed(t) => Cow::Borrowed(&t[..end]),
        Cow::Owned(mut t) => {
            t.truncate(end);
            Cow::Owned(t)
        }
    })
}

fn machine_readable(contents: &[u8]) -> Vec<u8> {
    contents[..contents.len().min(MAX_MACHINE_BYTES)].to_vec()
}

fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Every value of a header field, as text, whatever parser mail-parser used.
fn header_values<'h>(
    headers: &'h [Header<'_>],
    name: &'h str,
) -> impl Iterator<Item = String> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.as_str().eq_ignore_ascii_case(name))
        .filter_map(|h| fields::value_text(&h.value))
}

fn text_header(headers: &[Header<'_>], name: &str) -> Option<String> {
    header_values(headers, name).find(|v| !v.is_empty())
}

/// The Message-ID without angle brackets.
fn message_id(headers: &[Header<'_>]) -> Option<String> {
    message_id_in(headers, &HeaderName::MessageId)
}

/// The id a report names as the one it answers: `In-Reply-To`, else the
/// last of `References` (Gmail, Exchange and auto-replies set them).
fn answered_id(headers: &[Header<'_>]) -> Option<String> {
    message_id_in(headers, &HeaderName::InReplyTo)
        .or_else(|| message_id_in(headers, &HeaderName::References))
}

/// The first id of a field, or the last for `References` (oldest first).
fn message_id_in(headers: &[Header<'_>], name: &HeaderName<'_>) -> Option<String> {
    let value = headers.iter().find(|h| &h.name == name)?;
    let id = match &value.value {
        HeaderValue::Text(t) => t.as_ref(),
        HeaderValue::TextList(l) if name == &HeaderName::References => l.last()?.as_ref(),
        HeaderValue::TextList(l) => l.first()?.as_ref(),
        _ => return None,
    };
    let id = clip(id.trim().trim_start_matches('<').trim_end_matches('>'));
    (!id.is_empty() && id.len() <= MAX_FIELD_CHARS).then_some(id)
}

/// Return-path candidates, in the order found, each once.
#[derive(Default)]
struct ReturnPaths(Vec<String>);

impl ReturnPaths {
    fn add_all(&mut self, list: String) {
        for one in list.split(',') {
            if self.0.len() >= MAX_RETURN_PATHS {
                return;
            }
            if let Some(addr) = address(one)
                && !self.0.iter().any(|a| a.eq_ignore_ascii_case(&addr))
            {
                self.0.push(addr);
            }
        }
    }
}

/// RFC 3464 §2.3: one group per recipient after the per-message group.
/// Postfix names the original envelope sender (the VERP path) in the
/// per-message group as `X-Postfix-Sender`.
fn read_delivery_status(body: &[u8], return_paths: &mut ReturnPaths) -> Vec<RecipientStatus> {
    let groups = fields::groups(body, MAX_GROUPS, MAX_MACHINE_FIELDS);
    if let Some(sender) = groups.first().and_then(|g| g.get("X-Postfix-Sender")) {
        return_paths.add_all(untyped(sender).to_owned());
    }
    groups
        .iter()
        .filter_map(recipient_of)
        .take(MAX_RECIPIENTS)
        .collect()
}

fn recipient_of(group: &Group) -> Option<RecipientStatus> {
    let address = group
        .get("Final-Recipient")
        .and_then(address)
        .or_else(|| group.get("Original-Recipient").and_then(address))
        .or_else(|| group.get("X-Actual-Recipient").and_then(address))?;
    let diagnostic = group
        .get("Diagnostic-Code")
        .map(|d| clip(untyped(d)))
        .filter(|d| !d.is_empty());
    let status = group
        .get("Status")
        .and_then(text::enhanced_status)
        .or_else(|| diagnostic.as_deref().and_then(text::enhanced_status))
        .or_else(|| {
            let diagnostic = diagnostic.as_deref()?;
            let (_, class) = text::basic_reply(diagnostic)?;
            Some(text::refine_basic(class, diagnostic))
        });
    let action = group
        .get("Action")
        .and_then(action_of)
        .or_else(|| action_from_status(status.as_deref()))?;
    Some(RecipientStatus {
        address,
        action,
        status,
        diagnostic,
        remote_mta: group
            .get("Remote-MTA")
            .map(|m| clip(untyped(m)))
            .filter(|m| !m.is_empty()),
    })
}

fn action_of(value: &str) -> Option<DsnAction> {
    // Some MTAs add a comment: "failed (bad recipient)".
    let word = value.split(|c: char| !c.is_ascii_alphabetic()).next()?;
    Some(match word.to_ascii_lowercase().as_str() {
        "failed" => DsnAction::Failed,
        "delayed" => DsnAction::Delayed,
        "delivered" => DsnAction::Delivered,
        "relayed" => DsnAction::Relayed,
        "expanded" => DsnAction::Expanded,
        _ => return None,
    })
}

/// A DSN whose `Action` is missing or junk still says what happened by the
/// class of its status.
fn action_from_status(status: Option<&str>) -> Option<DsnAction> {
    match status?.as_bytes().first()? {
        b'5' => Some(DsnAction::Failed),
        b'4' => Some(DsnAction::Delayed),
        b'2' => Some(DsnAction::Delivered),
        _ => None,
    }
}

/// A DSN is a bounce when any recipient failed, a delay notice when the
/// worst is a delay; success notifications change nothing.
fn kind_of(recipients: &[RecipientStatus]) -> ReportKind {
    if recipients.iter().any(|r| r.action == DsnAction::Failed) {
        ReportKind::Bounce
    } else if recipients.iter().any(|r| r.action == DsnAction::Delayed) {
        ReportKind::Delay
    } else {
        ReportKind::Unrecognised
    }
}

/// RFC 5965 §3.1. `abuse`, `fraud`, `virus` and `other` are complaints;
/// `not-spam` (RFC 6430) and `auth-failure` (RFC 6591, DMARC forensic
/// reports) are not a reader's complaint and change nothing.
fn read_feedback(
    body: &[u8],
    report: &mut Report,
    return_paths: &mut ReturnPaths,
    returned: Option<&[Header<'_>]>,
) {
    let groups = fields::groups(body, 4, MAX_MACHINE_FIELDS);
    let field = |name: &str| groups.iter().find_map(|g| g.get(name).map(str::to_owned));
    let feedback_type = field("Feedback-Type").map(|t| clip(&t.to_ascii_lowercase()));
    report.kind = match feedback_type.as_deref() {
        Some("abuse" | "fraud" | "virus" | "other") => ReportKind::Complaint,
        _ => ReportKind::Unrecognised,
    };
    report.feedback_type = feedback_type;
    for group in &groups {
        for from in group.all("Original-Mail-From") {
            return_paths.add_all(from.to_owned());
        }
    }
    let remote_mta = field("Reporting-MTA").map(|m| clip(untyped(&m)));
    let mut rcpts: Vec<String> = groups
        .iter()
        .flat_map(|g| {
            g.all("Original-Rcpt-To")
                .filter_map(address)
                .collect::<Vec<_>>()
        })
        .collect();
    // Providers that leave out Original-Rcpt-To often keep the original's To
    // (Microsoft's JMRP redacts it; then the VERP path or Message-ID matches).
    if rcpts.is_empty()
        && let Some(headers) = returned
    {
        rcpts = header_values(headers, "To")
            .flat_map(|v| v.split(',').filter_map(address).collect::<Vec<_>>())
            .collect();
    }
    rcpts.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    report.recipients = rcpts
        .into_iter()
        .take(MAX_RECIPIENTS)
        .map(|address| RecipientStatus {
            address,
            action: DsnAction::Delivered,
            status: None,
            diagnostic: None,
            remote_mta: remote_mta.clone(),
        })
        .collect();
}

fn looks_like_bounce(top: &[Header<'_>]) -> bool {
    header_values(top, "X-Failed-Recipients").next().is_some()
        || header_values(top, "From")
            .filter_map(|f| address(&f))
            .any(|f| text::sender_is_mailer_daemon(&f))
        || text_header(top, "Subject").is_some_and(|s| text::subject_says_bounce(&s))
}

/// RFC 3834 §5 (`Auto-Submitted` other than `no`), and the older marks
/// vacation programs still send.
fn looks_like_auto_reply(top: &[Header<'_>]) -> bool {
    let auto_submitted = header_values(top, "Auto-Submitted").any(|v| {
        let v = v.trim().to_ascii_lowercase();
        !v.is_empty() && !v.starts_with("no")
    });
    let marked = [
        "X-Autoreply",
        "X-Autorespond",
        "X-Autoresponder",
        "X-Vacation",
    ]
    .iter()
    .any(|n| header_values(top, n).any(|v| !v.trim().eq_ignore_ascii_case("no")));
    let precedence =
        header_values(top, "Precedence").any(|v| v.trim().eq_ignore_ascii_case("auto_reply"));
    auto_submitted
        || marked
        || precedence
        || text_header(top, "Subject").is_some_and(|s| text::subject_says_auto_reply(&s))
}

/// A bounce without a delivery-status part: the recipients from
/// `X-Failed-Recipients` (Exim) or the first addresses of the explanation,
/// each with the first status written after it.
fn read_plain_bounce(top: &[Header<'_>], explanation: &str, report: &mut Report) {
    let mut rcpts: Vec<String> = Vec::new();
    for value in header_values(top, "X-Failed-Recipients") {
        for one in value.split(',') {
            if rcpts.len() < MAX_RECIPIENTS
                && let Some(a) = address(one)
                && !rcpts.iter().any(|r| r.eq_ignore_ascii_case(&a))
            {
                rcpts.push(a);
            }
        }
    }
    if rcpts.is_empty() {
        // The first address the explanation names is the one that failed
        // (qmail/Yahoo "<a@b>:", Exim's indented list, Gmail's sentence).
        rcpts.extend(
            text::addresses_in(explanation, 1)
                .into_iter()
                .map(|(_, a)| a),
        );
    }
    let delayed = text_header(top, "Subject").is_some_and(|s| text::subject_says_delay(&s));
    let whole = text::status_and_line(explanation);
    let lower = explanation.to_ascii_lowercase();
    for address in rcpts {
        // The status written after this address, else the first one at all;
        // ASCII lower-casing keeps byte offsets, so `at` indexes both.
        let after = lower
            .find(&address.to_ascii_lowercase())
            .and_then(|at| text::status_and_line(&explanation[at..]));
        let (status, diagnostic) = match after.or_else(|| whole.clone()) {
            Some((s, d)) => (Some(s), Some(clip(&d))),
            None => (None, None),
        };
        let action = if delayed && status.as_deref().is_none_or(|s| !s.starts_with('5')) {
            DsnAction::Delayed
        } else {
            DsnAction::Failed
        };
        report.recipients.push(RecipientStatus {
            address,
            action,
            status,
            diagnostic,
            remote_mta: None,
        });
    }
    report.kind = if !report.recipients.is_empty() {
        kind_of(&report.recipients)
    } else if whole.is_none() {
        // A mailer daemon's message that names no recipient and no status
        // (a notice, a digest of its queue) is nothing Herald can act on.
        ReportKind::Unrecognised
    } else if delayed {
        ReportKind::Delay
    } else {
        // A status without a recipient is still a bounce: the VERP path or
        // the returned Message-ID says whose it is.
        ReportKind::Bounce
    };
}

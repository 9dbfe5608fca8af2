//! Issue #11: every report in `tests/fixtures/bounces/` is read as what it
//! is, field by field; hostile inputs always get an answer, never a panic.

use herald::bounce::parse::{MAX_FIELD_CHARS, MAX_RECIPIENTS, MAX_RETURN_PATHS};
use herald::bounce::{DsnAction, MAX_REPORT_BYTES, ParseError, Report, parse_report};
use herald::domain::ReportKind;

fn fixtures_dir() -> String {
    format!("{}/tests/fixtures/bounces", env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/{name}", fixtures_dir());
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn parse(name: &str) -> Report {
    parse_report(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What one fixture must parse into.
struct Case {
    file: &'static str,
    kind: ReportKind,
    /// (address, action, enhanced status) per recipient, in order.
    recipients: &'static [(&'static str, DsnAction, Option<&'static str>)],
    message_id: Option<&'static str>,
    /// A return path that must be among the candidates (the VERP address).
    return_path: Option<&'static str>,
    test_copy: bool,
    feedback_type: Option<&'static str>,
}

const ISSUE7: &str = "issue-7.0123456789abcdef@news.example.org";

const CASES: &[Case] = &[
    Case {
        file: "postfix-user-unknown.eml",
        kind: ReportKind::Bounce,
        recipients: &[("ada@example.com", DsnAction::Failed, Some("5.1.1"))],
        message_id: Some(ISSUE7),
        return_path: Some("b-d7-42-0a1b2c3d4e5f60718293@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "postfix-delayed-test-copy.eml",
        kind: ReportKind::Delay,
        recipients: &[("editor@example.net", DsnAction::Delayed, Some("4.4.1"))],
        message_id: Some("issue-7.test.89abcdef01234567@news.example.org"),
        return_path: Some("b-t7-0-5f4e3d2c1b0a99887766@bounces.example.org"),
        test_copy: true,
        feedback_type: None,
    },
    Case {
        file: "postfix-mailbox-full-expired.eml",
        kind: ReportKind::Bounce,
        recipients: &[("bob@example.net", DsnAction::Failed, Some("4.2.2"))],
        message_id: Some("issue-7.1123456789abcdef@news.example.org"),
        return_path: Some("b-d7-43-1b2c3d4e5f60718293a4@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "postfix-delivered.eml",
        kind: ReportKind::Unrecognised,
        recipients: &[("cleo@example.org", DsnAction::Relayed, Some("2.0.0"))],
        message_id: Some("issue-7.2123456789abcdef@news.example.org"),
        return_path: Some("b-d7-44-2c3d4e5f60718293a4b5@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "exim-user-unknown.eml",
        kind: ReportKind::Bounce,
        recipients: &[("dora@example.net", DsnAction::Failed, Some("5.1.1"))],
        message_id: Some("issue-7.3123456789abcdef@news.example.org"),
        return_path: Some("b-d7-45-3d4e5f60718293a4b5c6@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "exim-delay-warning.eml",
        kind: ReportKind::Delay,
        recipients: &[("eve@example.net", DsnAction::Delayed, Some("4.0.0"))],
        message_id: Some("issue-7.4123456789abcdef@news.example.org"),
        return_path: Some("b-d7-46-4e5f60718293a4b5c6d7@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "microsoft365-recipient-not-found.eml",
        kind: ReportKind::Bounce,
        recipients: &[("ada@contoso.com", DsnAction::Failed, Some("5.1.10"))],
        message_id: Some("issue-7.5123456789abcdef@news.example.org"),
        return_path: Some("b-d7-47-5f60718293a4b5c6d7e8@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "gmail-user-unknown.eml",
        kind: ReportKind::Bounce,
        recipients: &[("frank@gmail.com", DsnAction::Failed, Some("5.1.1"))],
        message_id: Some("issue-7.6123456789abcdef@news.example.org"),
        return_path: Some("b-d7-48-60718293a4b5c6d7e8f9@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "yahoo-failure-notice.eml",
        kind: ReportKind::Bounce,
        // No enhanced code in Yahoo's text: "554 … doesn't have a yahoo.com
        // account" is read as a mailbox that does not exist.
        recipients: &[("grace@yahoo.com", DsnAction::Failed, Some("5.1.1"))],
        message_id: Some("issue-7.7123456789abcdef@news.example.org"),
        return_path: Some("b-d7-49-718293a4b5c6d7e8f901@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "nonstandard-bounce-test-copy.eml",
        kind: ReportKind::Bounce,
        recipients: &[("leo@old.example.net", DsnAction::Failed, Some("5.1.1"))],
        message_id: Some("issue-7.test.99abcdef01234567@news.example.org"),
        return_path: Some("b-t7-0-5f4e3d2c1b0a99887766@bounces.example.org"),
        test_copy: true,
        feedback_type: None,
    },
    Case {
        file: "yahoo-arf-complaint.eml",
        kind: ReportKind::Complaint,
        recipients: &[("heidi@yahoo.com", DsnAction::Delivered, None)],
        message_id: Some("issue-7.8123456789abcdef@news.example.org"),
        return_path: Some("b-d7-50-8293a4b5c6d7e8f90112@bounces.example.org"),
        test_copy: false,
        feedback_type: Some("abuse"),
    },
    Case {
        file: "microsoft-jmrp-complaint.eml",
        kind: ReportKind::Complaint,
        // Microsoft removes the recipient: the VERP path and Message-ID match.
        recipients: &[],
        message_id: Some("issue-7.9123456789abcdef@news.example.org"),
        return_path: Some("b-d7-51-93a4b5c6d7e8f9011223@bounces.example.org"),
        test_copy: false,
        feedback_type: Some("abuse"),
    },
    Case {
        file: "autoreply-rfc3834.eml",
        kind: ReportKind::AutoReply,
        recipients: &[("ivan@example.com", DsnAction::Delivered, None)],
        message_id: Some("issue-7.a123456789abcdef@news.example.org"),
        return_path: Some("b-d7-52-a4b5c6d7e8f901122334@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "exchange-oof.eml",
        kind: ReportKind::AutoReply,
        recipients: &[("judy@contoso.com", DsnAction::Delivered, None)],
        message_id: Some("issue-7.b123456789abcdef@news.example.org"),
        return_path: Some("b-d7-53-b5c6d7e8f90112233445@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "vacation-x-autoreply.eml",
        kind: ReportKind::AutoReply,
        recipients: &[("karl@example.de", DsnAction::Delivered, None)],
        message_id: Some("issue-7.c123456789abcdef@news.example.org"),
        return_path: Some("b-d7-54-c6d7e8f9011223344556@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "hostile-truncated-mime.eml",
        kind: ReportKind::Bounce,
        // Cut inside "Status:": the recipient and action survive, the
        // returned message never came.
        recipients: &[("ada@example.com", DsnAction::Failed, None)],
        message_id: None,
        return_path: Some("b-d7-42-0a1b2c3d4e5f60718293@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "hostile-boundary-never-ends.eml",
        kind: ReportKind::Bounce,
        // No part is found; the text still names the recipient and status.
        recipients: &[("mia@example.com", DsnAction::Failed, Some("5.1.1"))],
        message_id: None,
        return_path: Some("b-d7-55-d7e8f901122334455667@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "hostile-non-utf8-charsets.eml",
        kind: ReportKind::Bounce,
        recipients: &[("nina@example.ru", DsnAction::Failed, Some("5.1.1"))],
        message_id: Some("issue-7.d123456789abcdef@news.example.org"),
        return_path: Some("b-d7-56-e8f90112233445566778@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
    Case {
        file: "hostile-junk-delivery-status.eml",
        kind: ReportKind::Bounce,
        // "not-an-address" and the "exploded" action without a status are
        // dropped; "FAILED (permanent failure)" and "5.1.1 (…)" are read.
        recipients: &[("pete@example.com", DsnAction::Failed, Some("5.1.1"))],
        message_id: None,
        return_path: Some("b-d7-57-f9011223344556677889@bounces.example.org"),
        test_copy: false,
        feedback_type: None,
    },
];

#[test]
fn every_fixture_is_classified_field_by_field() {
    for case in CASES {
        let report = parse(case.file);
        let file = case.file;
        assert_eq!(report.kind, case.kind, "{file}: kind");
        let got: Vec<_> = report
            .recipients
            .iter()
            .map(|r| (r.address.as_str(), r.action, r.status.as_deref()))
            .collect();
        assert_eq!(got, case.recipients, "{file}: recipients");
        assert_eq!(
            report.original.message_id.as_deref(),
            case.message_id,
            "{file}: message id"
        );
        if let Some(path) = case.return_path {
            assert!(
                report.original.return_paths.iter().any(|p| p == path),
                "{file}: {path} not among {:?}",
                report.original.return_paths
            );
        }
        assert_eq!(
            report.original.test_copy, case.test_copy,
            "{file}: test copy"
        );
        assert_eq!(
            report.feedback_type.as_deref(),
            case.feedback_type,
            "{file}: feedback type"
        );
        assert!(
            report.summary.is_some(),
            "{file}: the Subject is the summary"
        );
        assert_eq!(
            report.provider_event_id, None,
            "{file}: only webhooks have event ids"
        );
    }
}

#[test]
fn every_fixture_on_disk_has_a_case() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("the fixtures directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    on_disk.sort();
    let mut covered: Vec<String> = CASES.iter().map(|c| c.file.to_owned()).collect();
    covered.sort();
    assert_eq!(on_disk, covered);
}

#[test]
fn diagnostics_and_remote_mtas_are_the_remote_servers_words() {
    let postfix = parse("postfix-user-unknown.eml");
    let r = &postfix.recipients[0];
    assert_eq!(
        r.diagnostic.as_deref(),
        Some(
            "550 5.1.1 <ada@example.com>: Recipient address rejected: User unknown in virtual mailbox table"
        ),
        "unfolded, without the 'smtp;' type"
    );
    assert_eq!(r.remote_mta.as_deref(), Some("mx.example.com"));
    assert_eq!(
        postfix.summary.as_deref(),
        Some("Undelivered Mail Returned to Sender")
    );

    let ms = parse("microsoft365-recipient-not-found.eml");
    let d = ms.recipients[0].diagnostic.as_deref().unwrap_or_default();
    assert!(d.contains("RESOLVER.ADR.RecipientNotFound"), "{d}");

    let gmail = parse("gmail-user-unknown.eml");
    let d = gmail.recipients[0]
        .diagnostic
        .as_deref()
        .unwrap_or_default();
    assert!(
        d.starts_with("550-5.1.1 The email account that you tried to reach does not exist"),
        "{d}"
    );
    assert!(
        gmail.recipients[0]
            .remote_mta
            .as_deref()
            .is_some_and(|m| m.starts_with("gmail-smtp-in.l.google.com")),
        "{:?}",
        gmail.recipients[0].remote_mta
    );

    // Exim's text: the diagnostic is the paragraph holding the status.
    let exim = parse("exim-user-unknown.eml");
    assert_eq!(
        exim.recipients[0].diagnostic.as_deref(),
        Some("550 5.1.1 <dora@example.net>... User unknown")
    );

    // The Cyrillic subject is decoded from KOI8-R; Latin-1 junk in the
    // delivery-status part does not break the rest of the field.
    let koi = parse("hostile-non-utf8-charsets.eml");
    assert_eq!(koi.summary.as_deref(), Some("Недоставленное сообщение"));
    let d = koi.recipients[0].diagnostic.as_deref().unwrap_or_default();
    assert!(d.starts_with("550 5.1.1 Utilisateur inconnu"), "{d}");

    // Control characters become spaces; the field is cut at the bound.
    let junk = parse("hostile-junk-delivery-status.eml");
    let d = junk.recipients[0].diagnostic.as_deref().unwrap_or_default();
    assert!(d.starts_with("550 5.1.1 no such user xxx"), "{d}");
    assert_eq!(d.chars().count(), MAX_FIELD_CHARS);
}

#[test]
fn a_report_type_wins_over_auto_submitted() {
    // Exim and Postfix mark their bounces "Auto-Submitted: auto-replied"
    // (RFC 3834 §5): they are still bounces, not auto-replies.
    for file in [
        "exim-user-unknown.eml",
        "postfix-user-unknown.eml",
        "gmail-user-unknown.eml",
    ] {
        let raw = String::from_utf8_lossy(&fixture(file)).into_owned();
        assert!(raw.contains("Auto-Submitted: auto-replied"), "{file}");
        assert_eq!(parse(file).kind, ReportKind::Bounce, "{file}");
    }
}

#[test]
fn arf_types_that_are_not_complaints_change_nothing() {
    let raw = String::from_utf8_lossy(&fixture("yahoo-arf-complaint.eml")).into_owned();
    for (feedback_type, kind) in [
        ("abuse", ReportKind::Complaint),
        ("fraud", ReportKind::Complaint),
        ("not-spam", ReportKind::Unrecognised),
        ("auth-failure", ReportKind::Unrecognised),
        ("made-up", ReportKind::Unrecognised),
    ] {
        let changed = raw.replace(
            "Feedback-Type: abuse",
            &format!("Feedback-Type: {feedback_type}"),
        );
        let report = parse_report(changed.as_bytes()).expect("parses");
        assert_eq!(report.kind, kind, "{feedback_type}");
        assert_eq!(report.feedback_type.as_deref(), Some(feedback_type));
    }
}

fn assert_bounded(report: &Report, what: &str) {
    assert!(
        report.recipients.len() <= MAX_RECIPIENTS,
        "{what}: recipients"
    );
    assert!(
        report.original.return_paths.len() <= MAX_RETURN_PATHS,
        "{what}: return paths"
    );
    let texts = report
        .recipients
        .iter()
        .flat_map(|r| {
            [
                Some(&r.address),
                r.status.as_ref(),
                r.diagnostic.as_ref(),
                r.remote_mta.as_ref(),
            ]
        })
        .chain([
            report.summary.as_ref(),
            report.feedback_type.as_ref(),
            report.original.message_id.as_ref(),
        ])
        .chain(report.original.return_paths.iter().map(Some))
        .flatten();
    for t in texts {
        assert!(
            t.chars().count() <= MAX_FIELD_CHARS,
            "{what}: a field of {} chars",
            t.chars().count()
        );
    }
}

/// Always an answer: a report, or a clear error saying what is wrong.
fn answer(raw: &[u8], what: &str) {
    match parse_report(raw) {
        Ok(report) => assert_bounded(&report, what),
        Err(ParseError::Malformed(why)) => assert!(!why.is_empty(), "{what}"),
        Err(e @ ParseError::TooBig { .. }) => panic!("{what}: {e} for {} bytes", raw.len()),
    }
}

#[test]
fn every_fixture_cut_at_many_lengths_gets_an_answer() {
    for case in CASES {
        let raw = fixture(case.file);
        // Every length in the header area, then every few bytes.
        let step = (raw.len() / 400).max(1);
        let lengths = (0..raw.len().min(600)).chain((600..raw.len()).step_by(step));
        for len in lengths {
            answer(&raw[..len], &format!("{} cut at {len}", case.file));
        }
    }
}

/// xorshift64: the same "random" inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_bytes_and_mangled_fixtures_get_an_answer() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..2_000 {
        let len = (rng.next() % 4096) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        answer(&bytes, &format!("random input {i}"));
    }
    // Bytes of the corpus overwritten, dropped and duplicated at random:
    // near-valid messages reach deeper into the parser than noise does.
    for case in CASES {
        let raw = fixture(case.file);
        for round in 0..60 {
            let mut bytes = raw.clone();
            for _ in 0..(1 + rng.next() % 16) {
                if bytes.is_empty() {
                    break;
                }
                let at = (rng.next() as usize) % bytes.len();
                match rng.next() % 3 {
                    0 => bytes[at] = rng.next() as u8,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => {
                        let end = (at + (rng.next() % 64) as usize).min(bytes.len());
                        let copy = bytes[at..end].to_vec();
                        bytes.splice(at..at, copy);
                    }
                }
            }
            answer(&bytes, &format!("{} mangled, round {round}", case.file));
        }
    }
}

#[test]
fn nothing_and_garbage_are_clear_errors() {
    for (raw, what) in [
        (&b""[..], "empty"),
        (&b"\r\n\r\n  \n"[..], "blank"),
        (&b"\x00\x01\x02\x03\xff\xfe\xfd"[..], "binary"),
        (&b"hello world, no header here"[..], "a sentence"),
    ] {
        match parse_report(raw) {
            Err(ParseError::Malformed(why)) => assert!(
                why.contains("message") || why.contains("header"),
                "{what}: {why}"
            ),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn a_report_over_the_limit_is_refused_before_it_is_read() {
    let mut raw = fixture("postfix-user-unknown.eml");
    raw.resize(MAX_REPORT_BYTES + 1, b'x');
    let err = parse_report(&raw).expect_err("too big");
    assert_eq!(
        err,
        ParseError::TooBig {
            size: MAX_REPORT_BYTES + 1,
            max: MAX_REPORT_BYTES
        }
    );
    assert!(
        err.to_string().contains(&MAX_REPORT_BYTES.to_string()),
        "{err}"
    );
    // Exactly at the limit is read.
    raw.truncate(MAX_REPORT_BYTES);
    answer(&raw, "a report of exactly MAX_REPORT_BYTES");
}

const HEAD: &str = "From: MAILER-DAEMON@relay.example.org\r\nTo: b-d7-42-0a1b2c3d4e5f60718293@bounces.example.org\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n";

#[test]
fn ten_thousand_nested_parts_get_an_answer() {
    // Multiparts inside multiparts, each with its own boundary, never closed.
    let mut raw = String::from(HEAD);
    raw.push_str("Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
    for i in 1..10_000 {
        raw.push_str(&format!(
            "--b{}\r\nContent-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n",
            i - 1
        ));
    }
    raw.push_str(
        "--b9999\r\nContent-Type: text/plain\r\n\r\n<ada@example.com>: 550 5.1.1 unknown\r\n",
    );
    let err = parse_report(raw.as_bytes()).expect_err("10,000 nested multiparts");
    assert!(
        err.to_string().contains("MIME parts or nested messages"),
        "{err}"
    );

    // Messages inside messages.
    let mut raw = String::from(HEAD);
    raw.push_str("Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\r\n\r\n--r\r\n");
    for _ in 0..10_000 {
        raw.push_str("Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n");
    }
    raw.push_str("\r\nbody\r\n--r--\r\n");
    let err = parse_report(raw.as_bytes()).expect_err("10,000 nested messages");
    assert!(
        err.to_string().contains("MIME parts or nested messages"),
        "{err}"
    );

    // Within the bound, deep nesting is read (and dropped) without trouble;
    // "Content - Type" with blanks, as mail-parser reads it, counts too.
    for spelling in ["Content-Type", "content - type"] {
        let mut raw = String::from(HEAD);
        raw.push_str("Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\r\n\r\n--r\r\n");
        for _ in 0..490 {
            raw.push_str(&format!(
                "{spelling}: message/rfc822\r\n\r\nSubject: inner\r\n"
            ));
        }
        raw.push_str("\r\nbody\r\n--r--\r\n");
        answer(raw.as_bytes(), "490 nested messages");
        raw.push_str(&format!("{spelling}: text/plain\r\n").repeat(20));
        assert!(
            parse_report(raw.as_bytes()).is_err(),
            "{spelling}: 510 content types"
        );
    }
}

#[test]
fn millions_of_tiny_fields_are_refused_before_parsing() {
    // 2.5 million one-line fields would take mail-parser 300 MB.
    for (unit, what) in [
        ("a:b\n", "top-level fields"),
        ("<:>\n", "fields with odd names"),
    ] {
        let mut raw = String::from(HEAD);
        raw.push_str(&unit.repeat(9_000_000 / unit.len()));
        raw.push_str("\nbody\n");
        let err = parse_report(raw.as_bytes()).expect_err(what);
        assert!(
            err.to_string().contains("look like header fields"),
            "{what}: {err}"
        );
    }
    // Text without colons is not limited: a long returned body is fine.
    let mut raw = String::from(HEAD);
    raw.push_str("\n<ada@example.com>: 550 5.1.1 unknown\n\n");
    raw.push_str(&"a line of the returned message\n".repeat(200_000));
    assert_eq!(
        parse_report(raw.as_bytes()).map(|r| r.kind),
        Ok(ReportKind::Bounce)
    );
}

#[test]
fn a_two_megabyte_header_line_gets_an_answer() {
    let mut raw = String::from(HEAD);
    raw.push_str("X-Long: ");
    raw.push_str(&"a".repeat(2 * 1024 * 1024));
    raw.push_str("\r\nSubject: ");
    raw.push_str(&"s".repeat(2 * 1024 * 1024));
    raw.push_str("\r\n\r\n<ada@example.com>: 550 5.1.1 unknown\r\n");
    let report = parse_report(raw.as_bytes()).expect("a message with long lines");
    assert_bounded(&report, "2 MB header lines");
    assert_eq!(report.kind, ReportKind::Bounce);
}

#[test]
fn a_dsn_naming_thousands_of_recipients_keeps_the_first_hundred() {
    let mut raw = String::from(HEAD);
    raw.push_str(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"d\"\r\n\r\n",
    );
    raw.push_str("--d\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example.org\r\n");
    for i in 0..5_000 {
        raw.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; user{i}@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
    }
    raw.push_str("\r\n--d--\r\n");
    let report = parse_report(raw.as_bytes()).expect("parses");
    assert_eq!(report.kind, ReportKind::Bounce);
    assert_eq!(report.recipients.len(), MAX_RECIPIENTS);
    assert_eq!(report.recipients[0].address, "user0@example.com");
    assert_eq!(report.recipients[99].address, "user99@example.com");
}

#[test]
fn an_auto_reply_quoting_a_bounce_subject_is_still_no_bounce() {
    // A person's out-of-office answer: it is not from a mailer daemon and
    // names no failure, whatever the subject it answers.
    let raw = "From: Ana <ana@example.com>\r\nTo: b-d7-42-0a1b2c3d4e5f60718293@bounces.example.org\r\n\
Subject: Out of Office: Example News\r\nAuto-Submitted: auto-replied\r\n\
In-Reply-To: <issue-7.0123456789abcdef@news.example.org>\r\n\r\nAway until Monday.\r\n";
    let report = parse_report(raw.as_bytes()).expect("parses");
    assert_eq!(report.kind, ReportKind::AutoReply);
    assert_eq!(report.original.message_id.as_deref(), Some(ISSUE7));
}

#[test]
fn a_person_writing_about_a_bounce_is_not_one() {
    let raw = "From: Ana <ana@example.com>\r\nTo: b-d7-42-0a1b2c3d4e5f60718293@bounces.example.org\r\n\
Subject: Re: Undeliverable: Example News #7\r\n\r\nWhy did I get this? It said 550 5.1.1 for bo@example.com.\r\n";
    let report = parse_report(raw.as_bytes()).expect("parses");
    assert_eq!(report.kind, ReportKind::Unrecognised);
    assert!(report.recipients.is_empty());
}

#[test]
fn postfix_names_the_original_envelope_sender() {
    // X-Postfix-Sender in the per-message group is the VERP path too, for
    // reports whose own headers were rewritten on the way.
    let raw = String::from_utf8_lossy(&fixture("postfix-user-unknown.eml"))
        .replace(
            "X-Original-To: b-d7-42-0a1b2c3d4e5f60718293@bounces.example.org\n",
            "",
        )
        .replace(
            "Delivered-To: b-d7-42-0a1b2c3d4e5f60718293@bounces.example.org\n",
            "",
        )
        .replace(
            "To: b-d7-42-0a1b2c3d4e5f60718293@bounces.example.org\n",
            "To: bounces@example.org\n",
        )
        .replace(
            "Return-Path: <b-d7-42-0a1b2c3d4e5f60718293@bounces.example.org>\n",
            "",
        );
    let report = parse_report(raw.as_bytes()).expect("parses");
    assert_eq!(
        report.original.return_paths,
        [
            "bounces@example.org",
            "b-d7-42-0a1b2c3d4e5f60718293@bounces.example.org"
        ]
    );
}

#[test]
fn parsing_the_postfix_dsn_is_cheap() {
    // A figure for people (issue #11 wants >= 1,000 reports/s end to end);
    // no timing is asserted on a shared machine.
    let raw = fixture("postfix-user-unknown.eml");
    let rounds = 2_000;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        let report = parse_report(std::hint::black_box(&raw)).expect("parses");
        std::hint::black_box(report);
    }
    let per = start.elapsed() / rounds;
    println!(
        "parse_report(postfix-user-unknown.eml, {} bytes): {:.1} µs per parse ({} build)",
        raw.len(),
        per.as_secs_f64() * 1e6,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}

//! Rendering acceptance tests. Golden files: `UPDATE_GOLDEN=1 cargo test --test render`.

use chrono::{NaiveDate, TimeZone};
use herald::digest_file::parse_digest_file;
use herald::render::{
    DigestIssue, DigestItem, MSO_CLOSE, MSO_OPEN, MessageHeaders, MessageTemplate, NewsletterInfo,
    Recipient, RenderError, RenderedIssue, Theme, render_issue,
};

const SAMPLE: &str = include_str!("../emails/samples/week-2024-18.md");
const UNSUB: &str = "https://news.example.com/u/TOKEN123?x=1&y=2";

fn newsletter() -> NewsletterInfo {
    NewsletterInfo {
        name: "Kazakhstan Press Digest".into(),
        postal_address: "Herald Media, 12 Example Street, Springfield 12345, USA".into(),
        lang: herald::domain::LanguageTag::english(),
        base_url: "https://news.example.com".into(),
    }
}

fn sample_issue() -> DigestIssue {
    let p = parse_digest_file("week-2024-18.md", SAMPLE).expect("sample parses");
    DigestIssue {
        number: 18,
        title: p.title.unwrap(),
        subject: p.subject.unwrap(),
        preheader: p.preheader.unwrap(),
        intro_markdown: p.intro_markdown.unwrap(),
        date: NaiveDate::from_ymd_opt(2024, 5, 3).unwrap(),
        items: p.items,
        web_url: "https://news.example.com/issues/18".into(),
        lang: p.lang,
    }
}

fn render(issue: &DigestIssue) -> RenderedIssue {
    render_issue(&newsletter(), issue, &Theme::builtin()).expect("renders")
}

fn headers() -> MessageHeaders {
    MessageHeaders {
        from: "Kazakhstan Press Digest <news@news.example.com>".into(),
        reply_to: Some("editors@news.example.com".into()),
        subject: "Almaty peace talks, U.S. ties and the Middle Corridor".into(),
        date: chrono::FixedOffset::east_opt(0)
            .unwrap()
            .with_ymd_and_hms(2024, 5, 3, 7, 0, 0)
            .unwrap(),
        list_id: "Kazakhstan Press Digest <weekly.news.example.com>".into(),
        feedback_id: "2024w18:digest:news:herald01".into(),
        extra: vec![("X-Herald-Test".into(), "1".into())],
        one_click: true,
    }
}

fn recipient<'a>(name: Option<&'a str>) -> Recipient<'a> {
    Recipient {
        to: "ada@example.net",
        name,
        message_id: "<0f1e2d3c@news.example.com>",
        unsubscribe_url: UNSUB,
        unsubscribe_mailto: Some(
            "mailto:unsubscribe@news.example.com?subject=unsubscribe-TOKEN123",
        ),
    }
}

fn hostile_item(headline: &str, url: &str) -> DigestItem {
    DigestItem {
        headline: headline.into(),
        outlet: "<b>Outlet</b>".into(),
        published: NaiveDate::from_ymd_opt(2024, 5, 1),
        author: Some("\"><img src=x onerror=alert(2)>".into()),
        author_role: Some("<i>role</i>".into()),
        summary_markdown: "Hi <script>alert(3)</script> [x](javascript:alert(4)) ![p](https://e.com/p.png)\n\n<iframe src=\"https://evil.example\"></iframe>\n".into(),
        quote: Some("</blockquote><script>alert(5)</script>".into()),
        section: Some("<h1>S</h1>".into()),
        url: url.into(),
        lang: None,
    }
}

// ---------- small helpers ----------

fn count(h: &str, needle: &str) -> usize {
    h.matches(needle).count()
}

fn qp_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                i += 3;
                continue;
            }
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

struct Parsed {
    headers: Vec<(String, String)>,
    parts: Vec<(String, String, String)>, // content-type, cte, raw body
}

/// A focused MIME parse: unfold headers, find the boundary, split the parts.
fn parse_message(msg: &[u8]) -> Parsed {
    let s = std::str::from_utf8(msg).expect("message is ASCII/UTF-8");
    assert!(s.is_ascii(), "message must be 7-bit");
    // CRLF only, no bare LF / CR.
    assert_eq!(
        s.matches('\n').count(),
        s.matches("\r\n").count(),
        "bare LF"
    );
    assert_eq!(
        s.matches('\r').count(),
        s.matches("\r\n").count(),
        "bare CR"
    );
    for l in s.split("\r\n") {
        assert!(l.len() <= 998, "line longer than 998: {}", l.len());
    }
    let (head, body) = s.split_once("\r\n\r\n").expect("header/body separator");
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let headers: Vec<(String, String)> = unfolded
        .split("\r\n")
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line has a colon");
            (n.to_owned(), v.trim().to_owned())
        })
        .collect();
    let ct = &headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .unwrap()
        .1;
    assert!(ct.starts_with("multipart/alternative;"), "{ct}");
    let boundary = ct.split("boundary=").nth(1).unwrap().trim_matches('"');
    let delim = format!("\r\n--{boundary}");
    let body = format!("\r\n{body}");
    let mut chunks: Vec<&str> = body.split(&delim).collect();
    assert!(
        chunks.last().unwrap().starts_with("--"),
        "closing delimiter"
    );
    chunks.pop();
    let parts = chunks[1..]
        .iter()
        .map(|c| {
            let c = c.strip_prefix("\r\n").unwrap();
            let (ph, pb) = c.split_once("\r\n\r\n").unwrap();
            let get = |name: &str| {
                ph.split("\r\n")
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                    .unwrap()
            };
            (
                get("Content-Type"),
                get("Content-Transfer-Encoding"),
                pb.to_owned(),
            )
        })
        .collect();
    Parsed { headers, parts }
}

fn header_count(p: &Parsed, name: &str) -> usize {
    p.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .count()
}

fn header<'a>(p: &'a Parsed, name: &str) -> &'a str {
    &p.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("missing {name}"))
        .1
}

fn crlf(s: &str) -> String {
    s.replace('\n', "\r\n")
}

fn prepared() -> (RenderedIssue, MessageTemplate) {
    let r = render(&sample_issue());
    let t = MessageTemplate::prepare(&r, &headers()).unwrap();
    (r, t)
}

// ---------- golden ----------

fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("missing {path:?}; run UPDATE_GOLDEN=1 cargo test --test render")
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or(0);
        panic!(
            "{name} differs from the golden file (first differing line {line}); \
             if the change is intended run UPDATE_GOLDEN=1 cargo test --test render"
        );
    }
}

#[test]
fn golden_sample_html_and_text() {
    let r = render(&sample_issue());
    golden("sample.html", &r.personal_html(Some("Ada"), UNSUB));
    golden("sample.txt", &r.personal_text(Some("Ada"), UNSUB));
    golden("sample-web.html", &r.web_html);
}

// ---------- escaping ----------

#[test]
fn hostile_content_is_escaped() {
    let mut issue = sample_issue();
    issue.title = "<script>alert(0)</script>".into();
    issue.preheader = "\"><img src=x onerror=alert(9)>".into();
    issue.intro_markdown = "<script>alert(6)</script> [a](JavaScript:alert(7))".into();
    issue.items = vec![
        hostile_item("<script>alert(1)</script>", "https://example.com/a"),
        hostile_item("\"><img src=x onerror=alert(1)>", "https://example.com/b"),
    ];
    let r = render(&issue);
    for h in [&r.html, &r.web_html] {
        let lower = h.to_lowercase();
        assert!(!lower.contains("<script"), "script tag leaked");
        assert!(!lower.contains("<img"), "img tag leaked");
        assert!(!lower.contains("<iframe"), "iframe leaked");
        assert!(
            !lower.contains("href=\"javascript"),
            "javascript: URL leaked"
        );
        assert!(!lower.contains("alert(4)"), "dropped link text only");
        assert!(!lower.contains("<b>outlet"), "outlet markup leaked");
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(h.contains("\"&gt;&lt;img src=x onerror=alert(1)&gt;"));
        assert!(h.contains("&lt;iframe"));
        // Markdown image became a link.
        assert!(h.contains("href=\"https://e.com/p.png\""));
        assert_eq!(count(h, "<h1"), 1);
    }
    // Plain text shows the text as typed.
    assert!(r.text.contains("<script>alert(1)</script>"));
    assert!(!r.text.contains("javascript:alert(4)"));
}

#[test]
fn sentinels_in_content_are_removed() {
    let mut issue = sample_issue();
    issue.items[0].headline = "a\u{1}UNSUB\u{1}b".into();
    issue.intro_markdown = "\u{1}GREET\u{1}x".into();
    let r = render(&issue);
    assert_eq!(
        count(&r.html, "\u{1}UNSUB\u{1}"),
        1,
        "only the footer placeholder"
    );
    assert_eq!(count(&r.html, "\u{1}GREET\u{1}"), 1);
    assert!(r.html.contains("aUNSUBb"));
}

#[test]
fn non_http_item_url_omits_button() {
    let mut issue = sample_issue();
    issue.items = vec![
        hostile_item("Bad link", "javascript:alert(1)"),
        hostile_item("Good link", "https://example.com/ok"),
    ];
    let r = render(&issue);
    assert_eq!(count(&r.html, "class=\"more-link\""), 1);
    assert!(!r.html.contains("javascript:"));
    assert_eq!(count(&r.text, "Read the article:"), 1);
}

// ---------- structure ----------

/// The `<style>` holding the kept at-rules.
fn style_block(h: &str) -> &str {
    let start = h.find("<style>").expect("style kept");
    let end = h[start..].find("</style>").unwrap() + start;
    &h[start..end]
}

#[test]
fn css_is_inlined_and_at_rules_kept_in_head() {
    let (r, _) = prepared();
    let h = &r.html;
    // The at-rules, and the Outlook.com dark-mode rules kept as written.
    assert_eq!(count(h, "<style"), 2, "two <style>s");
    assert_eq!(count(h, "<style data-css-inline=\"keep\">[data-ogsb]"), 1);
    let head_end = h.find("</head>").unwrap();
    assert!(h.find("<style").unwrap() < head_end, "<style> is in <head>");
    let style = style_block(h);
    assert!(style.contains("@media"));
    assert!(
        style.contains("prefers-color-scheme: dark") || style.contains("prefers-color-scheme:dark")
    );
    assert!(style.len() < 16 * 1024, "style block {} bytes", style.len());
    // Plain rules were inlined.
    assert!(h.contains("style=\"") && h.contains("border-bottom:3px solid #0b5394"));
    assert!(
        !style.contains(".item {") && !style.contains(".headline{"),
        "plain rules left in <style>"
    );
}

#[test]
fn fluid_hybrid_layout_and_forbidden_features() {
    let (r, _) = prepared();
    for h in [&r.html, &r.web_html] {
        assert!(h.contains("max-width:600px"), "600px container");
        let tables = count(h, "<table");
        assert!(tables >= 3);
        // MSO ghost tables survive inlining byte-for-byte.
        assert_eq!(count(h, MSO_OPEN), 1);
        assert_eq!(count(h, MSO_CLOSE), 1);
        let lower = h.to_lowercase();
        for bad in [
            "display:flex",
            "display: flex",
            "display:grid",
            "<svg",
            "<script",
            "rel=\"stylesheet\"",
            "<link",
        ] {
            assert!(!lower.contains(bad), "forbidden {bad}");
        }
        // Every <img> (if any) has alt.
        assert_eq!(count(h, "<img"), count(h, "<img alt="));
    }
}

#[test]
fn every_layout_table_has_role_presentation() {
    let (r, _) = prepared();
    for (i, _) in r.html.match_indices("<table") {
        let tag_end = r.html[i..].find('>').unwrap() + i;
        assert!(
            r.html[i..tag_end].contains("role=\"presentation\""),
            "{}",
            &r.html[i..tag_end]
        );
    }
}

#[test]
fn head_metadata_and_dark_mode() {
    let (r, _) = prepared();
    let h = &r.html;
    assert!(h.starts_with("<!DOCTYPE html>"));
    assert!(h.contains("<html lang=\"en\" dir=\"ltr\" xmlns:v="));
    assert!(h.contains("<meta charset=\"utf-8\">"));
    assert!(h.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"));
    assert!(h.contains("<meta name=\"color-scheme\" content=\"light dark\">"));
    assert!(h.contains("<meta name=\"supported-color-schemes\" content=\"light dark\">"));
    assert!(h.contains("<title>Almaty peace talks, U.S. ties and the Middle Corridor</title>"));
}

#[test]
fn semantic_headings() {
    let issue = sample_issue();
    let (r, _) = prepared();
    let h = &r.html;
    assert_eq!(count(h, "<h1"), 1);
    assert!(h.contains(">Kazakhstan in the foreign press</h1>"));
    let sections = 3; // sample has three section runs
    // h1 > h2 (the overview, the sections) > h3 (the headlines).
    assert_eq!(count(h, "<h2"), 1 + sections);
    assert_eq!(count(h, "<h2 class=\"overview-title\""), 1);
    assert_eq!(count(h, "<h3 class=\"headline\""), issue.items.len());
    assert_eq!(count(h, "<h2 class=\"section\""), sections);
}

#[test]
fn preheader_is_first_element_in_body() {
    let (r, _) = prepared();
    let h = &r.html;
    let body = h.find("<body").unwrap();
    let after = &h[h[body..].find('>').unwrap() + body + 1..];
    assert!(
        after.starts_with("<div class=\"preheader\""),
        "{}",
        &after[..80]
    );
    let div_end = after.find("</div>").unwrap();
    let pre = &after[..div_end];
    assert!(pre.contains("display:none"));
    assert!(pre.contains("Armenia and Azerbaijan send their foreign ministers"));
    assert!(pre.contains("\u{2007}\u{34f}"), "filler present");
    // web page has no preheader
    assert!(!r.web_html.contains("preheader"));
}

#[test]
fn buttons_are_live_text() {
    let issue = sample_issue();
    let (r, _) = prepared();
    // One read-more link per item, its words naming the outlet.
    assert_eq!(count(&r.html, "class=\"more-link\""), issue.items.len());
    assert_eq!(count(&r.html, ">Read the article</a>"), 0);
    for item in &issue.items {
        assert!(r.html.contains(&format!("href=\"{}\"", item.url)));
        assert!(
            r.html
                .contains(&format!("Read in <bdi>{}</bdi> →", item.outlet))
        );
    }
}

#[test]
fn footer_has_required_parts() {
    let (r, _) = prepared();
    let h = r.personal_html(None, UNSUB);
    assert!(h.contains(
        "You are receiving this because you subscribed to <bdi>Kazakhstan Press Digest</bdi>."
    ));
    assert!(h.contains("Herald Media, 12 Example Street, Springfield 12345, USA"));
    assert_eq!(
        count(
            &h,
            "href=\"https://news.example.com/u/TOKEN123?x=1&amp;y=2\""
        ),
        1
    );
    assert_eq!(count(&h, ">Unsubscribe</a>"), 1);
    // "View in browser" at the top and in the footer.
    assert_eq!(count(&h, "href=\"https://news.example.com/issues/18\""), 2);
    assert_eq!(count(&h, ">View in browser</a>"), 2);
    // Web page: no personal parts, a subscribe link.
    let w = &r.web_html;
    assert!(!w.contains('\u{1}'));
    assert!(!w.contains("Unsubscribe"));
    assert!(!w.contains("Hello"));
    assert!(w.contains("href=\"https://news.example.com/subscribe\""));
    assert!(w.contains("Herald Media, 12 Example Street"));
}

#[test]
fn plain_text_from_model() {
    let issue = sample_issue();
    let (r, _) = prepared();
    let t = r.personal_text(Some("Ada"), UNSUB);
    assert!(t.contains("Kazakhstan in the foreign press\n"));
    assert!(t.contains("Hello Ada,"));
    assert!(t.contains("KAZAKHSTAN AND THE UNITED STATES"));
    assert!(t.contains("The National Interest · 1 May 2024 · By Kamran Bokhari, Senior"));
    assert!(t.contains("“Astana is also a rising international player”"));
    for item in &issue.items {
        assert!(t.contains(&format!("Read the article: {}", item.url)));
    }
    assert!(t.contains(&format!("Unsubscribe: {UNSUB}")));
    assert!(t.contains("Herald Media, 12 Example Street"));
    assert!(!t.contains('<') && !t.contains("**"), "no markup in text");
    for l in t.lines() {
        assert!(
            l.chars().count() <= 72 || !l.trim().contains(' ') || l.contains("https://"),
            "line too long: {l}"
        );
    }
    // Markdown links become numbered references.
    let mut issue2 = sample_issue();
    issue2.intro_markdown = "See [the archive](https://news.example.com/issues).".into();
    let t2 = render(&issue2).text;
    assert!(t2.contains("See the archive [1]."));
    assert!(t2.contains("[1] https://news.example.com/issues"));
}

#[test]
fn greeting_only_with_a_name() {
    let (r, _) = prepared();
    assert!(
        r.personal_html(Some("Ada <b>"), UNSUB)
            .contains("Hello <bdi>Ada &lt;b&gt;</bdi>,")
    );
    for n in [None, Some(""), Some("  ")] {
        assert!(!r.personal_html(n, UNSUB).contains("Hello"));
        assert!(!r.personal_text(n, UNSUB).contains("Hello"));
    }
}

// ---------- MIME ----------

#[test]
fn message_headers_exactly_once_and_parts_in_order() {
    let (r, t) = prepared();
    let msg = t.personalise(&recipient(Some("Ada Lovelace")));
    let p = parse_message(&msg);
    for h in [
        "Date",
        "From",
        "To",
        "Subject",
        "Message-ID",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "Feedback-ID",
        "Precedence",
        "MIME-Version",
        "Reply-To",
        "Content-Type",
        "X-Herald-Test",
    ] {
        assert_eq!(header_count(&p, h), 1, "{h}");
    }
    assert_eq!(header(&p, "Date"), "Fri, 3 May 2024 07:00:00 +0000");
    assert_eq!(header(&p, "To"), "\"Ada Lovelace\" <ada@example.net>");
    assert_eq!(header(&p, "Message-ID"), "<0f1e2d3c@news.example.com>");
    assert_eq!(
        header(&p, "List-Unsubscribe"),
        format!("<{UNSUB}>, <mailto:unsubscribe@news.example.com?subject=unsubscribe-TOKEN123>")
    );
    assert_eq!(
        header(&p, "List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    assert_eq!(header(&p, "Precedence"), "bulk");
    assert_eq!(header(&p, "MIME-Version"), "1.0");
    assert_eq!(p.parts.len(), 2);
    assert_eq!(p.parts[0].0, "text/plain; charset=utf-8");
    assert_eq!(p.parts[1].0, "text/html; charset=utf-8");
    for part in &p.parts {
        assert_eq!(part.1, "quoted-printable");
        for l in part.2.split("\r\n") {
            assert!(l.len() <= 76, "QP line {}: {l}", l.len());
        }
    }
    // Decoded parts equal the rendered content with placeholders filled.
    let text = String::from_utf8(qp_decode(&p.parts[0].2)).unwrap();
    let html = String::from_utf8(qp_decode(&p.parts[1].2)).unwrap();
    assert_eq!(
        text.trim_end(),
        crlf(&r.personal_text(Some("Ada Lovelace"), UNSUB)).trim_end()
    );
    assert_eq!(
        html.trim_end(),
        crlf(&r.personal_html(Some("Ada Lovelace"), UNSUB)).trim_end()
    );
    // A standard parser accepts it.
    assert!(mail_auth::AuthenticatedMessage::parse(&msg).is_some());
}

#[test]
fn html_part_under_90kb_encoded() {
    let (_, t) = prepared();
    let p = parse_message(&t.personalise(&recipient(Some("Ada"))));
    let size = p.parts[1].2.len();
    assert!(size < 90 * 1024, "encoded HTML part is {size} bytes");
}

#[test]
fn without_mailto_and_name() {
    let (_, t) = prepared();
    let mut rc = recipient(None);
    rc.unsubscribe_mailto = None;
    let p = parse_message(&t.personalise(&rc));
    assert_eq!(header(&p, "To"), "ada@example.net");
    assert_eq!(header(&p, "List-Unsubscribe"), format!("<{UNSUB}>"));
    let html = String::from_utf8(qp_decode(&p.parts[1].2)).unwrap();
    assert!(!html.contains("Hello"));
}

#[test]
fn non_ascii_headers_are_rfc2047_encoded() {
    let r = render(&sample_issue());
    let mut h = headers();
    h.subject = "Қазақстан: неделя в прессе".into();
    h.from = "Дайджест <news@news.example.com>".into();
    let t = MessageTemplate::prepare(&r, &h).unwrap();
    let msg = t.personalise(&recipient(Some("Әйгерім Сәтбаева")));
    let p = parse_message(&msg);
    assert!(header(&p, "Subject").starts_with("=?utf-8?B?"));
    assert!(
        header(&p, "From").starts_with("=?utf-8?B?")
            && header(&p, "From").ends_with(" <news@news.example.com>")
    );
    let to = header(&p, "To");
    assert!(
        to.starts_with("=?utf-8?B?") && to.ends_with(" <ada@example.net>"),
        "{to}"
    );
    assert!(mail_auth::AuthenticatedMessage::parse(&msg).is_some());
}

#[test]
fn prepare_rejects_crlf_in_header_values() {
    let r = render(&sample_issue());
    type Mutate = Box<dyn Fn(&mut MessageHeaders)>;
    let cases: Vec<Mutate> = vec![
        Box::new(|h| h.from = "a <a@b.c>\r\nBcc: x@y.z".into()),
        Box::new(|h| h.subject = "Hi\nBcc: x@y.z".into()),
        Box::new(|h| h.reply_to = Some("a@b.c\r".into())),
        Box::new(|h| h.list_id = "L <l.example>\n".into()),
        Box::new(|h| h.feedback_id = "a:b\r\nX: y".into()),
        Box::new(|h| h.extra = vec![("X-A".into(), "1\r\nBcc: x@y.z".into())]),
        Box::new(|h| h.extra = vec![("X-A\r\nBcc".into(), "1".into())]),
    ];
    for f in cases {
        let mut h = headers();
        f(&mut h);
        assert!(matches!(
            MessageTemplate::prepare(&r, &h),
            Err(RenderError::HeaderInjection { .. })
        ));
    }
    let mut h = headers();
    h.extra = vec![("Subject".into(), "dup".into())];
    assert!(matches!(
        MessageTemplate::prepare(&r, &h),
        Err(RenderError::InvalidHeader { .. })
    ));
}

#[test]
fn recipient_crlf_is_stripped_not_injected() {
    let (_, t) = prepared();
    let rc = Recipient {
        to: "ada@example.net\r\nBcc: evil@example.org",
        name: Some("Ada\r\nBcc: evil@example.org"),
        message_id: "<x@y>\r\nBcc: evil@example.org",
        unsubscribe_url: "https://news.example.com/u/T\r\nBcc: evil@example.org",
        unsubscribe_mailto: Some("mailto:u@example.com\nBcc: evil@example.org"),
    };
    let msg = t.personalise(&rc);
    let p = parse_message(&msg);
    assert_eq!(header_count(&p, "Bcc"), 0);
    assert!(!String::from_utf8_lossy(&msg).contains("\r\nBcc:"));
    assert_eq!(header_count(&p, "To"), 1);
    assert_eq!(header_count(&p, "Message-ID"), 1);
    assert_eq!(header_count(&p, "List-Unsubscribe"), 1);
}

#[test]
fn personalise_is_deterministic_and_buffer_reuse_matches() {
    let (_, t) = prepared();
    let a = t.personalise(&recipient(Some("Ada")));
    let b = t.personalise(&recipient(Some("Ada")));
    assert_eq!(a, b, "retries are byte-identical");
    let mut buf = Vec::new();
    t.personalise_into(&recipient(None), &mut buf);
    t.personalise_into(&recipient(Some("Ada")), &mut buf);
    assert_eq!(buf, a);
}

#[test]
fn custom_theme_is_used() {
    let t = Theme::from_css(
        ".headline { color: #123456; } @media (max-width: 400px) { .x { color: red; } }".into(),
    );
    let r = render_issue(&newsletter(), &sample_issue(), &t).unwrap();
    assert!(r.html.contains("color:#123456"));
    assert!(style_block(&r.html).contains("@media"));
}

#[test]
fn sample_files_parse() {
    let single = include_str!("../emails/samples/item-national-interest.md");
    let p = parse_digest_file("item-national-interest.md", single).unwrap();
    assert_eq!(p.title, None);
    assert_eq!(p.items.len(), 1);
    assert_eq!(p.items[0].outlet, "The National Interest");
    let week = parse_digest_file("week-2024-18.md", SAMPLE).unwrap();
    assert_eq!(week.items.len(), 5);
    assert!(week.items.iter().all(|i| i.validate().is_ok()));
    // The example in emails/README.md parses too.
    let readme = include_str!("../emails/README.md");
    let start = readme.find("```markdown\n").unwrap() + "```markdown\n".len();
    let end = readme[start..].find("\n```\n").unwrap() + start;
    let ex = parse_digest_file("README.md", &readme[start..end]).unwrap();
    assert_eq!(ex.items.len(), 2);
    assert!(ex.intro_markdown.is_some());
}

/// One RFC 2047 encoder for every header: a long non-ASCII sender name (via
/// `Mailbox`) and a long non-ASCII List-Id description become several
/// encoded-words of at most 75 characters, on folded lines of at most 78.
#[test]
fn long_non_ascii_names_are_folded_into_short_encoded_words() {
    use base64::Engine as _;
    let name = "Қазақстан шетелдік баспасөзде — апталық шолу ".repeat(6);
    let name = name.trim();
    let from = herald::domain::Mailbox::parse(&format!("{name} <news@news.example.com>"))
        .unwrap()
        .header_value();
    let mut h = headers();
    h.from = from;
    h.list_id = format!(
        "{} <weekly.news.example.com>",
        herald::domain::mailbox::encode_display_name(name)
    );
    let t = MessageTemplate::prepare(&render(&sample_issue()), &h).unwrap();
    let msg = String::from_utf8(t.personalise(&recipient(None))).unwrap();
    let (head, _) = msg.split_once("\r\n\r\n").unwrap();
    for l in head.split("\r\n") {
        assert!(l.len() <= 78, "header line of {} bytes: {l}", l.len());
    }
    let p = parse_message(msg.as_bytes());
    for field in ["From", "List-Id"] {
        let value = header(&p, field);
        let words: Vec<&str> = value.split(' ').filter(|w| w.starts_with("=?")).collect();
        assert!(words.len() > 1, "{field}: {value}");
        let mut decoded = Vec::new();
        for w in &words {
            assert!(w.len() <= 75, "{field}: encoded-word of {}: {w}", w.len());
            let b64 = w
                .strip_prefix("=?utf-8?B?")
                .unwrap()
                .strip_suffix("?=")
                .unwrap();
            decoded.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            );
        }
        assert_eq!(String::from_utf8(decoded).unwrap(), name, "{field}");
    }
    assert!(header(&p, "From").ends_with("<news@news.example.com>"));
}

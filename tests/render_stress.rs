//! Issue #10: the stress fixture (`tests/fixtures/stress-digest.md`) and the
//! sample render with a layout that cannot be widened, per-item language and
//! direction, labels in the newsletter's language, the overview, one link per
//! item and a text part that prints each URL once. (The browser checks of the
//! same fixtures live with the email checking harness.)

use chrono::{NaiveDate, TimeZone};
use herald::digest_file::parse_digest_file;
use herald::domain::LanguageTag;
use herald::render::{
    DigestIssue, MessageHeaders, MessageTemplate, NewsletterInfo, Overview, ReadMore, Recipient,
    RenderOptions, RenderedIssue, Theme, render_issue,
};

const STRESS: &str = include_str!("fixtures/stress-digest.md");
const SAMPLE: &str = include_str!("../emails/samples/week-2024-18.md");

fn newsletter(lang: &str) -> NewsletterInfo {
    NewsletterInfo {
        name: "Kazakhstan Press Digest".into(),
        postal_address: "Herald Media, 12 Example Street, Springfield 12345, USA".into(),
        lang: LanguageTag::parse(lang).unwrap(),
        base_url: "https://news.example.com".into(),
    }
}

fn issue(file: &str, text: &str) -> DigestIssue {
    let p = parse_digest_file(file, text).expect("fixture parses");
    DigestIssue {
        number: 18,
        title: p.title.unwrap_or_default(),
        subject: p.subject.unwrap_or_default(),
        preheader: p.preheader.unwrap_or_default(),
        intro_markdown: p.intro_markdown.unwrap_or_default(),
        date: NaiveDate::from_ymd_opt(2024, 5, 3).unwrap(),
        items: p.items,
        web_url: "https://news.example.com/archive/18".into(),
        lang: p.lang,
    }
}

fn stress() -> DigestIssue {
    issue("stress-digest.md", STRESS)
}

fn sample() -> DigestIssue {
    issue("week-2024-18.md", SAMPLE)
}

fn render_with(lang: &str, issue: &DigestIssue, options: RenderOptions) -> RenderedIssue {
    render_issue(
        &newsletter(lang),
        issue,
        &Theme::builtin().with_options(options),
    )
    .expect("renders")
}

fn render(issue: &DigestIssue) -> RenderedIssue {
    render_with("en", issue, RenderOptions::default())
}

/// The opening tag of the first element carrying `marker` (a class or id attribute).
fn tag_with<'a>(html: &'a str, marker: &str) -> &'a str {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the HTML"));
    let start = html[..at].rfind('<').unwrap();
    let end = at + html[at..].find('>').unwrap();
    &html[start..=end]
}

/// Every `font-size:Npx` the inlined HTML declares, outside the `<head>`.
fn body_font_sizes(html: &str) -> Vec<f32> {
    let body = &html[html.find("<body").unwrap()..];
    body.match_indices("font-size:")
        .filter_map(|(i, _)| {
            let v = &body[i + "font-size:".len()..];
            let v = v.trim_start();
            let end = v.find("px")?;
            v[..end].trim().parse().ok()
        })
        .collect()
}

fn long_url(text: &str, marker: &str) -> String {
    let start = text.find("https://example.org/").unwrap();
    let mut from = start;
    loop {
        let s = &text[from..];
        let end = s
            .find(|c: char| c.is_whitespace() || c == '>' || c == '"' || c == ')')
            .unwrap_or(s.len());
        let url = &s[..end];
        if url.contains(marker) {
            return url.to_owned();
        }
        from += end + s[end..].find("https://example.org/").unwrap();
    }
}

/// Writes the renderings to `target/tmp/render-stress/` for a look in a browser.
#[test]
fn write_renderings_for_inspection() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("render-stress");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, issue) in [("stress", stress()), ("sample", sample())] {
        let r = render(&issue);
        std::fs::write(dir.join(format!("{name}.html")), &r.html).unwrap();
        std::fs::write(dir.join(format!("{name}-web.html")), &r.web_html).unwrap();
        std::fs::write(dir.join(format!("{name}.txt")), &r.text).unwrap();
        assert!(r.html.len() > 1000);
        let headers = MessageHeaders {
            from: "Kazakhstan Press Digest <news@news.example.com>".into(),
            reply_to: None,
            subject: issue.subject.clone(),
            date: chrono::FixedOffset::east_opt(0)
                .unwrap()
                .with_ymd_and_hms(2024, 5, 3, 7, 0, 0)
                .unwrap(),
            list_id: "Kazakhstan Press Digest <weekly.news.example.com>".into(),
            feedback_id: "18:weekly:newsletter:herald".into(),
            extra: vec![],
            one_click: true,
        };
        let recipient = Recipient {
            to: "ada@example.net",
            name: Some("Ada"),
            message_id: "<issue-18.abc@news.example.com>",
            unsubscribe_url: "https://news.example.com/unsubscribe/TOKEN",
            unsubscribe_mailto: Some("mailto:news@news.example.com?subject=unsubscribe"),
        };
        let mut eml = Vec::new();
        MessageTemplate::prepare(&r, &headers)
            .unwrap()
            .personalise_into(&recipient, &mut eml);
        std::fs::write(dir.join(format!("{name}.eml")), &eml).unwrap();
        let button = render_with(
            "en",
            &issue,
            RenderOptions {
                read_more: ReadMore::Button,
                ..Default::default()
            },
        );
        std::fs::write(dir.join(format!("{name}-button.html")), &button.html).unwrap();
    }
}

#[test]
fn stress_fixture_has_what_issue_10_asks_for() {
    let p = parse_digest_file("stress-digest.md", STRESS).unwrap();
    assert_eq!(p.items.len(), 15);
    let langs: Vec<_> = p
        .items
        .iter()
        .filter_map(|i| i.lang.as_ref().map(|l| l.as_str().to_owned()))
        .collect();
    for l in ["kk", "ar", "ru"] {
        assert!(langs.iter().any(|x| x == l), "an item in {l}");
    }
    assert!(
        p.subject.unwrap().chars().any(|c| c as u32 > 0x1F000),
        "emoji subject"
    );
    assert!(
        p.items
            .iter()
            .any(|i| i.author.is_none() && i.quote.is_none() && i.published.is_none())
    );
    assert!(p.items.iter().any(|i| i.section.is_none()));
    let intro = p.intro_markdown.unwrap();
    let url = long_url(&intro, "intro-link");
    assert!(url.len() > 300, "{}", url.len());
    assert!(
        intro.contains(&format!("<{url}>")),
        "an autolinked long URL"
    );
}

#[test]
fn nothing_can_widen_the_card() {
    let r = render(&stress());
    for html in [&r.html, &r.web_html] {
        let card = tag_with(html, "class=\"card\"");
        assert!(card.contains("table-layout:fixed"), "{card}");
        assert!(card.contains("max-width:600px"), "{card}");
        // Inherited by every cell.
        assert!(
            card.contains("overflow-wrap:anywhere") && card.contains("word-break:break-word"),
            "{card}"
        );
        for class in ["intro", "item", "masthead", "footer"] {
            let cell = tag_with(html, &format!("class=\"{class}"));
            assert!(
                cell.contains("mso-line-height-rule:exactly"),
                "{class}: {cell}"
            );
        }
        assert!(html.contains("white-space:pre-wrap"), "code blocks wrap");
    }
    // The 300-character bare URL in a summary is a link, and its text can break.
    let summary_url = long_url(STRESS, "summary");
    assert!(
        r.html
            .contains(&format!("href=\"{}\"", summary_url.replace('&', "&amp;"))),
        "bare URL linked"
    );
}

#[test]
fn every_text_is_at_least_14px_and_the_preheader_uses_no_colour_trick() {
    for r in [render(&stress()), render(&sample())] {
        let sizes = body_font_sizes(&r.html);
        assert!(!sizes.is_empty());
        assert!(sizes.iter().all(|&s| s >= 14.0), "{sizes:?}");
        let pre = tag_with(&r.html, "class=\"preheader\"");
        assert!(
            pre.contains("display:none") && pre.contains("mso-hide:all"),
            "{pre}"
        );
        for trick in ["color", "opacity", "font-size", "visibility"] {
            assert!(!pre.contains(trick), "{trick} in {pre}");
        }
        // Mobile rules: tap targets and the full-width button.
        let head: String = r.html[..r.html.find("</head>").unwrap()]
            .split_whitespace()
            .collect();
        assert!(
            head.contains(".topbar-link,.footer-link,.more-link{display:inline-block!important;padding:12px0!important;line-height:20px!important;}"),
            "44 px tap targets: {head}"
        );
        assert!(
            head.contains(".btn-link{display:block!important;"),
            "{head}"
        );
    }
}

#[test]
fn outlook_for_windows_gets_dpi_button_padding_and_dark_mode() {
    let r = render_with(
        "en",
        &sample(),
        RenderOptions {
            read_more: ReadMore::Button,
            ..Default::default()
        },
    );
    let h = &r.html;
    assert!(h.contains("<o:PixelsPerInch>96</o:PixelsPerInch>"));
    assert!(h.contains("xmlns:o=\"urn:schemas-microsoft-com:office:office\""));
    assert!(h.contains("mso-line-height-rule:exactly"));
    let cell = tag_with(h, "class=\"btn-cell\"");
    assert!(cell.contains("mso-padding-alt:12px 18px"), "{cell}");
    assert!(cell.contains("bgcolor=\"#0b5394\""), "{cell}");
    assert!(
        h.contains("[data-ogsc] .title"),
        "Outlook.com dark mode, text"
    );
    assert!(
        h.contains("[data-ogsb] .card"),
        "Outlook.com dark mode, background"
    );
    assert!(h.contains("prefers-color-scheme:dark") || h.contains("prefers-color-scheme: dark"));
}

#[test]
fn headings_form_one_outline() {
    let r = render(&stress());
    assert_eq!(r.html.matches("<h1").count(), 1);
    assert!(r.html.matches("<h2 class=\"section\"").count() >= 4);
    assert_eq!(r.html.matches("<h3 class=\"headline\"").count(), 15);
    assert!(!r.html.contains("<h2 class=\"headline\""));
    // Without sections the headlines are the h2s.
    let mut flat = sample();
    for i in &mut flat.items {
        i.section = None;
    }
    let r = render(&flat);
    assert_eq!(r.html.matches("<h2 class=\"headline\"").count(), 5);
    assert!(!r.html.contains("<h3 class=\"headline\""));
}

#[test]
fn items_carry_their_language_and_direction() {
    let r = render(&stress());
    let h = &r.html;
    assert!(
        h.starts_with("<!DOCTYPE html><html lang=\"en\" dir=\"ltr\""),
        "{}",
        &h[..120]
    );
    let article = tag_with(h, "role=\"article\"");
    assert!(
        article.contains("lang=\"en\"") && article.contains("dir=\"ltr\""),
        "{article}"
    );
    assert!(
        article.contains("aria-roledescription=\"email\""),
        "{article}"
    );

    let arabic = tag_with(h, "id=\"item-5\"");
    assert!(
        arabic.contains("lang=\"ar\"") && arabic.contains("dir=\"rtl\""),
        "{arabic}"
    );
    assert!(arabic.contains("text-align:right"), "{arabic}");
    let kazakh = tag_with(h, "id=\"item-4\"");
    assert!(
        kazakh.contains("lang=\"kk\"") && kazakh.contains("dir=\"ltr\""),
        "{kazakh}"
    );
    let russian = tag_with(h, "id=\"item-6\"");
    assert!(russian.contains("lang=\"ru\""), "{russian}");

    // The Arabic item: outlet and date isolated, quote in its own marks with
    // the border on the right.
    let arabic_item = &h[h.find("id=\"item-5\"").unwrap()..h.find("id=\"item-6\"").unwrap()];
    assert!(
        arabic_item.contains("<bdi class=\"outlet\""),
        "{arabic_item}"
    );
    assert!(
        arabic_item.contains("<bdi lang=\"en\">3 May 2024</bdi>"),
        "{arabic_item}"
    );
    assert!(arabic_item.contains("«خطوة مهمة نحو سلام دائم في جنوب القوقاز»"));
    let quote = tag_with(arabic_item, "class=\"quote\"");
    assert!(
        quote.contains("border-right:4px solid") && quote.contains("border-left:0"),
        "{quote}"
    );

    // The text part keeps logical order: the Arabic text as written.
    assert!(
        r.text
            .contains("كازاخستان تستضيف محادثات السلام بين أرمينيا وأذربيجان في ألماتي")
    );
    assert!(r.text.contains("الجزيرة · 3 May 2024"), "{}", r.text);
}

#[test]
fn labels_and_dates_follow_the_newsletter_language() {
    let en = render(&sample());
    assert!(en.html.contains("Issue 18 · 3 May 2024"));
    assert!(en.html.contains(">Unsubscribe</a>"));
    assert!(en.html.contains("View in browser"));
    let ru = render_with("ru", &sample(), RenderOptions::default());
    assert!(ru.html.contains("Выпуск 18 · 3 мая 2024"), "genitive month");
    assert!(ru.html.contains(">Отписаться</a>"));
    assert!(ru.html.contains("Открыть в браузере"));
    assert!(ru.text.contains("Отписаться: "));
    assert!(ru.html.starts_with("<!DOCTYPE html><html lang=\"ru\""));
    let kk = render_with("kk", &sample(), RenderOptions::default());
    assert!(
        kk.html.contains("№ 18 шығарылым · 2024 ж. 3 мамыр"),
        "{}",
        kk.text
    );
    assert!(kk.html.contains(">Жазылымнан бас тарту</a>"));
    // No table for Turkish: English labels.
    let tr = render_with("tr", &sample(), RenderOptions::default());
    assert!(tr.html.contains(">Unsubscribe</a>"));
    assert!(tr.html.starts_with("<!DOCTYPE html><html lang=\"tr\""));
}

#[test]
fn one_distinct_link_text_per_item_and_the_choice_of_none_or_link() {
    let r = render_with(
        "en",
        &sample(),
        RenderOptions {
            read_more: ReadMore::Button,
            ..Default::default()
        },
    );
    assert!(!r.html.contains("Read the article"));
    assert!(
        r.html
            .contains("Read in <bdi>The National Interest</bdi> →")
    );
    assert_eq!(r.html.matches("class=\"btn-link\"").count(), 5);

    // The default: the same distinct words as a link.
    let link = render(&sample());
    assert!(!link.html.contains("class=\"btn"));
    assert_eq!(link.html.matches("class=\"more-link\"").count(), 5);
    assert!(link.html.contains("Read in <bdi>aze.media</bdi> →"));

    let none = render_with(
        "en",
        &sample(),
        RenderOptions {
            read_more: ReadMore::None,
            ..Default::default()
        },
    );
    assert!(!none.html.contains("class=\"btn") && !none.html.contains("class=\"more-link"));
    // Each item's URL is linked once: the headline.
    assert_eq!(
        none.html
            .matches("href=\"https://example.org/national-interest/us-kazakhstan-strategy\"")
            .count(),
        1
    );
    // The text part still gives the address.
    assert!(
        none.text
            .contains("Read the article: https://example.org/national-interest/")
    );
}

#[test]
fn overview_lists_the_headlines_from_four_items() {
    let r = render(&sample());
    assert!(r.html.contains("In this issue"));
    for n in 1..=5 {
        assert!(r.html.contains(&format!("href=\"#item-{n}\"")), "{n}");
        assert!(r.html.contains(&format!("id=\"item-{n}\"")), "{n}");
    }
    assert!(r.web_html.contains("href=\"#item-1\""));
    assert!(
        r.text
            .contains("In this issue:\n\n1. What Washington and Astana")
    );

    let mut three = sample();
    three.items.truncate(3);
    assert!(!render(&three).html.contains("In this issue"));
    let always = render_with(
        "en",
        &three,
        RenderOptions {
            overview: Overview::Always,
            ..Default::default()
        },
    );
    assert!(always.html.contains("In this issue") && always.text.contains("In this issue:"));
    let never = render_with(
        "en",
        &sample(),
        RenderOptions {
            overview: Overview::Never,
            ..Default::default()
        },
    );
    assert!(!never.html.contains("In this issue") && !never.text.contains("In this issue"));
}

#[test]
fn text_part_prints_each_url_once_and_cites_links_under_their_block() {
    let r = render(&stress());
    let t = &r.text;
    let intro_url = long_url(STRESS, "intro-link");
    // Written twice in the intro (autolink and bare) and once as a Markdown
    // link in item 1, whose footnote is listed under item 1.
    assert_eq!(t.matches(intro_url.as_str()).count(), 3, "{t}");
    let item1 = &t[t.find("KAZAKHSTAN AND THE UNITED STATES").unwrap()..];
    let item1 = item1[..item1.find("-----").unwrap()]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let cite = item1
        .find("the intro's report [")
        .map(|i| &item1[i + "the intro's report [".len()..])
        .and_then(|s| s.split(']').next())
        .expect("the link is cited");
    assert!(item1.contains(&format!("[{cite}] {intro_url}")), "{item1}");
    // The bare summary URL: once per written occurrence, never as a footnote.
    let summary_url = long_url(STRESS, "summary");
    let item2 = &t[t.find("A summary with a bare long URL").unwrap()..];
    let item2 = &item2[..item2.find("-----").unwrap()];
    assert_eq!(item2.matches(summary_url.as_str()).count(), 2, "{item2}");
    assert!(
        !item2.contains(&format!("] {summary_url}")),
        "no footnote for a bare URL"
    );
    // An unsectioned item after a section is visibly separate.
    let no_section = t
        .rfind("An item with no author, no quote and no date")
        .unwrap();
    let before = &t[..no_section];
    let last_heading = before.rfind("MORE NEWS").expect("a heading of its own");
    assert!(before[last_heading..].matches("-----").count() == 0);
    assert!(r.html.contains("<h2 class=\"section\""));
    assert!(r.html.contains(">More news</h2>"));
}

#[test]
fn list_unsubscribe_post_only_when_asked() {
    let r = render(&sample());
    let headers = |one_click| MessageHeaders {
        from: "Digest <news@news.example.com>".into(),
        reply_to: None,
        subject: "🇰🇿 test".into(),
        date: chrono::FixedOffset::east_opt(0)
            .unwrap()
            .with_ymd_and_hms(2024, 5, 3, 7, 0, 0)
            .unwrap(),
        list_id: "Digest <weekly.news.example.com>".into(),
        feedback_id: "1:weekly:newsletter:herald".into(),
        extra: vec![],
        one_click,
    };
    let recipient = Recipient {
        to: "ada@example.net",
        name: None,
        message_id: "<1@news.example.com>",
        unsubscribe_url: "http://news.example.com/u/T",
        unsubscribe_mailto: Some("mailto:u@news.example.com?subject=unsubscribe"),
    };
    for (one_click, expected) in [(true, 1), (false, 0)] {
        let t = MessageTemplate::prepare(&r, &headers(one_click)).unwrap();
        let mut out = Vec::new();
        t.personalise_into(&recipient, &mut out);
        let msg = String::from_utf8(out).unwrap();
        let head = &msg[..msg.find("\r\n\r\n").unwrap()];
        assert_eq!(
            head.matches("List-Unsubscribe-Post:").count(),
            expected,
            "{head}"
        );
        assert_eq!(head.matches("List-Unsubscribe:").count(), 1, "{head}");
    }
}

#[test]
fn sizes_stay_within_gmail_clipping() {
    // A per-item figure for benches/README.md: the sample, then the sample's
    // items repeated until Gmail's 102 KB clipping point.
    let base = sample();
    let one = render(&DigestIssue {
        items: base.items[..1].to_vec(),
        ..base.clone()
    })
    .html
    .len();
    let five = render(&base).html.len();
    let per_item = (five - one) / 4;
    let mut big = base.clone();
    big.items = (0..50).map(|i| base.items[i % 5].clone()).collect();
    let html = render(&big).html;
    eprintln!(
        "sample {five} B, per item ≈ {per_item} B, 50 items {} B",
        html.len()
    );
    assert!(
        html.len() <= herald::render::GMAIL_CLIP_BYTES,
        "50 items of the sample's size fit under Gmail's clip: {} B",
        html.len()
    );
}

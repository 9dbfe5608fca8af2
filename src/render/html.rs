//! maud templates for the email and the archive page, and CSS inlining.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::labels::{Labels, quote_marks};
use super::{
    DigestIssue, DigestItem, KEEP_MARKER, NewsletterInfo, ReadMore, RenderError, RenderOptions,
    Theme, clean, clean_line, is_http_url, markdown, placeholder,
};
use crate::domain::{Direction, LanguageTag};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// The email: preheader, "View in browser", greeting and unsubscribe placeholders.
    Email,
    /// The archive page: no personal parts, a subscribe link instead.
    Web,
}

/// Opening MSO ghost table: pins the container to 600 px in Outlook for Windows,
/// which ignores `max-width` on `<div>`.
pub const MSO_OPEN: &str = r#"<!--[if mso]><table role="presentation" align="center" width="600" cellpadding="0" cellspacing="0" border="0"><tr><td><![endif]-->"#;
/// Closing MSO ghost table.
pub const MSO_CLOSE: &str = r#"<!--[if mso]></td></tr></table><![endif]-->"#;

/// Filler after the preheader so body text does not bleed into the preview:
/// a figure space and a combining grapheme joiner show as nothing, with no
/// colour or size trick (SpamAssassin's HTML_FONT_LOW_CONTRAST).
fn preheader_filler() -> PreEscaped<String> {
    PreEscaped("&#8199;&#847; ".repeat(60))
}

/// Word (Outlook for Windows) lays out at 96 dpi only when told so; without
/// it, sizes scale on a 120 dpi screen.
const MSO_HEAD: &str = r#"<!--[if mso]><xml><o:OfficeDocumentSettings><o:AllowPNG/><o:PixelsPerInch>96</o:PixelsPerInch></o:OfficeDocumentSettings></xml><![endif]-->"#;

fn layout_table(class: &str, body: Markup) -> Markup {
    html! {
        table class=(class) role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" {
            (body)
        }
    }
}

pub(crate) fn render(
    nl: &NewsletterInfo,
    issue: &DigestIssue,
    variant: Variant,
    theme: &Theme,
) -> Result<String, RenderError> {
    let raw = template(nl, issue, variant, theme).into_string();
    inline(&raw)
}

/// Run css-inline without network access, keeping @media rules in one `<style>` in `<head>`.
pub(crate) fn inline(html: &str) -> Result<String, RenderError> {
    let inliner = css_inline::CSSInliner::options()
        .load_remote_stylesheets(false)
        .keep_at_rules(true)
        .minify_css(true)
        .build();
    let out = inliner
        .inline(html)
        .map_err(|e| RenderError::Inline(e.to_string()))?;
    Ok(move_style_to_head_end(out))
}

/// css-inline emits the kept at-rules as the first child of `<head>`; move that
/// `<style>` to the end of `<head>` so `<meta charset>` stays first.
fn move_style_to_head_end(html: String) -> String {
    let Some(head) = html.find("<head>") else {
        return html;
    };
    let start = head + "<head>".len();
    if !html[start..].starts_with("<style>") {
        return html;
    }
    let (Some(style_len), Some(head_end)) = (
        html[start..].find("</style>").map(|e| e + "</style>".len()),
        html.find("</head>"),
    ) else {
        return html;
    };
    if start + style_len > head_end {
        return html;
    }
    let mut out = String::with_capacity(html.len());
    out.push_str(&html[..start]);
    out.push_str(&html[start + style_len..head_end]);
    out.push_str(&html[start..start + style_len]);
    out.push_str(&html[head_end..]);
    out
}

/// A language's `lang` and `dir` attribute values.
fn lang_dir(lang: &LanguageTag) -> (&str, &'static str) {
    (lang.as_str(), lang.direction().as_str())
}

fn template(nl: &NewsletterInfo, issue: &DigestIssue, variant: Variant, theme: &Theme) -> Markup {
    let labels = Labels::for_language(&nl.lang);
    let issue_lang = issue.lang.as_ref().unwrap_or(&nl.lang);
    let (lang, dir) = lang_dir(issue_lang);
    let name = clean_line(&nl.name);
    let title = clean_line(&issue.title);
    let subject = clean_line(&issue.subject);
    let page_title = if subject.is_empty() { &title } else { &subject };
    let web_url = issue.web_url.trim();
    let email = variant == Variant::Email;
    let (inlined_css, kept_css) = match theme.css().split_once(KEEP_MARKER) {
        Some((a, b)) => (a, compact_css(b)),
        None => (theme.css(), String::new()),
    };
    let options = theme.options();
    // The labels are in the newsletter's language; they say so only when
    // the issue's title and intro are in another.
    let label_lang = (issue_lang != &nl.lang).then(|| nl.lang.as_str());
    let label_dir = (issue_lang != &nl.lang).then(|| nl.lang.direction().as_str());

    html! {
        (DOCTYPE)
        // The Office namespaces let Word read the conditional <xml> below.
        // A canonical language tag is letters, digits and hyphens only.
        (PreEscaped(format!(
            r#"<html lang="{lang}" dir="{dir}" xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office">"#
        )))
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="X-UA-Compatible" content="IE=edge";
                meta name="x-apple-disable-message-reformatting";
                meta name="format-detection" content="telephone=no, date=no, address=no, email=no";
                meta name="color-scheme" content="light dark";
                meta name="supported-color-schemes" content="light dark";
                title { (page_title) }
                (PreEscaped(MSO_HEAD))
                style { (PreEscaped(inlined_css.replace("</", "<\\/"))) }
                @if !kept_css.is_empty() {
                    style data-css-inline="keep" { (PreEscaped(kept_css.replace("</", "<\\/"))) }
                }
            }
            body class="body" {
                @if email {
                    div class="preheader" { (clean_line(&issue.preheader)) (preheader_filler()) }
                }
                // For clients that drop <html> and its lang/dir (Gmail, Outlook.com).
                div role="article" aria-roledescription="email" lang=(lang) dir=(dir) {
                (layout_table("wrapper", html! {
                    tr { td class="wrapper-cell" align="center" {
                        (PreEscaped(MSO_OPEN))
                        div class="container" {
                            (layout_table("card", html! {
                                @if email && is_http_url(web_url) {
                                    tr { td class="topbar" align="right" {
                                        a class="topbar-link" href=(web_url) lang=[label_lang] dir=[label_dir] { (labels.view_in_browser) }
                                    } }
                                }
                                tr { td class="masthead" {
                                    p class="brand" { bdi { (name) } }
                                    h1 class="title" { (title) }
                                    p class="issue-meta" lang=[label_lang] dir=[label_dir] {
                                        (labels.issue_line(issue.number, issue.date))
                                    }
                                } }
                                tr { td class="intro" {
                                    @if email {
                                        (PreEscaped(placeholder::GREETING_START))
                                        p class="greeting" lang=[label_lang] dir=[label_dir] {
                                            (labels.greeting.0) bdi { (PreEscaped(placeholder::NAME)) } (labels.greeting.1)
                                        }
                                        (PreEscaped(placeholder::GREETING_END))
                                    }
                                    (PreEscaped(markdown::to_html(&issue.intro_markdown)))
                                } }
                                @if options.overview.shows(issue.items.len()) {
                                    tr { td class="overview" lang=[label_lang] dir=[label_dir] {
                                        (overview(labels, &issue.items))
                                    } }
                                }
                                (items(nl, labels, options, &issue.items))
                                tr { td class="footer" lang=[label_lang] dir=[label_dir] {
                                    (footer(nl, labels, &name, web_url, variant))
                                } }
                            }))
                        }
                        (PreEscaped(MSO_CLOSE))
                    } }
                }))
                }
            }
        (PreEscaped("</html>"))
    }
}

/// The kept rules as they go out: css-inline passes them through untouched,
/// so comments and indentation would cost bytes in every message.
fn compact_css(css: &str) -> String {
    let mut out = String::with_capacity(css.len());
    let mut rest = css;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        out.push(' ');
        rest = match rest[start + 2..].find("*/") {
            Some(end) => &rest[start + 2 + end + 2..],
            None => "",
        };
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The anchor of item `i` (0-based), shared by the overview and the item.
fn anchor(i: usize) -> String {
    format!("item-{}", i + 1)
}

fn overview(labels: &Labels, items: &[DigestItem]) -> Markup {
    html! {
        h2 class="overview-title" { (labels.in_this_issue) }
        ol class="overview-list" {
            @for (i, item) in items.iter().enumerate() {
                @let (lang, dir) = item_lang_dir(item);
                li {
                    a class="overview-link" href={ "#" (anchor(i)) } lang=[lang] dir=(dir) {
                        (clean_line(&item.headline))
                    }
                }
            }
        }
    }
}

/// An item's `lang` (only when it differs from what surrounds it) and `dir`.
fn item_lang_dir(item: &DigestItem) -> (Option<&str>, &'static str) {
    match &item.lang {
        Some(l) => (Some(l.as_str()), l.direction().as_str()),
        // The newsletter's language, inherited; `auto` keeps a stray
        // right-to-left headline in one piece.
        None => (None, Direction::Auto.as_str()),
    }
}

fn items(
    nl: &NewsletterInfo,
    labels: &Labels,
    options: RenderOptions,
    items: &[DigestItem],
) -> Markup {
    let any_section = items.iter().any(|i| {
        i.section
            .as_deref()
            .is_some_and(|s| !clean_line(s).is_empty())
    });
    // A section heading is shown when an item's section differs from the
    // previous item's; an unsectioned item after a section gets a heading of
    // its own so it does not read as part of that section.
    let mut prev: Option<String> = None;
    let rows: Vec<(Option<String>, &DigestItem)> = items
        .iter()
        .map(|item| {
            let section = item
                .section
                .as_deref()
                .map(clean_line)
                .filter(|s| !s.is_empty());
            let show = match (&section, &prev) {
                (Some(s), p) if p.as_ref() != Some(s) => Some(s.clone()),
                (None, Some(_)) => Some(labels.more_news.to_owned()),
                _ => None,
            };
            prev = section;
            (show, item)
        })
        .collect();
    html! {
        @for (i, (section, item)) in rows.iter().enumerate() {
            @if let Some(section) = section {
                tr { td class="section-cell" { h2 class="section" { (section) } } }
            }
            @let lang = item.lang.as_ref().unwrap_or(&nl.lang);
            @let rtl = lang.direction() == Direction::Rtl;
            // lang/dir only where they differ from what the item inherits:
            // bytes count against Gmail's clipping point.
            @let own = item.lang.as_ref().filter(|l| *l != &nl.lang);
            tr { td id=(anchor(i)) class=(if rtl { "item rtl" } else { "item" })
                lang=[own.map(|l| l.as_str())] dir=[own.map(|l| l.direction().as_str())]
                align=[rtl.then_some("right")] {
                (item_body(nl, labels, options, item, lang, any_section))
            } }
        }
    }
}

fn item_body(
    nl: &NewsletterInfo,
    labels: &Labels,
    options: RenderOptions,
    item: &DigestItem,
    lang: &LanguageTag,
    any_section: bool,
) -> Markup {
    let headline = clean_line(&item.headline);
    let outlet = clean_line(&item.outlet);
    let url = item.url.trim();
    let url_ok = is_http_url(url);
    let author = item
        .author
        .as_deref()
        .map(clean_line)
        .filter(|s| !s.is_empty());
    let role = item
        .author_role
        .as_deref()
        .map(clean_line)
        .filter(|s| !s.is_empty());
    let quote = item
        .quote
        .as_deref()
        .map(|q| clean(q).trim().to_owned())
        .filter(|s| !s.is_empty());
    let (open_q, close_q) = quote_marks(lang);
    // The labels and dates are in the newsletter's language; they say so
    // only inside an item in another language.
    let foreign = lang != &nl.lang;
    let nl_lang = foreign.then(|| nl.lang.as_str());
    let nl_dir = foreign.then(|| nl.lang.direction().as_str());
    let headline_markup = html! {
        @if url_ok {
            a class="headline-link" href=(url) { (headline) }
        } @else {
            (headline)
        }
    };
    html! {
        // Under section headings (h2) a headline is an h3, so the outline
        // stays h1 > h2 > h3.
        @if any_section {
            h3 class="headline" { (headline_markup) }
        } @else {
            h2 class="headline" { (headline_markup) }
        }
        p class="meta" {
            bdi class="outlet" { (outlet) }
            @if let Some(d) = item.published {
                " · "
                bdi lang=[nl_lang] { (super::format_date(&nl.lang, d)) }
            }
        }
        @if let Some(author) = &author {
            p class="byline" {
                @if let Some(l) = nl_lang {
                    span lang=(l) { (labels.by) }
                } @else {
                    (labels.by)
                }
                bdi class="author" { (author) }
                @if let Some(role) = &role { ", " bdi { (role) } }
            }
        }
        div class="summary" { (PreEscaped(markdown::to_html(&item.summary_markdown))) }
        @if let Some(q) = &quote {
            blockquote class="quote" { p { (open_q) (q) (close_q) } }
        }
        @if url_ok {
            @match options.read_more {
                ReadMore::Button => {
                    table class="btn" role="presentation" cellpadding="0" cellspacing="0" border="0" {
                        tr { td class="btn-cell" align="center" bgcolor="#0b5394" {
                            a class="btn-link" href=(url) lang=[nl_lang] dir=[nl_dir] {
                                (labels.read_in.0) bdi { (outlet) } (labels.read_in.1)
                            }
                        } }
                    }
                }
                ReadMore::Link => {
                    p class="more" {
                        a class="more-link" href=(url) lang=[nl_lang] dir=[nl_dir] {
                            (labels.read_in.0) bdi { (outlet) } (labels.read_in.1)
                        }
                    }
                }
                ReadMore::None => {}
            }
        }
    }
}

fn footer(
    nl: &NewsletterInfo,
    labels: &Labels,
    name: &str,
    web_url: &str,
    variant: Variant,
) -> Markup {
    let base = nl.base_url.trim().trim_end_matches('/');
    html! {
        @match variant {
            Variant::Email => {
                p class="footer-text" {
                    (labels.receiving.0) bdi { (name) } (labels.receiving.1)
                }
                p class="footer-text" {
                    a class="footer-link" href=(PreEscaped(placeholder::UNSUBSCRIBE_URL)) { (labels.unsubscribe) }
                    @if is_http_url(web_url) {
                        " · "
                        a class="footer-link" href=(web_url) { (labels.view_in_browser) }
                    }
                }
            }
            Variant::Web => {
                p class="footer-text" {
                    (labels.archive.0) bdi { (name) } (labels.archive.1)
                    @if is_http_url(base) {
                        a class="footer-link" href={ (base) "/subscribe" } { (labels.subscribe) }
                        (labels.subscribe_rest)
                    }
                }
            }
        }
        p class="footer-text" { bdi { (name) } " · " (clean_line(&nl.postal_address)) }
    }
}

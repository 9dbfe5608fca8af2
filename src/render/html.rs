//! maud templates for the email and the archive page, and CSS inlining.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{
    DigestIssue, DigestItem, NewsletterInfo, RenderError, Theme, clean, clean_line, format_date,
    is_http_url, markdown, placeholder,
};

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

/// Invisible filler after the preheader so body text does not bleed into the preview.
fn preheader_filler() -> PreEscaped<String> {
    PreEscaped("&#8199;&#847; ".repeat(60))
}

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
    let raw = template(nl, issue, variant, theme.css()).into_string();
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

fn template(nl: &NewsletterInfo, issue: &DigestIssue, variant: Variant, css: &str) -> Markup {
    let lang = clean_line(&nl.lang);
    let lang = if lang.is_empty() {
        "en".to_owned()
    } else {
        lang
    };
    let name = clean_line(&nl.name);
    let title = clean_line(&issue.title);
    let subject = clean_line(&issue.subject);
    let page_title = if subject.is_empty() { &title } else { &subject };
    let web_url = issue.web_url.trim();
    let email = variant == Variant::Email;

    html! {
        (DOCTYPE)
        html lang=(lang) dir="ltr" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="X-UA-Compatible" content="IE=edge";
                meta name="x-apple-disable-message-reformatting";
                meta name="format-detection" content="telephone=no, date=no, address=no, email=no";
                meta name="color-scheme" content="light dark";
                meta name="supported-color-schemes" content="light dark";
                title { (page_title) }
                style { (PreEscaped(css.replace("</", "<\\/"))) }
            }
            body class="body" {
                @if email {
                    div class="preheader" { (clean_line(&issue.preheader)) (preheader_filler()) }
                }
                (layout_table("wrapper", html! {
                    tr { td class="wrapper-cell" align="center" {
                        (PreEscaped(MSO_OPEN))
                        div class="container" {
                            (layout_table("card", html! {
                                @if email && is_http_url(web_url) {
                                    tr { td class="topbar" align="right" {
                                        a class="topbar-link" href=(web_url) { "View in browser" }
                                    } }
                                }
                                tr { td class="masthead" {
                                    p class="brand" { (name) }
                                    h1 class="title" { (title) }
                                    p class="issue-meta" {
                                        "Issue " (issue.number) " · " (format_date(issue.date))
                                    }
                                } }
                                tr { td class="intro" {
                                    @if email {
                                        (PreEscaped(placeholder::GREETING_START))
                                        p class="greeting" { "Hello " (PreEscaped(placeholder::NAME)) "," }
                                        (PreEscaped(placeholder::GREETING_END))
                                    }
                                    (PreEscaped(markdown::to_html(&issue.intro_markdown)))
                                } }
                                (items(&issue.items))
                                tr { td class="footer" {
                                    (footer(nl, &name, web_url, variant))
                                } }
                            }))
                        }
                        (PreEscaped(MSO_CLOSE))
                    } }
                }))
            }
        }
    }
}

fn items(items: &[DigestItem]) -> Markup {
    // A section heading is shown when an item's section differs from the previous item's.
    let mut prev: Option<String> = None;
    let rows: Vec<(Option<String>, &DigestItem)> = items
        .iter()
        .map(|item| {
            let section = item
                .section
                .as_deref()
                .map(clean_line)
                .filter(|s| !s.is_empty());
            let show = if section.is_some() && section != prev {
                section.clone()
            } else {
                None
            };
            prev = section;
            (show, item)
        })
        .collect();
    html! {
        @for (section, item) in &rows {
            @if let Some(section) = section {
                tr { td class="section-cell" { h2 class="section" { (section) } } }
            }
            tr { td class="item" { (item_body(item)) } }
        }
    }
}

fn item_body(item: &DigestItem) -> Markup {
    let headline = clean_line(&item.headline);
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
    html! {
        h2 class="headline" {
            @if url_ok {
                a class="headline-link" href=(url) { (headline) }
            } @else {
                (headline)
            }
        }
        p class="meta" {
            span class="outlet" { (clean_line(&item.outlet)) }
            @if let Some(d) = item.published {
                " · " (format_date(d))
            }
        }
        @if let Some(author) = &author {
            p class="byline" {
                "By " span class="author" { (author) }
                @if let Some(role) = &role { ", " (role) }
            }
        }
        div class="summary" { (PreEscaped(markdown::to_html(&item.summary_markdown))) }
        @if let Some(q) = &quote {
            blockquote class="quote" { p { "“" (q) "”" } }
        }
        @if url_ok {
            table class="btn" role="presentation" cellpadding="0" cellspacing="0" border="0" {
                tr { td class="btn-cell" align="center" {
                    a class="btn-link" href=(url) { "Read the article" }
                } }
            }
        }
    }
}

fn footer(nl: &NewsletterInfo, name: &str, web_url: &str, variant: Variant) -> Markup {
    let base = nl.base_url.trim().trim_end_matches('/');
    html! {
        @match variant {
            Variant::Email => {
                p class="footer-text" {
                    "You are receiving this because you subscribed to " (name) "."
                }
                p class="footer-text" {
                    a class="footer-link" href=(PreEscaped(placeholder::UNSUBSCRIBE_URL)) { "Unsubscribe" }
                    @if is_http_url(web_url) {
                        " · "
                        a class="footer-link" href=(web_url) { "View in browser" }
                    }
                }
            }
            Variant::Web => {
                p class="footer-text" {
                    "You are reading the web archive of " (name) ". "
                    @if is_http_url(base) {
                        a class="footer-link" href={ (base) "/subscribe" } { "Subscribe" }
                        " to receive it by email."
                    }
                }
            }
        }
        p class="footer-text" { (name) " · " (clean_line(&nl.postal_address)) }
    }
}

//! Pure rendering of a digest issue into responsive HTML email and plain text,
//! plus the per-recipient personalisation of a prepared raw MIME message.
//!
//! Flow: [`render_issue`] (maud template → css-inline, once per issue) →
//! [`MessageTemplate::prepare`] (headers + quoted-printable body, once per issue) →
//! [`MessageTemplate::personalise_into`] (per recipient, concatenation only).
//!
//! Personal parts are marked in [`RenderedIssue::html`] / [`RenderedIssue::text`]
//! with sentinel tokens delimited by U+0001 (see [`placeholder`]). U+0001 and every
//! other C0 control character except TAB and LF are removed from all user content
//! before rendering, so the sentinels can never be forged by content.

mod html;
mod labels;
mod markdown;
mod mime;
mod text;

use thiserror::Error;

use crate::domain::LanguageTag;

pub use html::{MSO_CLOSE, MSO_OPEN};
/// The admin's live preview of an item summary.
pub(crate) use markdown::to_html as markdown_to_html;
pub use markdown::{MAX_NESTING, nesting_depth as markdown_nesting_depth};
pub use mime::{BOUNDARY, MessageHeaders, MessageTemplate, Recipient};

/// Sentinel tokens used in [`RenderedIssue::html`] and [`RenderedIssue::text`].
pub mod placeholder {
    /// Replaced by the recipient's unsubscribe URL (HTML-escaped in the HTML part).
    pub const UNSUBSCRIBE_URL: &str = "\u{1}UNSUB\u{1}";
    /// Replaced by the recipient's display name (HTML-escaped in the HTML part).
    pub const NAME: &str = "\u{1}NAME\u{1}";
    /// Start of the greeting; everything up to [`GREETING_END`] is dropped when the
    /// recipient has no (or an empty) name.
    pub const GREETING_START: &str = "\u{1}GREET\u{1}";
    /// End of the conditional greeting.
    pub const GREETING_END: &str = "\u{1}/GREET\u{1}";
}

/// Static facts about the newsletter (used in footers and headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewsletterInfo {
    pub name: String,
    pub postal_address: String,
    /// `newsletter.language`: the labels, the dates and the default
    /// language of the intro and of every item.
    pub lang: LanguageTag,
    /// Public base URL, no trailing slash.
    pub base_url: String,
}

/// One article in a digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestItem {
    pub headline: String,
    pub outlet: String,
    pub published: Option<chrono::NaiveDate>,
    pub author: Option<String>,
    pub author_role: Option<String>,
    pub summary_markdown: String,
    pub quote: Option<String>,
    pub section: Option<String>,
    pub url: String,
    /// The item's language when it is not the newsletter's.
    pub lang: Option<LanguageTag>,
}

/// One issue of the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestIssue {
    pub number: i64,
    pub title: String,
    pub subject: String,
    pub preheader: String,
    pub intro_markdown: String,
    pub date: chrono::NaiveDate,
    pub items: Vec<DigestItem>,
    /// Absolute URL of the archive page, used for "View in browser".
    pub web_url: String,
    /// The language of the title and intro when it is not the newsletter's.
    pub lang: Option<LanguageTag>,
}

/// The stylesheet the email is rendered with, and the layout choices
/// (`render.read_more`, `render.overview`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Theme {
    css: String,
    options: RenderOptions,
}

/// What follows each item's summary (`render.read_more`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMore {
    /// A button, full width on phones.
    Button,
    /// "Read in {outlet} →" as a link (44 px tall on phones): a text that
    /// differs per item, at a quarter of a button's bytes (Gmail clips at
    /// 102 KB).
    #[default]
    Link,
    /// Nothing: the headline is the item's only link.
    None,
}

/// When the "In this issue" list of headlines opens the issue (`render.overview`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overview {
    /// From [`OVERVIEW_MIN_ITEMS`] items on.
    #[default]
    Auto,
    Always,
    Never,
}

/// `render.overview = "auto"` lists the headlines from this many items on.
pub const OVERVIEW_MIN_ITEMS: usize = 4;

impl Overview {
    pub(crate) fn shows(self, items: usize) -> bool {
        match self {
            Overview::Auto => items >= OVERVIEW_MIN_ITEMS,
            Overview::Always => items > 0,
            Overview::Never => false,
        }
    }
}

/// Layout choices that are not CSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenderOptions {
    pub read_more: ReadMore,
    pub overview: Overview,
}

/// In a theme's CSS, the rules after this line are not inlined but kept in
/// a `<style>` of their own: selectors that match attributes a mail client
/// adds later, such as Outlook.com's dark mode (`[data-ogsc]`, `[data-ogsb]`).
pub const KEEP_MARKER: &str = "/* herald:keep */";

/// The built-in look, `emails/digest.css`.
pub const BUILTIN_CSS: &str = include_str!("../../emails/digest.css");

impl Theme {
    /// The built-in look compiled from `emails/digest.css`.
    pub fn builtin() -> Theme {
        Theme {
            css: BUILTIN_CSS.to_owned(),
            options: RenderOptions::default(),
        }
    }

    /// A custom stylesheet (replaces the built-in one entirely).
    pub fn from_css(css: String) -> Theme {
        Theme {
            css,
            options: RenderOptions::default(),
        }
    }

    /// The same CSS with other layout choices.
    pub fn with_options(mut self, options: RenderOptions) -> Theme {
        self.options = options;
        self
    }

    pub fn options(&self) -> RenderOptions {
        self.options
    }

    /// The CSS text.
    pub fn css(&self) -> &str {
        &self.css
    }
}

impl Default for Theme {
    fn default() -> Self {
        Theme::builtin()
    }
}

/// The output of [`render_issue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedIssue {
    /// Inlined email HTML with personal placeholders.
    pub html: String,
    /// Plain text with personal placeholders.
    pub text: String,
    /// Archive page HTML: same content, no personal parts.
    pub web_html: String,
}

impl RenderedIssue {
    /// The email HTML with placeholders filled (for previews and test sends).
    pub fn personal_html(&self, name: Option<&str>, unsubscribe_url: &str) -> String {
        fill_placeholders(&self.html, name, unsubscribe_url, true)
    }

    /// The plain text with placeholders filled (for previews and test sends).
    pub fn personal_text(&self, name: Option<&str>, unsubscribe_url: &str) -> String {
        fill_placeholders(&self.text, name, unsubscribe_url, false)
    }
}

/// Errors from rendering and message preparation.
#[derive(Debug, Error)]
pub enum RenderError {
    #[error("CSS inlining failed: {0}")]
    Inline(String),
    #[error("header {field} must not contain CR or LF")]
    HeaderInjection { field: String },
    #[error("invalid header {field}: {reason}")]
    InvalidHeader { field: String, reason: String },
    #[error("rendered output is missing placeholder {0}")]
    MissingPlaceholder(&'static str),
    #[error("unbalanced greeting placeholders in rendered output")]
    UnbalancedGreeting,
}

/// Render an issue into inlined email HTML, plain text and the archive page.
pub fn render_issue(
    newsletter: &NewsletterInfo,
    issue: &DigestIssue,
    theme: &Theme,
) -> Result<RenderedIssue, RenderError> {
    let email_html = html::render(newsletter, issue, html::Variant::Email, theme)?;
    let web_html = html::render(newsletter, issue, html::Variant::Web, theme)?;
    let text = text::render(newsletter, issue, theme.options());
    Ok(RenderedIssue {
        html: email_html,
        text,
        web_html,
    })
}

/// Remove C0 control characters (except TAB and LF) and DEL; CR LF / lone CR become LF.
/// This is what guarantees that content can never contain a placeholder sentinel.
pub(crate) fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\t' && c != '\n';
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let s = s.replace("\r\n", "\n").replace('\r', "\n");
    std::borrow::Cow::Owned(s.chars().filter(|&c| !bad(c)).collect())
}

/// Like [`clean`] but for single-line fields: all line breaks and tabs become spaces.
pub(crate) fn clean_line(s: &str) -> String {
    let c = clean(s);
    c.split(['\n', '\t'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a URL cannot be a button or link in the rendered issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlProblem {
    /// Not `http://` or `https://` followed by a host.
    NotAbsoluteHttp,
    /// A character that cannot stand in an `href` as is: whitespace, a
    /// control character, `<`, `>`, `"`, `\`, or anything outside ASCII
    /// (which must be percent-encoded; look-alikes such as `‹` hide there).
    Character(char),
}

/// The renderer's rule for item, "View in browser" and footer links: `None`
/// when `url` is linked, otherwise why it is shown without a link. Import
/// applies the same rule, so an item never silently loses its link.
pub fn url_problem(url: &str) -> Option<UrlProblem> {
    let u = url.trim();
    let rest = if starts_with_ci(u, "https://") {
        &u[8..]
    } else if starts_with_ci(u, "http://") {
        &u[7..]
    } else {
        return Some(UrlProblem::NotAbsoluteHttp);
    };
    if rest.split(['/', '?', '#']).next().is_none_or(str::is_empty) {
        return Some(UrlProblem::NotAbsoluteHttp);
    }
    u.chars()
        .find(|&c| {
            !c.is_ascii()
                || c.is_whitespace()
                || c.is_control()
                || matches!(c, '<' | '>' | '"' | '\\')
        })
        .map(UrlProblem::Character)
}

/// Whether a URL is an absolute http(s) URL suitable for a button or link.
pub(crate) fn is_http_url(url: &str) -> bool {
    url_problem(url).is_none()
}

/// Gmail clips a message whose HTML passes about 102 KB ("[Message clipped]"),
/// hiding the rest of the issue and the unsubscribe footer.
pub const GMAIL_CLIP_BYTES: usize = 102 * 1024;

/// What compose does when an issue's HTML passes [`GMAIL_CLIP_BYTES`]
/// (`render.clip_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClipPolicy {
    /// Compose, and say so in `issue compose` / `issue preview`.
    #[default]
    Warn,
    /// Refuse to compose.
    Refuse,
}

/// The warning for an email HTML part of `html_bytes` bytes, if Gmail would clip it.
pub fn clip_warning(html_bytes: usize) -> Option<String> {
    (html_bytes > GMAIL_CLIP_BYTES).then(|| {
        format!(
            "the HTML is {} KB; Gmail clips messages above {} KB (\"[Message clipped]\" hides the rest and the unsubscribe link): use fewer or shorter items",
            html_bytes.div_ceil(1024),
            GMAIL_CLIP_BYTES / 1024
        )
    })
}

pub(crate) fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// HTML-escape `s` into `out` (text and double-quoted attribute safe).
pub(crate) fn escape_html_into(s: &str, out: &mut Vec<u8>) {
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\'' => b"&#39;",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[last..i]);
        out.extend_from_slice(rep);
        last = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[last..]);
}

/// Strip CR, LF and other control characters from a recipient value.
pub(crate) fn strip_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        std::borrow::Cow::Owned(s.chars().filter(|c| !c.is_control()).collect())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

fn fill_placeholders(src: &str, name: Option<&str>, unsub: &str, html: bool) -> String {
    let name = name.map(clean_line).filter(|n| !n.is_empty());
    let unsub = strip_controls(unsub);
    let mut out = Vec::with_capacity(src.len() + 256);
    let mut rest = src;
    while let Some(pos) = rest.find('\u{1}') {
        out.extend_from_slice(&rest.as_bytes()[..pos]);
        let tail = &rest[pos..];
        let (len, kind) = match_token(tail);
        rest = &tail[len.max(1)..];
        let value: &str = match kind {
            Some(Token::Unsub) => &unsub,
            Some(Token::Name) => name.as_deref().unwrap_or(""),
            Some(Token::GreetStart) => {
                if name.is_none() {
                    match rest.find(placeholder::GREETING_END) {
                        Some(end) => rest = &rest[end + placeholder::GREETING_END.len()..],
                        None => rest = "",
                    }
                }
                ""
            }
            Some(Token::GreetEnd) | None => "",
        };
        if html {
            escape_html_into(value, &mut out);
        } else {
            out.extend_from_slice(value.as_bytes());
        }
    }
    out.extend_from_slice(rest.as_bytes());
    String::from_utf8(out).expect("utf-8 in, utf-8 out")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    Unsub,
    Name,
    GreetStart,
    GreetEnd,
}

/// If `s` starts with a placeholder, return its length and kind.
pub(crate) fn match_token(s: &str) -> (usize, Option<Token>) {
    for (tok, kind) in [
        (placeholder::UNSUBSCRIBE_URL, Token::Unsub),
        (placeholder::NAME, Token::Name),
        (placeholder::GREETING_START, Token::GreetStart),
        (placeholder::GREETING_END, Token::GreetEnd),
    ] {
        if s.starts_with(tok) {
            return (tok.len(), Some(kind));
        }
    }
    (0, None)
}

/// A date as the newsletter's language writes it: "1 May 2026",
/// "1 мая 2026", "2026 ж. 1 мамыр".
pub fn format_date(lang: &LanguageTag, d: chrono::NaiveDate) -> String {
    labels::Labels::for_language(lang).date(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_removes_sentinels_and_controls() {
        assert_eq!(clean("a\u{1}UNSUB\u{1}b\r\nc\u{7}"), "aUNSUBb\nc");
        assert_eq!(clean_line(" a\nb\tc "), "a b c");
    }

    #[test]
    fn http_url_check() {
        assert!(is_http_url("https://example.com/x?y=1"));
        assert!(is_http_url("HTTP://example.com"));
        assert!(!is_http_url("javascript:alert(1)"));
        assert!(!is_http_url("https:///x"));
        assert!(!is_http_url("https://exa mple.com"));
        assert!(!is_http_url("//example.com"));
        assert_eq!(
            url_problem("https://example.com/a\\b"),
            Some(UrlProblem::Character('\\'))
        );
        assert_eq!(
            url_problem("https://example.com/\"x"),
            Some(UrlProblem::Character('"'))
        );
        assert_eq!(
            url_problem("https://example.com/‹x›"),
            Some(UrlProblem::Character('‹'))
        );
        assert_eq!(url_problem("ftp://x"), Some(UrlProblem::NotAbsoluteHttp));
        assert_eq!(url_problem("https://?x"), Some(UrlProblem::NotAbsoluteHttp));
    }

    #[test]
    fn fill_placeholders_conditional_greeting() {
        let src = "A\u{1}GREET\u{1}Hi \u{1}NAME\u{1}!\u{1}/GREET\u{1}B \u{1}UNSUB\u{1}";
        assert_eq!(fill_placeholders(src, None, "u&v", true), "AB u&amp;v");
        assert_eq!(
            fill_placeholders(src, Some("<Ann>"), "u", true),
            "AHi &lt;Ann&gt;!B u"
        );
        assert_eq!(fill_placeholders(src, Some("  "), "u", false), "AB u");
    }
}

//! Parser of the digest / item import format (Markdown with `+++` TOML front matter).
//!
//! A file is a sequence of blocks. Each block starts with a line that is exactly
//! `+++` (trailing whitespace allowed), holds TOML up to the next `+++` line, and is
//! followed by Markdown up to the next `+++` line outside a fenced code block (or
//! the end of the file). The first block is the issue header when it has no
//! `headline` key (keys: `title`, `subject`, `preheader`; its Markdown is the
//! intro); every other block is an item. See `emails/README.md`.
//!
//! Any error rejects the whole file.

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::domain::LanguageTag;

/// The parsed file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedDigest {
    pub title: Option<String>,
    pub subject: Option<String>,
    pub preheader: Option<String>,
    pub intro_markdown: Option<String>,
    /// The header's `lang`: the title's and intro's language.
    pub lang: Option<LanguageTag>,
    pub items: Vec<ItemInput>,
}

/// An item as read from a file or the command line: the same shape the
/// renderer takes, so there is one item type.
pub use crate::render::DigestItem as ItemInput;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}:{line}: {message}")]
pub struct DigestFileError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

/// Maximum lengths (in characters).
pub const MAX_HEADLINE: usize = 300;
pub const MAX_LINE_FIELD: usize = 200;
pub const MAX_URL: usize = 2048;
pub const MAX_QUOTE: usize = 2000;
pub const MAX_SUMMARY: usize = 20_000;
/// The issue intro is a summary-sized text too.
pub const MAX_INTRO: usize = MAX_SUMMARY;
/// Items in one file, and in one issue: a digest is read in one sitting, and
/// an email past Gmail's clipping point (about 102 KB of HTML) loses its end.
pub const MAX_ITEMS: usize = 200;
/// Bytes read from an import, summary or intro file. 200 long items fit; a
/// larger file (or `/dev/zero`) is refused before it is parsed.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Headline,
    Outlet,
    Url,
    Author,
    AuthorRole,
    Quote,
    Section,
    Summary,
}

impl ItemInput {
    /// Check the fields (shared by the file parser and CLI input).
    pub fn validate(&self) -> Result<(), String> {
        self.check().map_err(|(_, m)| m)
    }

    fn check(&self) -> Result<(), (Field, String)> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Every field's problem, by field name (the HTTP API names each bad
    /// field at once).
    pub fn field_errors(&self) -> Vec<(&'static str, String)> {
        self.problems()
            .into_iter()
            .map(|(f, m)| (f.name(), m))
            .collect()
    }

    /// At most one problem per field, in the order `validate` reports them.
    fn problems(&self) -> Vec<(Field, String)> {
        let mut out = Vec::new();
        let mut note = |f: Field, r: Result<(), String>| {
            if let Err(m) = r {
                out.push((f, m));
            }
        };
        note(
            Field::Headline,
            single_line("headline", &self.headline, MAX_HEADLINE, true),
        );
        note(
            Field::Outlet,
            single_line("outlet", &self.outlet, MAX_LINE_FIELD, true),
        );
        note(Field::Url, check_url(&self.url));
        for (f, name, v) in [
            (Field::Author, "author", &self.author),
            (Field::AuthorRole, "author_role", &self.author_role),
            (Field::Section, "section", &self.section),
        ] {
            if let Some(v) = v {
                note(f, single_line(name, v, MAX_LINE_FIELD, false));
            }
        }
        if let Some(q) = &self.quote
            && q.chars().count() > MAX_QUOTE
        {
            note(
                Field::Quote,
                Err(format!(
                    "quote is longer than {MAX_QUOTE} characters; shorten it"
                )),
            );
        }
        if self.summary_markdown.chars().count() > MAX_SUMMARY {
            note(
                Field::Summary,
                Err(format!(
                    "summary is longer than {MAX_SUMMARY} characters; shorten it"
                )),
            );
        } else {
            note(
                Field::Summary,
                check_markdown("summary", &self.summary_markdown),
            );
        }
        if self.author_role.is_some() && self.author.is_none() {
            note(
                Field::AuthorRole,
                Err("author_role is set but author is not; add author = \"…\"".into()),
            );
        }
        out
    }
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Headline => "headline",
            Field::Outlet => "outlet",
            Field::Url => "url",
            Field::Author => "author",
            Field::AuthorRole => "author_role",
            Field::Quote => "quote",
            Field::Section => "section",
            Field::Summary => "summary",
        }
    }
}

/// The intro's limits: its length and how deeply its Markdown nests.
pub fn check_intro(intro: &str) -> Result<(), String> {
    if intro.chars().count() > MAX_INTRO {
        return Err(format!(
            "intro is longer than {MAX_INTRO} characters; shorten it"
        ));
    }
    check_markdown("intro", intro)
}

/// Nesting beyond [`crate::render::MAX_NESTING`] would be flattened by the
/// renderer; it is refused here so the editor sees what they wrote.
fn check_markdown(name: &str, md: &str) -> Result<(), String> {
    let depth = crate::render::markdown_nesting_depth(md);
    if depth > crate::render::MAX_NESTING {
        return Err(format!(
            "{name} nests {depth} levels deep (block quotes, lists, emphasis, links); at most {} are allowed: remove some `>`, list indentation or emphasis",
            crate::render::MAX_NESTING
        ));
    }
    Ok(())
}

fn single_line(name: &str, v: &str, max: usize, required: bool) -> Result<(), String> {
    if v.contains(['\r', '\n']) {
        return Err(format!("{name} must be a single line (no line breaks)"));
    }
    if v.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!("{name} contains control characters; remove them"));
    }
    if required && v.trim().is_empty() {
        return Err(format!("{name} must not be empty"));
    }
    if v.chars().count() > max {
        return Err(format!(
            "{name} is longer than {max} characters; shorten it"
        ));
    }
    Ok(())
}

/// The renderer's own rule ([`crate::render::url_problem`]), so an item that
/// imports is an item whose headline and button are links.
fn check_url(url: &str) -> Result<(), String> {
    use crate::render::UrlProblem;
    if url.len() > MAX_URL {
        return Err(format!("url is longer than {MAX_URL} characters"));
    }
    match crate::render::url_problem(url) {
        None => Ok(()),
        Some(UrlProblem::NotAbsoluteHttp) => Err(format!(
            "url {url:?} must be an absolute http:// or https:// URL"
        )),
        Some(UrlProblem::Character(c)) => Err(format!(
            "url {url:?} contains {c:?} (U+{:04X}), which cannot be part of a link; percent-encode it (e.g. {})",
            c as u32,
            percent_encoded(c)
        )),
    }
}

fn percent_encoded(c: char) -> String {
    let mut buf = [0u8; 4];
    c.encode_utf8(&mut buf)
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderFm {
    title: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
    preheader: Option<Spanned<String>>,
    lang: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemFm {
    headline: Option<Spanned<String>>,
    outlet: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    date: Option<Spanned<toml::Value>>,
    author: Option<Spanned<String>>,
    author_role: Option<Spanned<String>>,
    quote: Option<Spanned<String>>,
    section: Option<Spanned<String>>,
    lang: Option<Spanned<String>>,
}

/// `lang = "kk"`: a BCP 47 tag, or an error for the key's line.
fn parse_lang(v: &Option<Spanned<String>>) -> Result<Option<LanguageTag>, (usize, String)> {
    match v {
        None => Ok(None),
        Some(s) if s.get_ref().trim().is_empty() => Ok(None),
        Some(s) => LanguageTag::parse(s.get_ref())
            .map(Some)
            .map_err(|e| (s.span().start, format!("lang: {e}"))),
    }
}

/// One `+++` block: front matter text and where it starts, plus the Markdown body.
struct Block {
    /// 1-based line of the opening `+++`.
    open_line: usize,
    front: String,
    /// 1-based line of the first front-matter line.
    front_line: usize,
    body: String,
    body_line: usize,
}

fn is_delim(line: &str) -> bool {
    line.trim_end() == "+++"
}

fn fence_marker(line: &str) -> Option<&'static str> {
    let t = line.trim_start();
    if line.len() - t.len() > 3 {
        return None;
    }
    if t.starts_with("```") {
        Some("```")
    } else if t.starts_with("~~~") {
        Some("~~~")
    } else {
        None
    }
}

fn split_blocks(path: &str, text: &str) -> Result<Vec<Block>, DigestFileError> {
    let err = |line: usize, message: String| DigestFileError {
        path: path.to_owned(),
        line,
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    // Leading blank lines are allowed; anything else before the first +++ is not.
    while i < lines.len() && lines[i].trim().is_empty() {
        i += 1;
    }
    if i == lines.len() {
        return Err(err(
            1,
            "file is empty; it must start with a +++ front-matter block".into(),
        ));
    }
    if !is_delim(lines[i]) {
        return Err(err(
            i + 1,
            "expected a line containing only +++ (start of the TOML front matter)".into(),
        ));
    }
    while i < lines.len() {
        let open = i;
        i += 1;
        let front_start = i;
        while i < lines.len() && !is_delim(lines[i]) {
            i += 1;
        }
        if i == lines.len() {
            return Err(err(
                open + 1,
                "front matter opened here is never closed; add a line containing only +++ after the TOML keys".into(),
            ));
        }
        let front = lines[front_start..i].join("\n");
        i += 1;
        let body_start = i;
        let mut fence: Option<&str> = None;
        while i < lines.len() {
            let l = lines[i];
            match (fence, fence_marker(l)) {
                (None, Some(m)) => fence = Some(m),
                (Some(f), Some(m)) if f == m => fence = None,
                (None, None) if is_delim(l) => break,
                _ => {}
            }
            i += 1;
        }
        let body = lines[body_start..i].join("\n").trim().to_owned();
        blocks.push(Block {
            open_line: open + 1,
            front,
            front_line: front_start + 1,
            body,
            body_line: body_start + 1,
        });
    }
    Ok(blocks)
}

/// Parse a single-item or digest file. `path_for_messages` is only used in errors.
pub fn parse_digest_file(
    path_for_messages: &str,
    text: &str,
) -> Result<ParsedDigest, DigestFileError> {
    let path = path_for_messages;
    let blocks = split_blocks(path, text)?;
    let mut out = ParsedDigest::default();
    for (idx, b) in blocks.iter().enumerate() {
        let line_of = |offset: usize| {
            b.front_line + b.front[..offset.min(b.front.len())].matches('\n').count()
        };
        let err = |line: usize, message: String| DigestFileError {
            path: path.to_owned(),
            line,
            message,
        };
        let toml_err = |e: toml::de::Error| {
            let line = e.span().map(|s| line_of(s.start)).unwrap_or(b.open_line);
            err(
                line,
                format!("invalid front matter: {}", e.message().trim()),
            )
        };
        let table: toml::Table = toml::from_str(&b.front).map_err(toml_err)?;
        let is_header = idx == 0 && !table.contains_key("headline");
        if is_header {
            let fm: HeaderFm = toml::from_str(&b.front).map_err(|e| {
                let mut e2 = toml_err(e);
                if e2.message.contains("unknown field") {
                    e2.message.push_str(
                        " (the first block is the issue header: title, subject, preheader, lang; an item block needs headline)",
                    );
                }
                e2
            })?;
            for (name, v) in [
                ("title", &fm.title),
                ("subject", &fm.subject),
                ("preheader", &fm.preheader),
            ] {
                if let Some(v) = v {
                    single_line(name, v.get_ref(), MAX_HEADLINE, false)
                        .map_err(|m| err(line_of(v.span().start), m))?;
                }
            }
            out.title = fm
                .title
                .map(|s| s.into_inner().trim().to_owned())
                .filter(|s| !s.is_empty());
            out.subject = fm
                .subject
                .map(|s| s.into_inner().trim().to_owned())
                .filter(|s| !s.is_empty());
            out.preheader = fm
                .preheader
                .map(|s| s.into_inner().trim().to_owned())
                .filter(|s| !s.is_empty());
            out.lang = parse_lang(&fm.lang).map_err(|(at, m)| err(line_of(at), m))?;
            check_intro(&b.body).map_err(|m| err(b.body_line, m))?;
            out.intro_markdown = Some(b.body.clone()).filter(|s| !s.is_empty());
            continue;
        }
        if out.items.len() == MAX_ITEMS {
            return Err(err(
                b.open_line,
                format!(
                    "more than {MAX_ITEMS} items in one file (an issue holds at most {MAX_ITEMS}); split the file or leave some out"
                ),
            ));
        }
        let fm: ItemFm = toml::from_str(&b.front).map_err(|e| {
            let mut e2 = toml_err(e);
            if e2.message.contains("unknown field") {
                e2.message.push_str(" (remove or rename the key)");
            }
            e2
        })?;
        let missing = |key: &str| {
            err(
                b.open_line,
                format!(
                    "item is missing the required key `{key}`; add {key} = \"…\" to its front matter"
                ),
            )
        };
        let headline = fm.headline.as_ref().ok_or_else(|| missing("headline"))?;
        let outlet = fm.outlet.as_ref().ok_or_else(|| missing("outlet"))?;
        let url = fm.url.as_ref().ok_or_else(|| missing("url"))?;
        let published = match &fm.date {
            None => None,
            Some(d) => {
                let line = line_of(d.span().start);
                let s = match d.get_ref() {
                    toml::Value::Datetime(dt) => dt.to_string(),
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some(
                    chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
                        err(line, format!("date {s:?} is not a date; write it as YYYY-MM-DD, e.g. date = 2026-05-01"))
                    })?,
                )
            }
        };
        let opt = |v: &Option<Spanned<String>>| {
            v.as_ref()
                .map(|s| s.get_ref().trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let lang = parse_lang(&fm.lang).map_err(|(at, m)| err(line_of(at), m))?;
        let item = ItemInput {
            lang,
            headline: headline.get_ref().trim().to_owned(),
            outlet: outlet.get_ref().trim().to_owned(),
            url: url.get_ref().trim().to_owned(),
            published,
            author: opt(&fm.author),
            author_role: opt(&fm.author_role),
            summary_markdown: b.body.clone(),
            quote: opt(&fm.quote),
            section: opt(&fm.section),
        };
        if let Err((field, msg)) = item.check() {
            let span = match field {
                Field::Headline => Some(headline.span()),
                Field::Outlet => Some(outlet.span()),
                Field::Url => Some(url.span()),
                Field::Author => fm.author.as_ref().map(|s| s.span()),
                Field::AuthorRole => fm.author_role.as_ref().map(|s| s.span()),
                Field::Quote => fm.quote.as_ref().map(|s| s.span()),
                Field::Section => fm.section.as_ref().map(|s| s.span()),
                Field::Summary => None,
            };
            let line = match (field, span) {
                (Field::Summary, _) => b.body_line,
                (_, Some(s)) => line_of(s.start),
                (_, None) => b.open_line,
            };
            return Err(err(line, msg));
        }
        out.items.push(item);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ParsedDigest, DigestFileError> {
        parse_digest_file("samples/week.md", s)
    }

    const ITEM: &str = "+++\nheadline = \"H\"\noutlet = \"O\"\nurl = \"https://example.com/a\"\ndate = 2026-05-01\n+++\nSummary *text*.\n";

    #[test]
    fn single_item_file() {
        let d = parse(ITEM).unwrap();
        assert_eq!(d.title, None);
        assert_eq!(d.items.len(), 1);
        let i = &d.items[0];
        assert_eq!(i.headline, "H");
        assert_eq!(i.published, chrono::NaiveDate::from_ymd_opt(2026, 5, 1));
        assert_eq!(i.summary_markdown, "Summary *text*.");
    }

    #[test]
    fn digest_file_with_header_and_fenced_plus() {
        let s = format!(
            "+++\ntitle = \"T\"\npreheader = \"P\"\n+++\nIntro.\n\n{ITEM}\n+++\nheadline = \"H2\"\noutlet = \"O2\"\nurl = \"http://example.org/\"\ndate = \"2026-05-02\"\n+++\n```\n+++\n```\nafter\n"
        );
        let d = parse(&s).unwrap();
        assert_eq!(d.title.as_deref(), Some("T"));
        assert_eq!(d.intro_markdown.as_deref(), Some("Intro."));
        assert_eq!(d.items.len(), 2);
        assert_eq!(d.items[1].summary_markdown, "```\n+++\n```\nafter");
        assert_eq!(
            d.items[1].published,
            chrono::NaiveDate::from_ymd_opt(2026, 5, 2)
        );
    }

    fn err_of(s: &str) -> DigestFileError {
        parse(s).unwrap_err()
    }

    #[test]
    fn missing_headline_points_at_block() {
        let e = err_of(
            "+++\ntitle = \"T\"\n+++\nintro\n+++\noutlet = \"O\"\nurl = \"https://e.com\"\n+++\nx\n",
        );
        assert_eq!(e.line, 5, "{e}");
        assert!(
            e.to_string()
                .starts_with("samples/week.md:5: item is missing the required key `headline`"),
            "{e}"
        );
    }

    #[test]
    fn javascript_url_rejected_with_line() {
        let e = err_of("+++\nheadline = \"H\"\noutlet = \"O\"\nurl = \"javascript:x\"\n+++\n");
        assert_eq!(
            e.to_string(),
            "samples/week.md:4: url \"javascript:x\" must be an absolute http:// or https:// URL"
        );
    }

    #[test]
    fn bad_date_rejected_with_line() {
        let e = err_of(
            "+++\nheadline = \"H\"\noutlet = \"O\"\nurl = \"https://e.com\"\ndate = \"next Tuesday\"\n+++\n",
        );
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("YYYY-MM-DD"), "{e}");
        let e = err_of(
            "+++\nheadline = \"H\"\noutlet = \"O\"\nurl = \"https://e.com\"\ndate = 2026-02-30\n+++\n",
        );
        assert_eq!(e.line, 5, "{e}");
    }

    #[test]
    fn unknown_key_rejected_with_line() {
        let e = err_of(
            "+++\nheadline = \"H\"\noutlet = \"O\"\nurl = \"https://e.com\"\nauthr = \"x\"\n+++\n",
        );
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("authr"), "{e}");
    }

    #[test]
    fn unclosed_front_matter() {
        let e = err_of("+++\ntitle = \"T\"\n+++\nintro\n\n+++\nheadline = \"H\"\n");
        assert_eq!(e.line, 6, "{e}");
        assert!(e.message.contains("never closed"), "{e}");
    }

    #[test]
    fn toml_syntax_error_line() {
        let e = err_of("+++\nheadline = \"H\"\noutlet = O\n+++\n");
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn text_before_front_matter() {
        let e = err_of("\nhello\n+++\n");
        assert_eq!(e.line, 2, "{e}");
        assert_eq!(err_of("").line, 1);
    }

    #[test]
    fn multiline_headline_rejected() {
        let e = err_of(
            "+++\nheadline = \"\"\"a\nb\"\"\"\noutlet = \"O\"\nurl = \"https://e.com\"\n+++\n",
        );
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("single line"), "{e}");
    }

    #[test]
    fn validate_for_cli() {
        let mut i = parse(ITEM).unwrap().items.remove(0);
        assert!(i.validate().is_ok());
        i.url = "ftp://x".into();
        assert!(i.validate().is_err());
        i.url = "https://e.com".into();
        i.outlet = " ".into();
        assert!(i.validate().unwrap_err().contains("outlet"));
    }

    #[test]
    fn lang_on_header_and_items() {
        let d = parse(
            "+++\ntitle = \"T\"\nlang = \"ru\"\n+++\nIntro\n+++\nheadline = \"H\"\noutlet = \"O\"\nurl = \"https://e.com\"\nlang = \"AR\"\n+++\n",
        )
        .unwrap();
        assert_eq!(d.lang.as_ref().map(|l| l.as_str()), Some("ru"));
        assert_eq!(d.items[0].lang.as_ref().map(|l| l.as_str()), Some("ar"));
        let e = err_of(
            "+++\nheadline = \"H\"\noutlet = \"O\"\nurl = \"https://e.com\"\nlang = \"arabic!\"\n+++\n",
        );
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("BCP 47"), "{e}");
    }

    #[test]
    fn any_error_rejects_whole_file() {
        let s = format!("{ITEM}+++\nheadline = \"H\"\noutlet = \"O\"\nurl = \"mailto:a@b\"\n+++\n");
        assert!(parse(&s).is_err());
    }
}

//! Safe Markdown: raw HTML becomes text, only http/https/mailto links survive,
//! images become links (or plain text), headings are demoted below the item headline.

use pulldown_cmark::{CowStr, Event, HeadingLevel, LinkType, Options, Parser, Tag, TagEnd};

use super::{clean, starts_with_ci};

/// Whether a Markdown link destination may be kept.
pub(crate) fn is_safe_link(url: &str) -> bool {
    let u = url.trim();
    (starts_with_ci(u, "https://") || starts_with_ci(u, "http://") || starts_with_ci(u, "mailto:"))
        && !u.chars().any(char::is_control)
}

fn options() -> Options {
    Options::ENABLE_STRIKETHROUGH
}

/// How deeply Markdown may nest (block quotes, lists, emphasis, links… each
/// open element is a level). Real summaries use a handful; the limit keeps
/// the HTML inliner (which recurses per element) and the plain-text prefixes
/// (one `> ` per level on every line) small whatever the input.
pub const MAX_NESTING: usize = 32;

/// The deepest nesting of `md`, in one linear pass of the parser.
pub fn nesting_depth(md: &str) -> usize {
    let mut depth = 0usize;
    let mut max = 0;
    for ev in Parser::new_ext(md, options()) {
        match ev {
            Event::Start(_) => {
                depth += 1;
                max = max.max(depth);
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Drops the elements nested deeper than [`MAX_NESTING`], keeping their text,
/// so content stored before the limit existed still renders, in linear time.
/// A dropped block's end becomes a line break so its words stay apart.
fn flatten<'a>(parser: impl Iterator<Item = Event<'a>>) -> impl Iterator<Item = Event<'a>> {
    // Events are properly nested, so an end is at the same depth as its start
    // and the depth alone says whether that element was kept.
    let mut depth = 0usize;
    // One break stands for a run of dropped ends (200,000 `>` close at once).
    let mut just_broke = false;
    parser.filter_map(move |ev| {
        let out = flatten_one(ev, &mut depth);
        let is_break = matches!(out, Some(Event::SoftBreak));
        if is_break && std::mem::replace(&mut just_broke, true) {
            return None;
        }
        if out.is_some() && !is_break {
            just_broke = false;
        }
        out
    })
}

fn flatten_one<'a>(ev: Event<'a>, depth: &mut usize) -> Option<Event<'a>> {
    match ev {
        Event::Start(_) => {
            *depth += 1;
            (*depth <= MAX_NESTING).then_some(ev)
        }
        Event::End(end) => {
            let kept = *depth <= MAX_NESTING;
            *depth = depth.saturating_sub(1);
            if kept {
                Some(Event::End(end))
            } else if matches!(
                end,
                TagEnd::Emphasis
                    | TagEnd::Strong
                    | TagEnd::Strikethrough
                    | TagEnd::Superscript
                    | TagEnd::Subscript
                    | TagEnd::Link
                    | TagEnd::Image
            ) {
                None
            } else {
                Some(Event::SoftBreak)
            }
        }
        other => Some(other),
    }
}

/// Rewrite the event stream so that it is safe to feed to `push_html`.
fn sanitise<'a>(parser: impl Iterator<Item = Event<'a>>) -> impl Iterator<Item = Event<'a>> {
    // One entry per open Link/Image: true = emitted as a link, false = dropped.
    let mut links: Vec<bool> = Vec::new();
    parser.filter_map(move |ev| match ev {
        Event::Html(s) | Event::InlineHtml(s) => Some(Event::Text(s)),
        Event::Start(Tag::HtmlBlock) => Some(Event::Start(Tag::Paragraph)),
        Event::End(TagEnd::HtmlBlock) => Some(Event::End(TagEnd::Paragraph)),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        })
        | Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            if is_safe_link(&dest_url) {
                links.push(true);
                Some(Event::Start(Tag::Link {
                    link_type,
                    dest_url: CowStr::from(dest_url.trim().to_owned()),
                    title,
                    id,
                }))
            } else {
                links.push(false);
                None
            }
        }
        Event::End(TagEnd::Link) | Event::End(TagEnd::Image) => {
            if links.pop().unwrap_or(false) {
                Some(Event::End(TagEnd::Link))
            } else {
                None
            }
        }
        Event::Start(Tag::Heading {
            level,
            id: _,
            classes: _,
            attrs: _,
        }) => Some(Event::Start(Tag::Heading {
            level: demote(level),
            id: None,
            classes: Vec::new(),
            attrs: Vec::new(),
        })),
        Event::End(TagEnd::Heading(level)) => Some(Event::End(TagEnd::Heading(demote(level)))),
        other => Some(other),
    })
}

/// Turns bare `http(s)://` addresses in text into links, as mail clients do
/// (CommonMark links only `<…>`), so the HTML and the text part agree.
fn linkify<'a>(events: impl Iterator<Item = Event<'a>>) -> impl Iterator<Item = Event<'a>> {
    let mut link_depth = 0usize;
    let mut in_code = false;
    events.flat_map(move |ev| {
        match &ev {
            Event::Start(Tag::Link { .. }) => link_depth += 1,
            Event::End(TagEnd::Link) => link_depth = link_depth.saturating_sub(1),
            Event::Start(Tag::CodeBlock(_)) => in_code = true,
            Event::End(TagEnd::CodeBlock) => in_code = false,
            _ => {}
        }
        match ev {
            Event::Text(t) if link_depth == 0 && !in_code => {
                let spans = bare_urls(&t);
                if spans.is_empty() {
                    return vec![Event::Text(t)];
                }
                let mut out = Vec::with_capacity(spans.len() * 4 + 1);
                let mut last = 0;
                for (a, b) in spans {
                    if a > last {
                        out.push(Event::Text(CowStr::from(t[last..a].to_owned())));
                    }
                    let url = t[a..b].to_owned();
                    out.push(Event::Start(Tag::Link {
                        link_type: LinkType::Autolink,
                        dest_url: CowStr::from(url.clone()),
                        title: CowStr::from(""),
                        id: CowStr::from(""),
                    }));
                    out.push(Event::Text(CowStr::from(url)));
                    out.push(Event::End(TagEnd::Link));
                    last = b;
                }
                if last < t.len() {
                    out.push(Event::Text(CowStr::from(t[last..].to_owned())));
                }
                out
            }
            other => vec![other],
        }
    })
}

/// Byte ranges of the bare http(s) URLs in `text`: up to whitespace or a
/// character that cannot be in a link, without trailing punctuation (and
/// without a closing parenthesis the URL did not open).
pub(crate) fn bare_urls(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(rel) = lower[from..].find("http") {
        let start = from + rel;
        let rest = &lower[start..];
        let scheme = if rest.starts_with("https://") {
            8
        } else if rest.starts_with("http://") {
            7
        } else {
            from = start + 4;
            continue;
        };
        // Not the tail of a word such as "xhttp://".
        if text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric())
        {
            from = start + scheme;
            continue;
        }
        let mut end = start
            + text[start..]
                .find(|c: char| {
                    c.is_whitespace() || !c.is_ascii() || matches!(c, '<' | '>' | '"' | '\\' | '`')
                })
                .unwrap_or(text.len() - start);
        loop {
            let url = &text[start..end];
            match url.chars().next_back() {
                Some('.' | ',' | ';' | ':' | '!' | '?' | '\'' | '*' | '_') => end -= 1,
                Some(')') if url.matches('(').count() < url.matches(')').count() => end -= 1,
                _ => break,
            }
        }
        if end > start + scheme && super::is_http_url(&text[start..end]) {
            out.push((start, end));
        }
        from = end.max(start + scheme);
    }
    out
}

fn demote(level: HeadingLevel) -> HeadingLevel {
    match level {
        HeadingLevel::H1 | HeadingLevel::H2 | HeadingLevel::H3 => HeadingLevel::H3,
        l => l,
    }
}

/// Render Markdown to safe HTML.
pub(crate) fn to_html(md: &str) -> String {
    let md = clean(md);
    let mut out = String::with_capacity(md.len() * 3 / 2);
    pulldown_cmark::html::push_html(
        &mut out,
        linkify(sanitise(flatten(Parser::new_ext(&md, options())))),
    );
    out
}

/// A block of plain text produced from Markdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TextBlock {
    /// Prefix for the first line ("- ", "1. ", "> ").
    pub first_prefix: String,
    /// Prefix for continuation lines.
    pub prefix: String,
    pub text: String,
    /// Keep line breaks as they are (code blocks).
    pub preformatted: bool,
}

/// Convert Markdown into plain-text blocks. Link targets are appended to `links`
/// and referenced in the text as `[n]` (numbering continues from `links.len()`).
/// A URL gets one number within this Markdown text only: a later block lists
/// its own links under itself, so a reader never looks for `[1]` elsewhere.
/// A link whose text is its address (an autolink, a bare URL) is printed once,
/// without a footnote.
pub(crate) fn to_text(md: &str, links: &mut Vec<String>) -> Vec<TextBlock> {
    let md = clean(md);
    let mut st = TextState::default();
    // The link's target and where its text starts in `st.cur`.
    let mut link_stack: Vec<Option<(String, usize)>> = Vec::new();
    let mut numbers: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut in_code = false;

    for ev in linkify(sanitise(flatten(Parser::new_ext(&md, options())))) {
        match ev {
            Event::Start(Tag::List(start)) => {
                st.flush(false);
                st.lists.push(start);
            }
            Event::End(TagEnd::List(_)) => {
                st.flush(false);
                st.lists.pop();
            }
            Event::Start(Tag::Item) => {
                st.flush(false);
                st.item_prefix = Some(match st.lists.last_mut() {
                    Some(Some(n)) => {
                        let p = format!("{n}. ");
                        *n += 1;
                        p
                    }
                    _ => "- ".to_owned(),
                });
            }
            Event::Start(Tag::BlockQuote(_)) => {
                st.flush(false);
                st.quote_depth += 1;
            }
            Event::End(TagEnd::BlockQuote(_)) => {
                st.flush(false);
                st.quote_depth = st.quote_depth.saturating_sub(1);
            }
            Event::Start(Tag::CodeBlock(_)) => {
                st.flush(false);
                in_code = true;
            }
            Event::End(TagEnd::CodeBlock) => {
                st.flush(true);
                in_code = false;
            }
            Event::End(TagEnd::Paragraph)
            | Event::End(TagEnd::Heading(_))
            | Event::End(TagEnd::Item) => {
                st.flush(false);
            }
            Event::Start(Tag::Link { dest_url, .. }) => {
                link_stack.push(Some((dest_url.to_string(), st.cur.len())));
            }
            Event::End(TagEnd::Link) => {
                if let Some(Some((url, start))) = link_stack.pop() {
                    let text = st.cur.get(start..).unwrap_or("").trim();
                    let bare = url.strip_prefix("mailto:").unwrap_or(&url);
                    if text == url || text == bare {
                        continue;
                    }
                    // A map, not a scan of `links`: thousands of links stay linear.
                    let n = *numbers.entry(url).or_insert_with_key(|url| {
                        links.push(url.clone());
                        links.len()
                    });
                    st.cur.push_str(&format!(" [{n}]"));
                }
            }
            Event::Text(t) | Event::Code(t) => {
                if in_code {
                    st.cur.push_str(&t);
                } else {
                    st.cur.push_str(&t.replace('\n', " "));
                }
            }
            Event::SoftBreak => st.cur.push(' '),
            Event::HardBreak => st.cur.push(' '),
            Event::Rule => {
                st.flush(false);
                st.cur.push_str("----");
                st.flush(false);
            }
            _ => {}
        }
    }
    st.flush(false);
    st.blocks
}

/// The plain-text conversion's working state: finished blocks, the block
/// being gathered, and where we are in lists and quotes.
#[derive(Default)]
struct TextState {
    blocks: Vec<TextBlock>,
    cur: String,
    lists: Vec<Option<u64>>,
    quote_depth: usize,
    item_prefix: Option<String>,
}

impl TextState {
    /// Ends the block being gathered (if it has text) with the prefixes its
    /// list and quote nesting call for.
    fn flush(&mut self, pre: bool) {
        let text = if pre {
            self.cur.trim_end().to_owned()
        } else {
            self.cur.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        self.cur.clear();
        if text.is_empty() {
            return;
        }
        let indent = "   ".repeat(self.lists.len().saturating_sub(1));
        let quote = "> ".repeat(self.quote_depth);
        let (first, cont) = match self.item_prefix.take() {
            Some(p) => {
                let cont = format!("{quote}{indent}{}", " ".repeat(p.chars().count()));
                (format!("{quote}{indent}{p}"), cont)
            }
            None if !self.lists.is_empty() => {
                let cont = format!("{quote}{indent}   ");
                (cont.clone(), cont)
            }
            None => (quote.clone(), quote),
        };
        self.blocks.push(TextBlock {
            first_prefix: first,
            prefix: cont,
            text,
            preformatted: pre,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_html_is_escaped() {
        let h = to_html("Hello <script>alert(1)</script>\n\n<div onclick=x>block</div>\n");
        assert!(!h.contains("<script"), "{h}");
        assert!(!h.contains("<div"), "{h}");
        assert!(h.contains("&lt;script&gt;"), "{h}");
    }

    #[test]
    fn unsafe_links_dropped_text_kept() {
        let h = to_html(
            "[click](javascript:alert(1)) and [ok](https://a.example/) ![img](https://a.example/i.png) ![bad](data:x)",
        );
        assert!(!h.contains("javascript"), "{h}");
        assert!(h.contains("click"));
        assert!(h.contains(r#"<a href="https://a.example/">ok</a>"#), "{h}");
        assert!(!h.contains("<img"), "{h}");
        assert!(
            h.contains(r#"<a href="https://a.example/i.png">img</a>"#),
            "{h}"
        );
        assert!(h.contains("bad") && !h.contains("data:"), "{h}");
    }

    #[test]
    fn deep_nesting_is_flattened_in_linear_time() {
        let deep = format!("{}deep text", "> ".repeat(5000));
        assert_eq!(nesting_depth(&deep), 5001);
        let h = to_html(&deep);
        assert_eq!(h.matches("<blockquote>").count(), MAX_NESTING);
        assert!(h.contains("deep text"), "{h}");
        let mut links = vec![];
        let blocks = to_text(&deep, &mut links);
        assert!(blocks.iter().any(|b| b.text == "deep text"));
        assert!(blocks.iter().all(|b| b.prefix.len() <= 2 * MAX_NESTING));

        let started = std::time::Instant::now();
        let h = to_html(&">".repeat(200_000));
        assert!(h.len() < 10_000, "{}", h.len());
        assert!(started.elapsed() < std::time::Duration::from_secs(10));

        let emphasis = format!("{}a{}", "*".repeat(10_000), "*".repeat(10_000));
        assert!(to_html(&emphasis).matches("<em>").count() <= MAX_NESTING);
    }

    #[test]
    fn headings_are_demoted() {
        let h = to_html("# Big\n\ntext");
        assert!(h.contains("<h3>Big</h3>"), "{h}");
    }

    #[test]
    fn text_blocks_with_links_and_lists() {
        let mut links = vec![];
        let b = to_text(
            "Para with [a link](https://x.example/) here.\n\n- one\n- two\n\n> quoted",
            &mut links,
        );
        assert_eq!(links, vec!["https://x.example/".to_owned()]);
        assert_eq!(b[0].text, "Para with a link [1] here.");
        assert_eq!(b[1].first_prefix, "- ");
        assert_eq!(b[1].text, "one");
        assert_eq!(b[3].first_prefix, "> ");
    }
}

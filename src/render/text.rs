//! Plain-text part, generated from the model (not from the HTML).

use super::labels::{Labels, quote_marks};
use super::markdown::{self, TextBlock};
use super::{
    DigestIssue, NewsletterInfo, RenderOptions, clean, clean_line, is_http_url, placeholder,
};

/// Target line width.
pub const WIDTH: usize = 72;

/// Greedy word wrap. Words longer than the width (URLs) get a line of their own.
pub(crate) fn wrap_into(out: &mut String, text: &str, first_prefix: &str, prefix: &str) {
    let mut line = String::from(first_prefix);
    let mut line_len = first_prefix.chars().count();
    let mut has_word = false;
    let mut cur_prefix_len = line_len;
    for word in text.split_whitespace() {
        let wlen = word.chars().count();
        if has_word && line_len + 1 + wlen > WIDTH {
            out.push_str(line.trim_end());
            out.push('\n');
            line.clear();
            line.push_str(prefix);
            line_len = prefix.chars().count();
            cur_prefix_len = line_len;
            has_word = false;
        }
        if has_word {
            line.push(' ');
            line_len += 1;
        }
        line.push_str(word);
        line_len += wlen;
        has_word = true;
    }
    if has_word || cur_prefix_len > 0 {
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn push_blocks(out: &mut String, blocks: &[TextBlock]) {
    for b in blocks {
        if b.preformatted {
            for l in b.text.lines() {
                out.push_str(&b.prefix);
                out.push_str("    ");
                out.push_str(l);
                out.push('\n');
            }
        } else {
            wrap_into(out, &b.text, &b.first_prefix, &b.prefix);
        }
        out.push('\n');
    }
}

fn push_links(out: &mut String, links: &[String], from: usize) {
    if links.len() > from {
        for (i, l) in links.iter().enumerate().skip(from) {
            out.push_str(&format!("[{}] {}\n", i + 1, l));
        }
        out.push('\n');
    }
}

const RULE: &str = "------------------------------------------------------------------------";

pub(crate) fn render(nl: &NewsletterInfo, issue: &DigestIssue, options: RenderOptions) -> String {
    let labels = Labels::for_language(&nl.lang);
    let mut out = String::with_capacity(8 * 1024);
    let name = clean_line(&nl.name);
    let title = clean_line(&issue.title);
    let mut links: Vec<String> = Vec::new();

    out.push_str(&name);
    out.push('\n');
    wrap_into(&mut out, &title, "", "");
    out.push_str(&"=".repeat(title.chars().count().clamp(1, WIDTH)));
    out.push('\n');
    out.push_str(&labels.issue_line(issue.number, issue.date));
    out.push_str("\n\n");
    let web_url = issue.web_url.trim();
    if is_http_url(web_url) {
        out.push_str(labels.view_in_browser);
        out.push_str(": ");
        out.push_str(web_url);
        out.push_str("\n\n");
    }
    out.push_str(placeholder::GREETING_START);
    out.push_str(labels.greeting.0);
    out.push_str(placeholder::NAME);
    out.push_str(labels.greeting.1);
    out.push_str("\n\n");
    out.push_str(placeholder::GREETING_END);

    push_blocks(
        &mut out,
        &markdown::to_text(&issue.intro_markdown, &mut links),
    );
    push_links(&mut out, &links, 0);

    if options.overview.shows(issue.items.len()) {
        out.push_str(labels.in_this_issue);
        out.push_str(":\n\n");
        for (i, item) in issue.items.iter().enumerate() {
            let number = format!("{}. ", i + 1);
            let indent = " ".repeat(number.len());
            wrap_into(&mut out, &clean_line(&item.headline), &number, &indent);
        }
        out.push('\n');
    }

    let mut prev_section: Option<String> = None;
    for item in &issue.items {
        out.push_str(RULE);
        out.push_str("\n\n");
        let section = item
            .section
            .as_deref()
            .map(clean_line)
            .filter(|s| !s.is_empty());
        // As in the HTML: an unsectioned item after a section gets a
        // heading of its own.
        let heading = match (&section, &prev_section) {
            (Some(s), p) if p.as_ref() != Some(s) => Some(s.as_str()),
            (None, Some(_)) => Some(labels.more_news),
            _ => None,
        };
        if let Some(h) = heading {
            wrap_into(&mut out, &h.to_uppercase(), "", "");
            out.push('\n');
        }
        prev_section = section;

        let headline = clean_line(&item.headline);
        wrap_into(&mut out, &headline, "", "");
        let mut meta = clean_line(&item.outlet);
        if let Some(d) = item.published {
            meta.push_str(" · ");
            meta.push_str(&labels.date(d));
        }
        if let Some(a) = item
            .author
            .as_deref()
            .map(clean_line)
            .filter(|s| !s.is_empty())
        {
            meta.push_str(" · ");
            meta.push_str(labels.by);
            meta.push_str(&a);
            if let Some(r) = item
                .author_role
                .as_deref()
                .map(clean_line)
                .filter(|s| !s.is_empty())
            {
                meta.push_str(", ");
                meta.push_str(&r);
            }
        }
        wrap_into(&mut out, &meta, "", "");
        out.push('\n');

        let from = links.len();
        push_blocks(
            &mut out,
            &markdown::to_text(&item.summary_markdown, &mut links),
        );
        if let Some(q) = item.quote.as_deref().map(|q| clean(q).trim().to_owned())
            && !q.is_empty()
        {
            let (open, close) = quote_marks(item.lang.as_ref().unwrap_or(&nl.lang));
            wrap_into(&mut out, &format!("{open}{q}{close}"), "    ", "    ");
            out.push('\n');
        }
        let url = item.url.trim();
        if is_http_url(url) {
            out.push_str(labels.read_article);
            out.push_str(": ");
            out.push_str(url);
            out.push_str("\n\n");
        }
        push_links(&mut out, &links, from);
    }

    out.push_str(RULE);
    out.push_str("\n\n");
    wrap_into(
        &mut out,
        &format!("{}{name}{}", labels.receiving.0, labels.receiving.1),
        "",
        "",
    );
    out.push_str(labels.unsubscribe);
    out.push_str(": ");
    out.push_str(placeholder::UNSUBSCRIBE_URL);
    out.push('\n');
    if is_http_url(web_url) {
        out.push_str(labels.view_in_browser);
        out.push_str(": ");
        out.push_str(web_url);
        out.push('\n');
    }
    out.push('\n');
    // The postal address stays on one line so it reads (and can be found)
    // as one address.
    out.push_str(&name);
    out.push('\n');
    out.push_str(&clean_line(&nl.postal_address));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_72() {
        let mut out = String::new();
        let text = "word ".repeat(40);
        wrap_into(&mut out, &text, "> ", "> ");
        for l in out.lines() {
            assert!(l.chars().count() <= WIDTH, "{l}");
            assert!(l.starts_with("> "));
        }
        assert!(out.lines().count() > 2);
    }

    #[test]
    fn long_words_get_own_line() {
        let mut out = String::new();
        let url = format!("https://example.com/{}", "a".repeat(100));
        wrap_into(&mut out, &format!("see {url} now"), "", "");
        assert_eq!(out, format!("see\n{url}\nnow\n"));
    }
}

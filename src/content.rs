//! The editorial side: items collected during the week, composed into an
//! issue that is rendered once and frozen; previews and test copies.

use std::path::Path;

use chrono::{DateTime, FixedOffset, Utc};

use crate::app::App;
use crate::digest_file::{
    ItemInput, MAX_FILE_BYTES, MAX_HEADLINE, MAX_ITEMS, check_intro, parse_digest_file,
};
use crate::domain::{ItemState, LanguageTag, Millis, ms_to_datetime, now_ms};
use crate::render::{
    ClipPolicy, DigestIssue, MessageHeaders, MessageTemplate, NewsletterInfo, Recipient,
    RenderOptions, RenderedIssue, Theme, clip_warning, format_date, render_issue,
};
use crate::store::content::{IssueDraft, IssueRow, IssueSummary, ItemRow, NewIssue};
use crate::store::{Newsletter, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error(
        "nothing to compose: no items of {0} are ready. Mark items with `herald items ready ID…` or import them with --ready"
    )]
    NoReadyItems(String),
    #[error(
        "could not compose an issue of {0}: other processes kept composing at the same time. Run compose again"
    )]
    Contended(String),
    #[error("no issue {0:?}: give the issue's number or its slug (see `herald issue list`)")]
    NoIssue(String),
    #[error("no issues yet: compose one with `herald issue compose`")]
    NoIssues,
    #[error("no item {0} (see `herald items list`)")]
    NoItem(i64),
    #[error("item {0} is published in an issue and can no longer change")]
    ItemPublished(i64),
    #[error("invalid item: {0}")]
    InvalidItem(String),
    #[error("{field} must be a single line without control characters")]
    NotOneLine { field: &'static str },
    #[error("{field} is longer than {max} characters; shorten it")]
    TooLong { field: &'static str, max: usize },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is larger than {limit_kb} KB, the most Herald reads from an items, summary, intro or CSS file; split it into smaller files (or check that it is the file you meant)"
    )]
    FileTooLarge { path: String, limit_kb: u64 },
    #[error("{path} is not UTF-8 text; save it as UTF-8")]
    NotText { path: String },
    #[error("invalid intro: {0}")]
    InvalidIntro(String),
    #[error(
        "{ready} items of {newsletter} are ready, but an issue holds at most {max}; move some back with `herald items unready ID…`"
    )]
    TooManyItems {
        newsletter: String,
        ready: usize,
        max: usize,
    },
    #[error("issue not composed: {0}. Or set render.clip_limit = \"warn\" to compose it anyway")]
    Clipped(String),
    #[error(transparent)]
    DigestFile(#[from] crate::digest_file::DigestFileError),
    #[error("render.css_file: cannot read {path}: {source}")]
    Css {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    #[error(transparent)]
    Lookup(#[from] crate::app::LookupError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often compose starts over after losing a race for a number or slug.
const COMPOSE_ATTEMPTS: usize = 20;

#[derive(Debug, Default, Clone)]
pub struct ComposeOptions {
    pub title: Option<String>,
    pub subject: Option<String>,
    pub preheader: Option<String>,
    pub intro: Option<String>,
}

/// Which slot a scheduled compose is for.
#[derive(Debug, Clone, Copy)]
pub struct SlotCompose {
    /// The `schedule_runs` row, moved from `pending` to `composed` with the issue.
    pub run_id: i64,
    /// `on_empty = "send_anyway"`: compose even with no ready item.
    pub allow_empty: bool,
}

/// What `items import` did.
#[derive(Debug)]
pub struct ItemsImported {
    pub ids: Vec<i64>,
    pub intro_saved: bool,
}

impl App {
    /// The configured stylesheet, read with the same bounds as content files
    /// (a mistyped `render.css_file = "/dev/zero"` must not hang compose).
    pub async fn theme(&self) -> Result<Theme, ContentError> {
        let path = &self.config.render.css_file;
        if path.is_empty() {
            return Ok(Theme::builtin().with_options(self.render_options()));
        }
        match read_text_file(Path::new(path)).await {
            Ok(css) => Ok(Theme::from_css(css).with_options(self.render_options())),
            Err(ContentError::Read { source, .. }) => Err(ContentError::Css {
                path: path.clone(),
                source,
            }),
            Err(e) => Err(e),
        }
    }

    fn render_options(&self) -> RenderOptions {
        RenderOptions {
            read_more: self.config.render.read_more,
            overview: self.config.render.overview,
        }
    }

    pub async fn add_items(
        &self,
        newsletter: &Newsletter,
        items: &[ItemInput],
        ready: bool,
    ) -> Result<Vec<i64>, ContentError> {
        for item in items {
            item.validate()
                .map_err(|m| ContentError::InvalidItem(format!("{:?}: {m}", item.headline)))?;
        }
        let state = if ready {
            ItemState::Ready
        } else {
            ItemState::Draft
        };
        Ok(self
            .db
            .insert_items(newsletter.id, items, state, now_ms())
            .await?)
    }

    /// `items import FILE`: all of the file or nothing. A digest file's
    /// title, subject, preheader and intro wait for the next compose.
    pub async fn import_items_file(
        &self,
        newsletter: &Newsletter,
        path: &Path,
        ready: bool,
    ) -> Result<ItemsImported, ContentError> {
        let text = read_text_file(path).await?;
        self.import_items_text(newsletter, &path.display().to_string(), &text, ready)
            .await
    }

    /// `import_items_file` for text already in memory (an HTTP upload,
    /// bounded by the caller to [`MAX_FILE_BYTES`]); `name` labels errors.
    pub async fn import_items_text(
        &self,
        newsletter: &Newsletter,
        name: &str,
        text: &str,
        ready: bool,
    ) -> Result<ItemsImported, ContentError> {
        let parsed = parse_digest_file(name, text)?;
        let ids = self.add_items(newsletter, &parsed.items, ready).await?;
        let draft = IssueDraft {
            title: parsed.title,
            subject: parsed.subject,
            preheader: parsed.preheader,
            intro: parsed.intro_markdown,
            lang: parsed.lang.map(|l| l.to_string()),
        };
        let intro_saved = draft.title.is_some()
            || draft.lang.is_some()
            || draft.subject.is_some()
            || draft.preheader.is_some()
            || draft.intro.is_some();
        if intro_saved {
            self.db
                .save_issue_draft(newsletter.id, &draft, now_ms())
                .await?;
        }
        Ok(ItemsImported { ids, intro_saved })
    }

    pub async fn item(&self, id: i64) -> Result<ItemRow, ContentError> {
        self.db.item(id).await?.ok_or(ContentError::NoItem(id))
    }

    pub async fn edit_item(
        &self,
        id: i64,
        edit: impl FnOnce(&mut ItemInput),
    ) -> Result<(), ContentError> {
        let row = self.db.item(id).await?.ok_or(ContentError::NoItem(id))?;
        if row.state == ItemState::Published {
            return Err(ContentError::ItemPublished(id));
        }
        let mut input = row.to_input();
        edit(&mut input);
        input
            .validate()
            .map_err(|m| ContentError::InvalidItem(format!("item {id}: {m}")))?;
        if !self.db.update_item(id, &input, now_ms()).await? {
            return Err(ContentError::ItemPublished(id));
        }
        Ok(())
    }

    pub async fn set_item_state(&self, id: i64, state: ItemState) -> Result<(), ContentError> {
        let row = self.db.item(id).await?.ok_or(ContentError::NoItem(id))?;
        if row.state == ItemState::Published || !self.db.set_item_state(id, state, now_ms()).await?
        {
            return Err(ContentError::ItemPublished(id));
        }
        Ok(())
    }

    pub async fn remove_item(&self, id: i64) -> Result<(), ContentError> {
        let row = self.db.item(id).await?.ok_or(ContentError::NoItem(id))?;
        if row.state == ItemState::Published || !self.db.remove_item(id).await? {
            return Err(ContentError::ItemPublished(id));
        }
        Ok(())
    }

    /// Freezes every ready item into the next issue, rendered once.
    pub async fn compose_issue(
        &self,
        newsletter: &Newsletter,
        options: ComposeOptions,
    ) -> Result<IssueRow, ContentError> {
        self.compose_with(newsletter, options, None).await
    }

    /// The scheduler's compose: the same path as `compose_issue`, but the
    /// issue is stored as `scheduled` and the slot's run row moves to
    /// `composed` in the same transaction, so a slot is never composed twice
    /// nor left with an issue it does not know about.
    pub async fn compose_for_slot(
        &self,
        newsletter: &Newsletter,
        slot: SlotCompose,
    ) -> Result<IssueRow, ContentError> {
        self.compose_with(newsletter, ComposeOptions::default(), Some(slot))
            .await
    }

    async fn compose_with(
        &self,
        newsletter: &Newsletter,
        options: ComposeOptions,
        slot: Option<SlotCompose>,
    ) -> Result<IssueRow, ContentError> {
        for (field, value) in [
            ("subject", &options.subject),
            ("title", &options.title),
            ("preheader", &options.preheader),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| v.contains(['\r', '\n']) || v.chars().any(char::is_control))
            {
                return Err(ContentError::NotOneLine { field });
            }
            if value
                .as_deref()
                .is_some_and(|v| v.chars().count() > MAX_HEADLINE)
            {
                return Err(ContentError::TooLong {
                    field,
                    max: MAX_HEADLINE,
                });
            }
        }
        // Optimistic: read, render, then store; the store refuses (and we
        // start over from fresh reads) when another process composed in
        // between, so two processes never share a number or a slug.
        for _ in 0..COMPOSE_ATTEMPTS {
            if let Some(issue) = self.try_compose(newsletter, &options, slot).await? {
                return Ok(issue);
            }
        }
        Err(ContentError::Contended(newsletter.slug.clone()))
    }

    /// One attempt of `compose_issue`; `None` when a concurrent compose won.
    async fn try_compose(
        &self,
        newsletter: &Newsletter,
        options: &ComposeOptions,
        slot: Option<SlotCompose>,
    ) -> Result<Option<IssueRow>, ContentError> {
        let options = options.clone();
        let items = self.db.items(newsletter.id, Some(ItemState::Ready)).await?;
        if items.is_empty() && !slot.is_some_and(|s| s.allow_empty) {
            return Err(ContentError::NoReadyItems(newsletter.slug.clone()));
        }
        if items.len() > MAX_ITEMS {
            return Err(ContentError::TooManyItems {
                newsletter: newsletter.slug.clone(),
                ready: items.len(),
                max: MAX_ITEMS,
            });
        }
        let draft = self.db.issue_draft(newsletter.id).await?;
        let now = now_ms();
        let date = ms_to_datetime(now).date_naive();
        let number = self.db.next_issue_number(newsletter.id).await?;
        let slug = self
            .free_issue_slug(&format!("{date}-{}", slugify(&newsletter.name)))
            .await?;
        let subject = options
            .subject
            .or(draft.subject)
            .unwrap_or_else(|| match items.first() {
                Some(first) => subject_from_template(newsletter, &first.headline, items.len() - 1),
                // `on_empty = "send_anyway"` with nothing ready.
                None => newsletter.name.clone(),
            });
        let title = options.title.or(draft.title).unwrap_or_else(|| {
            format!(
                "{} · {}",
                newsletter.name,
                format_date(&newsletter_language(newsletter), date)
            )
        });
        let preheader = options
            .preheader
            .or(draft.preheader)
            .filter(|p| !p.is_empty())
            .or_else(|| (!newsletter.preheader.is_empty()).then(|| newsletter.preheader.clone()))
            .unwrap_or_else(|| {
                items
                    .iter()
                    .map(|i| i.headline.as_str())
                    .collect::<Vec<_>>()
                    .join(" · ")
            });
        let intro = options.intro.or(draft.intro).unwrap_or_default();
        check_intro(&intro).map_err(ContentError::InvalidIntro)?;
        let digest = DigestIssue {
            number,
            title: title.clone(),
            subject: subject.clone(),
            preheader: preheader.clone(),
            intro_markdown: intro.clone(),
            date,
            items: items.iter().map(|i| i.to_input()).collect(),
            web_url: self.links.archive_issue(&slug),
            lang: draft
                .lang
                .as_deref()
                .and_then(|l| LanguageTag::parse(l).ok()),
        };
        let rendered = render_issue(
            &self.newsletter_info(newsletter),
            &digest,
            &self.theme().await?,
        )?;
        if let Some(warning) = clip_warning(rendered.html.len()) {
            match self.config.render.clip_limit {
                ClipPolicy::Refuse => return Err(ContentError::Clipped(warning)),
                ClipPolicy::Warn => {
                    tracing::warn!(newsletter = %newsletter.slug, number, "{warning}")
                }
            }
        }
        let item_ids: Vec<i64> = items.iter().map(|i| i.id).collect();
        let new = NewIssue {
            newsletter_id: newsletter.id,
            number,
            slug: &slug,
            title: &title,
            subject: &subject,
            preheader: &preheader,
            intro: &intro,
            html: &rendered.html,
            text: &rendered.text,
            web_html: &rendered.web_html,
            item_ids: &item_ids,
            now,
            schedule_run: slot.map(|s| s.run_id),
        };
        match self.db.insert_issue(&new).await? {
            Some(id) => Ok(Some(self.db.issue_by_id(id).await?)),
            None => Ok(None),
        }
    }

    async fn free_issue_slug(&self, base: &str) -> Result<String, StoreError> {
        let mut slug = base.to_owned();
        let mut n = 2;
        while self.db.slug_taken(&slug).await? {
            slug = format!("{base}-{n}");
            n += 1;
        }
        Ok(slug)
    }

    pub fn newsletter_info(&self, newsletter: &Newsletter) -> NewsletterInfo {
        NewsletterInfo {
            name: newsletter.name.clone(),
            postal_address: newsletter.postal_address.clone(),
            lang: newsletter_language(newsletter),
            base_url: self.links.base().to_owned(),
        }
    }

    pub async fn find_issue(
        &self,
        newsletter: &Newsletter,
        reference: &str,
    ) -> Result<IssueRow, ContentError> {
        self.db
            .issue_by_ref(newsletter.id, reference)
            .await?
            .ok_or_else(|| ContentError::NoIssue(reference.to_owned()))
    }

    /// The stored rendering: nothing is rendered again after compose.
    pub fn rendered(issue: &IssueRow) -> RenderedIssue {
        RenderedIssue {
            html: issue.html.clone(),
            text: issue.text_body.clone(),
            web_html: issue.web_html.clone(),
        }
    }

    /// The issue's headers, fixed per issue so that every retry of a
    /// recipient's message is byte-identical.
    pub fn message_headers(
        &self,
        newsletter: &Newsletter,
        issue: &IssueRow,
        date: DateTime<FixedOffset>,
        test: bool,
    ) -> MessageHeaders {
        let from = newsletter.from();
        let subject = if test {
            format!("[TEST] {}", issue.subject)
        } else {
            issue.subject.clone()
        };
        let mut extra = Vec::new();
        if test {
            extra.push(("X-Herald-Test".to_owned(), "1".to_owned()));
        }
        MessageHeaders {
            from: from.header_value(),
            reply_to: newsletter.reply_to.clone(),
            subject,
            date,
            list_id: format!(
                "{} <{}>",
                crate::domain::mailbox::encode_display_name(list_id_description(&newsletter.name)),
                newsletter.list_id
            ),
            feedback_id: format!(
                "issue-{}:{}:newsletter:herald",
                issue.number, newsletter.slug
            ),
            extra,
            one_click: self.links.one_click_unsubscribe() != crate::app::OneClick::Omitted,
        }
    }

    /// A test copy or preview: "[TEST]" subject, a Message-ID of its own,
    /// an unsubscribe link that unsubscribes nobody.
    pub fn sample_message(
        &self,
        newsletter: &Newsletter,
        issue: &IssueRow,
        to: &str,
        test: bool,
    ) -> Result<Vec<u8>, ContentError> {
        let date = Utc::now().fixed_offset();
        let template = MessageTemplate::prepare(
            &Self::rendered(issue),
            &self.message_headers(newsletter, issue, date, test),
        )?;
        let message_id = format!(
            "<test.{}.{}@{}>",
            issue.number,
            uuid::Uuid::new_v4().simple(),
            newsletter.from().address.domain()
        );
        let unsubscribe_url = self.links.unsubscribe("preview");
        let mailto = self.unsubscribe_mailto(newsletter);
        Ok(template.personalise(&Recipient {
            to,
            name: None,
            message_id: &message_id,
            unsubscribe_url: &unsubscribe_url,
            unsubscribe_mailto: Some(&mailto),
        }))
    }
}

/// The List-Id description is a label for filters, not the newsletter's
/// full name: a name of any length is cut (on a character boundary) so the
/// header stays a line or two.
const MAX_LIST_ID_DESCRIPTION: usize = 100;

fn list_id_description(name: &str) -> &str {
    let name = name.trim();
    match name.char_indices().nth(MAX_LIST_ID_DESCRIPTION) {
        Some((cut, _)) => name[..cut].trim_end(),
        None => name,
    }
}

/// Reads an items, summary or intro file of at most [`MAX_FILE_BYTES`]
/// without blocking the runtime; a larger file (or a device such as
/// `/dev/zero`) is refused after reading one byte past the limit.
pub async fn read_text_file(path: &Path) -> Result<String, ContentError> {
    use tokio::io::AsyncReadExt;
    let display = || path.display().to_string();
    let read_err = |source| ContentError::Read {
        path: display(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ContentError::FileTooLarge {
            path: display(),
            limit_kb: MAX_FILE_BYTES / 1024,
        });
    }
    String::from_utf8(bytes).map_err(|_| ContentError::NotText { path: display() })
}

fn subject_from_template(newsletter: &Newsletter, first_headline: &str, n_more: usize) -> String {
    let mut template = newsletter.subject_template.clone();
    if n_more == 0 {
        template = template.replace(" and {n_more} more", "");
    }
    template
        .replace("{newsletter}", &newsletter.name)
        .replace("{first_headline}", first_headline)
        .replace("{n_more}", &n_more.to_string())
}

pub fn slugify(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_owned();
    if out.is_empty() {
        "issue".to_owned()
    } else {
        out
    }
}

pub fn millis_to_fixed(ms: Millis) -> DateTime<FixedOffset> {
    ms_to_datetime(ms).fixed_offset()
}

impl App {
    /// A newsletter's items, optionally in one state, in the order the store keeps them.
    pub async fn list_items(
        &self,
        newsletter: &Newsletter,
        state: Option<ItemState>,
    ) -> Result<Vec<ItemRow>, StoreError> {
        self.db.items(newsletter.id, state).await
    }

    /// A newsletter's issues, newest first, without their renderings.
    pub async fn list_issues(
        &self,
        newsletter: &Newsletter,
    ) -> Result<Vec<IssueSummary>, StoreError> {
        self.db.issue_summaries(newsletter.id).await
    }

    /// The newest issue, for commands that default to it.
    pub async fn latest_issue(&self, newsletter: &Newsletter) -> Result<IssueRow, ContentError> {
        match self.list_issues(newsletter).await?.first() {
            Some(summary) => Ok(self.db.issue_by_id(summary.id).await?),
            None => Err(ContentError::NoIssues),
        }
    }

    /// The items an issue was composed from, in their order in the issue.
    pub async fn items_of_issue(&self, issue: &IssueRow) -> Result<Vec<ItemRow>, StoreError> {
        self.db.items_of_issue(issue.id).await
    }
}

/// The newsletter row's language. The row is written from the parsed
/// `newsletter.language`; a value edited by hand that no longer parses reads
/// as English rather than failing every compose.
fn newsletter_language(newsletter: &Newsletter) -> LanguageTag {
    LanguageTag::parse(&newsletter.lang).unwrap_or_else(|e| {
        tracing::warn!(newsletter = %newsletter.slug, "stored language: {e}; using en");
        LanguageTag::english()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slugify("Weekly Digest"), "weekly-digest");
        assert_eq!(slugify("  Ünïcode — news!! "), "n-code-news");
        assert_eq!(slugify("—"), "issue");
    }

    #[test]
    fn list_id_description_is_bounded_on_a_char_boundary() {
        assert_eq!(list_id_description(" Weekly Digest "), "Weekly Digest");
        let long = "é".repeat(1200);
        let cut = list_id_description(&long);
        assert_eq!(cut.chars().count(), MAX_LIST_ID_DESCRIPTION);
    }
}

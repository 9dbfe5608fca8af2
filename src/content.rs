//! The editorial side: items collected during the week, composed into an
//! issue that is rendered once and frozen; previews and test copies.

use std::path::Path;

use chrono::{DateTime, FixedOffset, Utc};

use crate::app::App;
use crate::digest_file::{ItemInput, parse_digest_file};
use crate::domain::{ItemState, Millis, ms_to_datetime, now_ms};
use crate::render::{
    DigestIssue, MessageHeaders, MessageTemplate, NewsletterInfo, Recipient, RenderedIssue, Theme,
    render_issue,
};
use crate::store::content::{IssueDraft, IssueRow, NewIssue};
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
    #[error("no item {0} (see `herald items list`)")]
    NoItem(i64),
    #[error("item {0} is published in an issue and can no longer change")]
    ItemPublished(i64),
    #[error("invalid item: {0}")]
    InvalidItem(String),
    #[error("{field} must be a single line without control characters")]
    NotOneLine { field: &'static str },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
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

/// What `items import` did.
#[derive(Debug)]
pub struct ItemsImported {
    pub ids: Vec<i64>,
    pub intro_saved: bool,
}

impl App {
    pub fn theme(&self) -> Result<Theme, ContentError> {
        let path = &self.config.render.css_file;
        if path.is_empty() {
            return Ok(Theme::builtin());
        }
        std::fs::read_to_string(path)
            .map(Theme::from_css)
            .map_err(|source| ContentError::Css {
                path: path.clone(),
                source,
            })
    }

    pub async fn add_items(
        &self,
        newsletter: &Newsletter,
        items: &[ItemInput],
        ready: bool,
    ) -> Result<Vec<i64>, ContentError> {
        for item in items {
            item.validate().map_err(ContentError::InvalidItem)?;
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
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ContentError::Read {
            path: display.clone(),
            source,
        })?;
        let parsed = parse_digest_file(&display, &text)?;
        let ids = self.add_items(newsletter, &parsed.items, ready).await?;
        let draft = IssueDraft {
            title: parsed.title,
            subject: parsed.subject,
            preheader: parsed.preheader,
            intro: parsed.intro_markdown,
        };
        let intro_saved = draft.title.is_some()
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

    pub async fn edit_item(
        &self,
        id: i64,
        edit: impl FnOnce(&mut ItemInput),
    ) -> Result<(), ContentError> {
        let row = self.db.item(id).await?.ok_or(ContentError::NoItem(id))?;
        if row.state()? == ItemState::Published {
            return Err(ContentError::ItemPublished(id));
        }
        let mut input = row.to_input();
        edit(&mut input);
        input.validate().map_err(ContentError::InvalidItem)?;
        if !self.db.update_item(id, &input, now_ms()).await? {
            return Err(ContentError::ItemPublished(id));
        }
        Ok(())
    }

    pub async fn set_item_state(&self, id: i64, state: ItemState) -> Result<(), ContentError> {
        let row = self.db.item(id).await?.ok_or(ContentError::NoItem(id))?;
        if row.state()? == ItemState::Published
            || !self.db.set_item_state(id, state, now_ms()).await?
        {
            return Err(ContentError::ItemPublished(id));
        }
        Ok(())
    }

    pub async fn remove_item(&self, id: i64) -> Result<(), ContentError> {
        let row = self.db.item(id).await?.ok_or(ContentError::NoItem(id))?;
        if row.state()? == ItemState::Published || !self.db.remove_item(id).await? {
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
        }
        // Optimistic: read, render, then store; the store refuses (and we
        // start over from fresh reads) when another process composed in
        // between, so two processes never share a number or a slug.
        for _ in 0..COMPOSE_ATTEMPTS {
            if let Some(issue) = self.try_compose(newsletter, &options).await? {
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
    ) -> Result<Option<IssueRow>, ContentError> {
        let options = options.clone();
        let items = self.db.items(newsletter.id, Some(ItemState::Ready)).await?;
        if items.is_empty() {
            return Err(ContentError::NoReadyItems(newsletter.slug.clone()));
        }
        let draft = self.db.issue_draft(newsletter.id).await?;
        let now = now_ms();
        let date = ms_to_datetime(now).date_naive();
        let number = self.db.next_issue_number(newsletter.id).await?;
        let slug = self
            .free_issue_slug(&format!("{date}-{}", slugify(&newsletter.name)))
            .await?;
        let first = &items[0].headline;
        let subject = options
            .subject
            .or(draft.subject)
            .unwrap_or_else(|| subject_from_template(newsletter, first, items.len() - 1));
        let title = options
            .title
            .or(draft.title)
            .unwrap_or_else(|| format!("{} · {}", newsletter.name, date.format("%-d %B %Y")));
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
        let digest = DigestIssue {
            number,
            title: title.clone(),
            subject: subject.clone(),
            preheader: preheader.clone(),
            intro_markdown: intro.clone(),
            date,
            items: items.iter().map(|i| i.to_input()).collect(),
            web_url: self.links.archive_issue(&slug),
        };
        let rendered = render_issue(&self.newsletter_info(newsletter), &digest, &self.theme()?)?;
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
            lang: newsletter.lang.clone(),
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
                crate::domain::mailbox::encode_display_name(&newsletter.name),
                newsletter.list_id
            ),
            feedback_id: format!(
                "issue-{}:{}:newsletter:herald",
                issue.number, newsletter.slug
            ),
            extra,
        }
    }

    pub fn message_id(
        &self,
        newsletter: &Newsletter,
        issue: &IssueRow,
        subscriber_id: i64,
    ) -> String {
        format!(
            "<issue-{}.{}@{}>",
            issue.number,
            self.secret.subscriber_tag(subscriber_id),
            newsletter.from().address.domain()
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slugify("Weekly Digest"), "weekly-digest");
        assert_eq!(slugify("  Ünïcode — news!! "), "n-code-news");
        assert_eq!(slugify("—"), "issue");
    }
}

//! Items (the week's articles) and issues (the frozen, rendered digest).

use super::{Db, Result, StoreError, with_pool, with_tx};
use crate::digest_file::ItemInput;
use crate::domain::{IssueStatus, ItemState, LanguageTag, Millis};

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ItemRow {
    pub id: i64,
    pub newsletter_id: i64,
    pub state: ItemState,
    pub headline: String,
    pub outlet: String,
    pub url: String,
    pub published_on: Option<String>,
    pub author: Option<String>,
    pub author_role: Option<String>,
    pub summary: String,
    pub quote: Option<String>,
    pub section: Option<String>,
    /// Canonical BCP 47 tag, written only from a parsed `LanguageTag`.
    pub lang: Option<String>,
    pub issue_id: Option<i64>,
    pub created_at: Millis,
}

impl ItemRow {
    pub fn to_input(&self) -> ItemInput {
        ItemInput {
            headline: self.headline.clone(),
            outlet: self.outlet.clone(),
            url: self.url.clone(),
            published: self.published_on.as_deref().and_then(|d| d.parse().ok()),
            author: self.author.clone(),
            author_role: self.author_role.clone(),
            summary_markdown: self.summary.clone(),
            quote: self.quote.clone(),
            section: self.section.clone(),
            // A tag this version cannot read again (edited by hand in the
            // database) falls back to the newsletter's language.
            lang: self
                .lang
                .as_deref()
                .and_then(|l| LanguageTag::parse(l).ok()),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct IssueRow {
    pub id: i64,
    pub newsletter_id: i64,
    pub number: i64,
    pub slug: String,
    pub title: String,
    pub subject: String,
    pub preheader: String,
    pub intro: String,
    #[serde(skip)]
    pub html: String,
    #[serde(skip)]
    pub text_body: String,
    #[serde(skip)]
    pub web_html: String,
    pub status: IssueStatus,
    pub created_at: Millis,
    pub send_started_at: Option<Millis>,
    pub completed_at: Option<Millis>,
    pub final_counts: Option<String>,
    /// Why the engine paused it (`delivery::policy::PauseCause`); None otherwise.
    pub pause_reason: Option<String>,
}

/// What compose stores; the rendering happens before the transaction.
pub struct NewIssue<'a> {
    pub newsletter_id: i64,
    pub number: i64,
    pub slug: &'a str,
    pub title: &'a str,
    pub subject: &'a str,
    pub preheader: &'a str,
    pub intro: &'a str,
    pub html: &'a str,
    pub text: &'a str,
    pub web_html: &'a str,
    pub item_ids: &'a [i64],
    pub now: Millis,
    /// Set by the scheduler: the issue is stored `scheduled` and this
    /// `schedule_runs` row moves from `pending` to `composed` in the same
    /// transaction.
    pub schedule_run: Option<i64>,
}

#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct IssueDraft {
    pub title: Option<String>,
    pub subject: Option<String>,
    pub preheader: Option<String>,
    pub intro: Option<String>,
    /// The digest header's `lang`, canonical BCP 47.
    pub lang: Option<String>,
}

/// Binds an item's editable fields in the order both the INSERT and the
/// UPDATE list them (headline … section), so the two cannot drift apart.
macro_rules! bind_item_fields {
    ($query:expr, $item:expr) => {
        $query
            .bind(&$item.headline)
            .bind(&$item.outlet)
            .bind(&$item.url)
            .bind($item.published.map(|d| d.to_string()))
            .bind(&$item.author)
            .bind(&$item.author_role)
            .bind(&$item.summary_markdown)
            .bind(&$item.quote)
            .bind(&$item.section)
            .bind($item.lang.as_ref().map(|l| l.as_str()))
    };
}

const ITEM_COLUMNS: &str = "id, newsletter_id, state, headline, outlet, url, published_on, author, author_role, summary, quote, section, lang, issue_id, created_at";
const ISSUE_COLUMNS: &str = "id, newsletter_id, number, slug, title, subject, preheader, intro, html, text_body, web_html, status, created_at, send_started_at, completed_at, final_counts, pause_reason";

impl Db {
    pub async fn insert_items(
        &self,
        newsletter_id: i64,
        items: &[ItemInput],
        state: ItemState,
        now: Millis,
    ) -> Result<Vec<i64>> {
        with_tx!(self, |tx| {
            let mut ids = Vec::with_capacity(items.len());
            for item in items {
                let query = sqlx::query_scalar(
                    "INSERT INTO items (newsletter_id, state, headline, outlet, url, published_on, author, author_role, summary, quote, section, lang, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) RETURNING id",
                )
                .bind(newsletter_id)
                .bind(state.as_str());
                let id: i64 = bind_item_fields!(query, item)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                ids.push(id);
            }
            Ok::<_, StoreError>(ids)
        })
    }

    pub async fn update_item(&self, id: i64, item: &ItemInput, now: Millis) -> Result<bool> {
        let n = with_pool!(self, |p| {
            let query = sqlx::query(
                "UPDATE items SET headline = $2, outlet = $3, url = $4, published_on = $5, author = $6, author_role = $7,
                   summary = $8, quote = $9, section = $10, lang = $11, updated_at = $12 WHERE id = $1 AND state <> $13",
            )
            .bind(id);
            bind_item_fields!(query, item)
                .bind(now)
                .bind(ItemState::Published)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    pub async fn item(&self, id: i64) -> Result<Option<ItemRow>> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = $1");
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(id)
        .fetch_optional(p)
        .await?))
    }

    /// Items in editorial order (the order they were added).
    pub async fn items(
        &self,
        newsletter_id: i64,
        state: Option<ItemState>,
    ) -> Result<Vec<ItemRow>> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE newsletter_id = $1 AND ($2 IS NULL OR state = $2) ORDER BY position, id"
        );
        let state = state.map(|s| s.as_str());
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(newsletter_id)
        .bind(state)
        .fetch_all(p)
        .await?))
    }

    /// Moves unpublished items to `state`; returns how many moved.
    pub async fn set_item_state(&self, id: i64, state: ItemState, now: Millis) -> Result<bool> {
        let n = with_pool!(self, |p| {
            sqlx::query(
                "UPDATE items SET state = $2, updated_at = $3 WHERE id = $1 AND state <> $4",
            )
            .bind(id)
            .bind(state)
            .bind(now)
            .bind(ItemState::Published)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    pub async fn remove_item(&self, id: i64) -> Result<bool> {
        let n = with_pool!(self, |p| {
            sqlx::query("DELETE FROM items WHERE id = $1 AND state <> $2")
                .bind(id)
                .bind(ItemState::Published)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    pub async fn save_issue_draft(
        &self,
        newsletter_id: i64,
        draft: &IssueDraft,
        now: Millis,
    ) -> Result<()> {
        with_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO issue_drafts (newsletter_id, title, subject, preheader, intro, lang, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (newsletter_id) DO UPDATE SET title = COALESCE(excluded.title, issue_drafts.title),
                   subject = COALESCE(excluded.subject, issue_drafts.subject), preheader = COALESCE(excluded.preheader, issue_drafts.preheader),
                   intro = COALESCE(excluded.intro, issue_drafts.intro), lang = COALESCE(excluded.lang, issue_drafts.lang), updated_at = excluded.updated_at",
            )
            .bind(newsletter_id)
            .bind(&draft.title)
            .bind(&draft.subject)
            .bind(&draft.preheader)
            .bind(&draft.intro)
            .bind(&draft.lang)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    pub async fn issue_draft(&self, newsletter_id: i64) -> Result<IssueDraft> {
        let row: Option<IssueDraft> = with_pool!(self, |p| {
            sqlx::query_as("SELECT title, subject, preheader, intro, lang FROM issue_drafts WHERE newsletter_id = $1")
                .bind(newsletter_id)
                .fetch_optional(p)
                .await?
        });
        Ok(row.unwrap_or_default())
    }

    pub async fn next_issue_number(&self, newsletter_id: i64) -> Result<i64> {
        let max: Option<i64> = with_pool!(self, |p| {
            sqlx::query_scalar("SELECT MAX(number) FROM issues WHERE newsletter_id = $1")
                .bind(newsletter_id)
                .fetch_one(p)
                .await?
        });
        Ok(max.unwrap_or(0) + 1)
    }

    pub async fn slug_taken(&self, slug: &str) -> Result<bool> {
        let n: i64 = with_pool!(self, |p| sqlx::query_scalar(
            "SELECT COUNT(*) FROM issues WHERE slug = $1"
        )
        .bind(slug)
        .fetch_one(p)
        .await?);
        Ok(n > 0)
    }

    /// Stores the issue and publishes its items in one transaction: a crash
    /// leaves no issue or a whole one. `None` (and nothing changed) when a
    /// concurrent compose won a race: it took the issue's number or slug
    /// (both unique; the insert waits for the other transaction and then
    /// yields), or one of the items stopped being `ready`. The caller reads
    /// again and retries, so numbers and slugs are allocated atomically
    /// whichever process composes.
    pub async fn insert_issue(&self, issue: &NewIssue<'_>) -> Result<Option<i64>> {
        let stored = with_tx!(self, |tx| {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO issues (newsletter_id, number, slug, title, subject, preheader, intro, html, text_body, web_html, status, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(issue.newsletter_id)
            .bind(issue.number)
            .bind(issue.slug)
            .bind(issue.title)
            .bind(issue.subject)
            .bind(issue.preheader)
            .bind(issue.intro)
            .bind(issue.html)
            .bind(issue.text)
            .bind(issue.web_html)
            .bind(if issue.schedule_run.is_some() {
                IssueStatus::Scheduled
            } else {
                IssueStatus::Draft
            })
            .bind(issue.now)
            .fetch_optional(&mut *tx)
            .await?;
            match id {
                None => Ok(None),
                Some(id) => {
                    let mut published = 0;
                    for (position, item_id) in issue.item_ids.iter().enumerate() {
                        published += sqlx::query(
                            "UPDATE items SET state = $5, issue_id = $2, position = $3, updated_at = $4 WHERE id = $1 AND state = $6",
                        )
                        .bind(item_id)
                        .bind(id)
                        .bind(position as i64)
                        .bind(issue.now)
                        .bind(ItemState::Published)
                        .bind(ItemState::Ready)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    }
                    let slot_taken = match issue.schedule_run {
                        None => true,
                        Some(run) => {
                            sqlx::query(
                                "UPDATE schedule_runs SET state = 'composed', issue_id = $2, updated_at = $3 WHERE id = $1 AND state = 'pending'",
                            )
                            .bind(run)
                            .bind(id)
                            .bind(issue.now)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected()
                                == 1
                        }
                    };
                    if published as usize == issue.item_ids.len() && slot_taken {
                        sqlx::query("DELETE FROM issue_drafts WHERE newsletter_id = $1")
                            .bind(issue.newsletter_id)
                            .execute(&mut *tx)
                            .await?;
                        Ok(Some(id))
                    } else {
                        // An Err rolls the issue back (a `return` here would
                        // leave the function before the mapping below).
                        Err(StoreError::Conflict("the ready items"))
                    }
                }
            }
        });
        match stored {
            Err(StoreError::Conflict(_)) => Ok(None),
            other => other,
        }
    }

    /// Finds an issue by its number or its slug.
    pub async fn issue_by_ref(
        &self,
        newsletter_id: i64,
        reference: &str,
    ) -> Result<Option<IssueRow>> {
        let number: i64 = reference.trim_start_matches('#').parse().unwrap_or(-1);
        let sql = format!(
            "SELECT {ISSUE_COLUMNS} FROM issues WHERE (newsletter_id = $1 AND number = $2) OR slug = $3"
        );
        Ok(with_pool!(self, |p| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(newsletter_id)
                .bind(number)
                .bind(reference)
                .fetch_optional(p)
                .await?
        }))
    }

    pub async fn issue_by_id(&self, id: i64) -> Result<IssueRow> {
        let sql = format!("SELECT {ISSUE_COLUMNS} FROM issues WHERE id = $1");
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(id)
        .fetch_one(p)
        .await?))
    }

    /// Just the status, for loops that poll it (the row carries the whole rendering).
    pub async fn issue_status(&self, id: i64) -> Result<IssueStatus> {
        Ok(with_pool!(self, |p| {
            sqlx::query_scalar("SELECT status FROM issues WHERE id = $1")
                .bind(id)
                .fetch_one(p)
                .await?
        }))
    }

    pub async fn archived_issue(&self, slug: &str) -> Result<Option<IssueRow>> {
        let sql = format!(
            "SELECT {ISSUE_COLUMNS} FROM issues WHERE slug = $1 AND send_started_at IS NOT NULL AND status <> 'cancelled'"
        );
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(slug)
        .fetch_optional(p)
        .await?))
    }

    pub async fn items_of_issue(&self, issue_id: i64) -> Result<Vec<ItemRow>> {
        let sql =
            format!("SELECT {ITEM_COLUMNS} FROM items WHERE issue_id = $1 ORDER BY position, id");
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(issue_id)
        .fetch_all(p)
        .await?))
    }
}

/// An issue as a list shows it: no renderings (an index of many issues
/// must not load each one's three HTML/text bodies).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct IssueSummary {
    pub id: i64,
    pub number: i64,
    pub slug: String,
    pub title: String,
    pub subject: String,
    pub status: IssueStatus,
    pub created_at: Millis,
    pub send_started_at: Option<Millis>,
    pub completed_at: Option<Millis>,
}

const ISSUE_SUMMARY_COLUMNS: &str =
    "id, number, slug, title, subject, status, created_at, send_started_at, completed_at";

impl Db {
    /// The public archive's index: issues whose sending has begun, newest first.
    pub async fn archived_issue_summaries(&self) -> Result<Vec<IssueSummary>> {
        let sql = format!(
            "SELECT {ISSUE_SUMMARY_COLUMNS} FROM issues
             WHERE send_started_at IS NOT NULL AND status <> $1 ORDER BY send_started_at DESC"
        );
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(IssueStatus::Cancelled)
        .fetch_all(p)
        .await?))
    }

    /// A newsletter's issues, newest first, without their renderings.
    pub async fn issue_summaries(&self, newsletter_id: i64) -> Result<Vec<IssueSummary>> {
        let sql = format!(
            "SELECT {ISSUE_SUMMARY_COLUMNS} FROM issues WHERE newsletter_id = $1 ORDER BY number DESC"
        );
        Ok(with_pool!(self, |p| sqlx::query_as(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(newsletter_id)
        .fetch_all(p)
        .await?))
    }
}

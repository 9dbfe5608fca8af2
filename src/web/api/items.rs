//! `/api/v1/items`: the week's items (list, create, update, ready/draft,
//! delete, import a digest file).

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::NewsletterQuery;
use super::body::{ApiJson, text_body};
use super::problem::{ApiError, FieldError, Problem};
use crate::digest_file::{ItemInput, MAX_FILE_BYTES};
use crate::domain::{ItemState, LanguageTag};
use crate::store::content::ItemRow;
use crate::web::WebState;

/// An item as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Item {
    pub id: i64,
    /// `draft`, `ready` (goes into the next issue) or `published`.
    pub state: String,
    pub headline: String,
    pub outlet: String,
    pub url: String,
    /// Publication date, YYYY-MM-DD.
    pub published: Option<String>,
    pub author: Option<String>,
    pub author_role: Option<String>,
    /// Markdown.
    pub summary: String,
    pub quote: Option<String>,
    pub section: Option<String>,
    /// BCP 47 language tag of the item; absent: the newsletter's language.
    pub lang: Option<String>,
    /// The issue that published it.
    pub issue_id: Option<i64>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

impl From<ItemRow> for Item {
    fn from(r: ItemRow) -> Item {
        Item {
            id: r.id,
            state: r.state.to_string(),
            headline: r.headline,
            outlet: r.outlet,
            url: r.url,
            published: r.published_on,
            author: r.author,
            author_role: r.author_role,
            summary: r.summary,
            quote: r.quote,
            section: r.section,
            lang: r.lang,
            issue_id: r.issue_id,
            created_at: super::rfc3339(r.created_at),
        }
    }
}

/// A new item. Unknown fields are refused (a typo must not be dropped silently).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    pub headline: String,
    pub outlet: String,
    pub url: String,
    /// YYYY-MM-DD.
    #[serde(default)]
    pub published: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub author_role: Option<String>,
    /// Markdown.
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub quote: Option<String>,
    #[serde(default)]
    pub section: Option<String>,
    /// BCP 47 language tag (`kk`, `ru`, `ar`…) when the item is not in the
    /// newsletter's language; sets its `lang` and text direction.
    #[serde(default)]
    pub lang: Option<String>,
    /// Select it for the next issue right away.
    #[serde(default)]
    pub ready: bool,
}

/// Changes to an unpublished item: only the fields present change; an
/// empty string clears an optional field.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemChanges {
    pub headline: Option<String>,
    pub outlet: Option<String>,
    pub url: Option<String>,
    pub published: Option<String>,
    pub author: Option<String>,
    pub author_role: Option<String>,
    pub summary: Option<String>,
    pub quote: Option<String>,
    pub section: Option<String>,
    /// BCP 47 language tag; an empty string: the newsletter's language.
    pub lang: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `draft`, `ready` or `published`; default: every state.
    pub state: Option<String>,
    /// Newsletter slug; default: the configured newsletter.
    pub newsletter: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Newsletter slug; default: the configured newsletter.
    pub newsletter: Option<String>,
    /// Select the imported items for the next issue.
    #[serde(default)]
    pub ready: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    /// The new items' ids, in file order.
    pub ids: Vec<i64>,
    /// The file's title, subject, preheader or intro was kept for the next compose.
    pub intro_saved: bool,
}

fn parse_state(state: Option<&str>) -> Result<Option<ItemState>, ApiError> {
    state
        .map(|s| {
            s.parse::<ItemState>().map_err(|_| {
                ApiError::invalid(
                    "state",
                    format!("{s:?} is not an item state: use draft, ready or published"),
                )
            })
        })
        .transpose()
}

/// `lang`: a BCP 47 tag, or empty for "the newsletter's language".
fn parse_lang(value: &str) -> Result<Option<LanguageTag>, FieldError> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    LanguageTag::parse(value)
        .map(Some)
        .map_err(|e| FieldError::new("lang", e.to_string()))
}

fn parse_date(field: &str, value: &str) -> Result<Option<chrono::NaiveDate>, FieldError> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| FieldError::new(field, format!("{value:?} is not a date: use YYYY-MM-DD")))
}

/// All the item's problems at once, by field.
fn check_item(item: &ItemInput, mut errors: Vec<FieldError>) -> Result<(), ApiError> {
    errors.extend(
        item.field_errors()
            .into_iter()
            .map(|(field, detail)| FieldError::new(field, detail)),
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(errors))
    }
}

fn blank_to_none(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// List items.
#[utoipa::path(
    get,
    path = "/items",
    tag = "items",
    params(ListQuery),
    responses(
        (status = 200, body = [Item]),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such newsletter", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(s): State<WebState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Item>>, ApiError> {
    let state = parse_state(q.state.as_deref())?;
    let nl = s.app.newsletter(q.newsletter.as_deref()).await?;
    let rows = s.app.list_items(&nl, state).await?;
    Ok(Json(rows.into_iter().map(Item::from).collect()))
}

/// Add an item.
#[utoipa::path(
    post,
    path = "/items",
    tag = "items",
    params(NewsletterQuery),
    request_body = NewItem,
    responses(
        (status = 201, body = Item),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Each bad field is named in `errors`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(s): State<WebState>,
    Query(q): Query<NewsletterQuery>,
    ApiJson(new): ApiJson<NewItem>,
) -> Result<Response, ApiError> {
    let nl = s.app.newsletter(q.newsletter.as_deref()).await?;
    let mut errors = Vec::new();
    let published = match new.published.as_deref().map(|d| parse_date("published", d)) {
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        Some(Ok(d)) => d,
        None => None,
    };
    let lang = match new.lang.as_deref().map(parse_lang) {
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        Some(Ok(l)) => l,
        None => None,
    };
    let item = ItemInput {
        lang,
        headline: new.headline,
        outlet: new.outlet,
        url: new.url,
        published,
        author: blank_to_none(new.author),
        author_role: blank_to_none(new.author_role),
        summary_markdown: new.summary,
        quote: blank_to_none(new.quote),
        section: blank_to_none(new.section),
    };
    check_item(&item, errors)?;
    let ids = s.app.add_items(&nl, &[item], new.ready).await?;
    let id = ids
        .first()
        .copied()
        .ok_or_else(|| ApiError::internal("insert returned no id"))?;
    let row = s.app.item(id).await?;
    Ok((StatusCode::CREATED, Json(Item::from(row))).into_response())
}

/// Show one item.
#[utoipa::path(
    get,
    path = "/items/{id}",
    tag = "items",
    params(("id" = i64, Path, description = "Item id")),
    responses(
        (status = 200, body = Item),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn show(State(s): State<WebState>, Path(id): Path<i64>) -> Result<Json<Item>, ApiError> {
    Ok(Json(s.app.item(id).await?.into()))
}

/// Change fields of an unpublished item.
#[utoipa::path(
    patch,
    path = "/items/{id}",
    tag = "items",
    params(("id" = i64, Path, description = "Item id")),
    request_body = ItemChanges,
    responses(
        (status = 200, body = Item),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The item is published", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    State(s): State<WebState>,
    Path(id): Path<i64>,
    ApiJson(changes): ApiJson<ItemChanges>,
) -> Result<Json<Item>, ApiError> {
    let current = s.app.item(id).await?;
    let mut item = current.to_input();
    let mut errors = Vec::new();
    let ItemChanges {
        headline,
        outlet,
        url,
        published,
        author,
        author_role,
        summary,
        quote,
        section,
        lang,
    } = changes;
    if let Some(v) = headline {
        item.headline = v;
    }
    if let Some(v) = outlet {
        item.outlet = v;
    }
    if let Some(v) = url {
        item.url = v;
    }
    if let Some(v) = summary {
        item.summary_markdown = v;
    }
    if let Some(d) = published {
        match parse_date("published", &d) {
            Ok(d) => item.published = d,
            Err(e) => errors.push(e),
        }
    }
    if let Some(l) = lang {
        match parse_lang(&l) {
            Ok(l) => item.lang = l,
            Err(e) => errors.push(e),
        }
    }
    for (target, value) in [
        (&mut item.author, author),
        (&mut item.author_role, author_role),
        (&mut item.quote, quote),
        (&mut item.section, section),
    ] {
        if let Some(v) = value {
            *target = (!v.is_empty()).then_some(v);
        }
    }
    check_item(&item, errors)?;
    s.app.edit_item(id, |stored| *stored = item).await?;
    Ok(Json(s.app.item(id).await?.into()))
}

/// Delete an unpublished item.
#[utoipa::path(
    delete,
    path = "/items/{id}",
    tag = "items",
    params(("id" = i64, Path, description = "Item id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The item is published", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(s): State<WebState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    s.app.remove_item(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Select an item for the next issue.
#[utoipa::path(
    post,
    path = "/items/{id}/ready",
    tag = "items",
    params(("id" = i64, Path, description = "Item id")),
    responses(
        (status = 200, body = Item),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The item is published", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn mark_ready(
    State(s): State<WebState>,
    Path(id): Path<i64>,
) -> Result<Json<Item>, ApiError> {
    s.app.set_item_state(id, ItemState::Ready).await?;
    Ok(Json(s.app.item(id).await?.into()))
}

/// Move an item back to draft.
#[utoipa::path(
    post,
    path = "/items/{id}/draft",
    tag = "items",
    params(("id" = i64, Path, description = "Item id")),
    responses(
        (status = 200, body = Item),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The item is published", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn mark_draft(
    State(s): State<WebState>,
    Path(id): Path<i64>,
) -> Result<Json<Item>, ApiError> {
    s.app.set_item_state(id, ItemState::Draft).await?;
    Ok(Json(s.app.item(id).await?.into()))
}

/// Import a digest file (Markdown with TOML front matter, see
/// emails/README.md): all of it or nothing. The body is the file's text.
#[utoipa::path(
    post,
    path = "/items/import",
    tag = "items",
    params(ImportQuery),
    request_body(content = String, content_type = "text/markdown", description = "The digest file, at most 4 MB of UTF-8"),
    responses(
        (status = 201, body = ImportResult),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The file does not parse; `detail` names the line", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn import(
    State(s): State<WebState>,
    Query(q): Query<ImportQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let nl = s.app.newsletter(q.newsletter.as_deref()).await?;
    let text = text_body(
        req,
        &["text/markdown", "text/plain", "text/x-markdown"],
        MAX_FILE_BYTES as usize,
        "split the file into smaller ones",
    )
    .await?;
    let imported = s.app.import_items_text(&nl, "body", &text, q.ready).await?;
    Ok((
        StatusCode::CREATED,
        Json(ImportResult {
            ids: imported.ids,
            intro_saved: imported.intro_saved,
        }),
    )
        .into_response())
}

//! Items: list, add, edit (Markdown summary with a live preview), ready /
//! back to draft, reorder, delete.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::layout::{self, Section, csrf_field, field};
use super::{AdminFail, optional, page};
use crate::admin::AdminSession;
use crate::digest_file::ItemInput;
use crate::domain::ItemState;
use crate::store::content::ItemRow;
use crate::web::WebState;

type AdminResult = Result<Response, AdminFail>;

/// The live preview renders at most this much (the summary's own limit is lower).
const PREVIEW_LIMIT: usize = 64 * 1024;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/admin/items", get(list).post(create))
        .route("/admin/items/new", get(new_form))
        .route("/admin/items/{id}", get(edit_form).post(update))
        .route("/admin/items/{id}/ready", post(ready))
        .route("/admin/items/{id}/draft", post(draft))
        .route("/admin/items/{id}/up", post(up))
        .route("/admin/items/{id}/down", post(down))
        .route("/admin/items/{id}/delete", post(delete))
        .route("/admin/markdown-preview", post(markdown_preview))
}

async fn list(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
) -> AdminResult {
    let nl = s.app.newsletter(None).await?;
    let items: Vec<ItemRow> = s
        .app
        .list_items(&nl, None)
        .await?
        .into_iter()
        .filter(|i| i.state != ItemState::Published)
        .collect();
    let button = |id: i64, what: &str, label: &str, class: &str| {
        html! {
            form method="post" action={ "/admin/items/" (id) "/" (what) } {
                (csrf_field(&session))
                button type="submit" class=(class) aria-label={ (label) " item " (id) } { (label) }
            }
        }
    };
    Ok(page(layout::page(
        "Items",
        &session,
        Section::Items,
        html! {
            p { a class="button" href="/admin/items/new" { "Add an item" } }
            @if items.is_empty() {
                p class="muted" { "No items waiting. Published items are in their issues." }
            } @else {
                p class="muted" { "Ready items go into the next issue in this order." }
                div class="table-wrap" {
                    table {
                        thead { tr { th scope="col" { "Headline" } th scope="col" { "State" } th scope="col" { "Actions" } } }
                        tbody {
                            @for (i, item) in items.iter().enumerate() {
                                tr data-item=(item.id) {
                                    td { a href={ "/admin/items/" (item.id) } { (item.headline) } br; span class="muted" { (item.outlet) } }
                                    td { span class={ "status status-" (item.state.as_str()) } { (item.state.as_str()) } }
                                    td { div class="actions" {
                                        @if item.state == ItemState::Draft { (button(item.id, "ready", "Mark ready", "")) }
                                        @else { (button(item.id, "draft", "Back to draft", "secondary")) }
                                        @if i > 0 { (button(item.id, "up", "Up", "secondary")) }
                                        @if i + 1 < items.len() { (button(item.id, "down", "Down", "secondary")) }
                                        (button(item.id, "delete", "Delete", "danger"))
                                    } }
                                }
                            }
                        }
                    }
                }
            }
        },
    )))
}

/// What the item form holds, as typed.
#[derive(Deserialize, Default, Clone)]
struct ItemForm {
    #[serde(default)]
    headline: String,
    #[serde(default)]
    outlet: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    author: String,
    #[serde(default)]
    section: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    quote: String,
    #[serde(default)]
    ready: Option<String>,
}

impl ItemForm {
    fn from_row(row: &ItemRow) -> ItemForm {
        ItemForm {
            headline: row.headline.clone(),
            outlet: row.outlet.clone(),
            url: row.url.clone(),
            author: row.author.clone().unwrap_or_default(),
            section: row.section.clone().unwrap_or_default(),
            summary: row.summary.clone(),
            quote: row.quote.clone().unwrap_or_default(),
            ready: (row.state == ItemState::Ready).then(|| "on".into()),
        }
    }

    /// Applies the form to `input` (a new item, or the stored one being
    /// edited, whose other fields stay as they are).
    fn apply(&self, input: &mut ItemInput) {
        input.headline = self.headline.trim().to_owned();
        input.outlet = self.outlet.trim().to_owned();
        input.url = self.url.trim().to_owned();
        input.author = optional(&self.author);
        input.section = optional(&self.section);
        input.summary_markdown = self.summary.replace("\r\n", "\n");
        input.quote = optional(&self.quote);
    }
}

fn item_form(
    session: &AdminSession,
    action: &str,
    f: &ItemForm,
    errors: &[(&'static str, String)],
) -> Markup {
    let err = |name: &str| {
        errors
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, m)| m.as_str())
    };
    let summary_error = err("summary").or(err("summary_markdown"));
    html! {
        @if !errors.is_empty() {
            p class="alert" role="alert" { "Please correct the marked fields." }
        }
        form method="post" action=(action) {
            (csrf_field(session))
            (field("Headline", "headline", "text", &f.headline, err("headline"), true))
            (field("Outlet", "outlet", "text", &f.outlet, err("outlet"), true))
            (field("Link (https://…)", "url", "url", &f.url, err("url"), true))
            (field("Author (optional)", "author", "text", &f.author, err("author"), false))
            (field("Section (optional)", "section", "text", &f.section, err("section"), false))
            label for="summary" { "Summary (Markdown)" }
            textarea id="summary" name="summary" data-markdown-preview="summary-preview"
                aria-invalid=[summary_error.map(|_| "true")]
                aria-describedby=[summary_error.map(|_| "summary-error")] { (f.summary) }
            @if let Some(e) = summary_error { p class="field-error" id="summary-error" { (e) } }
            p class="muted" { "Preview:" }
            div id="summary-preview" class="card" aria-live="polite" {
                (PreEscaped(crate::render::markdown_to_html(&f.summary)))
            }
            label for="quote" { "Quote (optional)" }
            textarea id="quote" name="quote"
                aria-invalid=[err("quote").map(|_| "true")] { (f.quote) }
            @if let Some(e) = err("quote") { p class="field-error" id="quote-error" { (e) } }
            label { input type="checkbox" name="ready" checked[f.ready.is_some()]; " Ready for the next issue" }
            p { button type="submit" { "Save" } " " a class="button secondary" href="/admin/items" { "Cancel" } }
        }
    }
}

async fn new_form(
    State(_s): State<WebState>,
    Extension(session): Extension<AdminSession>,
) -> AdminResult {
    Ok(page(layout::page(
        "Add an item",
        &session,
        Section::Items,
        item_form(&session, "/admin/items", &ItemForm::default(), &[]),
    )))
}

fn invalid(
    session: &AdminSession,
    title: &str,
    action: &str,
    f: &ItemForm,
    errors: &[(&'static str, String)],
) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        page(layout::page(
            title,
            session,
            Section::Items,
            item_form(session, action, f, errors),
        )),
    )
        .into_response()
}

async fn create(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Form(f): Form<ItemForm>,
) -> AdminResult {
    let mut input = ItemInput::default();
    f.apply(&mut input);
    let errors = input.field_errors();
    if !errors.is_empty() {
        return Ok(invalid(
            &session,
            "Add an item",
            "/admin/items",
            &f,
            &errors,
        ));
    }
    let nl = s.app.newsletter(None).await?;
    s.app.add_items(&nl, &[input], f.ready.is_some()).await?;
    Ok(Redirect::to("/admin/items").into_response())
}

async fn edit_form(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Path(id): Path<i64>,
) -> AdminResult {
    let row = s.app.item(id).await?;
    Ok(page(layout::page(
        "Edit the item",
        &session,
        Section::Items,
        item_form(
            &session,
            &format!("/admin/items/{id}"),
            &ItemForm::from_row(&row),
            &[],
        ),
    )))
}

async fn update(
    State(s): State<WebState>,
    Extension(session): Extension<AdminSession>,
    Path(id): Path<i64>,
    Form(f): Form<ItemForm>,
) -> AdminResult {
    let row = s.app.item(id).await?;
    let mut input = row.to_input();
    f.apply(&mut input);
    let errors = input.field_errors();
    if !errors.is_empty() {
        return Ok(invalid(
            &session,
            "Edit the item",
            &format!("/admin/items/{id}"),
            &f,
            &errors,
        ));
    }
    let form = f.clone();
    s.app.edit_item(id, move |i| form.apply(i)).await?;
    let state = if f.ready.is_some() {
        ItemState::Ready
    } else {
        ItemState::Draft
    };
    if state != row.state {
        s.app.set_item_state(id, state).await?;
    }
    Ok(Redirect::to("/admin/items").into_response())
}

async fn ready(State(s): State<WebState>, Path(id): Path<i64>) -> AdminResult {
    s.app.set_item_state(id, ItemState::Ready).await?;
    Ok(Redirect::to("/admin/items").into_response())
}

async fn draft(State(s): State<WebState>, Path(id): Path<i64>) -> AdminResult {
    s.app.set_item_state(id, ItemState::Draft).await?;
    Ok(Redirect::to("/admin/items").into_response())
}

async fn up(State(s): State<WebState>, Path(id): Path<i64>) -> AdminResult {
    let nl = s.app.newsletter(None).await?;
    s.app.move_item(&nl, id, true).await?;
    Ok(Redirect::to("/admin/items").into_response())
}

async fn down(State(s): State<WebState>, Path(id): Path<i64>) -> AdminResult {
    let nl = s.app.newsletter(None).await?;
    s.app.move_item(&nl, id, false).await?;
    Ok(Redirect::to("/admin/items").into_response())
}

async fn delete(State(s): State<WebState>, Path(id): Path<i64>) -> AdminResult {
    s.app.remove_item(id).await?;
    Ok(Redirect::to("/admin/items").into_response())
}

#[derive(Deserialize)]
struct PreviewForm {
    #[serde(default)]
    markdown: String,
}

/// The summary as the email will show it (the renderer's own safe HTML),
/// for the edit form's live preview.
async fn markdown_preview(Form(f): Form<PreviewForm>) -> AdminResult {
    if f.markdown.len() > PREVIEW_LIMIT {
        return Err(AdminFail::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The summary is too long to preview.",
        ));
    }
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        crate::render::markdown_to_html(&f.markdown),
    )
        .into_response())
}

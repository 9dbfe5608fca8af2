//! The admin pages' frame: head, navigation, forms' CSRF field, the login.

use maud::{DOCTYPE, Markup, html};

use crate::admin::AdminSession;

pub const ADMIN_CSS: &str = include_str!("admin.css");
pub const ADMIN_JS: &str = include_str!("admin.js");

/// Which part of the site a page belongs to (marked in the navigation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Dashboard,
    Issues,
    Items,
    Subscribers,
}

fn head(title: &str, extra: Markup) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="robots" content="noindex";
            title { (title) " · Herald admin" }
            link rel="stylesheet" href="/admin/static/admin.css";
            script src="/admin/static/admin.js" defer {}
            (extra)
        }
    }
}

/// A page without navigation: the login, refusals, errors.
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, html! {}))
            body {
                main class="login" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An admin page with the navigation and the logout button.
pub fn page(title: &str, session: &AdminSession, section: Section, body: Markup) -> Markup {
    page_with_head(title, session, section, html! {}, body)
}

/// Like [`page`], with extra elements in `<head>` (the progress view's
/// refresh for browsers without script).
pub fn page_with_head(
    title: &str,
    session: &AdminSession,
    section: Section,
    extra_head: Markup,
    body: Markup,
) -> Markup {
    let current = |s: Section| (s == section).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, extra_head))
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/admin/" { "Herald" }
                    nav aria-label="Admin" {
                        a href="/admin/" aria-current=[current(Section::Dashboard)] { "Dashboard" }
                        " "
                        a href="/admin/issues" aria-current=[current(Section::Issues)] { "Issues" }
                        " "
                        a href="/admin/items" aria-current=[current(Section::Items)] { "Items" }
                        " "
                        a href="/admin/subscribers" aria-current=[current(Section::Subscribers)] { "Subscribers" }
                    }
                    span class="muted" { (session.email) }
                    form method="post" action="/admin/logout" {
                        (csrf_field(session))
                        button type="submit" { "Log out" }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// Every form carries the session's token; the guard checks it on POST.
pub fn csrf_field(session: &AdminSession) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf_token); }
}

/// A text input with its label and, when there is one, its error right
/// below it (tied to the input for screen readers).
pub fn field(
    label: &str,
    name: &str,
    kind: &str,
    value: &str,
    error: Option<&str>,
    required: bool,
) -> Markup {
    let error_id = format!("{name}-error");
    html! {
        label for=(name) { (label) }
        input type=(kind) id=(name) name=(name) value=(value) required[required]
            aria-invalid=[error.map(|_| "true")]
            aria-describedby=[error.map(|_| error_id.as_str())];
        @if let Some(e) = error {
            p class="field-error" id=(error_id) { (e) }
        }
    }
}

pub fn login(next: &str, email: &str, error: Option<&str>) -> Markup {
    bare(
        "Log in",
        html! {
            @if let Some(e) = error {
                p class="alert" role="alert" id="login-error" { (e) }
            }
            form method="post" action="/admin/login" {
                input type="hidden" name="next" value=(next);
                label for="email" { "Email" }
                input type="email" id="email" name="email" value=(email) autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input type="password" id="password" name="password" autocomplete="current-password" required
                    aria-describedby=[error.map(|_| "login-error")];
                p { button type="submit" { "Log in" } }
            }
            p class="muted" { "No password yet? Ask an administrator to run " code { "herald editor passwd YOUR-EMAIL" } "." }
        },
    )
}

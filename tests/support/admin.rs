//! The editors' web page (`/admin`) over real HTTP: an editor with a
//! password, a logged-in session (cookie + CSRF token) and its requests.
#![allow(dead_code)]

use herald::admin::Password;
use herald::domain::EmailAddress;

use super::app::{Page, TestApp};

pub const EDITOR: &str = "editor@herald.test";
pub const PASSWORD: &str = "correct horse battery staple";

/// Creates the editor (if needed) and sets its password through the service.
pub async fn make_editor(t: &TestApp, email: &str, password: &str) {
    let addr = EmailAddress::parse(email).expect("editor address");
    let _ = t.app.add_editor(&addr, None).await;
    t.app
        .set_editor_password(&addr, Password::new(password.to_owned()).expect("password"))
        .await
        .expect("set password");
}

/// A logged-in browser, by hand: the session cookie and the CSRF token.
#[derive(Clone, Debug)]
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// POSTs the login form; the raw answer.
pub async fn post_login(t: &TestApp, email: &str, password: &str) -> Page {
    t.post_form(
        &t.url("/admin/login"),
        &[
            ("email", email),
            ("password", password),
            ("next", "/admin/"),
        ],
    )
    .await
}

/// `Set-Cookie`'s `name=value` part, if the answer set the session cookie.
pub fn session_cookie(page: &Page) -> Option<String> {
    page.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("herald_admin=") && !c.starts_with("herald_admin=;"))
        .map(|c| c.split(';').next().unwrap_or_default().to_owned())
}

/// The CSRF token of the first form on a page.
pub fn csrf_of(body: &str) -> Option<String> {
    let at = body.find(r#"name="csrf" value=""#)?;
    let rest = &body[at + r#"name="csrf" value=""#.len()..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// Logs in as `email` and reads the CSRF token from the dashboard.
pub async fn login(t: &TestApp, email: &str, password: &str) -> Session {
    let answer = post_login(t, email, password).await;
    assert_eq!(answer.status, 303, "login: {}", answer.body);
    let cookie = session_cookie(&answer).expect("session cookie");
    let dashboard = get(t, &cookie, "/admin/").await;
    assert_eq!(dashboard.status, 200, "{}", dashboard.body);
    let csrf = csrf_of(&dashboard.body).expect("a CSRF field on the dashboard");
    Session { cookie, csrf }
}

pub async fn get(t: &TestApp, cookie: &str, path: &str) -> Page {
    Page::from_response(
        t.client
            .get(t.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .expect("GET"),
    )
    .await
}

/// A POST of an urlencoded form with the session's cookie and CSRF token.
pub async fn post(t: &TestApp, s: &Session, path: &str, pairs: &[(&str, &str)]) -> Page {
    let mut form: Vec<(&str, &str)> = vec![("csrf", &s.csrf)];
    form.extend_from_slice(pairs);
    post_raw(t, Some(&s.cookie), path, &form, &[]).await
}

/// A POST with exactly these fields and headers (for the refusals).
pub async fn post_raw(
    t: &TestApp,
    cookie: Option<&str>,
    path: &str,
    pairs: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Page {
    let mut request = t.client.post(t.url(path)).form(pairs);
    if let Some(c) = cookie {
        request = request.header("cookie", c);
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    Page::from_response(request.send().await.expect("POST")).await
}

//! The editors' web page over real HTTP: every auth rule (login, lockout,
//! sessions, CSRF, origin), the security headers, `http.admin_bind`, and
//! the issue pages from compose to a finished send.

mod support;

use std::time::Duration;

use support::admin::{
    EDITOR, PASSWORD, Session, csrf_of, get, login, make_editor, post, post_login, post_raw,
    session_cookie,
};
use support::app::{Backend, Page, TestApp};

fn assert_admin_headers(page: &Page, what: &str) {
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(
        page.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert!(page.header("referrer-policy").is_some(), "{what}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"), "{what}");
}

async fn the_login_sets_a_strict_session_cookie_and_logout_ends_it(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;

    let form = t.get(&t.url("/admin/login")).await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains(r#"type="password""#));
    assert_admin_headers(&form, "login page");

    let answer = post_login(&t, "Editor@Herald.test", PASSWORD).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(answer.header("location"), Some("/admin/"));
    let set_cookie = answer.header("set-cookie").expect("Set-Cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
        assert!(set_cookie.contains(part), "{part} missing: {set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "http base URL: {set_cookie}"
    );
    let cookie = session_cookie(&answer).expect("cookie");
    // Only the hash of the session id is stored.
    let id = cookie.trim_start_matches("herald_admin=");
    assert_eq!(
        t.count(&format!(
            "SELECT COUNT(*) FROM admin_sessions WHERE id_hash = '{id}'"
        ))
        .await,
        0
    );
    assert_eq!(t.count("SELECT COUNT(*) FROM admin_sessions").await, 1);

    let dashboard = get(&t, &cookie, "/admin/").await;
    assert_eq!(dashboard.status, 200);
    assert!(dashboard.body.contains(EDITOR), "{}", dashboard.body);
    assert_admin_headers(&dashboard, "dashboard");
    assert_eq!(dashboard.header("cache-control"), Some("no-store"));

    let csrf = csrf_of(&dashboard.body).expect("csrf");
    let s = Session {
        cookie: cookie.clone(),
        csrf,
    };
    let out = post(&t, &s, "/admin/logout", &[]).await;
    assert_eq!(out.status, 303);
    assert!(
        out.header("set-cookie")
            .unwrap_or_default()
            .contains("Max-Age=0")
    );
    let after = get(&t, &cookie, "/admin/").await;
    assert_eq!(after.status, 303, "the old cookie is dead");
    assert_eq!(t.count("SELECT COUNT(*) FROM admin_sessions").await, 0);
}

async fn the_cookie_is_secure_when_the_base_url_is_https(backend: Backend) {
    let t = TestApp::spawn_with(backend, |c| {
        c.http.base_url = "https://news.herald.test".into();
    })
    .await;
    make_editor(&t, EDITOR, PASSWORD).await;
    let answer = post_login(&t, EDITOR, PASSWORD).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let set_cookie = answer.header("set-cookie").expect("Set-Cookie");
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
}

async fn wrong_passwords_and_unknown_addresses_are_refused_alike_then_locked(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;

    let wrong = post_login(&t, EDITOR, "not the password at all").await;
    let unknown = post_login(&t, "nobody@herald.test", PASSWORD).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert!(session_cookie(&wrong).is_none() && session_cookie(&unknown).is_none());
    let message = "That email and password do not match an editor";
    assert!(wrong.body.contains(message), "{}", wrong.body);
    assert!(unknown.body.contains(message), "{}", unknown.body);
    // What was typed stays in the form; the password does not.
    assert!(wrong.body.contains(EDITOR));
    assert!(!wrong.body.contains("not the password at all"));

    // Five failures in a row lock the account, even for the right password.
    for _ in 0..4 {
        post_login(&t, EDITOR, "still wrong, again").await;
    }
    let locked = post_login(&t, EDITOR, PASSWORD).await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert!(
        locked.body.contains("Too many failed logins"),
        "{}",
        locked.body
    );
    let retry_after: u64 = locked
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=15 * 60).contains(&retry_after), "{retry_after}");
    assert!(session_cookie(&locked).is_none());

    // The lock ends: then the right password works and clears the count.
    t.exec("UPDATE admin_login_failures SET locked_until = 1")
        .await;
    let ok = post_login(&t, EDITOR, PASSWORD).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(
        t.count(
            "SELECT COUNT(*) FROM admin_login_failures WHERE subject = 'email:editor@herald.test'"
        )
        .await,
        0
    );
}

async fn many_failures_from_one_address_lock_that_address(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;
    // Different accounts, one client: the per-address limit (20) applies.
    for i in 0..20 {
        post_login(&t, &format!("guess{i}@herald.test"), "wrong password here").await;
    }
    let locked = post_login(&t, EDITOR, PASSWORD).await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert!(locked.body.contains("from your network"), "{}", locked.body);
}

async fn pages_need_a_session_and_posts_need_the_csrf_token(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;

    for path in ["/admin/", "/admin/issues", "/admin/issues/1/progress.json"] {
        let p = t.get(&t.url(path)).await;
        assert_eq!(p.status, 303, "{path}");
        let to = p.header("location").unwrap_or_default();
        assert!(
            to.starts_with("/admin/login?next=%2Fadmin%2F"),
            "{path}: {to}"
        );
        assert_admin_headers(&p, path);
    }
    let no_session = post_raw(&t, None, "/admin/issues/compose", &[("csrf", "x")], &[]).await;
    assert_eq!(no_session.status, 403);
    assert!(
        no_session.body.contains("not logged in"),
        "{}",
        no_session.body
    );
    assert_admin_headers(&no_session, "403");

    // A forged session cookie is no session.
    let forged = get(
        &t,
        "herald_admin=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/admin/",
    )
    .await;
    assert_eq!(forged.status, 303);

    let s = login(&t, EDITOR, PASSWORD).await;
    for (what, token) in [("missing", None), ("forged", Some("forged-token"))] {
        let mut pairs = vec![];
        if let Some(tok) = token {
            pairs.push(("csrf", tok));
        }
        let p = post_raw(&t, Some(&s.cookie), "/admin/logout", &pairs, &[]).await;
        assert_eq!(p.status, 403, "{what} token");
        assert!(p.body.contains("out of date"), "{}", p.body);
    }
    // Another session's token is not this session's.
    let other = login(&t, EDITOR, PASSWORD).await;
    assert_ne!(other.csrf, s.csrf);
    let crossed = post_raw(
        &t,
        Some(&s.cookie),
        "/admin/logout",
        &[("csrf", &other.csrf)],
        &[],
    )
    .await;
    assert_eq!(crossed.status, 403);
    // The session survived all of that.
    assert_eq!(get(&t, &s.cookie, "/admin/").await.status, 200);
}

async fn posts_from_another_origin_are_refused_even_with_the_token(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;
    let s = login(&t, EDITOR, PASSWORD).await;
    let form = [("csrf", s.csrf.as_str())];
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
    ] {
        let p = post_raw(&t, Some(&s.cookie), "/admin/logout", &form, &headers).await;
        assert_eq!(p.status, 403, "{headers:?}");
        assert!(p.body.contains("another site"), "{}", p.body);
    }
    // The login form too (login CSRF).
    let p = post_raw(
        &t,
        None,
        "/admin/login",
        &[("email", EDITOR), ("password", PASSWORD)],
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(p.status, 403);
    // Our own origin passes.
    let base = t.base_url.clone();
    let ok = post_raw(
        &t,
        Some(&s.cookie),
        "/admin/logout",
        &form,
        &[("origin", &base), ("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
}

async fn idle_and_expired_sessions_end(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;
    let idle = login(&t, EDITOR, PASSWORD).await;
    let old = login(&t, EDITOR, PASSWORD).await;
    let hours = 60 * 60 * 1000;
    t.exec(&format!(
        "UPDATE admin_sessions SET last_seen_at = last_seen_at - {} WHERE id_hash IN (SELECT id_hash FROM admin_sessions ORDER BY created_at, id_hash LIMIT 1)",
        3 * hours
    ))
    .await;
    t.exec(&format!(
        "UPDATE admin_sessions SET expires_at = {}",
        herald::domain::now_ms() - 1
    ))
    .await;
    assert_eq!(get(&t, &idle.cookie, "/admin/").await.status, 303);
    assert_eq!(get(&t, &old.cookie, "/admin/").await.status, 303);
    // A new password also ends every session of the editor.
    let fresh = login(&t, EDITOR, PASSWORD).await;
    make_editor(&t, EDITOR, "another long password").await;
    assert_eq!(get(&t, &fresh.cookie, "/admin/").await.status, 303);
}

async fn the_static_files_and_errors_carry_the_headers(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    for path in ["/admin/static/admin.css", "/admin/static/admin.js"] {
        let p = t.get(&t.url(path)).await;
        assert_eq!(p.status, 200, "{path}");
        assert_admin_headers(&p, path);
    }
    make_editor(&t, EDITOR, PASSWORD).await;
    let s = login(&t, EDITOR, PASSWORD).await;
    let missing = get(&t, &s.cookie, "/admin/issues/999").await;
    assert_eq!(missing.status, 404);
    assert_admin_headers(&missing, "404");
}

async fn admin_bind_moves_the_admin_off_the_public_address(backend: Backend) {
    let spare = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let admin_addr = spare.local_addr().expect("addr");
    drop(spare);
    let t = TestApp::spawn_with(backend, |c| c.http.admin_bind = Some(admin_addr)).await;
    make_editor(&t, EDITOR, PASSWORD).await;
    let public = t.get(&t.url("/admin/login")).await;
    assert_eq!(public.status, 404, "no admin on the public address");
    assert_eq!(t.get(&t.url("/subscribe")).await.status, 200);

    let listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .expect("bind admin");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(herald::web::serve_admin(
        t.app.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let admin = t
        .client
        .get(format!("http://{admin_addr}/admin/login"))
        .send()
        .await
        .expect("GET admin");
    assert_eq!(admin.status(), 200);
    let sub = t
        .client
        .get(format!("http://{admin_addr}/subscribe"))
        .send()
        .await
        .expect("GET");
    assert_eq!(sub.status(), 404, "only /admin on the admin address");
    let _ = stop.send(());
    let _ = server.await;
}

async fn an_issue_goes_from_compose_to_a_finished_send(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;
    let readers: Vec<String> = (0..3).map(|i| format!("reader{i}@example.org")).collect();
    support::engine::add_confirmed(&t.app, &t.db, t.dir.path(), &readers).await;
    let s = login(&t, EDITOR, PASSWORD).await;

    // Nothing ready: the compose form says so.
    let list = get(&t, &s.cookie, "/admin/issues").await;
    assert!(list.body.contains("No items are ready"), "{}", list.body);

    let item = herald::digest_file::ItemInput {
        headline: "Rivers return to the steppe".into(),
        outlet: "Test Outlet".into(),
        url: "https://example.org/rivers".into(),
        published: None,
        author: None,
        author_role: None,
        summary_markdown: "Spring came early.".into(),
        quote: None,
        section: None,
        lang: None,
    };
    t.app
        .add_items(&t.app.newsletter, &[item], true)
        .await
        .expect("add item");

    // A subject with a line break is refused next to its field.
    let bad = post(
        &t,
        &s,
        "/admin/issues/compose",
        &[("subject", "two\nlines")],
    )
    .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains(r#"id="subject-error""#), "{}", bad.body);

    let composed = post(&t, &s, "/admin/issues/compose", &[("subject", "Week one")]).await;
    assert_eq!(composed.status, 303, "{}", composed.body);
    assert_eq!(composed.header("location"), Some("/admin/issues/1"));

    let show = get(&t, &s.cookie, "/admin/issues/1").await;
    assert_eq!(show.status, 200);
    assert!(
        show.body.contains("Rivers return to the steppe"),
        "text part shown"
    );
    assert!(show.body.contains(r#"src="/admin/issues/1/preview.html""#));
    assert!(show.body.contains(r#"sandbox="""#));

    let preview = get(&t, &s.cookie, "/admin/issues/1/preview.html").await;
    assert_eq!(preview.status, 200);
    assert!(preview.body.contains("Rivers return to the steppe"));
    let csp = preview
        .header("content-security-policy")
        .unwrap_or_default();
    assert!(
        csp.contains("sandbox") && csp.contains("frame-ancestors 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("script"), "{csp}");
    assert_eq!(preview.header("x-frame-options"), Some("SAMEORIGIN"));

    // A test copy: one mail, marked, and nobody else's.
    let bad_test = post(&t, &s, "/admin/issues/1/test", &[("to", "not-an-address")]).await;
    assert_eq!(bad_test.status, 422);
    assert!(
        bad_test.body.contains(r#"id="to-error""#),
        "{}",
        bad_test.body
    );
    let test = post(&t, &s, "/admin/issues/1/test", &[("to", "me@herald.test")]).await;
    assert_eq!(test.status, 200, "{}", test.body);
    assert!(test.body.contains("Test copies sent to me@herald.test"));
    let mails = t.smtp.wait_for_messages(1, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0]
            .header("Subject")
            .unwrap_or_default()
            .contains("[TEST]"),
        "{:?}",
        mails[0].header("Subject")
    );

    // The confirmation says how many people will receive it.
    let confirm = get(&t, &s.cookie, "/admin/issues/1/send").await;
    assert_eq!(confirm.status, 200);
    assert!(
        confirm.body.contains(r#"data-recipients="3""#),
        "{}",
        confirm.body
    );
    assert!(confirm.body.contains("3 people"));
    assert_eq!(
        t.count("SELECT COUNT(*) FROM deliveries").await,
        0,
        "GET queues nothing"
    );

    let sent = post(&t, &s, "/admin/issues/1/send", &[]).await;
    assert_eq!(sent.status, 303);
    assert_eq!(sent.header("location"), Some("/admin/issues/1/progress"));
    let progress = get(&t, &s.cookie, "/admin/issues/1/progress").await;
    assert_eq!(progress.status, 200);
    assert!(
        progress.body.contains(r#"http-equiv="refresh""#),
        "works without script"
    );
    assert!(
        progress
            .body
            .contains(r#"data-progress-url="/admin/issues/1/progress.json""#)
    );

    let issue = t
        .app
        .find_issue(&t.app.newsletter, "1")
        .await
        .expect("issue");
    support::engine::run_until_complete(&t.app, &t.db, issue.id, Duration::from_secs(60)).await;
    let json: serde_json::Value = serde_json::from_str(
        &get(&t, &s.cookie, "/admin/issues/1/progress.json")
            .await
            .body,
    )
    .expect("progress JSON");
    assert_eq!(json["total"], 3, "{json}");
    assert_eq!(json["done"], 3, "{json}");
    assert_eq!(json["finished"], true, "{json}");
    assert_eq!(json["fields"]["percent"], "100 %", "{json}");
    assert_eq!(json["fields"]["sent"], "3", "{json}");
    let done = get(&t, &s.cookie, "/admin/issues/1/progress").await;
    assert!(
        !done.body.contains(r#"http-equiv="refresh""#),
        "no refresh once finished"
    );

    let list = get(&t, &s.cookie, "/admin/issues").await;
    assert!(list.body.contains("Week one"), "{}", list.body);
}

async fn pause_resume_cancel_and_schedule_from_the_issue_page(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;
    support::engine::add_confirmed(&t.app, &t.db, t.dir.path(), &["a@example.org".into()]).await;
    let s = login(&t, EDITOR, PASSWORD).await;
    for (n, headline) in [(1, "First"), (2, "Second")] {
        let item = herald::digest_file::ItemInput {
            headline: headline.into(),
            outlet: "Outlet".into(),
            url: format!("https://example.org/{n}"),
            published: None,
            author: None,
            author_role: None,
            summary_markdown: "Text.".into(),
            quote: None,
            section: None,
            lang: None,
        };
        t.app
            .add_items(&t.app.newsletter, &[item], true)
            .await
            .expect("add");
        let p = post(&t, &s, "/admin/issues/compose", &[]).await;
        assert_eq!(p.status, 303, "{}", p.body);
    }
    // Issue 1: send, pause, resume, cancel.
    assert_eq!(post(&t, &s, "/admin/issues/1/send", &[]).await.status, 303);
    assert_eq!(post(&t, &s, "/admin/issues/1/pause", &[]).await.status, 303);
    let status = |n: i64| {
        let t = &t;
        async move {
            t.app
                .find_issue(&t.app.newsletter, &n.to_string())
                .await
                .expect("issue")
                .status
                .to_string()
        }
    };
    assert_eq!(status(1).await, "paused");
    assert_eq!(
        post(&t, &s, "/admin/issues/1/resume", &[]).await.status,
        303
    );
    assert_eq!(status(1).await, "sending");
    assert_eq!(
        post(&t, &s, "/admin/issues/1/cancel", &[]).await.status,
        303
    );
    assert_eq!(status(1).await, "cancelled");
    // A cancelled issue cannot be sent: the page says why.
    let again = post(&t, &s, "/admin/issues/1/send", &[]).await;
    assert_eq!(again.status, 409);
    assert!(again.body.contains("cancelled"), "{}", again.body);

    // Issue 2: a time in the past is refused next to the field; a future one schedules.
    let past = post(
        &t,
        &s,
        "/admin/issues/2/schedule",
        &[("at", "2001-01-01T09:00")],
    )
    .await;
    assert_eq!(past.status, 422, "{}", past.body);
    assert!(past.body.contains(r#"id="at-error""#), "{}", past.body);
    let garbage = post(&t, &s, "/admin/issues/2/schedule", &[("at", "soon")]).await;
    assert_eq!(garbage.status, 422);
    let later = post(
        &t,
        &s,
        "/admin/issues/2/schedule",
        &[("at", "2099-05-08T09:00")],
    )
    .await;
    assert_eq!(later.status, 200, "{}", later.body);
    assert!(
        later.body.contains("will be sent at 2099-05-08"),
        "{}",
        later.body
    );
}

async fn editor_passwd_reads_stdin_and_the_password_logs_in(backend: Backend) {
    use std::io::Write;
    let t = TestApp::spawn(backend).await;
    let addr = herald::domain::EmailAddress::parse(EDITOR).expect("address");
    t.app.add_editor(&addr, None).await.expect("add editor");

    let run = |input: &'static str| {
        let mut child = support::cli::herald_command(&t, &["editor", "passwd", EDITOR])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn herald");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write password");
        child.wait_with_output().expect("herald editor passwd")
    };
    let short = run("short\n");
    assert!(!short.status.success());
    let err = support::cli::text(&short.stderr);
    assert!(err.contains("it has 5 characters"), "{err}");
    assert!(!err.contains("short\n"), "{err}");

    let ok = run("a long enough passphrase\n");
    assert!(ok.status.success(), "{}", support::cli::text(&ok.stderr));
    assert!(support::cli::text(&ok.stdout).contains("/admin/login"));
    let stored = t
        .count("SELECT COUNT(*) FROM editors WHERE password_hash LIKE '$argon2id$%'")
        .await;
    assert_eq!(stored, 1);
    assert_eq!(
        post_login(&t, EDITOR, "a long enough passphrase")
            .await
            .status,
        303
    );

    let stranger = support::cli::herald_command(&t, &["editor", "passwd", "nobody@herald.test"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    assert!(!stranger.status.success());
    assert!(
        support::cli::text(&stranger.stderr).contains("herald editor add"),
        "{}",
        support::cli::text(&stranger.stderr)
    );
}

async fn the_dashboard_shows_states_growth_and_failures(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;
    let readers: Vec<String> = (0..4).map(|i| format!("d{i}@example.org")).collect();
    support::engine::add_confirmed(&t.app, &t.db, t.dir.path(), &readers).await;
    // One of them was confirmed five weeks ago.
    let week = 7 * 24 * 60 * 60 * 1000_i64;
    t.exec(&format!(
        "UPDATE subscriptions SET confirmed_at = confirmed_at - {} WHERE subscriber_id = (SELECT MIN(subscriber_id) FROM subscriptions)",
        5 * week
    ))
    .await;
    let s = login(&t, EDITOR, PASSWORD).await;
    let page = get(&t, &s.cookie, "/admin/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(r#"data-state="confirmed">4<"#),
        "{}",
        page.body
    );
    assert!(page.body.contains("<svg"), "growth chart");
    assert!(
        page.body
            .contains("Confirmed subscribers over the last 12 weeks: from 0 to 4"),
        "{}",
        page.body
    );
    // The early confirmation shows in the weeks before this one.
    assert!(page.body.contains(": 1</title>"), "{}", page.body);
    assert!(page.body.contains("Nothing scheduled") || page.body.contains("Next scheduled slot"));
    assert!(page.body.contains("Permanent failures in the last 30 days"));
}

on_each_backend!(
    the_login_sets_a_strict_session_cookie_and_logout_ends_it,
    the_cookie_is_secure_when_the_base_url_is_https,
    wrong_passwords_and_unknown_addresses_are_refused_alike_then_locked,
    many_failures_from_one_address_lock_that_address,
    pages_need_a_session_and_posts_need_the_csrf_token,
    posts_from_another_origin_are_refused_even_with_the_token,
    idle_and_expired_sessions_end,
    the_static_files_and_errors_carry_the_headers,
    admin_bind_moves_the_admin_off_the_public_address,
    an_issue_goes_from_compose_to_a_finished_send,
    pause_resume_cancel_and_schedule_from_the_issue_page,
    editor_passwd_reads_stdin_and_the_password_logs_in,
    the_dashboard_shows_states_growth_and_failures,
);

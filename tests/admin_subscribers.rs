//! The admin's subscriber pages over real HTTP: search, state filter,
//! keyset paging, detail, add, unsubscribe, erase, CSV import and export.

mod support;

use support::admin::{EDITOR, PASSWORD, Session, get, login, make_editor, post};
use support::app::{Backend, Page, TestApp};

/// Count of `<tr>` rows in the subscribers table body.
fn rows(page: &Page) -> usize {
    page.body.split("<tbody>").nth(1).map_or(0, |b| {
        b.split("</tbody>")
            .next()
            .unwrap_or("")
            .matches("<tr>")
            .count()
    })
}

fn next_link(page: &Page) -> Option<String> {
    let at = page.body.find(r#"rel="next" href=""#)?;
    let rest = &page.body[at + r#"rel="next" href=""#.len()..];
    Some(rest[..rest.find('"')?].replace("&amp;", "&"))
}

async fn upload(t: &TestApp, s: &Session, csv: &str, confirmed: bool) -> Page {
    let boundary = "----adminboundary7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"list.csv\"\r\nContent-Type: text/csv\r\n\r\n{csv}\r\n"
    );
    if confirmed {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"confirmed\"\r\n\r\non\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    Page::from_response(
        t.client
            .post(t.url(&format!("/admin/subscribers/import?csrf={}", s.csrf)))
            .header("cookie", &s.cookie)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("POST import"),
    )
    .await
}

async fn search_filter_and_keyset_paging(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;
    let emails: Vec<String> = (0..120)
        .map(|i| format!("reader{i:03}@example.org"))
        .collect();
    support::engine::add_confirmed(&t.app, &t.db, t.dir.path(), &emails).await;
    let s = login(&t, EDITOR, PASSWORD).await;

    let first = get(&t, &s.cookie, "/admin/subscribers").await;
    assert_eq!(first.status, 200);
    assert_eq!(rows(&first), 50);
    let second = get(&t, &s.cookie, &next_link(&first).expect("next page")).await;
    assert_eq!(rows(&second), 50);
    assert!(!second.body.contains("reader000@"), "keyset: no repeats");
    let third = get(&t, &s.cookie, &next_link(&second).expect("third page")).await;
    assert_eq!(rows(&third), 20);
    assert!(next_link(&third).is_none());

    let found = get(&t, &s.cookie, "/admin/subscribers?q=READER11").await;
    assert_eq!(rows(&found), 10, "reader110..119");
    let none = get(&t, &s.cookie, "/admin/subscribers?q=%25").await;
    assert_eq!(rows(&none), 0, "% is a character, not a wildcard");
    let pending = get(&t, &s.cookie, "/admin/subscribers?state=pending").await;
    assert_eq!(rows(&pending), 0);
    let bad = get(&t, &s.cookie, "/admin/subscribers?state=nonsense").await;
    assert_eq!(bad.status, 422);
}

async fn add_show_unsubscribe_and_erase(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;
    let s = login(&t, EDITOR, PASSWORD).await;

    let bad = post(
        &t,
        &s,
        "/admin/subscribers/new",
        &[("email", "not an address")],
    )
    .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains(r#"id="email-error""#), "{}", bad.body);

    let added = post(
        &t,
        &s,
        "/admin/subscribers/new",
        &[
            ("email", "Ann@Example.org"),
            ("name", "Ann"),
            ("confirmed", "on"),
        ],
    )
    .await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert!(added.body.contains("Confirmed."));
    assert!(
        added.body.contains("admin-change") || added.body.contains("confirm"),
        "{}",
        added.body
    );

    let pending = post(
        &t,
        &s,
        "/admin/subscribers/new",
        &[("email", "bob@example.org")],
    )
    .await;
    assert_eq!(pending.status, 200, "{}", pending.body);
    assert!(
        pending.body.contains("confirmation link was mailed"),
        "{}",
        pending.body
    );
    let mails = t
        .smtp
        .wait_for_messages(1, std::time::Duration::from_secs(10))
        .await;
    assert!(!mails.is_empty());

    let show = get(
        &t,
        &s.cookie,
        "/admin/subscribers/show?email=ann%40example.org",
    )
    .await;
    assert_eq!(show.status, 200);
    assert!(show.body.contains("Consent history"));

    let out = post(
        &t,
        &s,
        "/admin/subscribers/unsubscribe",
        &[("email", "ann@example.org")],
    )
    .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(
        t.subscription_state("ann@example.org")
            .await
            .map(|s| s.to_string()),
        Some("unsubscribed".into())
    );
    // Adding as confirmed again is refused next to the field.
    let again = post(
        &t,
        &s,
        "/admin/subscribers/new",
        &[("email", "ann@example.org"), ("confirmed", "on")],
    )
    .await;
    assert_eq!(again.status, 422, "{}", again.body);
    assert!(again.body.contains(r#"id="email-error""#));

    let gone = post(
        &t,
        &s,
        "/admin/subscribers/erase",
        &[("email", "ann@example.org"), ("sure", "on")],
    )
    .await;
    assert_eq!(gone.status, 303);
    assert!(t.subscriber_id("ann@example.org").await.is_none(), "erased");
    let show = get(
        &t,
        &s.cookie,
        "/admin/subscribers/show?email=ann%40example.org",
    )
    .await;
    assert_eq!(show.status, 404);
}

async fn csv_import_summarises_and_export_streams(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;
    let s = login(&t, EDITOR, PASSWORD).await;

    let form = get(&t, &s.cookie, "/admin/subscribers/import").await;
    assert!(form.body.contains(r#"enctype="multipart/form-data""#));

    let csv = "email,name\none@example.org,One\ntwo@example.org,=HYPERLINK(\"x\")\nnot-an-address,Bad\none@example.org,Again\n";
    let summary = upload(&t, &s, csv, true).await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert!(
        summary.body.contains(r#"data-count="imported">2<"#),
        "{}",
        summary.body
    );
    assert!(
        summary.body.contains(r#"data-count="invalid">1<"#),
        "{}",
        summary.body
    );
    assert!(
        summary.body.contains(r#"data-count="duplicate">1<"#),
        "{}",
        summary.body
    );
    assert!(
        summary.body.contains("not-an-address"),
        "refused rows listed"
    );

    // No CSRF token in the URL: refused like any POST.
    let forged = Page::from_response(
        t.client
            .post(t.url("/admin/subscribers/import"))
            .header("cookie", &s.cookie)
            .header("content-type", "multipart/form-data; boundary=x")
            .body("--x--\r\n")
            .send()
            .await
            .expect("POST"),
    )
    .await;
    assert_eq!(forged.status, 403);

    let empty = upload(&t, &s, "", false).await;
    assert_eq!(empty.status, 422);
    assert!(empty.body.contains(r#"id="file-error""#), "{}", empty.body);

    let export = get(&t, &s.cookie, "/admin/subscribers/export.csv").await;
    assert_eq!(export.status, 200);
    assert!(
        export
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/csv")
    );
    assert!(
        export.body.starts_with("email,name,state"),
        "{}",
        export.body
    );
    assert!(
        export.body.contains("one@example.org,One,confirmed"),
        "{}",
        export.body
    );
    assert!(
        export.body.contains("'=HYPERLINK"),
        "formula neutralised: {}",
        export.body
    );
}

on_each_backend!(
    search_filter_and_keyset_paging,
    add_show_unsubscribe_and_erase,
    csv_import_summarises_and_export_streams,
);

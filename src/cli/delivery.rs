//! `herald send | status | deliveries | pause | resume | cancel | retry`, `herald dkim generate`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::delivery::control::IssueStatusReport;
use crate::delivery::engine::{Engine, EngineOptions, RunUntil};
use crate::domain::{DeliveryState, ms_to_rfc3339};
use crate::mail::dkim::KeyAlgorithm;
use crate::store::content::IssueRow;

pub async fn find(
    app: &App,
    issue: &str,
    newsletter: Option<&str>,
) -> anyhow::Result<(std::sync::Arc<crate::store::Newsletter>, IssueRow)> {
    let nl = app.newsletter(newsletter).await?;
    let issue = app.find_issue(&nl, issue).await?;
    Ok((nl, issue))
}

pub async fn send(
    app: &App,
    issue: &str,
    newsletter: Option<&str>,
    wait: bool,
) -> anyhow::Result<()> {
    let (_, issue) = find(app, issue, newsletter).await?;
    let added = app.send_issue(&issue).await?;
    let counts = app.delivery_counts(&issue).await?;
    println!(
        "issue #{} {}: {added} recipients queued ({} deliveries in all)",
        issue.number, issue.slug, counts.total
    );
    if !wait {
        println!(
            "workers in `herald serve` deliver it; watch with `herald status {}`",
            issue.number
        );
        return Ok(());
    }
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        signal.cancel();
    });
    let engine = Engine::new(app.clone(), EngineOptions::from_app(app)?);
    let progress = tokio::spawn(show_progress(app.clone(), issue.clone(), shutdown.clone()));
    let result = engine
        .run(RunUntil::IssueComplete(issue.id), shutdown.clone())
        .await;
    let interrupted = shutdown.is_cancelled();
    shutdown.cancel();
    let _ = progress.await;
    result?;
    let report = app.issue_status(&issue).await?;
    print_status(&report);
    if report.is_paused() {
        match &report.pause_reason {
            Some(reason) => anyhow::bail!("issue #{} was paused: {reason}", issue.number),
            None => anyhow::bail!(
                "issue #{} was paused; `herald resume {}` goes on",
                issue.number,
                issue.number
            ),
        }
    }
    if interrupted {
        anyhow::bail!(
            "interrupted: unsent deliveries were handed back; run `herald send {} --wait` again to continue",
            issue.number
        );
    }
    if report.failed() > 0 {
        anyhow::bail!(
            "{} deliveries failed permanently (see `herald deliveries {} --state failed`)",
            report.failed(),
            issue.number
        );
    }
    Ok(())
}

/// A progress bar on a terminal; a line every few seconds otherwise.
pub(crate) async fn show_progress(app: App, issue: IssueRow, stop: CancellationToken) {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    let started = Instant::now();
    let mut last_line = Instant::now();
    loop {
        let counting = Instant::now();
        if let Ok(c) = app.delivery_counts(&issue).await {
            let done = c.get(DeliveryState::Sent)
                + c.get(DeliveryState::Failed)
                + c.get(DeliveryState::Skipped)
                + c.get(DeliveryState::Cancelled);
            let rate =
                c.get(DeliveryState::Sent) as f64 / started.elapsed().as_secs_f64().max(0.001);
            let left = c.get(DeliveryState::Queued) + c.get(DeliveryState::Sending);
            let eta = if rate > 0.0 {
                format!("{:.0}s", left as f64 / rate)
            } else {
                "-".into()
            };
            let msg = format!(
                "sent {} · failed {} · retrying {} · skipped {} · {:.0}/s · eta {eta}",
                c.get(DeliveryState::Sent),
                c.get(DeliveryState::Failed),
                c.get(DeliveryState::RetryWait),
                c.get(DeliveryState::Skipped),
                rate
            );
            bar.set_length(c.total as u64);
            bar.set_position(done as u64);
            bar.set_message(msg.clone());
            if !tty && last_line.elapsed() >= Duration::from_secs(5) {
                eprintln!("{msg}");
                last_line = Instant::now();
            }
        }
        // Counting reads every delivery of the issue (40 ms of a core at 200,000 and growing
        // with the issue); every 250 ms it made a large send cost more per message than a
        // small one. So the bar is refreshed at most a twentieth of the time, and without a
        // terminal only when a line is due.
        let wait = if tty {
            (counting.elapsed() * 20).max(Duration::from_millis(250))
        } else {
            Duration::from_secs(5)
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    bar.finish_and_clear();
}

pub fn print_status(r: &IssueStatusReport) {
    println!("issue #{} {} — {}", r.number, r.slug, r.summary);
    if let Some(reason) = &r.pause_reason {
        println!("  why paused  {reason}");
    }
    println!("  total {}", r.counts.total);
    for state in DeliveryState::ALL {
        let n = r.counts.get(*state);
        if n > 0 {
            println!("  {:<11} {n}", state.as_str());
        }
    }
    if r.bounced_after_delivery > 0 || r.complaints > 0 {
        println!(
            "  after delivery  {} bounced, {} complaints ({:.2} % of delivered)",
            r.bounced_after_delivery,
            r.complaints,
            r.complaint_rate * 100.0
        );
    }
    if r.rate_per_sec > 0.0 {
        println!(
            "  rate        {:.1} messages/s (last minute)",
            r.rate_per_sec
        );
    }
    if let Some(at) = r.next_retry_at {
        println!("  next retry  {}", ms_to_rfc3339(at));
    }
    if !r.top_replies.is_empty() {
        println!("  most common replies:");
        for (state, reply, n) in &r.top_replies {
            println!("    {n:>6}  {:<10} {reply}", state.as_str());
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum DkimCommand {
    /// Write a new key pair (RSA-2048 or Ed25519) and print the DNS record to publish.
    Generate {
        /// Where to write the private key (PKCS#8 PEM).
        #[arg(long, default_value = "dkim.pem")]
        out: PathBuf,
        #[arg(long)]
        domain: String,
        /// Default: `herald` (RSA), `herald-ed25519` (Ed25519).
        #[arg(long)]
        selector: Option<String>,
        /// `rsa` (what every receiver verifies) or `ed25519` (RFC 8463: a second signature
        /// besides the RSA one, under its own selector).
        #[arg(long, value_enum, default_value_t = DkimAlgorithm::Rsa)]
        algorithm: DkimAlgorithm,
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DkimAlgorithm {
    Rsa,
    Ed25519,
}

pub fn dkim(cmd: DkimCommand) -> anyhow::Result<()> {
    let DkimCommand::Generate {
        out,
        domain,
        selector,
        algorithm,
        force,
    } = cmd;
    let (algorithm, default_selector) = match algorithm {
        DkimAlgorithm::Rsa => (KeyAlgorithm::Rsa, "herald"),
        DkimAlgorithm::Ed25519 => (KeyAlgorithm::Ed25519, "herald-ed25519"),
    };
    let selector = selector.unwrap_or_else(|| default_selector.to_owned());
    if out.exists() && !force {
        anyhow::bail!(
            "{} exists; pass --force to replace it (mail signed with the old key stops verifying once its DNS record is gone)",
            out.display()
        );
    }
    let (private_pem, public_b64) = crate::mail::dkim::generate_key(algorithm)?;
    super::write_private_file(&out, private_pem.as_bytes(), force)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {} (keep it secret)", out.display());
    println!("publish this DNS TXT record:\n");
    println!(
        "{}\n",
        crate::mail::dkim::dns_txt_record_for(algorithm, &selector, &domain, &public_b64)
    );
    match algorithm {
        KeyAlgorithm::Rsa => println!(
            "then set in herald.toml:\n[dkim]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nprivate_key_file = \"{}\"",
            out.display()
        ),
        KeyAlgorithm::Ed25519 => println!(
            "then set in herald.toml, besides domain, selector and private_key_file of the RSA key:\n[dkim]\ned25519_selector = \"{selector}\"\ned25519_private_key_file = \"{}\"",
            out.display()
        ),
    }
    Ok(())
}

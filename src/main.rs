use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let filter =
        EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // lettre logs every line it writes at debug level: `AUTH PLAIN <base64 password>` and
    // whole messages. Whatever HERALD_LOG says, it gets no further than info; Herald logs
    // the SMTP outcomes it cares about itself.
    let lettre_cap = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("lettre", LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(filter)
        .with(lettre_cap)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour codes are noise in a log file or a pipe.
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    let cli = herald::cli::Cli::parse();
    match herald::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`herald subscribers list | head -1`): stop
        // quietly with the status a shell gives a process ended by SIGPIPE.
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::from(141),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<csv::Error>()
                .is_some_and(|c| matches!(c.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe))
    })
}

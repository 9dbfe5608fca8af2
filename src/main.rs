use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let filter =
        EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes are noise in a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
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

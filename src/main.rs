use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = herald::cli::Cli::parse();
    // Logging first, from `[log]` alone. A broken file gets the defaults
    // here; the full load in `cli::run` then reports what is wrong.
    let mut log = herald::config::Config::load_log(cli.config.as_deref()).unwrap_or_default();
    if matches!(cli.command, herald::cli::Command::Demo { .. }) {
        // The demo shows a progress bar over 1,000 sends; a line per
        // attempt would bury it (HERALD_LOG still overrides this).
        log.level.add_directive("herald::delivery::engine=warn");
    }
    let telemetry = match herald::telemetry::init(&log) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = herald::cli::run(cli).await;
    telemetry.shutdown().await;
    match result {
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

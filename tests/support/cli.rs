//! The real `herald` binary, pointed at a `TestApp`'s database and SMTP server.
#![allow(dead_code)]

use std::process::{Command, Output};

use super::app::TestApp;

/// The environment that points the real binary at a `TestApp`'s database,
/// SMTP server, secret and From address.
pub fn herald_env(t: &TestApp) -> Vec<(&'static str, String)> {
    vec![
        ("HERALD_DATABASE_URL", t.database_url.clone()),
        ("HERALD_SMTP_URL", t.smtp.url()),
        (
            "HERALD_SECURITY_SECRET",
            t.app.config.security.secret.expose_text(),
        ),
        (
            "HERALD_NEWSLETTER_FROM",
            t.app.config.newsletter.from.to_string(),
        ),
        ("HERALD_LOG", "warn".to_owned()),
    ]
}

/// A `herald` command with `args`, run in the test's directory against its database.
pub fn herald_command(t: &TestApp, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args)
        .current_dir(t.dir.path())
        .env_remove("HERALD_CONFIG")
        .envs(herald_env(t));
    cmd
}

/// The same as `herald_command`, for tests that run it beside async work.
pub fn herald_async(t: &TestApp, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args)
        .current_dir(t.dir.path())
        .env_remove("HERALD_CONFIG")
        .envs(herald_env(t))
        .kill_on_drop(true);
    cmd
}

/// Runs `herald args…` to completion.
pub fn herald(t: &TestApp, args: &[&str]) -> Output {
    herald_command(t, args).output().expect("run herald")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

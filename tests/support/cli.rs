//! The real `herald` binary, pointed at a `TestApp`'s database and SMTP server.
#![allow(dead_code)]

use std::process::{Command, Output};

use super::app::TestApp;

/// A `herald` command with `args`, run in the test's directory against its database.
pub fn herald_command(t: &TestApp, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args)
        .current_dir(t.dir.path())
        .env_remove("HERALD_CONFIG")
        .env("HERALD_DATABASE_URL", &t.database_url)
        .env("HERALD_SMTP_URL", t.smtp.url())
        .env(
            "HERALD_SECURITY_SECRET",
            t.app.config.security.secret.expose_text(),
        )
        .env(
            "HERALD_NEWSLETTER_FROM",
            t.app.config.newsletter.from.to_string(),
        )
        .env("HERALD_LOG", "warn");
    cmd
}

/// Runs `herald args…` to completion.
pub fn herald(t: &TestApp, args: &[&str]) -> Output {
    herald_command(t, args).output().expect("run herald")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

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

/// `herald serve` as a child process on a free loopback port, its output piped.
pub struct Served {
    /// `http://127.0.0.1:PORT`, also its `http.base_url`.
    pub base: String,
    child: tokio::process::Child,
}

/// Starts `herald serve` for `t` on a free loopback port (`HERALD_HTTP_BIND`
/// and `HERALD_HTTP_BASE_URL` set here), with `env` on top of `herald_env`.
pub fn spawn_serve(t: &TestApp, env: &[(&str, &str)]) -> Served {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
        probe.local_addr().expect("probe addr").port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let child = herald_async(t, &["serve"])
        .env("HERALD_HTTP_BIND", format!("127.0.0.1:{port}"))
        .env("HERALD_HTTP_BASE_URL", &base)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("herald serve");
    Served { base, child }
}

impl Served {
    /// Waits (at most 60 s) until `/healthz` answers 200.
    pub async fn wait_healthy(&self, client: &reqwest::Client) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "herald serve did not come up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then (within 60 s) how it exited and what it wrote to stdout and stderr.
    pub async fn stop(self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("pid").to_string();
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await;
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            self.child.wait_with_output(),
        )
        .await
        .expect("herald serve stops on SIGTERM")
        .expect("output");
        (
            out.status,
            format!("{}{}", text(&out.stdout), text(&out.stderr)),
        )
    }
}

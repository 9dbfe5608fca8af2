//! `herald editor …`: who may use the HTTP API.

use anyhow::Context;
use clap::Subcommand;

use crate::admin::Password;
use crate::app::App;
use crate::domain::ms_to_rfc3339;
use crate::editors::IssuedToken;
use crate::subscribers::{clean_name, parse_email};

#[derive(Subcommand, Debug)]
pub enum EditorCommand {
    /// Create an editor and print a new API token (shown once).
    Add {
        email: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Issue another API token for an editor (shown once; older ones stay valid).
    Token { email: String },
    /// List editors and their tokens (ids and dates, never the tokens).
    List,
    /// Revoke a token by its id (see `herald editor list`).
    Revoke { token_id: i64 },
    /// Set the password of an editor's /admin login (asked twice without
    /// echo on a terminal; read from the first line of stdin otherwise).
    /// Ends the editor's open admin sessions.
    Passwd { email: String },
}

pub async fn run(app: &App, cmd: EditorCommand) -> anyhow::Result<()> {
    match cmd {
        EditorCommand::Add { email, name } => {
            let email = parse_email(&email)?;
            let name = clean_name(name.as_deref())?;
            let issued = app.add_editor(&email, name).await?;
            print_issued(&issued)
        }
        EditorCommand::Token { email } => {
            let email = parse_email(&email)?;
            let issued = app.new_editor_token(&email).await?;
            print_issued(&issued)
        }
        EditorCommand::List => {
            let (editors, tokens) = app.editors().await?;
            if editors.is_empty() {
                outln!("no editors yet: add one with `herald editor add EMAIL`")?;
            }
            for e in &editors {
                outln!("{:<40} {}", e.email, e.name.as_deref().unwrap_or(""))?;
                for t in tokens.iter().filter(|t| t.editor_id == e.id) {
                    let state = match t.revoked_at {
                        Some(at) => format!("revoked {}", ms_to_rfc3339(at)),
                        None => match t.last_used_at {
                            Some(at) => format!("live, last used {}", ms_to_rfc3339(at)),
                            None => "live, never used".to_owned(),
                        },
                    };
                    outln!(
                        "    token {:<6} issued {}  {state}",
                        t.id,
                        ms_to_rfc3339(t.created_at)
                    )?;
                }
            }
            Ok(())
        }
        EditorCommand::Passwd { email } => {
            let email = parse_email(&email)?;
            // Before asking for a password that could not be kept.
            let (editors, _) = app.editors().await?;
            if !editors
                .iter()
                .any(|e| parse_email(&e.email).is_ok_and(|a| a.canonical() == email.canonical()))
            {
                return Err(crate::admin::AdminError::NotAnEditor(email.to_string()).into());
            }
            let password = tokio::task::spawn_blocking(read_new_password)
                .await
                .context("reading the password")??;
            app.set_editor_password(&email, password).await?;
            let at = match app.config.http.admin_bind {
                Some(addr) => format!("http://{addr}/admin/login (http.admin_bind)"),
                None => format!("{}/admin/login", app.links.base()),
            };
            println!("password set for {email}; log in at {at}");
            Ok(())
        }
        EditorCommand::Revoke { token_id } => {
            app.revoke_editor_token(token_id).await?;
            println!("token {token_id} revoked: requests with it are refused from now on");
            Ok(())
        }
    }
}

/// Blocking: the terminal (twice, no echo) or one line of stdin.
fn read_new_password() -> anyhow::Result<Password> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ")?;
        let password = Password::new(first)?;
        let again = rpassword::prompt_password("Again: ")?;
        if !password.same_as(&again) {
            anyhow::bail!("the two passwords differ; nothing was changed, run the command again");
        }
        Ok(password)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        Ok(Password::new(line.to_owned())?)
    }
}

fn print_issued(issued: &IssuedToken) -> anyhow::Result<()> {
    eprintln!(
        "token {} for {}; it is shown only now, store it safely (only its hash is kept):",
        issued.token_id, issued.editor.email
    );
    // Alone on stdout, so `TOKEN=$(herald editor token …)` works.
    outln!("{}", issued.token.expose())?;
    Ok(())
}

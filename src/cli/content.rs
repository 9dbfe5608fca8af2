//! `herald items …` and `herald issue …`

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::app::App;
use crate::content::{ComposeOptions, read_text_file};
use crate::digest_file::ItemInput;
use crate::domain::{ItemState, LanguageTag};
use crate::render::clip_warning;

#[derive(Subcommand, Debug)]
pub enum ItemsCommand {
    /// Add an item to the week's collection.
    Add {
        #[command(flatten)]
        fields: ItemFields,
        #[arg(long)]
        newsletter: Option<String>,
        /// Select it for the next issue right away.
        #[arg(long)]
        ready: bool,
    },
    /// List items (default: those not yet published).
    List {
        #[arg(long)]
        state: Option<ItemState>,
        #[arg(long)]
        newsletter: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change fields of an unpublished item.
    Edit {
        id: i64,
        #[command(flatten)]
        fields: ItemFields,
    },
    /// Select items for the next issue.
    Ready { ids: Vec<i64> },
    /// Move items back to draft.
    Unready { ids: Vec<i64> },
    /// Delete an unpublished item.
    Remove { id: i64 },
    /// Import items (and an issue intro) from a Markdown file with TOML front matter (see emails/README.md).
    Import {
        file: PathBuf,
        #[arg(long)]
        newsletter: Option<String>,
        /// Select the imported items for the next issue.
        #[arg(long)]
        ready: bool,
    },
}

#[derive(Args, Debug, Default)]
pub struct ItemFields {
    #[arg(long)]
    headline: Option<String>,
    #[arg(long)]
    outlet: Option<String>,
    #[arg(long)]
    url: Option<String>,
    #[arg(long)]
    author: Option<String>,
    #[arg(long)]
    author_role: Option<String>,
    /// Publication date, YYYY-MM-DD.
    #[arg(long)]
    date: Option<chrono::NaiveDate>,
    /// Markdown summary from a file.
    #[arg(long, conflicts_with = "summary")]
    summary_file: Option<PathBuf>,
    /// Markdown summary.
    #[arg(long)]
    summary: Option<String>,
    #[arg(long)]
    quote: Option<String>,
    #[arg(long)]
    section: Option<String>,
    /// BCP 47 language tag of the item (kk, ru, ar…); "" = the newsletter's.
    #[arg(long, value_parser = parse_lang)]
    lang: Option<LangArg>,
}

/// `--lang`: a tag, or `""` to clear it (the newsletter's language).
#[derive(Debug, Clone)]
struct LangArg(Option<LanguageTag>);

fn parse_lang(value: &str) -> Result<LangArg, String> {
    if value.trim().is_empty() {
        return Ok(LangArg(None));
    }
    LanguageTag::parse(value)
        .map(|l| LangArg(Some(l)))
        .map_err(|e| e.to_string())
}

impl ItemFields {
    /// Reads `--summary-file` (bounded, off the runtime) into `--summary`.
    async fn load(mut self) -> anyhow::Result<ItemFields> {
        if let Some(path) = self.summary_file.take() {
            self.summary = Some(
                read_text_file(&path)
                    .await
                    .with_context(|| format!("--summary-file {}", path.display()))?,
            );
        }
        Ok(self)
    }

    fn apply(self, item: &mut ItemInput) {
        let summary = self.summary;
        let set = |target: &mut String, v: Option<String>| {
            if let Some(v) = v {
                *target = v;
            }
        };
        set(&mut item.headline, self.headline);
        set(&mut item.outlet, self.outlet);
        set(&mut item.url, self.url);
        set(&mut item.summary_markdown, summary);
        let opt = |target: &mut Option<String>, v: Option<String>| {
            if let Some(v) = v {
                *target = (!v.is_empty()).then_some(v);
            }
        };
        opt(&mut item.author, self.author);
        opt(&mut item.author_role, self.author_role);
        opt(&mut item.quote, self.quote);
        opt(&mut item.section, self.section);
        if let Some(d) = self.date {
            item.published = Some(d);
        }
        if let Some(LangArg(l)) = self.lang {
            item.lang = l;
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum IssueCommand {
    /// Freeze all ready items into the next issue.
    Compose {
        #[arg(long)]
        newsletter: Option<String>,
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        preheader: Option<String>,
        /// Markdown intro paragraph(s).
        #[arg(long)]
        intro_file: Option<PathBuf>,
    },
    /// Write exactly what a subscriber would receive (placeholder recipient).
    Preview {
        issue: String,
        #[arg(long)]
        html: Option<PathBuf>,
        #[arg(long)]
        text: Option<PathBuf>,
        #[arg(long)]
        eml: Option<PathBuf>,
        /// Open the HTML in the default browser.
        #[arg(long)]
        open: bool,
        #[arg(long)]
        newsletter: Option<String>,
    },
    /// List issues.
    List {
        #[arg(long)]
        newsletter: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Send a "[TEST]" copy without touching the list or the issue's state.
    Test {
        issue: String,
        #[arg(long, required = true, num_args = 1..)]
        to: Vec<String>,
        #[arg(long)]
        newsletter: Option<String>,
    },
    /// Show one issue.
    Show {
        issue: String,
        #[arg(long)]
        newsletter: Option<String>,
    },
}

pub async fn items(app: &App, cmd: ItemsCommand) -> anyhow::Result<()> {
    match cmd {
        ItemsCommand::Add {
            fields,
            newsletter,
            ready,
        } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let mut item = ItemInput::default();
            fields.load().await?.apply(&mut item);
            let ids = app.add_items(&nl, &[item], ready).await?;
            println!(
                "added item {} ({})",
                ids[0],
                if ready { "ready" } else { "draft" }
            );
        }
        ItemsCommand::List {
            state,
            newsletter,
            json,
        } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let mut rows = app.list_items(&nl, state).await?;
            if state.is_none() {
                rows.retain(|r| r.state != ItemState::Published);
            }
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                for r in &rows {
                    outln!(
                        "{:>5}  {:<9}  {}  — {}",
                        r.id,
                        r.state,
                        r.headline,
                        r.outlet
                    )?;
                }
                eprintln!("{} items", rows.len());
            }
        }
        ItemsCommand::Edit { id, fields } => {
            let fields = fields.load().await?;
            app.edit_item(id, |item| fields.apply(item)).await?;
            println!("item {id} updated");
        }
        ItemsCommand::Ready { ids } => {
            for id in ids {
                app.set_item_state(id, ItemState::Ready).await?;
                println!("item {id} is ready for the next issue");
            }
        }
        ItemsCommand::Unready { ids } => {
            for id in ids {
                app.set_item_state(id, ItemState::Draft).await?;
                println!("item {id} is a draft again");
            }
        }
        ItemsCommand::Remove { id } => {
            app.remove_item(id).await?;
            println!("item {id} removed");
        }
        ItemsCommand::Import {
            file,
            newsletter,
            ready,
        } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let done = app.import_items_file(&nl, &file, ready).await?;
            println!(
                "imported {} items from {} ({})",
                done.ids.len(),
                file.display(),
                if ready {
                    "ready"
                } else {
                    "draft; select them with `herald items ready ID…`"
                }
            );
            if done.intro_saved {
                println!("the file's title/intro will be used by the next `herald issue compose`");
            }
        }
    }
    Ok(())
}

pub async fn issue(app: &App, cmd: IssueCommand) -> anyhow::Result<()> {
    match cmd {
        IssueCommand::Compose {
            newsletter,
            subject,
            title,
            preheader,
            intro_file,
        } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let intro = match intro_file {
                Some(p) => Some(
                    read_text_file(&p)
                        .await
                        .with_context(|| format!("--intro-file {}", p.display()))?,
                ),
                None => None,
            };
            let issue = app
                .compose_issue(
                    &nl,
                    ComposeOptions {
                        title,
                        subject,
                        preheader,
                        intro,
                    },
                )
                .await?;
            println!(
                "composed issue #{} {} — {:?}",
                issue.number, issue.slug, issue.subject
            );
            println!(
                "preview: herald issue preview {} --html preview.html",
                issue.number
            );
            if let Some(warning) = clip_warning(issue.html.len()) {
                eprintln!("warning: {warning}");
            }
        }
        IssueCommand::Preview {
            issue,
            html,
            text,
            eml,
            open,
            newsletter,
        } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let issue = app.find_issue(&nl, &issue).await?;
            let eml_bytes = app.sample_message(&nl, &issue, "subscriber@example.com", false)?;
            let rendered = App::rendered(&issue);
            if let Some(warning) = clip_warning(issue.html.len()) {
                eprintln!("warning: {warning}");
            }
            let unsubscribe = app.links.unsubscribe("preview");
            let html_path = html.or_else(|| {
                open.then(|| std::env::temp_dir().join(format!("herald-{}.html", issue.slug)))
            });
            if html_path.is_none() && text.is_none() && eml.is_none() {
                use std::io::Write as _;
                write!(
                    std::io::stdout().lock(),
                    "{}",
                    rendered.personal_text(None, &unsubscribe)
                )?;
            }
            if let Some(p) = &html_path {
                std::fs::write(p, rendered.personal_html(None, &unsubscribe))
                    .with_context(|| format!("cannot write {}", p.display()))?;
                println!("HTML: {}", p.display());
            }
            if let Some(p) = &text {
                std::fs::write(p, rendered.personal_text(None, &unsubscribe))
                    .with_context(|| format!("cannot write {}", p.display()))?;
                println!("text: {}", p.display());
            }
            if let Some(p) = &eml {
                std::fs::write(p, &eml_bytes)
                    .with_context(|| format!("cannot write {}", p.display()))?;
                println!("message: {} ({} bytes)", p.display(), eml_bytes.len());
            }
            if open && let Some(p) = &html_path {
                let _ = std::process::Command::new("xdg-open").arg(p).status();
            }
        }
        IssueCommand::List { newsletter, json } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let issues = app.list_issues(&nl).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&issues)?)?;
            } else {
                for i in &issues {
                    outln!(
                        "#{:<4} {:<32} {:<10} {}",
                        i.number,
                        i.slug,
                        i.status,
                        i.subject
                    )?;
                }
            }
        }
        IssueCommand::Test {
            issue,
            to,
            newsletter,
        } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let issue = app.find_issue(&nl, &issue).await?;
            let to = to
                .iter()
                .map(|t| crate::subscribers::parse_email(t))
                .collect::<Result<Vec<_>, _>>()?;
            app.send_test_copies(&nl, &issue, &to).await?;
            println!(
                "sent {} test copies of issue #{} via {}",
                to.len(),
                issue.number,
                app.mailer.describe()
            );
        }
        IssueCommand::Show { issue, newsletter } => {
            let nl = app.newsletter(newsletter.as_deref()).await?;
            let issue = app.find_issue(&nl, &issue).await?;
            outln!("issue:     #{} {}", issue.number, issue.slug)?;
            outln!("title:     {}", issue.title)?;
            outln!("subject:   {}", issue.subject)?;
            outln!("preheader: {}", issue.preheader)?;
            outln!("status:    {}", issue.status)?;
            outln!("web:       {}", app.links.archive_issue(&issue.slug))?;
            outln!(
                "html:      {} bytes, text: {} bytes",
                issue.html.len(),
                issue.text_body.len()
            )?;
            for item in app.items_of_issue(&issue).await? {
                outln!("  - {} — {}", item.headline, item.outlet)?;
            }
        }
    }
    Ok(())
}

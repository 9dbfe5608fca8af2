//! A digest file as a subscriber gets it: imported, composed, sent by the
//! delivery engine over SMTP to the test server, caught there; plus the web
//! version fetched from the archive over HTTP. The checks of the email's shape
//! (`tests/email_browser.rs`, `tests/email_spam.rs`) look at these bytes, not
//! at a rendering they made themselves, so nothing on the way (templates,
//! inlining, personalisation, quoted-printable, headers) escapes them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use herald::content::ComposeOptions;

use super::app::{Backend, TestApp};

/// The two digests the email must hold its shape with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailFixture {
    /// `emails/samples/week-2024-18.md`: the everyday issue.
    Sample,
    /// `tests/fixtures/stress-digest.md`: 15 items, long URLs and words, Kazakh and Arabic items.
    Stress,
    /// The sample with `render.read_more = "button"`: the layout with a button per item.
    SampleButtons,
}

impl EmailFixture {
    pub const ALL: [EmailFixture; 3] = [
        EmailFixture::Sample,
        EmailFixture::Stress,
        EmailFixture::SampleButtons,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EmailFixture::Sample => "sample",
            EmailFixture::Stress => "stress",
            EmailFixture::SampleButtons => "sample-buttons",
        }
    }

    pub fn path(self) -> PathBuf {
        let rel = match self {
            EmailFixture::Sample | EmailFixture::SampleButtons => "emails/samples/week-2024-18.md",
            EmailFixture::Stress => "tests/fixtures/stress-digest.md",
        };
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }
}

/// What one subscriber received, and the archive page of the same issue.
#[derive(Debug, Clone)]
pub struct DeliveredEmail {
    pub fixture: EmailFixture,
    /// The message exactly as the SMTP server received it.
    pub raw: Vec<u8>,
    /// The decoded `text/html` part.
    pub html: String,
    /// The decoded `text/plain` part.
    pub text: String,
    /// The archive page (`GET /archive/{slug}`), as a browser gets it.
    pub web_html: String,
}

/// Public-looking settings, so the message is what a real newsletter sends
/// (a content filter judges links to `http://127.0.0.1:…` differently).
const BASE_URL: &str = "https://news.example.com";
const RECIPIENT: &str = "ada@example.net";

/// Imports `fixture`, composes it, sends it to one confirmed subscriber and
/// returns what arrived. SQLite only: what is checked here is the rendering,
/// which no backend touches (both store the same frozen strings).
pub async fn deliver(fixture: EmailFixture) -> DeliveredEmail {
    let t = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.http.base_url = BASE_URL.into();
        c.newsletter.name = "Kazakhstan Press Digest".into();
        c.newsletter.from =
            herald::domain::Mailbox::parse("Kazakhstan Press Digest <digest@news.example.com>")
                .expect("From");
        c.newsletter.postal_address =
            "Herald Media, 12 Example Street, Springfield 12345, USA".into();
        if fixture == EmailFixture::SampleButtons {
            c.render.read_more = herald::render::ReadMore::Button;
        }
    })
    .await;
    let nl = t.app.newsletter.clone();
    t.app
        .import_items_file(&nl, &fixture.path(), true)
        .await
        .unwrap_or_else(|e| panic!("import {}: {e}", fixture.path().display()));
    let issue = t
        .app
        .compose_issue(&nl, ComposeOptions::default())
        .await
        .expect("compose");
    t.add_confirmed(RECIPIENT).await;
    t.app.send_issue(&issue).await.expect("send_issue");
    super::engine::run_until_complete(&t.app, &t.db, issue.id, Duration::from_secs(60)).await;
    let mut received = t.smtp.messages_to(RECIPIENT);
    assert_eq!(received.len(), 1, "one message for {RECIPIENT}");
    let raw = received.remove(0).data;

    // The archive answers on the server's real address; the links inside
    // point at BASE_URL like every other public URL.
    let page = t
        .client
        .get(t.url(&format!("/archive/{}", issue.slug)))
        .send()
        .await
        .expect("GET archive page");
    assert!(
        page.status().is_success(),
        "archive page: {}",
        page.status()
    );
    let web_html = page.text().await.expect("archive page body");

    let html = mime_part(&raw, "text/html");
    let text = mime_part(&raw, "text/plain");
    DeliveredEmail {
        fixture,
        raw,
        html,
        text,
        web_html,
    }
}

/// The decoded body of the first part of type `content_type` in a
/// `multipart/alternative` message (quoted-printable or 7bit/8bit).
pub fn mime_part(raw: &[u8], content_type: &str) -> String {
    let s = String::from_utf8_lossy(raw);
    let (head, body) = s.split_once("\r\n\r\n").expect("header/body separator");
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let ct = unfolded
        .split("\r\n")
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .expect("Content-Type header");
    let boundary = ct
        .split("boundary=")
        .nth(1)
        .expect("multipart boundary")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned();
    let delim = format!("--{boundary}");
    for part in body.split(delim.as_str()) {
        let Some((phead, pbody)) = part.trim_start_matches("\r\n").split_once("\r\n\r\n") else {
            continue;
        };
        let phead = phead.to_ascii_lowercase();
        if !phead.contains(&format!("content-type: {content_type}")) {
            continue;
        }
        let pbody = pbody.strip_suffix("\r\n").unwrap_or(pbody);
        let bytes = if phead.contains("quoted-printable") {
            qp_decode(pbody.as_bytes())
        } else {
            pbody.as_bytes().to_vec()
        };
        return String::from_utf8(bytes).expect("part is UTF-8");
    }
    panic!("no {content_type} part in the message");
}

fn qp_decode(b: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                i += 3;
                continue;
            }
            if let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Whether an external tool the email checks need is installed. Missing: under
/// CI (`CI` set) the check fails with the install command, so it can never pass
/// by not running; elsewhere it prints "skipped (…)" and the caller returns.
pub fn require_tools(tools: &[&str], install: &str) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = tools.iter().map(|t| which(t)).collect();
    if found.iter().all(Option::is_some) {
        return Some(found.into_iter().flatten().collect());
    }
    let missing: Vec<&str> = tools
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(t, _)| *t)
        .collect();
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!(
            "{} not found on PATH; install it: apt-get install -y {install}",
            missing.join(", ")
        );
    }
    eprintln!("skipped (install {install})");
    None
}

/// The first executable called `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

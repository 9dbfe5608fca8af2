//! SpamAssassin (Debian's `spamassassin`, local rules only: `spamassassin -t -L`)
//! judges the digest as a subscriber receives it — the whole message as the
//! SMTP server got it from the delivery engine, headers included — for the
//! sample issue and the stress fixture. No rule worth more than 0.5 points may
//! fire: a newsletter pays for every point it carries into each reader's filter.
//!
//! Bayes is off (`use_bayes 0`): its verdict depends on what the machine's
//! database has learnt before, not on the message. Without SpamAssassin the
//! tests print "skipped (install spamassassin)"; under CI (`CI` set) they fail.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::delivered::{EmailFixture, deliver, require_tools};
use tokio::io::AsyncWriteExt;

/// The most one rule may add to the score.
const MAX_RULE_POINTS: f64 = 0.5;

#[derive(Debug, Clone, PartialEq)]
struct RuleHit {
    points: f64,
    name: String,
    description: String,
}

/// The rows of the "Content analysis details" table that `-t` appends: a
/// score, the rule's name, a description that may continue on indented lines.
fn parse_report(report: &str) -> Option<(f64, Vec<RuleHit>)> {
    let details = report
        .lines()
        .position(|l| l.starts_with("Content analysis details:"))?;
    let total: f64 = report
        .lines()
        .nth(details)?
        .split('(')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let mut hits: Vec<RuleHit> = Vec::new();
    let table = report
        .lines()
        .skip(details)
        .skip_while(|l| !l.starts_with("----"))
        .skip(1);
    for line in table {
        if line.trim().is_empty() {
            break;
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        match first.parse::<f64>() {
            Ok(points) => hits.push(RuleHit {
                points,
                name: words.next().unwrap_or_default().to_owned(),
                description: words.collect::<Vec<_>>().join(" "),
            }),
            Err(_) => {
                if let Some(last) = hits.last_mut() {
                    last.description.push(' ');
                    last.description.push_str(line.trim());
                }
            }
        }
    }
    Some((total, hits))
}

async fn spamassassin(message: &[u8]) -> String {
    let prefs = tempfile::tempdir().expect("temp dir");
    let mut child = tokio::process::Command::new("spamassassin")
        .args([
            "-t",
            "-L",
            "--cf",
            "use_bayes 0",
            "--cf",
            "bayes_auto_learn 0",
            "-p",
        ])
        // A private, empty user preferences file: the run neither reads nor
        // writes the invoking user's ~/.spamassassin.
        .arg(prefs.path().join("user_prefs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start spamassassin");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(message)
        .await
        .expect("write the message to spamassassin");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("spamassassin finished within 120 s")
        .expect("spamassassin output");
    assert!(
        out.status.success(),
        "spamassassin failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn no_rule_over_half_a_point(fixture: EmailFixture) {
    if require_tools(&["spamassassin"], "spamassassin").is_none() {
        return;
    }
    let delivered = deliver(fixture).await;
    let report = spamassassin(&delivered.raw).await;
    let (total, hits) = parse_report(&report).unwrap_or_else(|| {
        panic!("no \"Content analysis details\" table in spamassassin's output:\n{report}")
    });
    let table: String = hits
        .iter()
        .map(|h| format!("\n  {:>5.1} {} {}", h.points, h.name, h.description))
        .collect();
    eprintln!("{}: SpamAssassin score {total}{table}", fixture.name());
    let over: Vec<String> = hits
        .iter()
        .filter(|h| h.points > MAX_RULE_POINTS)
        .map(|h| format!("\n  +{:.1} {} ({})", h.points, h.name, h.description))
        .collect();
    assert!(
        over.is_empty(),
        "{}: SpamAssassin rules worth more than {MAX_RULE_POINTS} points fired (score {total}):{}",
        fixture.name(),
        over.concat()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_issue_fires_no_rule_over_half_a_point() {
    no_rule_over_half_a_point(EmailFixture::Sample).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_fixture_fires_no_rule_over_half_a_point() {
    no_rule_over_half_a_point(EmailFixture::Stress).await;
}

#[test]
fn report_table_is_read_with_continued_descriptions() {
    let report = "\
Content preview:  hello

Content analysis details:   (0.4 points, 5.0 required)

 pts rule name              description
---- ---------------------- --------------------------------------------------
-0.0 NO_RELAYS              Informational: message was not relayed via SMTP
 0.7 HTML_FONT_LOW_CONTRAST BODY: HTML font color similar or identical to
                            background
-0.3 SOME_RULE              Another

The original message was not completely plain text";
    let (total, hits) = parse_report(report).expect("parsed");
    assert_eq!(total, 0.4);
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[1].name, "HTML_FONT_LOW_CONTRAST");
    assert_eq!(hits[1].points, 0.7);
    assert_eq!(
        hits[1].description,
        "BODY: HTML font color similar or identical to background"
    );
    assert_eq!(hits[2].points, -0.3);
}

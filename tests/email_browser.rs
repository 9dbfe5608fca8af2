//! The digest holds its shape in a real browser: headless Chromium (Debian's
//! `chromium` + `chromedriver`) loads the email exactly as a subscriber
//! received it over SMTP, and the archive page as served over HTTP, for the
//! sample issue and the stress fixture, at 320, 375, 600 and 1024 px, and
//! checks what a reader would notice:
//!
//! * nothing is wider than the viewport (`scrollWidth <= innerWidth`);
//! * at ≤ 480 px every visible text is at least 14 px (footer included);
//! * on mobile the button fills its column;
//! * the Arabic item reads right to left.
//!
//! One browser measures every page once (`MEASURED`); each test then judges
//! one of those properties, so a failure names the check, the fixture, the
//! variant, the width and the offending elements.
//!
//! With `HERALD_SCREENSHOTS=DIR` the same pass writes PNGs of both fixtures'
//! emails at 375 and 1024 px, light and dark (`docs/screenshots/` holds the
//! committed set; README "Email checks" shows them).
//!
//! Without Chromium the tests print "skipped (install chromium chromium-driver)";
//! under CI (`CI` set) they fail instead.

mod support;

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::json;
use support::browser::{Browser, file_url};
use support::delivered::{DeliveredEmail, EmailFixture, deliver};
use tokio::sync::OnceCell;

const WIDTHS: [u32; 4] = [320, 375, 600, 1024];
/// Widths at which the mobile rules (text size, full-width button) apply.
const MOBILE_MAX: u32 = 480;
const MIN_MOBILE_FONT_PX: f64 = 14.0;
const VIEWPORT_HEIGHT: u32 = 900;
const SCREENSHOT_WIDTHS: [u32; 2] = [375, 1024];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The `text/html` part of the delivered message.
    Email,
    /// The archive page.
    Web,
}

/// What the page told us at one width.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageReport {
    inner_width: f64,
    scroll_width: f64,
    /// How many text nodes a reader can see (a page that failed to load has none).
    visible_texts: u64,
    /// The widest unbreakable text runs and empty boxes sticking out (width in `value`).
    wide: Vec<Offender>,
    /// Visible text below the minimum size.
    small: Vec<Offender>,
    buttons: Vec<ButtonReport>,
    /// Each headline written mostly in Arabic script, with the direction of
    /// the headline and of its item's summary.
    arabic: Vec<DirectionReport>,
}

#[derive(Debug, Deserialize)]
struct Offender {
    selector: String,
    text: String,
    /// Width for `wide`, font size for `small` (CSS px).
    value: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ButtonReport {
    selector: String,
    text: String,
    /// The button's surface: the link and its cell, united.
    left: f64,
    right: f64,
    /// The link alone (its padding must not spill past the column).
    link_left: f64,
    link_right: f64,
    /// The content box of the column the button sits in.
    col_left: f64,
    col_right: f64,
}

#[derive(Debug, Deserialize)]
struct DirectionReport {
    selector: String,
    text: String,
    direction: String,
}

struct Measured {
    fixture: EmailFixture,
    variant: Variant,
    width: u32,
    report: PageReport,
}

impl Measured {
    fn label(&self) -> String {
        format!(
            "{} {} @ {} px",
            self.fixture.name(),
            match self.variant {
                Variant::Email => "email",
                Variant::Web => "web page",
            },
            self.width
        )
    }
}

/// Every page measured once, by one browser; `None` when Chromium is missing
/// outside CI.
static MEASURED: OnceCell<Option<Vec<Measured>>> = OnceCell::const_new();

async fn measured() -> Option<&'static [Measured]> {
    MEASURED
        .get_or_init(measure_all)
        .await
        .as_ref()
        .map(Vec::as_slice)
}

async fn measure_all() -> Option<Vec<Measured>> {
    let browser = Browser::start().await?;
    let dir = tempfile::tempdir().expect("temp dir");
    let shots = std::env::var_os("HERALD_SCREENSHOTS").map(PathBuf::from);
    let mut out = Vec::new();
    for fixture in EmailFixture::ALL {
        let delivered: DeliveredEmail = deliver(fixture).await;
        for (variant, html) in [
            (Variant::Email, &delivered.html),
            (Variant::Web, &delivered.web_html),
        ] {
            let suffix = if variant == Variant::Email {
                "email"
            } else {
                "web"
            };
            let path = dir.path().join(format!("{}-{suffix}.html", fixture.name()));
            std::fs::write(&path, html).expect("write page");
            let url = file_url(&path);
            browser.set_dark(false).await;
            for width in WIDTHS {
                browser.set_viewport(width, VIEWPORT_HEIGHT).await;
                browser.open(&url).await;
                let v = browser.eval(MEASURE_JS, json!([MIN_MOBILE_FONT_PX])).await;
                let report: PageReport = serde_json::from_value(v.clone())
                    .unwrap_or_else(|e| panic!("measurement script answered {v}: {e}"));
                assert_eq!(
                    report.inner_width, width as f64,
                    "the viewport must be exactly {width} px wide"
                );
                // Every check below passes on an empty page; make sure this is the issue.
                assert!(
                    report.visible_texts >= 20,
                    "{} at {width} px shows only {} texts: the page did not load",
                    fixture.name(),
                    report.visible_texts
                );
                out.push(Measured {
                    fixture,
                    variant,
                    width,
                    report,
                });
            }
            if let (Some(dir), Variant::Email) = (&shots, variant) {
                std::fs::create_dir_all(dir).expect("create the screenshot folder");
                for dark in [false, true] {
                    browser.set_dark(dark).await;
                    for width in SCREENSHOT_WIDTHS {
                        browser.set_viewport(width, VIEWPORT_HEIGHT).await;
                        browser.open(&url).await;
                        let scheme = if dark { "dark" } else { "light" };
                        let png = dir.join(format!("{}-{width}-{scheme}.png", fixture.name()));
                        browser.screenshot_full_page(width, &png).await;
                        eprintln!("wrote {}", png.display());
                    }
                }
                browser.set_dark(false).await;
            }
        }
    }
    browser.close().await;
    Some(out)
}

/// Runs in the page; `arguments[0]` is the minimum font size. Everything it
/// returns is plain data; the judging happens in Rust.
const MEASURE_JS: &str = r#"
const minFont = arguments[0];
const W = window.innerWidth;
const selectorOf = (el) => {
  const parts = [];
  for (let e = el; e && e.nodeType === 1 && parts.length < 4 && e !== document.body; e = e.parentElement) {
    let s = e.tagName.toLowerCase();
    if (e.classList.length) s += '.' + [...e.classList].join('.');
    parts.unshift(s);
  }
  return parts.join(' > ');
};
const short = (s) => (s || '').replace(/\s+/g, ' ').trim().slice(0, 70);

// Text a reader can see: laid out with a size, not display:none, not
// visibility:hidden or opacity 0, and not clipped away by an overflow box.
const textVisible = (node) => {
  const el = node.parentElement;
  if (!el || !el.checkVisibility({opacityProperty: true, visibilityProperty: true})) return false;
  const range = document.createRange();
  range.selectNodeContents(node);
  const rects = [...range.getClientRects()].filter(r => r.width > 0 && r.height > 0);
  if (!rects.length) return false;
  const r = rects[0];
  for (let a = el; a && a !== document.documentElement; a = a.parentElement) {
    const cs = getComputedStyle(a);
    if (cs.overflowX !== 'visible' || cs.overflowY !== 'visible') {
      const b = a.getBoundingClientRect();
      if (b.width <= 0 || b.height <= 0) return false;
      if (r.right <= b.left || r.left >= b.right || r.bottom <= b.top || r.top >= b.bottom) return false;
    }
  }
  return true;
};

// Overflow: what pushes the layout wide. A table cell cannot shrink below its
// longest unbreakable run (a URL, a token, a long word), so the widest runs
// are named, with their width; and boxes without text (images, fixed-width
// tables) that stick out. The boxes merely widened by them are not named.
const wide = [];
{
  const tw = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = tw.nextNode(); n; n = tw.nextNode()) {
    if (!n.parentElement || !n.parentElement.checkVisibility()) continue;
    for (const m of n.nodeValue.matchAll(/\S{12,}/g)) {
      const range = document.createRange();
      range.setStart(n, m.index);
      range.setEnd(n, m.index + m[0].length);
      // One rect per line: a run that wraps is as wide as its widest line.
      const width = Math.max(0, ...[...range.getClientRects()].map(r => r.width));
      wide.push({selector: selectorOf(n.parentElement), text: short(m[0]), value: width});
    }
  }
  for (const el of document.body.querySelectorAll('*')) {
    if (el.textContent.trim() || el.children.length) continue;
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > W + 0.5) wide.push({selector: selectorOf(el), text: '', value: r.width});
  }
  wide.sort((a, b) => b.value - a.value);
}

// Font size of every visible text.
const small = [];
const seen = new Set();
let visibleTexts = 0;
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  if (!n.nodeValue.trim()) continue;
  const el = n.parentElement;
  if (!el || ['SCRIPT', 'STYLE', 'TITLE'].includes(el.tagName) || !textVisible(n)) continue;
  visibleTexts += 1;
  const size = parseFloat(getComputedStyle(el).fontSize);
  if (size < minFont) {
    const key = selectorOf(el) + '|' + short(n.nodeValue);
    if (!seen.has(key)) {
      seen.add(key);
      small.push({selector: selectorOf(el), text: short(n.nodeValue), value: size});
    }
  }
}

// Buttons: the link and, where there is one, the cell that paints it.
const buttons = [];
for (const a of document.querySelectorAll('a.btn-link')) {
  if (!a.checkVisibility()) continue;
  const lr = a.getBoundingClientRect();
  const cell = a.closest('.btn-cell');
  const cr = cell ? cell.getBoundingClientRect() : lr;
  const col = a.closest('.item') || (a.closest('table.btn') || a).parentElement;
  const k = col.getBoundingClientRect();
  const cs = getComputedStyle(col);
  const px = (v) => parseFloat(v) || 0;
  buttons.push({
    selector: selectorOf(a), text: short(a.textContent),
    left: Math.min(lr.left, cr.left), right: Math.max(lr.right, cr.right),
    linkLeft: lr.left, linkRight: lr.right,
    colLeft: k.left + px(cs.borderLeftWidth) + px(cs.paddingLeft),
    colRight: k.right - px(cs.borderRightWidth) - px(cs.paddingRight),
  });
}

// Arabic items: headlines mostly in Arabic script, and their summaries.
const arabicShare = (s) => {
  const letters = [...s].filter(c => /\p{L}/u.test(c));
  if (!letters.length) return 0;
  return letters.filter(c => /\p{Script=Arabic}/u.test(c)).length / letters.length;
};
const arabic = [];
for (const h of document.querySelectorAll('.headline')) {
  if (arabicShare(h.textContent) < 0.5) continue;
  const item = h.closest('.item') || h.parentElement;
  for (const el of [h, ...item.querySelectorAll('.summary')]) {
    arabic.push({selector: selectorOf(el), text: short(el.textContent), direction: getComputedStyle(el).direction});
  }
}

return {
  innerWidth: W,
  scrollWidth: document.documentElement.scrollWidth,
  visibleTexts,
  wide: wide.slice(0, 8),
  small,
  buttons,
  arabic,
};
"#;

/// Fails with every finding of one check, grouped by page.
fn verdict(check: &str, findings: Vec<String>) {
    if findings.is_empty() {
        return;
    }
    let mut msg = format!("{check}: {} page(s) fail\n", findings.len());
    for f in findings {
        let _ = writeln!(msg, "{f}");
    }
    panic!("{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_wider_than_the_viewport() {
    let Some(pages) = measured().await else {
        return;
    };
    let mut findings = Vec::new();
    for m in pages {
        let r = &m.report;
        if r.scroll_width > r.inner_width {
            let mut f = format!(
                "- {}: scrollWidth {} > innerWidth {}; widest unbreakable content:",
                m.label(),
                r.scroll_width,
                r.inner_width
            );
            for o in &r.wide {
                let _ = write!(
                    f,
                    "\n    {} ({:.0} px wide) {:?}",
                    o.selector, o.value, o.text
                );
            }
            findings.push(f);
        }
    }
    verdict("horizontal overflow", findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mobile_text_is_at_least_14px() {
    let Some(pages) = measured().await else {
        return;
    };
    let mut findings = Vec::new();
    for m in pages.iter().filter(|m| m.width <= MOBILE_MAX) {
        if m.report.small.is_empty() {
            continue;
        }
        let mut f = format!("- {}:", m.label());
        for o in &m.report.small {
            let _ = write!(f, "\n    {} {} px {:?}", o.selector, o.value, o.text);
        }
        findings.push(f);
    }
    verdict(
        &format!("text below {MIN_MOBILE_FONT_PX} px at ≤ {MOBILE_MAX} px"),
        findings,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mobile_button_fills_its_column() {
    let Some(pages) = measured().await else {
        return;
    };
    // Sub-pixel rounding only.
    const SLACK: f64 = 1.0;
    let mut findings = Vec::new();
    for m in pages.iter().filter(|m| m.width <= MOBILE_MAX) {
        let mut bad = Vec::new();
        for b in &m.report.buttons {
            let col = b.col_right - b.col_left;
            let fills = b.left <= b.col_left + SLACK && b.right >= b.col_right - SLACK;
            let spills = b.link_left < b.col_left - SLACK || b.link_right > b.col_right + SLACK;
            if !fills || spills {
                bad.push(format!(
                    "\n    {} {:?}: button {:.0}–{:.0} px ({:.0} wide), link {:.0}–{:.0}, column {:.0}–{:.0} ({:.0} wide){}",
                    b.selector,
                    b.text,
                    b.left,
                    b.right,
                    b.right - b.left,
                    b.link_left,
                    b.link_right,
                    b.col_left,
                    b.col_right,
                    col,
                    if spills { "; the link spills past its column" } else { "" }
                ));
            }
        }
        if !bad.is_empty() {
            findings.push(format!("- {}:{}", m.label(), bad.concat()));
        }
    }
    let measured_buttons = pages
        .iter()
        .filter(|m| m.fixture == EmailFixture::SampleButtons && m.width <= MOBILE_MAX)
        .map(|m| m.report.buttons.len())
        .sum::<usize>();
    assert!(
        measured_buttons > 0,
        "the sample rendered with buttons showed no button to measure"
    );
    verdict("button does not fill its column on mobile", findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arabic_item_reads_right_to_left() {
    let Some(pages) = measured().await else {
        return;
    };
    let mut findings = Vec::new();
    for m in pages.iter().filter(|m| m.fixture == EmailFixture::Stress) {
        if m.report.arabic.is_empty() {
            findings.push(format!(
                "- {}: no headline in Arabic script found (the stress fixture must have an Arabic item)",
                m.label()
            ));
            continue;
        }
        let ltr: Vec<String> = m
            .report
            .arabic
            .iter()
            .filter(|d| d.direction != "rtl")
            .map(|d| {
                format!(
                    "\n    {} direction {} {:?}",
                    d.selector, d.direction, d.text
                )
            })
            .collect();
        if !ltr.is_empty() {
            findings.push(format!("- {}:{}", m.label(), ltr.concat()));
        }
    }
    verdict("Arabic item not right to left", findings);
}

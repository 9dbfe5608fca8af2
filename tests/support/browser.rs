//! Headless Chromium driven over WebDriver by `chromedriver`, started on a
//! free loopback port for one test binary and killed with its browser when the
//! value is dropped.
//!
//! The client is a few WebDriver calls over `reqwest` (already a
//! dev-dependency) plus chromedriver's `goog/cdp/execute` for the two things
//! WebDriver has no command for: an exact viewport (`innerWidth` equal to the
//! target; a window size would include the browser's own chrome) and
//! `prefers-color-scheme` emulation.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The Debian packages that bring `chromium` and `chromedriver`.
pub const INSTALL: &str = "chromium chromium-driver";

pub struct Browser {
    driver: Child,
    client: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
}

impl Browser {
    /// `None` (after printing "skipped") when Chromium is not installed; see
    /// [`super::delivered::require_tools`].
    pub async fn start() -> Option<Browser> {
        let tools = super::delivered::require_tools(&["chromium", "chromedriver"], INSTALL)?;
        Some(Browser::launch(&tools[0], &tools[1]).await)
    }

    async fn launch(chromium: &Path, chromedriver: &Path) -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            l.local_addr().expect("local addr").port()
        };
        let mut cmd = Command::new(chromedriver);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so Drop can end chromedriver and the browser
        // it started together even when a test panics mid-session.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client");
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver,
            client,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = browser
                .client
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on port {port} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": [
                "--headless=new",
                // Tests run as root in CI, where Chromium's sandbox refuses to start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                // Classic scrollbars would take width from innerWidth's layout.
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                "--lang=en-US",
                "--no-first-run",
                "--disable-extensions",
            ],
        }}}});
        let v = browser.call("POST", &format!("{base}/session"), caps).await;
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver gave no session id: {v}"));
        browser.session = format!("{base}/session/{id}");
        browser
    }

    async fn call(&self, method: &str, url: &str, body: Value) -> Value {
        let req = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url).json(&body),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {url}: answer is not JSON: {e}"));
        assert!(
            status.is_success(),
            "WebDriver {method} {url} answered {status}: {}",
            v["value"]
        );
        v["value"].clone()
    }

    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.call(
            "POST",
            &format!("{}/goog/cdp/execute", self.session),
            json!({"cmd": cmd, "params": params}),
        )
        .await
    }

    /// The layout viewport becomes exactly `width` × `height` CSS px.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
    }

    /// `prefers-color-scheme: dark` or `light` for the pages that follow.
    pub async fn set_dark(&self, dark: bool) {
        let value = if dark { "dark" } else { "light" };
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": value}]}),
        )
        .await;
    }

    pub async fn open(&self, url: &str) {
        self.call(
            "POST",
            &format!("{}/url", self.session),
            json!({"url": url}),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &format!("{}/execute/sync", self.session),
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// A PNG of the whole page at the current width: the viewport is grown to
    /// the document's height first, so nothing below the fold is cut.
    pub async fn screenshot_full_page(&self, width: u32, path: &Path) {
        let height = self
            .eval(
                "return Math.ceil(document.documentElement.scrollHeight);",
                json!([]),
            )
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(1, 30_000) as u32;
        self.set_viewport(width, height).await;
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": false}),
            )
            .await;
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("screenshot is base64");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Forgets every cookie of the current site (a logged-out browser).
    pub async fn delete_cookies(&self) {
        self.call("DELETE", &format!("{}/cookie", self.session), json!({}))
            .await;
    }

    /// Ends the session (Chromium exits) and chromedriver.
    pub async fn close(mut self) {
        let session = std::mem::take(&mut self.session);
        if !session.is_empty() {
            let _ = self.client.delete(&session).send().await;
        }
        // Drop kills chromedriver's process group.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = self.driver.id();
        // Ignore failures: the group may already be gone.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.wait();
    }
}

/// A `file://` URL for a path (the email is loaded as a local file, like a
/// client that shows the message without a web origin).
pub fn file_url(path: &Path) -> String {
    let abs: PathBuf = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut s = String::from("file://");
    for b in abs.display().to_string().bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                s.push(b as char)
            }
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

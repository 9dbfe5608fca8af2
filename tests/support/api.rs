//! The editors' API from a client's side: an editor with a token, and
//! requests that carry it.
#![allow(dead_code)]

use serde_json::Value;

use super::app::TestApp;

pub const EDITOR: &str = "editor@news.herald.test";

/// An answer of the API.
pub struct ApiResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl ApiResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status and returns it.
    #[track_caller]
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.text()
        );
        let p = self.json();
        assert_eq!(p["status"], status, "{p}");
        assert!(
            p["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:herald:problem:")),
            "{p}"
        );
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        assert!(p["detail"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        p
    }
}

/// A client of the API holding one editor's token.
pub struct Api<'a> {
    pub t: &'a TestApp,
    pub token: String,
}

impl<'a> Api<'a> {
    /// Creates the editor (through the same service as `herald editor add`).
    pub async fn new(t: &'a TestApp) -> Api<'a> {
        let issued = t
            .app
            .add_editor(&TestApp::email(EDITOR), Some("Test Editor"))
            .await
            .expect("add editor");
        Api {
            t,
            token: issued.token.expose().to_owned(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.t.url(&format!("/api/v1{path}"))
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.t
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    pub async fn send(builder: reqwest::RequestBuilder) -> ApiResponse {
        let response = builder.send().await.expect("API request");
        ApiResponse {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.expect("API body").to_vec(),
        }
    }

    pub async fn get(&self, path: &str) -> ApiResponse {
        Self::send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> ApiResponse {
        Self::send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> ApiResponse {
        Self::send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn post_empty(&self, path: &str) -> ApiResponse {
        Self::send(self.request(reqwest::Method::POST, path)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> ApiResponse {
        Self::send(self.request(reqwest::Method::PATCH, path).json(&body)).await
    }

    /// Creates an item and returns its id.
    pub async fn item(&self, headline: &str, ready: bool) -> i64 {
        let r = self
            .post(
                "/items",
                serde_json::json!({
                    "headline": headline,
                    "outlet": "The Test Times",
                    "url": "https://example.com/story",
                    "summary": "A *short* summary.",
                    "ready": ready,
                }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_i64().expect("item id")
    }
}

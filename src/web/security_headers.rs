//! Security headers on every answer of the public server: pages, errors,
//! redirects, the archive. One layer, so no route can forget them.
//!
//! Our own pages need nothing but their one `<style>` element, allowed by
//! its hash (no `'unsafe-inline'`). A response that set its own
//! `Content-Security-Policy` keeps it: the archive's web version of an issue
//! is the email's HTML, with inline `style=` attributes and remote images,
//! and gets [`ARCHIVE_ISSUE_CSP`].

use std::sync::LazyLock;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Framing is refused twice: `frame-ancestors` for current browsers,
/// `X-Frame-Options` for old ones (the confirm and unsubscribe buttons are
/// what clickjacking would target).
static PAGE_CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD
        .encode(Sha256::digest(super::pages::STYLE.as_bytes()));
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(STRICT_FALLBACK))
});

/// Used only if the page policy could not be built: nothing at all loads.
const STRICT_FALLBACK: &str = "default-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The email rendering: inline styles (emails have no other kind), images
/// from anywhere over HTTPS or inline, still no script, plugin, form or frame.
pub const ARCHIVE_ISSUE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, PAGE_CSP.clone());
    }
    for (name, value) in [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_policy_allows_exactly_our_stylesheet() {
        let csp = PAGE_CSP.to_str().unwrap();
        assert!(csp.contains("style-src 'sha256-"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }
}

//! `GET /metrics` (Prometheus text format) and the layer that counts and
//! traces every HTTP request by its route template.
//!
//! Counts are not for the public: `/metrics` answers a local scraper (a
//! loopback client whose request came through no proxy) or one presenting
//! `http.metrics_token` as a bearer token; anyone else gets 403 saying so.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::app::App;
use crate::config::Config;

/// The `/metrics` route with its access rule. Mount it on any listener
/// (the public one, the admin one): the rule travels with it.
pub fn metrics_router<S: Clone + Send + Sync + 'static>(app: App) -> Router<S> {
    Router::new().route("/metrics", get(scrape)).with_state(app)
}

async fn scrape(State(app): State<App>, req: Request) -> Response {
    // Absent when the router is served without connect info: then only the token opens it.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if !may_scrape(&app.config, peer, req.headers()) {
        return (
            StatusCode::FORBIDDEN,
            "/metrics answers scrapers on this machine (not through a proxy), or those sending \"Authorization: Bearer <http.metrics_token>\"\n",
        )
            .into_response();
    }
    match app.metrics_text().await {
        Ok(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    ),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the state counts");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database does not answer; see /readyz\n",
            )
                .into_response()
        }
    }
}

/// Whether this request may read the counts: with the configured bearer
/// token from anywhere; without one only from this machine.
///
/// "This machine" is the client as `http.trusted_proxies` resolves it
/// (`ClientIp`'s rule, so a client's own `X-Forwarded-For` is believed only
/// from a trusted proxy), and only for a request that carries no forwarding
/// header at all: a reverse proxy on the same host forwards the public's
/// requests from a loopback peer, and those are not local scrapes.
pub fn may_scrape(config: &Config, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
    let token = &config.http.metrics_token;
    if !token.is_empty()
        && let Some(presented) = bearer(headers)
    {
        return bool::from(presented.as_bytes().ct_eq(token.expose_text().as_bytes()));
    }
    let Some(peer) = peer else {
        return false;
    };
    let forwarded = headers.contains_key("x-forwarded-for") || headers.contains_key("forwarded");
    let client = config.http.trusted_proxies.client_ip(peer, headers);
    !forwarded && client.to_canonical().is_loopback()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Where the inner layer leaves the matched route template for the outer one.
#[derive(Clone, Default)]
struct RouteSlot(Arc<OnceLock<String>>);

/// Outermost layer: one span per request (method and route template, never
/// the raw path: it can hold a confirmation or unsubscribe token) and the
/// `herald_http_requests_total` count once it is answered.
pub async fn observe_http(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let slot = RouteSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "http.request",
        method = %method,
        route = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let response = next.run(req).instrument(span.clone()).await;
    let route = slot.0.get().map_or("unmatched", String::as_str);
    let status = response.status().as_u16();
    span.record("route", route);
    span.record("status", status);
    app.metrics.http_request(&method, route, status);
    response
}

/// Route layer (runs once a route matched): hands its template outwards.
pub async fn note_route(req: Request, next: Next) -> Response {
    if let (Some(path), Some(slot)) = (
        req.extensions().get::<MatchedPath>(),
        req.extensions().get::<RouteSlot>(),
    ) {
        let _ = slot.0.set(path.as_str().to_owned());
        tracing::Span::current().record("route", path.as_str());
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(token: &str, proxies: &[&str]) -> Config {
        let mut c = Config::default();
        c.http.metrics_token = token.into();
        c.http.trusted_proxies =
            crate::web::TrustedProxies::new(proxies.iter().map(|p| p.parse().unwrap()).collect());
        c
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    const TOKEN: &str = "a-metrics-token-of-enough-length";

    #[test]
    fn loopback_may_scrape_without_a_token() {
        let c = config("", &[]);
        assert!(may_scrape(&c, ip("127.0.0.1"), &HeaderMap::new()));
        assert!(may_scrape(&c, ip("::1"), &HeaderMap::new()));
        assert!(may_scrape(&c, ip("::ffff:127.0.0.1"), &HeaderMap::new()));
        assert!(!may_scrape(&c, ip("192.0.2.7"), &HeaderMap::new()));
        assert!(!may_scrape(&c, None, &HeaderMap::new()));
    }

    #[test]
    fn a_forwarding_header_never_grants_access() {
        // An untrusted remote peer claiming to forward for localhost.
        let c = config("", &[]);
        let h = headers(&[("x-forwarded-for", "127.0.0.1")]);
        assert!(!may_scrape(&c, ip("192.0.2.7"), &h));
        let h = headers(&[("forwarded", "for=127.0.0.1")]);
        assert!(!may_scrape(&c, ip("192.0.2.7"), &h));
        // A local reverse proxy relaying the public, trusted or not.
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert!(!may_scrape(&c, ip("127.0.0.1"), &h));
        let c = config("", &["127.0.0.1"]);
        assert!(!may_scrape(&c, ip("127.0.0.1"), &h));
        // Even when the (trusted) chain names localhost.
        let h = headers(&[("x-forwarded-for", "127.0.0.1")]);
        assert!(!may_scrape(&c, ip("127.0.0.1"), &h));
    }

    #[test]
    fn the_token_grants_access_from_anywhere_and_a_wrong_one_does_not() {
        let c = config(TOKEN, &[]);
        let good = headers(&[("authorization", &format!("Bearer {TOKEN}"))]);
        assert!(may_scrape(&c, ip("192.0.2.7"), &good));
        let good = headers(&[("authorization", &format!("bearer {TOKEN}"))]);
        assert!(may_scrape(&c, None, &good));
        for wrong in [
            "Bearer nope",
            "Bearer a-metrics-token-of-enough-lengtH",
            "Basic abc",
            "Bearer ",
        ] {
            let h = headers(&[("authorization", wrong)]);
            assert!(!may_scrape(&c, ip("192.0.2.7"), &h), "{wrong}");
        }
        // A wrong token from loopback is refused, not waved through.
        let h = headers(&[("authorization", "Bearer nope")]);
        assert!(!may_scrape(&c, ip("127.0.0.1"), &h));
        // Without a token configured, presenting one proves nothing.
        let c = config("", &[]);
        assert!(!may_scrape(&c, ip("192.0.2.7"), &good));
    }
}

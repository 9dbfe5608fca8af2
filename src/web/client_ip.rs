//! The client's address: the TCP peer, unless the peer is one of
//! `http.trusted_proxies`, in which case the address the proxy forwarded.
//!
//! Only a trusted peer's headers count: anybody else could write any
//! `X-Forwarded-For` and pick the address the rate limiter and the consent
//! record see. Behind a chain of trusted proxies the client is the rightmost
//! forwarded address that is not itself a trusted proxy (each proxy appends
//! its own peer, so everything left of that may be client-written).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::WebState;
use super::error::WebError;

/// An IP network such as `10.0.0.0/8` or `2001:db8::/32`; a bare address
/// is the network of that one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not an IP network: expected an address with an optional /prefix, e.g. \"10.0.0.0/8\", \"127.0.0.1\" or \"::1/128\" ({reason})"
)]
pub struct CidrError {
    input: String,
    reason: &'static str,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u32::from(ip).into(), 32, self.prefix) == u32::from(net).into()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), 128, self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` (an address `width` bits wide) with everything after the first
/// `prefix` bits cleared.
fn mask(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let ones = if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    let host_bits = u32::from(width.saturating_sub(prefix));
    bits & ((ones >> host_bits) << host_bits)
}

/// `::ffff:10.0.0.1` is `10.0.0.1`: a dual-stack listener reports IPv4
/// peers in that form.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Cidr, CidrError> {
        let err = |reason| CidrError {
            input: input.to_owned(),
            reason,
        };
        let trimmed = input.trim();
        let (addr, prefix) = match trimmed.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (trimmed, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let addr = canonical(addr);
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| {
                    err("the prefix length must be 0 to 32 for IPv4, 0 to 128 for IPv6")
                })?,
        };
        let network = match addr {
            IpAddr::V4(a) => {
                let bits = mask(u32::from(a).into(), 32, prefix);
                IpAddr::V4(u32::try_from(bits).map_err(|_| err("prefix"))?.into())
            }
            IpAddr::V6(a) => IpAddr::V6(mask(u128::from(a), 128, prefix).into()),
        };
        // `10.1.2.3/8` is almost certainly a typo for a single address or a
        // different network: say so rather than silently trusting 10/8.
        if network != addr {
            return Err(err("address bits are set beyond the prefix length"));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `http.trusted_proxies`: the peers whose forwarding headers are believed.
/// Empty (the default) trusts nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(networks: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    pub fn networks(&self) -> &[Cidr] {
        &self.0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client's address for a request that arrived from `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        // X-Forwarded-For first: it is what nginx, HAProxy, Caddy, Traefik
        // and cloud balancers maintain. A proxy that only writes `Forwarded`
        // must drop a client's `X-Forwarded-For`, or the client picks.
        let chain = match forwarded_chain(headers, "x-forwarded-for", xff_element) {
            Some(chain) => Some(chain),
            None => forwarded_chain(headers, "forwarded", forwarded_element),
        };
        let Some(Ok(chain)) = chain else {
            return peer;
        };
        for ip in chain.iter().rev() {
            if !self.contains(*ip) {
                return *ip;
            }
        }
        // Every hop is a trusted proxy: the first one is as close to the
        // client as we can know.
        chain.first().copied().unwrap_or(peer)
    }
}

/// Every value of the header `name`, split at commas and parsed with
/// `element`. `None` when the header is absent; `Err` when any element is
/// not an address (then the peer is used: a garbled chain proves nothing).
fn forwarded_chain(
    headers: &HeaderMap,
    name: &str,
    element: fn(&str) -> Option<IpAddr>,
) -> Option<Result<Vec<IpAddr>, ()>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut chain = Vec::new();
    for value in values {
        let Ok(value) = value.to_str() else {
            return Some(Err(()));
        };
        for part in value.split(',') {
            match element(part) {
                Some(ip) => chain.push(canonical(ip)),
                None => return Some(Err(())),
            }
        }
    }
    if chain.is_empty() {
        return Some(Err(()));
    }
    Some(Ok(chain))
}

/// One `X-Forwarded-For` element: `203.0.113.7`, `2001:db8::1`, and the
/// forms with a port some proxies write (`203.0.113.7:4711`, `[2001:db8::1]:4711`).
fn xff_element(part: &str) -> Option<IpAddr> {
    node(part.trim())
}

/// One `Forwarded` element (RFC 7239): `for=192.0.2.60;proto=http;by=…`.
/// Obfuscated (`_hidden`) and `unknown` nodes are not addresses.
fn forwarded_element(part: &str) -> Option<IpAddr> {
    let value = part.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then(|| value.trim())
    })?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    node(value)
}

fn node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, _port) = rest.split_once(']')?;
        return ip.parse().ok();
    }
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// Config accepts a list (`["10.0.0.0/8", "::1"]`) or, for environment
/// variables, one comma-separated string (`10.0.0.0/8,::1`).
impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<String>),
            Text(String),
        }
        let items: Vec<String> = match Form::deserialize(d)? {
            Form::List(items) => items,
            Form::Text(text) => text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        items
            .iter()
            .map(|s| s.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustedProxies {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

/// The client address of a request (see the module doc). Used by the rate
/// limiter, the consent record and so the confirmation mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<WebState> for ClientIp {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, WebError> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Err(WebError::internal(
                "no peer address: the router must be served with into_make_service_with_connect_info",
            ));
        };
        let proxies = &state.app.config.http.trusted_proxies;
        Ok(ClientIp(proxies.client_ip(peer.ip(), &parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.200.3.4")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.0.0.1")), "IPv4-mapped peers");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
        assert!("::1/128".parse::<Cidr>().unwrap().contains(ip("::1")));
    }

    #[test]
    fn bad_cidrs_say_what_is_wrong() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "example.com",
            "10.1.2.3/8",
            "10.0.0.0/-1",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")) && e.contains("e.g."), "{e}");
        }
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let p = proxies(&[]);
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.8"),
        ]);
        assert_eq!(p.client_ip(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(p.client_ip(ip("198.51.100.1"), &h), ip("198.51.100.1"));
    }

    #[test]
    fn trusted_peer_forwards_the_rightmost_untrusted_address() {
        let p = proxies(&["10.0.0.0/8", "2001:db8:1::/48"]);
        let peer = ip("10.0.0.2");
        // The client wrote the first entry itself; the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.7, 10.0.0.9")]);
        assert_eq!(p.client_ip(peer, &h), ip("203.0.113.7"));
        // Split over several header lines, with ports and IPv6.
        let h = headers(&[
            ("x-forwarded-for", "[2001:db8:2::5]:4711"),
            ("x-forwarded-for", "2001:db8:1::1"),
        ]);
        assert_eq!(p.client_ip(peer, &h), ip("2001:db8:2::5"));
        let h = headers(&[("x-forwarded-for", "203.0.113.7:5555")]);
        assert_eq!(p.client_ip(peer, &h), ip("203.0.113.7"));
        // Only trusted hops: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]);
        assert_eq!(p.client_ip(peer, &h), ip("10.1.1.1"));
    }

    #[test]
    fn forwarded_header_rfc_7239() {
        let p = proxies(&["127.0.0.1"]);
        let peer = ip("127.0.0.1");
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.43;proto=https, For=\"[2001:db8:cafe::17]:4711\";by=127.0.0.1",
        )]);
        assert_eq!(p.client_ip(peer, &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=\"192.0.2.60:8080\"")]);
        assert_eq!(p.client_ip(peer, &h), ip("192.0.2.60"));
        // X-Forwarded-For wins when both are present.
        let h = headers(&[
            ("forwarded", "for=192.0.2.43"),
            ("x-forwarded-for", "198.51.100.3"),
        ]);
        assert_eq!(p.client_ip(peer, &h), ip("198.51.100.3"));
    }

    #[test]
    fn garbled_headers_from_a_trusted_peer_fall_back_to_the_peer() {
        let p = proxies(&["127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        for (name, value) in [
            ("x-forwarded-for", "not-an-ip"),
            ("x-forwarded-for", ""),
            ("x-forwarded-for", "1.2.3.4,,"),
            ("x-forwarded-for", "[::1"),
            ("x-forwarded-for", "999.1.1.1"),
            ("forwarded", "for=unknown"),
            ("forwarded", "for=_hidden"),
            ("forwarded", "proto=https"),
            ("forwarded", "for=\""),
            ("forwarded", "for=\"[2001:db8::1\""),
        ] {
            let h = headers(&[(name, value)]);
            assert_eq!(p.client_ip(peer, &h), peer, "{name}: {value}");
        }
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        assert_eq!(p.client_ip(peer, &h), peer, "non-UTF-8");
        assert_eq!(p.client_ip(peer, &HeaderMap::new()), peer, "no header");
    }

    #[test]
    fn config_accepts_a_list_or_a_comma_separated_string() {
        let from_list: TrustedProxies = serde_json::from_str(r#"["10.0.0.0/8", "::1"]"#).unwrap();
        let from_text: TrustedProxies = serde_json::from_str(r#""10.0.0.0/8, ::1""#).unwrap();
        assert_eq!(from_list, from_text);
        assert_eq!(
            serde_json::to_string(&from_list).unwrap(),
            r#"["10.0.0.0/8","::1/128"]"#
        );
        let e = serde_json::from_str::<TrustedProxies>(r#"["10.0.0.0/40"]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.0.0.0/40"), "{e}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
    fn trusted_proxies_parse_and_bad_ones_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_HTTP_TRUSTED_PROXIES", "10.0.0.0/8, ::1");
            let cfg = crate::config::Config::load(None).unwrap();
            assert_eq!(cfg.http.trusted_proxies.networks().len(), 2);
            jail.set_env("HERALD_HTTP_TRUSTED_PROXIES", "[\"10.0.0.0/33\"]");
            let err = crate::config::Config::load(None).unwrap_err().to_string();
            assert!(
                err.to_lowercase().contains("http.trusted_proxies") && err.contains("10.0.0.0/33"),
                "{err}"
            );
            Ok(())
        });
    }
}

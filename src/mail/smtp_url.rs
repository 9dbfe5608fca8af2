//! Parsing of SMTP relay URLs: `smtp://user:pass@host:587?tls=starttls`, `smtps://host:465`.

use std::fmt;
use std::str::FromStr;

/// How the connection to the relay is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Plain TCP (only sensible for a local relay or tests).
    None,
    /// Plain TCP upgraded with STARTTLS; the upgrade is **required** (the send fails when the
    /// server does not offer STARTTLS).
    StartTls,
    /// TLS from the first byte (`smtps://`, usually port 465).
    Implicit,
}

impl Tls {
    pub fn as_str(&self) -> &'static str {
        match self {
            Tls::None => "plain",
            Tls::StartTls => "starttls",
            Tls::Implicit => "implicit tls",
        }
    }
}

/// Where and how to reach the SMTP relay. `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpEndpoint {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    /// (user, password), percent-decoded.
    pub credentials: Option<(String, String)>,
}

impl SmtpEndpoint {
    /// `smtp://host:587 (starttls)`: no credentials at all.
    pub fn describe(&self) -> String {
        let scheme = if self.tls == Tls::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{} ({})", self.port, self.tls.as_str())
    }
}

/// Percent-encodes what would end the user or password part of a URL
/// (also `bounce.imap_url`'s parts).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl SmtpEndpoint {
    /// The URL that parses back into this endpoint, password included: only for
    /// handing the configuration on, never for printing (use `describe`).
    pub fn to_url(&self) -> String {
        let scheme = if self.tls == Tls::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        let userinfo = match &self.credentials {
            Some((user, pass)) => format!("{}:{}@", percent_encode(user), percent_encode(pass)),
            None => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let tls = match self.tls {
            Tls::None if self.port == 587 => "?tls=none",
            Tls::StartTls if self.port != 587 => "?tls=starttls",
            _ => "",
        };
        format!("{scheme}://{userinfo}{host}:{}{tls}", self.port)
    }
}

/// `smtp.url` as configured: empty (write mail to the file outbox) or a relay
/// parsed once at load. `Debug` never shows the password.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmtpUrl(pub Option<SmtpEndpoint>);

impl SmtpUrl {
    pub fn endpoint(&self) -> Option<&SmtpEndpoint> {
        self.0.as_ref()
    }
}

impl FromStr for SmtpUrl {
    type Err = SmtpUrlError;

    fn from_str(s: &str) -> Result<Self, SmtpUrlError> {
        if s.trim().is_empty() {
            Ok(SmtpUrl(None))
        } else {
            s.parse().map(|e| SmtpUrl(Some(e)))
        }
    }
}

impl<'de> serde::Deserialize<'de> for SmtpUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| {
            serde::de::Error::custom(format!(
                "{:?}: {e} (expected smtp://, smtps:// or empty for the file outbox)",
                crate::config::redact_url(&s)
            ))
        })
    }
}

impl serde::Serialize for SmtpUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            &self
                .0
                .as_ref()
                .map(SmtpEndpoint::to_url)
                .unwrap_or_default(),
        )
    }
}

impl fmt::Debug for SmtpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| (user, "<redacted>")),
            )
            .finish()
    }
}

impl fmt::Display for SmtpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Why an SMTP URL was not accepted. Messages never contain the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpUrlError {
    #[error("expected smtp:// or smtps://, found {found}")]
    Scheme { found: String },
    #[error("missing host: expected smtp://host[:port] or smtps://host[:port]")]
    MissingHost,
    #[error("invalid port `{port}`: expected a number from 1 to 65535")]
    Port { port: String },
    #[error(
        "invalid tls=`{value}`: expected tls=none, tls=starttls or tls=required (use smtps:// for implicit TLS)"
    )]
    TlsParam { value: String },
    #[error("tls=`{value}` conflicts with smtps:// (which always uses implicit TLS)")]
    TlsConflict { value: String },
    #[error("unknown query parameter `{name}`: only `tls` is supported")]
    UnknownParam { name: String },
    #[error("credentials must be `user:password@` (percent-encode `:`, `@` and `/` inside them)")]
    Credentials,
    #[error("invalid percent-encoding in the {part}: expected `%` followed by two hex digits")]
    PercentEncoding { part: &'static str },
    #[error("unexpected path `{path}`: expected nothing after host[:port] except ?tls=…")]
    Path { path: String },
}

pub(crate) fn percent_decode(s: &str, part: &'static str) -> Result<String, SmtpUrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(SmtpUrlError::PercentEncoding { part })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| SmtpUrlError::PercentEncoding { part })
}

impl FromStr for SmtpEndpoint {
    type Err = SmtpUrlError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let input = input.trim();
        let Some((scheme, rest)) = input.split_once("://") else {
            // No scheme: show at most the part after any `@` so a password cannot leak.
            let shown = input.rsplit('@').next().unwrap_or_default();
            return Err(SmtpUrlError::Scheme {
                found: format!("`{shown}` (no scheme)"),
            });
        };
        let implicit = match scheme.to_ascii_lowercase().as_str() {
            "smtp" => false,
            "smtps" => true,
            other => {
                return Err(SmtpUrlError::Scheme {
                    found: format!("{other}://…"),
                });
            }
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if !path.is_empty() && path != "/" {
            return Err(SmtpUrlError::Path {
                path: path.to_string(),
            });
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (user, pass) = u.split_once(':').ok_or(SmtpUrlError::Credentials)?;
                if user.is_empty() {
                    return Err(SmtpUrlError::Credentials);
                }
                Some((
                    percent_decode(user, "user name")?,
                    percent_decode(pass, "password")?,
                ))
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(SmtpUrlError::MissingHost)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').unwrap_or(p)),
            };
            (h, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(SmtpUrlError::MissingHost);
        }
        let port = match port {
            None => {
                if implicit {
                    465
                } else {
                    25
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(SmtpUrlError::Port {
                        port: p.to_string(),
                    });
                }
            },
        };
        let mut tls_param: Option<String> = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name.eq_ignore_ascii_case("tls") {
                tls_param = Some(value.to_ascii_lowercase());
            } else {
                return Err(SmtpUrlError::UnknownParam {
                    name: name.to_string(),
                });
            }
        }
        let tls = match (implicit, tls_param) {
            (true, None) => Tls::Implicit,
            (true, Some(v)) if v == "implicit" || v == "required" => Tls::Implicit,
            (true, Some(value)) => return Err(SmtpUrlError::TlsConflict { value }),
            (false, None) if port == 587 => Tls::StartTls,
            (false, None) => Tls::None,
            (false, Some(v)) => match v.as_str() {
                "none" | "plain" => Tls::None,
                "starttls" | "required" => Tls::StartTls,
                _ => return Err(SmtpUrlError::TlsParam { value: v }),
            },
        };
        Ok(SmtpEndpoint {
            host: host.to_string(),
            port,
            tls,
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: u16, tls: Tls, creds: Option<(&str, &str)>) -> SmtpEndpoint {
        SmtpEndpoint {
            host: host.into(),
            port,
            tls,
            credentials: creds.map(|(u, p)| (u.into(), p.into())),
        }
    }

    #[test]
    fn parses_valid_urls() {
        let cases = [
            ("smtp://host:25", ep("host", 25, Tls::None, None)),
            ("smtp://host", ep("host", 25, Tls::None, None)),
            ("smtp://host:587", ep("host", 587, Tls::StartTls, None)),
            ("smtp://host:587?tls=none", ep("host", 587, Tls::None, None)),
            (
                "smtp://host:2525?tls=starttls",
                ep("host", 2525, Tls::StartTls, None),
            ),
            (
                "smtp://host?tls=required",
                ep("host", 25, Tls::StartTls, None),
            ),
            ("smtps://host", ep("host", 465, Tls::Implicit, None)),
            (
                "SMTPS://mail.example.com:4650/",
                ep("mail.example.com", 4650, Tls::Implicit, None),
            ),
            (
                "smtp://user:pass@host:587?tls=starttls",
                ep("host", 587, Tls::StartTls, Some(("user", "pass"))),
            ),
            (
                "smtp://me%40example.com:p%3Ass%2Fw%40rd@relay:587",
                ep(
                    "relay",
                    587,
                    Tls::StartTls,
                    Some(("me@example.com", "p:ss/w@rd")),
                ),
            ),
            ("smtp://u:@host", ep("host", 25, Tls::None, Some(("u", "")))),
            ("smtp://[::1]:2525", ep("::1", 2525, Tls::None, None)),
            (
                "  smtp://127.0.0.1:1025  ",
                ep("127.0.0.1", 1025, Tls::None, None),
            ),
        ];
        for (url, want) in cases {
            assert_eq!(url.parse::<SmtpEndpoint>(), Ok(want), "{url}");
        }
    }

    #[test]
    fn rejects_invalid_urls_with_helpful_messages() {
        let cases = [
            (
                "http://host",
                "expected smtp:// or smtps://, found http://…",
            ),
            (
                "host:25",
                "expected smtp:// or smtps://, found `host:25` (no scheme)",
            ),
            ("smtp://", "missing host"),
            ("smtp://:25", "missing host"),
            (
                "smtp://host:0",
                "invalid port `0`: expected a number from 1 to 65535",
            ),
            ("smtp://host:70000", "invalid port `70000`"),
            ("smtp://host:abc", "invalid port `abc`"),
            (
                "smtp://host?tls=yes",
                "invalid tls=`yes`: expected tls=none, tls=starttls",
            ),
            ("smtps://host?tls=none", "conflicts with smtps://"),
            ("smtp://host?foo=bar", "unknown query parameter `foo`"),
            ("smtp://user@host", "credentials must be `user:password@`"),
            (
                "smtp://u:p%zz@host",
                "invalid percent-encoding in the password",
            ),
            ("smtp://host/path", "unexpected path `/path`"),
        ];
        for (url, want) in cases {
            let err = url.parse::<SmtpEndpoint>().unwrap_err().to_string();
            assert!(err.contains(want), "{url}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn to_url_round_trips() {
        for url in [
            "smtp://host:25",
            "smtp://host:587",
            "smtp://host:587?tls=none",
            "smtp://host:2525?tls=starttls",
            "smtps://host:4650",
            "smtp://me%40example.com:p%3Ass%2Fw%40rd@relay:587",
            "smtp://[::1]:2525",
        ] {
            let e: SmtpEndpoint = url.parse().unwrap();
            assert_eq!(e.to_url().parse::<SmtpEndpoint>(), Ok(e), "{url}");
        }
        assert_eq!("".parse::<SmtpUrl>(), Ok(SmtpUrl(None)));
        assert!(" ".parse::<SmtpUrl>().unwrap().endpoint().is_none());
        assert!("http://x".parse::<SmtpUrl>().is_err());
    }

    #[test]
    fn password_never_shown() {
        let secret = "s3cr3t-Pa55";
        let e: SmtpEndpoint = format!("smtp://bob:{secret}@relay:587").parse().unwrap();
        assert!(!format!("{e:?}").contains(secret));
        assert!(!e.to_string().contains(secret));
        assert_eq!(e.describe(), "smtp://relay:587 (starttls)");
        for bad in [
            format!("http://bob:{secret}@relay"),
            format!("bob:{secret}@relay"),
            format!("smtp://bob:{secret}@relay:xx"),
            format!("smtp://bob:{secret}@relay?tls=bad"),
        ] {
            let err = bad.parse::<SmtpEndpoint>().unwrap_err();
            assert!(!err.to_string().contains(secret), "{err}");
            assert!(!format!("{err:?}").contains(secret), "{err:?}");
        }
    }
}

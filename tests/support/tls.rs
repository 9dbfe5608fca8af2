//! TLS and AUTH for the test SMTP server: certificates made in the test with `rcgen`, and the
//! server-side rules of a real submission relay (STARTTLS or implicit TLS, AUTH PLAIN/LOGIN
//! checked against one user, AUTH offered only after TLS, MAIL refused until authenticated).
//!
//! ```ignore
//! let pki = TestPki::new();
//! let server = TestSmtpServer::start_secured(
//!     Script::new(),
//!     Security::starttls(pki.server_config(Cert::CaSigned)).auth("ann", "s3cret").auth_tls_only(),
//! ).await;
//! ```
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::smtp_server::Reply;

/// Any byte stream the server speaks SMTP over (plain TCP or TLS over it).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Stream = Box<dyn Io>;

/// Which certificate the server presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cert {
    /// For `localhost` and `127.0.0.1`, `CA:FALSE`, signed by the test CA.
    CaSigned,
    /// For `other.example` only, signed by the test CA: a host name mismatch on 127.0.0.1.
    WrongName,
    /// Self-signed with `CA:TRUE`, as `openssl req -x509` makes it: rustls refuses it as
    /// `CaUsedAsEndEntity` even when it is trusted.
    SelfSigned,
}

/// A test CA and the server certificates of [`Cert`], generated fresh for each test.
pub struct TestPki {
    ca_pem: String,
    certs: Vec<(Cert, CertificateDer<'static>, Vec<u8>)>,
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

impl TestPki {
    pub fn new() -> TestPki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Herald Test Company CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: &[&str]| {
            let key = KeyPair::generate().expect("server key");
            let mut p =
                CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                    .expect("server params");
            p.is_ca = IsCa::ExplicitNoCa;
            p.distinguished_name.push(DnType::CommonName, names[0]);
            let cert = p.signed_by(&key, &issuer).expect("server certificate");
            (cert.der().clone(), key.serialize_der())
        };
        let (signed, signed_key) = leaf(&["localhost", "127.0.0.1"]);
        let (wrong, wrong_key) = leaf(&["other.example"]);
        let self_key = KeyPair::generate().expect("self-signed key");
        let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("self-signed params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "localhost");
        let self_signed = p.self_signed(&self_key).expect("self-signed certificate");
        TestPki {
            ca_pem: ca_cert.pem(),
            certs: vec![
                (Cert::CaSigned, signed, signed_key),
                (Cert::WrongName, wrong, wrong_key),
                (
                    Cert::SelfSigned,
                    self_signed.der().clone(),
                    self_key.serialize_der(),
                ),
            ],
        }
    }

    /// The test CA's certificate as PEM (what `smtp.ca_file` points at).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the CA's PEM to `dir/test-ca.pem` and returns the path.
    pub fn write_ca_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("test-ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write CA file");
        path
    }

    /// Writes `cert` and its private key as PEM to `dir/server-cert.pem` and
    /// `dir/server-key.pem` (for servers started as processes, such as Dovecot).
    pub fn write_server_pem(&self, cert: Cert, dir: &Path) -> (PathBuf, PathBuf) {
        let (_, der, key) = self
            .certs
            .iter()
            .find(|(c, _, _)| *c == cert)
            .expect("certificate kind");
        let pem = |label: &str, bytes: &[u8]| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
                .collect();
            format!(
                "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
                lines.join("\n")
            )
        };
        let (cert_path, key_path) = (dir.join("server-cert.pem"), dir.join("server-key.pem"));
        std::fs::write(&cert_path, pem("CERTIFICATE", der)).expect("write server certificate");
        std::fs::write(&key_path, pem("PRIVATE KEY", key)).expect("write server key");
        (cert_path, key_path)
    }

    /// A rustls server configuration presenting `cert`.
    pub fn server_config(&self, cert: Cert) -> Arc<ServerConfig> {
        let (_, der, key) = self
            .certs
            .iter()
            .find(|(c, _, _)| *c == cert)
            .expect("certificate kind");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.clone())),
            )
            .expect("server TLS config");
        Arc::new(config)
    }
}

/// The server's TLS and AUTH behaviour; the default is the plain server of old (no TLS, any
/// AUTH accepted, SMTPUTF8 advertised).
#[derive(Clone)]
pub struct Security {
    tls: Option<Arc<ServerConfig>>,
    implicit: bool,
    credentials: Option<(String, String)>,
    auth_required: bool,
    auth_tls_only: bool,
    smtputf8: bool,
    /// What the EHLO's AUTH line offers; `None` = the base reply's (PLAIN LOGIN).
    mechanisms: Option<String>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            tls: None,
            implicit: false,
            credentials: None,
            auth_required: false,
            auth_tls_only: false,
            smtputf8: true,
            mechanisms: None,
        }
    }
}

impl Security {
    /// Plain TCP that offers STARTTLS with `config`.
    pub fn starttls(config: Arc<ServerConfig>) -> Security {
        Security {
            tls: Some(config),
            ..Security::default()
        }
    }

    /// TLS from the first byte (smtps).
    pub fn implicit(config: Arc<ServerConfig>) -> Security {
        Security {
            tls: Some(config),
            implicit: true,
            ..Security::default()
        }
    }

    /// Accept AUTH PLAIN/LOGIN only for `user`/`password` (`535 5.7.8` otherwise), and
    /// refuse MAIL with `530 5.7.0` before a successful AUTH.
    pub fn auth(mut self, user: &str, password: &str) -> Security {
        self.credentials = Some((user.to_string(), password.to_string()));
        self.auth_required = true;
        self
    }

    /// Offer AUTH only on an encrypted connection (Postfix's `smtpd_tls_auth_only`).
    pub fn auth_tls_only(mut self) -> Security {
        self.auth_tls_only = true;
        self
    }

    /// Advertise these AUTH mechanisms instead, e.g. `"LOGIN"` or `"CRAM-MD5"`.
    pub fn mechanisms(mut self, list: &str) -> Security {
        self.mechanisms = Some(list.to_string());
        self
    }

    /// Do not advertise SMTPUTF8.
    pub fn without_smtputf8(mut self) -> Security {
        self.smtputf8 = false;
        self
    }

    /// Whether AUTH is offered on a connection that is `secured` or not.
    pub fn auth_offered(&self, secured: bool) -> bool {
        secured || !self.auth_tls_only
    }

    /// Whether `STARTTLS` is answered on a connection that is `secured` or not.
    pub fn can_starttls(&self, secured: bool) -> bool {
        self.tls.is_some() && !self.implicit && !secured
    }

    /// Whether MAIL must be refused (auth required and not yet given).
    pub fn needs_auth(&self, authed: bool) -> bool {
        self.auth_required && !authed
    }

    /// The EHLO reply: `base` with STARTTLS added before TLS, AUTH dropped where it is not
    /// offered, SMTPUTF8 dropped when disabled.
    pub fn ehlo(&self, base: &str, secured: bool) -> String {
        let auth = self.mechanisms.as_ref().map(|m| format!("AUTH {m}"));
        let mut lines: Vec<&str> = base
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| l.get(4..).unwrap_or(""))
            .map(|kw| match &auth {
                Some(a) if kw.starts_with("AUTH ") => a.as_str(),
                _ => kw,
            })
            .filter(|kw| {
                let word = kw.split_whitespace().next().unwrap_or("");
                let hidden_auth = word.eq_ignore_ascii_case("AUTH") && !self.auth_offered(secured);
                let hidden_utf8 = word.eq_ignore_ascii_case("SMTPUTF8") && !self.smtputf8;
                !hidden_auth && !hidden_utf8
            })
            .collect();
        if self.can_starttls(secured) {
            lines.push("STARTTLS");
        }
        let last = lines.len().saturating_sub(1);
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
            .collect()
    }

    /// The reply to a whole AUTH exchange: the command's words and the client's answers to
    /// the 334 prompts.
    pub fn auth_reply(&self, args: &[&str], answers: &[String]) -> Reply {
        let Some((user, password)) = &self.credentials else {
            return Reply::code(235, "2.7.0 Authentication successful");
        };
        let decode = |s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let mech = args
            .first()
            .map(|m| m.to_ascii_uppercase())
            .unwrap_or_default();
        let given = match mech.as_str() {
            "PLAIN" => args
                .get(1)
                .copied()
                .or(answers.first().map(String::as_str))
                .and_then(decode)
                .and_then(|p| {
                    let mut parts = p.split('\0').skip(1);
                    Some((parts.next()?.to_string(), parts.next()?.to_string()))
                }),
            "LOGIN" => {
                let mut all: Vec<&str> = args.iter().skip(1).copied().collect();
                all.extend(answers.iter().map(String::as_str));
                match all.as_slice() {
                    [u, p] => decode(u).zip(decode(p)),
                    _ => None,
                }
            }
            _ => return Reply::code(504, "5.5.4 Unrecognized authentication type"),
        };
        if given.as_ref() == Some(&(user.clone(), password.clone())) {
            Reply::code(235, "2.7.0 Authentication successful")
        } else {
            Reply::code(535, "5.7.8 Authentication credentials invalid")
        }
    }

    /// The stream a new connection speaks over, and whether it is encrypted.
    pub async fn accept_connection(&self, tcp: TcpStream) -> std::io::Result<(Stream, bool)> {
        match &self.tls {
            Some(config) if self.implicit => {
                Ok((Box::new(handshake(config, Box::new(tcp)).await?), true))
            }
            _ => Ok((Box::new(tcp), false)),
        }
    }

    /// The server side of STARTTLS over `plain`.
    pub async fn upgrade(&self, plain: Stream) -> std::io::Result<Stream> {
        let config = self
            .tls
            .as_ref()
            .ok_or_else(|| std::io::Error::other("STARTTLS without a TLS configuration"))?;
        Ok(Box::new(handshake(config, plain).await?))
    }
}

async fn handshake(
    config: &Arc<ServerConfig>,
    plain: Stream,
) -> std::io::Result<tokio_rustls::server::TlsStream<Stream>> {
    TlsAcceptor::from(config.clone()).accept(plain).await
}

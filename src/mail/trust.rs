//! Which relay certificates Herald trusts, and what a refused one means.
//!
//! Trusted: the bundled web PKI roots, the system's store (where an administrator installs a
//! company CA), and the CAs of `smtp.ca_file`; or, for test setups only, any certificate
//! (`smtp.tls_insecure`). lettre's `CertificateStore::Default` with the `rustls-native-certs`
//! feature would load the system store *instead of* the web PKI roots, so the roots are
//! assembled here and handed to lettre's builder on top of `CertificateStore::WebpkiRoots`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The CA certificates of `smtp.ca_file`: read and parsed at config load, at least one, each
/// usable as a trust anchor.
#[derive(Clone)]
pub struct CaFile {
    path: PathBuf,
    certs: Arc<[CertificateDer<'static>]>,
}

/// Why `smtp.ca_file` cannot be used. Each message names the path and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaFileError {
    #[error(
        "cannot read {path}: {reason}; expected a readable PEM file with the relay's CA certificate(s)"
    )]
    Read { path: PathBuf, reason: String },
    #[error("{path} is not valid PEM ({reason}); expected -----BEGIN CERTIFICATE----- blocks")]
    Pem { path: PathBuf, reason: String },
    #[error(
        "{path} holds no certificate; expected one or more -----BEGIN CERTIFICATE----- blocks (the CA that signed the relay's certificate)"
    )]
    Empty { path: PathBuf },
    #[error(
        "certificate #{index} in {path} cannot be a trust anchor ({reason}); expected the CA's certificate in PEM"
    )]
    Anchor {
        path: PathBuf,
        index: usize,
        reason: String,
    },
}

impl CaFile {
    /// Reads and parses `path` (blocking: called while the configuration loads).
    pub fn load(path: &Path) -> Result<CaFile, CaFileError> {
        let bytes = std::fs::read(path).map_err(|e| CaFileError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CaFileError::Pem {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(CaFileError::Empty {
                path: path.to_owned(),
            });
        }
        for (i, cert) in certs.iter().enumerate() {
            usable_anchor(cert).map_err(|reason| CaFileError::Anchor {
                path: path.to_owned(),
                index: i + 1,
                reason,
            })?;
        }
        Ok(CaFile {
            path: path.to_owned(),
            certs: certs.into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many certificates the file holds (at least one).
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

impl std::fmt::Debug for CaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CaFile({}, {} certificate(s))",
            self.path.display(),
            self.certs.len()
        )
    }
}

fn usable_anchor(cert: &CertificateDer<'static>) -> Result<(), String> {
    rustls::RootCertStore::empty()
        .add(cert.clone())
        .map_err(|e| e.to_string())
}

/// How the relay's certificate is checked (`smtp.ca_file`, `smtp.tls_insecure`).
#[derive(Clone, Debug, Default)]
pub struct TlsTrust {
    /// CAs trusted in addition to the web PKI roots and the system store.
    pub ca_file: Option<CaFile>,
    /// Accept any certificate and any name: only for test setups.
    pub insecure: bool,
}

impl TlsTrust {
    /// `system store + web PKI roots (+ N from FILE)` or `any certificate (smtp.tls_insecure)`.
    pub fn describe(&self) -> String {
        if self.insecure {
            return "any certificate (smtp.tls_insecure = true: test setups only)".into();
        }
        match &self.ca_file {
            Some(f) => format!(
                "web PKI roots, system store and {} CA(s) from {}",
                f.len(),
                f.path.display()
            ),
            None => "web PKI roots and system store".into(),
        }
    }

    /// lettre's TLS parameters for `host`. Blocking (reads the system store the first time):
    /// call it from `spawn_blocking`.
    pub(crate) fn parameters(
        &self,
        host: &str,
    ) -> Result<TlsParameters, lettre::transport::smtp::Error> {
        let mut builder = TlsParameters::builder(host.to_owned())
            .certificate_store(CertificateStore::WebpkiRoots);
        if self.insecure {
            builder = builder
                .dangerous_accept_invalid_certs(true)
                .dangerous_accept_invalid_hostnames(true);
        } else {
            let extra = self.ca_file.iter().flat_map(|f| f.certs.iter());
            for der in system_roots().iter().chain(extra) {
                builder = builder.add_root_certificate(Certificate::from_der(der.to_vec())?);
            }
        }
        builder.build()
    }
}

impl TlsTrust {
    /// The same trust anchors as [`parameters`](Self::parameters) (web PKI roots, system store,
    /// `ca_file`) for a rustls client of Herald's own, such as the IMAP poller. `insecure` is not
    /// honoured here: those clients always verify. Blocking the first time (the system store).
    pub(crate) fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let extra = self.ca_file.iter().flat_map(|f| f.certs.iter());
        for der in system_roots().iter().chain(extra) {
            // Each was checked as a usable anchor when it was loaded.
            let _ = roots.add(der.clone());
        }
        roots
    }
}

/// The system store's usable CA certificates, read once per process.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        // lettre's builder fails as a whole on one unusable anchor: keep only usable ones.
        let certs: Vec<_> = found
            .certs
            .into_iter()
            .filter(|c| usable_anchor(c).is_ok())
            .collect();
        tracing::debug!(
            certificates = certs.len(),
            errors = found.errors.len(),
            "system trust store loaded"
        );
        certs
    })
}

/// What a refused certificate means for the operator, if `err`'s chain holds one:
/// `host:port (Kind): what to do`.
pub(crate) fn certificate_problem(
    host: &str,
    port: u16,
    err: &(dyn std::error::Error + 'static),
) -> Option<String> {
    use rustls::CertificateError as C;
    let cert_err = match find_rustls_error(err)? {
        rustls::Error::InvalidCertificate(c) => c,
        _ => return None,
    };
    let at = format!("{host}:{port}");
    Some(match cert_err {
        C::UnknownIssuer => format!(
            "{at} (UnknownIssuer): if the relay uses a company CA, set smtp.ca_file to its PEM (or install it in the system store)"
        ),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            let names = match cert_err {
                C::NotValidForNameContext { presented, .. } if !presented.is_empty() => {
                    format!(" (it names {})", presented.join(", "))
                }
                _ => String::new(),
            };
            format!(
                "{at} presents a certificate not valid for the name {host}{names} (NotValidForName): connect by a name the certificate carries in smtp.url"
            )
        }
        C::Expired | C::ExpiredContext { .. } => {
            format!("{at} presents an expired certificate (Expired): the relay must renew it")
        }
        C::NotValidYet | C::NotValidYetContext { .. } => format!(
            "{at} presents a certificate not valid yet (NotValidYet): check this machine's clock or the relay's certificate"
        ),
        other if format!("{other:?}").contains("CaUsedAsEndEntity") => format!(
            "{at} (CaUsedAsEndEntity): the relay presents a CA certificate as its own, as a self-signed `openssl req -x509` certificate is; give the relay a server certificate (CA:FALSE) signed by a CA and set smtp.ca_file to that CA's PEM, or for a test setup set smtp.tls_insecure = true"
        ),
        other => format!(
            "{at} ({other:?}): check the relay's certificate, or set smtp.ca_file to the CA that signed it"
        ),
    })
}

/// Any TLS-level failure in `err`'s chain, as `rustls` reports it.
pub(crate) fn find_rustls_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        // io::Error::source skips the error it wraps; look inside it.
        if let Some(found) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_path_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("herald-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = CaFile::load(&missing).unwrap_err().to_string();
        assert!(
            err.contains("missing.pem") && err.contains("cannot read"),
            "{err}"
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "just text\n").unwrap();
        let err = CaFile::load(&empty).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no certificate"),
            "{err}"
        );
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = CaFile::load(&broken).unwrap_err().to_string();
        assert!(err.contains("broken.pem"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn describe_says_what_is_trusted() {
        assert_eq!(
            TlsTrust::default().describe(),
            "web PKI roots and system store"
        );
        let insecure = TlsTrust {
            insecure: true,
            ..TlsTrust::default()
        };
        assert!(insecure.describe().contains("smtp.tls_insecure"));
    }
}

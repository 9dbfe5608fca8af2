//! Outgoing mail: relay URLs, the transport (file outbox or SMTP) and DKIM signing.

pub mod dkim;
pub mod smtp_url;
pub mod transport;
pub mod trust;

pub use dkim::{DkimError, DkimSigner, SigningPool};
pub use smtp_url::{SmtpEndpoint, SmtpUrlError, Tls};
pub use transport::{
    EnhancedStatus, MailConnection, Mailer, SendFailure, SmtpReply, SmtpStage, TransportConfig,
};
pub use trust::{CaFile, CaFileError, TlsTrust};

//! Domain types: values that can only hold what the product allows.

pub mod email;
pub mod language;
pub mod mailbox;
pub mod state;
pub mod token;

pub use email::{EmailAddress, EmailError};
pub use language::{Direction, LanguageTag, LanguageTagError};
pub use mailbox::Mailbox;
pub use state::{
    ConsentKind, DeliveryState, IssueStatus, ItemState, MatchedBy, OneOffState, ReportKind,
    ReportOutcome, ReportSource, RunState, SubscriptionState,
};
pub use token::{BounceTag, ConfirmationToken, Secret, UnsubscribeToken};

/// Milliseconds since the Unix epoch: the one time representation in the
/// database, identical on SQLite and PostgreSQL and cheap to compare.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

pub fn ms_to_datetime(ms: Millis) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A stored time as people and exports read it: RFC 3339 in UTC, to the second.
pub fn ms_to_rfc3339(ms: Millis) -> String {
    ms_to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

//! Delivery: outcome classification and retry policy.

pub mod classify;
pub mod control;
pub mod engine;
pub mod retry;

pub use classify::{Verdict, classify};
pub use retry::{RetryPolicy, parse_duration, parse_schedule};

//! Delivery: outcome classification, retry and recipient policy, the engine, editors' controls.

pub mod classify;
pub mod control;
pub mod engine;
pub mod policy;
pub mod relay_watch;
pub mod retry;

pub use classify::{Verdict, classify};
pub use retry::{RetryPolicy, parse_duration, parse_schedule};

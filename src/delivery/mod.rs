//! Delivery: outcome classification and retry policy.

pub mod classify;

pub use classify::{Verdict, classify};

//! Herald: an email newsletter dispatcher. See ARCHITECTURE.md for the map.

pub mod admin;
pub mod app;
pub mod bounce;
pub mod cli;
pub mod clock;
pub mod config;
pub mod content;
pub mod delivery;
pub mod digest_file;
pub mod domain;
pub mod editors;
pub mod mail;
pub mod metrics;
pub mod readiness;
pub mod render;
pub mod schedule;
pub mod store;
pub mod subscribers;
pub mod telemetry;
pub mod web;

//! Shared helpers for integration tests (`mod support;`).
#![allow(dead_code)]

pub mod app;
pub mod cli;
pub mod engine;
pub mod smtp_server;

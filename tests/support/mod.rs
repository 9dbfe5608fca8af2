//! Shared helpers for integration tests (`mod support;`).
#![allow(dead_code)]

pub mod admin;
pub mod api;
pub mod app;
pub mod browser;
pub mod cli;
pub mod db_proxy;
pub mod delivered;
pub mod dovecot;
pub mod engine;
pub mod postfix;
pub mod smtp_server;
pub mod tls;

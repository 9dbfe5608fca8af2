//! Herald: an email newsletter dispatcher. See ARCHITECTURE.md for the map.

pub mod config;
pub mod domain;
pub mod store;
pub mod app;
pub mod subscribers;
pub mod delivery;
pub mod mail;
pub mod web;
pub mod cli;

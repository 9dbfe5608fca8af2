//! Herald: an email newsletter dispatcher. See ARCHITECTURE.md for the map.
pub mod delivery;
pub mod mail;

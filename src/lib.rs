//! Herald: an email newsletter dispatcher. See ARCHITECTURE.md for the map.
pub mod digest_file;
pub mod render;

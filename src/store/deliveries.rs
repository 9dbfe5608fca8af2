//! Deliveries and their attempts.

//! Items and issues.

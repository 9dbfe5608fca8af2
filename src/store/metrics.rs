//! The counts `GET /metrics` shows, read at scrape time (cached by `metrics::Metrics`).

use super::{Db, Result, with_pool};
use crate::domain::{DeliveryState, SubscriptionState};
use crate::metrics::StateCounts;

impl Db {
    /// Deliveries and subscriptions per state: one grouped count each, over
    /// the indexes that lead with (or contain) the state.
    pub async fn state_counts(&self) -> Result<StateCounts> {
        let deliveries: Vec<(DeliveryState, i64)> = with_pool!(self, |p| {
            sqlx::query_as("SELECT state, COUNT(*) FROM deliveries GROUP BY state")
                .fetch_all(p)
                .await?
        });
        let subscriptions: Vec<(SubscriptionState, i64)> = with_pool!(self, |p| {
            sqlx::query_as("SELECT state, COUNT(*) FROM subscriptions GROUP BY state")
                .fetch_all(p)
                .await?
        });
        Ok(StateCounts {
            deliveries,
            subscriptions,
        })
    }
}

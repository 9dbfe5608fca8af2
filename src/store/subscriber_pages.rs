//! Reads of subscribers a page at a time (the API's list and its CSV
//! export), and a subscriber's deliveries.

use super::subscribers::ListedSubscriber;
use super::{Db, Result, with_pool};
use crate::domain::{DeliveryState, Millis, SubscriptionState};

/// One delivery of one subscriber, with its issue's number.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct SubscriberDelivery {
    pub issue_id: i64,
    pub issue_number: i64,
    pub state: DeliveryState,
    pub attempts: i64,
    pub last_reply: Option<String>,
    pub sent_at: Option<Millis>,
}

impl Db {
    /// Up to `limit` subscribers of a newsletter with an id above `after`,
    /// by id: keyset paging, so page n costs what page 1 costs and rows
    /// added meanwhile are neither skipped nor repeated.
    pub async fn subscribers_page(
        &self,
        newsletter_id: i64,
        state: Option<SubscriptionState>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ListedSubscriber>> {
        // One query shape for both, chosen for the plan (see there).
        self.search_subscribers_page(newsletter_id, "", state, after, limit)
            .await
    }

    /// The subscriber's most recent deliveries, newest first.
    pub async fn deliveries_of_subscriber(
        &self,
        subscriber_id: i64,
        limit: i64,
    ) -> Result<Vec<SubscriberDelivery>> {
        Ok(with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT d.issue_id, i.number AS issue_number, d.state, d.attempts, d.last_reply, d.sent_at
                 FROM deliveries d JOIN issues i ON i.id = d.issue_id
                 WHERE d.subscriber_id = $1 ORDER BY d.id DESC LIMIT $2",
            )
            .bind(subscriber_id)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }
}

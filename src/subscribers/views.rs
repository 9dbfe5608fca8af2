//! What editors look at about subscribers: a reader's profile and the list.
//! The CLI, and later the editors' API and admin site, read through these,
//! never the store directly.

use serde::Serialize;

use crate::app::App;
use crate::domain::{EmailAddress, SubscriptionState};
use crate::store::subscribers::{ConsentEventRow, ListedSubscriber, Subscriber, SubscriptionRow};
use crate::store::{Newsletter, StoreError};

/// Everything Herald knows about one reader.
#[derive(Debug, Serialize)]
pub struct SubscriberProfile {
    pub subscriber: Subscriber,
    pub suppressed: bool,
    /// (newsletter slug, subscription), by slug.
    pub subscriptions: Vec<(String, SubscriptionRow)>,
    pub consent_history: Vec<ConsentEventRow>,
}

impl App {
    /// The reader with this address (any spelling), or None.
    pub async fn subscriber_profile(
        &self,
        email: &EmailAddress,
    ) -> Result<Option<SubscriberProfile>, StoreError> {
        let Some(subscriber) = self.db.subscriber_by_email(email).await? else {
            return Ok(None);
        };
        Ok(Some(SubscriberProfile {
            suppressed: self.db.is_suppressed(email).await?,
            subscriptions: self.db.subscriptions_of(subscriber.id).await?,
            consent_history: self.db.consent_history(subscriber.id).await?,
            subscriber,
        }))
    }

    /// A newsletter's subscribers, optionally in one state, oldest first.
    pub async fn list_subscribers(
        &self,
        newsletter: &Newsletter,
        state: Option<SubscriptionState>,
    ) -> Result<Vec<ListedSubscriber>, StoreError> {
        self.db.list_subscribers(newsletter.id, state).await
    }

    /// Streams a newsletter's subscribers row by row, in constant memory.
    pub async fn for_each_subscriber(
        &self,
        newsletter: &Newsletter,
        state: Option<SubscriptionState>,
        f: impl FnMut(ListedSubscriber) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.db.for_each_subscriber(newsletter.id, state, f).await
    }
}

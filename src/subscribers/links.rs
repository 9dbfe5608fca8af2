//! What the public links resolve to: the confirmation and unsubscribe
//! pages, "subscribe again", and the archive. The web handlers render these
//! answers and never query the database themselves.

use std::sync::Arc;

use super::{SubscribeOutcome, SubscribeRequest, SubscriberError, stored_email};
use crate::app::{App, LookupError};
use crate::domain::{ConfirmationToken, UnsubscribeToken, now_ms};
use crate::store::content::IssueSummary;
use crate::store::subscribers::{ConsentContext, TokenLookup};
use crate::store::{Newsletter, StoreError};

/// What the GET of a confirmation link shows. It changes nothing: link
/// scanners follow GETs, so only the page's POST button confirms.
#[derive(Debug, Clone)]
pub enum ConfirmationView {
    /// Unused, or already used (pressing Confirm again is harmless).
    Ready {
        newsletter: Arc<Newsletter>,
    },
    Expired,
    Unknown,
}

impl App {
    pub async fn confirmation_view(&self, token: &str) -> Result<ConfirmationView, LookupError> {
        let Some(token) = ConfirmationToken::from_url(token) else {
            return Ok(ConfirmationView::Unknown);
        };
        Ok(
            match self
                .db
                .lookup_confirmation_token(&token.hash(), now_ms())
                .await?
            {
                TokenLookup::Valid { newsletter_id, .. }
                | TokenLookup::AlreadyUsed { newsletter_id, .. } => ConfirmationView::Ready {
                    newsletter: self.newsletter_by_id(newsletter_id).await?,
                },
                TokenLookup::Expired => ConfirmationView::Expired,
                TokenLookup::Unknown => ConfirmationView::Unknown,
            },
        )
    }

    /// The newsletter a verified link or an outcome names.
    pub async fn newsletter_by_id(&self, id: i64) -> Result<Arc<Newsletter>, LookupError> {
        if id == self.newsletter.id {
            return Ok(self.newsletter.clone());
        }
        Ok(Arc::new(self.db.newsletter_by_id(id).await?))
    }

    /// "Subscribe again" from an unsubscribe page: a fresh double opt-in for
    /// the token's subscriber. `None` when the subscriber was erased since.
    pub async fn request_resubscription(
        &self,
        token: UnsubscribeToken,
        context: ConsentContext,
    ) -> Result<Option<SubscribeOutcome>, SubscriberError> {
        let Some(subscriber) = self.db.subscriber_by_id(token.subscriber_id).await? else {
            return Ok(None);
        };
        let email = stored_email(&subscriber)?;
        let newsletter = self.newsletter_by_id(token.newsletter_id).await?;
        self.request_subscription(SubscribeRequest {
            email: &email,
            name: None,
            newsletter: &newsletter,
            context,
        })
        .await
        .map(Some)
    }

    /// The public archive's index (summaries only, no renderings).
    pub async fn archive_index(&self) -> Result<Vec<IssueSummary>, StoreError> {
        self.db.archived_issue_summaries().await
    }

    /// The stored web rendering of an archived issue.
    pub async fn archived_web_page(&self, slug: &str) -> Result<Option<String>, StoreError> {
        Ok(self.db.archived_issue(slug).await?.map(|i| i.web_html))
    }
}

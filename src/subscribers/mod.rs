//! The subscriber lifecycle: double opt-in, confirmation, unsubscribe,
//! resubscribe, admin changes and erasure. Web handlers and CLI commands
//! call these; nothing here knows about HTTP.

pub mod confirmation_mail;
pub mod import;
pub mod links;
pub mod paging;
pub mod views;

use std::time::Duration;

use crate::app::App;
use crate::domain::{
    ConfirmationToken, ConsentKind, EmailAddress, Millis, SubscriptionState, UnsubscribeToken,
    now_ms,
};
use crate::store::subscribers::{ConsentContext, Subscriber, TokenLookup};
use crate::store::{Newsletter, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SubscriberError {
    #[error("invalid email address {input:?}: {reason}")]
    InvalidEmail {
        input: String,
        reason: crate::domain::EmailError,
    },
    #[error("no subscriber with address {0}")]
    NotFound(String),
    #[error(
        "{email} is {why}; Herald will not mail it again without a fresh confirmation. Run the command without --confirmed to send the subscriber a confirmation link"
    )]
    NeedsConfirmation { email: String, why: String },
    #[error(
        "the name must be a single line of at most 200 characters, without line breaks, NUL or other control characters; shorten it or leave the name out"
    )]
    BadName,
    #[error(transparent)]
    Lookup(#[from] crate::app::LookupError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a subscribe request did. The public answer is the same for every
/// variant (no enumeration); the variants exist for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeOutcome {
    ConfirmationSent(ConfirmationMail),
    AlreadyConfirmed,
    RateLimited,
}

/// A built confirmation mail and the envelope it travels in (the
/// newsletter it confirms decides the bounce address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmationMail {
    pub to: EmailAddress,
    pub envelope_from: String,
    pub bytes: Vec<u8>,
}

pub struct SubscribeRequest<'a> {
    pub email: &'a EmailAddress,
    pub name: Option<&'a str>,
    pub newsletter: &'a Newsletter,
    pub context: ConsentContext,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Confirmed { newsletter_id: i64 },
    AlreadyConfirmed { newsletter_id: i64 },
    Expired,
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsubscribeOutcome {
    Unsubscribed {
        email: String,
        newsletter_id: i64,
    },
    AlreadyUnsubscribed {
        email: String,
        newsletter_id: i64,
    },
    /// Token verified but the subscriber was erased since.
    Gone,
}

pub fn parse_email(input: &str) -> Result<EmailAddress, SubscriberError> {
    EmailAddress::parse(input).map_err(|reason| SubscriberError::InvalidEmail {
        input: input.to_owned(),
        reason,
    })
}

pub fn clean_name(name: Option<&str>) -> Result<Option<&str>, SubscriberError> {
    match name.map(str::trim) {
        None | Some("") => Ok(None),
        Some(n) if n.chars().count() > 200 || n.chars().any(char::is_control) => {
            Err(SubscriberError::BadName)
        }
        Some(n) => Ok(Some(n)),
    }
}

impl App {
    /// Double opt-in, step one: (rate limits permitting) prepares a
    /// confirmation mail. Sending it is the caller's choice: the web spawns
    /// it, the CLI waits for it.
    ///
    /// A `request` consent event is appended only when a confirmation mail
    /// is issued, i.e. at most once per `subscribe.resend_interval`: the
    /// history records the requests that had an effect, and repeated probes
    /// of an address (already confirmed, or rate-limited) add nothing to
    /// that person's history.
    pub async fn request_subscription(
        &self,
        req: SubscribeRequest<'_>,
    ) -> Result<SubscribeOutcome, SubscriberError> {
        let now = now_ms();
        let nl = req.newsletter;
        let (subscriber, _created) = self.db.ensure_subscriber(req.email, req.name, now).await?;
        self.db
            .ensure_pending_subscription(subscriber.id, nl.id, now)
            .await?;
        let state = self.subscription_state(subscriber.id, nl.id).await?;
        if state == SubscriptionState::Confirmed && !self.db.is_suppressed(req.email).await? {
            return Ok(SubscribeOutcome::AlreadyConfirmed);
        }
        let interval = millis(self.config.subscribe.resend_interval.0);
        if !self
            .db
            .claim_confirmation_slot(subscriber.id, nl.id, now, now - interval)
            .await?
        {
            return Ok(SubscribeOutcome::RateLimited);
        }
        self.db
            .record_consent(
                subscriber.id,
                nl.id,
                ConsentKind::Request,
                &req.context,
                now,
            )
            .await?;
        let token = ConfirmationToken::generate();
        let expires = now + millis(self.config.subscribe.confirm_ttl.0);
        self.db
            .insert_confirmation_token(&token.hash(), subscriber.id, nl.id, now, expires)
            .await?;
        // The mail goes to the spelling stored first, whichever spelling this
        // request used: one identity, one address on the wire.
        let to = EmailAddress::parse(&subscriber.email)
            .map_err(|e| StoreError::Corrupt(format!("subscriber {}: {e}", subscriber.id)))?;
        Ok(SubscribeOutcome::ConfirmationSent(ConfirmationMail {
            bytes: confirmation_mail::build(self, nl, &to, &token, &req.context, now),
            to,
            envelope_from: self.return_path(
                nl,
                crate::domain::BounceTag::Confirmation {
                    subscriber_id: subscriber.id,
                    newsletter_id: nl.id,
                },
            ),
        }))
    }

    async fn subscription_state(
        &self,
        subscriber_id: i64,
        newsletter_id: i64,
    ) -> Result<SubscriptionState, StoreError> {
        Ok(self
            .db
            .subscription(subscriber_id, newsletter_id)
            .await?
            .map_or(SubscriptionState::Pending, |row| row.state))
    }

    /// Sends a prepared confirmation mail, retrying a transport failure a few
    /// times (1 s, 5 s, 25 s) before giving up with a logged error.
    pub async fn send_confirmation(&self, mail: &ConfirmationMail) -> bool {
        let to = &mail.to;
        for (attempt, wait) in [1u64, 5, 25, 0].into_iter().enumerate() {
            match self
                .mailer
                .send_one(&mail.envelope_from, to.as_str(), &mail.bytes)
                .await
            {
                Ok(_) => return true,
                // WARN and ERROR lines end up in shared log systems: the
                // address is redacted there, in full only at debug level.
                Err(e) if wait > 0 => {
                    tracing::debug!(%to, attempt, "confirmation mail failed");
                    tracing::warn!(to = %to.redacted(), attempt, error = %e, "confirmation mail not sent; retrying in {wait}s");
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                Err(e) => {
                    tracing::debug!(%to, "confirmation mail failed for good");
                    tracing::error!(to = %to.redacted(), error = %e, "confirmation mail not sent; giving up");
                }
            }
        }
        false
    }

    /// Double opt-in, step two (the POST behind the Confirm button).
    pub async fn confirm_subscription(
        &self,
        token: &str,
        context: ConsentContext,
    ) -> Result<ConfirmOutcome, SubscriberError> {
        let Some(token) = ConfirmationToken::from_url(token) else {
            return Ok(ConfirmOutcome::Invalid);
        };
        let now = now_ms();
        let hash = token.hash();
        match self.db.lookup_confirmation_token(&hash, now).await? {
            TokenLookup::Unknown => Ok(ConfirmOutcome::Invalid),
            TokenLookup::Expired => Ok(ConfirmOutcome::Expired),
            TokenLookup::AlreadyUsed {
                subscriber_id,
                newsletter_id,
            } => {
                match self
                    .subscription_state(subscriber_id, newsletter_id)
                    .await?
                {
                    SubscriptionState::Confirmed => {
                        Ok(ConfirmOutcome::AlreadyConfirmed { newsletter_id })
                    }
                    // Used, then unsubscribed: an old link must not resubscribe.
                    _ => Ok(ConfirmOutcome::Invalid),
                }
            }
            TokenLookup::Valid { newsletter_id, .. } => {
                // Confirming again after an unsubscribe or a bounce is a
                // resubscription; the first confirmation is a confirmation.
                let kind_for = |previous: Option<SubscriptionState>| match previous {
                    None | Some(SubscriptionState::Pending | SubscriptionState::Confirmed) => {
                        ConsentKind::Confirm
                    }
                    Some(_) => ConsentKind::Resubscribe,
                };
                match self
                    .db
                    .confirm_with_token(&hash, &context, now, kind_for)
                    .await?
                {
                    Some(newsletter_id) => Ok(ConfirmOutcome::Confirmed { newsletter_id }),
                    // Another request (a double click) spent it between the
                    // lookup and now; expiry cannot differ, `now` is the same.
                    None => Ok(ConfirmOutcome::AlreadyConfirmed { newsletter_id }),
                }
            }
        }
    }

    /// Verifies an unsubscribe token without changing anything (for the GET page).
    pub fn check_unsubscribe_token(&self, token: &str) -> Option<UnsubscribeToken> {
        UnsubscribeToken::verify(token, &self.secret)
    }

    /// One-click or button unsubscribe. Idempotent; records the method once.
    pub async fn unsubscribe(
        &self,
        token: UnsubscribeToken,
        context: ConsentContext,
    ) -> Result<UnsubscribeOutcome, SubscriberError> {
        let Some(subscriber) = self.db.subscriber_by_id(token.subscriber_id).await? else {
            return Ok(UnsubscribeOutcome::Gone);
        };
        let email = stored_email(&subscriber)?;
        self.unsubscribe_subscriber(&subscriber, &email, token.newsletter_id, context)
            .await
    }

    async fn unsubscribe_subscriber(
        &self,
        subscriber: &Subscriber,
        email: &EmailAddress,
        newsletter_id: i64,
        context: ConsentContext,
    ) -> Result<UnsubscribeOutcome, SubscriberError> {
        let state = self
            .subscription_state(subscriber.id, newsletter_id)
            .await?;
        let email_text = subscriber.email.clone();
        if matches!(
            state,
            SubscriptionState::Unsubscribed
                | SubscriptionState::Bounced
                | SubscriptionState::Complained
        ) {
            return Ok(UnsubscribeOutcome::AlreadyUnsubscribed {
                email: email_text,
                newsletter_id,
            });
        }
        self.db
            .change_subscription(
                subscriber.id,
                email,
                newsletter_id,
                SubscriptionState::Unsubscribed,
                ConsentKind::Unsubscribe,
                &context,
            )
            .await?;
        Ok(UnsubscribeOutcome::Unsubscribed {
            email: email_text,
            newsletter_id,
        })
    }

    /// `herald subscribers add`: with `confirmed`, the editor vouches for
    /// consent obtained elsewhere (recorded as an admin change); without it,
    /// the address gets a confirmation mail like a form signup.
    pub async fn add_subscriber(
        &self,
        email: &EmailAddress,
        name: Option<&str>,
        newsletter: &Newsletter,
        confirmed: bool,
    ) -> Result<SubscribeOutcome, SubscriberError> {
        self.add_subscriber_from(email, name, newsletter, confirmed, "cli")
            .await
    }

    /// `add_subscriber`, recording `source` (`cli`, `api:EDITOR`) as who
    /// made the change in the consent history.
    pub async fn add_subscriber_from(
        &self,
        email: &EmailAddress,
        name: Option<&str>,
        newsletter: &Newsletter,
        confirmed: bool,
        source: &str,
    ) -> Result<SubscribeOutcome, SubscriberError> {
        let context = ConsentContext {
            source: source.into(),
            method: Some("admin".into()),
            ..Default::default()
        };
        if !confirmed {
            let req = SubscribeRequest {
                email,
                name,
                newsletter,
                context,
            };
            return self.request_subscription(req).await;
        }
        let now = now_ms();
        // Decide before writing anything: a refused add must not re-create
        // (or rename) the row of an erased or unsubscribed address.
        let state = match self.db.subscriber_by_email(email).await? {
            Some(existing) => self.subscription_state(existing.id, newsletter.id).await?,
            None => SubscriptionState::Pending,
        };
        let why = if self.db.is_suppressed(email).await? {
            Some("suppressed (it bounced, complained or was erased)".to_owned())
        } else if matches!(
            state,
            SubscriptionState::Unsubscribed
                | SubscriptionState::Bounced
                | SubscriptionState::Complained
        ) {
            Some(format!("{state} from {}", newsletter.slug))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(SubscriberError::NeedsConfirmation {
                email: email.to_string(),
                why,
            });
        }
        let (subscriber, _) = self.db.ensure_subscriber(email, name, now).await?;
        if let Some(name) = name {
            self.db.set_subscriber_name(subscriber.id, name).await?;
        }
        if state != SubscriptionState::Confirmed {
            self.db
                .change_subscription(
                    subscriber.id,
                    email,
                    newsletter.id,
                    SubscriptionState::Confirmed,
                    ConsentKind::AdminChange,
                    &context,
                )
                .await?;
        }
        Ok(SubscribeOutcome::AlreadyConfirmed)
    }

    /// `herald subscribers remove`: unsubscribes (keeps the record and history).
    pub async fn remove_subscriber(
        &self,
        email: &EmailAddress,
        newsletter: &Newsletter,
    ) -> Result<UnsubscribeOutcome, SubscriberError> {
        self.remove_subscriber_from(email, newsletter, "cli").await
    }

    /// `remove_subscriber`, recording `source` as who made the change.
    pub async fn remove_subscriber_from(
        &self,
        email: &EmailAddress,
        newsletter: &Newsletter,
        source: &str,
    ) -> Result<UnsubscribeOutcome, SubscriberError> {
        let subscriber = self
            .db
            .subscriber_by_email(email)
            .await?
            .ok_or_else(|| SubscriberError::NotFound(email.to_string()))?;
        let context = ConsentContext {
            source: source.into(),
            method: Some("admin".into()),
            ..Default::default()
        };
        self.unsubscribe_subscriber(&subscriber, email, newsletter.id, context)
            .await
    }

    /// `herald subscribers erase`: GDPR erasure.
    pub async fn erase_subscriber(&self, email: &EmailAddress) -> Result<(), SubscriberError> {
        let subscriber = self
            .db
            .subscriber_by_email(email)
            .await?
            .ok_or_else(|| SubscriberError::NotFound(email.to_string()))?;
        self.db
            .erase_subscriber(&subscriber, email, now_ms())
            .await?;
        Ok(())
    }

    /// "May this address be sent this newsletter now?" — confirmed and not suppressed.
    pub async fn is_sendable(
        &self,
        email: &EmailAddress,
        newsletter_id: i64,
    ) -> Result<bool, StoreError> {
        let Some(subscriber) = self.db.subscriber_by_email(email).await? else {
            return Ok(false);
        };
        Ok(self
            .subscription_state(subscriber.id, newsletter_id)
            .await?
            == SubscriptionState::Confirmed
            && !self.db.is_suppressed(email).await?)
    }
}

fn stored_email(subscriber: &Subscriber) -> Result<EmailAddress, StoreError> {
    EmailAddress::parse(&subscriber.email)
        .map_err(|e| StoreError::Corrupt(format!("stored address {:?}: {e}", subscriber.email)))
}

pub(crate) fn millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

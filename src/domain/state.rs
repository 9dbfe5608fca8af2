//! The states of the things Herald tracks, with their database spelling in
//! one place.

use std::fmt;
use std::str::FromStr;

/// Declares a closed set of states stored as text, with `as_str`, `Display`
/// and `FromStr` that name the accepted values in their error.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.pad(self.as_str()) }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {:?}: expected one of {}",
                        stringify!($name), other, [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

text_enum!(
    /// A subscriber's relation to one newsletter.
    SubscriptionState {
        Pending => "pending",
        Confirmed => "confirmed",
        Unsubscribed => "unsubscribed",
        Bounced => "bounced",
        Complained => "complained",
    }
);

text_enum!(
    /// What a consent record says happened.
    ConsentKind {
        Request => "request",
        Confirm => "confirm",
        Unsubscribe => "unsubscribe",
        Resubscribe => "resubscribe",
        Import => "import",
        AdminChange => "admin-change",
        Bounce => "bounce",
        /// An abuse report (or a provider's complaint event) about one of our messages.
        Complaint => "complaint",
    }
);

text_enum!(
    /// An item's place in the editorial week.
    ItemState {
        Draft => "draft",
        Ready => "ready",
        Published => "published",
    }
);

text_enum!(
    /// The send status of an issue as editors control it. `scheduled`: composed
    /// by the scheduler ahead of its slot or waiting for a one-off send; sent
    /// as it stands at its time unless held or cancelled.
    IssueStatus {
        Draft => "draft",
        Sending => "sending",
        Paused => "paused",
        Cancelled => "cancelled",
        Sent => "sent",
        Scheduled => "scheduled",
    }
);

text_enum!(
    /// One recipient's delivery of one issue.
    DeliveryState {
        Queued => "queued",
        Sending => "sending",
        Sent => "sent",
        RetryWait => "retry_wait",
        Failed => "failed",
        Skipped => "skipped",
        Cancelled => "cancelled",
        /// Accepted by the relay (`sent`), then reported failed by a later
        /// delivery status notification or a provider's bounce event.
        Bounced => "bounced",
    }
);

text_enum!(
    /// One slot of a newsletter's schedule (`schedule_runs`): recorded
    /// before anything is composed, then moved forward one step at a time
    /// under a lease, so a crashed process's slot is finished by another.
    RunState {
        Pending => "pending",
        Composed => "composed",
        Waiting => "waiting",
        Held => "held",
        Enqueued => "enqueued",
        Skipped => "skipped",
        Missed => "missed",
        Cancelled => "cancelled",
        Failed => "failed",
    }
);

text_enum!(
    /// How a bounce or complaint report reached Herald (`bounce_reports.source`).
    ReportSource {
        Smtp => "smtp",
        Imap => "imap",
        Import => "import",
        Ses => "ses",
        Postmark => "postmark",
        Mailgun => "mailgun",
        Sendgrid => "sendgrid",
    }
);

text_enum!(
    /// What a report that arrived after the relay said yes is, once parsed
    /// (`bounce_reports.kind`). Whether a bounce is hard or soft is decided per
    /// recipient from its status code, as for replies during the SMTP session.
    ReportKind {
        /// A delivery status notification (RFC 3464) or a provider's bounce
        /// event with at least one failed recipient, or a non-standard bounce.
        Bounce => "bounce",
        /// A DSN that only says delivery is delayed; recorded, changes nothing.
        Delay => "delay",
        /// An abuse report (ARF, RFC 5965) or a provider's complaint event.
        Complaint => "complaint",
        /// An out-of-office or other automatic reply (RFC 3834): not a bounce.
        AutoReply => "auto_reply",
        /// Nothing Herald recognises; recorded, changes nothing.
        Unrecognised => "unrecognised",
    }
);

text_enum!(
    /// What a recorded report did (`bounce_reports.effect`); the stored form
    /// of `bounce::ReportEffect`.
    ReportOutcome {
        /// A hard bounce: delivery `bounced`, subscription `bounced`, address suppressed.
        Suppressed => "suppressed",
        /// A soft bounce counted toward the soft-bounce limit.
        SoftBounce => "soft_bounce",
        /// A soft bounce that reached the limit: suppressed.
        SoftBounceLimit => "soft_bounce_limit",
        /// A complaint: unsubscribed (`complained`) and suppressed.
        Complaint => "complaint",
        /// A failure that does not blame the address (policy, the message):
        /// the delivery is `bounced`, the subscription unchanged.
        DeliveryFailed => "delivery_failed",
        /// About a test copy or a confirmation mail: the list unchanged.
        NotAboutTheList => "not_about_the_list",
        /// An auto-reply, a delay, a success notice or something unrecognised.
        Ignored => "ignored",
        /// An authentic VERP token whose delivery no longer exists.
        Unmatched => "unmatched",
    }
);

text_enum!(
    /// Which key tied a report to a message (`bounce_reports.matched_by`).
    MatchedBy {
        Verp => "verp",
        MessageId => "message_id",
        Recipient => "recipient",
    }
);

impl RunState {
    /// Nothing more happens to a run in one of these states.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            Self::Pending | Self::Composed | Self::Waiting | Self::Held
        )
    }
}

text_enum!(
    /// A one-off `herald send ISSUE --at …`.
    OneOffState {
        Waiting => "waiting",
        Sent => "sent",
        Cancelled => "cancelled",
        Failed => "failed",
    }
);

impl DeliveryState {
    /// A delivery in one of these states still has work ahead of it; an issue
    /// is complete when none of its deliveries is in one.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Queued | Self::Sending | Self::RetryWait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_explains_errors() {
        for s in SubscriptionState::ALL {
            assert_eq!(s.as_str().parse::<SubscriptionState>().unwrap(), *s);
        }
        let err = "gone".parse::<SubscriptionState>().unwrap_err();
        assert!(err.contains("pending, confirmed, unsubscribed"), "{err}");
        assert_eq!(
            "retry_wait".parse::<DeliveryState>().unwrap(),
            DeliveryState::RetryWait
        );
    }

    #[test]
    fn display_honours_width_for_tables() {
        assert_eq!(format!("{:<9}|", ItemState::Draft), "draft    |");
    }
}

//! Delivery policy: what a send verdict does to the recipient beyond this
//! delivery. The store carries out the effect decided here
//! (`store::deliveries::RecipientEffect`); it decides nothing itself.

use std::time::Duration;

use super::classify::Verdict;
use crate::mail::{SendFailure, SmtpStage};
use crate::store::deliveries::RecipientEffect;

/// After this many consecutive soft-bounced issues an address is suppressed.
pub const SOFT_BOUNCE_LIMIT: i64 = 3;

/// The suppression reasons, as recorded on the suppression and consent event.
pub const HARD_BOUNCE_REASON: &str = "hard-bounce";
pub const SOFT_BOUNCE_LIMIT_REASON: &str = "soft-bounce-limit";

/// The effect of a final outcome with `verdict`; `retries_expired` when a
/// retryable verdict ended the delivery because its retries ran out.
pub fn recipient_effect(verdict: Verdict, retries_expired: bool) -> RecipientEffect {
    if verdict == Verdict::Sent {
        RecipientEffect::Delivered
    } else if verdict.suppresses_recipient() {
        RecipientEffect::Suppress {
            reason: HARD_BOUNCE_REASON,
        }
    } else if retries_expired && verdict.counts_as_soft_bounce() {
        RecipientEffect::CountSoftBounce {
            suppress_at: SOFT_BOUNCE_LIMIT,
            reason: SOFT_BOUNCE_LIMIT_REASON,
        }
    } else {
        RecipientEffect::None
    }
}

/// After this many recipients in a row are refused by policy (5.7.x), the issue pauses: one
/// server's policy refuses one recipient, every server refusing everyone is a reputation or
/// relay problem, and sending on would only deepen it. A delivery refused by policy is final,
/// so each one counted is a different recipient.
pub const POLICY_STREAK_PAUSE: u32 = 10;

/// Why the engine pauses an issue, with what to do about it; stored on the issue
/// (`issues.pause_reason`) and shown by `herald status` and the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseCause {
    /// The relay refuses us whoever the recipient (login, certificate, sender).
    RelayConfig { relay: String, failure: SendFailure },
    /// The relay refused the message itself.
    MessageRefused { failure: SendFailure },
    /// `count` recipients in a row refused by policy; `last` is the last reply.
    PolicyStreak { count: u32, last: String },
    /// No answer from the relay for `lasted`.
    RelayDown {
        relay: String,
        lasted: Duration,
        last: String,
    },
}

impl PauseCause {
    /// The reason as stored and shown, ending with how to go on.
    pub fn reason(&self, issue_number: i64) -> String {
        let resume = format!("then run `herald resume {issue_number}`");
        match self {
            PauseCause::RelayConfig { relay, failure } => match failure {
                SendFailure::CertificateUntrusted(detail) => format!(
                    "the TLS certificate of relay {relay} is not trusted ({detail}): set smtp.ca_file to the PEM of the CA that signed it, {resume}"
                ),
                SendFailure::NoAuthMechanism(detail) => format!(
                    "relay {relay} offers no authentication mechanism Herald can use ({detail}): if it offers AUTH only after STARTTLS, use tls=starttls in smtp.url; {resume}"
                ),
                SendFailure::Rejected {
                    stage: SmtpStage::Auth,
                    reply,
                } => format!(
                    "authentication failed at relay {relay}: {reply} — check the user and password in smtp.url, {resume}"
                ),
                SendFailure::Rejected { reply, .. } if reply.code == 530 => format!(
                    "relay {relay} requires authentication: {reply} — put user:password in smtp.url (with tls=starttls if it offers AUTH only after STARTTLS), {resume}"
                ),
                SendFailure::Rejected { stage, reply } => format!(
                    "relay {relay} refuses every message at {stage}: {reply} — check smtp.url, the sender (newsletter.from, smtp.envelope_from) and the relay's settings, {resume}"
                ),
                other => format!(
                    "relay {relay} refuses every message: {other} — check smtp.url, {resume}"
                ),
            },
            PauseCause::MessageRefused { failure } => {
                let what = match failure {
                    SendFailure::Rejected { reply, .. } => reply.to_string(),
                    other => other.to_string(),
                };
                format!(
                    "the relay refused the message itself: {what}; every recipient would get the same answer. \
                     Raise the relay's limit or fix what it objects to (or `herald cancel {issue_number}` and compose a new issue), {resume}"
                )
            }
            PauseCause::PolicyStreak { count, last } => format!(
                "{count} recipients in a row were refused by policy (last: {last}): a reputation or relay problem rather than the recipients. \
                 Check the relay, block lists and the sending domain's SPF/DKIM/DMARC, {resume}"
            ),
            PauseCause::RelayDown {
                relay,
                lasted,
                last,
            } => format!(
                "relay {relay} has been unreachable for {} ({last}): check that it runs and that smtp.url points at it, {resume}",
                humantime::format_duration(Duration::from_secs(lasted.as_secs()))
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::SmtpReply;

    #[test]
    fn only_hard_bounces_and_expired_soft_bounces_touch_the_recipient() {
        assert_eq!(
            recipient_effect(Verdict::Sent, false),
            RecipientEffect::Delivered
        );
        assert!(matches!(
            recipient_effect(Verdict::HardBounce, false),
            RecipientEffect::Suppress { .. }
        ));
        assert!(matches!(
            recipient_effect(Verdict::SoftBounce, true),
            RecipientEffect::CountSoftBounce {
                suppress_at: SOFT_BOUNCE_LIMIT,
                ..
            }
        ));
        for v in [
            Verdict::Transient,
            Verdict::Throttle,
            Verdict::MessageDefect,
            Verdict::Permanent,
        ] {
            assert_eq!(recipient_effect(v, true), RecipientEffect::None, "{v}");
        }
        assert_eq!(
            recipient_effect(Verdict::SoftBounce, false),
            RecipientEffect::None
        );
        for v in [Verdict::Policy, Verdict::RelayConfig] {
            assert_eq!(recipient_effect(v, false), RecipientEffect::None, "{v}");
        }
    }

    #[test]
    fn pause_reasons_name_the_cause_the_key_to_check_and_how_to_resume() {
        let relay = "smtp://relay.example:587 (starttls)".to_owned();
        let cases = [
            (
                PauseCause::RelayConfig {
                    relay: relay.clone(),
                    failure: SendFailure::Rejected {
                        stage: SmtpStage::Auth,
                        reply: SmtpReply::new(535, "5.7.8 Error: authentication failed"),
                    },
                },
                &[
                    "authentication failed at relay smtp://relay.example:587",
                    "535 5.7.8",
                    "smtp.url",
                ][..],
            ),
            (
                PauseCause::RelayConfig {
                    relay: relay.clone(),
                    failure: SendFailure::Rejected {
                        stage: SmtpStage::MailFrom,
                        reply: SmtpReply::new(530, "5.7.0 Authentication required"),
                    },
                },
                &["requires authentication", "530 5.7.0", "smtp.url"][..],
            ),
            (
                PauseCause::RelayConfig {
                    relay: relay.clone(),
                    failure: SendFailure::CertificateUntrusted("UnknownIssuer".into()),
                },
                &["not trusted", "UnknownIssuer", "smtp.ca_file"][..],
            ),
            (
                PauseCause::RelayConfig {
                    relay: relay.clone(),
                    failure: SendFailure::NoAuthMechanism("offered: none".into()),
                },
                &["no authentication mechanism", "tls=starttls"][..],
            ),
            (
                PauseCause::MessageRefused {
                    failure: SendFailure::Rejected {
                        stage: SmtpStage::Data,
                        reply: SmtpReply::new(552, "5.3.4 Message size exceeds fixed limit"),
                    },
                },
                &[
                    "refused the message itself: 552 5.3.4",
                    "every recipient would get the same answer",
                ][..],
            ),
            (
                PauseCause::PolicyStreak {
                    count: 10,
                    last: "550 5.7.1 Recipient rejected by local policy".into(),
                },
                &["10 recipients in a row", "reputation or relay problem"][..],
            ),
            (
                PauseCause::RelayDown {
                    relay,
                    lasted: Duration::from_secs(900),
                    last: "network error: Connection refused".into(),
                },
                &["unreachable for 15m", "Connection refused"][..],
            ),
        ];
        for (cause, needles) in cases {
            let text = cause.reason(7);
            for n in needles {
                assert!(text.contains(n), "{n:?} not in {text:?}");
            }
            assert!(text.ends_with("then run `herald resume 7`"), "{text}");
        }
    }
}

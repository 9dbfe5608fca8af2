//! Delivery policy: what a send verdict does to the recipient beyond this
//! delivery. The store carries out the effect decided here
//! (`store::deliveries::RecipientEffect`); it decides nothing itself.

use super::classify::Verdict;
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}

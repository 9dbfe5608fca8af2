//! What one engine has learnt about its relay and its issues from the outcomes so far, and
//! when that means an issue must pause (`policy::PauseCause`).
//!
//! - Until the relay has accepted a message in this run, only one worker talks to it at a
//!   time (`enter`): a wrong password then costs one failed login, not one per connection
//!   (which can lock the account), and a message the relay refuses is refused once.
//! - A refused login, an untrusted certificate, a refused message pause the issue at once.
//! - `POLICY_STREAK_PAUSE` recipients of an issue refused by policy in a row pause it.
//! - No answer at all from the relay for `relay_down_pause_after` pauses the issue.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::classify::{Verdict, relay_unreachable};
use super::policy::{POLICY_STREAK_PAUSE, PauseCause};
use crate::mail::{SendFailure, SmtpReply};

pub struct RelayWatch {
    /// The relay accepted a message in this run: its login, TLS and sender are fine.
    proven: AtomicBool,
    /// Held around one send while the relay is not proven.
    gate: tokio::sync::Mutex<()>,
    /// Recipients refused by policy in a row, per issue.
    policy_streaks: Mutex<HashMap<i64, u32>>,
    /// When the current run of unanswered attempts began.
    down_since: Mutex<Option<Instant>>,
    relay: String,
    down_pause_after: Duration,
}

/// Held while the one attempt allowed on an unproven relay runs.
pub type Gate<'a> = Option<tokio::sync::MutexGuard<'a, ()>>;

impl RelayWatch {
    /// `relay` as shown in reasons (never with the password).
    pub fn new(relay: String, down_pause_after: Duration) -> RelayWatch {
        RelayWatch {
            proven: AtomicBool::new(false),
            gate: tokio::sync::Mutex::new(()),
            policy_streaks: Mutex::new(HashMap::new()),
            down_since: Mutex::new(None),
            relay,
            down_pause_after,
        }
    }

    /// Waits for the turn to send: at once once the relay is proven; otherwise one at a time.
    /// Hold the returned gate until the outcome is observed (and any pause written), so the
    /// next worker reads the issue's status after it.
    pub async fn enter(&self) -> Gate<'_> {
        if self.proven.load(Ordering::Acquire) {
            return None;
        }
        let guard = self.gate.lock().await;
        if self.proven.load(Ordering::Acquire) {
            return None;
        }
        Some(guard)
    }

    /// Takes one outcome into account; returns why its issue must pause, if it must.
    pub fn observe(
        &self,
        issue_id: i64,
        verdict: Verdict,
        outcome: &Result<SmtpReply, SendFailure>,
    ) -> Option<PauseCause> {
        let down = self.observe_reachability(outcome);
        match verdict {
            Verdict::Sent => {
                self.proven.store(true, Ordering::Release);
                self.streaks().remove(&issue_id);
                None
            }
            Verdict::RelayConfig => {
                // It worked before (a password changed, a certificate expired): back to one
                // attempt at a time.
                self.proven.store(false, Ordering::Release);
                outcome
                    .as_ref()
                    .err()
                    .map(|failure| PauseCause::RelayConfig {
                        relay: self.relay.clone(),
                        failure: failure.clone(),
                    })
            }
            Verdict::MessageDefect => {
                outcome
                    .as_ref()
                    .err()
                    .map(|failure| PauseCause::MessageRefused {
                        failure: failure.clone(),
                    })
            }
            Verdict::Policy => {
                let mut streaks = self.streaks();
                let count = streaks.entry(issue_id).or_insert(0);
                *count += 1;
                if *count < POLICY_STREAK_PAUSE {
                    return None;
                }
                let count = streaks.remove(&issue_id).unwrap_or(POLICY_STREAK_PAUSE);
                let last = match outcome {
                    Err(SendFailure::Rejected { reply, .. }) => reply.to_string(),
                    Err(other) => other.to_string(),
                    Ok(reply) => reply.to_string(),
                };
                Some(PauseCause::PolicyStreak { count, last })
            }
            // Bounces, deferrals and throttling say nothing about the relay as a whole; a
            // hard bounce between two policy refusals does not break their run either.
            Verdict::Transient
            | Verdict::Throttle
            | Verdict::SoftBounce
            | Verdict::HardBounce
            | Verdict::Permanent => down,
        }
    }

    /// Tracks how long the relay has given no answer; the cause once that lasted too long.
    fn observe_reachability(&self, outcome: &Result<SmtpReply, SendFailure>) -> Option<PauseCause> {
        let mut since = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        if !relay_unreachable(outcome) {
            *since = None;
            return None;
        }
        let lasted = since.get_or_insert_with(Instant::now).elapsed();
        if lasted < self.down_pause_after {
            return None;
        }
        // Counted afresh after the pause: a resumed issue gets the whole bound again.
        *since = None;
        Some(PauseCause::RelayDown {
            relay: self.relay.clone(),
            lasted,
            last: outcome
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default(),
        })
    }

    fn streaks(&self) -> std::sync::MutexGuard<'_, HashMap<i64, u32>> {
        self.policy_streaks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::classify;
    use crate::mail::SmtpStage;

    fn rejected(stage: SmtpStage, code: u16, text: &str) -> Result<SmtpReply, SendFailure> {
        Err(SendFailure::Rejected {
            stage,
            reply: SmtpReply::new(code, text),
        })
    }

    fn watch() -> RelayWatch {
        RelayWatch::new(
            "smtp://relay:587 (starttls)".into(),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn relay_configuration_failures_pause_at_once() {
        let w = watch();
        for outcome in [
            rejected(SmtpStage::Auth, 535, "5.7.8 Error: authentication failed"),
            rejected(SmtpStage::MailFrom, 530, "5.7.0 Authentication required"),
            Err(SendFailure::CertificateUntrusted("UnknownIssuer".into())),
            Err(SendFailure::NoAuthMechanism("none offered".into())),
        ] {
            let verdict = classify(&outcome);
            assert_eq!(verdict, Verdict::RelayConfig, "{outcome:?}");
            let cause = w.observe(1, verdict, &outcome);
            assert!(
                matches!(cause, Some(PauseCause::RelayConfig { .. })),
                "{outcome:?}: {cause:?}"
            );
        }
    }

    #[test]
    fn a_refused_message_pauses_after_the_first() {
        let w = watch();
        let outcome = rejected(
            SmtpStage::Data,
            552,
            "5.3.4 Message size exceeds fixed limit",
        );
        assert!(matches!(
            w.observe(1, classify(&outcome), &outcome),
            Some(PauseCause::MessageRefused { .. })
        ));
    }

    #[test]
    fn policy_refusals_pause_only_in_a_long_run_per_issue() {
        let w = watch();
        let policy = rejected(
            SmtpStage::RcptTo,
            550,
            "5.7.1 Recipient rejected by local policy",
        );
        let sent = Ok(SmtpReply::new(250, "2.0.0 Ok"));
        for _ in 0..POLICY_STREAK_PAUSE - 1 {
            assert_eq!(w.observe(1, Verdict::Policy, &policy), None);
        }
        // Another issue's run is its own; a delivery of issue 1 ends issue 1's run.
        assert_eq!(w.observe(2, Verdict::Policy, &policy), None);
        assert_eq!(w.observe(1, Verdict::Sent, &sent), None);
        for _ in 0..POLICY_STREAK_PAUSE - 1 {
            assert_eq!(w.observe(1, Verdict::Policy, &policy), None);
        }
        assert_eq!(
            w.observe(1, Verdict::Policy, &policy),
            Some(PauseCause::PolicyStreak {
                count: POLICY_STREAK_PAUSE,
                last: "550 5.7.1 Recipient rejected by local policy".into()
            })
        );
        assert_eq!(
            w.observe(1, Verdict::Policy, &policy),
            None,
            "counted afresh"
        );
    }

    #[test]
    fn an_unreachable_relay_pauses_after_the_bound_and_any_reply_resets_it() {
        let w = RelayWatch::new("smtp://relay:25 (plain)".into(), Duration::from_millis(50));
        let refused = Err(SendFailure::Network("connect: Connection refused".into()));
        assert_eq!(w.observe(1, Verdict::Transient, &refused), None);
        std::thread::sleep(Duration::from_millis(60));
        let busy = rejected(SmtpStage::Greeting, 421, "4.3.2 busy");
        assert_eq!(w.observe(1, Verdict::Throttle, &busy), None, "a reply: up");
        assert_eq!(w.observe(1, Verdict::Transient, &refused), None);
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(
            w.observe(1, Verdict::Transient, &refused),
            Some(PauseCause::RelayDown { .. })
        ));
    }

    #[tokio::test]
    async fn one_attempt_at_a_time_until_the_relay_accepts_a_message() {
        let w = watch();
        let first = w.enter().await;
        assert!(first.is_some());
        assert!(w.gate.try_lock().is_err(), "a second sender waits");
        drop(first);
        let sent = Ok(SmtpReply::new(250, "2.0.0 Ok"));
        let gate = w.enter().await;
        w.observe(1, Verdict::Sent, &sent);
        drop(gate);
        assert!(w.enter().await.is_none(), "proven: no waiting");
        let refused = rejected(SmtpStage::Auth, 535, "5.7.8 bad credentials");
        w.observe(1, Verdict::RelayConfig, &refused);
        assert!(
            w.enter().await.is_some(),
            "a refused login closes the gate again"
        );
    }
}

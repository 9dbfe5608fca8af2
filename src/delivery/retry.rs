//! When to retry a deferred delivery.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngExt;

/// Retry schedule with jitter and a give-up horizon.
///
/// After the n-th failed attempt the next one is due `schedule[n-1]` later (the last element
/// repeats), scaled by a random factor in `[1 - jitter, 1 + jitter]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub schedule: Vec<Duration>,
    /// No attempt is scheduled after `first_attempt_at + give_up_after`.
    pub give_up_after: Duration,
    /// Fraction, e.g. 0.1 = ±10%. Clamped to `[0, 1]`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 5m, 15m, 30m, 1h, 2h, then every 4h; give up after 72h; ±10% jitter.
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(n * 60);
        RetryPolicy {
            schedule: vec![m(5), m(15), m(30), m(60), m(120), m(240)],
            give_up_after: Duration::from_secs(72 * 3600),
            jitter: 0.1,
        }
    }
}

/// Parses one human duration such as `5m`, `1h30m`, `72h`, `3days`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration `{s}`: {e} (expected e.g. 5m, 1h30m, 72h)"))
}

/// Parses a comma-separated schedule such as `"5m, 15m, 30m, 1h, 2h, 4h"`.
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    if s.trim().is_empty() {
        return Err("empty retry schedule: expected e.g. 5m,15m,30m,1h,2h,4h".to_string());
    }
    s.split(',')
        .enumerate()
        .map(|(i, part)| {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("retry schedule element {} is empty", i + 1));
            }
            let d = parse_duration(part)
                .map_err(|e| format!("retry schedule element {}: {e}", i + 1))?;
            if d.is_zero() {
                return Err(format!(
                    "retry schedule element {} (`{part}`) must be greater than zero",
                    i + 1
                ));
            }
            Ok(d)
        })
        .collect()
}

impl RetryPolicy {
    /// The un-jittered delay after `failed_attempts` failures (0 → no delay).
    pub fn base_delay(&self, failed_attempts: u32) -> Duration {
        if failed_attempts == 0 || self.schedule.is_empty() {
            return Duration::ZERO;
        }
        let i = (failed_attempts as usize - 1).min(self.schedule.len() - 1);
        self.schedule[i]
    }

    /// When to try again after `failed_attempts` failures, or `None` when that would fall after
    /// `first_attempt_at + give_up_after` (the caller then marks the delivery failed, "expired").
    pub fn next_attempt(
        &self,
        failed_attempts: u32,
        first_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
        rng: &mut impl rand::Rng,
    ) -> Option<DateTime<Utc>> {
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            rng.random_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        let delay = self.base_delay(failed_attempts).mul_f64(factor);
        let next = now + chrono::Duration::from_std(delay).ok()?;
        let horizon = first_attempt_at + chrono::Duration::from_std(self.give_up_after).ok()?;
        (next <= horizon).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-05T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn mins(n: u64) -> Duration {
        Duration::from_secs(n * 60)
    }

    #[test]
    fn default_schedule() {
        let p = RetryPolicy::default();
        assert_eq!(p.schedule, parse_schedule("5m,15m,30m,1h,2h,4h").unwrap());
        assert_eq!(p.give_up_after, parse_duration("72h").unwrap());
        assert_eq!(p.jitter, 0.1);
    }

    #[test]
    fn parses_schedules_and_names_bad_elements() {
        assert_eq!(
            parse_schedule(" 5m , 15m,1h30m ").unwrap(),
            vec![mins(5), mins(15), mins(90)]
        );
        assert!(parse_schedule("").unwrap_err().contains("empty"));
        assert!(parse_schedule("  ").unwrap_err().contains("empty"));
        let e = parse_schedule("5m,soon,1h").unwrap_err();
        assert!(e.contains("element 2") && e.contains("`soon`"), "{e}");
        let e = parse_schedule("5m,0s").unwrap_err();
        assert!(
            e.contains("element 2") && e.contains("greater than zero"),
            "{e}"
        );
        assert!(
            parse_schedule("5m,,1h")
                .unwrap_err()
                .contains("element 2 is empty")
        );
        assert_eq!(parse_duration(" 72h ").unwrap(), mins(72 * 60));
        assert!(
            parse_duration("72x")
                .unwrap_err()
                .contains("invalid duration `72x`")
        );
    }

    #[test]
    fn follows_schedule_and_repeats_last_element_without_jitter() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        let now = t0() + chrono::Duration::minutes(7);
        let expected = [5, 15, 30, 60, 120, 240, 240, 240];
        for (i, m) in expected.iter().enumerate() {
            let next = p.next_attempt(i as u32 + 1, t0(), now, &mut rng).unwrap();
            assert_eq!(
                next - now,
                chrono::Duration::minutes(*m),
                "attempt {}",
                i + 1
            );
        }
        assert_eq!(p.base_delay(0), Duration::ZERO);
        assert_eq!(p.base_delay(100), mins(240));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(42);
        let now = t0();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let next = p.next_attempt(4, t0(), now, &mut rng).unwrap();
            let secs = (next - now).num_milliseconds() as f64 / 1000.0;
            assert!((3240.0..=3960.0).contains(&secs), "{secs}");
            seen.insert((next - now).num_seconds());
        }
        assert!(seen.len() > 50, "jitter should spread the retries");
    }

    #[test]
    fn expires_after_give_up_horizon() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let mut rng = StdRng::seed_from_u64(7);
        // 70h after the first attempt a 4h retry would land at 74h > 72h.
        let late = t0() + chrono::Duration::hours(70);
        assert_eq!(p.next_attempt(10, t0(), late, &mut rng), None);
        // Exactly on the horizon is still allowed.
        let edge = t0() + chrono::Duration::hours(68);
        assert_eq!(
            p.next_attempt(10, t0(), edge, &mut rng),
            Some(t0() + chrono::Duration::hours(72))
        );
        // Walking the whole schedule ends in expiry.
        let (mut now, mut failures) = (t0(), 1);
        while let Some(next) = p.next_attempt(failures, t0(), now, &mut rng) {
            now = next;
            failures += 1;
        }
        assert!(now <= t0() + chrono::Duration::hours(72));
        assert_eq!(failures, 1 + 5 + 17); // 5 scheduled steps (3h50m), then 17 × 4h
    }
}

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

/// `delivery.retry_schedule`, parsed once when the configuration is loaded:
/// between 1 and [`RetrySchedule::MAX_STEPS`] waits, each within
/// [`RetrySchedule::MIN_STEP`]..=[`RetrySchedule::MAX_STEP`], so that no
/// arithmetic on it can overflow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    pub const MIN_STEP: Duration = Duration::from_secs(1);
    pub const MAX_STEP: Duration = Duration::from_secs(30 * 86_400);
    pub const MAX_STEPS: usize = 100;
    /// How the accepted form is described in error messages and the README.
    pub const EXPECTED: &'static str =
        "expected 1 to 100 comma-separated waits like \"5m,15m,1h\", each from 1s to 30d";

    pub fn steps(&self) -> &[Duration] {
        &self.0
    }
}

impl std::str::FromStr for RetrySchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let steps = parse_schedule(s)?;
        if steps.len() > Self::MAX_STEPS {
            return Err(format!(
                "{} waits, at most {} are allowed",
                steps.len(),
                Self::MAX_STEPS
            ));
        }
        if let Some((i, d)) = steps
            .iter()
            .enumerate()
            .find(|(_, d)| **d < Self::MIN_STEP || **d > Self::MAX_STEP)
        {
            return Err(format!(
                "element {} ({}) is outside 1s to 30d",
                i + 1,
                humantime::format_duration(*d)
            ));
        }
        Ok(RetrySchedule(steps))
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule(RetryPolicy::default().schedule)
    }
}

impl std::fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", humantime::format_duration(*d))?;
        }
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for RetrySchedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("{s:?}: {} ({e})", Self::EXPECTED)))
    }
}

impl serde::Serialize for RetrySchedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
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
    /// Arithmetic that would overflow (a wait beyond what a date can hold) also gives `None`:
    /// such a retry could never happen, and a panic here would kill a delivery worker.
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
        let delay =
            Duration::try_from_secs_f64(self.base_delay(failed_attempts).as_secs_f64() * factor)
                .ok()?;
        let next = now.checked_add_signed(chrono::Duration::from_std(delay).ok()?)?;
        let horizon = first_attempt_at
            .checked_add_signed(chrono::Duration::from_std(self.give_up_after).ok()?)?;
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
    fn schedule_bounds_are_checked_at_parse() {
        let s: RetrySchedule = "1s, 30d".parse().unwrap();
        assert_eq!(
            s.steps(),
            [Duration::from_secs(1), Duration::from_secs(30 * 86_400)]
        );
        assert_eq!(s.to_string(), "1s,30days");
        assert_eq!(s.to_string().parse::<RetrySchedule>().unwrap(), s);
        let e = "5m,1000000y".parse::<RetrySchedule>().unwrap_err();
        assert!(e.contains("element 2") && e.contains("1s to 30d"), "{e}");
        let e = "500ms".parse::<RetrySchedule>().unwrap_err();
        assert!(e.contains("element 1"), "{e}");
        let many = vec!["1m"; 101].join(",");
        assert!(
            many.parse::<RetrySchedule>()
                .unwrap_err()
                .contains("101 waits")
        );
        assert_eq!(
            RetrySchedule::default()
                .to_string()
                .parse::<RetrySchedule>(),
            Ok(RetrySchedule::default())
        );
    }

    /// Values far beyond the config bounds (as a hand-built policy could hold) give up
    /// instead of panicking on overflow.
    #[test]
    fn huge_waits_expire_instead_of_overflowing() {
        let mut rng = StdRng::seed_from_u64(3);
        let year = Duration::from_secs(365 * 86_400);
        for (step, give_up) in [
            (year * 1_000_000, year * 1_000_000),
            (Duration::MAX, Duration::MAX),
            (Duration::from_secs(u64::MAX / 2), Duration::from_secs(60)),
        ] {
            let p = RetryPolicy {
                schedule: vec![step],
                give_up_after: give_up,
                jitter: 0.1,
            };
            assert_eq!(p.next_attempt(1, t0(), t0(), &mut rng), None);
            assert_eq!(p.next_attempt(u32::MAX, t0(), t0(), &mut rng), None);
        }
        // At the configured maximum everything still works.
        let p = RetryPolicy {
            schedule: vec![RetrySchedule::MAX_STEP],
            give_up_after: Duration::from_secs(365 * 86_400),
            jitter: 0.1,
        };
        let next = p.next_attempt(1, t0(), t0(), &mut rng).unwrap();
        assert!(next - t0() >= chrono::Duration::days(27));
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

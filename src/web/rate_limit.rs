//! Per-client limit for the public subscribe form. In memory: it only needs
//! to slow a flood from one client, not survive restarts.
//!
//! A sliding window approximated from two fixed windows (the current count
//! plus the previous window's, weighted by how much of it still overlaps),
//! kept per shard. When a window ends, its map becomes "previous" and the
//! one before is dropped whole: no request ever scans the map, and a lock is
//! held for one hash lookup. Shards keep unrelated clients from queuing on
//! one lock.
//!
//! Memory is bounded: each shard tracks at most `MAX_TRACKED / SHARDS`
//! clients per window (two windows in memory, so about 2 × `MAX_TRACKED`
//! entries of ~40 bytes, under 10 MB). A client the full shard has never
//! seen is refused until the window turns: a flood of distinct addresses is
//! an attack on the confirmation mail (list bombing), and refusing costs a
//! legitimate newcomer one retry later, whereas admitting would let the
//! flood send mail unchecked.
//!
//! IPv6 clients are counted per /64: one host usually holds a whole /64,
//! and counting single addresses would give it 2^64 quotas.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Clients tracked per window across all shards.
const MAX_TRACKED: usize = 100_000;

pub struct IpLimiter {
    max: u32,
    window: Duration,
    /// Per-process random keys: nobody can aim addresses at one shard.
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
    per_shard_cap: usize,
}

struct Shard {
    window_start: Instant,
    current: HashMap<IpAddr, u32>,
    previous: HashMap<IpAddr, u32>,
}

impl IpLimiter {
    pub fn per_hour(max: u32) -> IpLimiter {
        IpLimiter::new(max, Duration::from_secs(3600), MAX_TRACKED, Instant::now())
    }

    fn new(max: u32, window: Duration, max_tracked: usize, now: Instant) -> IpLimiter {
        IpLimiter {
            max,
            window,
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        window_start: now,
                        current: HashMap::new(),
                        previous: HashMap::new(),
                    })
                })
                .collect(),
            per_shard_cap: max_tracked.div_ceil(SHARDS).max(1),
        }
    }

    /// Counts one request from `ip`; false when it is over the limit.
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.allow_at(ip, Instant::now())
    }

    fn allow_at(&self, ip: IpAddr, now: Instant) -> bool {
        let key = client_key(ip);
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        // A poisoned lock only means another request panicked mid-update;
        // the counts are still usable.
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(shard.window_start);
        if elapsed >= self.window {
            let windows_passed = elapsed.as_nanos() / self.window.as_nanos().max(1);
            shard.previous = if windows_passed == 1 {
                std::mem::take(&mut shard.current)
            } else {
                // Idle for two windows or more: nothing left to weigh.
                // Replaced, not cleared: dropping a map of plain values is
                // one deallocation, clearing walks its buckets.
                shard.current = HashMap::new();
                HashMap::new()
            };
            let advance = self
                .window
                .saturating_mul(windows_passed.min(u32::MAX as u128) as u32);
            shard.window_start += advance;
        }
        let into_window = now.saturating_duration_since(shard.window_start);
        let previous_weight = 1.0 - into_window.as_secs_f64() / self.window.as_secs_f64();
        let previous = f64::from(shard.previous.get(&key).copied().unwrap_or(0));
        let tracked = shard.current.len();
        let current = match shard.current.get_mut(&key) {
            Some(count) => count,
            None if tracked >= self.per_shard_cap => {
                tracing::warn!(
                    tracked,
                    "subscribe rate limiter full: refusing clients it has not seen this window"
                );
                return false;
            }
            None => shard.current.entry(key).or_insert(0),
        };
        let estimate = f64::from(*current) + previous * previous_weight.max(0.0);
        if estimate >= f64::from(self.max) {
            return false;
        }
        *current += 1;
        true
    }
}

/// What one client is: an IPv4 address, or an IPv6 /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn limits_per_address() {
        let l = IpLimiter::per_hour(2);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert!(l.allow(a) && l.allow(a));
        assert!(!l.allow(a));
        assert!(!l.allow(a), "refused requests do not reset anything");
        assert!(l.allow(b));
    }

    #[test]
    fn ipv6_counts_per_64() {
        let l = IpLimiter::per_hour(2);
        assert!(l.allow(ip("2001:db8:1:2::1")));
        assert!(l.allow(ip("2001:db8:1:2:ffff::9")));
        assert!(!l.allow(ip("2001:db8:1:2::abcd")), "same /64");
        assert!(l.allow(ip("2001:db8:1:3::1")), "another /64");
        assert_eq!(client_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn the_window_slides() {
        let t0 = Instant::now();
        let l = IpLimiter::new(4, HOUR, 1000, t0);
        let a = ip("192.0.2.1");
        for _ in 0..4 {
            assert!(l.allow_at(a, t0));
        }
        assert!(!l.allow_at(a, t0 + HOUR / 2));
        // A quarter into the next window, 3/4 of the previous 4 still
        // count: room for exactly one more.
        let t = t0 + HOUR + HOUR / 4;
        assert!(l.allow_at(a, t));
        assert!(!l.allow_at(a, t));
    }

    #[test]
    fn an_old_burst_stops_counting() {
        let t0 = Instant::now();
        let l = IpLimiter::new(4, HOUR, 1000, t0);
        let a = ip("192.0.2.1");
        for _ in 0..4 {
            assert!(l.allow_at(a, t0));
        }
        // Three quarters into the next window only 1 of the 4 still counts.
        let t = t0 + HOUR + HOUR * 3 / 4;
        let allowed = (0..4).filter(|_| l.allow_at(a, t)).count();
        assert_eq!(allowed, 3);
        // Two windows later the burst is forgotten.
        let t = t0 + HOUR * 3 + HOUR / 2;
        assert_eq!((0..10).filter(|_| l.allow_at(a, t)).count(), 4);
    }

    #[test]
    fn a_flood_of_distinct_addresses_is_bounded() {
        let t0 = Instant::now();
        let cap = 160;
        let l = IpLimiter::new(5, HOUR, cap, t0);
        let flood = |offset: u32, t| {
            (0..2000u32)
                .filter(|i| {
                    l.allow_at(
                        IpAddr::from(std::net::Ipv4Addr::from((10u32 << 24) + offset + i)),
                        t,
                    )
                })
                .count()
        };
        let admitted = flood(0, t0);
        assert!(admitted <= cap, "{admitted} admitted, cap {cap}");
        assert!(admitted >= cap / 2, "shards fill evenly enough: {admitted}");
        let tracked: usize = l
            .shards
            .iter()
            .map(|s| s.lock().unwrap().current.len())
            .sum();
        assert!(tracked <= cap);
        // Clients already tracked keep their quota while the shard is full.
        let known = (0..2000u32)
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from((10u32 << 24) + i)))
            .find(|a| {
                l.shards
                    .iter()
                    .any(|s| s.lock().unwrap().current.contains_key(a))
            })
            .unwrap();
        assert!(l.allow_at(known, t0));
        // The next window starts with room again.
        assert!(flood(10_000, t0 + HOUR) > 0);
        let total: usize = l
            .shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                s.current.len() + s.previous.len()
            })
            .sum();
        assert!(total <= 2 * cap, "two windows at most: {total}");
    }
}

//! A keyed rate limiter: one GCRA cell (a single timestamp) per key, in a sharded map.
//!
//! GCRA (the generic cell rate algorithm) is a token bucket stored as the "theoretical
//! arrival time" of the next request. A key whose time lies in the past holds a full
//! bucket, exactly like a key never seen, so forgetting it changes nothing: idle keys are
//! swept out whenever a shard grows, and a hard cap bounds memory whatever the traffic.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// A shard is swept when it reaches this size, then when it doubles past what survived.
const FIRST_SWEEP: usize = 64;

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests that may arrive at once after a quiet period (at least 1).
    pub burst: u32,
}

/// Many independent rate limits, one per key.
pub struct KeyedLimiter<K> {
    shards: Box<[Mutex<Shard<K>>]>,
    hasher: RandomState,
    epoch: Instant,
    /// Time one request "costs": 1 / rate.
    interval: u64,
    /// How far ahead of now a key's arrival time may run: (burst - 1) intervals.
    tolerance: u64,
    max_keys_per_shard: usize,
}

struct Shard<K> {
    /// Theoretical arrival time of each key's next request, in nanoseconds since `epoch`.
    arrivals: HashMap<K, u64>,
    sweep_at: usize,
}

impl<K: Hash + Eq> KeyedLimiter<K> {
    /// A limiter allowing `quota` per key, tracking at most about `max_keys` keys.
    pub fn new(quota: Quota, max_keys: usize) -> Self {
        assert!(quota.per_second > 0.0 && quota.burst >= 1, "a usable quota");
        let interval = (1e9 / quota.per_second).round().max(1.0) as u64;
        let max_keys_per_shard = max_keys.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        arrivals: HashMap::new(),
                        sweep_at: FIRST_SWEEP.min(max_keys_per_shard),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            interval,
            tolerance: interval.saturating_mul(u64::from(quota.burst - 1)),
            max_keys_per_shard,
        }
    }

    /// Takes one request from `key`'s allowance, or says how long until it has one.
    ///
    /// When every slot of a shard is held by a key active within its burst window (a flood
    /// of distinct keys), a new key is let through untracked rather than refused: the
    /// limit is a fairness tool, and refusing every newcomer would turn it into an outage.
    pub fn check<Q>(&self, key: &Q) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.now();
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        let mut shard = self.shards[index].lock().unwrap_or_else(|e| e.into_inner());
        if let Some(arrival) = shard.arrivals.get_mut(key) {
            return self.take(arrival, now);
        }
        if shard.arrivals.len() >= shard.sweep_at {
            shard.sweep(now, self.max_keys_per_shard);
        }
        if shard.arrivals.len() < self.max_keys_per_shard {
            shard.arrivals.insert(key.to_owned(), now + self.interval);
        }
        Ok(())
    }

    /// Keys currently tracked (idle ones may still be counted until the next sweep).
    pub fn tracked_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).arrivals.len())
            .sum()
    }

    fn take(&self, arrival: &mut u64, now: u64) -> Result<(), Duration> {
        let allowed_from = arrival.saturating_sub(self.tolerance);
        if now < allowed_from {
            return Err(Duration::from_nanos(allowed_from - now));
        }
        *arrival = (*arrival).max(now) + self.interval;
        Ok(())
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl<K> Shard<K> {
    /// Forgets keys whose bucket is full again; they behave exactly as unseen keys.
    fn sweep(&mut self, now: u64, max: usize) {
        self.arrivals.retain(|_, arrival| *arrival > now);
        self.sweep_at = (self.arrivals.len() * 2).clamp(FIRST_SWEEP.min(max), max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32, max_keys: usize) -> KeyedLimiter<String> {
        KeyedLimiter::new(Quota { per_second, burst }, max_keys)
    }

    #[test]
    fn a_burst_is_allowed_then_refused_with_the_wait() {
        let limits = limiter(1.0, 3, 100);
        for _ in 0..3 {
            assert_eq!(limits.check("shop-a"), Ok(()));
        }
        let wait = limits.check("shop-a").unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another key has its own allowance.
        assert_eq!(limits.check("shop-b"), Ok(()));
    }

    #[test]
    fn the_allowance_recovers_at_the_rate() {
        let limits = limiter(50.0, 1, 100);
        assert_eq!(limits.check("k"), Ok(()));
        let wait = limits.check("k").unwrap_err();
        assert!(wait <= Duration::from_millis(20));
        std::thread::sleep(wait + Duration::from_millis(2));
        assert_eq!(limits.check("k"), Ok(()));
    }

    #[test]
    fn idle_keys_are_forgotten_and_memory_is_capped() {
        let limits = limiter(1000.0, 1, SHARDS * 8);
        for i in 0..10_000 {
            let _ = limits.check(format!("key-{i}").as_str());
        }
        assert!(
            limits.tracked_keys() <= SHARDS * 8,
            "{}",
            limits.tracked_keys()
        );
        std::thread::sleep(Duration::from_millis(5));
        // Every earlier key is idle now: adding keys sweeps them out instead of growing.
        for i in 0..SHARDS * 4 {
            assert_eq!(limits.check(format!("fresh-{i}").as_str()), Ok(()));
        }
        assert!(limits.tracked_keys() <= SHARDS * 8);
    }

    #[test]
    fn a_full_limiter_still_limits_the_keys_it_tracks() {
        let limits = limiter(0.001, 1, SHARDS);
        for i in 0..1000 {
            let _ = limits.check(format!("flood-{i}").as_str());
        }
        // "flood-0" was tracked first in its shard, so it stays limited.
        assert!(limits.check("flood-0").is_err());
    }
}

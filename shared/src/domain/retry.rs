//! Retry and cooldown policy.
//!
//! - Backoff spaces the automatic retries of one failed stage: retry n waits a jittered delay in
//!   `[BASE_BACKOFF_SECONDS, min(MAX_BACKOFF_SECONDS, BASE * 2^(n-1))]`.
//! - `MAX_PIPELINE_ATTEMPTS` bounds attempts at one stage; past it the execution is blocked
//!   (loop protection).
//! - Cooldown is the minimum spacing between whole-pipeline attempts for one run key: a new
//!   attempt (a replay) for a key whose last attempt started less than `COOLDOWN_SECONDS` ago is
//!   recorded and delayed until the cooldown ends, never refused.
//! - Deferral backoff spaces the polls of a stage that waits without spending an attempt (slots
//!   full, probe in flight, lease held): wait n (0-based) of one episode sleeps a full-jitter
//!   delay in `[0, min(DEFER_CAP_SECS, base * 2^n)]` (at least one second), and a waiter on an
//!   open breaker is sent to a point spread over `[open_until, open_until +
//!   BREAKER_SPREAD_SECS)` instead of exactly `open_until`. See [`DeferBackoff`].

use super::time::Timestamp;

/// The knobs, with the seed's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_backoff_secs: u64,
    pub max_backoff_secs: u64,
    pub cooldown_secs: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_backoff_secs: 30,
            max_backoff_secs: 600,
            cooldown_secs: 900,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after `delay_secs`.
    RetryAfter { delay_secs: u64 },
    /// `attempts` attempts made, none left: block.
    Exhausted { attempts: u32 },
}

impl RetryPolicy {
    /// The decision after `attempts_made` attempts at a stage have failed. `jitter` is a number
    /// in `[0, 1)` (the caller draws it, so the policy stays deterministic); `retry_after_secs`
    /// is the server's own hint (HTTP 429/503 Retry-After), honoured up to the ceiling.
    pub fn after_failure(
        &self,
        attempts_made: u32,
        jitter: f64,
        retry_after_secs: Option<u64>,
    ) -> RetryDecision {
        if attempts_made >= self.max_attempts {
            return RetryDecision::Exhausted {
                attempts: attempts_made,
            };
        }
        let base = self.base_backoff_secs;
        let cap = self.max_backoff_secs.max(base);
        let exp = attempts_made.saturating_sub(1).min(32);
        let ceiling = base.saturating_mul(1u64 << exp).min(cap);
        let jitter = jitter.clamp(0.0, 1.0);
        let mut delay = base + ((ceiling - base) as f64 * jitter) as u64;
        if let Some(hint) = retry_after_secs {
            delay = delay.max(hint.min(cap));
        }
        RetryDecision::RetryAfter {
            delay_secs: delay.clamp(base, cap),
        }
    }

    /// The earliest start of the next whole-pipeline attempt for a run key whose last attempt
    /// started at `last_started`.
    pub fn next_attempt_at(&self, last_started: Timestamp) -> Timestamp {
        last_started.plus_secs(self.cooldown_secs as i64)
    }
}

/// The longest a deferred stage sleeps between two polls (the cap of [`DeferBackoff`]).
pub const DEFER_CAP_SECS: i64 = 120;

/// The window after a breaker's `open_until` over which its waiters are spread.
pub const BREAKER_SPREAD_SECS: i64 = 60;

/// The shortest sleep of a deferral, so that a jitter draw of zero never spins.
pub const DEFER_MIN_SECS: i64 = 1;

/// Backoff of deferrals (waits that spend no attempt). Pure: the caller draws `jitter` in
/// `[0, 1)` (the executor derives it from the execution id, stage and wait number, so it is
/// reproducible and spreads executions evenly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferBackoff {
    /// The ceiling of the first wait (`BREAKER_DEFER_SECONDS`).
    pub base_secs: i64,
    /// The ceiling no wait exceeds ([`DEFER_CAP_SECS`]).
    pub cap_secs: i64,
    /// The spread after `open_until` ([`BREAKER_SPREAD_SECS`]).
    pub spread_secs: i64,
}

impl DeferBackoff {
    /// The default cap and spread over `base_secs`.
    pub fn new(base_secs: i64) -> Self {
        Self {
            base_secs: base_secs.max(DEFER_MIN_SECS),
            cap_secs: DEFER_CAP_SECS.max(base_secs),
            spread_secs: BREAKER_SPREAD_SECS,
        }
    }

    /// The ceiling of wait `wait` (0-based) of an episode: `min(cap, base * 2^wait)`.
    pub fn ceiling_secs(&self, wait: u32) -> i64 {
        let factor = 1i64 << wait.min(32);
        self.base_secs.saturating_mul(factor).min(self.cap_secs)
    }

    /// The sleep of wait `wait`: full jitter, `jitter * ceiling`, at least [`DEFER_MIN_SECS`]
    /// and never over the cap.
    pub fn delay_secs(&self, wait: u32, jitter: f64) -> i64 {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let ceiling = self.ceiling_secs(wait);
        ((ceiling as f64 * jitter) as i64).clamp(DEFER_MIN_SECS.min(ceiling), ceiling)
    }

    /// When a waiter on a breaker open until `open_until` asks again: spread over
    /// `[open_until, open_until + spread)`.
    pub fn after_open(&self, open_until: Timestamp, jitter: f64) -> Timestamp {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let offset_ms = (self.spread_secs as f64 * 1000.0 * jitter) as i64;
        Timestamp::from_millis(
            open_until.as_millis() + offset_ms.min(self.spread_secs * 1000 - 1).max(0),
        )
    }
}

/// A reproducible draw in `[0, 1)` from `parts` (SHA-256 of them): the jitter of one wait of
/// one execution. Different executions draw independently; the same wait draws the same.
pub fn jitter_of(parts: &[&[u8]]) -> f64 {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits: exactly representable, strictly below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded generator for the tests (SplitMix64): fixed draws, no flakiness.
    struct Seeded(u64);

    impl Seeded {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn deferral_ceilings_grow_exponentially_up_to_the_cap() {
        let b = DeferBackoff::new(5);
        let ceilings: Vec<i64> = (0..8).map(|n| b.ceiling_secs(n)).collect();
        assert_eq!(ceilings, vec![5, 10, 20, 40, 80, 120, 120, 120]);
        assert_eq!(b.ceiling_secs(u32::MAX), DEFER_CAP_SECS);
        // The extremes of the jitter give the floor and the ceiling.
        assert_eq!(b.delay_secs(3, 0.0), DEFER_MIN_SECS);
        assert_eq!(b.delay_secs(3, 1.0), 40);
        assert_eq!(b.delay_secs(3, 0.5), 20);
        assert_eq!(b.delay_secs(9, 1.0), 120);
        assert_eq!(b.delay_secs(9, f64::NAN), DEFER_MIN_SECS);
    }

    #[test]
    fn deferral_delays_are_full_jitter_within_the_ceiling() {
        let b = DeferBackoff::new(5);
        let mut rng = Seeded(42);
        for wait in 0..12u32 {
            let ceiling = b.ceiling_secs(wait);
            let draws: Vec<i64> = (0..2_000).map(|_| b.delay_secs(wait, rng.next())).collect();
            assert!(
                draws.iter().all(|d| (0..=ceiling).contains(d)),
                "wait {wait}"
            );
            assert!(draws.iter().all(|d| *d <= DEFER_CAP_SECS));
            // Full jitter: the draws cover the whole range, not a band near the ceiling.
            let low = draws.iter().filter(|d| **d <= ceiling / 4).count();
            let high = draws.iter().filter(|d| **d >= ceiling * 3 / 4).count();
            assert!(
                low > 200 && high > 200,
                "wait {wait}: {low} low, {high} high"
            );
            let mean = draws.iter().sum::<i64>() as f64 / draws.len() as f64;
            assert!((mean - ceiling as f64 / 2.0).abs() < ceiling as f64 / 10.0 + 1.0);
        }
    }

    #[test]
    fn breaker_waiters_are_spread_after_open_until() {
        let b = DeferBackoff::new(5);
        let open_until = Timestamp::from_secs(1_000);
        let mut rng = Seeded(7);
        let mut per_second = [0u32; BREAKER_SPREAD_SECS as usize];
        for _ in 0..3_000 {
            let at = b.after_open(open_until, rng.next());
            assert!(at >= open_until && at < open_until.plus_secs(BREAKER_SPREAD_SECS));
            per_second[(at.as_millis() - open_until.as_millis()) as usize / 1000] += 1;
        }
        // 3,000 waiters over 60 s: about 50 a second, none of the seconds crowded.
        assert!(
            per_second.iter().all(|n| (20..=90).contains(n)),
            "{per_second:?}"
        );
        assert_eq!(
            b.after_open(open_until, 1.0),
            open_until.plus_secs(60).plus_millis(-1)
        );
    }

    #[test]
    fn jitter_is_reproducible_and_in_range() {
        let a = jitter_of(&[b"exe_1", &0u32.to_be_bytes()]);
        assert_eq!(a, jitter_of(&[b"exe_1", &0u32.to_be_bytes()]));
        assert_ne!(a, jitter_of(&[b"exe_2", &0u32.to_be_bytes()]));
        let draws: Vec<f64> = (0..1_000u32)
            .map(|n| jitter_of(&[b"exe", &n.to_be_bytes()]))
            .collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy {
            max_attempts: 10,
            ..RetryPolicy::default()
        };
        assert_eq!(
            p.after_failure(1, 0.99, None),
            RetryDecision::RetryAfter { delay_secs: 30 }
        );
        assert_eq!(
            p.after_failure(2, 0.0, None),
            RetryDecision::RetryAfter { delay_secs: 30 }
        );
        assert_eq!(
            p.after_failure(2, 0.5, None),
            RetryDecision::RetryAfter { delay_secs: 45 }
        );
        assert_eq!(
            p.after_failure(9, 1.0, None),
            RetryDecision::RetryAfter { delay_secs: 600 }
        );
        assert_eq!(
            p.after_failure(2, 0.0, Some(5000)),
            RetryDecision::RetryAfter { delay_secs: 600 }
        );
        assert_eq!(
            p.after_failure(2, 0.0, Some(50)),
            RetryDecision::RetryAfter { delay_secs: 50 }
        );
    }

    #[test]
    fn attempts_are_capped() {
        let p = RetryPolicy::default();
        assert!(matches!(
            p.after_failure(2, 0.3, None),
            RetryDecision::RetryAfter { .. }
        ));
        assert_eq!(
            p.after_failure(3, 0.3, None),
            RetryDecision::Exhausted { attempts: 3 }
        );
    }

    #[test]
    fn cooldown_spaces_pipeline_attempts() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.next_attempt_at(Timestamp::from_secs(100)),
            Timestamp::from_secs(1000)
        );
    }
}

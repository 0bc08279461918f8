//! Retry and cooldown policy.
//!
//! - Backoff spaces the automatic retries of one failed stage: retry n waits a jittered delay in
//!   `[BASE_BACKOFF_SECONDS, min(MAX_BACKOFF_SECONDS, BASE * 2^(n-1))]`.
//! - `MAX_PIPELINE_ATTEMPTS` bounds attempts at one stage; past it the execution is blocked
//!   (loop protection).
//! - Cooldown is the minimum spacing between whole-pipeline attempts for one run key: a new
//!   attempt (a replay) for a key whose last attempt started less than `COOLDOWN_SECONDS` ago is
//!   recorded and delayed until the cooldown ends, never refused.

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

#[cfg(test)]
mod tests {
    use super::*;

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

//! A producer key's event rate (`rate = { events_per_second, burst }` in the key file): a
//! token bucket per key in each replica's memory (governor's GCRA, lock-free), in which an
//! event costs one token and a batch as many as it holds.
//!
//! The bucket belongs to the key, not to the file's text: a reload that leaves a key's entry
//! and rate unchanged keeps its bucket, so rewriting the file does not hand out a fresh burst.
//!
//! Per replica, not per deployment: behind a load balancer spreading a key's requests over N
//! replicas, the key may send up to N × `events_per_second` (and N bursts at once), and a
//! restarted replica starts with a full bucket. One bucket for all replicas would need shared
//! state on the hot path — a counter in MongoDB costs a write (and a round trip) per request,
//! on the store the events go to, and fails with it; splitting the rate by N needs N, which
//! changes with the HPA and a rollout, and the balancer's spread. Neither is cheap and correct,
//! so the limit is documented as it is ([`PER_REPLICA`]).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// What a rate holds, where an operator sets one (`keys new`, the docs say the same).
pub const PER_REPLICA: &str = "The rate is enforced by each replica on its own: behind N \
     replicas a key may send up to N times the rate (and N bursts at once), and a restarted \
     replica starts with a full bucket.";

/// Largest `events_per_second` accepted (a key faster than this has no real limit).
pub const MAX_EVENTS_PER_SECOND: f64 = 1e9;

/// A rate as the key file writes it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained events per second (may be fractional: 0.5 is one event every 2 s).
    pub events_per_second: f64,
    /// Events that may be sent at once after a quiet spell; also the largest batch the key
    /// can ever send.
    pub burst: u32,
}

impl Rate {
    /// Why this rate cannot be enforced, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if !(self.events_per_second > 0.0 && self.events_per_second <= MAX_EVENTS_PER_SECOND) {
            return Some(format!(
                "`rate.events_per_second` must be above 0 and at most {MAX_EVENTS_PER_SECOND:e}"
            ));
        }
        if self.burst == 0 {
            return Some("`rate.burst` must be at least 1".into());
        }
        None
    }
}

/// Why events were not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the rate now; this many events fit again after the wait.
    Wait(Duration),
    /// More events at once than the burst: never, however long the wait.
    OverBurst { burst: u32 },
}

/// One key's bucket.
pub struct RateLimit {
    rate: Rate,
    limiter: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("rate", &self.rate)
            .finish()
    }
}

impl RateLimit {
    /// A full bucket; `None` when the rate is not enforceable (see [`Rate::problem`]).
    pub fn new(rate: Rate) -> Option<RateLimit> {
        if rate.problem().is_some() {
            return None;
        }
        let period = Duration::from_secs_f64(1.0 / rate.events_per_second);
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(rate.burst)?);
        Some(RateLimit {
            rate,
            limiter: RateLimiter::direct(quota),
        })
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes `events` tokens, or none.
    pub fn take(&self, events: usize) -> Result<(), Refusal> {
        let over = Refusal::OverBurst {
            burst: self.rate.burst,
        };
        let Some(n) = u32::try_from(events).ok().and_then(NonZeroU32::new) else {
            return if events == 0 { Ok(()) } else { Err(over) };
        };
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Refusal::Wait(
                not_until.wait_time_from(self.limiter.clock().now()),
            )),
            Err(_insufficient_capacity) => Err(over),
        }
    }
}

/// Seconds for `Retry-After`: the wait rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limit = RateLimit::new(Rate {
            events_per_second: 2.0,
            burst: 3,
        })
        .unwrap();
        assert_eq!(limit.take(2), Ok(()));
        assert_eq!(limit.take(1), Ok(()));
        let Err(Refusal::Wait(wait)) = limit.take(1) else {
            panic!("the fourth event in a row must wait");
        };
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(retry_after_secs(wait), 1);
    }

    #[test]
    fn a_batch_costs_its_events_and_one_over_the_burst_never_passes() {
        let limit = RateLimit::new(Rate {
            events_per_second: 1000.0,
            burst: 10,
        })
        .unwrap();
        assert_eq!(limit.take(11), Err(Refusal::OverBurst { burst: 10 }));
        assert_eq!(limit.take(10), Ok(()));
        assert!(matches!(limit.take(10), Err(Refusal::Wait(_))));
        assert_eq!(limit.take(0), Ok(()));
        assert_eq!(
            limit.take(usize::MAX),
            Err(Refusal::OverBurst { burst: 10 })
        );
    }

    #[test]
    fn unenforceable_rates_are_named() {
        for (eps, burst) in [(0.0, 1), (-1.0, 1), (f64::NAN, 1), (2e9, 1), (1.0, 0)] {
            let rate = Rate {
                events_per_second: eps,
                burst,
            };
            assert!(rate.problem().is_some(), "{rate:?}");
            assert!(RateLimit::new(rate).is_none(), "{rate:?}");
        }
        assert!(RateLimit::new(Rate {
            events_per_second: 0.5,
            burst: 1
        })
        .is_some());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}

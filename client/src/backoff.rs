//! Exponential backoff with jitter, shared by the producer's retries and the tail stream.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `initial` up to `max`, each drawn at random between half and all
/// of the current step ("equal jitter"), so that many clients retrying after the same outage
/// do not come back in step. A `Retry-After` from the service is a floor.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The delay before the next attempt; at least `retry_after` when the service gave one.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = step / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        let delay = half + Duration::from_millis(jitter);
        match retry_after {
            Some(ra) => delay.max(ra),
            None => delay,
        }
    }

    /// Back to `initial` after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_max_and_honours_retry_after() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay(None);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            assert!(b.next_delay(None) <= Duration::from_secs(1));
        }
        assert!(b.next_delay(Some(Duration::from_secs(5))) >= Duration::from_secs(5));
        b.reset();
        assert!(b.next_delay(None) <= Duration::from_millis(100));
    }
}

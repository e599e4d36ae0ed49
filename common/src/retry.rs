//! The one retry policy: exponential backoff, capped, optionally bounded by a deadline.
//!
//! Every retry loop in auditlog (the service's writer and storage set-up, the archiver's reads,
//! `auditlog-ops` bootstrap steps) asks a [`Backoff`] how long to wait and whether to give up,
//! so "how long do we keep trying" has one meaning everywhere.

use std::time::Duration;

use tokio::time::Instant;

/// Exponential backoff from `first` doubling up to `max`, giving up at an optional deadline.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    deadline: Option<Instant>,
    attempts: u32,
}

impl Backoff {
    /// Waits `first`, then twice that, … never more than `max`; no deadline.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            next: first,
            max: max.max(first),
            deadline: None,
            attempts: 0,
        }
    }

    /// The same wait every time.
    pub fn constant(every: Duration) -> Self {
        Self::new(every, every)
    }

    /// Gives up when the next wait would end after `deadline`.
    pub fn until(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Gives up once `within` has passed from now.
    pub fn within(self, within: Duration) -> Self {
        self.until(Instant::now() + within)
    }

    /// How long the next wait would be.
    pub fn next_delay(&self) -> Duration {
        self.next
    }

    /// How many waits have been taken so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait before the next attempt, or `None` when waiting would pass the deadline (the
    /// caller gives up). Advances the backoff.
    pub fn next_wait(&mut self) -> Option<Duration> {
        let wait = self.next;
        if let Some(deadline) = self.deadline {
            if Instant::now() + wait >= deadline {
                return None;
            }
        }
        self.attempts += 1;
        self.next = (self.next * 2).min(self.max);
        Some(wait)
    }

    /// Sleeps before the next attempt; `false` (without sleeping) when that would pass the
    /// deadline.
    pub async fn wait(&mut self) -> bool {
        match self.next_wait() {
            Some(d) => {
                tokio::time::sleep(d).await;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<_> = (0..4)
            .map(|_| b.next_wait().map(|d| d.as_millis()))
            .collect();
        assert_eq!(waits, vec![Some(100), Some(200), Some(350), Some(350)]);
        assert_eq!(b.attempts(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_before_passing_the_deadline() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10))
            .within(Duration::from_millis(3500));
        assert!(b.wait().await); // t=1
        assert!(b.wait().await); // t=3
        assert!(
            !b.wait().await,
            "a 4 s wait from t=3 would pass the 3.5 s deadline"
        );
        assert_eq!(b.attempts(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn constant_never_grows() {
        let mut b = Backoff::constant(Duration::from_secs(5));
        assert_eq!(b.next_wait(), Some(Duration::from_secs(5)));
        assert_eq!(b.next_wait(), Some(Duration::from_secs(5)));
    }
}

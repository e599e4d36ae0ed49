//! What this replica holds that may still be stored: the local half of the watermark.
//!
//! Every event gets its `created_at` from [`Tracker::stamp`], which reads the clock and
//! registers a [`Hold`] under one lock, so a [`Snapshot`] taken at any moment either shows the
//! event held or was taken before the event existed (its `at` is then older than the event).
//! A hold ends when the event's fate is known: stored, refused for good, dead-lettered, or —
//! in queue mode — handed to RabbitMQ. A handed-over event is not forgotten at once: its
//! `created_at` goes into the *confirm buckets* (the least `created_at` confirmed in each
//! second), which readers combine with the queue's emptiness ([`super::record`]).
//!
//! Queue mode also notes each depth poll that found the queue empty ([`Tracker::empty`]); a
//! delivery the drain takes is held again ([`Tracker::hold_at`]) until it is settled, and a
//! delivery handed back to RabbitMQ goes into the confirm buckets like a publish.
//!
//! Clock: milliseconds since the epoch, as `created_at` is stored.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// Confirm buckets kept: a minute of seconds. Older ones fold into one minimum.
const BUCKETS_KEPT: usize = 60;
/// Empty-queue observations kept, newest last.
const EMPTIES_KEPT: usize = 32;

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One second's confirms: the least `created_at` handed to RabbitMQ during it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// The second's start (ms).
    pub start_ms: i64,
    pub min_created_ms: i64,
}

/// A depth poll that found no message ready: sent at `sent_ms`, answered at `reply_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Empty {
    pub sent_ms: i64,
    pub reply_ms: i64,
}

/// The tracker's state at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub at_ms: i64,
    /// The least `created_at` held.
    pub held_ms: Option<i64>,
    /// Confirm buckets, oldest first.
    pub buckets: Vec<Bucket>,
    /// The least `created_at` of the buckets folded away (since start).
    pub older_min_ms: Option<i64>,
    /// Empty-queue observations, oldest first.
    pub empties: Vec<Empty>,
}

#[derive(Default)]
struct Inner {
    /// `created_at` → how many holds.
    held: BTreeMap<i64, u32>,
    /// Holds of events whose write gave up without an answer: they may still land until
    /// their expiry (ms), the end of the write deadline.
    lingering: Vec<(i64, i64)>,
    buckets: VecDeque<Bucket>,
    older_min: Option<i64>,
    empties: VecDeque<Empty>,
}

impl Inner {
    fn add(&mut self, at: i64) {
        *self.held.entry(at).or_default() += 1;
    }

    fn remove(&mut self, at: i64) {
        if let Some(n) = self.held.get_mut(&at) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&at);
            }
        }
    }

    fn hand_over(&mut self, created: i64, now: i64) {
        let start = now - now.rem_euclid(1000);
        match self.buckets.back_mut() {
            Some(b) if b.start_ms == start => b.min_created_ms = b.min_created_ms.min(created),
            _ => {
                self.buckets.push_back(Bucket {
                    start_ms: start,
                    min_created_ms: created,
                });
                while self.buckets.len() > BUCKETS_KEPT {
                    if let Some(old) = self.buckets.pop_front() {
                        self.older_min = Some(
                            self.older_min
                                .map_or(old.min_created_ms, |m| m.min(old.min_created_ms)),
                        );
                    }
                }
            }
        }
    }
}

/// The local tracker; share it behind an [`Arc`].
pub struct Tracker {
    inner: Mutex<Inner>,
    clock: fn() -> i64,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::with_clock(now_ms)
    }
}

impl Tracker {
    pub fn with_clock(clock: fn() -> i64) -> Tracker {
        Tracker {
            inner: Mutex::new(Inner::default()),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counts that are still counts.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the clock for a new event's `created_at` and holds it.
    pub fn stamp(self: &Arc<Self>) -> Hold {
        let mut inner = self.lock();
        let at = (self.clock)();
        inner.add(at);
        Hold {
            tracker: self.clone(),
            at_ms: at,
            live: true,
            back_to_queue: false,
        }
    }

    /// Holds an existing event until the hold ends.
    pub fn hold_at(self: &Arc<Self>, created_ms: i64) -> Hold {
        self.lock().add(created_ms);
        Hold {
            tracker: self.clone(),
            at_ms: created_ms,
            live: true,
            back_to_queue: false,
        }
    }

    /// Holds an event the drain took from the queue. Dropped without [`Hold::settle`] (the
    /// message left to RabbitMQ: a shutdown, a lost channel), it counts as back in the queue.
    pub fn hold_delivery(self: &Arc<Self>, created_ms: i64) -> Hold {
        let mut hold = self.hold_at(created_ms);
        hold.back_to_queue = true;
        hold
    }

    /// A depth poll sent at `sent_ms` found no message ready.
    pub fn empty(&self, sent_ms: i64) {
        let mut inner = self.lock();
        let reply_ms = (self.clock)();
        inner.empties.push_back(Empty { sent_ms, reply_ms });
        while inner.empties.len() > EMPTIES_KEPT {
            inner.empties.pop_front();
        }
    }

    /// The state now.
    pub fn snapshot(&self) -> Snapshot {
        let mut inner = self.lock();
        let at = (self.clock)();
        inner.lingering.retain(|(_, until)| *until > at);
        let lingering = inner.lingering.iter().map(|(c, _)| *c).min();
        let held = inner.held.keys().next().copied();
        Snapshot {
            at_ms: at,
            held_ms: match (held, lingering) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            buckets: inner.buckets.iter().copied().collect(),
            older_min_ms: inner.older_min,
            empties: inner.empties.iter().copied().collect(),
        }
    }

    /// Events held now (for tests and the log).
    pub fn held(&self) -> usize {
        self.lock().held.values().map(|n| *n as usize).sum()
    }
}

/// One event held by this replica; dropping it ends the hold (the event is stored, or will
/// never be).
#[derive(Debug)]
pub struct Hold {
    tracker: Arc<Tracker>,
    at_ms: i64,
    live: bool,
    back_to_queue: bool,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracker")
    }
}

impl Hold {
    /// The held event's `created_at` (ms).
    pub fn at_ms(&self) -> i64 {
        self.at_ms
    }

    /// The held event's `created_at`, as stored.
    pub fn created_at(&self) -> mongodb::bson::DateTime {
        mongodb::bson::DateTime::from_millis(self.at_ms)
    }

    /// The event is in RabbitMQ's hands now (confirmed, or perhaps: a publish whose confirm
    /// never came, a delivery handed back): readers find it through the queue from here on.
    pub fn hand_over(mut self) {
        let mut inner = self.tracker.lock();
        let now = (self.tracker.clock)();
        inner.remove(self.at_ms);
        inner.hand_over(self.at_ms, now);
        self.live = false;
    }

    /// The event's fate is settled (stored, dead-lettered): the hold just ends.
    pub fn settle(mut self) {
        self.tracker.lock().remove(self.at_ms);
        self.live = false;
    }

    /// The write gave up without knowing whether the event landed: it may still land until
    /// `until_ms`, so it stays held until then.
    pub fn linger(mut self, until_ms: i64) {
        let mut inner = self.tracker.lock();
        inner.remove(self.at_ms);
        inner.lingering.push((self.at_ms, until_ms));
        self.live = false;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.live {
            return;
        }
        let mut inner = self.tracker.lock();
        inner.remove(self.at_ms);
        if self.back_to_queue {
            let now = (self.tracker.clock)();
            inner.hand_over(self.at_ms, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    static NOW: AtomicI64 = AtomicI64::new(10_000);
    fn clock() -> i64 {
        NOW.load(Ordering::SeqCst)
    }

    #[test]
    fn holds_show_until_they_end_and_hand_overs_go_to_their_second() {
        let t = Arc::new(Tracker::with_clock(clock));
        NOW.store(10_000, Ordering::SeqCst);
        let a = t.stamp();
        NOW.store(10_500, Ordering::SeqCst);
        let b = t.stamp();
        assert_eq!(t.snapshot().held_ms, Some(10_000));
        NOW.store(11_200, Ordering::SeqCst);
        a.hand_over();
        let s = t.snapshot();
        assert_eq!(s.held_ms, Some(10_500));
        assert_eq!(
            s.buckets,
            vec![Bucket {
                start_ms: 11_000,
                min_created_ms: 10_000
            }]
        );
        b.linger(20_000);
        assert_eq!(t.snapshot().held_ms, Some(10_500), "lingers until 20 s");
        NOW.store(20_000, Ordering::SeqCst);
        assert_eq!(t.snapshot().held_ms, None);
        let c = t.hold_at(5);
        assert_eq!(t.snapshot().held_ms, Some(5));
        drop(c);
        assert_eq!(t.held(), 0);
        // A delivery dropped unsettled is back in the queue; a settled one is gone.
        NOW.store(30_500, Ordering::SeqCst);
        drop(t.hold_delivery(7));
        t.hold_delivery(8).settle();
        let s = t.snapshot();
        assert_eq!(s.held_ms, None);
        assert_eq!(
            s.buckets.last(),
            Some(&Bucket {
                start_ms: 30_000,
                min_created_ms: 7
            })
        );
    }
}

//! The ids this replica published most recently, so `GET /v1/event/{id}` can answer "queued"
//! for an event confirmed by RabbitMQ but not yet in MongoDB.
//!
//! RabbitMQ cannot be asked cheaply whether a given message is in a queue, and MongoDB knows
//! only what is stored; so each replica remembers what *it* published — in memory, the last
//! [`CAPACITY`] ids, oldest forgotten first (about 4 MiB). Nothing else is kept: after a
//! restart, on another replica, or once forgotten, a queued event reads as "unknown" until it
//! is stored. docs/api.md tells producers what that means for them.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use mongodb::bson::oid::ObjectId;

/// Ids remembered per replica.
pub const CAPACITY: usize = 100_000;

/// A bounded set of ids, first in first out.
pub struct Recent {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    ids: HashSet<ObjectId>,
    order: VecDeque<ObjectId>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::with_capacity(CAPACITY)
    }
}

impl Recent {
    pub fn with_capacity(capacity: usize) -> Recent {
        Recent {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    /// Remembers `id`; `false` when it was remembered already.
    pub fn insert(&self, id: ObjectId) -> bool {
        // A poisoned lock only means another request panicked mid-insert; the set is still
        // a valid set, and losing this id costs only a "queued" answer.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let new = inner.ids.insert(id);
        if new {
            inner.order.push_back(id);
            while inner.order.len() > self.capacity {
                if let Some(old) = inner.order.pop_front() {
                    inner.ids.remove(&old);
                }
            }
        }
        new
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.ids.contains(id)
    }

    /// Forgets `id`; its place in the order is reclaimed when it comes up.
    pub fn remove(&self, id: &ObjectId) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.ids.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_ids_are_forgotten_first() {
        let recent = Recent::with_capacity(2);
        let (a, b, c) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
        assert!(recent.insert(a));
        assert!(recent.insert(b));
        assert!(
            !recent.insert(b),
            "remembered already: the caller must not forget it"
        );
        assert!(recent.contains(&a) && recent.contains(&b));
        recent.insert(c);
        assert!(!recent.contains(&a), "over capacity: the oldest goes");
        assert!(recent.contains(&b) && recent.contains(&c));
        recent.remove(&b);
        assert!(!recent.contains(&b));
    }
}

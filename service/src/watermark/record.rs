//! A replica's record in MongoDB and the rule that turns the records into `complete_until`.
//!
//! Each replica writes one document about once a second ([`super::heartbeat`]): its clock
//! (`at`), the oldest `created_at` it holds ([`super::tracker`]), and in queue mode its confirm
//! buckets and the depth polls that found the queue empty. [`complete_until`] is a pure
//! function of those records, so the argument for it is written here, next to it:
//!
//! **Direct mode.** An event a replica may still store is held by it, or was created after its
//! record: so every such event has `created_at ≥ min(at, held)`. The write deadline bounds it
//! too: the last attempt starts before `created_at + deadline` and may take the server
//! selection time, so `created_at ≥ now − lag` (lag = deadline + selection + clock skew).
//! A replica refuses events while its own record is older than `lag` ([`super::Watermark::accepting`]);
//! so a record older than `2 × lag` belongs to a replica that has stored, or given up, all it
//! ever took since — dead or alive, it drops out.
//!
//! **Queue mode.** Between its publish and its settlement an event is held by its publisher
//! (until RabbitMQ's confirm), ready in the queue, or held by a drain (from delivery to
//! acknowledgement); the ready part is what no replica holds. A depth poll that found the queue
//! empty, answered at `e`, says that every event confirmed before the poll was sent had been
//! delivered (or settled) by `e`. Take the latest such poll `e*` that every live replica's
//! record post-dates (by the clock-skew allowance between two replicas, and a margin for a
//! delivery still in the connection's buffer): every event delivered before `e*` shows in
//! its drain's record. An event confirmed after the poll was sent is in its publisher's
//! confirm buckets from that second on. So every unsettled event has `created_at` at least
//! the least of each live record's `at`, held, and confirms since `e*` — and nothing can be
//! said without an `e*`. A record is never dropped for being old: a replica that cannot
//! write to MongoDB may still hold messages, so an old record holds the watermark back, which
//! is what an outage should do. A replica is dropped only once it is known dead: its
//! exclusive liveness queue in RabbitMQ is gone (its connection closed, so RabbitMQ has
//! returned its deliveries to the queue), recorded as `dead_at`; its record counts until an
//! empty poll sent after that.
//!
//! **Both.** A value once served was true then, and every event created since is newer: the
//! greatest value any replica served is a floor, which also keeps `complete_until` from going
//! back when a replica restarts.

use mongodb::bson::{doc, Bson, Document};

use super::tracker::{Bucket, Empty, Snapshot};

/// The fields of a record.
pub mod field {
    pub const ID: &str = "_id";
    pub const MODE: &str = "mode";
    pub const AT: &str = "at";
    /// `at` as a date, for people reading the collection.
    pub const AT_DATE: &str = "at_date";
    pub const HELD: &str = "held";
    pub const BUCKETS: &str = "confirms";
    pub const OLDER: &str = "confirms_before";
    pub const EMPTIES: &str = "empty_polls";
    pub const SERVED: &str = "served";
    pub const DEAD_AT: &str = "dead_at";
    pub const LIVENESS: &str = "liveness_queue";
}

/// How a replica ingests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Direct,
    Queue,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Queue => "queue",
        }
    }
}

/// One replica's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub mode: Mode,
    pub snap: Snapshot,
    /// The greatest `complete_until` it served (ms).
    pub served_ms: Option<i64>,
    /// When it was found dead, or stopped (ms).
    pub dead_at_ms: Option<i64>,
    /// Queue mode: its exclusive queue in RabbitMQ, which lives as long as its connection.
    pub liveness: Option<String>,
}

impl Record {
    pub fn to_document(&self) -> Document {
        let s = &self.snap;
        let opt = |v: Option<i64>| v.map_or(Bson::Null, Bson::Int64);
        doc! {
            field::ID: &self.id,
            field::MODE: self.mode.as_str(),
            field::AT: s.at_ms,
            field::AT_DATE: mongodb::bson::DateTime::from_millis(s.at_ms),
            field::HELD: opt(s.held_ms),
            field::BUCKETS: s.buckets.iter().map(|b| doc! { "s": b.start_ms, "m": b.min_created_ms }).collect::<Vec<_>>(),
            field::OLDER: opt(s.older_min_ms),
            field::EMPTIES: s.empties.iter().map(|e| doc! { "s": e.sent_ms, "r": e.reply_ms }).collect::<Vec<_>>(),
            field::SERVED: opt(self.served_ms),
            field::DEAD_AT: opt(self.dead_at_ms),
            field::LIVENESS: self.liveness.clone().map_or(Bson::Null, Bson::String),
        }
    }

    /// Reads a record; `None` for a document that is not one (it is then ignored).
    pub fn from_document(d: &Document) -> Option<Record> {
        let int = |v: Option<&Bson>| match v {
            Some(Bson::Int64(n)) => Some(*n),
            Some(Bson::Int32(n)) => Some(i64::from(*n)),
            Some(Bson::Double(f)) => Some(*f as i64),
            _ => None,
        };
        let list = |key: &str| -> Vec<(i64, i64)> {
            d.get_array(key)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| {
                            let v = v.as_document()?;
                            Some((int(v.get("s"))?, int(v.get("m").or(v.get("r")))?))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let mode = match d.get_str(field::MODE).ok()? {
            "direct" => Mode::Direct,
            "queue" => Mode::Queue,
            _ => return None,
        };
        Some(Record {
            id: d.get_str(field::ID).ok()?.to_owned(),
            mode,
            snap: Snapshot {
                at_ms: int(d.get(field::AT))?,
                held_ms: int(d.get(field::HELD)),
                buckets: list(field::BUCKETS)
                    .into_iter()
                    .map(|(start_ms, min_created_ms)| Bucket {
                        start_ms,
                        min_created_ms,
                    })
                    .collect(),
                older_min_ms: int(d.get(field::OLDER)),
                empties: list(field::EMPTIES)
                    .into_iter()
                    .map(|(sent_ms, reply_ms)| Empty { sent_ms, reply_ms })
                    .collect(),
            },
            served_ms: int(d.get(field::SERVED)),
            dead_at_ms: int(d.get(field::DEAD_AT)),
            liveness: d.get_str(field::LIVENESS).ok().map(str::to_owned),
        })
    }

    /// The least `created_at` confirmed (handed to RabbitMQ) at or after `since_ms`, by this
    /// replica's clock; buckets folded away count when they may reach that far.
    fn confirmed_since(&self, since_ms: i64) -> Option<i64> {
        let s = &self.snap;
        let kept = s
            .buckets
            .iter()
            .filter(|b| b.start_ms + 1000 > since_ms)
            .map(|b| b.min_created_ms)
            .min();
        let first_kept = s.buckets.first().map_or(i64::MAX, |b| b.start_ms);
        let older = s.older_min_ms.filter(|_| since_ms < first_kept);
        min_opt(kept, older)
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What the rule needs besides the records.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub now_ms: i64,
    /// Direct mode: how long after its `created_at` an event may still land (write deadline
    /// + server selection + clock skew).
    pub lag_ms: i64,
    /// How far apart two replicas' clocks may be.
    pub skew_ms: i64,
    /// How long a delivery may wait in the drain's connection before the drain holds it.
    pub margin_ms: i64,
}

/// `complete_until` (ms) from this replica's own fresh record `me` and the others' latest.
pub fn complete_until(me: &Record, others: &[Record], p: &Params) -> i64 {
    let all: Vec<&Record> = std::iter::once(me)
        .chain(others.iter().filter(|r| r.id != me.id))
        .collect();
    let floor = all.iter().filter_map(|r| r.served_ms).max();
    let mut w = p.now_ms;
    for r in all.iter().filter(|r| r.mode == Mode::Direct) {
        let s = &r.snap;
        if r.dead_at_ms.is_some() || s.at_ms < p.now_ms - 2 * p.lag_ms {
            continue;
        }
        let v = s.held_ms.map_or(s.at_ms, |h| h.min(s.at_ms));
        w = w.min(v.max(p.now_ms - p.lag_ms));
    }
    let queue: Vec<&Record> = all
        .iter()
        .copied()
        .filter(|r| r.mode == Mode::Queue)
        .collect();
    if !queue.is_empty() {
        match queue_bound(me, &queue, p) {
            Some(q) => w = w.min(q),
            None => return floor.unwrap_or(0),
        }
    }
    floor.map_or(w, |f| w.max(f))
}

/// The queue-mode bound (see the module documentation); `None` without an empty poll that
/// every live record post-dates.
fn queue_bound(me: &Record, queue: &[&Record], p: &Params) -> Option<i64> {
    let skew = |a: &Record, b: &Record| if a.id == b.id { 0 } else { p.skew_ms };
    let live: Vec<&Record> = queue
        .iter()
        .copied()
        .filter(|r| r.dead_at_ms.is_none())
        .collect();
    let (observer, poll) = queue
        .iter()
        .flat_map(|x| x.snap.empties.iter().map(move |e| (*x, *e)))
        .filter(|(x, e)| {
            live.iter()
                .all(|r| e.reply_ms + skew(x, r) + p.margin_ms <= r.snap.at_ms)
        })
        .max_by_key(|(x, e)| (e.reply_ms - skew(x, me), e.sent_ms))?;
    let mut w = i64::MAX;
    for r in queue {
        if let Some(dead) = r.dead_at_ms {
            // Its deliveries went back to the queue by `dead`; a poll sent after that found
            // them delivered again, to a live drain.
            if poll.sent_ms >= dead + skew(observer, r) {
                continue;
            }
        }
        let s = &r.snap;
        let since = poll.sent_ms - skew(observer, r);
        let term = min_opt(s.held_ms, r.confirmed_since(since)).map_or(s.at_ms, |v| v.min(s.at_ms));
        w = w.min(term);
    }
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: i64 = 22_000;
    fn params(now: i64) -> Params {
        Params {
            now_ms: now,
            lag_ms: LAG,
            skew_ms: 2_000,
            margin_ms: 1_000,
        }
    }

    fn rec(id: &str, mode: Mode, at: i64) -> Record {
        Record {
            id: id.into(),
            mode,
            snap: Snapshot {
                at_ms: at,
                ..Snapshot::default()
            },
            served_ms: None,
            dead_at_ms: None,
            liveness: None,
        }
    }

    #[test]
    fn a_record_round_trips_through_bson() {
        let mut r = rec("a", Mode::Queue, 5);
        r.snap.held_ms = Some(3);
        r.snap.buckets = vec![Bucket {
            start_ms: 1000,
            min_created_ms: 900,
        }];
        r.snap.older_min_ms = Some(1);
        r.snap.empties = vec![Empty {
            sent_ms: 2,
            reply_ms: 4,
        }];
        r.served_ms = Some(2);
        r.liveness = Some("q".into());
        assert_eq!(Record::from_document(&r.to_document()), Some(r));
    }

    #[test]
    fn direct_mode_lags_by_what_is_in_flight_only() {
        let now = 100_000;
        let me = rec("me", Mode::Direct, now);
        assert_eq!(complete_until(&me, &[], &params(now)), now, "nothing held");
        let mut other = rec("b", Mode::Direct, now - 800);
        assert_eq!(
            complete_until(&me, &[other.clone()], &params(now)),
            now - 800
        );
        other.snap.held_ms = Some(now - 5_000);
        assert_eq!(
            complete_until(&me, &[other.clone()], &params(now)),
            now - 5_000
        );
        // An old record cannot hold anything past the write deadline.
        other.snap.at_ms = now - 30_000;
        other.snap.held_ms = Some(now - 31_000);
        assert_eq!(
            complete_until(&me, &[other.clone()], &params(now)),
            now - LAG
        );
        // Past twice that, its replica has refused events for a while: it drops out.
        other.snap.at_ms = now - 2 * LAG - 1;
        assert_eq!(complete_until(&me, &[other], &params(now)), now);
    }

    #[test]
    fn queue_mode_knows_nothing_without_an_empty_poll() {
        let now = 100_000;
        let me = rec("me", Mode::Queue, now);
        assert_eq!(complete_until(&me, &[], &params(now)), 0);
        let mut served = me.clone();
        served.served_ms = Some(90_000);
        assert_eq!(
            complete_until(&served, &[], &params(now)),
            90_000,
            "the floor"
        );
    }

    #[test]
    fn queue_mode_counts_what_was_confirmed_since_the_last_empty_poll() {
        let now = 100_000;
        let mut me = rec("me", Mode::Queue, now);
        me.snap.empties = vec![Empty {
            sent_ms: 97_000,
            reply_ms: 97_010,
        }];
        assert_eq!(complete_until(&me, &[], &params(now)), now);
        // Confirmed in the second of the poll: it may be in the queue still.
        me.snap.buckets = vec![Bucket {
            start_ms: 97_000,
            min_created_ms: 96_500,
        }];
        assert_eq!(complete_until(&me, &[], &params(now)), 96_500);
        // Confirmed in a second that ended before the poll was sent: delivered by then.
        me.snap.buckets[0].start_ms = 95_000;
        assert_eq!(complete_until(&me, &[], &params(now)), now);
    }

    #[test]
    fn queue_mode_needs_every_live_record_to_postdate_the_poll() {
        let now = 100_000;
        let mut me = rec("me", Mode::Queue, now);
        me.snap.empties = vec![
            Empty {
                sent_ms: 90_000,
                reply_ms: 90_000,
            },
            Empty {
                sent_ms: 98_000,
                reply_ms: 98_000,
            },
        ];
        me.snap.buckets = vec![Bucket {
            start_ms: 95_000,
            min_created_ms: 94_000,
        }];
        // A replica whose record is from 96 s (MongoDB refuses its writes): only the 90 s poll
        // qualifies, and what was confirmed since then counts.
        let mut stale = rec("b", Mode::Queue, 96_000);
        stale.snap.held_ms = Some(95_500);
        assert_eq!(complete_until(&me, &[stale.clone()], &params(now)), 94_000);
        // It stays that way however long the outage lasts: an old record never drops out.
        let later = now + 600_000;
        me.snap.at_ms = later;
        assert_eq!(
            complete_until(&me, &[stale.clone()], &params(later)),
            94_000
        );
        // Found dead at 95 s: a poll sent after that (98 s, past the clock skew too) found
        // what it held delivered again, to a live drain; it no longer counts.
        stale.dead_at_ms = Some(95_000);
        me.snap.at_ms = now;
        assert_eq!(complete_until(&me, &[stale.clone()], &params(now)), now);
        // Found dead at 97 s: within the skew of that poll, what it held still counts (but it
        // no longer holds the poll back).
        stale.dead_at_ms = Some(97_000);
        assert_eq!(complete_until(&me, &[stale], &params(now)), 95_500);
    }

    #[test]
    fn a_served_value_is_a_floor_and_the_modes_mix() {
        let now = 100_000;
        let mut me = rec("me", Mode::Direct, now);
        me.snap.held_ms = Some(99_000);
        let mut other = rec("q", Mode::Queue, now - 500);
        other.snap.empties = vec![Empty {
            sent_ms: 96_000,
            reply_ms: 96_000,
        }];
        other.snap.held_ms = Some(98_000);
        assert_eq!(complete_until(&me, &[other.clone()], &params(now)), 98_000);
        other.served_ms = Some(98_500);
        assert_eq!(complete_until(&me, &[other], &params(now)), 98_500);
    }
}

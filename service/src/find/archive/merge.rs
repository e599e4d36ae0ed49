//! One page, assembled from the segments of the plan in reading order — MongoDB's documents
//! and the archive's rows alike — and its `next_cursor`.
//!
//! Segments cover disjoint time ranges and are read in page order, so the page is their
//! concatenation. [`Page::push`] still checks every event: strictly after the reader's cursor
//! and strictly after the previous event in page order. An event that breaks this (an archive
//! file out of order, an event in two segments) fails the find rather than produce a page
//! that repeats or reorders events.

use mongodb::bson::oid::ObjectId;
use mongodb::bson::Document;

use auditlog_common::schema::fields;

use super::error::FindError;
use crate::event::{event_out, EventOut};
use crate::find::query::{next_cursor, Cursor, FindQuery, FindResponse, Order, Tier};

/// An event and its position in the page order.
#[derive(Debug, Clone, PartialEq)]
pub struct PageEvent {
    /// `(created_at, id)`; `None` only for a stored document that is not an event the service
    /// wrote (no date, or an `_id` that is not an ObjectId): find has always shown those as
    /// they are, and gives no cursor after them.
    pub key: Option<(i64, ObjectId)>,
    pub out: EventOut,
}

impl PageEvent {
    pub fn new(created_at_ms: i64, id: ObjectId, out: EventOut) -> Self {
        PageEvent {
            key: Some((created_at_ms, id)),
            out,
        }
    }

    /// A stored document.
    pub fn from_document(doc: &Document) -> PageEvent {
        let key = match (
            doc.get_datetime(fields::CREATED_AT),
            doc.get_object_id(fields::ID),
        ) {
            (Ok(at), Ok(id)) => Some((at.timestamp_millis(), id)),
            _ => None,
        };
        PageEvent {
            key,
            out: event_out(doc),
        }
    }
}

/// The page being assembled: at most `limit + 1` events (the extra one says a next page
/// exists), and the tiers read for it.
#[derive(Debug)]
pub struct Page<'q> {
    query: &'q FindQuery,
    events: Vec<PageEvent>,
    tiers: Vec<Tier>,
}

impl<'q> Page<'q> {
    pub fn new(query: &'q FindQuery) -> Self {
        Page {
            query,
            events: Vec::with_capacity(query.limit as usize + 1),
            tiers: vec![],
        }
    }

    fn capacity(&self) -> usize {
        self.query.limit as usize + 1
    }

    /// Events still wanted.
    pub fn remaining(&self) -> usize {
        self.capacity().saturating_sub(self.events.len())
    }

    pub fn is_full(&self) -> bool {
        self.remaining() == 0
    }

    /// Notes that `tier` is being read for this page.
    pub fn reading(&mut self, tier: Tier) {
        if !self.tiers.contains(&tier) {
            self.tiers.push(tier);
        }
    }

    /// Whether `a` comes strictly before `b` in the page order.
    fn before(&self, a: (i64, ObjectId), b: (i64, ObjectId)) -> bool {
        match self.query.order {
            Order::Asc => a < b,
            Order::Desc => a > b,
        }
    }

    /// Takes the next event in page order.
    pub fn push(&mut self, event: PageEvent) -> Result<(), FindError> {
        if let Some(key) = event.key {
            if let Some(after) = &self.query.after {
                if !self.before(after.position(), key) {
                    return Err(FindError::Unordered {
                        id: event.out.id,
                        why: "at or before the reader's cursor".into(),
                    });
                }
            }
            if let Some(last) = self.events.iter().rev().find_map(|e| e.key) {
                if !self.before(last, key) {
                    return Err(FindError::Unordered {
                        id: event.out.id,
                        why: "at or before the previous event".into(),
                    });
                }
            }
        }
        if !self.is_full() {
            self.events.push(event);
        }
        Ok(())
    }

    /// Takes a MongoDB document (see [`Page::push`]).
    pub fn push_document(&mut self, doc: &Document) -> Result<(), FindError> {
        self.push(PageEvent::from_document(doc))
    }

    /// The answer: `limit` events, and where the next page starts (`stop`: where an ascending
    /// page stops, see [`FindQuery::stop`]).
    pub fn finish(mut self, stop: Option<i64>, complete_until: String) -> FindResponse {
        let limit = self.query.limit as usize;
        let more = self.events.len() > limit;
        self.events.truncate(limit);
        let last = self
            .events
            .last()
            .and_then(|e| e.key)
            .map(|(created_at_ms, id)| Cursor {
                created_at_ms,
                id,
                order: self.query.order,
            });
        FindResponse {
            next_cursor: next_cursor(self.query, more, last, stop).map(|c| c.encode()),
            events: self.events.into_iter().map(|e| e.out).collect(),
            complete_until,
            tiers: self.tiers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::find::query::FindRequest;

    fn query(order: Order, limit: u32, after: Option<Cursor>) -> FindQuery {
        let mut q = FindQuery::from_request(
            FindRequest {
                order: Some(order),
                limit: Some(limit),
                created_to: Some("2020-01-01T00:00:00Z".into()),
                ..Default::default()
            },
            1000,
        )
        .unwrap();
        q.after = after;
        q
    }

    fn ev(ms: i64, id: u8) -> PageEvent {
        let oid = ObjectId::from_bytes([id; 12]);
        PageEvent::new(
            ms,
            oid,
            EventOut {
                id: oid.to_hex(),
                kind: "t".into(),
                consumer: "c".into(),
                created_at: ms.to_string(),
                payload: None,
            },
        )
    }

    #[test]
    fn a_full_page_keeps_limit_events_and_continues_after_the_last() {
        let q = query(Order::Asc, 2, None);
        let mut page = Page::new(&q);
        page.reading(Tier::Archive);
        page.push(ev(1, 1)).unwrap();
        page.push(ev(1, 2)).unwrap();
        page.reading(Tier::Mongodb);
        page.reading(Tier::Archive);
        page.push(ev(2, 1)).unwrap();
        assert!(page.is_full());
        let r = page.finish(None, "x".into());
        assert_eq!(r.events.len(), 2);
        assert_eq!(r.tiers, vec![Tier::Archive, Tier::Mongodb]);
        let next = Cursor::decode(r.next_cursor.as_deref().unwrap()).unwrap();
        assert_eq!(next.position(), (1, ObjectId::from_bytes([2; 12])));
        // The last page of a bounded find has no next cursor.
        let mut page = Page::new(&q);
        page.push(ev(1, 1)).unwrap();
        assert_eq!(page.finish(None, "x".into()).next_cursor, None);
    }

    #[test]
    fn events_out_of_order_or_behind_the_cursor_fail_the_page() {
        let q = query(Order::Asc, 10, None);
        let mut page = Page::new(&q);
        page.push(ev(5, 1)).unwrap();
        assert!(
            matches!(page.push(ev(5, 1)), Err(FindError::Unordered { .. })),
            "a repeat"
        );
        assert!(matches!(
            page.push(ev(4, 9)),
            Err(FindError::Unordered { .. })
        ));
        let q = query(Order::Desc, 10, None);
        let mut page = Page::new(&q);
        page.push(ev(5, 1)).unwrap();
        page.push(ev(4, 9)).unwrap();
        assert!(page.push(ev(4, 9)).is_err());
        let cursor = Cursor {
            created_at_ms: 5,
            id: ObjectId::from_bytes([3; 12]),
            order: Order::Asc,
        };
        let q = query(Order::Asc, 10, Some(cursor));
        let mut page = Page::new(&q);
        assert!(page.push(ev(5, 3)).is_err(), "the cursor's own event");
        page.push(ev(5, 4)).unwrap();
    }

    #[test]
    fn stored_documents_that_are_not_events_pass_as_they_always_did() {
        let q = query(Order::Asc, 5, None);
        let mut page = Page::new(&q);
        page.push(ev(1, 1)).unwrap();
        page.push_document(&mongodb::bson::doc! { "_id": "custom", "type": "t" })
            .unwrap();
        page.push(ev(2, 1)).unwrap();
        let r = page.finish(None, "x".into());
        assert_eq!(r.events.len(), 3);
        assert_eq!(r.events[1].kind, "t");
    }
}

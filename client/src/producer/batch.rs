//! Events as the producer holds them, and batches of them: size accounting, and the request
//! body (a JSON array, gzip-compressed when asked).

use std::io::Write;
use std::time::Instant;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::error::Error;
use crate::types::NewEvent;

/// One event taken by `send`: serialized once there (on the application's task, not the
/// batcher's), and sent as these bytes on every attempt, so a retry is byte for byte the same.
#[derive(Debug)]
pub(crate) struct Item {
    pub event: NewEvent,
    pub json: Vec<u8>,
    pub taken: Instant,
    /// Order of arrival at the batcher, for `flush`.
    pub seq: u64,
}

impl Item {
    pub fn new(event: NewEvent) -> Result<Item, serde_json::Error> {
        let json = serde_json::to_vec(&event)?;
        Ok(Item {
            event,
            json,
            taken: Instant::now(),
            seq: 0,
        })
    }
}

/// Events gathered for one request. Their `seq`s are consecutive: the batcher fills one batch
/// at a time, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub items: Vec<Item>,
    /// The JSON array's length: brackets, events, commas.
    pub bytes: usize,
    /// When a batch that is not full goes anyway (first event's arrival + linger).
    pub deadline: Option<tokio::time::Instant>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn first_seq(&self) -> Option<u64> {
        self.items.first().map(|i| i.seq)
    }

    /// Whether `item` may join without passing the limits; an empty batch takes any event, so
    /// an event larger than `max_bytes` still goes (alone).
    pub fn fits(&self, item: &Item, max_events: usize, max_bytes: usize) -> bool {
        self.items.is_empty()
            || (self.items.len() < max_events && self.bytes + item.json.len() < max_bytes)
    }

    pub fn push(&mut self, item: Item) {
        self.bytes += item.json.len() + if self.items.is_empty() { 2 } else { 1 };
        self.items.push(item);
    }
}

/// The body of `POST /v1/events` for `items`: `[e1,e2,…]`, gzip-compressed (fast level: JSON
/// events shrink several times over even so, and the batcher's CPU is the application's) when
/// `compress`.
pub(crate) fn body(items: &[Item], compress: bool) -> Result<Vec<u8>, Error> {
    let raw_len = 2 + items.iter().map(|i| i.json.len() + 1).sum::<usize>();
    let mut raw = Vec::with_capacity(raw_len);
    raw.push(b'[');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            raw.push(b',');
        }
        raw.extend_from_slice(&item.json);
    }
    raw.push(b']');
    if !compress {
        return Ok(raw);
    }
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4), Compression::fast());
    gz.write_all(&raw)
        .and_then(|_| gz.finish())
        .map_err(|e| Error::Decode(format!("cannot compress a batch: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn item(n: usize) -> Item {
        Item::new(NewEvent::new("t", format!("c{n}"))).expect("serializes")
    }

    #[test]
    fn body_is_a_json_array_and_gzip_round_trips() {
        let mut batch = Batch::default();
        for n in 0..3 {
            batch.push(item(n));
        }
        let plain = body(&batch.items, false).expect("body");
        assert_eq!(plain.len(), batch.bytes);
        let events: Vec<NewEvent> = serde_json::from_slice(&plain).expect("array");
        assert_eq!(events.len(), 3);
        let gz = body(&batch.items, true).expect("gzip");
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .expect("gunzip");
        assert_eq!(back, plain);
    }

    #[test]
    fn limits() {
        let mut batch = Batch::default();
        let big = Item::new(NewEvent::new("t", "x".repeat(100))).expect("serializes");
        assert!(batch.fits(&big, 2, 10), "an empty batch takes any event");
        batch.push(big);
        assert!(!batch.fits(&item(1), 2, 10));
        assert!(batch.fits(&item(1), 2, 1000));
        batch.push(item(1));
        assert!(!batch.fits(&item(2), 2, 1000));
    }
}

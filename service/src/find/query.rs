//! `find`: turning query parameters or a JSON body into a MongoDB query, keyset pagination,
//! and running it with a server-side time limit.
//!
//! Order is `created_at` then `_id`, ascending by default (`order=desc` reverses). The cursor
//! is the position of the last event returned, `(created_at, _id)`, plus the direction, so
//! the next page starts strictly after it: an event is never returned twice and, for events
//! already visible when the page is read, never skipped, however many new events arrive.
//!
//! An event becomes visible when its write lands, which can be long after its `created_at`
//! (a store outage, retried until the write deadline; in queue mode, as long as it is queued).
//! So every answer carries `complete_until`, from [`crate::watermark`]: the oldest
//! `created_at` any live replica still holds unstored, so every event created before it that
//! will ever be stored is visible already. Ascending pages stop there, and the last page's
//! `next_cursor` resumes from there, so a reader that tails the log by cursor cannot pass an
//! event still being written. `include_incomplete` lifts the stop for readers that want the
//! newest events at once and accept that a cursor may then pass some. Descending pages start
//! from the newest visible event; their cursor moves back in time, away from the writes.
//!
//! Filters follow the indexes of `auditlog_common::schema`: equality on `consumer` or `type`,
//! sort on `created_at, _id`, range on `created_at`. A find by a key scoped to some consumers
//! that names none gets their condition instead of the equality (`$in` of names and anchored
//! prefix regexes, [`crate::keys::Consumers::find_condition`]), which the consumer index
//! serves as well.
//!
//! Which tier answers which part of the range — MongoDB or the Parquet archive — is
//! [`crate::find::archive`]'s business; this module gives it the range ([`Span`]) and the
//! MongoDB query of one part of it ([`find_in`]).

use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Bson, Document};
use poem_openapi::registry::Registry;
use poem_openapi::{Enum, Object};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use auditlog_common::schema::fields;

use crate::error::ApiError;
use crate::event::EventOut;
use crate::keys::Consumers;

/// Events per page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Enum)]
#[oai(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first (default).
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// `order` in a find body: the same spellings as the query parameter.
impl<'de> Deserialize<'de> for Order {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        parse_order(&s).map_err(serde::de::Error::custom)
    }
}

// Parsed by `FindRequest::from_json`; the doc comment below is the OpenAPI description.
/// The JSON body form of a find (every field optional), as in the seed's example.
#[derive(Debug, Clone, Default, Object, Deserialize)]
#[oai(rename = "FindRequest", deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct FindRequest {
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub consumer: Option<String>,
    /// Inclusive lower bound, ISO 8601 (e.g. `2022-05-22T00:00:00Z`).
    pub created_from: Option<String>,
    /// Exclusive upper bound, ISO 8601.
    pub created_to: Option<String>,
    /// Events per page (default 100, lowered to `AUDIT_FIND_MAX_LIMIT`).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub order: Option<Order>,
    /// Ascending order only: also return events newer than `complete_until` (default false).
    pub include_incomplete: Option<bool>,
}

impl FindRequest {
    /// Parses the JSON body form. Like the query parameters, a field of the wrong type or with
    /// a bad value is `bad_query` (400); a body that is not a JSON object, or names a field a
    /// find does not take, is `invalid_query` (422); malformed JSON is `malformed_json`.
    pub fn from_json(bytes: &[u8]) -> Result<FindRequest, ApiError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::MalformedJson(format!("request body is not valid JSON: {e}")))?;
        let Value::Object(body) = &value else {
            return Err(ApiError::InvalidQuery(
                "a find body must be a JSON object".into(),
            ));
        };
        let fields = Self::fields();
        if let Some(unknown) = body.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(ApiError::InvalidQuery(format!(
                "unknown field `{unknown}`; a find takes only {}",
                fields.join(", ")
            )));
        }
        FindRequest::deserialize(&value).map_err(|e| {
            // serde does not name the field at fault: it is the first that fails on its own.
            let alone = |(k, v): &(&String, &Value)| {
                let one = serde_json::Map::from_iter([((*k).clone(), (*v).clone())]);
                FindRequest::deserialize(&Value::Object(one)).is_err()
            };
            match body.iter().find(alone) {
                Some((field, _)) => ApiError::BadQuery(format!("`{field}`: {e}")),
                None => ApiError::BadQuery(format!("invalid find body: {e}")),
            }
        })
    }

    /// The fields of the body form, in declaration order, as the derived OpenAPI schema names
    /// them (checked against the derived `Deserialize` by a test).
    fn fields() -> &'static [&'static str] {
        static FIELDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
            Registry::new()
                .create_fake_schema::<FindRequest>()
                .properties
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        });
        &FIELDS
    }
}

/// Where the events of a page were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum Tier {
    /// Parquet files written by `auditlog-archiver`, for windows TTL or `purge` may have
    /// removed from MongoDB (`AUDIT_ARCHIVE_URL`).
    Archive,
    /// The events collection.
    Mongodb,
}

/// One page of results.
#[derive(Debug, Clone, Object)]
#[oai(rename = "FindResponse")]
pub struct FindResponse {
    pub events: Vec<EventOut>,
    /// Present when more events may follow; pass it back as `cursor` for the next page. In
    /// ascending order it is absent only when `created_to` is at or before `complete_until`
    /// and every matching event was returned: the answer can no longer change.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
    /// Every event created before this instant that will ever be stored is visible already.
    /// Ascending pages stop here unless `include_incomplete=true`.
    pub complete_until: String,
    /// The tiers read to answer this page, in the order they were read: `archive` for time
    /// ranges only the archive still holds in full, `mongodb` for the rest. Informative only:
    /// the events, their order and `next_cursor` do not depend on where they were read.
    pub tiers: Vec<Tier>,
}

/// A half-open range of `created_at` in epoch milliseconds, `[lo, hi)`; `None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub lo: Option<i64>,
    pub hi: Option<i64>,
}

impl Span {
    pub fn new(lo: Option<i64>, hi: Option<i64>) -> Span {
        Span { lo, hi }
    }

    /// The part of `self` inside `[lo, hi)`.
    pub fn clip(&self, lo: i64, hi: i64) -> Span {
        Span {
            lo: Some(self.lo.map_or(lo, |l| l.max(lo))),
            hi: Some(self.hi.map_or(hi, |h| h.min(hi))),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!((self.lo, self.hi), (Some(l), Some(h)) if l >= h)
    }

    /// Whether `[lo, hi)` and `self` share an instant.
    pub fn overlaps(&self, lo: i64, hi: i64) -> bool {
        lo < hi && self.lo.is_none_or(|l| l < hi) && self.hi.is_none_or(|h| lo < h)
    }
}

/// A validated find.
#[derive(Debug, Clone, PartialEq)]
pub struct FindQuery {
    pub kind: Option<String>,
    pub consumer: Option<String>,
    /// When `consumer` is not given: the API key's consumers, which keep the find within them
    /// in both tiers (`None` or [`Consumers::All`]: every consumer).
    pub consumers_within: Option<Consumers>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    pub limit: u32,
    pub order: Order,
    pub after: Option<Cursor>,
    pub include_incomplete: bool,
}

/// Position after which the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_ms: i64,
    pub id: ObjectId,
    pub order: Order,
}

impl Cursor {
    /// The position after every event created before `until_ms`: where an ascending reader
    /// resumes once it has seen all of them.
    fn before(until_ms: i64) -> Cursor {
        Cursor {
            created_at_ms: until_ms - 1,
            id: ObjectId::from_bytes([0xff; 12]),
            order: Order::Asc,
        }
    }

    /// The `(created_at, id)` key the page order sorts on.
    pub fn position(&self) -> (i64, ObjectId) {
        (self.created_at_ms, self.id)
    }

    /// Opaque to clients: `<a|d><created_at ms, 16 hex><_id, 24 hex>`.
    pub fn encode(&self) -> String {
        let dir = match self.order {
            Order::Asc => 'a',
            Order::Desc => 'd',
        };
        format!(
            "{dir}{:016x}{}",
            self.created_at_ms as u64,
            self.id.to_hex()
        )
    }

    pub fn decode(s: &str) -> Result<Cursor, ApiError> {
        let bad = || {
            ApiError::BadQuery(format!(
                "`cursor` {s:?} is not a cursor this service issued"
            ))
        };
        if s.len() != 41 || !s.is_ascii() {
            return Err(bad());
        }
        let order = match &s[..1] {
            "a" => Order::Asc,
            "d" => Order::Desc,
            _ => return Err(bad()),
        };
        let ms = u64::from_str_radix(&s[1..17], 16).map_err(|_| bad())? as i64;
        let id = ObjectId::parse_str(&s[17..]).map_err(|_| bad())?;
        Ok(Cursor {
            created_at_ms: ms,
            id,
            order,
        })
    }
}

/// Parses an ISO 8601 datetime: RFC 3339 with an offset, or without one (taken as UTC), or a
/// bare date (midnight UTC).
pub fn parse_datetime(field: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(naive.and_utc());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(midnight) = date.and_hms_opt(0, 0, 0) {
            return Ok(midnight.and_utc());
        }
    }
    Err(ApiError::BadQuery(format!(
        "`{field}` must be an ISO 8601 datetime such as 2022-05-22T00:00:00Z, got {s:?}"
    )))
}

/// Parses `order`, in any letter case.
pub fn parse_order(s: &str) -> Result<Order, ApiError> {
    match s.to_ascii_lowercase().as_str() {
        "asc" => Ok(Order::Asc),
        "desc" => Ok(Order::Desc),
        _ => Err(ApiError::BadQuery(format!(
            "`order` must be asc or desc, got {s:?}"
        ))),
    }
}

/// Combines two sources of the same request (query string and JSON body): a field may come
/// from either, but not from both with different values.
pub fn merge(a: FindRequest, b: FindRequest) -> Result<FindRequest, ApiError> {
    fn pick<T: PartialEq>(name: &str, x: Option<T>, y: Option<T>) -> Result<Option<T>, ApiError> {
        match (x, y) {
            (Some(x), Some(y)) if x != y => Err(ApiError::BadQuery(format!(
                "`{name}` is given both as a query parameter and in the body, with different values"
            ))),
            (Some(x), _) => Ok(Some(x)),
            (None, y) => Ok(y),
        }
    }
    Ok(FindRequest {
        kind: pick("type", a.kind, b.kind)?,
        consumer: pick("consumer", a.consumer, b.consumer)?,
        created_from: pick("created_from", a.created_from, b.created_from)?,
        created_to: pick("created_to", a.created_to, b.created_to)?,
        limit: pick("limit", a.limit, b.limit)?,
        cursor: pick("cursor", a.cursor, b.cursor)?,
        order: pick("order", a.order, b.order)?,
        include_incomplete: pick(
            "include_incomplete",
            a.include_incomplete,
            b.include_incomplete,
        )?,
    })
}

impl FindQuery {
    /// Validates a request; `limit` above `max_limit` is lowered to it.
    pub fn from_request(req: FindRequest, max_limit: u32) -> Result<FindQuery, ApiError> {
        let limit = match req.limit {
            None => DEFAULT_LIMIT.min(max_limit),
            Some(0) => return Err(ApiError::BadQuery("`limit` must be at least 1".into())),
            Some(n) => n.min(max_limit),
        };
        let order = req.order.unwrap_or_default();
        let after = match req.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => {
                let cursor = Cursor::decode(c)?;
                if cursor.order != order {
                    return Err(ApiError::BadQuery(
                        "`cursor` was issued for the other `order`; keep the same order while paging"
                            .into(),
                    ));
                }
                Some(cursor)
            }
        };
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(FindQuery {
            kind: nonempty(req.kind),
            consumer: nonempty(req.consumer),
            consumers_within: None,
            created_from: req
                .created_from
                .as_deref()
                .map(|s| parse_datetime("created_from", s))
                .transpose()?,
            created_to: req
                .created_to
                .as_deref()
                .map(|s| parse_datetime("created_to", s))
                .transpose()?,
            limit,
            order,
            after,
            include_incomplete: req.include_incomplete.unwrap_or(false),
        })
    }

    /// Where an ascending page stops (exclusive, ms): `complete_until`, unless the reader asked
    /// for incomplete events or its own `created_to` comes first. `None`: no stop.
    pub fn stop(&self, complete_until_ms: i64) -> Option<i64> {
        let asked_to = self.created_to.map(|t| t.timestamp_millis());
        match self.order {
            Order::Asc if !self.include_incomplete => match asked_to {
                Some(to) if to <= complete_until_ms => None,
                _ => Some(complete_until_ms),
            },
            _ => None,
        }
    }

    /// The `created_at` range this page may draw from: the reader's bounds, `stop` (see
    /// [`FindQuery::stop`]; only set when it comes before `created_to`), and the cursor's
    /// instant on the side the page moves away from (inclusive: events of that very
    /// millisecond after the cursor's id still follow; [`FindQuery::filter_within`] picks them).
    pub fn span(&self, stop: Option<i64>) -> Span {
        let mut lo = self.created_from.map(|t| t.timestamp_millis());
        let mut hi = stop.or(self.created_to.map(|t| t.timestamp_millis()));
        if let Some(after) = &self.after {
            match self.order {
                Order::Asc => {
                    lo = Some(lo.map_or(after.created_at_ms, |l| l.max(after.created_at_ms)))
                }
                Order::Desc => {
                    let end = after.created_at_ms.saturating_add(1);
                    hi = Some(hi.map_or(end, |h| h.min(end)));
                }
            }
        }
        Span { lo, hi }
    }

    /// The MongoDB filter of the whole page: [`FindQuery::filter_within`] its [`FindQuery::span`].
    pub fn filter(&self, stop: Option<i64>) -> Document {
        self.filter_within(self.span(stop))
    }

    /// The MongoDB filter of the events of `span` (a part of [`FindQuery::span`]): equality
    /// first, then the `created_at` range, then the keyset.
    pub fn filter_within(&self, span: Span) -> Document {
        let mut filter = Document::new();
        match (&self.consumer, &self.consumers_within) {
            (Some(c), _) => {
                filter.insert(fields::CONSUMER, c.as_str());
            }
            (None, Some(within)) => {
                if let Some(condition) = within.find_condition() {
                    filter.insert(fields::CONSUMER, condition);
                }
            }
            (None, None) => {}
        }
        if let Some(t) = &self.kind {
            filter.insert(fields::TYPE, t.as_str());
        }
        let mut range = Document::new();
        if let Some(lo) = span.lo {
            range.insert("$gte", mongodb::bson::DateTime::from_millis(lo));
        }
        if let Some(hi) = span.hi {
            range.insert("$lt", mongodb::bson::DateTime::from_millis(hi));
        }
        if let Some(after) = &self.after {
            let at = mongodb::bson::DateTime::from_millis(after.created_at_ms);
            let strict = match self.order {
                Order::Asc => "$gt",
                Order::Desc => "$lt",
            };
            // The range's inclusive bound at the cursor's instant lets the index narrow the
            // scan; the $or picks the exact continuation among events of the same millisecond.
            filter.insert(
                "$or",
                vec![
                    Bson::Document(doc! { fields::CREATED_AT: { strict: at } }),
                    Bson::Document(
                        doc! { fields::CREATED_AT: at, fields::ID: { strict: after.id } },
                    ),
                ],
            );
        }
        if !range.is_empty() {
            filter.insert(fields::CREATED_AT, range);
        }
        filter
    }

    pub fn sort(&self) -> Document {
        let dir = match self.order {
            Order::Asc => 1,
            Order::Desc => -1,
        };
        doc! { fields::CREATED_AT: dir, fields::ID: dir }
    }
}

/// The first `limit` events of `span` in MongoDB, in the page's order.
pub async fn find_in(
    collection: &mongodb::Collection<Document>,
    query: &FindQuery,
    span: Span,
    limit: usize,
    max_time: std::time::Duration,
) -> Result<Vec<Document>, mongodb::error::Error> {
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    collection
        .find(query.filter_within(span))
        .sort(query.sort())
        .limit(i64::from(limit))
        .batch_size(limit)
        .max_time(max_time)
        .await?
        .try_collect()
        .await
}

/// Where the next page starts. After a full page: after its last event. After the last page of
/// an ascending find that stopped at `complete_until`: after every event created before it
/// (all of them were returned), but never behind the reader's own cursor, so a tailing reader
/// always has a cursor to come back with and it never passes an event still being written.
pub fn next_cursor(
    query: &FindQuery,
    more: bool,
    last: Option<Cursor>,
    stop: Option<i64>,
) -> Option<Cursor> {
    if more {
        return last;
    }
    let resume = Cursor::before(stop?);
    match &query.after {
        Some(after) if after.position() > resume.position() => Some(after.clone()),
        _ => Some(resume),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            created_at_ms: 1_653_496_060_004,
            id: ObjectId::parse_str("628e58fc08808bcd3b2af122").unwrap(),
            order: Order::Desc,
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in [
            "",
            "x",
            "zzzz",
            &c.encode()[1..],
            &format!("q{}", &c.encode()[1..]),
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn datetimes_in_iso_8601_forms() {
        let expected = parse_datetime("f", "2022-05-22T00:00:00Z").unwrap();
        assert_eq!(
            parse_datetime("f", "2022-05-22T02:00:00+02:00").unwrap(),
            expected
        );
        assert_eq!(
            parse_datetime("f", "2022-05-22T00:00:00").unwrap(),
            expected
        );
        assert_eq!(parse_datetime("f", "2022-05-22").unwrap(), expected);
        let err = parse_datetime("created_from", "yesterday").unwrap_err();
        assert!(err.to_string().contains("`created_from`"));
    }

    #[test]
    fn limits_default_and_cap() {
        let q = FindQuery::from_request(FindRequest::default(), 1000).unwrap();
        assert_eq!(q.limit, DEFAULT_LIMIT);
        let q = FindQuery::from_request(
            FindRequest {
                limit: Some(5000),
                ..Default::default()
            },
            1000,
        )
        .unwrap();
        assert_eq!(q.limit, 1000);
        assert!(FindQuery::from_request(
            FindRequest {
                limit: Some(0),
                ..Default::default()
            },
            1000
        )
        .is_err());
    }

    #[test]
    fn body_and_query_merge_but_do_not_contradict() {
        let a = FindRequest {
            consumer: Some("c1".into()),
            ..Default::default()
        };
        let b = FindRequest::from_json(br#"{"type": "t1", "consumer": "c1"}"#).unwrap();
        let m = merge(a.clone(), b).unwrap();
        assert_eq!(m.kind.as_deref(), Some("t1"));
        let c = FindRequest::from_json(br#"{"consumer": "c2"}"#).unwrap();
        assert!(merge(a, c).is_err());
    }

    #[test]
    fn find_bodies_parse_with_the_codes_of_the_query_parameters() {
        let r = FindRequest::from_json(
            br#"{"type": "t", "consumer": null, "created_from": "2022-05-22", "limit": 5, "cursor": "", "order": "DESC"}"#,
        )
        .unwrap();
        assert_eq!(r.kind.as_deref(), Some("t"));
        assert_eq!(r.consumer, None);
        assert_eq!(r.limit, Some(5));
        assert_eq!(
            r.order,
            Some(Order::Desc),
            "order in any case, as in the query"
        );
        let unknown = "unknown field `consumr`; a find takes only type, consumer, created_from";
        for (body, code, words) in [
            (&br#"{"consumr": "c2"}"#[..], "invalid_query", unknown),
            (br#"[1]"#, "invalid_query", "must be a JSON object"),
            (br#"{"type": "t","#, "malformed_json", "not valid JSON"),
            (
                br#"{"limit": "many"}"#,
                "bad_query",
                "`limit`: invalid type",
            ),
            (br#"{"limit": -1}"#, "bad_query", "`limit`: invalid value"),
            (br#"{"limit": 4294967296}"#, "bad_query", "4294967296"),
            (
                br#"{"cursor": "", "type": 5}"#,
                "bad_query",
                "`type`: invalid type",
            ),
            (
                br#"{"order": "sideways"}"#,
                "bad_query",
                "`order` must be asc or desc",
            ),
        ] {
            let err = FindRequest::from_json(body).unwrap_err();
            let body = String::from_utf8_lossy(body);
            assert_eq!(err.code(), code, "{body}: {err}");
            assert!(err.to_string().contains(words), "{body}: {err}");
        }
    }

    #[test]
    fn the_schema_and_the_parser_know_the_same_fields() {
        assert_eq!(
            FindRequest::fields(),
            [
                "type",
                "consumer",
                "created_from",
                "created_to",
                "limit",
                "cursor",
                "order",
                "include_incomplete"
            ]
        );
        for field in FindRequest::fields() {
            let body = format!("{{{field:?}: null}}");
            let parsed = serde_json::from_str::<FindRequest>(&body);
            assert!(parsed.is_ok(), "serde does not know {field}: {parsed:?}");
        }
    }
    fn asc_query(created_to: Option<&str>, include_incomplete: bool) -> FindQuery {
        FindQuery::from_request(
            FindRequest {
                created_to: created_to.map(str::to_owned),
                include_incomplete: Some(include_incomplete),
                ..Default::default()
            },
            1000,
        )
        .unwrap()
    }

    #[test]
    fn ascending_pages_stop_at_complete_until_unless_asked_or_bounded_before_it() {
        let until = parse_datetime("t", "2026-01-01T00:00:10Z").unwrap();
        let ms = until.timestamp_millis();
        assert_eq!(asc_query(None, false).stop(ms), Some(ms));
        assert_eq!(
            asc_query(Some("2026-01-01T00:00:11Z"), false).stop(ms),
            Some(ms),
            "a bound after complete_until does not lift the stop"
        );
        assert_eq!(
            asc_query(Some("2026-01-01T00:00:10Z"), false).stop(ms),
            None
        );
        assert_eq!(asc_query(None, true).stop(ms), None);
        let desc = FindQuery::from_request(
            FindRequest {
                order: Some(Order::Desc),
                ..Default::default()
            },
            1000,
        )
        .unwrap();
        assert_eq!(desc.stop(ms), None);
        let filter = asc_query(Some("2026-01-01T00:00:11Z"), false).filter(Some(ms));
        assert_eq!(
            filter.get_document(fields::CREATED_AT).unwrap(),
            &doc! { "$lt": mongodb::bson::DateTime::from_millis(ms) }
        );
    }

    #[test]
    fn a_scoped_find_without_consumer_is_limited_to_the_keys_consumers() {
        let scope = crate::keys::Consumers::parse(&["invoices", "billing-*"]).unwrap();
        let mut q = FindQuery::from_request(
            FindRequest {
                kind: Some("t".into()),
                cursor: Some(
                    Cursor {
                        created_at_ms: 5,
                        id: ObjectId::from_bytes([1; 12]),
                        order: Order::Asc,
                    }
                    .encode(),
                ),
                ..Default::default()
            },
            1000,
        )
        .unwrap();
        q.consumers_within = Some(scope.clone());
        let filter = q.filter(Some(10));
        assert_eq!(
            filter.get(fields::CONSUMER),
            scope.find_condition().as_ref(),
            "{filter}"
        );
        assert_eq!(filter.get_str(fields::TYPE).unwrap(), "t");
        assert!(
            filter.contains_key("$or"),
            "the keyset condition stays: {filter}"
        );
        // A consumer the find names (checked against the scope before) is an equality.
        q.consumer = Some("invoices".into());
        assert_eq!(
            q.filter(Some(10)).get_str(fields::CONSUMER).unwrap(),
            "invoices"
        );
        // An unscoped key adds nothing.
        q.consumer = None;
        q.consumers_within = Some(crate::keys::Consumers::All);
        assert!(!q.filter(Some(10)).contains_key(fields::CONSUMER));
    }

    #[test]
    fn the_last_ascending_page_resumes_from_complete_until_never_behind_the_reader() {
        let ms = 1_767_225_610_000;
        let q = asc_query(None, false);
        let last = Cursor {
            created_at_ms: ms - 5_000,
            id: ObjectId::new(),
            order: Order::Asc,
        };
        assert_eq!(
            next_cursor(&q, true, Some(last.clone()), Some(ms)),
            Some(last.clone()),
            "a full page continues after its last event"
        );
        let resume = next_cursor(&q, false, Some(last.clone()), Some(ms)).unwrap();
        assert_eq!(resume, Cursor::before(ms));
        assert!(resume.position() > last.position());
        assert_eq!(
            Cursor::decode(&resume.encode()).unwrap(),
            resume,
            "the resume position is an ordinary cursor"
        );
        let ahead = Cursor {
            created_at_ms: ms + 60_000,
            id: ObjectId::new(),
            order: Order::Asc,
        };
        let q_ahead = FindQuery {
            after: Some(ahead.clone()),
            ..q.clone()
        };
        assert_eq!(
            next_cursor(&q_ahead, false, None, Some(ms)),
            Some(ahead),
            "a cursor already past complete_until is kept"
        );
        assert_eq!(
            next_cursor(
                &asc_query(Some("2026-01-01T00:00:00Z"), false),
                false,
                None,
                None
            ),
            None,
            "a bounded, complete answer has no next page"
        );
    }
}

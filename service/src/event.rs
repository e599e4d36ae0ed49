//! The event as producers send it and readers get it: validation of incoming JSON, its
//! conversion to the stored BSON document, and the conversion of stored documents back to
//! JSON.
//!
//! Rules (documented in `docs/api.md`): the fields are `type`, `consumer`, `payload`, `id`;
//! any other field is refused (it is most likely a typo such as `consumr`). `type` and
//! `consumer` are non-empty strings of at most [`MAX_NAME_BYTES`] bytes. `payload` is an
//! object (or `null`/absent), nested at most `AUDIT_MAX_PAYLOAD_DEPTH` deep, with keys that
//! both MongoDB and FerretDB store unchanged: not empty, no leading `$`, no `.`, no NUL.
//! Arrays directly inside arrays are refused too, because FerretDB cannot store them and an
//! event must not be accepted on one backend and refused on another.

use chrono::{DateTime, SecondsFormat, Utc};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, RawArrayBuf, RawBson, RawDocumentBuf};
use poem_openapi::Object;
use serde_json::{Map, Number, Value};

use auditlog_common::schema::fields;

use crate::error::ApiError;

/// Longest `type` or `consumer`, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 256;

const ALLOWED_FIELDS: [&str; 4] = ["type", "consumer", "payload", "id"];

/// Limits applied to each incoming event.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    pub max_event_bytes: usize,
    pub max_payload_depth: usize,
}

/// An event ready to be written: its id and creation time are fixed before the first write
/// attempt and reused on every retry, which makes retries idempotent.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: ObjectId,
    pub created_at: mongodb::bson::DateTime,
    /// The full stored document, `_id` included.
    pub doc: RawDocumentBuf,
    /// The producer chose the id (so a duplicate is a retry, not a collision).
    pub producer_id: bool,
}

// Documentation only: parsing is done by `parse_event`, so that every mistake gets a precise
// message.
/// An event as a producer sends it to `POST /v1/event` (or, in an array, `POST /v1/events`).
#[derive(Debug, Clone, Object)]
#[oai(rename = "EventIn", deny_unknown_fields)]
pub struct EventIn {
    /// Event type, 1 to 256 bytes.
    #[oai(rename = "type")]
    pub kind: String,
    /// Producer / consumer name, 1 to 256 bytes.
    pub consumer: String,
    /// Free-form JSON object.
    pub payload: Option<serde_json::Value>,
    /// Optional producer-chosen id (24 hex characters, an ObjectId). Sending the same event
    /// again with the same id is a safe retry.
    pub id: Option<String>,
}

/// An event as readers get it; `payload` is omitted when the event has none.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "Event")]
pub struct EventOut {
    /// ObjectId, 24 hex characters.
    pub id: String,
    #[oai(rename = "type")]
    pub kind: String,
    pub consumer: String,
    /// UTC, millisecond precision, e.g. `2022-05-25T16:27:40.004Z`.
    pub created_at: String,
    #[oai(skip_serializing_if_is_none)]
    pub payload: Option<serde_json::Value>,
}

/// Parses and validates one event (already decoded from JSON), stamping it with `now`.
pub fn parse_event(
    value: Value,
    limits: EventLimits,
    now: DateTime<Utc>,
) -> Result<NewEvent, ApiError> {
    let Value::Object(mut obj) = value else {
        return Err(invalid(format!(
            "an event must be a JSON object, got {}",
            json_kind(&value)
        )));
    };
    if let Some(unknown) = obj.keys().find(|k| !ALLOWED_FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown field `{unknown}`; an event has only the fields type, consumer, payload, id"
        )));
    }
    let kind = name_field(&mut obj, "type")?;
    let consumer = name_field(&mut obj, "consumer")?;
    let (id, producer_id) = match obj.remove("id") {
        None | Some(Value::Null) => (ObjectId::new(), false),
        Some(Value::String(s)) => match ObjectId::parse_str(&s) {
            Ok(id) if s.len() == 24 => (id, true),
            _ => {
                return Err(invalid(format!(
                    "`id` must be 24 hexadecimal characters (an ObjectId), got {s:?}"
                )))
            }
        },
        Some(other) => {
            return Err(invalid(format!(
                "`id` must be a string of 24 hexadecimal characters, got {}",
                json_kind(&other)
            )))
        }
    };
    let payload = match obj.remove("payload") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(object_to_raw(map, &At::Payload, 1, limits)?),
        Some(other) => {
            return Err(invalid(format!(
                "`payload` must be a JSON object, got {}",
                json_kind(&other)
            )))
        }
    };

    let created_at = mongodb::bson::DateTime::from_millis(now.timestamp_millis());
    let mut doc = RawDocumentBuf::new();
    doc.append(fields::ID, id);
    doc.append(fields::TYPE, kind);
    doc.append(fields::CONSUMER, consumer);
    doc.append(fields::CREATED_AT, created_at);
    if let Some(p) = payload {
        doc.append(fields::PAYLOAD, p);
    }
    let size = doc.as_bytes().len();
    if size > limits.max_event_bytes {
        return Err(invalid(format!(
            "event is {size} bytes once stored; at most {} are accepted (AUDIT_MAX_EVENT_BYTES)",
            limits.max_event_bytes
        )));
    }
    Ok(NewEvent {
        id,
        created_at,
        doc,
        producer_id,
    })
}

fn invalid(message: String) -> ApiError {
    ApiError::InvalidEvent(message)
}

fn name_field(obj: &mut Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Err(invalid(format!("missing field `{field}`"))),
        Some(Value::String(s)) if s.is_empty() => {
            Err(invalid(format!("`{field}` must not be empty")))
        }
        Some(Value::String(s)) if s.len() > MAX_NAME_BYTES => Err(invalid(format!(
            "`{field}` is {} bytes; at most {MAX_NAME_BYTES} are accepted",
            s.len()
        ))),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(invalid(format!(
            "`{field}` must be a string, got {}",
            json_kind(&other)
        ))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Where a value sits in the payload, for error messages only: rendered (`payload.a[2].b`)
/// when a message names it, so a valid event allocates no path string per key.
#[derive(Clone, Copy)]
enum At<'a> {
    Payload,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Payload => f.write_str("payload"),
            At::Key(parent, key) => write!(f, "{parent}.{key}"),
            At::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn object_to_raw(
    map: Map<String, Value>,
    at: &At<'_>,
    depth: usize,
    limits: EventLimits,
) -> Result<RawDocumentBuf, ApiError> {
    check_depth(at, depth, limits)?;
    let mut doc = RawDocumentBuf::new();
    for (key, value) in map {
        check_key(&key, at)?;
        let raw = value_to_raw(value, &At::Key(at, &key), depth, limits, false)?;
        doc.append(key, raw);
    }
    Ok(doc)
}

fn check_depth(at: &At<'_>, depth: usize, limits: EventLimits) -> Result<(), ApiError> {
    if depth > limits.max_payload_depth {
        return Err(invalid(format!(
            "payload nests deeper than {} levels at {at} (AUDIT_MAX_PAYLOAD_DEPTH)",
            limits.max_payload_depth
        )));
    }
    Ok(())
}

/// Keys MongoDB or FerretDB would refuse or change: refused here, naming the key path.
fn check_key(key: &str, parent: &At<'_>) -> Result<(), ApiError> {
    let problem = if key.is_empty() {
        "an empty key"
    } else if key.starts_with('$') {
        "a key starting with `$`"
    } else if key.contains('.') {
        "a key containing `.`"
    } else if key.contains('\0') {
        "a key containing a NUL character"
    } else {
        return Ok(());
    };
    Err(invalid(format!(
        "payload key {key:?} under {parent} is {problem}, which the event store cannot keep as given"
    )))
}

fn value_to_raw(
    value: Value,
    at: &At<'_>,
    depth: usize,
    limits: EventLimits,
    in_array: bool,
) -> Result<RawBson, ApiError> {
    Ok(match value {
        Value::Null => RawBson::Null,
        Value::Bool(b) => RawBson::Boolean(b),
        Value::Number(n) => number_to_raw(&n, at)?,
        Value::String(s) => RawBson::String(s),
        Value::Object(map) => RawBson::Document(object_to_raw(map, at, depth + 1, limits)?),
        Value::Array(items) => {
            if in_array {
                return Err(invalid(format!(
                    "payload has an array directly inside an array at {at}, which the event \
                     store cannot keep; wrap the inner array in an object"
                )));
            }
            check_depth(at, depth + 1, limits)?;
            let mut arr = RawArrayBuf::new();
            for (i, item) in items.into_iter().enumerate() {
                arr.push(value_to_raw(
                    item,
                    &At::Index(at, i),
                    depth + 1,
                    limits,
                    true,
                )?);
            }
            RawBson::Array(arr)
        }
    })
}

fn number_to_raw(n: &Number, at: &At<'_>) -> Result<RawBson, ApiError> {
    if let Some(i) = n.as_i64() {
        return Ok(match i32::try_from(i) {
            Ok(small) => RawBson::Int32(small),
            Err(_) => RawBson::Int64(i),
        });
    }
    if n.is_u64() {
        return Err(invalid(format!(
            "number {n} at {at} is out of range: integers must fit in a signed 64-bit integer"
        )));
    }
    match n.as_f64() {
        Some(f) => Ok(RawBson::Double(f)),
        None => Err(invalid(format!("number {n} at {at} cannot be represented"))),
    }
}

/// A batch holds at least one event and at most `max` (`AUDIT_MAX_BATCH_EVENTS`), in any of
/// the batch forms (a JSON array, NDJSON, a CloudEvents batch).
pub fn check_batch_len(count: usize, max: usize) -> Result<(), ApiError> {
    if count > max {
        return Err(ApiError::TooManyEvents { count, max });
    }
    if count == 0 {
        return Err(ApiError::InvalidEvent("the batch holds no events".into()));
    }
    Ok(())
}

/// `created_at` as the API shows it: RFC 3339, UTC, milliseconds, `Z`.
pub fn format_created_at(dt: mongodb::bson::DateTime) -> String {
    let ms = dt.timestamp_millis();
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// A stored document as readers get it. Documents not written by this service (missing or
/// oddly typed fields) are shown as well as they can be rather than failing the whole page.
pub fn event_out(doc: &Document) -> EventOut {
    let id = match doc.get(fields::ID) {
        Some(Bson::ObjectId(oid)) => oid.to_hex(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let created_at = match doc.get(fields::CREATED_AT) {
        Some(Bson::DateTime(dt)) => format_created_at(*dt),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    EventOut {
        id,
        kind: doc.get_str(fields::TYPE).unwrap_or_default().to_owned(),
        consumer: doc.get_str(fields::CONSUMER).unwrap_or_default().to_owned(),
        created_at,
        payload: doc
            .get(fields::PAYLOAD)
            .filter(|p| !matches!(p, Bson::Null))
            .map(|p| p.clone().into_relaxed_extjson()),
    }
}

/// The content of an event that makes two events "the same" for idempotent retries: type,
/// consumer and payload (id and created_at aside), compared as readers would see them.
pub fn same_content(a: &Document, b: &Document) -> bool {
    let (x, y) = (event_out(a), event_out(b));
    x.kind == y.kind && x.consumer == y.consumer && x.payload == y.payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: EventLimits = EventLimits {
        max_event_bytes: 4096,
        max_payload_depth: 4,
    };

    fn parse(v: Value) -> Result<NewEvent, String> {
        parse_event(v, LIMITS, Utc::now()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_seed_event_round_trips_to_the_same_json() {
        let ev = parse(json!({"type": "t2", "consumer": "c4", "payload": {"t2_data": 12341243, "f": 1.5, "big": 1_i64 << 40, "l": [1, {"a": null}], "s": "x"}})).unwrap();
        let out = event_out(&ev.doc.to_document().unwrap());
        assert_eq!(out.kind, "t2");
        assert_eq!(out.consumer, "c4");
        assert_eq!(out.id, ev.id.to_hex());
        assert_eq!(
            out.payload,
            Some(
                json!({"t2_data": 12341243, "f": 1.5, "big": 1_i64 << 40, "l": [1, {"a": null}], "s": "x"})
            )
        );
        assert!(out.created_at.ends_with('Z') && out.created_at.len() == 24);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (json!([1]), "must be a JSON object"),
            (
                json!({"type": "t", "consumr": "c"}),
                "unknown field `consumr`",
            ),
            (json!({"consumer": "c"}), "missing field `type`"),
            (
                json!({"type": "", "consumer": "c"}),
                "`type` must not be empty",
            ),
            (
                json!({"type": "t", "consumer": 5}),
                "`consumer` must be a string",
            ),
            (
                json!({"type": "x".repeat(257), "consumer": "c"}),
                "at most 256",
            ),
            (
                json!({"type": "t", "consumer": "c", "payload": [1]}),
                "`payload` must be a JSON object",
            ),
            (
                json!({"type": "t", "consumer": "c", "payload": {"a": {"$set": 1}}}),
                "\"$set\" under payload.a",
            ),
            (
                json!({"type": "t", "consumer": "c", "payload": {"a.b": 1}}),
                "containing `.`",
            ),
            (
                json!({"type": "t", "consumer": "c", "payload": {"a\u{0}": 1}}),
                "NUL",
            ),
            (
                json!({"type": "t", "consumer": "c", "payload": {"a": {"b": {"c": {"d": {}}}}}}),
                "deeper than 4 levels at payload.a.b.c.d",
            ),
            (
                json!({"type": "t", "consumer": "c", "payload": {"m": [[1]]}}),
                "array directly inside an array at payload.m[0]",
            ),
            (
                json!({"type": "t", "consumer": "c", "payload": {"n": 18446744073709551615_u64}}),
                "out of range",
            ),
            (
                json!({"type": "t", "consumer": "c", "payload": {"s": "x".repeat(5000)}}),
                "AUDIT_MAX_EVENT_BYTES",
            ),
            (
                json!({"type": "t", "consumer": "c", "id": "xyz"}),
                "24 hexadecimal",
            ),
        ];
        for (input, expected) in cases {
            let err = parse(input.clone()).expect_err(&input.to_string());
            assert!(
                err.contains(expected),
                "{input}: {err:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn a_producer_id_is_kept_and_null_fields_count_as_absent() {
        let ev = parse(json!({"type": "t", "consumer": "c", "id": "628e58fc08808bcd3b2af122", "payload": null})).unwrap();
        assert!(ev.producer_id);
        assert_eq!(ev.id.to_hex(), "628e58fc08808bcd3b2af122");
        assert_eq!(event_out(&ev.doc.to_document().unwrap()).payload, None);
    }

    #[test]
    fn same_content_ignores_id_and_time() {
        let a = parse(json!({"type": "t", "consumer": "c", "payload": {"x": 1}})).unwrap();
        let b = parse(json!({"type": "t", "consumer": "c", "payload": {"x": 1}})).unwrap();
        let c = parse(json!({"type": "t", "consumer": "c", "payload": {"x": 2}})).unwrap();
        let (a, b, c) = (
            a.doc.to_document().unwrap(),
            b.doc.to_document().unwrap(),
            c.doc.to_document().unwrap(),
        );
        assert!(same_content(&a, &b));
        assert!(!same_content(&a, &c));
    }
}

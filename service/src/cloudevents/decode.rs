//! A CloudEvent received over HTTP — structured, batched or binary mode — checked against the
//! CloudEvents 1.0 rules and turned into the JSON of one of our own events (`type`,
//! `consumer`, `id`, `payload`), which then takes the usual path. What is checked here is the
//! envelope (400 `invalid_cloudevent`); the content (sizes, depth, keys) is checked by
//! [`crate::event`] like any event's (422 `invalid_event`).

use base64::Engine;
use poem::http::{header, HeaderMap};
use serde_json::{Map, Value};

use super::{
    stored_id, EXT_CREATED_AT, EXT_STORED_ID, PAYLOAD_ATTRIBUTES, PAYLOAD_DATA,
    PAYLOAD_DATA_BASE64, SPEC_VERSION,
};
use crate::error::ApiError;
use crate::event::check_batch_len;
use crate::media::is_json;

/// Attributes every CloudEvent has.
const REQUIRED: [&str; 4] = ["specversion", "id", "source", "type"];
/// Optional attributes of the specification; any other attribute is an extension.
const OPTIONAL: [&str; 4] = ["datacontenttype", "dataschema", "subject", "time"];
/// Longest attribute name the specification recommends; longer ones are refused, so an event
/// stored here can be sent on by any SDK.
const MAX_NAME_LEN: usize = 20;

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidCloudEvent(msg.into())
}

/// A structured-mode CloudEvent (`application/cloudevents+json`), already parsed as JSON.
pub fn structured(value: Value) -> Result<Value, ApiError> {
    let Value::Object(mut obj) = value else {
        return Err(invalid("a CloudEvent must be a JSON object"));
    };
    let data = obj.remove("data").filter(|d| !d.is_null());
    let data_base64 = obj.remove("data_base64").filter(|d| !d.is_null());
    let data = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "a CloudEvent has `data` or `data_base64`, not both",
            ))
        }
        (Some(d), None) => Some(Data::Json(d)),
        (None, Some(Value::String(b64))) => {
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| invalid(format!("`data_base64` is not base64: {e}")))?;
            Some(Data::Base64(b64))
        }
        (None, Some(_)) => return Err(invalid("`data_base64` must be a string")),
        (None, None) => None,
    };
    let mut attributes = Map::new();
    for (name, value) in obj {
        let value = match value {
            Value::Null => continue,
            Value::String(_) | Value::Bool(_) => value,
            Value::Number(ref n) if n.is_i64() || n.is_u64() => value,
            Value::Number(_) => {
                return Err(invalid(format!(
                    "attribute `{name}` is not an integer; CloudEvents attributes are strings, booleans or integers"
                )))
            }
            Value::Array(_) | Value::Object(_) => {
                return Err(invalid(format!(
                    "attribute `{name}` is an array or object; CloudEvents attributes are strings, booleans or integers (put structured content in `data`)"
                )))
            }
        };
        attributes.insert(name, value);
    }
    into_event(attributes, data)
}

/// A batch (`application/cloudevents-batch+json`): a JSON array of structured CloudEvents,
/// each accepted or refused on its own. The whole batch is refused only when it is not an
/// array, is empty, or holds more than `max_events`.
pub fn batch(bytes: &[u8], max_events: usize) -> Result<Vec<Result<Value, ApiError>>, ApiError> {
    let items = match serde_json::from_slice(bytes) {
        Ok(Value::Array(items)) => items,
        Ok(_) => {
            return Err(invalid(
                "a CloudEvents batch must be a JSON array of CloudEvents",
            ))
        }
        Err(e) => {
            return Err(ApiError::MalformedJson(format!(
                "request body is not valid JSON: {e}"
            )))
        }
    };
    check_batch_len(items.len(), max_events)?;
    Ok(items.into_iter().map(structured).collect())
}

/// A binary-mode CloudEvent: the attributes in `ce-*` headers (percent-encoded, as the HTTP
/// binding says), the body its data, `Content-Type` its `datacontenttype`.
pub fn binary(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let mut attributes = Map::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| invalid(format!("header `{name}` is not ASCII (percent-encode it)")))?;
        attributes.insert(
            attr.to_owned(),
            Value::String(percent_decode(name.as_str(), value)?),
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| invalid("Content-Type is not ASCII"))
        })
        .transpose()?;
    if let Some(ct) = &content_type {
        attributes.insert("datacontenttype".into(), Value::String(ct.clone()));
    }
    let data = if body.is_empty() {
        None
    } else {
        Some(binary_data(content_type.as_deref(), body)?)
    };
    into_event(attributes, data)
}

/// The data of a binary-mode event: JSON media types parsed (a producer's JSON is stored as
/// JSON, findable as ours is), text kept as text, anything else base64. Without a
/// `Content-Type`, JSON if it parses as JSON (the specification's default), else base64.
fn binary_data(content_type: Option<&str>, body: &[u8]) -> Result<Data, ApiError> {
    let media = content_type.and_then(|ct| ct.parse::<mime::Mime>().ok());
    if media.as_ref().is_some_and(is_json) {
        return serde_json::from_slice(body).map(Data::Json).map_err(|e| {
            ApiError::MalformedJson(format!(
                "the body is not valid JSON, as its Content-Type says: {e}"
            ))
        });
    }
    if media.is_none() && content_type.is_none() {
        if let Ok(json) = serde_json::from_slice(body) {
            return Ok(Data::Json(json));
        }
    }
    let is_text = media.as_ref().is_some_and(|m| m.type_() == mime::TEXT);
    if is_text {
        if let Ok(text) = std::str::from_utf8(body) {
            return Ok(Data::Json(Value::String(text.to_owned())));
        }
    }
    Ok(Data::Base64(
        base64::engine::general_purpose::STANDARD.encode(body),
    ))
}

/// The data of a CloudEvent, as it is stored.
enum Data {
    /// JSON data, or text, kept as it came.
    Json(Value),
    /// Binary data, base64 (standard alphabet, padded).
    Base64(String),
}

/// The checked attributes and data as one of our events.
fn into_event(mut attributes: Map<String, Value>, data: Option<Data>) -> Result<Value, ApiError> {
    for name in REQUIRED {
        match attributes.get(name) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::String(_)) => {
                return Err(invalid(format!("attribute `{name}` must not be empty")))
            }
            Some(_) => return Err(invalid(format!("attribute `{name}` must be a string"))),
            None => {
                return Err(invalid(format!(
                "attribute `{name}` is missing; a CloudEvent has specversion, id, source and type"
            )))
            }
        }
    }
    for name in OPTIONAL {
        if attributes.get(name).is_some_and(|v| !v.is_string()) {
            return Err(invalid(format!("attribute `{name}` must be a string")));
        }
    }
    let version = attributes.get("specversion").and_then(Value::as_str);
    if version != Some(SPEC_VERSION) {
        return Err(invalid(format!(
            "specversion {:?} is not supported; send CloudEvents {SPEC_VERSION}",
            version.unwrap_or_default()
        )));
    }
    for name in attributes.keys() {
        check_name(name)?;
    }
    if let Some(time) = attributes.get("time").and_then(Value::as_str) {
        // Kept as the instant it names, written in UTC: SDKs write the same time as `Z` in one
        // mode and `+00:00` in another, and a retry must be the same event in either.
        let instant = chrono::DateTime::parse_from_rfc3339(time)
            .map_err(|e| invalid(format!("`time` {time:?} is not an RFC 3339 timestamp: {e}")))?
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        attributes.insert("time".into(), Value::String(instant));
    }
    let text = |name: &str| {
        attributes
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (source, id, kind) = (text("source"), text("id"), text("type"));
    if source.chars().any(char::is_control) {
        return Err(invalid("`source` must not hold control characters"));
    }
    attributes.remove("type");
    let mut payload = Map::new();
    match data {
        Some(Data::Json(d)) => {
            payload.insert(PAYLOAD_DATA.into(), d);
        }
        Some(Data::Base64(b)) => {
            payload.insert(PAYLOAD_DATA_BASE64.into(), Value::String(b));
        }
        None => {}
    }
    payload.insert(PAYLOAD_ATTRIBUTES.into(), Value::Object(attributes));
    let mut event = Map::new();
    event.insert("type".into(), Value::String(kind));
    event.insert("id".into(), Value::String(stored_id(&source, &id)));
    event.insert("consumer".into(), Value::String(source));
    event.insert("payload".into(), Value::Object(payload));
    Ok(Value::Object(event))
}

/// Attribute names are lower-case letters and digits; the two this service adds when it
/// hands an event back are its own.
fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(invalid(format!(
            "attribute name {name:?} is not allowed: 1 to {MAX_NAME_LEN} lower-case letters or digits"
        )));
    }
    if name == EXT_STORED_ID || name == EXT_CREATED_AT {
        return Err(invalid(format!(
            "attribute `{name}` is reserved: the service adds it to events it hands back"
        )));
    }
    Ok(())
}

/// Decodes `%XX` sequences (UTF-8), as the HTTP binding encodes header values.
fn percent_decode(header: &str, value: &str) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid(format!("header `{header}` has a bad percent-encoding")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| {
        invalid(format!(
            "header `{header}` is not UTF-8 once percent-decoded"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::HeaderValue;
    use serde_json::json;

    fn ce() -> Value {
        json!({"specversion": "1.0", "id": "A-1", "source": "/orders", "type": "order.created",
               "subject": "o-17", "time": "2026-12-07T10:00:00Z", "tenant": "acme",
               "datacontenttype": "application/json", "data": {"total": 12}})
    }

    #[test]
    fn a_structured_event_becomes_ours_with_every_attribute_kept() {
        let ev = structured(ce()).unwrap();
        assert_eq!(ev["type"], "order.created");
        assert_eq!(ev["consumer"], "/orders");
        assert_eq!(ev["id"], stored_id("/orders", "A-1"));
        assert_eq!(ev["payload"]["data"], json!({"total": 12}));
        let attrs = &ev["payload"]["cloudevent"];
        assert_eq!(attrs["subject"], "o-17");
        assert_eq!(attrs["tenant"], "acme");
        assert_eq!(attrs["id"], "A-1");
        assert!(attrs.get("type").is_none(), "type is the event's own field");

        let mut offset = ce();
        offset["time"] = json!("2026-12-07T12:00:00+02:00");
        let ev = structured(offset).unwrap();
        assert_eq!(
            ev["payload"]["cloudevent"]["time"], "2026-12-07T10:00:00Z",
            "the same instant, in UTC, whichever way an SDK wrote it"
        );
    }

    #[test]
    fn envelope_mistakes_are_named() {
        let cases = [
            ("source", Value::Null, "attribute `source` is missing"),
            ("specversion", json!("0.3"), "specversion \"0.3\""),
            ("time", json!("yesterday"), "RFC 3339"),
            ("Tenant", json!("x"), "not allowed"),
            ("auditlogid", json!("x"), "reserved"),
            ("nested", json!({"a": 1}), "array or object"),
        ];
        for (name, value, expect) in cases {
            let mut event = ce();
            if value.is_null() {
                event.as_object_mut().unwrap().remove(name);
            } else {
                event[name] = value;
            }
            let err = structured(event).unwrap_err();
            assert_eq!(err.code(), "invalid_cloudevent", "{name}");
            assert!(err.to_string().contains(expect), "{name}: {err}");
        }
    }

    #[test]
    fn binary_mode_reads_headers_and_keeps_binary_data_as_base64() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "b-1"),
            ("ce-source", "/sensors"),
            ("ce-type", "reading"),
            ("ce-subject", "caf%C3%A9"),
            ("content-type", "application/octet-stream"),
        ] {
            headers.insert(k, HeaderValue::from_static(v));
        }
        let ev = binary(&headers, &[0, 159, 146, 150]).unwrap();
        assert_eq!(ev["payload"]["data_base64"], "AJ+Slg==");
        assert_eq!(ev["payload"]["cloudevent"]["subject"], "café");
        assert_eq!(
            ev["payload"]["cloudevent"]["datacontenttype"],
            "application/octet-stream"
        );
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let ev = binary(&headers, br#"{"t": 21.5}"#).unwrap();
        assert_eq!(ev["payload"]["data"], json!({"t": 21.5}));
    }

    #[test]
    fn a_batch_refuses_its_bad_events_one_by_one() {
        let mut bad = ce();
        bad["specversion"] = json!("0.3");
        let body = serde_json::to_vec(&json!([ce(), bad])).unwrap();
        let items = batch(&body, 10).unwrap();
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
        assert!(matches!(
            batch(&body, 1),
            Err(ApiError::TooManyEvents { .. })
        ));
    }
}

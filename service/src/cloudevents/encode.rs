//! Events handed back as CloudEvents (a find with `Accept: application/cloudevents-batch+json`).
//! An event that came in as a CloudEvent gets its own attributes and data back; any other
//! event is described in CloudEvents terms (its id, its consumer as `source`, its `created_at`
//! as `time`, its payload as JSON `data`). Both carry the stored id and `created_at` as the
//! extensions `auditlogid` and `auditlogcreatedat`.

use serde_json::{Map, Value};

use super::{
    stored_id, EXT_CREATED_AT, EXT_STORED_ID, PAYLOAD_ATTRIBUTES, PAYLOAD_DATA,
    PAYLOAD_DATA_BASE64, SPEC_VERSION,
};
use crate::event::EventOut;

/// One event as a structured CloudEvent (JSON object).
pub fn to_cloudevent(event: &EventOut) -> Value {
    let mut ce = received(event).unwrap_or_else(|| described(event));
    ce.insert(EXT_STORED_ID.into(), Value::String(event.id.clone()));
    ce.insert(
        EXT_CREATED_AT.into(),
        Value::String(event.created_at.clone()),
    );
    Value::Object(ce)
}

/// The CloudEvent an event was stored from, if it was one: its payload has the attributes
/// (with `specversion`, `source` and `id`), nothing but them and its data, and its stored id
/// is the one derived from (`source`, `id`) — which no event of our own format has by chance.
fn received(event: &EventOut) -> Option<Map<String, Value>> {
    let payload = event.payload.as_ref()?.as_object()?;
    if payload
        .keys()
        .any(|k| k != PAYLOAD_ATTRIBUTES && k != PAYLOAD_DATA && k != PAYLOAD_DATA_BASE64)
    {
        return None;
    }
    let attributes = payload.get(PAYLOAD_ATTRIBUTES)?.as_object()?;
    let source = attributes.get("source")?.as_str()?;
    let id = attributes.get("id")?.as_str()?;
    attributes.get("specversion")?.as_str()?;
    if stored_id(source, id) != event.id {
        return None;
    }
    let mut ce = attributes.clone();
    ce.insert("type".into(), Value::String(event.kind.clone()));
    for key in [PAYLOAD_DATA, PAYLOAD_DATA_BASE64] {
        if let Some(data) = payload.get(key) {
            ce.insert(key.into(), data.clone());
        }
    }
    Some(ce)
}

/// An event of our own format in CloudEvents terms.
fn described(event: &EventOut) -> Map<String, Value> {
    let mut ce = Map::new();
    ce.insert("specversion".into(), Value::String(SPEC_VERSION.into()));
    ce.insert("id".into(), Value::String(event.id.clone()));
    ce.insert("source".into(), Value::String(event.consumer.clone()));
    ce.insert("type".into(), Value::String(event.kind.clone()));
    ce.insert("time".into(), Value::String(event.created_at.clone()));
    if let Some(payload) = &event.payload {
        ce.insert(
            "datacontenttype".into(),
            Value::String("application/json".into()),
        );
        ce.insert(PAYLOAD_DATA.into(), payload.clone());
    }
    ce
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudevents::decode;
    use serde_json::json;

    #[test]
    fn a_received_cloudevent_comes_back_as_sent() {
        let sent = json!({"specversion": "1.0", "id": "A-1", "source": "/orders",
            "type": "order.created", "subject": "o-17", "tenant": "acme", "data": [1, 2]});
        let ours = decode::structured(sent.clone()).unwrap();
        let out = EventOut {
            id: ours["id"].as_str().unwrap().into(),
            kind: "order.created".into(),
            consumer: "/orders".into(),
            created_at: "2026-12-07T10:00:00.000Z".into(),
            payload: Some(ours["payload"].clone()),
        };
        let mut back = to_cloudevent(&out);
        let extra = back.as_object_mut().unwrap();
        assert_eq!(extra.remove(EXT_STORED_ID), Some(json!(out.id)));
        assert_eq!(extra.remove(EXT_CREATED_AT), Some(json!(out.created_at)));
        assert_eq!(back, sent);
    }

    #[test]
    fn an_event_of_our_own_format_is_described() {
        let out = EventOut {
            id: "64b7f0c2a1b2c3d4e5f60718".into(),
            kind: "login".into(),
            consumer: "web".into(),
            created_at: "2026-12-07T10:00:00.000Z".into(),
            // Shaped like a CloudEvent's payload, but its id is not derived from it.
            payload: Some(
                json!({"cloudevent": {"specversion": "1.0", "id": "x", "source": "web"}}),
            ),
        };
        let ce = to_cloudevent(&out);
        assert_eq!(ce["id"], "64b7f0c2a1b2c3d4e5f60718");
        assert_eq!(ce["source"], "web");
        assert_eq!(ce["time"], "2026-12-07T10:00:00.000Z");
        assert_eq!(ce["data"]["cloudevent"]["id"], "x");
    }
}

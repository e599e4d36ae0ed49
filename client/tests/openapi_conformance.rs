//! The client's types against the service's OpenAPI document (`service/openapi.json`): for each
//! struct mirroring a schema, the field names and the required set are the document's, and
//! `GET /v1/find`'s query parameters are named as documented. If the service's document
//! changes under the client, this fails.

use std::collections::BTreeSet;

use auditlog_client::{
    BatchItem, BatchResponse, ErrorBody, ErrorDetail, Event, EventAck, EventStatus, FindPage,
    FindQuery, NewEvent, Order,
};
use chrono::{TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../service/openapi.json");
    let text = std::fs::read_to_string(path).expect("service/openapi.json");
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

/// `schema`'s properties and required fields; the client's full and minimal instances of the
/// type must serialize to exactly those, and the minimal JSON must deserialize.
fn check<T: Serialize + DeserializeOwned>(doc: &Value, schema: &str, full: T, minimal: T) {
    let s = &doc["components"]["schemas"][schema];
    assert!(s.is_object(), "schema {schema} is not in the document");
    let properties = keys(&s["properties"]);
    let required: BTreeSet<String> = s["required"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("a name").to_string())
                .collect()
        })
        .unwrap_or_default();
    let full = serde_json::to_value(&full).expect("serializes");
    assert_eq!(keys(&full), properties, "{schema}: the client's fields");
    let minimal = serde_json::to_value(&minimal).expect("serializes");
    assert_eq!(
        keys(&minimal),
        required,
        "{schema}: the client's required fields"
    );
    // What the service may send with only the required fields reads back.
    serde_json::from_value::<T>(minimal).unwrap_or_else(|e| panic!("{schema}: {e}"));
    serde_json::from_value::<T>(full).unwrap_or_else(|e| panic!("{schema}: {e}"));
}

fn detail() -> ErrorDetail {
    ErrorDetail::new("busy", "write queue full")
}

fn event(payload: Option<Value>) -> Event {
    Event {
        id: "6565b3f0c1a2b3c4d5e6f708".into(),
        kind: "login".into(),
        consumer: "c1".into(),
        created_at: "2026-11-27T04:05:58.196Z".into(),
        payload,
    }
}

#[test]
fn types_match_the_schemas_of_the_openapi_document() {
    let doc = document();
    check(
        &doc,
        "EventIn",
        NewEvent::new("login", "c1")
            .payload(json!({"ok": true}))
            .id("6565b3f0c1a2b3c4d5e6f708"),
        NewEvent::new("login", "c1"),
    );
    check(
        &doc,
        "EventAck",
        EventAck {
            id: "6565b3f0c1a2b3c4d5e6f708".into(),
            created_at: "2026-11-27T04:05:58.196Z".into(),
        },
        EventAck {
            id: "6565b3f0c1a2b3c4d5e6f708".into(),
            created_at: "2026-11-27T04:05:58.196Z".into(),
        },
    );
    check(&doc, "Event", event(Some(json!({"a": 1}))), event(None));
    check(
        &doc,
        "FindResponse",
        FindPage {
            events: vec![event(None)],
            next_cursor: Some("a0000".into()),
            complete_until: "2026-11-27T04:05:58.196Z".into(),
            tiers: vec!["mongodb".into()],
        },
        FindPage {
            events: vec![],
            next_cursor: None,
            complete_until: "2026-11-27T04:05:58.196Z".into(),
            tiers: vec![],
        },
    );
    let item = BatchItem {
        status: 201,
        id: Some("6565b3f0c1a2b3c4d5e6f708".into()),
        created_at: Some("2026-11-27T04:05:58.196Z".into()),
        error: Some(detail()),
    };
    let bare = BatchItem {
        status: 503,
        id: None,
        created_at: None,
        error: None,
    };
    check(&doc, "BatchItem", item.clone(), bare.clone());
    check(
        &doc,
        "BatchResponse",
        BatchResponse {
            accepted: 1,
            rejected: 0,
            results: vec![item],
        },
        BatchResponse {
            accepted: 0,
            rejected: 1,
            results: vec![bare],
        },
    );
    check(&doc, "ErrorDetail", detail(), detail());
    check(
        &doc,
        "ErrorBody",
        ErrorBody { error: detail() },
        ErrorBody { error: detail() },
    );
    check(
        &doc,
        "EventStatus",
        EventStatus {
            id: "6565b3f0c1a2b3c4d5e6f708".into(),
            status: "stored".into(),
            created_at: Some("2026-11-27T04:05:58.196Z".into()),
            kind: Some("login".into()),
            consumer: Some("c1".into()),
            payload: Some(json!({})),
        },
        EventStatus {
            id: "6565b3f0c1a2b3c4d5e6f708".into(),
            status: "unknown".into(),
            created_at: None,
            kind: None,
            consumer: None,
            payload: None,
        },
    );
}

#[test]
fn find_query_parameters_are_named_as_documented() {
    let doc = document();
    let params = doc["paths"]["/v1/find"]["get"]["parameters"]
        .as_array()
        .expect("GET /v1/find has parameters");
    let documented: BTreeSet<String> = params
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().expect("a name").to_string())
        .collect();
    let query = FindQuery {
        kind: Some("login".into()),
        consumer: Some("c1".into()),
        created_from: Some(Utc.with_ymd_and_hms(2022, 5, 22, 0, 0, 0).unwrap()),
        created_to: Some(Utc.with_ymd_and_hms(2022, 5, 23, 0, 0, 0).unwrap()),
        limit: Some(10),
        order: Some(Order::Asc),
        include_incomplete: true,
    };
    let sent: BTreeSet<String> = query
        .query_pairs(Some("a0000"))
        .into_iter()
        .map(|(name, _)| name.to_string())
        .collect();
    assert_eq!(sent, documented);
    // `order` takes the values of the `Order` schema.
    let values: BTreeSet<String> = doc["components"]["schemas"]["Order"]["enum"]
        .as_array()
        .expect("Order's values")
        .iter()
        .map(|v| v.as_str().expect("a value").to_string())
        .collect();
    let ours: BTreeSet<String> = [Order::Asc, Order::Desc]
        .iter()
        .map(|o| o.as_str().to_string())
        .collect();
    assert_eq!(ours, values);
}

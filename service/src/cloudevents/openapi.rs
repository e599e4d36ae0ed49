//! How CloudEvents appear in the OpenAPI document — the `CloudEvent` schema, which the ingest
//! operations' text names for their `application/cloudevents+json` and
//! `application/cloudevents-batch+json` bodies — and the find answer in
//! `application/cloudevents-batch+json`.

use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::Object;
use serde_json::Value;

use super::BATCH;

/// A CloudEvent 1.0 in the JSON event format (structured mode). Extension attributes (lower-case
/// letters and digits, at most 20) may be added as further string, integer or boolean members;
/// they are kept. Stored as: `type` → `type`, `source` → `consumer`, the id derived from
/// (`source`, `id`), `payload` = `{"cloudevent": {the other attributes}, "data" |
/// "data_base64": …}`. A CloudEvent handed back by find also has the extensions `auditlogid`
/// (the stored id) and `auditlogcreatedat` (the server's `created_at`).
#[derive(Debug, Clone, Object)]
#[oai(rename = "CloudEvent")]
pub struct CloudEventDoc {
    /// `1.0`.
    pub specversion: String,
    /// Unique per `source`: the same (`source`, `id`) again is a retry of the same event.
    pub id: String,
    /// URI-reference naming the producer; stored as the event's `consumer` (a scoped API key's
    /// consumers are matched against it).
    pub source: String,
    #[oai(rename = "type")]
    pub kind: String,
    pub subject: Option<String>,
    /// RFC 3339; kept as the instant sent, written in UTC (`created_at` is the server's time).
    pub time: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    /// JSON data, kept as is.
    pub data: Option<Value>,
    /// Binary data, base64.
    pub data_base64: Option<String>,
}

/// A find's page as a JSON array of CloudEvents (`Accept: application/cloudevents-batch+json`).
pub struct CloudEventsBatch(pub Vec<Value>);

impl Payload for CloudEventsBatch {
    const CONTENT_TYPE: &'static str = BATCH;

    fn schema_ref() -> MetaSchemaRef {
        <Vec<CloudEventDoc> as Type>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <CloudEventDoc as Type>::register(registry);
    }
}

impl IntoResponse for CloudEventsBatch {
    fn into_response(self) -> Response {
        // A Vec of JSON values always serializes; the fallback keeps this path panic-free.
        let body = serde_json::to_vec(&self.0).unwrap_or_else(|_| b"[]".to_vec());
        Response::builder().content_type(BATCH).body(body)
    }
}

//! The requests and answers of the service's API, as Rust types. Each mirrors a schema of
//! `service/openapi.json` field for field (checked by the `openapi_conformance` test).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::new_event_id;

/// An event to send (`EventIn`): `type`, `consumer`, an optional JSON-object `payload` and an
/// optional producer `id`. Give it an id ([`NewEvent::with_new_id`]) to make retries safe: the
/// same event sent again under the same id is stored once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub consumer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl NewEvent {
    /// An event of type `kind` for `consumer`, without payload or id.
    pub fn new(kind: impl Into<String>, consumer: impl Into<String>) -> Self {
        NewEvent {
            kind: kind.into(),
            consumer: consumer.into(),
            payload: None,
            id: None,
        }
    }

    /// Sets the payload (a JSON object; the service refuses other values).
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = Some(payload);
        self
    }

    /// Sets the producer id (24 hex characters).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Gives the event a fresh id made here ([`new_event_id`]), so that every retry of it
    /// carries the same id.
    pub fn with_new_id(mut self) -> Self {
        self.id = Some(new_event_id());
        self
    }
}

/// What a producer gets for an event (`EventAck`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAck {
    pub id: String,
    pub created_at: String,
}

/// Which of the success answers `POST /v1/event` gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostOutcome {
    /// 201: stored now.
    Created,
    /// 200: the same event under the same id was stored before (a retry); nothing written.
    AlreadyStored,
    /// 202: queue mode, durable in RabbitMQ, stored later.
    Queued,
}

/// The answer to [`crate::Client::post_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub ack: EventAck,
    pub outcome: PostOutcome,
}

/// An event as readers get it (`Event`). Serializes exactly as the API's JSON: `payload`
/// omitted when the event has none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub consumer: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// `{code, message}` of an error answer, or of one refused event of a batch (`ErrorDetail`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ErrorDetail {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorDetail {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// `{"error": {...}}`, the body of every error answer (`ErrorBody`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The outcome of one event of a batch (`BatchItem`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    /// What the event would have got alone: 201, 200, 202, or an error status.
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

impl BatchItem {
    /// Stored (201, 200) or queued (202).
    pub fn is_accepted(&self) -> bool {
        (200..=202).contains(&self.status)
    }
}

/// The answer to a batch (`BatchResponse`): one result per event, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub accepted: u32,
    pub rejected: u32,
    pub results: Vec<BatchItem>,
}

/// Where an event is, as `GET /v1/event/{id}` reports it (`EventStatus`). `type`, `consumer`
/// and `payload` come only with a `read` key; `created_at` only for stored events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventStatus {
    pub id: String,
    /// `stored`, `queued` or `unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

impl EventStatus {
    /// In MongoDB, visible to find.
    pub fn is_stored(&self) -> bool {
        self.status == "stored"
    }
}

/// Sort direction of a find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }
}

/// The filters of `GET /v1/find`; every one optional (`Default` finds everything the key may
/// read, oldest first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindQuery {
    pub kind: Option<String>,
    pub consumer: Option<String>,
    /// Inclusive.
    pub created_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_to: Option<DateTime<Utc>>,
    /// Events per page (the service's default is 100, its maximum 1000).
    pub limit: Option<u32>,
    pub order: Option<Order>,
    /// Ascending only: also return events newer than `complete_until`.
    pub include_incomplete: bool,
}

impl FindQuery {
    /// The query string's `(name, value)` pairs for this query and `cursor`, named as in the
    /// OpenAPI document's parameters of `GET /v1/find`.
    pub fn query_pairs(&self, cursor: Option<&str>) -> Vec<(&'static str, String)> {
        let date = |d: &DateTime<Utc>| d.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut pairs = Vec::new();
        if let Some(v) = &self.kind {
            pairs.push(("type", v.clone()));
        }
        if let Some(v) = &self.consumer {
            pairs.push(("consumer", v.clone()));
        }
        if let Some(v) = &self.created_from {
            pairs.push(("created_from", date(v)));
        }
        if let Some(v) = &self.created_to {
            pairs.push(("created_to", date(v)));
        }
        if let Some(v) = self.limit {
            pairs.push(("limit", v.to_string()));
        }
        if let Some(v) = cursor {
            pairs.push(("cursor", v.to_string()));
        }
        if let Some(v) = self.order {
            pairs.push(("order", v.as_str().to_string()));
        }
        if self.include_incomplete {
            pairs.push(("include_incomplete", "true".to_string()));
        }
        pairs
    }
}

/// One page of a find (`FindResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindPage {
    pub events: Vec<Event>,
    /// Pass back as the cursor for the next page; absent when no more events can follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Every event created before this instant that will ever be stored is visible already.
    pub complete_until: String,
    /// The tiers read for this page (`archive`, `mongodb`); informative only.
    pub tiers: Vec<String>,
}

//! `GET /v1/event/{id}`: whether a producer's event is stored.
//!
//! MongoDB is asked first, and is the only authority: an event found there is `stored`, in
//! either mode. In queue mode an event RabbitMQ confirmed may still be on its way; RabbitMQ
//! cannot be asked cheaply whether one message is in a queue, so each replica answers
//! `queued` for the ids *it* published recently ([`crate::queue::recent`]) and `unknown`
//! otherwise. `unknown` therefore means "not stored yet, as far as this replica knows" — never
//! "lost": a producer holding a 202 polls until `stored` (or re-sends with the same `id`,
//! which is always safe). docs/api.md states the same for producers.
//!
//! The API key's scope applies: MongoDB is asked only for events of the key's consumers, so a
//! stored event of another consumer reads `unknown` — as if it were not there, which tells the
//! key nothing about other consumers. Producers poll this with their `ingest` keys, so either
//! right will do; the event's content (`type`, `consumer`, `payload`) is shown only to a key
//! with the `read` right. `queued` comes from ids alone (the replica keeps nothing else), so
//! it is answered whatever the scope.

use mongodb::bson::{doc, oid::ObjectId};
use mongodb::options::FindOneOptions;
use poem_openapi::Object;

use auditlog_common::schema::fields;

use crate::error::ApiError;
use crate::event::event_out;
use crate::keys::{Key, Right};
use crate::state::AppState;

/// Where an event is, as `GET /v1/event/{id}` reports it.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "EventStatus")]
pub struct EventStatus {
    /// ObjectId, 24 hex characters.
    pub id: String,
    /// `stored` (in MongoDB: visible to find), `queued` (queue mode: confirmed by RabbitMQ
    /// through this replica, not stored yet) or `unknown` (not stored, and this replica did not
    /// publish it recently).
    pub status: String,
    /// Stored events: UTC, millisecond precision.
    #[oai(skip_serializing_if_is_none)]
    pub created_at: Option<String>,
    /// Stored events: the event type.
    #[oai(rename = "type", skip_serializing_if_is_none)]
    pub kind: Option<String>,
    /// Stored events: the consumer.
    #[oai(skip_serializing_if_is_none)]
    pub consumer: Option<String>,
    /// Stored events with a payload: the payload.
    #[oai(skip_serializing_if_is_none)]
    pub payload: Option<serde_json::Value>,
}

/// The three answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Stored(EventStatus),
    Queued(EventStatus),
    Unknown(EventStatus),
}

fn bare(id: &ObjectId, status: &str) -> EventStatus {
    EventStatus {
        id: id.to_hex(),
        status: status.to_owned(),
        created_at: None,
        kind: None,
        consumer: None,
        payload: None,
    }
}

/// Looks `id` up for `key` (see the module documentation).
pub async fn lookup(state: &AppState, key: &Key, id: &str) -> Result<Lookup, ApiError> {
    let oid = match ObjectId::parse_str(id) {
        Ok(oid) if id.len() == 24 => oid,
        _ => {
            return Err(ApiError::BadQuery(format!(
                "event id must be 24 hexadecimal characters (an ObjectId), got {id:?}"
            )))
        }
    };
    // By `_id` (and the key's consumers, when it is scoped): the producer may not know the
    // consumer it is filed under, so on a sharded cluster an unscoped read goes to every shard.
    let mut filter = doc! { fields::ID: oid };
    if let Some(within) = key.consumers.find_condition() {
        filter.insert(fields::CONSUMER, within);
    }
    let queued = || {
        state
            .queue
            .as_ref()
            .is_some_and(|q| q.published_recently(&oid))
    };
    let found = state
        .events
        .find_one(filter)
        .with_options(
            FindOneOptions::builder()
                .max_time(state.limits.find_max_time)
                .build(),
        )
        .await;
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            state.metrics.store_error("find");
            // MongoDB away is exactly when queue mode holds events: what this replica
            // published is still known to be queued.
            if queued() {
                return Ok(Lookup::Queued(bare(&oid, "queued")));
            }
            return Err(ApiError::Unavailable(e.to_string()));
        }
    };
    if let Some(doc) = found {
        let event = event_out(&doc);
        let mut status = EventStatus {
            id: event.id,
            status: "stored".into(),
            created_at: Some(event.created_at),
            kind: Some(event.kind),
            consumer: Some(event.consumer),
            payload: event.payload,
        };
        if !key.has(Right::Read) {
            (status.kind, status.consumer, status.payload) = (None, None, None);
        }
        return Ok(Lookup::Stored(status));
    }
    Ok(if queued() {
        Lookup::Queued(bare(&oid, "queued"))
    } else {
        Lookup::Unknown(bare(&oid, "unknown"))
    })
}

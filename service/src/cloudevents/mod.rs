//! CloudEvents 1.0 over HTTP: the mapping between a CloudEvent and an auditlog event, both ways.
//! The HTTP side (which content mode a request is in, the `Accept` of a find) stays in
//! [`crate::http`]; this module only translates, so that a CloudEvent, once translated, goes
//! through exactly the rules of our own events (validation, limits, scoped keys, queue mode,
//! idempotent retries).
//!
//! The mapping (docs/api.md, "CloudEvents"):
//! - `type` → `type`; `source` → `consumer` (a scoped key's consumers are thus CloudEvents
//!   sources; there is no `consumer` extension, so one event has one consumer whichever SDK
//!   sent it).
//! - The stored `id` is derived from (`source`, `id`): the first 12 bytes of
//!   SHA-256(`source` + `"\n"` + `id`), as 24 hex characters ([`stored_id`]). A retried
//!   CloudEvent thus carries the same stored id, and is a retry exactly as a producer id is: the
//!   same content answers 200, other content 409 `id_conflict`.
//! - `payload` is `{"cloudevent": {every other attribute}, "data": …}` — `data` as sent when it
//!   is JSON (or text), `data_base64` otherwise — so nothing the producer sent is lost and a
//!   reader can ask for the CloudEvent back ([`encode`]).
//! - `created_at` is the server's time, as for every event; `time` is kept as sent.

pub mod decode;
pub mod encode;
pub mod openapi;

use sha2::{Digest, Sha256};

/// `Content-Type` of a structured-mode CloudEvent.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// `Content-Type` of a batch of structured CloudEvents (and the `Accept` of a find that wants
/// them back).
pub const BATCH: &str = "application/cloudevents-batch+json";
/// The header whose presence makes a request a binary-mode CloudEvent.
pub const BINARY_MARKER_HEADER: &str = "ce-specversion";
/// The one version accepted.
pub const SPEC_VERSION: &str = "1.0";

/// The payload key holding the CloudEvent's attributes.
pub const PAYLOAD_ATTRIBUTES: &str = "cloudevent";
/// The payload key holding JSON (or text) data.
pub const PAYLOAD_DATA: &str = "data";
/// The payload key holding binary data, base64.
pub const PAYLOAD_DATA_BASE64: &str = "data_base64";

/// Extension added to a CloudEvent read back: the event's stored id.
pub const EXT_STORED_ID: &str = "auditlogid";
/// Extension added to a CloudEvent read back: the server's `created_at`.
pub const EXT_CREATED_AT: &str = "auditlogcreatedat";

/// The stored id of the CloudEvent (`source`, `id`): the first 12 bytes of
/// SHA-256(`source` + `"\n"` + `id`), 24 lowercase hex characters. `source` never holds a
/// control character ([`decode`] refuses them), so the separator is unambiguous.
pub fn stored_id(source: &str, id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(source.as_bytes());
    hash.update(b"\n");
    hash.update(id.as_bytes());
    hex::encode(&hash.finalize()[..12])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stored_id_is_what_sha256sum_gives() {
        // printf 'https://example.com/orders\nA234-1234-1234' | sha256sum | cut -c1-24
        assert_eq!(
            super::stored_id("https://example.com/orders", "A234-1234-1234"),
            "f6f14d48654b0193ca1bb8c1"
        );
    }
}

//! Authentication of `/v1/*`: the `X-Api-Key` header names one of the keys in force
//! ([`crate::keys`]), found by its SHA-256.
//!
//! The key is looked up once per request, in front of every endpoint ([`identify`], called by
//! the server's request layer), so that the request's log line and metrics carry the key's
//! name; the lean `POST /v1/event` path gets the result directly, the OpenAPI operations
//! through [`ApiKeyAuth`], declared in the OpenAPI document so that Swagger UI's Authorize
//! button works. What the key may do is checked where the request's consumer is known: in
//! [`crate::ingest`], the find and [`crate::find::lookup`].

use std::sync::Arc;

use poem::Request;
use poem_openapi::auth::ApiKey;
use poem_openapi::SecurityScheme;

use crate::keys::{Key, Keys};

/// The header that carries the key.
pub const HEADER: &str = "x-api-key";

/// The key a request presented, if it is one in force; kept in the request's extensions for
/// the OpenAPI operations.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Arc<Key>>);

/// Finds the key a request presents: one SHA-256 and one map lookup, none without the header.
pub fn identify(req: &Request, keys: &Keys) -> Option<Arc<Key>> {
    let presented = req.headers().get(HEADER)?;
    keys.authenticate(presented.as_bytes())
}

/// `X-Api-Key` header: an API key. A key holds rights over consumers: `ingest` (POST
/// /v1/event, /v1/events) and `read` (GET and POST /v1/find; GET /v1/event/{id} shows an
/// event's content with it, its status with either right), for consumers named exactly,
/// by prefix (`billing-*`) or all (`*`). An event or a find naming a consumer outside the key's
/// consumers is refused with 403 (`consumer_not_allowed`; in a batch, that event alone); a find
/// naming no consumer returns only the key's consumers' events; an operation needing a right
/// the key lacks is refused with 403 (`missing_right`). A producer key may have an event rate:
/// past it, 429 `rate_limited` with Retry-After (a batch costs its number of events). Keys of
/// AUDIT_API_KEY hold both rights over every consumer; scoped keys come from the key file
/// (AUDIT_API_KEYS_FILE), made with `auditlog-service keys new`.
#[derive(SecurityScheme)]
#[oai(
    ty = "api_key",
    key_name = "X-Api-Key",
    key_in = "header",
    checker = "check_api_key"
)]
pub struct ApiKeyAuth(pub Arc<Key>);

async fn check_api_key(req: &Request, _presented: ApiKey) -> Option<Arc<Key>> {
    // Looked up already by the request layer; without it (never in the served application)
    // the request is refused rather than let through.
    req.extensions().get::<Caller>()?.0.clone()
}

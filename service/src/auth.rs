//! API-key authentication of `/v1/*`: the `X-Api-Key` header must equal one of the keys in
//! `AUDIT_API_KEY` (comma-separated, so keys can be rotated without downtime). Declared in
//! the OpenAPI document, so Swagger UI's Authorize button works.

use std::sync::Arc;

use poem::Request;
use poem_openapi::auth::ApiKey;
use poem_openapi::SecurityScheme;
use subtle::ConstantTimeEq;

use crate::state::AppState;

/// `X-Api-Key` header.
#[derive(SecurityScheme)]
#[oai(
    ty = "api_key",
    key_name = "X-Api-Key",
    key_in = "header",
    checker = "check_api_key"
)]
pub struct ApiKeyAuth(());

async fn check_api_key(req: &Request, key: ApiKey) -> Option<()> {
    let state = req.data::<Arc<AppState>>()?;
    key_matches(&state.api_keys, key.key.as_bytes()).then_some(())
}

/// Compares against every key without stopping at the first match, each comparison in
/// constant time, so the answer time says nothing about how close a guess was.
pub fn key_matches(keys: &[Vec<u8>], presented: &[u8]) -> bool {
    let mut found = subtle::Choice::from(0);
    for key in keys {
        found |= key.as_slice().ct_eq(presented);
    }
    found.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_key_matches_and_nothing_else() {
        let keys = vec![b"old-key".to_vec(), b"new-key".to_vec()];
        assert!(key_matches(&keys, b"old-key"));
        assert!(key_matches(&keys, b"new-key"));
        assert!(!key_matches(&keys, b"new-ke"));
        assert!(!key_matches(&keys, b""));
        assert!(!key_matches(&[], b"x"));
    }
}

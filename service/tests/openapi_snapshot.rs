//! The OpenAPI document is part of the API contract: any change to it must be deliberate.
//! A difference fails this test; `UPDATE_SNAPSHOTS=1 cargo test -p auditlog-service --test
//! openapi_snapshot` rewrites `service/openapi.json` after a deliberate change.

use std::path::PathBuf;

#[test]
fn openapi_document_matches_the_snapshot() {
    let spec = auditlog_service::http::api::api_service().spec();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, format!("{spec}\n")).expect("write snapshot");
        return;
    }
    let snapshot = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let (old, new): (Vec<_>, Vec<_>) = (
        snapshot.trim_end().lines().collect(),
        spec.trim_end().lines().collect(),
    );
    if let Some(line) = (0..old.len().max(new.len())).find(|&i| old.get(i) != new.get(i)) {
        let show = |doc: &[&str]| doc[line.min(doc.len())..doc.len().min(line + 5)].join("\n");
        panic!(
            "the OpenAPI document changed at line {}; review the diff and rerun with \
             UPDATE_SNAPSHOTS=1\n--- snapshot:\n{}\n--- now:\n{}",
            line + 1,
            show(&old),
            show(&new)
        );
    }
}

#[test]
fn the_document_declares_every_operation_and_the_api_key_scheme() {
    let spec: serde_json::Value =
        serde_json::from_str(&auditlog_service::http::api::api_service().spec())
            .expect("valid JSON");
    for (path, method) in [
        ("/v1/event", "post"),
        ("/v1/events", "post"),
        ("/v1/find", "get"),
        ("/v1/find", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    let scheme = &spec["components"]["securitySchemes"]["ApiKeyAuth"];
    assert_eq!(scheme["type"], "apiKey");
    assert_eq!(scheme["in"], "header");
    assert_eq!(scheme["name"], "X-Api-Key");
    let responses = &spec["paths"]["/v1/event"]["post"]["responses"];
    for status in [
        "201", "200", "400", "401", "409", "413", "415", "422", "429", "503",
    ] {
        assert!(
            responses[status].is_object(),
            "POST /v1/event does not document {status}"
        );
    }
    for (path, method, statuses) in [
        ("/v1/event", "post", &["403", "429"][..]),
        ("/v1/events", "post", &["403", "429"]),
        ("/v1/find", "get", &["403"]),
        ("/v1/find", "post", &["403"]),
    ] {
        for status in statuses {
            assert!(
                spec["paths"][path][method]["responses"][status].is_object(),
                "{method} {path} does not document {status}"
            );
        }
    }
    let scopes = scheme["description"].as_str().unwrap_or_default();
    for words in [
        "`ingest`",
        "`read`",
        "`billing-*`",
        "403",
        "429",
        "AUDIT_API_KEYS_FILE",
    ] {
        assert!(
            scopes.contains(words),
            "the security scheme's description does not explain {words}: {scopes}"
        );
    }
    for status in ["429", "503"] {
        let headers = responses[status]["headers"]
            .as_object()
            .expect("headers of a retryable error");
        assert!(
            headers
                .keys()
                .any(|h| h.eq_ignore_ascii_case("retry-after")),
            "{status} does not declare Retry-After"
        );
    }
}

//! CloudEvents 1.0 over HTTP from a client written by others: the CloudEvents Python SDK
//! (`cloudevents`, pinned in the tools venv) against the real service. `python/cloudevents_sdk.py`
//! builds its requests with the SDK — structured mode (`to_structured`), binary mode
//! (`to_binary`) and a batch (`application/cloudevents-batch+json`, each element the SDK's own
//! structured form) — and reads them back from find as CloudEvents (`Accept:
//! application/cloudevents-batch+json`), parsed with the SDK. It compares every attribute and
//! the data of what it sent with what it got back, and this test holds the HTTP answers to the
//! contract of docs/api.md: 201 then 200 for a retry (stored once), 409 `id_conflict` for other
//! content under the same source and id, 400 with an error body for an invalid CloudEvent,
//! and the stored event (id, type, consumer, payload) as the mapping says.

#[path = "support/service.rs"]
mod support;

use std::process::{Command, Stdio};

use serde_json::Value;
use support::{start_service, KEY};
use testcontainers_tests::mongo::test_mongo;
use testcontainers_tests::repo_root;
use testcontainers_tests::tools::python;

fn is_api_timestamp(s: &str) -> bool {
    // 2022-05-25T16:27:40.004Z
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
}

/// An error answer: `{"error": {"code", "message"}}`, with the code when given.
fn assert_error(answer: &Value, status: u64, code: Option<&str>) {
    assert_eq!(answer["status"], status, "{answer}");
    let error = &answer["body"]["error"];
    assert!(
        error["code"].is_string() && error["message"].is_string(),
        "not an error body: {answer}"
    );
    if let Some(code) = code {
        assert_eq!(error["code"], code, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloudevents_python_sdk_sends_structured_batched_and_binary_events_and_reads_them_back()
{
    let python = python();
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[]).await;
    let script = repo_root().join("testcontainers-tests/python/cloudevents_sdk.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([&service.base_url, KEY, &mongo.db_name])
        .stdin(Stdio::null())
        .output()
        .expect("run cloudevents_sdk.py");
    assert!(
        out.status.success(),
        "cloudevents_sdk.py failed ({}):\n{}\n{}\nservice log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        service.output()
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("cloudevents_sdk.py prints JSON");
    let answers = &r["answers"];
    let ids = &r["ids"];

    // Structured mode: 201 with the derived id, the same CloudEvent again 200 with the same
    // answer, other content under its source and id 409.
    let first = &answers["structured"];
    assert_eq!(first["status"], 201, "{first}");
    assert_eq!(first["body"]["id"], ids["structured order-1"], "{first}");
    assert!(
        is_api_timestamp(first["body"]["created_at"].as_str().unwrap_or("")),
        "{first}"
    );
    let retry = &answers["structured_retry"];
    assert_eq!(retry["status"], 200, "a retried CloudEvent: {retry}");
    assert_eq!(retry["body"], first["body"], "{retry}");
    assert_error(&answers["structured_conflict"], 409, Some("id_conflict"));

    // The batch: three accepted with their derived ids, the one without `source` refused alone.
    let batch = &answers["batch"];
    assert_eq!(batch["status"], 200, "{batch}");
    assert_eq!(batch["body"]["accepted"], 3, "{batch}");
    assert_eq!(batch["body"]["rejected"], 1, "{batch}");
    let results = batch["body"]["results"].as_array().expect("results");
    assert_eq!(results.len(), 4, "{batch}");
    for (result, name) in results.iter().zip(["batch b-1", "batch b-2", "batch b-3"]) {
        assert_eq!(result["status"], 201, "{result}");
        assert_eq!(result["id"], ids[name], "{result}");
        assert!(
            is_api_timestamp(result["created_at"].as_str().unwrap_or("")),
            "{result}"
        );
    }
    assert_eq!(results[3]["status"], 400, "{batch}");
    assert!(results[3]["error"]["code"].is_string(), "{batch}");

    // Binary mode: JSON, octet-stream and text data, each 201 with its derived id.
    for id in ["bin-1", "bin-2", "bin-3"] {
        let answer = &answers[format!("binary {id}").as_str()];
        assert_eq!(answer["status"], 201, "{answer}");
        assert_eq!(answer["body"]["id"], ids[format!("binary {id}").as_str()]);
    }

    // Invalid CloudEvents: 400 with an error body, structured or binary.
    assert_error(&answers["bad_no_source"], 400, None);
    assert_error(&answers["bad_v03_structured"], 400, None);
    assert_error(&answers["bad_v03_binary"], 400, None);

    // Read back as CloudEvents, every attribute and the data round-tripped (the script
    // compared them with the SDK's own parsing); the retry stored once; paging by header.
    assert_eq!(
        answers["find structured"]["count"], 1,
        "{}",
        answers["find structured"]
    );
    assert_eq!(
        answers["find batch"]["count"], 3,
        "{}",
        answers["find batch"]
    );
    assert_eq!(
        answers["find binary"]["count"], 3,
        "{}",
        answers["find binary"]
    );
    // Three pages of one, and perhaps an empty fourth when the third could not tell it was
    // the last (the script checked the ids: each once, in order).
    let pages = answers["paging"]["pages"].as_u64().unwrap_or(0);
    assert!((3..=4).contains(&pages), "{}", answers["paging"]);
    let problems = r["problems"].as_array().expect("problems");
    assert!(
        problems.is_empty(),
        "what did not round-trip through the service ({} of {} checks):\n{}",
        problems.len(),
        r["checked"].as_array().map_or(0, Vec::len),
        serde_json::to_string_pretty(problems).unwrap()
    );
    assert!(
        r["checked"].as_array().map_or(0, Vec::len) >= 60,
        "the script compared less than expected: {}",
        r["checked"]
    );

    // The same events through the plain API: ids, types and consumers as the mapping says.
    for (source, found) in answers["find_plain"].as_object().expect("find_plain") {
        assert_eq!(found["status"], 200, "{found}");
        for event in found["body"]["events"].as_array().expect("events") {
            assert_eq!(event["consumer"], source.as_str(), "{event}");
            assert!(event["payload"]["cloudevent"].is_object(), "{event}");
            assert!(
                event["payload"]["cloudevent"].get("type").is_none(),
                "type is not repeated in the payload: {event}"
            );
        }
    }
}

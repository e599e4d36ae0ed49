//! A client written by others, generated from the service's own OpenAPI document, against the
//! real service: `openapi-python-client` (pinned in the tools venv) reads `/openapi.json` as the
//! running binary serves it and generates a Python package; `python/generated_client.py` then
//! posts an event, a retry, a refused event and a batch, and finds them with the generated
//! operations and models. So the document is not only valid (schemathesis checks that,
//! `service_conformance`) but usable by a generator: every operation and schema generates, and
//! the generated code speaks to the service as it is.

#[path = "support/service.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{start_service, Api, KEY};
use testcontainers_tests::mongo::test_mongo;
use testcontainers_tests::repo_root;
use testcontainers_tests::tools::{python, venv_program};

/// What the generator may say about our document, each with why it is accepted: its report
/// lines (headers and details, the JSON excerpts left out). Anything else it reports fails the
/// test, since that would be a part of the API the generated client lacks.
const ACCEPTED_GENERATOR_WARNINGS: &[(&str, &str)] = &[(
    // NDJSON (`POST /v1/events` with `application/x-ndjson`) has no representation in the
    // generator: it takes JSON, form, multipart and octet-stream bodies only. The operation is
    // still generated, with its `application/json` body (an array of EventIn), which the
    // test uses.
    "WARNING parsing POST /v1/events within ingest.",
    "Unsupported content type application/x-ndjson",
)];

/// The generator's report (stderr), reduced to its header and detail lines: between its
/// "Warning(s) encountered" (or "Error(s)") line and its closing link, without the JSON excerpt
/// of the document that follows each finding.
fn generator_findings(stderr: &str) -> Vec<String> {
    let Some(start) = stderr.find("encountered while generating") else {
        return vec![];
    };
    let section = &stderr[start..];
    let section = section.split_once('\n').map_or("", |(_, rest)| rest);
    let section = section
        .split("If you believe this was a mistake")
        .next()
        .unwrap_or(section);
    let mut findings = vec![];
    let mut depth = 0i32;
    for line in section.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if depth == 0 && !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
            findings.push(trimmed.to_owned());
            continue;
        }
        // A JSON excerpt, pretty-printed over several lines.
        for c in trimmed.chars() {
            match c {
                '{' | '[' => depth += 1,
                '}' | ']' => depth -= 1,
                _ => {}
            }
        }
    }
    findings
}

/// The operations of the document, as `METHOD path`.
fn operations(doc: &Value) -> BTreeSet<String> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("path item")
                .keys()
                .filter(|m| {
                    ["get", "put", "post", "delete", "patch", "head", "options"]
                        .contains(&m.as_str())
                })
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect()
}

/// The operations the generated package has a module for, from each module's `_get_kwargs`.
fn generated_operations(package: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![package.join("api")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read generated api dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "py") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read generated module");
            let field = |name: &str| {
                let at = text.find(&format!("\"{name}\": \""))? + name.len() + 5;
                let rest = &text[at..];
                Some(rest[..rest.find('"')?].to_owned())
            };
            if let (Some(method), Some(url)) = (field("method"), field("url")) {
                // A path parameter is formatted in: `f"/v1/event/{id}"`.
                out.insert(format!("{} {url}", method.to_uppercase()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_generated_from_openapi_json_posts_and_finds_events() {
    let python = python();
    let generator = venv_program("openapi-python-client");
    let venv_bin = generator.parent().expect("venv bin").to_owned();
    let mongo = test_mongo().await;
    let service = start_service(&mongo, &[]).await;
    let api = Api::new(&service);

    let resp = api
        .http
        .get(api.url("/openapi.json"))
        .send()
        .await
        .expect("GET /openapi.json");
    assert_eq!(resp.status(), 200);
    let doc_text = resp.text().await.expect("openapi.json body");
    let doc: Value = serde_json::from_str(&doc_text).expect("openapi.json is JSON");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("openapi.json"), &doc_text).expect("write openapi.json");
    let package = dir.path().join("auditlog_client");
    // `--meta none`: the package alone, no project files. The generator formats its output
    // with ruff (its post hooks, run by name), so the venv's bin goes first on PATH.
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(&generator)
        .current_dir(dir.path())
        .args(["generate", "--path", "openapi.json", "--meta", "none"])
        .args(["--output-path", "auditlog_client"])
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run openapi-python-client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && package.join("client.py").exists(),
        "openapi-python-client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let findings = generator_findings(&stderr);
    let accepted: Vec<String> = ACCEPTED_GENERATOR_WARNINGS
        .iter()
        .flat_map(|(header, detail)| [header.to_string(), detail.to_string()])
        .collect();
    assert_eq!(
        findings, accepted,
        "the generator reported other findings on our document than the accepted ones \
         (a schema or operation it could not generate?):\n{stderr}"
    );

    // Every operation of the document has its generated module.
    assert_eq!(
        generated_operations(&package),
        operations(&doc),
        "the generated package lacks operations of the document"
    );
    // Every schema has its generated model.
    let models = std::fs::read_to_string(package.join("models/__init__.py"))
        .expect("generated models/__init__.py");
    for name in doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas")
        .keys()
    {
        assert!(
            models.contains(&format!("\"{name}\"")),
            "schema {name} has no generated model:\n{models}"
        );
    }

    // Every generated module imports: generated code that does not is named with its error.
    let script = repo_root().join("testcontainers-tests/python/generated_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg("--check-imports")
        .arg(&package)
        .stdin(Stdio::null())
        .output()
        .expect("run generated_client.py --check-imports");
    assert!(
        out.status.success(),
        "generated_client.py --check-imports failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let broken: Value = serde_json::from_slice(&out.stdout).expect("a JSON list");
    assert_eq!(
        broken,
        serde_json::json!([]),
        "generated modules that do not import (the generator wrote broken code for our document)"
    );

    let consumer = format!("gen-{}", mongo.db_name);
    let out = Command::new(&python)
        .arg(&script)
        .arg(&package)
        .args([&service.base_url, KEY, &consumer])
        .stdin(Stdio::null())
        .output()
        .expect("run generated_client.py");
    assert!(
        out.status.success(),
        "generated_client.py failed ({}):\n{}\n{}\nservice log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        service.output()
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("generated_client.py prints JSON");
    eprintln!("generated modules used: {}", r["modules"]);

    // One event: 201, and found with what was sent.
    assert_eq!(r["single"]["status"], 201, "{}", r["single"]);
    let single_id = r["single"]["ack"]["id"]
        .as_str()
        .expect("ack id")
        .to_owned();
    assert_eq!(single_id.len(), 24, "{}", r["single"]);
    // A retry with the producer's id: 201, then 200 with the same id and created_at.
    assert_eq!(r["retry"]["first_status"], 201, "{}", r["retry"]);
    assert_eq!(r["retry"]["again_status"], 200, "{}", r["retry"]);
    assert_eq!(r["retry"]["first"], r["retry"]["again"], "{}", r["retry"]);
    assert_eq!(r["retry"]["first"]["id"], r["retry"]["sent"]["id"]);
    // A refused event, parsed as the generated ErrorBody.
    assert_eq!(r["refused"]["status"], 422, "{}", r["refused"]);
    assert_eq!(
        r["refused"]["body"]["error"]["code"], "invalid_event",
        "{}",
        r["refused"]
    );
    // The batch: three accepted, each with its id.
    let batch = &r["batch"]["answer"];
    assert_eq!(r["batch"]["status"], 200, "{}", r["batch"]);
    assert_eq!(batch["accepted"], 3, "{batch}");
    assert_eq!(batch["rejected"], 0, "{batch}");
    let batch_ids: Vec<&str> = batch["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|item| {
            assert_eq!(item["status"], 201, "{item}");
            item["id"].as_str().expect("item id")
        })
        .collect();
    assert_eq!(batch_ids.len(), 3);

    // Found by consumer: the five stored events, each as sent.
    let mut sent: Vec<(String, Value)> = vec![
        (single_id.clone(), r["single"]["sent"].clone()),
        (
            r["retry"]["first"]["id"].as_str().unwrap().to_owned(),
            r["retry"]["sent"].clone(),
        ),
    ];
    for (id, event) in batch_ids.iter().zip(r["batch"]["sent"].as_array().unwrap()) {
        sent.push((id.to_string(), event.clone()));
    }
    let found = r["find_consumer"]["events"].as_array().expect("events");
    assert_eq!(found.len(), 5, "{}", r["find_consumer"]);
    for (id, event) in &sent {
        let got = found
            .iter()
            .find(|e| e["id"] == id.as_str())
            .unwrap_or_else(|| panic!("event {id} not found: {}", r["find_consumer"]));
        assert_eq!(got["type"], event["type"], "{got}");
        assert_eq!(got["consumer"], consumer.as_str(), "{got}");
        assert_eq!(got["payload"], event["payload"], "{got}");
    }
    let single = found
        .iter()
        .find(|e| e["id"] == single_id.as_str())
        .unwrap();
    assert_eq!(single["created_at"], r["single"]["ack"]["created_at"]);
    // The typed view (Event's attributes) says the same.
    let typed = r["find_typed"].as_array().expect("typed");
    assert_eq!(typed.len(), 5, "{typed:?}");
    for (t, f) in typed.iter().zip(found) {
        for field in ["id", "type", "consumer", "created_at", "payload"] {
            assert_eq!(t[field], f[field], "{t} / {f}");
        }
    }

    // By consumer and type: the batch; by the JSON body (POST /v1/find): the login.
    let by_type: BTreeSet<&str> = r["find_type"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(by_type, batch_ids.iter().copied().collect());
    let by_post = r["find_post"]["events"].as_array().expect("events");
    assert_eq!(by_post.len(), 1, "{}", r["find_post"]);
    assert_eq!(by_post[0]["id"], single_id.as_str());
    assert_eq!(by_post[0]["payload"], r["single"]["sent"]["payload"]);

    // The histogram through the generated operation and models: the five events, by type.
    let hist = &r["histogram"];
    assert_eq!(hist["total"], 5, "{hist}");
    assert_eq!(hist["bucket_sum"], 5, "{hist}");
    assert_eq!(hist["by"], "type", "{hist}");
    let mut kinds: Vec<&str> = found.iter().map(|e| e["type"].as_str().unwrap()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut series: Vec<&str> = hist["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    series.sort_unstable();
    assert_eq!(series, kinds, "{hist}");

    // Its status, through the generated GET /v1/event/{id}.
    assert_eq!(r["status"]["status"], 200, "{}", r["status"]);
    assert_eq!(r["status"]["body"]["status"], "stored");
    assert_eq!(
        r["status"]["body"]["payload"],
        r["single"]["sent"]["payload"]
    );
    // Without the key: 401, parsed as ErrorBody; with the header given to Client: all five.
    assert_eq!(r["unauthorized"]["status"], 401, "{}", r["unauthorized"]);
    assert_eq!(r["unauthorized"]["body"]["error"]["code"], "unauthorized");
    assert_eq!(r["headers_client_count"], 5);
}

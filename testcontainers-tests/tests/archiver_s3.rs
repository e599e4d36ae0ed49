//! The round trip against an S3-compatible server running here (moto, via infra/dev/s3.sh):
//! files land under `s3://bucket/prefix/<db>/events/dt=…/hour=…/`, pyarrow's S3 filesystem
//! reads them back equal to MongoDB, `_SUCCESS` markers exist, reruns add nothing, and
//! `verify` re-reads the objects.

#[path = "support/archiver.rs"]
mod support;

use std::process::Command;

use support::*;
use testcontainers_tests::mongo::test_mongo;
use testcontainers_tests::tools::{python, s3_endpoint};

const BOTO: &str = r#"
import boto3, json, sys
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
if sys.argv[2] == "create":
    s3.create_bucket(Bucket=sys.argv[3])
else:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[3]):
        keys += [o["Key"] for o in page.get("Contents", [])]
    print(json.dumps(sorted(keys)))
"#;

fn boto(endpoint: &str, action: &str, bucket: &str) -> String {
    let out = Command::new(python())
        .args(["-c", BOTO, endpoint, action, bucket])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3 {action} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_round_trip_s3_read_back_by_pyarrow() {
    let endpoint = s3_endpoint();
    let mongo = test_mongo().await;
    let base = hour_days_ago(3);
    insert(&mongo, &tricky_events(base)).await;
    let expected = mongo_events(&mongo).await;
    let bucket = format!("archive-{}", mongo.db_name.replace('_', "-").to_lowercase());
    boto(&endpoint, "create", &bucket);

    let archiver = Archiver::new(&mongo, &format!("s3://{bucket}/audit/prod"))
        .env("AUDIT_S3_ENDPOINT", &endpoint)
        .env("AUDIT_S3_ALLOW_HTTP", "true")
        .env("AUDIT_S3_ACCESS_KEY_ID", "test")
        .env("AUDIT_S3_SECRET_ACCESS_KEY", "test")
        .env("AUDIT_ARCHIVE_BATCH_SIZE", "50");
    archiver.run(&["once"]).expect_code(0);
    archiver.run(&["once"]).expect_code(0);

    let root = format!("s3://{bucket}/audit/prod/{}/events", mongo.db_name);
    let read = read_with_pyarrow(&root, &[("S3_ENDPOINT", endpoint.as_str())]);
    assert_same_events(&read.rows, &expected, true);
    assert_eq!(read.meta["schema"]["created_at"], "timestamp[ms, tz=UTC]");

    let keys: Vec<String> = serde_json::from_str(&boto(&endpoint, "list", &bucket)).unwrap();
    let parquet = keys.iter().filter(|k| k.ends_with(".parquet")).count();
    let success = keys.iter().filter(|k| k.ends_with("/_SUCCESS")).count();
    assert_eq!((parquet, success), (3, 3), "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| k.starts_with(&format!("audit/prod/{}/events/dt=", mongo.db_name))),
        "{keys:?}"
    );
    assert!(
        keys.iter().all(|k| !k.contains("/.")),
        "temporaries left: {keys:?}"
    );

    let verify = archiver.run(&["verify", "--json"]).expect_code(0).json();
    assert_eq!(verify["ok"], 3);
}

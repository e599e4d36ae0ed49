//! The fault-injecting wire proxy does what the cluster tests rely on: it forwards untouched
//! when no rule matches, and each fault looks to the MongoDB driver exactly as it would from a
//! real cluster — while the store behind it shows what really happened.

use std::time::{Duration, Instant};

use auditlog_common::error::server_error_code;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Client;
use testcontainers_tests::mongo::test_mongo;
use testcontainers_tests::proxy::{Fault, Rule, WireProxy};

async fn client(uri: &str) -> Client {
    let mut options = mongodb::options::ClientOptions::parse(uri)
        .await
        .expect("proxied URI parses");
    options.retry_writes = Some(false);
    options.server_selection_timeout = Some(Duration::from_secs(5));
    Client::with_options(options).expect("client")
}

async fn ids(coll: &mongodb::Collection<Document>) -> Vec<i32> {
    let mut v: Vec<i32> = coll
        .find(doc! {})
        .await
        .expect("find")
        .try_collect::<Vec<_>>()
        .await
        .expect("cursor")
        .iter()
        .map(|d| d.get_i32("_id").expect("int _id"))
        .collect();
    v.sort();
    v
}

fn docs(range: std::ops::Range<i32>) -> Vec<Document> {
    range.map(|i| doc! { "_id": i, "v": "x" }).collect()
}

#[tokio::test]
async fn forwards_untouched_and_scripts_each_fault() {
    let mongo = test_mongo().await;
    let (proxy, uri) = WireProxy::in_front_of(&mongo.uri).await;
    let through = client(&uri)
        .await
        .database(&mongo.db_name)
        .collection::<Document>("p");
    let direct = mongo.store().await.database().collection::<Document>("p");

    // No rule: reads and writes pass.
    through
        .insert_many(docs(0..3))
        .await
        .expect("insert through the proxy");
    assert_eq!(ids(&through).await, vec![0, 1, 2]);
    assert!(proxy.seen("insert") >= 1 && proxy.seen("find") >= 1);

    // An election: the command is refused with the server's code and label, nothing stored.
    proxy.add(Rule::new("insert", Fault::not_writable_primary()).times(1));
    let err = through.insert_many(docs(3..4)).await.expect_err("refused");
    assert_eq!(server_error_code(&err), Some(10107), "{err}");
    assert!(err.contains_label("RetryableWriteError"), "{err}");
    assert_eq!(ids(&direct).await, vec![0, 1, 2]);
    through
        .insert_many(docs(3..4))
        .await
        .expect("the rule applied once only");

    // A mongos with one shard down: listed documents fail, the others are stored.
    proxy.add(
        Rule::new(
            "insert",
            Fault::WriteErrors {
                indexes: vec![1, 3],
                code: 10107,
            },
        )
        .times(1),
    );
    let err = through
        .insert_many(docs(10..15))
        .ordered(false)
        .await
        .expect_err("partial failure");
    let mongodb::error::ErrorKind::InsertMany(failure) = err.kind.as_ref() else {
        panic!("expected an insert_many failure, got {err}");
    };
    let mut failed: Vec<usize> = failure
        .write_errors
        .iter()
        .flatten()
        .map(|e| e.index)
        .collect();
    failed.sort();
    assert_eq!(failed, vec![1, 3]);
    assert_eq!(ids(&direct).await, vec![0, 1, 2, 3, 10, 12, 14]);

    // Write-concern error: stored, but the caller is told the concern was not met.
    proxy.add(Rule::new("insert", Fault::write_concern_failed()).times(1));
    let err = through
        .insert_many(docs(20..21))
        .await
        .expect_err("write concern error");
    assert!(err.to_string().contains("injected"), "{err}");
    assert!(ids(&direct).await.contains(&20));

    // Applied but unacknowledged: the connection drops after the write.
    proxy.add(Rule::new("insert", Fault::ResetAfterForward).times(1));
    through
        .insert_many(docs(30..31))
        .await
        .expect_err("no reply");
    assert!(
        ids(&direct).await.contains(&30),
        "the write reached the store"
    );

    // Dropped before forwarding: nothing stored.
    proxy.add(Rule::new("insert", Fault::ResetBeforeForward).times(1));
    through
        .insert_many(docs(40..41))
        .await
        .expect_err("no reply");
    assert!(!ids(&direct).await.contains(&40));

    // Slow replies.
    proxy.add(Rule::new("insert", Fault::Delay(Duration::from_millis(700))).times(1));
    let t = Instant::now();
    through
        .insert_many(docs(50..51))
        .await
        .expect("delayed insert");
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );

    // Rules can target one collection only.
    proxy.add(Rule::new("insert", Fault::not_writable_primary()).on("other"));
    through
        .insert_many(docs(60..61))
        .await
        .expect("other collections are untouched");
    let other = client(&uri)
        .await
        .database(&mongo.db_name)
        .collection::<Document>("other");
    other
        .insert_one(doc! {"_id": 1})
        .await
        .expect_err("refused on `other`");
    proxy.clear();
    other.insert_one(doc! {"_id": 1}).await.expect("cleared");
    assert_eq!(proxy.applied("insert"), 7);
}

//! `auditlog-client`'s typed calls and streams against the real service on the harness's
//! MongoDB: post (created, then already stored), a batch with a refused event, find across
//! pages equal to the API's own pages, tail picking up a later event, and the errors a caller
//! sees for a bad key and an unreachable server.

#[path = "support/service.rs"]
mod support;

use std::time::Duration;

use auditlog_client::{Client, Error, FindQuery, NewEvent, Order, PostOutcome};
use futures::StreamExt;
use serde_json::{json, Value};
use support::{quick_visibility, start_service_env, Api, KEY};
use testcontainers_tests::mongo::test_mongo;

#[tokio::test]
async fn the_client_speaks_the_api() {
    let mongo = test_mongo().await;
    // complete_until trails now by 1.5 s, so tail sees a new event quickly.
    let service = start_service_env(quick_visibility(mongo.env()), &[]).await;
    let client = Client::new(&service.base_url, KEY).expect("client");
    assert_eq!(client.base_url(), service.base_url);
    let api = Api::new(&service);

    // post_event: 201, then 200 for the same event under the same id.
    let event = NewEvent::new("login", "c1")
        .payload(json!({"ok": true}))
        .with_new_id();
    let first = client.post_event(&event).await.expect("first post");
    assert_eq!(first.outcome, PostOutcome::Created);
    assert_eq!(Some(&first.ack.id), event.id.as_ref());
    let again = client.post_event(&event).await.expect("retry");
    assert_eq!(again.outcome, PostOutcome::AlreadyStored);
    assert_eq!(again.ack, first.ack);
    // Other content under that id: 409, permanent.
    let clash = client
        .post_event(&NewEvent::new("logout", "c1").id(first.ack.id.clone()))
        .await
        .expect_err("409");
    assert_eq!(clash.status(), Some(409), "{clash}");
    assert!(!clash.is_transient());

    // get_event: stored with its content; an unknown id reads "unknown", not an error.
    let status = client.get_event(&first.ack.id).await.expect("status");
    assert!(status.is_stored(), "{status:?}");
    assert_eq!(status.kind.as_deref(), Some("login"));
    assert_eq!(status.payload, Some(json!({"ok": true})));
    let unknown = client
        .get_event(&auditlog_client::new_event_id())
        .await
        .expect("unknown is an answer");
    assert_eq!(unknown.status, "unknown");

    // post_events with a bad item: refused on its own, the others stored.
    let batch = vec![
        NewEvent::new("t", "c1").with_new_id(),
        NewEvent::new("t", "c1").payload(json!({"$where": 1})),
        NewEvent::new("t", "c1"),
    ];
    let answer = client.post_events(&batch).await.expect("batch");
    assert_eq!((answer.accepted, answer.rejected), (2, 1), "{answer:?}");
    assert_eq!(answer.results[0].status, 201);
    assert_eq!(answer.results[0].id, batch[0].id);
    assert_eq!(answer.results[1].status, 422);
    let refused = answer.results[1].error.as_ref().expect("error detail");
    assert_eq!(refused.code, "invalid_event");
    assert!(refused.message.contains("$where"), "{}", refused.message);
    assert!(answer.results[2].id.is_some());

    // find: 35 events, 10 a page (4 pages, newest first), equal to the API's own pages.
    let pages: Vec<NewEvent> = (0..35)
        .map(|n| NewEvent::new("paged", "pages").payload(json!({"n": n})))
        .collect();
    assert_eq!(client.post_events(&pages).await.expect("post").accepted, 35);
    let query = FindQuery {
        consumer: Some("pages".into()),
        limit: Some(10),
        order: Some(Order::Desc),
        ..Default::default()
    };
    let found: Vec<Value> = client
        .find(query.clone())
        .map(|e| serde_json::to_value(e.expect("event")).expect("serializes"))
        .collect()
        .await;
    let (raw, raw_pages) = api
        .find_all(&[("consumer", "pages"), ("limit", "10"), ("order", "desc")])
        .await;
    assert!(raw_pages > 3, "{raw_pages} pages");
    assert_eq!(found.len(), 35);
    assert_eq!(found, raw, "the client's events serialize as the API's");
    // find_page by hand gives the same pages.
    let first_page = client.find_page(&query, None).await.expect("page");
    assert_eq!(first_page.events.len(), 10);
    assert_eq!(first_page.tiers, vec!["mongodb".to_string()]);
    let second = client
        .find_page(&query, first_page.next_cursor.as_deref())
        .await
        .expect("page 2");
    assert_eq!(
        serde_json::to_value(&second.events).expect("json"),
        Value::Array(raw[10..20].to_vec())
    );

    // tail: started before the event is posted, it yields the event once visible.
    let tail_query = FindQuery {
        consumer: Some("tailed".into()),
        ..Default::default()
    };
    let mut tail = client.tail(tail_query, Duration::from_millis(200));
    let tailer = tokio::spawn(async move { tail.next().await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let posted = client
        .post_event(&NewEvent::new("later", "tailed"))
        .await
        .expect("post");
    let got = tokio::time::timeout(Duration::from_secs(20), tailer)
        .await
        .expect("tail yields the event within 20 s")
        .expect("tail task")
        .expect("the stream goes on")
        .expect("no error");
    assert_eq!(got.id, posted.ack.id);
    assert_eq!(got.created_at, posted.ack.created_at);

    // A bad key: Error::Api 401, one line.
    let stranger = Client::new(&service.base_url, "not-a-key").expect("client");
    let err = stranger
        .post_event(&NewEvent::new("t", "c1"))
        .await
        .expect_err("401");
    assert!(matches!(err, Error::Api { status: 401, .. }), "{err:?}");
    let line = err.to_string();
    assert!(line.starts_with("401 unauthorized: "), "{line}");
    assert!(!line.contains('\n'), "{line}");
    assert!(!err.is_transient());
    let err = stranger.find_page(&query, None).await.expect_err("401");
    assert_eq!(err.status(), Some(401));
}

#[tokio::test]
async fn an_unreachable_server_is_a_one_line_transport_error() {
    let port = testcontainers_tests::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::new(&base, KEY).expect("client");
    let err = client
        .post_event(&NewEvent::new("t", "c1"))
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    let line = err.to_string();
    assert_eq!(
        line,
        format!("cannot reach {base}/v1/event: connection refused")
    );
    assert!(err.is_transient());
    assert!(matches!(
        Client::new("localhost:8080", KEY),
        Err(Error::InvalidUrl(_))
    ));
}

#[tokio::test]
async fn find_asks_a_page_again_after_a_transient_error() {
    use testcontainers_tests::proxy::{Fault, Rule, WireProxy};
    let mongo = test_mongo().await;
    let (proxy, uri) = WireProxy::in_front_of(&mongo.uri).await;
    let service = start_service_env(support::with_mongodb_uri(mongo.env(), &uri), &[]).await;
    let client = Client::new(&service.base_url, KEY).expect("client");
    for n in 0..5 {
        let event = NewEvent::new("retry", "c-find").payload(json!({"n": n}));
        client.post_event(&event).await.expect("post");
    }
    // The events query fails twice (no retryable label: the driver does not retry it), so
    // the service answers 503 with Retry-After twice; the stream asks the same page again.
    proxy.add(
        Rule::new(
            "find",
            Fault::CommandError {
                code: 2,
                code_name: "BadValue".into(),
                labels: vec![],
            },
        )
        .on("events")
        .times(2),
    );
    let query = FindQuery {
        consumer: Some("c-find".into()),
        limit: Some(2),
        order: Some(Order::Desc),
        ..FindQuery::default()
    };
    let found: Vec<_> = client.find(query).collect().await;
    let events: Vec<_> = found
        .into_iter()
        .map(|r| r.expect("no error reaches the reader"))
        .collect();
    let ns: Vec<_> = events
        .iter()
        .map(|e| e.payload.clone().unwrap()["n"].clone())
        .collect();
    assert_eq!(ns, vec![json!(4), json!(3), json!(2), json!(1), json!(0)]);
    assert!(
        proxy.seen_on("find", "events") >= 2 + 3,
        "two refused asks, then the three pages"
    );
}

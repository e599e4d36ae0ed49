//! Bootstrap and setup against the scripted cluster ([`crate::fake`]): the exact commands
//! sent for a fresh, a half-initiated and a fully initiated cluster, a member that is down
//! for a while or for good, and a command that fails once. Time is paused, so waits are
//! instant but still measured.

use std::time::Duration;

use auditlog_common::schema::{Retention, ShardKey};
use mongodb::bson::{doc, Document};
use tokio::time::Instant;

use super::*;
use crate::fake::FakeCluster;
use crate::roles::Component;

fn plan() -> BootstrapPlan {
    BootstrapPlan {
        config_replset: "cfg/c0:27019,c1:27019,c2:27019".parse().unwrap(),
        shard_replsets: vec![
            "s0/a0:27018,a1:27018,a2:27018".parse().unwrap(),
            "s1/b0:27018,b1:27018,b2:27018".parse().unwrap(),
        ],
        admin: Some(("root".into(), "secret".into())),
        app_users: vec![
            AppUser {
                component: Component::Service,
                username: "auditlog-service".into(),
                password: "s-pw".into(),
            },
            AppUser {
                component: Component::Archiver,
                username: "auditlog-archiver".into(),
                password: "a-pw".into(),
            },
        ],
        setup: SetupPlan {
            db_name: "dbevents".into(),
            collection: "events".into(),
            shard_key: ShardKey::default(),
            retention: Retention::from_days(30),
            reshard: false,
        },
    }
}

fn members(hosts: &[&str]) -> Vec<Document> {
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| doc! { "_id": i as i32, "host": *h })
        .collect()
}

fn w(target: &str, command: Document) -> (String, Document) {
    (target.to_owned(), command)
}

fn create_user() -> Document {
    doc! { "createUser": "root", "pwd": "secret", "roles": [{ "role": "root", "db": "admin" }] }
}

/// The custom role and the user of one component, as a fresh cluster gets them.
fn component_user(c: Component, user: &str, pwd: &str) -> [(String, Document); 2] {
    let role = c.role_name();
    [
        w(
            "router",
            doc! { "createRole": role, "privileges": c.privileges("dbevents", "events"), "roles": [] },
        ),
        w(
            "router",
            doc! { "createUser": user, "pwd": pwd, "roles": [{ "role": role, "db": "admin" }] },
        ),
    ]
}

/// The writes a fresh cluster needs after its replica sets exist.
fn after_replsets(users_on: &[&str]) -> Vec<(String, Document)> {
    let mut v: Vec<_> = users_on.iter().map(|t| w(t, create_user())).collect();
    v.extend(component_user(
        Component::Service,
        "auditlog-service",
        "s-pw",
    ));
    v.extend(component_user(
        Component::Archiver,
        "auditlog-archiver",
        "a-pw",
    ));
    v.extend([
        w(
            "router",
            doc! { "addShard": "s0/a0:27018,a1:27018,a2:27018", "name": "s0" },
        ),
        w(
            "router",
            doc! { "addShard": "s1/b0:27018,b1:27018,b2:27018", "name": "s1" },
        ),
        w("router", doc! { "enableSharding": "dbevents" }),
        w(
            "router",
            // The default key routes a producer's retry (same consumer, same id) to the shard
            // of the first copy, whatever created_at the retry got.
            doc! { "shardCollection": "dbevents.events", "key": { "consumer": "hashed", "_id": 1 } },
        ),
        w("router", doc! { "ensureStorage": 30 * 86_400_i64 }),
    ]);
    v
}

fn initiate(set: &str, configsvr: bool, hosts: &[&str]) -> Document {
    let mut c = doc! { "_id": set };
    if configsvr {
        c.insert("configsvr", true);
    }
    c.insert("members", members(hosts));
    doc! { "replSetInitiate": c }
}

fn healthy() -> FakeCluster {
    FakeCluster::new()
        .with_set(
            "cfg",
            true,
            &["c0:27019", "c1:27019", "c2:27019"],
            "c2:27019",
        )
        .with_set(
            "s0",
            false,
            &["a0:27018", "a1:27018", "a2:27018"],
            "a1:27018",
        )
        .with_set(
            "s1",
            false,
            &["b0:27018", "b1:27018", "b2:27018"],
            "b2:27018",
        )
        .with_shard("s0", "s0/a0:27018,a1:27018,a2:27018")
        .with_shard("s1", "s1/b0:27018,b1:27018,b2:27018")
        .with_router_user("root")
        .with_set_user("s0", "root")
        .with_set_user("s1", "root")
        .with_sharded("dbevents.events", doc! { "consumer": "hashed", "_id": 1 })
        .with_role(
            "auditlogService",
            Component::Service.privileges("dbevents", "events"),
        )
        .with_role(
            "auditlogArchiver",
            Component::Archiver.privileges("dbevents", "events"),
        )
        .with_router_user_role("auditlog-service", "auditlogService")
        .with_router_user_role("auditlog-archiver", "auditlogArchiver")
}

async fn bootstrap(c: &FakeCluster, deadline: Duration) -> (Result<(), OpsError>, Vec<String>) {
    let steps = Steps::default();
    let r = run(c, &plan(), Deadline::after(deadline), &steps).await;
    (r, steps.lines())
}

#[tokio::test(start_paused = true)]
async fn fresh_cluster_initiates_every_set_with_all_members_then_users_shards_and_setup() {
    let c = FakeCluster::new();
    let (r, _) = bootstrap(&c, Duration::from_secs(60)).await;
    r.expect("bootstrap of a fresh cluster");

    let mut want = vec![
        w(
            "c0:27019",
            initiate("cfg", true, &["c0:27019", "c1:27019", "c2:27019"]),
        ),
        w(
            "a0:27018",
            initiate("s0", false, &["a0:27018", "a1:27018", "a2:27018"]),
        ),
        w(
            "b0:27018",
            initiate("s1", false, &["b0:27018", "b1:27018", "b2:27018"]),
        ),
    ];
    // Users through mongos (config servers) and on each shard's primary.
    want.extend(after_replsets(&["router", "a0:27018", "b0:27018"]));
    assert_eq!(c.writes(), want);

    let sent = c.sent();
    assert!(
        sent.iter()
            .filter(|s| s.command.contains_key("usersInfo"))
            .all(|s| s.db == "admin"),
        "users are looked up in the admin database"
    );
}

#[tokio::test(start_paused = true)]
async fn fully_initiated_cluster_gets_no_write_on_a_rerun() {
    let c = healthy();
    let (r, lines) = bootstrap(&c, Duration::from_secs(60)).await;
    r.expect("bootstrap of a healthy cluster");
    assert_eq!(
        c.writes(),
        vec![w("router", doc! { "ensureStorage": 30 * 86_400_i64 })],
        "only the idempotent storage check runs on a healthy cluster"
    );
    // The configuration is read from the actual primary, not from member 0.
    let config_reads: Vec<String> = c
        .sent()
        .into_iter()
        .filter(|s| s.command.contains_key("replSetGetConfig"))
        .map(|s| s.target)
        .collect();
    assert_eq!(config_reads, vec!["c2:27019", "a1:27018", "b2:27018"]);
    assert!(lines.iter().any(|l| l == "collection dbevents.events already sharded on { \"consumer\": \"hashed\", \"_id\": 1 }"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "shard s1 already in the cluster"));
}

#[tokio::test(start_paused = true)]
async fn second_run_after_a_fresh_bootstrap_changes_nothing() {
    let c = FakeCluster::new();
    bootstrap(&c, Duration::from_secs(60))
        .await
        .0
        .expect("first run");
    let before = c.writes().len();
    bootstrap(&c, Duration::from_secs(60))
        .await
        .0
        .expect("second run");
    assert_eq!(
        c.writes()[before..],
        [w("router", doc! { "ensureStorage": 30 * 86_400_i64 })]
    );
}

#[tokio::test(start_paused = true)]
async fn half_initiated_cluster_is_completed_one_member_at_a_time_from_the_primary() {
    // Config servers done; shard s0 initiated by hand with one member (which is primary);
    // shard s1 untouched; the admin user exists through mongos only.
    let c = FakeCluster::new()
        .with_set(
            "cfg",
            true,
            &["c0:27019", "c1:27019", "c2:27019"],
            "c1:27019",
        )
        .with_set("s0", false, &["a1:27018"], "a1:27018")
        .with_router_user("root");
    let (r, _) = bootstrap(&c, Duration::from_secs(60)).await;
    r.expect("bootstrap of a half-initiated cluster");

    let reconfig = |version: i32, hosts: &[(i32, &str)]| {
        let members: Vec<Document> = hosts
            .iter()
            .map(|(id, h)| doc! { "_id": *id, "host": *h })
            .collect();
        doc! { "replSetReconfig": { "_id": "s0", "version": version, "members": members } }
    };
    let mut want = vec![
        w("a1:27018", reconfig(2, &[(0, "a1:27018"), (1, "a0:27018")])),
        w(
            "a1:27018",
            reconfig(3, &[(0, "a1:27018"), (1, "a0:27018"), (2, "a2:27018")]),
        ),
        w(
            "b0:27018",
            initiate("s1", false, &["b0:27018", "b1:27018", "b2:27018"]),
        ),
    ];
    want.extend(after_replsets(&["a1:27018", "b0:27018"]));
    assert_eq!(c.writes(), want);
}

#[tokio::test(start_paused = true)]
async fn a_member_down_for_a_while_is_waited_for_then_the_set_is_initiated() {
    let c = FakeCluster::new().member_up_after("a2:27018", Duration::from_secs(40));
    let started = Instant::now();
    let (r, _) = bootstrap(&c, Duration::from_secs(120)).await;
    r.expect("bootstrap once the member is up");
    assert!(started.elapsed() >= Duration::from_secs(40));

    let writes = c.writes();
    assert_eq!(
        writes[1],
        w(
            "a0:27018",
            initiate("s0", false, &["a0:27018", "a1:27018", "a2:27018"])
        ),
        "s0 is initiated with all three members, the late one included"
    );
    let hellos_to_a2 = c
        .sent()
        .iter()
        .filter(|s| s.target == "a2:27018" && s.command.contains_key("hello"))
        .count();
    assert!(hellos_to_a2 > 2, "a2 was asked only {hellos_to_a2} times");
}

#[tokio::test(start_paused = true)]
async fn a_member_that_never_answers_fails_at_the_deadline_naming_it() {
    let c = FakeCluster::new().member_down("b1:27018");
    let started = Instant::now();
    let (r, _) = bootstrap(&c, Duration::from_secs(60)).await;
    let e = r.expect_err("bootstrap cannot finish without b1");
    let elapsed = started.elapsed();
    assert!(
        elapsed <= Duration::from_secs(60) && elapsed >= Duration::from_secs(45),
        "gave up after {elapsed:?}"
    );
    assert_eq!(e.exit_code(), 4);
    match &e {
        OpsError::Deadline { step, reason, .. } => {
            assert_eq!(step, "replica set s1");
            assert!(reason.contains("b1:27018"), "{reason}");
        }
        other => panic!("not a deadline error: {other}"),
    }
    // cfg and s0 got done; s1 was never initiated without its member; nothing after it ran.
    let targets: Vec<String> = c.writes().into_iter().map(|(t, _)| t).collect();
    assert_eq!(targets, vec!["c0:27019", "a0:27018"]);
}

#[tokio::test(start_paused = true)]
async fn a_command_failing_once_is_retried() {
    let c = FakeCluster::new().fail_once("addShard");
    let (r, _) = bootstrap(&c, Duration::from_secs(60)).await;
    r.expect("bootstrap despite one failed addShard");
    let add_shards: Vec<Document> = c
        .writes()
        .into_iter()
        .filter(|(_, cmd)| cmd.contains_key("addShard"))
        .map(|(_, cmd)| cmd)
        .collect();
    let s0 = doc! { "addShard": "s0/a0:27018,a1:27018,a2:27018", "name": "s0" };
    let s1 = doc! { "addShard": "s1/b0:27018,b1:27018,b2:27018", "name": "s1" };
    assert_eq!(add_shards, vec![s0.clone(), s0, s1]);
}

#[tokio::test(start_paused = true)]
async fn a_wrong_keyfile_fails_at_once_instead_of_waiting() {
    let c = FakeCluster::new().auth_fails("c1:27019");
    let started = Instant::now();
    let (r, _) = bootstrap(&c, Duration::from_secs(600)).await;
    let e = r.expect_err("authentication failure");
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(e.exit_code(), 5);
    assert!(e.to_string().contains("c1:27019"), "{e}");
    assert!(c.writes().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_member_of_another_replica_set_is_a_configuration_error() {
    let c = FakeCluster::new().with_set("other", false, &["a0:27018"], "a0:27018");
    let (r, _) = bootstrap(&c, Duration::from_secs(60)).await;
    let e = r.expect_err("wrong set");
    assert_eq!(e.exit_code(), 3);
    assert!(
        e.to_string().contains("belongs to replica set other"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn setup_on_a_server_that_is_not_mongos_skips_sharding_and_says_so() {
    let c = FakeCluster::new().not_mongos();
    let steps = Steps::default();
    setup::run(&c, &plan().setup, &steps).await.expect("setup");
    assert_eq!(
        c.writes(),
        vec![w("router", doc! { "ensureStorage": 30 * 86_400_i64 })]
    );
    assert!(steps.lines()[0].starts_with("sharding skipped: the server is not a mongos"));
}

#[tokio::test(start_paused = true)]
async fn setup_leaves_a_collection_sharded_on_another_key_and_reports_it() {
    let c = FakeCluster::new().with_sharded("dbevents.events", doc! { "consumer": "hashed" });
    let steps = Steps::default();
    setup::run(&c, &plan().setup, &steps).await.expect("setup");
    assert_eq!(
        c.writes(),
        vec![w("router", doc! { "ensureStorage": 30 * 86_400_i64 })]
    );
    assert!(
        steps.lines()[0].contains("not the configured"),
        "{:?}",
        steps.lines()
    );
}

#[tokio::test(start_paused = true)]
async fn setup_shards_on_the_selected_key() {
    let c = FakeCluster::new();
    let mut p = plan().setup;
    p.shard_key = ShardKey::HashedConsumer;
    p.retention = Retention::Forever;
    setup::run(&c, &p, &Steps::default()).await.expect("setup");
    assert_eq!(
        c.writes(),
        vec![
            w("router", doc! { "enableSharding": "dbevents" }),
            w(
                "router",
                doc! { "shardCollection": "dbevents.events", "key": { "consumer": "hashed" } }
            ),
            w("router", doc! { "ensureStorage": 0_i64 }),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn setup_on_the_old_default_key_warns_that_retries_are_not_idempotent_and_how_to_reshard() {
    let c = FakeCluster::new().with_sharded(
        "dbevents.events",
        doc! { "consumer": "hashed", "created_at": 1 },
    );
    let steps = Steps::default();
    setup::run(&c, &plan().setup, &steps).await.expect("setup");
    assert_eq!(
        c.writes(),
        vec![w("router", doc! { "ensureStorage": 30 * 86_400_i64 })],
        "without --reshard nothing is moved"
    );
    let line = &steps.lines()[0];
    assert!(line.starts_with("WARNING"), "{line}");
    assert!(line.contains("NOT idempotent"), "{line}");
    assert!(
        line.contains(
            r#"reshardCollection: "dbevents.events", key: { "consumer": "hashed", "_id": 1 }"#
        ),
        "{line}"
    );
}

#[tokio::test(start_paused = true)]
async fn setup_with_reshard_moves_the_collection_to_the_configured_key() {
    let c = FakeCluster::new().with_sharded(
        "dbevents.events",
        doc! { "consumer": "hashed", "created_at": 1 },
    );
    let mut p = plan().setup;
    p.reshard = true;
    setup::run(&c, &p, &Steps::default()).await.expect("setup");
    assert_eq!(
        c.writes(),
        vec![
            w(
                "router",
                doc! { "reshardCollection": "dbevents.events", "key": { "consumer": "hashed", "_id": 1 } }
            ),
            w("router", doc! { "ensureStorage": 30 * 86_400_i64 }),
        ]
    );
    let again = Steps::default();
    setup::run(&c, &p, &again).await.expect("second setup");
    assert!(
        again.lines()[0].contains("already sharded"),
        "{:?}",
        again.lines()
    );
}

#[tokio::test(start_paused = true)]
async fn component_roles_and_users_are_brought_to_what_is_wanted_without_touching_passwords() {
    // The service's role lacks a privilege (an older release) and the archiver's user was
    // given another role by hand.
    let c = healthy()
        .with_role(
            "auditlogService",
            vec![doc! { "resource": { "db": "dbevents", "collection": "events" }, "actions": ["insert"] }],
        )
        .with_router_user_role("auditlog-archiver", "readWriteAnyDatabase");
    let (r, lines) = bootstrap(&c, Duration::from_secs(60)).await;
    r.expect("bootstrap");
    let writes: Vec<_> = c
        .writes()
        .into_iter()
        .filter(|(_, cmd)| !cmd.contains_key("ensureStorage"))
        .collect();
    assert_eq!(
        writes,
        vec![
            w(
                "router",
                doc! { "updateRole": "auditlogService", "privileges": Component::Service.privileges("dbevents", "events"), "roles": [] }
            ),
            w(
                "router",
                doc! { "updateUser": "auditlog-archiver", "roles": [{ "role": "auditlogArchiver", "db": "admin" }] }
            ),
        ],
        "{lines:?}"
    );
    assert!(
        !writes.iter().any(|(_, cmd)| cmd.contains_key("pwd")),
        "a re-run must not rewrite passwords"
    );
}

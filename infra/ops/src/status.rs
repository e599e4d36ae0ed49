//! `status`: one report of what an operator checks first — the server, shards with their
//! members' states and primaries, how the events collection is spread over shards, the
//! balancer, indexes and TTL, and how far the archiver lags. Parts that cannot be read are
//! listed under `problems` instead of hiding the rest of the report.

use std::fmt::Write as _;

use auditlog_common::archive_state::{fields, WINDOWS_COLLECTION as ARCHIVE_WINDOWS};
use auditlog_common::schema::{self, TTL_INDEX_NAME};
use chrono::{DateTime, Utc};
use mongodb::bson::{doc, Bson, Document};
use serde::Serialize;

use crate::cluster::{first_batch, get_int, Cluster, CmdError, Target};
use crate::driver::DriverCluster;
use crate::error::OpsError;

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub server: String,
    pub namespace: String,
    /// Shards as mongos lists them; empty when the server is not a mongos.
    pub shards: Vec<ShardStatus>,
    /// The replica set the URI points at, when it is not a sharded cluster.
    pub replica_set: Option<ReplSetStatus>,
    pub balancer: Option<BalancerStatus>,
    pub shard_key: Option<String>,
    /// Documents and chunks of the events collection per shard.
    pub distribution: Vec<ShardShare>,
    pub documents: Option<u64>,
    pub indexes: Vec<IndexStatus>,
    /// `expireAfterSeconds` of the `created_at` index, when it is a TTL index.
    pub ttl_seconds: Option<i64>,
    pub ttl: String,
    pub archive: ArchiveStatus,
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ShardStatus {
    pub name: String,
    pub host: String,
    #[serde(flatten)]
    pub replica_set: ReplSetStatus,
}

#[derive(Debug, Default, Serialize)]
pub struct ReplSetStatus {
    pub name: Option<String>,
    pub primary: Option<String>,
    pub members: Vec<MemberStatus>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MemberStatus {
    pub name: String,
    pub state: String,
    pub healthy: bool,
}

#[derive(Debug, Serialize)]
pub struct BalancerStatus {
    pub mode: String,
    pub in_round: bool,
}

#[derive(Debug, Serialize)]
pub struct ShardShare {
    pub shard: String,
    pub documents: Option<i64>,
    pub chunks: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct IndexStatus {
    pub key: String,
    pub expire_after_seconds: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct ArchiveStatus {
    /// End of the latest archived window (RFC 3339), if any.
    pub latest_end: Option<String>,
    /// Seconds from that end to now.
    pub lag_seconds: Option<i64>,
    pub note: String,
}

pub async fn gather(c: &DriverCluster) -> Result<StatusReport, OpsError> {
    let store = c.store();
    let server = store.server_info().await?;
    let mut problems = Vec::new();
    let mut report = StatusReport {
        server: server.describe(),
        namespace: store.namespace(),
        shards: Vec::new(),
        replica_set: None,
        balancer: None,
        shard_key: None,
        distribution: Vec::new(),
        documents: None,
        indexes: Vec::new(),
        ttl_seconds: None,
        ttl: String::new(),
        archive: archive_status(c, &mut problems).await,
        problems: Vec::new(),
    };

    if server.is_mongos {
        sharded_parts(
            c,
            &store.db_name,
            &store.collection_name,
            &mut report,
            &mut problems,
        )
        .await;
    } else if server.replica_set.is_some() {
        report.replica_set = Some(replset_status(c, &[Target::Router]).await);
    }

    match store.events().estimated_document_count().await {
        Ok(n) => report.documents = Some(n),
        Err(e) => problems.push(format!("document count: {e}")),
    }
    match schema::existing_indexes(store).await {
        Ok(indexes) => {
            let ttl = indexes
                .iter()
                .find(|(k, _)| *k == schema::ttl_index_key())
                .map(|(_, e)| *e);
            report.ttl_seconds = ttl.flatten();
            report.ttl = match ttl {
                None => format!("no {TTL_INDEX_NAME} index: run `auditlog-ops db setup`"),
                Some(None) if !server.supports_ttl() => {
                    "server has no TTL indexes: events stay until `auditlog-archiver purge`".into()
                }
                Some(None) => "plain created_at index: events are kept forever".into(),
                Some(Some(s)) => format!("events expire {s} s ({}) after created_at", days(s)),
            };
            report.indexes = indexes
                .into_iter()
                .map(|(k, e)| IndexStatus {
                    key: k.to_string(),
                    expire_after_seconds: e,
                })
                .collect();
        }
        Err(e) => problems.push(format!("indexes: {e}")),
    }
    report.problems = problems;
    Ok(report)
}

fn days(secs: i64) -> String {
    if secs % 86_400 == 0 {
        format!("{} d", secs / 86_400)
    } else {
        format!("{:.2} d", secs as f64 / 86_400.0)
    }
}

/// Everything read through mongos, over the [`Cluster`] trait so it is tested without one.
async fn sharded_parts<C: Cluster>(
    c: &C,
    db_name: &str,
    collection: &str,
    report: &mut StatusReport,
    problems: &mut Vec<String>,
) {
    match c
        .run(&Target::Router, "admin", doc! { "listShards": 1 })
        .await
    {
        Ok(reply) => {
            for s in reply.get_array("shards").into_iter().flatten() {
                let Some(s) = s.as_document() else { continue };
                let name = s.get_str("_id").unwrap_or_default().to_owned();
                let host = s.get_str("host").unwrap_or_default().to_owned();
                let members: Vec<Target> = host
                    .split_once('/')
                    .map_or(host.as_str(), |(_, h)| h)
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(|h| Target::Member(h.to_owned()))
                    .collect();
                let replica_set = replset_status(c, &members).await;
                report.shards.push(ShardStatus {
                    name,
                    host,
                    replica_set,
                });
            }
        }
        Err(e) => problems.push(format!("listShards: {e}")),
    }

    match c
        .run(&Target::Router, "admin", doc! { "balancerStatus": 1 })
        .await
    {
        Ok(r) => {
            report.balancer = Some(BalancerStatus {
                mode: r.get_str("mode").unwrap_or("unknown").to_owned(),
                in_round: r.get_bool("inBalancerRound").unwrap_or(false),
            })
        }
        Err(e) => problems.push(format!("balancerStatus: {e}")),
    }

    let ns = report.namespace.clone();
    let entry = c
        .run(
            &Target::Router,
            "config",
            doc! { "find": "collections", "filter": { "_id": &ns }, "limit": 1 },
        )
        .await
        .map(|r| first_batch(&r).into_iter().next());
    let mut chunks: Vec<(String, i64)> = Vec::new();
    match entry {
        Ok(Some(e)) if !e.get_bool("unsplittable").unwrap_or(false) => {
            report.shard_key = e.get_document("key").ok().map(|k| k.to_string());
            if let Some(uuid) = e.get("uuid").cloned() {
                let pipeline = vec![
                    Bson::Document(doc! { "$match": { "uuid": uuid } }),
                    Bson::Document(doc! { "$group": { "_id": "$shard", "n": { "$sum": 1 } } }),
                ];
                match c
                    .run(
                        &Target::Router,
                        "config",
                        doc! { "aggregate": "chunks", "pipeline": pipeline, "cursor": {} },
                    )
                    .await
                {
                    Ok(r) => {
                        chunks = first_batch(&r)
                            .iter()
                            .filter_map(|d| {
                                Some((d.get_str("_id").ok()?.to_owned(), get_int(d, "n")?))
                            })
                            .collect()
                    }
                    Err(e) => problems.push(format!("chunks: {e}")),
                }
            }
        }
        Ok(_) => problems.push(format!(
            "collection {ns} is not sharded: run `auditlog-ops db setup`"
        )),
        Err(e) => problems.push(format!("config.collections: {e}")),
    }

    let docs = per_shard_counts(c, db_name, collection).await;
    if let Err(e) = &docs {
        problems.push(format!("$collStats: {e}"));
    }
    let docs = docs.unwrap_or_default();
    let mut names: Vec<String> = report.shards.iter().map(|s| s.name.clone()).collect();
    for (s, _) in chunks.iter().chain(docs.iter()) {
        if !names.contains(s) {
            names.push(s.clone());
        }
    }
    report.distribution = names
        .into_iter()
        .map(|shard| ShardShare {
            documents: docs.iter().find(|(s, _)| *s == shard).map(|(_, n)| *n),
            chunks: chunks.iter().find(|(s, _)| *s == shard).map(|(_, n)| *n),
            shard,
        })
        .collect();
}

/// Documents per shard of the events collection (`$collStats` answers once per shard).
async fn per_shard_counts<C: Cluster>(
    c: &C,
    db_name: &str,
    collection: &str,
) -> Result<Vec<(String, i64)>, CmdError> {
    let reply = c
        .run(
            &Target::Router,
            db_name,
            doc! {
                "aggregate": collection,
                "pipeline": [{ "$collStats": { "count": {} } }],
                "cursor": {},
            },
        )
        .await?;
    Ok(first_batch(&reply)
        .iter()
        .filter_map(|d| Some((d.get_str("shard").ok()?.to_owned(), get_int(d, "count")?)))
        .collect())
}

/// `replSetGetStatus` from the first of `members` that answers.
async fn replset_status<C: Cluster>(c: &C, members: &[Target]) -> ReplSetStatus {
    let mut last: Option<CmdError> = None;
    for m in members {
        match c.run(m, "admin", doc! { "replSetGetStatus": 1 }).await {
            Ok(r) => {
                let members: Vec<MemberStatus> = r
                    .get_array("members")
                    .into_iter()
                    .flatten()
                    .filter_map(|m| {
                        let m = m.as_document()?;
                        Some(MemberStatus {
                            name: m.get_str("name").ok()?.to_owned(),
                            state: m.get_str("stateStr").unwrap_or("UNKNOWN").to_owned(),
                            healthy: get_int(m, "health") == Some(1),
                        })
                    })
                    .collect();
                return ReplSetStatus {
                    name: r.get_str("set").ok().map(str::to_owned),
                    primary: members
                        .iter()
                        .find(|m| m.state == "PRIMARY")
                        .map(|m| m.name.clone()),
                    members,
                    error: None,
                };
            }
            Err(e) => last = Some(e),
        }
    }
    ReplSetStatus {
        error: Some(last.map_or("no members".into(), |e| e.to_string())),
        ..ReplSetStatus::default()
    }
}

async fn archive_status(c: &DriverCluster, problems: &mut Vec<String>) -> ArchiveStatus {
    let none = |note: &str| ArchiveStatus {
        latest_end: None,
        lag_seconds: None,
        note: note.to_owned(),
    };
    let db = c.store().database();
    let names = match db
        .list_collection_names()
        .filter(doc! { "name": ARCHIVE_WINDOWS })
        .await
    {
        Ok(n) => n,
        Err(e) => {
            problems.push(format!("listCollections: {e}"));
            return none("unknown (cannot list collections)");
        }
    };
    if names.is_empty() {
        return none("no archive recorded");
    }
    let latest = db
        .collection::<Document>(ARCHIVE_WINDOWS)
        .find_one(doc! { fields::END: { "$exists": true } })
        .sort(doc! { fields::END: -1 })
        .await;
    match latest {
        Ok(Some(w)) => match w.get_datetime(fields::END) {
            Ok(end) => {
                let end: DateTime<Utc> =
                    DateTime::from_timestamp_millis(end.timestamp_millis()).unwrap_or_default();
                let lag = Utc::now().timestamp() - end.timestamp();
                ArchiveStatus {
                    latest_end: Some(end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    lag_seconds: Some(lag),
                    note: format!("archived up to {end}; lag {lag} s"),
                }
            }
            Err(_) => none("latest archive window has no `end` date"),
        },
        Ok(None) => none("no archive recorded"),
        Err(e) => {
            problems.push(format!("{ARCHIVE_WINDOWS}: {e}"));
            none("unknown")
        }
    }
}

/// The human-readable form.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "server:      {}", r.server);
    let _ = writeln!(out, "collection:  {}", r.namespace);
    if let Some(rs) = &r.replica_set {
        let _ = writeln!(out, "replica set: {}", rs.name.as_deref().unwrap_or("?"));
        render_members(&mut out, rs);
    }
    if !r.shards.is_empty() {
        let _ = writeln!(out, "shards:");
        for s in &r.shards {
            let _ = writeln!(out, "  {} ({})", s.name, s.host);
            render_members(&mut out, &s.replica_set);
        }
    } else if r.replica_set.is_none() {
        let _ = writeln!(out, "shards:      none (not a sharded cluster)");
    }
    if let Some(b) = &r.balancer {
        let _ = writeln!(
            out,
            "balancer:    mode {}{}",
            b.mode,
            if b.in_round { ", balancing now" } else { "" }
        );
    }
    if let Some(k) = &r.shard_key {
        let _ = writeln!(out, "shard key:   {k}");
    }
    if !r.distribution.is_empty() {
        let _ = writeln!(out, "distribution:");
        for d in &r.distribution {
            let opt = |v: Option<i64>| v.map_or("?".into(), |n| n.to_string());
            let _ = writeln!(
                out,
                "  {:<20} documents {:>12}  chunks {:>6}",
                d.shard,
                opt(d.documents),
                opt(d.chunks)
            );
        }
    }
    if let Some(n) = r.documents {
        let _ = writeln!(out, "documents:   {n} (estimated)");
    }
    let _ = writeln!(out, "indexes:");
    for i in &r.indexes {
        match i.expire_after_seconds {
            Some(s) => {
                let _ = writeln!(out, "  {} (TTL {s} s)", i.key);
            }
            None => {
                let _ = writeln!(out, "  {}", i.key);
            }
        }
    }
    let _ = writeln!(out, "ttl:         {}", r.ttl);
    let _ = writeln!(out, "archive:     {}", r.archive.note);
    if !r.problems.is_empty() {
        let _ = writeln!(out, "problems:");
        for p in &r.problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    out
}

fn render_members(out: &mut String, rs: &ReplSetStatus) {
    if let Some(e) = &rs.error {
        let _ = writeln!(out, "    members unknown: {e}");
    }
    for m in &rs.members {
        let _ = writeln!(
            out,
            "    {:<40} {}{}",
            m.name,
            m.state,
            if m.healthy { "" } else { " (unhealthy)" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditlog_common::schema::{Retention, StorageReport};
    use auditlog_common::store::ServerInfo;
    use mongodb::bson::Uuid;

    /// Replies by (target, command name); anything else is "unreachable".
    struct Scripted(Vec<(Target, &'static str, Document)>);

    impl Cluster for Scripted {
        async fn run(
            &self,
            target: &Target,
            _db: &str,
            command: Document,
        ) -> Result<Document, CmdError> {
            let name = command.keys().next().cloned().unwrap_or_default();
            self.0
                .iter()
                .find(|(t, n, _)| t == target && *n == name)
                .map(|(_, _, r)| r.clone())
                .ok_or_else(|| CmdError::Unreachable(format!("{target}: connection refused")))
        }

        async fn ensure_storage(
            &self,
            _: &ServerInfo,
            _: Retention,
        ) -> Result<StorageReport, CmdError> {
            unreachable!("status does not set anything up")
        }
    }

    fn member(name: &str, state: &str, health: f64) -> Document {
        doc! { "name": name, "stateStr": state, "health": health }
    }

    fn empty_report() -> StatusReport {
        StatusReport {
            server: "mongos".into(),
            namespace: "dbevents.events".into(),
            shards: vec![],
            replica_set: None,
            balancer: None,
            shard_key: None,
            distribution: vec![],
            documents: Some(5),
            indexes: vec![],
            ttl_seconds: None,
            ttl: "events expire 2592000 s (30 d) after created_at".into(),
            archive: ArchiveStatus {
                latest_end: None,
                lag_seconds: None,
                note: "no archive recorded".into(),
            },
            problems: vec![],
        }
    }

    #[tokio::test]
    async fn shards_members_primaries_balancer_and_distribution_are_reported() {
        let uuid = Uuid::new();
        let router = Target::Router;
        let m = |h: &str| Target::Member(h.into());
        let c = Scripted(vec![
            (
                router.clone(),
                "listShards",
                doc! { "shards": [
                    { "_id": "shard0", "host": "shard0/a0:27017,a1:27017,a2:27017" },
                    { "_id": "shard1", "host": "shard1/b0:27017,b1:27017" },
                ] },
            ),
            (
                m("a0:27017"),
                "replSetGetStatus",
                doc! { "set": "shard0", "members": [
                    member("a0:27017", "PRIMARY", 1.0),
                    member("a1:27017", "SECONDARY", 1.0),
                    member("a2:27017", "(not reachable/healthy)", 0.0),
                ] },
            ),
            // b0 is down: the status comes from b1.
            (
                m("b1:27017"),
                "replSetGetStatus",
                doc! { "set": "shard1", "members": [
                    member("b0:27017", "(not reachable/healthy)", 0.0),
                    member("b1:27017", "PRIMARY", 1.0),
                ] },
            ),
            (
                router.clone(),
                "balancerStatus",
                doc! { "mode": "full", "inBalancerRound": false },
            ),
            (
                router.clone(),
                "find",
                doc! { "cursor": { "firstBatch": [
                    { "_id": "dbevents.events", "key": { "consumer": "hashed", "created_at": 1 }, "uuid": uuid },
                ] } },
            ),
            (
                router.clone(),
                "aggregate",
                // Both aggregations answer from this script: chunks carry `_id`/`n`,
                // $collStats rows carry `shard`/`count`.
                doc! { "cursor": { "firstBatch": [
                    { "_id": "shard0", "n": 3 },
                    { "_id": "shard1", "n": 2 },
                    { "shard": "shard0", "count": 3_i64 },
                    { "shard": "shard1", "count": 2_i64 },
                ] } },
            ),
        ]);
        let mut report = empty_report();
        let mut problems = vec![];
        sharded_parts(&c, "dbevents", "events", &mut report, &mut problems).await;
        assert!(problems.is_empty(), "{problems:?}");

        assert_eq!(report.shards.len(), 2);
        let s0 = &report.shards[0].replica_set;
        assert_eq!(s0.primary.as_deref(), Some("a0:27017"));
        assert!(!s0.members[2].healthy);
        let s1 = &report.shards[1].replica_set;
        assert_eq!(s1.primary.as_deref(), Some("b1:27017"));
        assert_eq!(
            report.shard_key.as_deref(),
            Some("{ \"consumer\": \"hashed\", \"created_at\": 1 }")
        );
        let dist: Vec<(String, Option<i64>, Option<i64>)> = report
            .distribution
            .iter()
            .map(|d| (d.shard.clone(), d.documents, d.chunks))
            .collect();
        assert_eq!(
            dist,
            vec![
                ("shard0".into(), Some(3), Some(3)),
                ("shard1".into(), Some(2), Some(2)),
            ]
        );

        let text = render(&report);
        assert!(
            text.contains("  shard1 (shard1/b0:27017,b1:27017)\n"),
            "{text}"
        );
        assert!(
            text.contains("    a2:27017                                 (not reachable/healthy) (unhealthy)\n"),
            "{text}"
        );
        assert!(text.contains("balancer:    mode full\n"), "{text}");
        assert!(
            text.contains("  shard0               documents            3  chunks      3\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_shard_with_no_member_answering_is_reported_not_fatal() {
        let c = Scripted(vec![(
            Target::Router,
            "listShards",
            doc! { "shards": [{ "_id": "shard0", "host": "shard0/a0:27017" }] },
        )]);
        let mut report = empty_report();
        let mut problems = vec![];
        sharded_parts(&c, "dbevents", "events", &mut report, &mut problems).await;
        let s0 = &report.shards[0].replica_set;
        assert!(s0.members.is_empty());
        assert!(s0.error.as_deref().is_some_and(|e| e.contains("a0:27017")));
        assert!(
            problems.iter().any(|p| p.starts_with("balancerStatus")),
            "{problems:?}"
        );
        assert!(render(&report).contains("members unknown: unreachable: a0:27017"));
    }
}

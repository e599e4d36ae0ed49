//! `cluster bootstrap`: a planner over observed state that brings a sharded cluster up and is
//! safe to re-run at any time (a healthy cluster gets no write at all).
//!
//! Order, each step retried with backoff until the deadline:
//! 1. every replica set (config servers first, `configsvr: true`, then each shard): wait until
//!    every member answers, `replSetInitiate` with **all** members on the first member when no
//!    member has a configuration; when some member has one, ask the primary (whichever member
//!    it is) for the configuration and add each missing member with `replSetReconfig`, one at
//!    a time (MongoDB accepts one new voting member per reconfiguration);
//! 2. mongos answers and is a mongos;
//! 3. the admin user (role `root`) through mongos — stored on the config servers — and on each
//!    shard's primary for direct maintenance, each only if missing; then one custom role and
//!    one user per component (service, archiver) through mongos ([`crate::roles`]), so only
//!    this Job ever uses root;
//! 4. `addShard` with the full member list for every shard mongos does not list;
//! 5. `db setup` ([`crate::setup`]).
//!
//! Authentication is the cluster's keyfile: the driver implementation logs in as `__system`,
//! which exists on every member from its first start, so no localhost exception is needed.

use auditlog_common::error::codes;
use mongodb::bson::{doc, Bson, Document};

use crate::cluster::{get_int, Cluster, CmdError, Target};
use crate::error::OpsError;
use crate::retry::{Deadline, StepError};
use crate::roles::{self, AppUser};
use crate::setup::{self, SetupPlan};
use crate::steps::Steps;
use crate::topology::{same_host, ReplSetSpec};

/// Everything bootstrap is asked to reach.
#[derive(Debug, Clone)]
pub struct BootstrapPlan {
    pub config_replset: ReplSetSpec,
    pub shard_replsets: Vec<ReplSetSpec>,
    /// Username and password of the admin user to create, if any.
    pub admin: Option<(String, String)>,
    /// The service's and the archiver's own users (least privilege), if given.
    pub app_users: Vec<AppUser>,
    pub setup: SetupPlan,
}

/// Runs the whole bootstrap; the returned [`Steps`] say what was done and what was already so.
pub async fn run<C: Cluster>(
    c: &C,
    plan: &BootstrapPlan,
    deadline: Deadline,
    steps: &Steps,
) -> Result<(), OpsError> {
    let sets = std::iter::once((&plan.config_replset, true))
        .chain(plan.shard_replsets.iter().map(|rs| (rs, false)));
    for (rs, configsvr) in sets {
        let step = format!("replica set {}", rs.name);
        deadline
            .retry(&step, || ensure_replset(c, rs, configsvr, steps))
            .await?;
    }

    deadline.retry("mongos", || wait_for_mongos(c)).await?;

    match &plan.admin {
        Some((user, pwd)) => {
            deadline
                .retry("admin user", || {
                    ensure_admin_user(c, plan, user, pwd, steps)
                })
                .await?
        }
        None => steps.push("no admin username given: no user created"),
    }

    if plan.app_users.is_empty() {
        steps.push("no component users given: the service and the archiver use the credentials in their own MONGODB_URI");
    } else {
        let (db, coll) = (&plan.setup.db_name, &plan.setup.collection);
        deadline
            .retry("component users", || {
                roles::ensure(c, &plan.app_users, db, coll, steps)
            })
            .await?;
    }

    deadline
        .retry("add shards", || add_shards(c, plan, steps))
        .await?;

    deadline
        .retry("db setup", || setup::run(c, &plan.setup, steps))
        .await
}

/// What one member said to `hello`.
struct Observed<'a> {
    host: &'a str,
    reply: Result<Document, CmdError>,
}

async fn observe<'a, C: Cluster>(c: &C, rs: &'a ReplSetSpec) -> Vec<Observed<'a>> {
    // All at once: a member that does not answer costs one connect timeout, not one each.
    let replies = futures::future::join_all(rs.members.iter().map(|host| {
        let target = Target::Member(host.clone());
        async move { c.run(&target, "admin", doc! { "hello": 1 }).await }
    }))
    .await;
    rs.members
        .iter()
        .zip(replies)
        .map(|(host, reply)| Observed { host, reply })
        .collect()
}

/// Fails for answers that waiting cannot change; returns the members that do not answer.
fn check_observed(rs: &ReplSetSpec, seen: &[Observed<'_>]) -> Result<Vec<String>, StepError> {
    let mut down = Vec::new();
    for o in seen {
        match &o.reply {
            Ok(hello) => {
                if let Ok(set) = hello.get_str("setName") {
                    if set != rs.name {
                        return Err(StepError::Fatal(OpsError::Config(format!(
                            "member {} belongs to replica set {set}, not {}",
                            o.host, rs.name
                        ))));
                    }
                }
            }
            Err(e) if !e.is_retriable() => {
                return Err(StepError::from_cmd(
                    &format!("replica set {}", rs.name),
                    &format!("hello to {}", o.host),
                    e.clone(),
                ))
            }
            Err(e) => down.push(format!("{} ({e})", o.host)),
        }
    }
    Ok(down)
}

/// The primary, as the members see it: the one that says it is writable, else the one the
/// others name. None while an election is running.
fn primary_of(seen: &[Observed<'_>]) -> Option<String> {
    let replies = || {
        seen.iter()
            .filter_map(|o| o.reply.as_ref().ok().map(|r| (o.host, r)))
    };
    replies()
        .find(|(_, r)| r.get_bool("isWritablePrimary").unwrap_or(false))
        .map(|(h, _)| h.to_owned())
        .or_else(|| replies().find_map(|(_, r)| r.get_str("primary").ok().map(str::to_owned)))
}

async fn ensure_replset<C: Cluster>(
    c: &C,
    rs: &ReplSetSpec,
    configsvr: bool,
    steps: &Steps,
) -> Result<(), StepError> {
    let step = format!("replica set {}", rs.name);
    loop {
        let seen = observe(c, rs).await;
        let down = check_observed(rs, &seen)?;
        let initiated = seen
            .iter()
            .any(|o| o.reply.as_ref().is_ok_and(|r| r.get_str("setName").is_ok()));

        if !initiated {
            if !down.is_empty() {
                return Err(StepError::Wait(format!(
                    "replica set {} not initiated yet and these members do not answer: {}",
                    rs.name,
                    down.join(", ")
                )));
            }
            initiate(c, rs, configsvr, &step, steps).await?;
            continue;
        }

        let Some(primary) = primary_of(&seen) else {
            return Err(StepError::Wait(format!(
                "replica set {} has no primary yet",
                rs.name
            )));
        };
        let reply = c
            .run(
                &Target::Member(primary.clone()),
                "admin",
                doc! { "replSetGetConfig": 1 },
            )
            .await
            .map_err(|e| {
                StepError::from_cmd(&step, &format!("replSetGetConfig on {primary}"), e)
            })?;
        let config = reply
            .get_document("config")
            .map_err(|_| StepError::Wait(format!("replSetGetConfig on {primary}: no `config`")))?
            .clone();
        let in_config = config_hosts(&config);
        let missing: Vec<&String> = rs
            .members
            .iter()
            .filter(|m| !in_config.iter().any(|h| same_host(h, m)))
            .collect();
        let Some(next) = missing.first() else {
            let extra: Vec<&String> = in_config
                .iter()
                .filter(|h| !rs.members.iter().any(|m| same_host(h, m)))
                .collect();
            if !extra.is_empty() {
                // Removing members is a decision bootstrap does not take on its own.
                tracing::warn!(replica_set = %rs.name, ?extra, "members in the configuration that were not given; left in place");
            }
            steps.push(format!(
                "replica set {}: all {} members in the configuration, primary {primary}",
                rs.name,
                rs.members.len()
            ));
            return Ok(());
        };
        if down.iter().any(|d| d.starts_with(&format!("{next} ("))) {
            return Err(StepError::Wait(format!(
                "member {next} of {} must answer before it is added",
                rs.name
            )));
        }
        let new_config = with_member(&config, next);
        c.run(
            &Target::Member(primary.clone()),
            "admin",
            doc! { "replSetReconfig": new_config },
        )
        .await
        .map_err(|e| StepError::from_cmd(&step, &format!("replSetReconfig adding {next}"), e))?;
        steps.push(format!("replica set {}: added member {next}", rs.name));
    }
}

async fn initiate<C: Cluster>(
    c: &C,
    rs: &ReplSetSpec,
    configsvr: bool,
    step: &str,
    steps: &Steps,
) -> Result<(), StepError> {
    let members: Vec<Bson> = rs
        .members
        .iter()
        .enumerate()
        .map(|(i, h)| Bson::Document(doc! { "_id": i as i32, "host": h }))
        .collect();
    let mut config = doc! { "_id": &rs.name };
    if configsvr {
        config.insert("configsvr", true);
    }
    config.insert("members", members);
    // Every member answered, so any can take the command; the first given is as good as any.
    let via = &rs.members[0];
    match c
        .run(
            &Target::Member(via.clone()),
            "admin",
            doc! { "replSetInitiate": config },
        )
        .await
    {
        Ok(_) => {
            steps.push(format!(
                "replica set {}: initiated with members {}{}",
                rs.name,
                rs.members.join(", "),
                if configsvr { " (config servers)" } else { "" }
            ));
            Ok(())
        }
        // Someone (an earlier run whose reply was lost) got there first: observe again.
        Err(e) if e.code() == Some(codes::ALREADY_INITIALIZED) => Ok(()),
        Err(e) => Err(StepError::from_cmd(
            step,
            &format!("replSetInitiate via {via}"),
            e,
        )),
    }
}

fn config_hosts(config: &Document) -> Vec<String> {
    config
        .get_array("members")
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m.as_document()?.get_str("host").ok().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The configuration with `host` appended and the version raised; `term` is the server's to set.
fn with_member(config: &Document, host: &str) -> Document {
    let mut next = config.clone();
    next.remove("term");
    let version = get_int(config, "version").unwrap_or(0);
    next.insert("version", Bson::Int32((version + 1) as i32));
    let mut members = config.get_array("members").cloned().unwrap_or_default();
    let next_id = members
        .iter()
        .filter_map(|m| m.as_document().and_then(|d| get_int(d, "_id")))
        .max()
        .map_or(0, |id| id + 1);
    members.push(Bson::Document(doc! { "_id": next_id as i32, "host": host }));
    next.insert("members", members);
    next
}

async fn wait_for_mongos<C: Cluster>(c: &C) -> Result<(), StepError> {
    let hello = c
        .run(&Target::Router, "admin", doc! { "hello": 1 })
        .await
        .map_err(|e| StepError::from_cmd("mongos", "hello", e))?;
    if hello.get_str("msg").ok() != Some("isdbgrid") {
        return Err(StepError::Fatal(OpsError::Config(
            "MONGODB_URI does not point at a mongos router (hello has no msg: isdbgrid)".into(),
        )));
    }
    Ok(())
}

async fn ensure_admin_user<C: Cluster>(
    c: &C,
    plan: &BootstrapPlan,
    user: &str,
    pwd: &str,
    steps: &Steps,
) -> Result<(), StepError> {
    ensure_user_on(
        c,
        &Target::Router,
        "mongos (config servers)",
        user,
        pwd,
        steps,
    )
    .await?;
    for rs in &plan.shard_replsets {
        let seen = observe(c, rs).await;
        check_observed(rs, &seen)?;
        let Some(primary) = primary_of(&seen) else {
            return Err(StepError::Wait(format!(
                "replica set {} has no primary to create the admin user on",
                rs.name
            )));
        };
        let place = format!("shard replica set {}", rs.name);
        ensure_user_on(c, &Target::Member(primary), &place, user, pwd, steps).await?;
    }
    Ok(())
}

async fn ensure_user_on<C: Cluster>(
    c: &C,
    target: &Target,
    place: &str,
    user: &str,
    pwd: &str,
    steps: &Steps,
) -> Result<(), StepError> {
    let info = c
        .run(
            target,
            "admin",
            doc! { "usersInfo": { "user": user, "db": "admin" } },
        )
        .await
        .map_err(|e| StepError::from_cmd("admin user", &format!("usersInfo on {place}"), e))?;
    let exists = info.get_array("users").is_ok_and(|u| !u.is_empty());
    if exists {
        steps.push(format!("admin user {user} already exists on {place}"));
        return Ok(());
    }
    let created = c
        .run(
            target,
            "admin",
            doc! {
                "createUser": user,
                "pwd": pwd,
                "roles": [{ "role": "root", "db": "admin" }],
            },
        )
        .await;
    match created {
        Ok(_) => steps.push(format!("created admin user {user} on {place}")),
        Err(e) if e.code() == Some(codes::USER_ALREADY_EXISTS) => {
            steps.push(format!("admin user {user} already exists on {place}"))
        }
        Err(e) => {
            return Err(StepError::from_cmd(
                "admin user",
                &format!("createUser on {place}"),
                e,
            ))
        }
    }
    Ok(())
}

async fn add_shards<C: Cluster>(
    c: &C,
    plan: &BootstrapPlan,
    steps: &Steps,
) -> Result<(), StepError> {
    let reply = c
        .run(&Target::Router, "admin", doc! { "listShards": 1 })
        .await
        .map_err(|e| StepError::from_cmd("add shards", "listShards", e))?;
    let listed: Vec<(String, String)> = reply
        .get_array("shards")
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    let s = s.as_document()?;
                    Some((
                        s.get_str("_id").ok()?.to_owned(),
                        s.get_str("host").unwrap_or_default().to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    for rs in &plan.shard_replsets {
        let known = listed
            .iter()
            .any(|(id, host)| *id == rs.name || host.split('/').next() == Some(rs.name.as_str()));
        if known {
            steps.push(format!("shard {} already in the cluster", rs.name));
            continue;
        }
        c.run(
            &Target::Router,
            "admin",
            doc! { "addShard": rs.connection_string(), "name": &rs.name },
        )
        .await
        .map_err(|e| StepError::from_cmd("add shards", &format!("addShard {}", rs.name), e))?;
        steps.push(format!("added shard {}", rs.connection_string()));
    }
    Ok(())
}

#[cfg(test)]
#[path = "bootstrap_tests.rs"]
mod tests;

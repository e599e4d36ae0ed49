//! A scripted stand-in for a sharded cluster, for the planners' tests: members, replica-set
//! configurations, mongos's shard list and users, answering commands as MongoDB does (the
//! error codes included) and recording every command sent, so tests can assert exactly what
//! bootstrap and setup did. Time is tokio's, so tests pause it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use auditlog_common::schema::{Retention, StorageReport};
use auditlog_common::store::ServerInfo;
use mongodb::bson::{doc, Bson, Document};
use tokio::time::Instant;

use crate::cluster::{get_int, Cluster, CmdError, Target};

/// One command as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub target: String,
    pub db: String,
    pub command: Document,
}

#[derive(Debug)]
struct Set {
    config: Document,
    primary: Option<String>,
    users: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    /// Members not listed are up; `None` never comes up.
    up_at: HashMap<String, Option<Instant>>,
    auth_fails: Vec<String>,
    sets: Vec<Set>,
    not_mongos: bool,
    shards: Vec<(String, String)>,
    router_users: Vec<String>,
    /// Roles of mongos users, as `createUser`/`updateUser` set them.
    router_user_roles: HashMap<String, Bson>,
    /// Custom roles on mongos: name → privileges.
    roles: HashMap<String, Bson>,
    sharded: Option<(String, Document)>,
    fail_once: Vec<String>,
    log: Vec<Sent>,
}

#[derive(Debug, Default)]
pub struct FakeCluster {
    state: Mutex<State>,
}

/// The key under which the router's up/down state is kept (members are keyed by host).
const ROUTER: &str = "router";

/// Commands that only read; everything else counts as a write.
const READS: &[&str] = &[
    "hello",
    "buildInfo",
    "replSetGetConfig",
    "usersInfo",
    "rolesInfo",
    "listShards",
    "find",
];

fn err(code: i32, name: &str, message: &str) -> CmdError {
    CmdError::Server {
        code,
        code_name: name.into(),
        message: message.into(),
    }
}

fn hosts_of(config: &Document) -> Vec<String> {
    config
        .get_array("members")
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_document()?.get_str("host").ok().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl FakeCluster {
    pub fn new() -> Self {
        Self::default()
    }

    fn with(self, f: impl FnOnce(&mut State)) -> Self {
        f(&mut self.state.lock().unwrap());
        self
    }

    pub fn member_down(self, host: &str) -> Self {
        self.with(|s| {
            s.up_at.insert(host.into(), None);
        })
    }

    pub fn member_up_after(self, host: &str, after: Duration) -> Self {
        self.with(|s| {
            s.up_at.insert(host.into(), Some(Instant::now() + after));
        })
    }

    pub fn auth_fails(self, host: &str) -> Self {
        self.with(|s| s.auth_fails.push(host.into()))
    }

    pub fn not_mongos(self) -> Self {
        self.with(|s| s.not_mongos = true)
    }

    /// An initiated replica set with these members in its configuration (version 1).
    pub fn with_set(self, name: &str, configsvr: bool, hosts: &[&str], primary: &str) -> Self {
        let members: Vec<Bson> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| Bson::Document(doc! { "_id": i as i32, "host": *h }))
            .collect();
        let mut config = doc! { "_id": name, "version": 1, "term": 3_i64 };
        if configsvr {
            config.insert("configsvr", true);
        }
        config.insert("members", members);
        self.with(|s| {
            s.sets.push(Set {
                config,
                primary: Some(primary.into()),
                users: Vec::new(),
            })
        })
    }

    pub fn with_set_user(self, set: &str, user: &str) -> Self {
        self.with(|s| {
            if let Some(x) = s
                .sets
                .iter_mut()
                .find(|x| x.config.get_str("_id") == Ok(set))
            {
                x.users.push(user.into());
            }
        })
    }

    pub fn with_shard(self, name: &str, conn: &str) -> Self {
        self.with(|s| s.shards.push((name.into(), conn.into())))
    }

    /// A custom role on mongos with these privileges.
    pub fn with_role(self, name: &str, privileges: Vec<Document>) -> Self {
        self.with(|s| {
            let p = Bson::Array(privileges.into_iter().map(Bson::Document).collect());
            s.roles.insert(name.into(), p);
        })
    }

    /// A mongos user holding exactly this custom role.
    pub fn with_router_user_role(self, user: &str, role: &str) -> Self {
        self.with(|s| {
            s.router_users.push(user.into());
            let roles = Bson::Array(vec![Bson::Document(doc! { "role": role, "db": "admin" })]);
            s.router_user_roles.insert(user.into(), roles);
        })
    }

    pub fn with_router_user(self, user: &str) -> Self {
        self.with(|s| s.router_users.push(user.into()))
    }

    pub fn with_sharded(self, ns: &str, key: Document) -> Self {
        self.with(|s| s.sharded = Some((ns.into(), key)))
    }

    /// The first `name` command fails as if the connection broke.
    /// mongos itself never answers.
    pub fn router_down(self) -> Self {
        self.member_down(ROUTER)
    }

    pub fn fail_once(self, name: &str) -> Self {
        self.with(|s| s.fail_once.push(name.into()))
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.state.lock().unwrap().log.clone()
    }

    /// Every command that changes something, in order, as (target, command).
    pub fn writes(&self) -> Vec<(String, Document)> {
        self.sent()
            .into_iter()
            .filter(|s| !READS.contains(&command_name(&s.command)))
            .map(|s| (s.target, s.command))
            .collect()
    }
}

fn command_name(c: &Document) -> &str {
    c.keys().next().map(String::as_str).unwrap_or("")
}

impl State {
    fn is_up(&self, host: &str) -> bool {
        match self.up_at.get(host) {
            None => true,
            Some(None) => false,
            Some(Some(t)) => Instant::now() >= *t,
        }
    }

    fn set_of(&self, host: &str) -> Option<usize> {
        self.sets
            .iter()
            .position(|s| hosts_of(&s.config).iter().any(|h| h == host))
    }

    fn member(&mut self, host: &str, cmd: &Document) -> Result<Document, CmdError> {
        if !self.is_up(host) {
            return Err(CmdError::Unreachable(format!("{host}: connection refused")));
        }
        if self.auth_fails.iter().any(|h| h == host) {
            return Err(CmdError::Auth("SCRAM failure: bad keyfile".into()));
        }
        let set = self.set_of(host);
        let is_primary = set.is_some_and(|i| self.sets[i].primary.as_deref() == Some(host));
        match command_name(cmd) {
            "hello" => Ok(match set {
                Some(i) => {
                    let s = &self.sets[i];
                    let mut d = doc! {
                        "setName": s.config.get_str("_id").unwrap_or_default(),
                        "isWritablePrimary": is_primary,
                        "ok": 1,
                    };
                    if let Some(p) = &s.primary {
                        d.insert("primary", p);
                    }
                    d
                }
                None => doc! { "isWritablePrimary": false, "isreplicaset": true, "ok": 1 },
            }),
            "replSetInitiate" => {
                if set.is_some() {
                    return Err(err(23, "AlreadyInitialized", "already initialized"));
                }
                let config = cmd.get_document("replSetInitiate").unwrap().clone();
                if let Some(h) = hosts_of(&config).iter().find(|h| !self.is_up(h)) {
                    return Err(err(
                        74,
                        "NodeNotFound",
                        &format!("quorum check failed: {h}"),
                    ));
                }
                let mut config = config;
                config.insert("version", 1);
                self.sets.push(Set {
                    config,
                    primary: Some(host.into()),
                    users: Vec::new(),
                });
                Ok(doc! { "ok": 1 })
            }
            "replSetGetConfig" => match set {
                Some(i) => Ok(doc! { "config": self.sets[i].config.clone(), "ok": 1 }),
                None => Err(err(94, "NotYetInitialized", "no replset config")),
            },
            "replSetReconfig" => {
                let i = set.ok_or_else(|| err(94, "NotYetInitialized", "no config"))?;
                if !is_primary {
                    return Err(err(10107, "NotWritablePrimary", "not primary"));
                }
                let new = cmd.get_document("replSetReconfig").unwrap().clone();
                let old = &self.sets[i].config;
                if get_int(&new, "version") != get_int(old, "version").map(|v| v + 1) {
                    return Err(err(
                        103,
                        "NewReplicaSetConfigurationIncompatible",
                        "version",
                    ));
                }
                let added = hosts_of(&new)
                    .iter()
                    .filter(|h| !hosts_of(old).contains(h))
                    .count();
                if added > 1 {
                    return Err(err(
                        103,
                        "NewReplicaSetConfigurationIncompatible",
                        "one at a time",
                    ));
                }
                self.sets[i].config = new;
                Ok(doc! { "ok": 1 })
            }
            "usersInfo" | "createUser" => {
                let i = set
                    .filter(|_| is_primary)
                    .ok_or_else(|| err(10107, "NotWritablePrimary", "not primary"))?;
                users(&mut self.sets[i].users, cmd)
            }
            other => panic!("fake member: unexpected command {other}"),
        }
    }

    fn router(&mut self, cmd: &Document) -> Result<Document, CmdError> {
        match command_name(cmd) {
            "hello" if self.not_mongos => Ok(doc! { "isWritablePrimary": true, "ok": 1 }),
            "hello" => Ok(doc! { "isWritablePrimary": true, "msg": "isdbgrid", "ok": 1 }),
            "buildInfo" => Ok(doc! { "version": "7.0.14", "ok": 1 }),
            "usersInfo" | "createUser" => {
                let mut reply = users(&mut self.router_users, cmd)?;
                if let Ok(u) = cmd.get_str("createUser") {
                    let roles = cmd.get("roles").cloned().unwrap_or(Bson::Array(vec![]));
                    self.router_user_roles.insert(u.to_owned(), roles);
                } else if let Ok(found) = reply.get_array_mut("users") {
                    for u in found.iter_mut().filter_map(Bson::as_document_mut) {
                        let name = u.get_str("user").unwrap_or_default().to_owned();
                        let roles = self.router_user_roles.get(&name).cloned();
                        u.insert("roles", roles.unwrap_or(Bson::Array(vec![])));
                    }
                }
                Ok(reply)
            }
            "updateUser" => {
                let u = cmd.get_str("updateUser").unwrap_or_default().to_owned();
                if !self.router_users.contains(&u) {
                    return Err(err(11, "UserNotFound", "no such user"));
                }
                let roles = cmd.get("roles").cloned().unwrap_or(Bson::Array(vec![]));
                self.router_user_roles.insert(u, roles);
                Ok(doc! { "ok": 1 })
            }
            "rolesInfo" => {
                let name = cmd
                    .get_document("rolesInfo")
                    .and_then(|d| d.get_str("role"))
                    .unwrap_or_default();
                let found: Vec<Bson> = self
                    .roles
                    .get(name)
                    .map(|p| {
                        Bson::Document(
                            doc! { "role": name, "db": "admin", "privileges": p.clone() },
                        )
                    })
                    .into_iter()
                    .collect();
                Ok(doc! { "roles": found, "ok": 1 })
            }
            "createRole" | "updateRole" => {
                let creating = cmd.contains_key("createRole");
                let name = cmd
                    .get_str(if creating { "createRole" } else { "updateRole" })
                    .unwrap_or_default()
                    .to_owned();
                if creating == self.roles.contains_key(&name) {
                    return Err(if creating {
                        err(51002, "Location51002", "Role already exists")
                    } else {
                        err(31, "RoleNotFound", "no such role")
                    });
                }
                let privileges = cmd
                    .get("privileges")
                    .cloned()
                    .unwrap_or(Bson::Array(vec![]));
                self.roles.insert(name, privileges);
                Ok(doc! { "ok": 1 })
            }
            "listShards" if self.not_mongos => {
                Err(err(59, "CommandNotFound", "no such command: 'listShards'"))
            }
            "listShards" => Ok(doc! {
                "shards": self.shards.iter().map(|(n, h)| Bson::Document(doc! { "_id": n, "host": h, "state": 1 })).collect::<Vec<_>>(),
                "ok": 1,
            }),
            "addShard" => {
                let conn = cmd.get_str("addShard").unwrap_or_default();
                let name = conn.split('/').next().unwrap_or_default();
                let ok = self
                    .sets
                    .iter()
                    .any(|s| s.config.get_str("_id") == Ok(name) && s.primary.is_some());
                if !ok {
                    return Err(err(96, "OperationFailed", "no primary for the shard"));
                }
                self.shards.push((name.into(), conn.into()));
                Ok(doc! { "shardAdded": name, "ok": 1 })
            }
            "find" => {
                let ns = cmd
                    .get_document("filter")
                    .and_then(|f| f.get_str("_id"))
                    .unwrap_or_default();
                let batch: Vec<Bson> = match &self.sharded {
                    Some((n, key)) if n == ns => {
                        vec![Bson::Document(doc! { "_id": n, "key": key.clone() })]
                    }
                    _ => vec![],
                };
                Ok(doc! { "cursor": { "firstBatch": batch, "id": 0_i64 }, "ok": 1 })
            }
            "enableSharding" => Ok(doc! { "ok": 1 }),
            "reshardCollection" => {
                let ns = cmd.get_str("reshardCollection").unwrap_or_default();
                match &self.sharded {
                    Some((n, _)) if n == ns => {
                        let key = cmd.get_document("key").unwrap().clone();
                        self.sharded = Some((ns.to_owned(), key));
                        Ok(doc! { "ok": 1 })
                    }
                    _ => Err(err(26, "NamespaceNotFound", "not sharded")),
                }
            }
            "shardCollection" => {
                let ns = cmd
                    .get_str("shardCollection")
                    .unwrap_or_default()
                    .to_owned();
                let key = cmd.get_document("key").unwrap().clone();
                self.sharded = Some((ns, key));
                Ok(doc! { "ok": 1 })
            }
            other => panic!("fake router: unexpected command {other}"),
        }
    }
}

fn users(list: &mut Vec<String>, cmd: &Document) -> Result<Document, CmdError> {
    if let Ok(u) = cmd.get_str("createUser") {
        if list.iter().any(|x| x == u) {
            return Err(err(51003, "Location51003", "User already exists"));
        }
        list.push(u.into());
        return Ok(doc! { "ok": 1 });
    }
    let user = cmd
        .get_document("usersInfo")
        .and_then(|d| d.get_str("user"))
        .unwrap_or_default();
    let found: Vec<Bson> = list
        .iter()
        .filter(|u| *u == user)
        .map(|u| Bson::Document(doc! { "user": u, "db": "admin" }))
        .collect();
    Ok(doc! { "users": found, "ok": 1 })
}

impl Cluster for FakeCluster {
    async fn run(
        &self,
        target: &Target,
        db: &str,
        command: Document,
    ) -> Result<Document, CmdError> {
        let mut s = self.state.lock().unwrap();
        s.log.push(Sent {
            target: target.to_string(),
            db: db.into(),
            command: command.clone(),
        });
        let name = command_name(&command).to_owned();
        if let Some(i) = s.fail_once.iter().position(|n| *n == name) {
            s.fail_once.remove(i);
            return Err(CmdError::Unreachable(format!("{name}: connection reset")));
        }
        match target {
            Target::Router if !s.is_up(ROUTER) => {
                Err(CmdError::Unreachable("mongos: connection refused".into()))
            }
            Target::Router => s.router(&command),
            Target::Member(h) => s.member(h, &command),
        }
    }

    async fn ensure_storage(
        &self,
        _server: &ServerInfo,
        retention: Retention,
    ) -> Result<StorageReport, CmdError> {
        let secs = match retention {
            Retention::Forever => 0,
            Retention::Seconds(s) => s,
        };
        self.state.lock().unwrap().log.push(Sent {
            target: "router".into(),
            db: "dbevents".into(),
            command: doc! { "ensureStorage": secs },
        });
        Ok(StorageReport {
            steps: vec!["indexes and TTL ready".into()],
            ttl: None,
        })
    }
}

//! Least privilege on the cluster: one custom role and one user per component, created through
//! mongos by `cluster bootstrap` (so they live on the config servers and hold for every shard).
//! Only the bootstrap Job uses root.
//!
//! - `auditlogService`: insert and find on the events collection, create and list its indexes
//!   (storage set-up at start), read the archive state and runs (for its archive metrics), and
//!   read-write its replicas' records (`service_replicas`, for `complete_until`). No
//!   `collMod`: the service never changes retention; the bootstrap Job raises it.
//! - `auditlogArchiver`: find on the events collection, list its indexes and `collMod` it (the
//!   TTL guard raises retention), and read-write its state collections. No `remove` on events:
//!   on real MongoDB events leave by TTL, and `auditlog-archiver purge` is for servers without
//!   TTL, which have no roles either.
//!
//! Both are re-applied idempotently: a role whose privileges differ is updated (`updateRole`), a
//! user whose roles differ gets `updateUser` with roles only; a user's password is set when it is
//! created and never rewritten by a re-run (rotate it with `updateUser` by hand, then the Secret).

use auditlog_common::archive_state::{LEASE_COLLECTION, RUNS_COLLECTION, WINDOWS_COLLECTION};
use auditlog_common::error::codes;
use auditlog_common::schema::REPLICAS_COLLECTION;
use mongodb::bson::{doc, Bson, Document};

use crate::cluster::{Cluster, Target};
use crate::error::OpsError;
use crate::retry::StepError;
use crate::steps::Steps;

const STEP: &str = "component users";

/// A component that connects to MongoDB with its own user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Service,
    Archiver,
}

impl Component {
    pub fn role_name(self) -> &'static str {
        match self {
            Component::Service => "auditlogService",
            Component::Archiver => "auditlogArchiver",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Component::Service => "service",
            Component::Archiver => "archiver",
        }
    }

    /// The role's privileges on `db` (events in `collection`, archive state beside it).
    pub fn privileges(self, db: &str, collection: &str) -> Vec<Document> {
        let on = |c: &str, actions: &[&str]| {
            doc! { "resource": { "db": db, "collection": c }, "actions": actions }
        };
        match self {
            Component::Service => vec![
                on(
                    collection,
                    &["find", "insert", "createIndex", "listIndexes"],
                ),
                on(WINDOWS_COLLECTION, &["find"]),
                on(RUNS_COLLECTION, &["find"]),
                on(REPLICAS_COLLECTION, &["find", "insert", "update", "remove"]),
            ],
            Component::Archiver => {
                let state = [
                    "find",
                    "insert",
                    "update",
                    "remove",
                    "createIndex",
                    "listIndexes",
                ];
                vec![
                    on(collection, &["find", "listIndexes", "collMod", "collStats"]),
                    on(WINDOWS_COLLECTION, &state),
                    on(LEASE_COLLECTION, &state),
                    on(RUNS_COLLECTION, &state),
                ]
            }
        }
    }
}

/// A component user bootstrap should make sure of.
#[derive(Debug, Clone)]
pub struct AppUser {
    pub component: Component,
    pub username: String,
    pub password: String,
}

/// The role, then the user, for each component; each only where missing or different.
pub async fn ensure<C: Cluster>(
    c: &C,
    users: &[AppUser],
    db: &str,
    collection: &str,
    steps: &Steps,
) -> Result<(), StepError> {
    for u in users {
        ensure_role(c, u.component, db, collection, steps).await?;
        ensure_user(c, u, steps).await?;
    }
    Ok(())
}

async fn ensure_role<C: Cluster>(
    c: &C,
    component: Component,
    db: &str,
    collection: &str,
    steps: &Steps,
) -> Result<(), StepError> {
    let role = component.role_name();
    let wanted = component.privileges(db, collection);
    let info = c
        .run(
            &Target::Router,
            "admin",
            doc! { "rolesInfo": { "role": role, "db": "admin" }, "showPrivileges": true },
        )
        .await
        .map_err(|e| {
            if e.code() == Some(codes::COMMAND_NOT_FOUND) {
                // FerretDB and other servers without role management.
                StepError::Fatal(OpsError::Unsupported(format!(
                    "the server has no role management (rolesInfo: {e}); component users need \
                     real MongoDB"
                )))
            } else {
                StepError::from_cmd(STEP, "rolesInfo", e)
            }
        })?;
    let current = info
        .get_array("roles")
        .ok()
        .and_then(|r| r.first())
        .and_then(Bson::as_document)
        .cloned();
    let privileges: Vec<Bson> = wanted.iter().cloned().map(Bson::Document).collect();
    let (command, done) = match current {
        Some(r) if same_privileges(&r, &wanted) => {
            steps.push(format!("role {role} already as wanted"));
            return Ok(());
        }
        Some(_) => ("updateRole", "updated"),
        None => ("createRole", "created"),
    };
    c.run(
        &Target::Router,
        "admin",
        doc! { command: role, "privileges": privileges, "roles": [] },
    )
    .await
    .map_err(|e| StepError::from_cmd(STEP, command, e))?;
    steps.push(format!("{done} role {role}"));
    Ok(())
}

/// Compares a `rolesInfo` entry's privileges with the wanted ones, ignoring order.
fn same_privileges(role: &Document, wanted: &[Document]) -> bool {
    let normal = |p: &Document| -> Option<(String, String, Vec<String>)> {
        let r = p.get_document("resource").ok()?;
        let mut actions: Vec<String> = p
            .get_array("actions")
            .ok()?
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        actions.sort();
        Some((
            r.get_str("db").ok()?.to_owned(),
            r.get_str("collection").ok()?.to_owned(),
            actions,
        ))
    };
    let Ok(have) = role.get_array("privileges") else {
        return false;
    };
    let mut have: Vec<_> = have
        .iter()
        .filter_map(Bson::as_document)
        .filter_map(normal)
        .collect();
    let mut want: Vec<_> = wanted.iter().filter_map(normal).collect();
    have.sort();
    want.sort();
    have == want
}

async fn ensure_user<C: Cluster>(c: &C, u: &AppUser, steps: &Steps) -> Result<(), StepError> {
    let role = u.component.role_name();
    let roles = vec![Bson::Document(doc! { "role": role, "db": "admin" })];
    let info = c
        .run(
            &Target::Router,
            "admin",
            doc! { "usersInfo": { "user": &u.username, "db": "admin" } },
        )
        .await
        .map_err(|e| StepError::from_cmd(STEP, "usersInfo", e))?;
    let existing = info
        .get_array("users")
        .ok()
        .and_then(|a| a.first())
        .and_then(Bson::as_document)
        .cloned();
    let what = format!("{} user {}", u.component.label(), u.username);
    match existing {
        Some(user) if has_only_role(&user, role) => {
            steps.push(format!("{what} already exists with role {role}"));
        }
        Some(_) => {
            c.run(
                &Target::Router,
                "admin",
                doc! { "updateUser": &u.username, "roles": roles },
            )
            .await
            .map_err(|e| StepError::from_cmd(STEP, "updateUser", e))?;
            steps.push(format!("{what}: roles set to {role}"));
        }
        None => {
            let created = c
                .run(
                    &Target::Router,
                    "admin",
                    doc! { "createUser": &u.username, "pwd": &u.password, "roles": roles },
                )
                .await;
            match created {
                Ok(_) => steps.push(format!("created {what} with role {role}")),
                // Created by a concurrent attempt between usersInfo and createUser.
                Err(e) if e.code() == Some(codes::USER_ALREADY_EXISTS) => {
                    return Err(StepError::Wait(format!("{what} appeared meanwhile")))
                }
                Err(e) => return Err(StepError::from_cmd(STEP, "createUser", e)),
            }
        }
    }
    Ok(())
}

fn has_only_role(user: &Document, role: &str) -> bool {
    let Ok(roles) = user.get_array("roles") else {
        return false;
    };
    roles.len() == 1
        && roles[0]
            .as_document()
            .is_some_and(|r| r.get_str("role") == Ok(role) && r.get_str("db") == Ok("admin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_compare_regardless_of_order() {
        let wanted = Component::Archiver.privileges("dbevents", "events");
        let mut shuffled: Vec<Bson> = wanted.iter().rev().cloned().map(Bson::Document).collect();
        if let Some(Bson::Document(d)) = shuffled.first_mut() {
            let mut actions: Vec<Bson> = d.get_array("actions").unwrap().clone();
            actions.reverse();
            d.insert("actions", actions);
        }
        assert!(same_privileges(&doc! { "privileges": shuffled }, &wanted));
        let service = Component::Service.privileges("dbevents", "events");
        let as_bson: Vec<Bson> = service.into_iter().map(Bson::Document).collect();
        assert!(!same_privileges(&doc! { "privileges": as_bson }, &wanted));
    }

    #[test]
    fn the_service_cannot_change_retention_or_delete() {
        // Its own replica records it rewrites and removes; nothing else.
        let privileges = Component::Service.privileges("dbevents", "events");
        let (own, rest): (Vec<_>, Vec<_>) = privileges.iter().partition(|p| {
            p.get_document("resource").unwrap().get_str("collection") == Ok(REPLICAS_COLLECTION)
        });
        assert_eq!(own.len(), 1, "one privilege on {REPLICAS_COLLECTION}");
        let all: Vec<String> = rest
            .iter()
            .flat_map(|p| p.get_array("actions").unwrap().clone())
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        for forbidden in ["collMod", "remove", "update", "dropCollection", "dropIndex"] {
            assert!(
                !all.iter().any(|a| a == forbidden),
                "service may {forbidden}"
            );
        }
    }
}

//! `retention set`: the one command that may *lower* retention (set-up only ever raises it).
//! It changes the TTL of the `created_at` index in place with `collMod` (the shared
//! [`auditlog_common::schema::set_ttl`]), never by dropping the index — and first refuses a
//! value that would let MongoDB's TTL monitor delete an event the archiver has not exported:
//! it looks up the oldest event no archived window covers
//! ([`auditlog_common::archive_state::oldest_unarchived_event`]) and names it. `--force`
//! overrides, with a warning.

use std::time::Duration;

use auditlog_common::archive_state::oldest_unarchived_event;
use auditlog_common::schema::{self, fields, Retention};
use auditlog_common::store::Store;
use chrono::{DateTime, Utc};
use mongodb::bson::Document;

use crate::error::OpsError;

/// What `retention set` was asked.
#[derive(Debug, Clone, Copy)]
pub struct RetentionChange {
    pub days: u32,
    /// An unarchived event that would expire within this margin from now refuses the change.
    pub margin: Duration,
    /// Change it anyway.
    pub force: bool,
}

/// Returns the line to print.
pub async fn set(store: &Store, change: RetentionChange) -> Result<String, OpsError> {
    let RetentionChange {
        days,
        margin,
        force,
    } = change;
    let Retention::Seconds(secs) = Retention::from_days(days) else {
        return Err(OpsError::Config(
            "retention must be at least 1 day: MongoDB cannot turn a TTL index back into a plain one".into(),
        ));
    };
    // The archive is checked first: the answer is the same whatever the server, and an
    // operator learns about unarchived events even where TTL is unsupported.
    if let Some(event) = oldest_unarchived_event(store).await? {
        if let Some(problem) = expires_too_soon(&event, secs, margin, Utc::now()) {
            if !force {
                return Err(OpsError::Config(format!(
                    "{problem}; archive it first (`auditlog-archiver once`), choose more days, \
                     or pass --force to expire unarchived events"
                )));
            }
            tracing::warn!(%problem, "--force: lowering retention although unarchived events will expire");
        }
    }
    let server = store.server_info().await?;
    if !server.supports_ttl() {
        return Err(OpsError::Unsupported(format!(
            "{} has no TTL indexes; events leave MongoDB only through `auditlog-archiver purge`",
            server.describe()
        )));
    }
    match schema::current_ttl(store).await? {
        None => Err(OpsError::Config(format!(
            "{}.{} has no created_at index yet: run `auditlog-ops db setup` first",
            store.db_name, store.collection_name
        ))),
        Some(Some(current)) if current == secs => Ok(format!(
            "retention already {days} d ({secs} s): nothing changed"
        )),
        Some(current) => {
            schema::set_ttl(store, secs).await?;
            let before = current.map_or("no expiry".to_owned(), |s| format!("{s} s"));
            Ok(format!(
                "retention changed from {before} to {days} d ({secs} s) with collMod"
            ))
        }
    }
}

/// Why a TTL of `secs` would expire `event` (not archived) within `margin` of `now`, if it would.
fn expires_too_soon(
    event: &Document,
    secs: i64,
    margin: Duration,
    now: DateTime<Utc>,
) -> Option<String> {
    let created = event.get_datetime(fields::CREATED_AT).ok()?.to_chrono();
    let expires = created + chrono::Duration::seconds(secs);
    let margin = chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::MAX);
    if expires > now + margin {
        return None;
    }
    let id = event
        .get(fields::ID)
        .map_or("?".to_owned(), |b| match b.as_object_id() {
            Some(oid) => oid.to_hex(),
            None => b.to_string(),
        });
    let consumer = event.get_str(fields::CONSUMER).unwrap_or("?");
    Some(format!(
        "a retention of {secs} s would expire event {id} (consumer {consumer:?}, created_at {}) \
         at {}, before the archiver has exported it (not in any archived window; margin {} s)",
        created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        margin.num_seconds(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, oid::ObjectId};

    fn event(created: DateTime<Utc>) -> Document {
        doc! { "_id": ObjectId::new(), "consumer": "billing", "type": "t",
        "created_at": mongodb::bson::DateTime::from_chrono(created) }
    }

    #[test]
    fn an_unarchived_event_inside_the_new_retention_plus_margin_is_named() {
        let now = Utc::now();
        let e = event(now - chrono::Duration::days(10));
        let day = Duration::from_secs(86_400);
        let why = expires_too_soon(&e, 7 * 86_400, day, now).expect("7 d < 10 d old");
        assert!(
            why.contains("billing") && why.contains(&e.get_object_id("_id").unwrap().to_hex()),
            "{why}"
        );
        // 10.5 d of retention leaves it 0.5 d: inside a 1 d margin.
        assert!(expires_too_soon(&e, 10 * 86_400 + 43_200, day, now).is_some());
        // 12 d leaves 2 d: outside the margin.
        assert!(expires_too_soon(&e, 12 * 86_400, day, now).is_none());
    }
}

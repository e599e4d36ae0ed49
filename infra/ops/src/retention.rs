//! `retention set`: changes the TTL of the `created_at` index in place with `collMod`
//! (the shared [`auditlog_common::schema::set_ttl`]), never by dropping the index.

use auditlog_common::schema::{self, Retention};
use auditlog_common::store::Store;

use crate::error::OpsError;

/// Returns the line to print.
pub async fn set(store: &Store, days: u32) -> Result<String, OpsError> {
    let Retention::Seconds(secs) = Retention::from_days(days) else {
        return Err(OpsError::Config(
            "retention must be at least 1 day: MongoDB cannot turn a TTL index back into a plain one".into(),
        ));
    };
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

//! Connecting to MongoDB and finding out what the server at the other end supports.
//!
//! Production runs real MongoDB (a sharded cluster behind mongos); development and CI run
//! FerretDB, which speaks the same wire protocol but lacks TTL indexes, sharding and replica
//! sets. One code path serves both: features are detected here at start, and callers degrade
//! with a clear log line instead of crashing.

use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};

use crate::error::StoreError;
use crate::settings::MongoSettings;

/// What the server we are connected to is, as far as our code cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// MongoDB-compatible version the server reports (`buildInfo.version`).
    pub version: String,
    /// Set when the server is FerretDB (`buildInfo.ferretdbVersion`).
    pub ferretdb_version: Option<String>,
    /// True when connected to a mongos router (sharded cluster).
    pub is_mongos: bool,
    /// Replica set name when connected to a replica-set member.
    pub replica_set: Option<String>,
}

impl ServerInfo {
    /// Sharding commands only make sense through a mongos.
    pub fn supports_sharding(&self) -> bool {
        self.is_mongos
    }

    /// FerretDB v1 has no TTL indexes (createIndexes answers NotImplemented).
    pub fn supports_ttl(&self) -> bool {
        self.ferretdb_version.is_none()
    }

    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        let kind = match (&self.ferretdb_version, self.is_mongos, &self.replica_set) {
            (Some(v), _, _) => format!("FerretDB {v}"),
            (None, true, _) => "mongos (sharded cluster)".to_owned(),
            (None, false, Some(rs)) => format!("replica set {rs}"),
            (None, false, None) => "standalone mongod".to_owned(),
        };
        format!("{kind}, MongoDB-compatible version {}", self.version)
    }
}

/// A connected client plus the names the project uses, so callers need not thread
/// database and collection names around.
#[derive(Debug, Clone)]
pub struct Store {
    pub client: Client,
    pub db_name: String,
    pub collection_name: String,
    /// How long the driver waits for a suitable server before an operation fails: ours (5 s)
    /// unless the URI sets `serverSelectionTimeoutMS`. It bounds how long after its last retry
    /// starts a write can still land, which the service's `complete_until` accounts for.
    pub server_selection_timeout: Duration,
}

impl Store {
    /// Builds a client. The driver connects lazily; call [`Store::server_info`] or
    /// [`Store::ping`] to find out whether the server answers.
    pub async fn connect(settings: &MongoSettings, app_name: &str) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(&settings.mongodb_uri)
            .await
            .map_err(StoreError::Config)?;
        if options.app_name.is_none() {
            options.app_name = Some(app_name.to_owned());
        }
        // Fail fast when no server answers; callers retry with their own deadlines.
        let server_selection_timeout = *options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        if options.connect_timeout.is_none() {
            options.connect_timeout = Some(Duration::from_secs(5));
        }
        let client = Client::with_options(options).map_err(StoreError::Config)?;
        Ok(Self {
            client,
            db_name: settings.db_name.clone(),
            collection_name: settings.collection.clone(),
            server_selection_timeout,
        })
    }

    /// `<db>.<collection>` of the events: the key of the archiver's lease and runs documents,
    /// and what reports call the namespace.
    pub fn namespace(&self) -> String {
        format!("{}.{}", self.db_name, self.collection_name)
    }

    pub fn database(&self) -> Database {
        self.client.database(&self.db_name)
    }

    /// The events collection, typed as raw documents.
    pub fn events(&self) -> Collection<Document> {
        self.database().collection(&self.collection_name)
    }

    /// `ping` against the admin database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(StoreError::command("ping"))?;
        Ok(())
    }

    /// Asks the server what it is (`hello` and `buildInfo`).
    pub async fn server_info(&self) -> Result<ServerInfo, StoreError> {
        let admin = self.client.database("admin");
        let hello = admin
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(StoreError::command("hello"))?;
        let build = admin
            .run_command(doc! { "buildInfo": 1 })
            .await
            .map_err(StoreError::command("buildInfo"))?;
        Ok(server_info_from_replies(&hello, &build))
    }
}

/// Interprets `hello` and `buildInfo` replies; separate from I/O so it can be tested.
pub fn server_info_from_replies(hello: &Document, build: &Document) -> ServerInfo {
    ServerInfo {
        version: build.get_str("version").unwrap_or("unknown").to_owned(),
        ferretdb_version: build.get_str("ferretdbVersion").ok().map(str::to_owned),
        is_mongos: hello.get_str("msg").ok() == Some("isdbgrid"),
        replica_set: hello.get_str("setName").ok().map(str::to_owned),
    }
}

/// A numeric reply field as `f64`, whichever BSON number type the server chose (MongoDB and
/// FerretDB report the same figure as int32, int64 or double).
pub fn number(value: &mongodb::bson::Bson) -> Option<f64> {
    use mongodb::bson::Bson;
    match value {
        Bson::Double(v) => Some(*v),
        Bson::Int64(v) => Some(*v as f64),
        Bson::Int32(v) => Some(f64::from(*v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_ferretdb_mongos_and_replica_sets() {
        let ferret = server_info_from_replies(
            &doc! { "isWritablePrimary": true },
            &doc! { "version": "7.0.42", "ferretdbVersion": "v1.24.2" },
        );
        assert_eq!(ferret.ferretdb_version.as_deref(), Some("v1.24.2"));
        assert!(!ferret.supports_ttl());
        assert!(!ferret.supports_sharding());

        let mongos =
            server_info_from_replies(&doc! { "msg": "isdbgrid" }, &doc! { "version": "7.0.14" });
        assert!(mongos.supports_sharding());
        assert!(mongos.supports_ttl());

        let rs =
            server_info_from_replies(&doc! { "setName": "rs0" }, &doc! { "version": "7.0.14" });
        assert_eq!(rs.replica_set.as_deref(), Some("rs0"));
        assert!(!rs.supports_sharding());
        assert_eq!(
            rs.describe(),
            "replica set rs0, MongoDB-compatible version 7.0.14"
        );
    }
}

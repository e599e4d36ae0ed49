//! The MongoDB connection settings shared by every binary, as one clap argument group
//! (flattened into each binary's own settings struct).

use clap::Args;

/// Where the events live.
#[derive(Debug, Clone, Args)]
pub struct MongoSettings {
    /// MongoDB connection string. In production this points at the mongos routers.
    #[arg(
        long = "mongodb-uri",
        env = "MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017"
    )]
    pub mongodb_uri: String,

    /// Database that holds the events collection.
    #[arg(long = "db-name", env = "AUDIT_DB_NAME", default_value = "dbevents")]
    pub db_name: String,

    /// Collection that holds the events.
    #[arg(
        long = "collection",
        env = "AUDIT_COLLECTION",
        default_value = "events"
    )]
    pub collection: String,
}

//! `auditlog-archiver` (work in progress): see the archiver issue.
use clap::Parser;

/// Exports aged auditlog events to Parquet before TTL expires them.
#[derive(Debug, Parser)]
#[command(name = "auditlog-archiver", version, about)]
struct Cli {
    #[command(flatten)]
    mongo: auditlog_common::settings::MongoSettings,
}

fn main() -> anyhow::Result<()> {
    auditlog_common::telemetry::init();
    let cli = Cli::parse();
    tracing::info!(db = %cli.mongo.db_name, "nothing to do yet");
    Ok(())
}

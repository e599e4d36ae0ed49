//! `auditlog-ops` (work in progress): see the Kubernetes issue.
use clap::Parser;

/// Operator tooling for auditlog.
#[derive(Debug, Parser)]
#[command(name = "auditlog-ops", version, about)]
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

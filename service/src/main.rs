use anyhow::Context;
use auditlog_common::schema::{ensure_storage, Retention};
use auditlog_common::store::Store;
use auditlog_service::config::Config;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    auditlog_common::telemetry::init();
    let config = Config::parse();
    config.api_keys()?;

    let store = Store::connect(&config.mongo, "auditlog-service").await?;
    match store.server_info().await {
        Ok(info) => {
            tracing::info!(server = %info.describe(), "connected to MongoDB");
            let report =
                ensure_storage(&store, &info, Retention::from_days(config.retention_days)).await?;
            for step in report.steps {
                tracing::info!("storage: {step}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "MongoDB not reachable at start; continuing"),
    }

    let listener = std::net::TcpListener::bind(&config.listen_addr)
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "listening; Swagger UI at /docs");
    auditlog_service::server::run(listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

//! The service's settings: one typed struct, read from flags or environment variables.

use auditlog_common::settings::MongoSettings;
use clap::Parser;

/// auditlog HTTP service: producers POST events, readers find them.
#[derive(Debug, Clone, Parser)]
#[command(name = "auditlog-service", version, about)]
pub struct Config {
    #[command(flatten)]
    pub mongo: MongoSettings,

    /// API keys accepted in `X-Api-Key`, comma-separated (several allow rotation). Required.
    #[arg(long = "api-key", env = "AUDIT_API_KEY", hide_env_values = true)]
    pub api_key: String,

    /// Address to listen on.
    #[arg(
        long = "listen-addr",
        env = "AUDIT_LISTEN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen_addr: String,

    /// Days MongoDB keeps an event before the TTL index removes it; 0 keeps events forever.
    #[arg(
        long = "retention-days",
        env = "AUDIT_RETENTION_DAYS",
        default_value_t = 30
    )]
    pub retention_days: u32,
}

impl Config {
    /// The accepted API keys, or an error naming the variable when none is set.
    pub fn api_keys(&self) -> Result<Vec<String>, ConfigError> {
        let keys: Vec<String> = self
            .api_key
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        if keys.is_empty() {
            return Err(ConfigError::MissingApiKey);
        }
        Ok(keys)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("AUDIT_API_KEY is empty: set it to one or more comma-separated API keys")]
    MissingApiKey,
}

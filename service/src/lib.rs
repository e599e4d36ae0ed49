//! `auditlog-service`: the HTTP API producers post events to and readers query.
//!
//! # Layout
//! - [`config`]: every setting, from flags and environment variables.
//! - [`server`]: builds the routes and serves them on a bound listener until shutdown.
//! - [`api`]: the OpenAPI operations.

pub mod api;
pub mod config;
pub mod server;

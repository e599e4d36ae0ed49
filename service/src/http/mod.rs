//! HTTP: the server and its routes — the OpenAPI operations ([`api`]), the lean path that
//! answers `POST /v1/event` before the full stack ([`lean_path`]), finding the request's API
//! key ([`auth`]), reading request bodies under their limits ([`body`]) and the events explorer's
//! page at `/ui` ([`ui`]).

pub mod api;
pub mod auth;
pub mod body;
pub mod lean_path;
pub mod server;
pub mod ui;

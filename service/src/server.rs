//! Builds the routes and serves them on an already-bound listener until shutdown, so tests
//! start the real server on `127.0.0.1:0`.

use std::future::Future;

use poem::listener::TcpAcceptor;
use poem::{EndpointExt, Route, Server};
use poem_openapi::OpenApiService;

use crate::api::HealthApi;

/// The whole application as one endpoint.
pub fn app() -> impl poem::Endpoint {
    let api = OpenApiService::new(HealthApi, "auditlog", env!("CARGO_PKG_VERSION"));
    let docs = api.swagger_ui();
    let spec = api.spec_endpoint();
    Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .with(poem::middleware::Tracing)
}

/// Serves until `shutdown` completes.
pub async fn run(
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let acceptor = TcpAcceptor::from_std(listener)?;
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app(), shutdown, None)
        .await
}

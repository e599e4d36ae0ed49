//! Builds the application (routes, middleware, state) and serves it on an already-bound
//! listener until shutdown, so tests start the real server on `127.0.0.1:0`.
//!
//! Start: load the API keys (and watch the key file), connect, make the storage ready
//! (indexes, TTL; retried in the background while the database is unreachable), start the
//! writer — and in queue mode the RabbitMQ link (which connects in the background too) and
//! the drain — and, when `AUDIT_METRICS_LISTEN_ADDR` is set, serve `/metrics` there. Shutdown:
//! stop accepting, let open requests finish (they wait for their writes or confirms), stop the
//! drain (it finishes and acknowledges what it is writing), close the RabbitMQ link, write
//! whatever is still queued, then shut the MongoDB client down. In queue mode the drain and
//! those last writes each get at most `AUDIT_SHUTDOWN_GRACE_SECS`: what they hold are
//! unacknowledged messages, which RabbitMQ delivers again.
//!
//! Every request passes [`Front`] first: its request id, the API key it presents (looked up
//! once), the lean `POST /v1/event` path or the route tree, then its metrics and log line —
//! both carrying the key's name.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditlog_common::retry::Backoff;
use auditlog_common::schema::{ensure_storage, Retention, REPLICAS_COLLECTION};
use auditlog_common::shutdown::close_client;
use auditlog_common::store::Store;
use poem::http::{header, HeaderValue};
use poem::listener::TcpAcceptor;
use poem::middleware::Compression;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, Server};
use tracing::Instrument;

use crate::config::{Config, ConfigError, IngestMode};
use crate::error::{from_poem_error, ErrorResponse};
use crate::find::archive::ArchiveTier;
use crate::http::api::api_service;
use crate::http::auth::{identify, Caller};
use crate::http::lean_path;
use crate::http::ui;
use crate::ingest::writer::WriterTask;
use crate::keys::reload;
use crate::metrics::{route_label, Metrics};
use crate::queue::{drain, LinkTask, QueueSettings};
use crate::state::AppState;
use crate::watermark::{self, Watermark};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] auditlog_common::StoreError),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot listen for metrics on {addr} (AUDIT_METRICS_LISTEN_ADDR): {source}")]
    MetricsListen {
        addr: String,
        source: std::io::Error,
    },
}

const REQUEST_ID: &str = "x-request-id";

/// How often storage set-up is retried in the background when it failed at start.
const STORAGE_RETRY_EVERY: Duration = Duration::from_secs(5);

/// The whole application as one endpoint.
pub fn app(state: Arc<AppState>) -> impl Endpoint {
    let api = api_service();
    let docs = api.swagger_ui();
    let spec = api.spec_endpoint();
    let full = Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        // Not behind the API key: the page asks for it, and its calls to /v1 carry it.
        .nest_no_strip(ui::PATH, ui::Ui::new(state.ui_enabled))
        .with(Compression::new())
        .before(lowercase_content_encoding)
        .data(state.clone())
        .catch_all_error(|e| async move { from_poem_error(e) });
    Front { full, state }
}

/// `Content-Encoding` trimmed and lower-cased, for the `Compression` middleware, which knows
/// only `gzip`, `deflate`, `br` and `zstd` spelt so: content codings are case-insensitive
/// (RFC 9110 §8.4.1), and a `GZIP` body it passed on undecoded was answered 400.
async fn lowercase_content_encoding(mut req: Request) -> poem::Result<Request> {
    let Some(raw) = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(req);
    };
    let lowered = raw.trim().to_ascii_lowercase();
    if lowered != raw {
        if let Ok(v) = HeaderValue::from_str(&lowered) {
            req.headers_mut().insert(header::CONTENT_ENCODING, v);
        }
    }
    Ok(req)
}

/// In front of every request: request id, the API key presented, the lean `POST /v1/event`
/// path or the route tree `full`, then metrics and one log line, both naming the key.
struct Front<E> {
    full: E,
    state: Arc<AppState>,
}

impl<E: Endpoint> Endpoint for Front<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let request_id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .unwrap_or_else(|| mongodb::bson::oid::ObjectId::new().to_hex());
        let method = req.method().clone();
        let route = route_label(req.uri().path());
        let key = identify(&req, &self.state.keys);
        // The key's name, never the key; empty when none (or none in force) was presented.
        let key_name = key.as_deref().map_or("", |k| k.name.as_str());
        // The request's span carries these fields to every line logged for it. The hot path
        // makes one only when it has a line to log: creating a span, and the JSON log layer
        // formatting its fields, cost ~7 % of a single-event request's CPU
        // (`make profile-ingest`), for a span nothing was logged in.
        let make_span = |path: &str| {
            tracing::info_span!(
                "request",
                request_id = %request_id,
                %method,
                path = %path,
                key = key_name
            )
        };
        let (mut resp, span) = if lean_path::takes(&req) {
            match lean_path::serve(&self.state, key.as_ref(), &mut req).await {
                Ok(resp) => (resp, None),
                Err(e) => {
                    let span = make_span(lean_path::PATH);
                    let resp = span.in_scope(|| ErrorResponse::from(e).into_response());
                    (resp, Some(span))
                }
            }
        } else {
            req.extensions_mut().insert(Caller(key.clone()));
            let span = make_span(req.uri().path());
            let resp = match self.full.call(req).instrument(span.clone()).await {
                Ok(r) => r.into_response(),
                Err(e) => from_poem_error(e),
            };
            (resp, Some(span))
        };
        let status = resp.status();
        let elapsed = started.elapsed();
        let metrics = &self.state.metrics;
        metrics
            .requests
            .with_label_values(&[route, method.as_str(), status.as_str(), key_name])
            .inc();
        metrics
            .latency
            .with_label_values(&[route, method.as_str(), key_name])
            .observe(elapsed.as_secs_f64());
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        let ms = elapsed.as_secs_f64() * 1000.0;
        let logged = status.is_client_error()
            || status.is_server_error()
            || tracing::enabled!(tracing::Level::DEBUG);
        if logged {
            let _enter = span.unwrap_or_else(|| make_span(lean_path::PATH)).entered();
            if status.is_server_error() {
                tracing::warn!(status = status.as_u16(), elapsed_ms = ms, "request failed");
            } else if status.is_client_error() {
                tracing::info!(status = status.as_u16(), elapsed_ms = ms, "request refused");
            } else {
                tracing::debug!(status = status.as_u16(), elapsed_ms = ms, "request served");
            }
        }
        Ok(resp)
    }
}

/// `GET /metrics` alone, for `AUDIT_METRICS_LISTEN_ADDR`.
fn metrics_app(state: Arc<AppState>) -> impl Endpoint {
    Route::new()
        .at(
            "/metrics",
            poem::get(poem::endpoint::make(move |_req| {
                let state = state.clone();
                async move {
                    match crate::http::api::metrics_text(&state) {
                        Ok(text) => text
                            .with_content_type("text/plain; charset=utf-8")
                            .into_response(),
                        Err(e) => crate::error::ErrorResponse::from(e).into_response(),
                    }
                }
            })),
        )
        .catch_all_error(|e| async move { from_poem_error(e) })
}

/// `/metrics` served on its own listener (`AUDIT_METRICS_LISTEN_ADDR`) until stopped.
struct MetricsServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl MetricsServer {
    fn start(listener: std::net::TcpListener, state: Arc<AppState>) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics on its own address");
        let acceptor = TcpAcceptor::from_std(listener)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    metrics_app(state),
                    async {
                        let _ = stopped.await;
                    },
                    Some(Duration::from_secs(1)),
                )
                .await
        });
        Ok(MetricsServer { stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the metrics listener failed"),
            Err(e) => tracing::warn!(error = %e, "the metrics listener task failed"),
        }
    }
}

/// Connects, prepares storage, serves until `shutdown` completes, then writes what is queued.
pub async fn run(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (keys, key_file_content) = config.load_keys()?;
    config.validate()?;
    let metrics_listener = config
        .metrics_addr()
        .map(|addr| {
            std::net::TcpListener::bind(addr).map_err(|source| ServeError::MetricsListen {
                addr: addr.to_owned(),
                source,
            })
        })
        .transpose()?;
    let keys = Arc::new(keys);
    let archive = ArchiveTier::from_config(&config).map_err(ConfigError::Archive)?;
    let metrics = Arc::new(Metrics::new()?);
    listener.set_nonblocking(true)?;
    let acceptor = TcpAcceptor::from_std(listener)?;
    let store = Store::connect(&config.mongo, "auditlog-service").await?;
    // From here on every way out shuts the client down (`close_client`), before the runtime
    // stops under the driver's tasks.
    let client = store.client.clone();
    prepare_storage(store.clone(), Retention::from_days(config.retention_days)).await;

    reload::record_in_force(&metrics, &keys.current());
    let key_watch = reload::start(
        keys.clone(),
        metrics.clone(),
        key_file_content,
        config.api_keys_poll(),
    );
    let (env, file) = keys.current().counts();
    tracing::info!(
        from_env = env,
        from_file = file,
        file = %keys.file().map_or("-".into(), |p| p.display().to_string()),
        "API keys loaded"
    );
    metrics
        .queue_capacity
        .set(i64::try_from(config.queue_capacity).unwrap_or(i64::MAX));
    if let Some(every) = config.archive_watch_every() {
        crate::archive_watch::spawn(
            store.clone(),
            metrics.archive.clone(),
            metrics.clone(),
            every,
        );
    }
    let watermark = start_watermark(&config, &store).await;
    let queue = QueueSettings::from_config(&config)
        .map(|s| crate::queue::start(s, metrics.clone(), watermark.clone()));
    let heartbeat = watermark::heartbeat::start(
        watermark.clone(),
        metrics.clone(),
        queue.as_ref().map(|(q, _)| q.links().clone()),
    );
    let (state, writer_task) = AppState::new(
        &config,
        store,
        keys,
        metrics,
        queue.as_ref().map(|(q, _)| q.clone()),
        archive,
        watermark.clone(),
    );
    tracing::info!(
        group_commit = config.group_commit,
        write_concern = ?config.write_concern,
        queue_capacity = config.queue_capacity,
        ingest_mode = ?config.ingest_mode,
        "writer started"
    );
    let queue = queue.map(|(q, link)| (drain::start(state.clone(), q), link));

    let metrics_server = match metrics_listener
        .map(|l| MetricsServer::start(l, state.clone()))
        .transpose()
    {
        Ok(server) => server,
        Err(e) => {
            close_client(&client).await;
            return Err(e.into());
        }
    };

    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let served = Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            app(state.clone()),
            async {
                shutdown.await;
                tracing::info!("shutting down: no new connections; finishing open requests");
            },
            Some(grace),
        )
        .await;
    key_watch.abort();
    if let Some(server) = metrics_server {
        server.stop().await;
    }
    stop_ingest(queue, writer_task, grace).await;
    // Nothing is held any more (what the drain left is back in RabbitMQ: its link is closed).
    heartbeat.shutdown().await;
    watermark.retire().await;
    drop(state);
    close_client(&client).await;
    tracing::info!("stopped");
    Ok(served?)
}

/// This replica's watermark, recorded once before the first event: a direct-mode replica
/// takes none until its record is written. MongoDB away at start only delays that (the
/// heartbeat keeps trying).
async fn start_watermark(config: &Config, store: &Store) -> Arc<Watermark> {
    let watermark = Watermark::new(
        watermark::Settings {
            mode: match config.ingest_mode {
                IngestMode::Direct => watermark::Mode::Direct,
                IngestMode::Queue => watermark::Mode::Queue,
            },
            lag: crate::state::write_lag(config, store),
            skew: config.clock_skew(),
        },
        store.database().collection(REPLICAS_COLLECTION),
    );
    match tokio::time::timeout(store.server_selection_timeout, watermark.record_now()).await {
        Ok(Ok(())) => tracing::info!(replica = watermark.id(), "recorded this replica in MongoDB"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot record this replica in MongoDB yet; retrying every second")
        }
        Err(_) => {
            tracing::warn!("cannot record this replica in MongoDB yet; retrying every second")
        }
    }
    watermark
}

/// Stops taking events in, in the order that loses none: the drain finishes what it holds
/// (within `grace`), the link closes (RabbitMQ requeues the rest), then the writer writes what
/// is queued — all of it in direct mode; in queue mode for at most `grace`, since everything it
/// still holds is an unacknowledged message RabbitMQ delivers again, and with the store away
/// waiting out the write deadline gains nothing.
async fn stop_ingest(
    queue: Option<(drain::DrainTask, LinkTask)>,
    writer_task: WriterTask,
    grace: Duration,
) {
    match queue {
        Some((drain, link)) => {
            drain.shutdown(grace).await;
            link.shutdown().await;
            if tokio::time::timeout(grace, writer_task.shutdown())
                .await
                .is_err()
            {
                tracing::warn!(
                    within_secs = grace.as_secs(),
                    "writes still pending at exit; RabbitMQ delivers their messages again"
                );
            }
        }
        None => writer_task.shutdown().await,
    }
}

/// Makes indexes and TTL ready. When the database does not answer at start, the service
/// still starts (writes wait and retry) and the set-up is retried in the background.
async fn prepare_storage(store: Store, retention: Retention) {
    async fn attempt(
        store: &Store,
        retention: Retention,
    ) -> Result<(), auditlog_common::StoreError> {
        let info = store.server_info().await?;
        tracing::info!(server = %info.describe(), "connected to MongoDB");
        let report = ensure_storage(store, &info, retention).await?;
        for step in report.steps {
            tracing::info!("storage: {step}");
        }
        Ok(())
    }
    if let Err(e) = attempt(&store, retention).await {
        tracing::warn!(error = %e, "storage set-up failed at start; retrying in the background");
        tokio::spawn(async move {
            let mut backoff = Backoff::constant(STORAGE_RETRY_EVERY);
            while backoff.wait().await {
                match attempt(&store, retention).await {
                    Ok(()) => break,
                    Err(e) => tracing::warn!(
                        error = %e,
                        "storage set-up failed; retrying in {} s",
                        backoff.next_delay().as_secs()
                    ),
                }
            }
        });
    }
}

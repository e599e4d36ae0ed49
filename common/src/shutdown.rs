//! How the binaries stop: the signal both long-running binaries stop on, and shutting the
//! MongoDB client down before the async runtime goes away.

use std::time::Duration;

/// Completes on SIGTERM (Kubernetes stopping a pod) or SIGINT (Ctrl-C), logging which.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("SIGINT received");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// How long [`close_client`] waits for cursors and sessions still open to be dropped, so that
/// their `killCursors` and `endSessions` reach the server.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How long shutting the driver's own tasks down may take before the process exits anyway.
const CLOSE_TOPOLOGY_WAIT: Duration = Duration::from_secs(5);

/// Shuts the MongoDB client down: its monitors and connection pools stop and its connections
/// close. Every binary calls it on every way out, before its runtime stops: a client merely
/// dropped leaves the driver's tasks running while the runtime shuts down under them, and one
/// of them then panics (`connection_requester.rs: … SendError`), printed at exit after an
/// otherwise clean run. Bounded: a cursor still held by a task that never ends (a run cut
/// short by an error) delays the exit by [`CLOSE_WAIT`] only; the client's clones fail from
/// now on.
pub async fn close_client(client: &mongodb::Client) {
    if tokio::time::timeout(CLOSE_WAIT, client.clone().shutdown())
        .await
        .is_ok()
    {
        return;
    }
    let immediate = client.clone().shutdown().immediate(true);
    if tokio::time::timeout(CLOSE_TOPOLOGY_WAIT, immediate)
        .await
        .is_err()
    {
        tracing::warn!(
            within_secs = CLOSE_TOPOLOGY_WAIT.as_secs(),
            "the MongoDB client did not shut down in time; exiting anyway"
        );
    }
}

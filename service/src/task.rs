//! The one stop handle of the service's background tasks (the writer's dispatcher, the
//! RabbitMQ link, the drain, the watermark's heartbeat): a task spawned with a stop signal,
//! stopped by raising the signal and waiting for the task to end.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a task watches to know it should stop: `stop.wait_for(|s| *s)` ends once it should.
pub type StopSignal = watch::Receiver<bool>;

/// A running background task and its stop signal.
pub struct StopHandle {
    name: &'static str,
    stop: watch::Sender<bool>,
    join: JoinHandle<()>,
}

impl StopHandle {
    /// Spawns `task` with its stop signal; `name` ("the writer") names it in the log.
    pub fn spawn<F, Fut>(name: &'static str, task: F) -> StopHandle
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, signal) = watch::channel(false);
        let join = tokio::spawn(task(signal));
        StopHandle { name, stop, join }
    }

    /// Raises the stop signal and waits for the task to end, however long it takes.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.join.await {
            tracing::error!(error = %e, task = self.name, "a background task failed");
        }
    }

    /// Raises the stop signal and waits up to `within`; past it, the task is aborted and
    /// `false` is returned (the caller says what that leaves undone).
    pub async fn stop_within(mut self, within: Duration) -> bool {
        let _ = self.stop.send(true);
        match tokio::time::timeout(within, &mut self.join).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, task = self.name, "a background task failed");
                true
            }
            Err(_) => {
                self.join.abort();
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_ends_when_stopped_and_one_that_does_not_is_aborted_in_time() {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let polite = StopHandle::spawn("polite", |mut stop| async move {
            let _ = stop.wait_for(|s| *s).await;
            let _ = done_tx.send(());
        });
        polite.stop().await;
        assert!(
            done_rx.await.is_ok(),
            "the task saw its stop signal and ended"
        );

        let deaf = StopHandle::spawn("deaf", |_stop| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let started = std::time::Instant::now();
        assert!(!deaf.stop_within(Duration::from_millis(50)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

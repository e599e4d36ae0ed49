//! Waiting with backoff until a deadline: every bootstrap step is "observe, act, observe
//! again" until the cluster is as wanted, and members may be restarting meanwhile.

use std::future::Future;
use std::time::Duration;

use auditlog_common::retry::Backoff;
use tokio::time::Instant;

use crate::cluster::CmdError;
use crate::error::OpsError;

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Why a step is not finished yet.
#[derive(Debug)]
pub enum StepError {
    /// Not ready: try again later (with this reason in the log and in the final error).
    Wait(String),
    /// Retrying cannot help.
    Fatal(OpsError),
}

impl StepError {
    /// A failed command: wait when it may pass, give up when it cannot.
    pub fn from_cmd(step: &str, what: &str, e: CmdError) -> Self {
        if e.is_retriable() {
            StepError::Wait(format!("{what}: {e}"))
        } else {
            StepError::Fatal(OpsError::Refused {
                step: format!("{step}: {what}"),
                source: e,
            })
        }
    }
}

/// The moment bootstrap gives up.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    started: Instant,
    at: Instant,
}

impl Deadline {
    pub fn after(d: Duration) -> Self {
        let started = Instant::now();
        Self {
            started,
            at: started + d,
        }
    }

    /// Runs `attempt` until it succeeds, fails fatally, or the deadline would pass before the
    /// next attempt; the error then names the step and the last reason for waiting.
    pub async fn retry<T, F, Fut>(&self, step: &str, mut attempt: F) -> Result<T, OpsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF).until(self.at);
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(StepError::Fatal(e)) => return Err(e),
                Err(StepError::Wait(reason)) => {
                    let retry_in_ms = backoff.next_delay().as_millis() as u64;
                    let Some(wait) = backoff.next_wait() else {
                        return Err(OpsError::Deadline {
                            step: step.to_owned(),
                            reason,
                            elapsed_secs: self.started.elapsed().as_secs(),
                        });
                    };
                    tracing::info!(step, %reason, retry_in_ms, "waiting");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

//! Re-reading the key file while the service runs: when its content changes, and on SIGHUP.
//!
//! The file is polled, not watched: Kubernetes updates a mounted Secret by writing a new
//! directory and swapping the `..data` symlink, so the path the service reads never changes
//! and a watch on the file sees nothing; a watch on the directory works, but what it reports
//! differs between kernels, overlay filesystems and NFS. Reading a small file and hashing it
//! every second (`AUDIT_API_KEYS_POLL_MS`) costs microseconds and sees every kind of update —
//! symlink swap, rename, in-place write — within that second. SIGHUP reloads at once.
//!
//! A file that cannot be read or is not valid is refused in one log line, counted in
//! `auditlog_api_keys_reloads_total{result="error"}`, and the keys in force stay; the same bad
//! content is not reported again on every poll. A half-written file (an editor saving in
//! place) is refused like any bad one and taken on the next poll once complete; an empty file
//! is refused, so a truncation never locks every client out.
//!
//! SIGHUP is taken over first thing at start ([`catch_hangups`]): its default action ends the
//! process, and the service gets to [`start`] only once MongoDB answered (or the driver's
//! server selection gave up), seconds later. A SIGHUP in between is kept and reloads the file
//! as soon as the keys are in force.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinHandle;

use super::digest::digest;
use super::file::{text_of, KeyFileError};
use super::ring::{KeyRing, Keys};
use crate::metrics::Metrics;

/// What the last look at the file found, so that an unchanged file is not re-read as new.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Content([u8; 32]),
    Unreadable(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Poll,
    Hangup,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Poll => "file changed",
            Trigger::Hangup => "SIGHUP",
        }
    }
}

/// Sets `auditlog_api_keys{source}` to the keys of `ring`.
pub fn record_in_force(metrics: &Metrics, ring: &KeyRing) {
    let (env, file) = ring.counts();
    let set = |source: &str, n: usize| {
        metrics
            .api_keys
            .with_label_values(&[source])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    };
    set("env", env);
    set("file", file);
}

/// The SIGHUP listener [`catch_hangups`] registered, until [`start`] takes it. Process-wide,
/// as a signal's disposition is.
static CAUGHT: Mutex<Option<Signal>> = Mutex::new(None);

/// Takes SIGHUP over from its default action (ending the process), first thing at start, and
/// keeps what arrives until [`start`]: one SIGHUP or several before it, one reload then. Call it
/// inside the runtime.
pub fn catch_hangups() {
    match signal(SignalKind::hangup()) {
        Ok(s) => *CAUGHT.lock().unwrap_or_else(|e| e.into_inner()) = Some(s),
        // `start` says so again, and a SIGHUP until then ends the process, as before.
        Err(e) => tracing::error!(error = %e, "cannot listen for SIGHUP"),
    }
}

/// Starts reloading: polls the key file every `poll` (`None`: only on SIGHUP) and reloads on
/// SIGHUP — at once for one caught since [`catch_hangups`]. `content` is the SHA-256 of the file
/// as loaded at start. SIGHUP is taken over even without a key file, so it never stops the
/// service. Abort the task at shutdown.
pub fn start(
    keys: Arc<Keys>,
    metrics: Arc<Metrics>,
    content: Option<[u8; 32]>,
    poll: Option<Duration>,
) -> JoinHandle<()> {
    // Registered before returning, so a SIGHUP sent once the service answers is never lost.
    let caught = CAUGHT.lock().unwrap_or_else(|e| e.into_inner()).take();
    let hangup = match caught.map_or_else(|| signal(SignalKind::hangup()), Ok) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; the key file is reloaded only when it changes");
            None
        }
    };
    let watch = Watch {
        keys,
        metrics,
        seen: content.map(Seen::Content),
    };
    tokio::spawn(watch.run(hangup, poll))
}

struct Watch {
    keys: Arc<Keys>,
    metrics: Arc<Metrics>,
    seen: Option<Seen>,
}

impl Watch {
    async fn run(mut self, mut hangup: Option<Signal>, poll: Option<Duration>) {
        let poll = poll.filter(|_| self.keys.file().is_some());
        let mut tick = poll.map(|every| {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        loop {
            let trigger = tokio::select! {
                _ = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => Trigger::Hangup,
                _ = async {
                    match tick.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                } => Trigger::Poll,
            };
            self.check(trigger).await;
        }
    }

    async fn check(&mut self, trigger: Trigger) {
        let Some(path) = self.keys.file().map(Path::to_path_buf) else {
            tracing::info!(
                "SIGHUP: no key file (AUDIT_API_KEYS_FILE) to reload; AUDIT_API_KEY is read at start only"
            );
            return;
        };
        let (seen, bytes) = match tokio::fs::read(&path).await {
            Ok(bytes) => (Seen::Content(digest(&bytes)), Some(bytes)),
            Err(e) => (Seen::Unreadable(e.to_string()), None),
        };
        if trigger == Trigger::Poll && self.seen.as_ref() == Some(&seen) {
            return;
        }
        self.seen = Some(seen.clone());
        let result = match (bytes, seen) {
            (Some(bytes), _) => text_of(bytes).and_then(|text| self.keys.reload(&text)),
            (None, Seen::Unreadable(e)) => Err(KeyFileError::Read(e)),
            (None, Seen::Content(_)) => Err(KeyFileError::Read("no content".into())),
        };
        let file = path.display();
        match result {
            Ok(change) => {
                self.metrics
                    .api_key_reloads
                    .with_label_values(&["ok"])
                    .inc();
                record_in_force(&self.metrics, &self.keys.current());
                tracing::info!(
                    %file,
                    trigger = trigger.as_str(),
                    keys = change.in_force,
                    added = ?change.added,
                    removed = ?change.removed,
                    "API keys reloaded"
                );
            }
            Err(e) => {
                self.metrics
                    .api_key_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(
                    %file,
                    trigger = trigger.as_str(),
                    error = %e,
                    "API key file refused; the keys in force stay"
                );
            }
        }
    }
}

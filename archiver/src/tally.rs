//! Whether a pass's rows are all of MongoDB's events: one count of the scope it read — started
//! beside the stream, so that on a server that scans (FerretDB) the two scans run at once —
//! compared with the rows it streamed. Only when the two differ is each window that streamed
//! rows counted on its own, to find the ones to read again; the others may be recorded.
//!
//! A difference means events were written (or deleted) in the scope while it was read: late
//! writes after `AUDIT_ARCHIVE_GRACE`, or rows a cursor lost. Windows that streamed no rows are
//! never recorded, so their late events need no count here: the next run finds them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use crate::error::{ArchiveError, Result};
use crate::pass::Written;
use crate::plan::Scope;
use crate::source::Source;

/// MongoDB's count of a scope, in a task of its own (stopped when dropped unused).
pub struct Count(JoinHandle<Result<u64>>);

impl Count {
    pub fn start(source: &Source, scope: &Scope) -> Self {
        let (source, scope) = (source.clone(), scope.clone());
        Count(tokio::spawn(
            async move { source.count_scope(&scope).await },
        ))
    }

    pub async fn result(mut self) -> Result<u64> {
        (&mut self.0).await.map_err(ArchiveError::CountStopped)?
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The windows of `written` whose rows MongoDB's count does not confirm, with that count; none
/// when the scope's `count` equals the `streamed` rows.
pub async fn mismatches(
    source: &Source,
    count: Count,
    streamed: u64,
    written: &[Written],
) -> Result<BTreeMap<DateTime<Utc>, u64>> {
    let counted = count.result().await?;
    let mut out = BTreeMap::new();
    if counted == streamed {
        return Ok(out);
    }
    tracing::warn!(
        counted,
        streamed,
        windows = written.len(),
        "MongoDB's count differs from the rows streamed; counting window by window"
    );
    for w in written {
        let n = source.count(&w.window).await?;
        if n != w.rows {
            tracing::warn!(window = %w.window.id(), counted = n, streamed = w.rows,
                "count mismatch: the window is read again");
            out.insert(w.window.start, n);
        }
    }
    Ok(out)
}

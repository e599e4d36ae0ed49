//! `verify`: re-reads every recorded window's files (footer row counts and SHA-256) and,
//! where none of the window's events can have expired or been purged yet, compares with
//! MongoDB's count. Any difference is a mismatch; `main` exits 6.

use auditlog_common::store::Store;
use chrono::Utc;
use mongodb::bson::{self, doc};
use serde::Serialize;

use crate::error::Result;
use crate::sink::Sink;
use crate::source::Source;
use crate::state::State;

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub windows: usize,
    pub ok: usize,
    pub mismatches: Vec<Mismatch>,
}

#[derive(Debug, Serialize)]
pub struct Mismatch {
    pub window: String,
    pub problem: String,
}

/// Checks every recorded window; `store` is asked for the TTL index.
pub async fn verify(
    store: &Store,
    source: &Source,
    state: &State,
    sink: &Sink,
) -> Result<VerifyReport> {
    let records = state.all().await?;
    let ttl = auditlog_common::schema::current_ttl(store).await?.flatten();
    let now = Utc::now();
    let mut report = VerifyReport {
        windows: records.len(),
        ok: 0,
        mismatches: vec![],
    };
    for rec in records {
        let w = rec.window();
        let mut problems = vec![];
        let mut rows = 0i64;
        for f in &rec.files {
            match sink.footer_rows(&f.path).await {
                Ok((r, bytes)) => {
                    rows += r as i64;
                    if r as i64 != f.rows {
                        problems.push(format!("{}: {r} rows, recorded {}", f.path, f.rows));
                    }
                    if bytes as i64 != f.bytes {
                        problems.push(format!("{}: {bytes} bytes, recorded {}", f.path, f.bytes));
                    }
                }
                Err(e) => problems.push(format!("{}: cannot read: {e}", f.path)),
            }
            match sink.sha256(&f.path).await {
                Ok(sum) if sum == f.sha256 => {}
                Ok(sum) => {
                    problems.push(format!("{}: sha256 {sum}, recorded {}", f.path, f.sha256))
                }
                Err(_) => {} // already reported above
            }
        }
        if rows != rec.rows {
            problems.push(format!("files hold {rows} rows, recorded {}", rec.rows));
        }
        let none_expired = match ttl {
            Some(t) => w.start + chrono::Duration::seconds(t) > now,
            None => true,
        };
        if rec.purged_at.is_none() && none_expired {
            let count = source.count(&w).await? as i64;
            if count != rec.rows {
                problems.push(format!(
                    "MongoDB holds {count} events, archive {}",
                    rec.rows
                ));
            }
        }
        if problems.is_empty() {
            report.ok += 1;
            state
                .mark(rec.start, doc! { "verified_at": bson::DateTime::now() })
                .await?;
        } else {
            report.mismatches.push(Mismatch {
                window: w.id(),
                problem: problems.join("; "),
            });
        }
    }
    Ok(report)
}

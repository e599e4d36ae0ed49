//! `auditlog post`: one event from flags, or every line of an NDJSON file in batches.
//!
//! Bulk loading sends `POST /v1/events` batches itself rather than through the client's
//! producer, because it must tell which *line* each refusal came from: a batch's results come
//! back in the order sent, so line numbers are exact.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use auditlog_client::{new_event_id, BatchResponse, Client, NewEvent, PostOutcome};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;

use crate::args::PostArgs;
use crate::error::CliError;

/// Half the service's default batch limit (1000): room for a lowered limit.
const DEFAULT_BATCH_SIZE: usize = 500;
/// Enough to keep the service's group commit busy without filling its queue (20,000).
const DEFAULT_CONCURRENCY: usize = 4;
/// How many refusals the summary lists (the rest are counted).
const REFUSALS_SHOWN: usize = 10;
/// Attempts for a batch (or the events of it) the service answered with a transient status.
const ATTEMPTS: u32 = 5;

pub async fn run(client: &Client, args: &PostArgs, mut out: impl Write) -> Result<(), CliError> {
    if let Some(path) = &args.ndjson {
        let batch_size = args.batch_size.map_or(DEFAULT_BATCH_SIZE, |n| n as usize);
        let concurrency = args.concurrency.map_or(DEFAULT_CONCURRENCY, |n| n as usize);
        return post_ndjson(client, path, batch_size, concurrency, out).await;
    }
    // clap requires both unless --ndjson is given.
    let (Some(kind), Some(consumer)) = (&args.kind, &args.consumer) else {
        return Err(CliError::Usage(
            "--type and --consumer are required (or --ndjson)".into(),
        ));
    };
    let mut event = NewEvent::new(kind, consumer);
    if let Some(spec) = &args.payload {
        event.payload = read_payload(spec)?;
    }
    event.id = args.id.clone();
    let posted = client.post_event(&event).await?;
    let note = match posted.outcome {
        PostOutcome::Created => "",
        PostOutcome::AlreadyStored => " already stored",
        PostOutcome::Queued => " queued",
    };
    writeln!(out, "{} {}{note}", posted.ack.id, posted.ack.created_at).map_err(CliError::Output)
}

/// `--payload`: JSON text, `@FILE`, or `-` for standard input. `null` means no payload, as
/// in the API.
fn read_payload(spec: &str) -> Result<Option<Value>, CliError> {
    let (text, source) = if spec == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::io("standard input", e))?;
        (text, "standard input".to_owned())
    } else if let Some(file) = spec.strip_prefix('@') {
        let text = std::fs::read_to_string(file).map_err(|e| CliError::io(file, e))?;
        (text, file.to_owned())
    } else {
        (spec.to_owned(), "--payload".to_owned())
    };
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{source}: not valid JSON: {e}")))?;
    Ok((!value.is_null()).then_some(value))
}

/// A line the service or the parser refused.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    code: String,
    message: String,
}

/// What one batch came to.
#[derive(Debug, Default)]
struct BatchOutcome {
    accepted: u64,
    refused: Vec<(u64, Refusal)>,
    /// The batch could not be sent: the error, and the lines not accepted or refused.
    failed: Option<(auditlog_client::Error, Vec<u64>)>,
}

/// The running totals and the first refusals by line number.
#[derive(Debug, Default)]
struct Tally {
    lines: u64,
    accepted: u64,
    refused: u64,
    first: BTreeMap<u64, Refusal>,
}

impl Tally {
    fn refuse(&mut self, line: u64, refusal: Refusal) {
        self.refused += 1;
        self.first.insert(line, refusal);
        // Keep the lowest line numbers only: batches finish out of reading order.
        while self.first.len() > REFUSALS_SHOWN {
            self.first.pop_last();
        }
    }

    fn add(&mut self, outcome: BatchOutcome) -> Option<(auditlog_client::Error, Vec<u64>)> {
        self.accepted += outcome.accepted;
        for (line, r) in outcome.refused {
            self.refuse(line, r);
        }
        outcome.failed
    }

    fn summary(&self) -> String {
        let mut text = format!("accepted {}, refused {}\n", self.accepted, self.refused);
        for (line, r) in &self.first {
            text.push_str(&format!("  line {line}: {}: {}\n", r.code, r.message));
        }
        let more = self.refused - self.first.len() as u64;
        if more > 0 {
            text.push_str(&format!("  … and {more} more\n"));
        }
        text
    }
}

async fn post_ndjson(
    client: &Client,
    path: &Path,
    batch_size: usize,
    concurrency: usize,
    mut out: impl Write,
) -> Result<(), CliError> {
    let (input, total_bytes): (Box<dyn AsyncRead + Unpin>, Option<u64>) = if path == Path::new("-")
    {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| CliError::io(path, e))?;
        let len = file.metadata().await.ok().map(|m| m.len());
        (Box::new(file), len)
    };
    let name: PathBuf = if path == Path::new("-") {
        "standard input".into()
    } else {
        path.to_path_buf()
    };
    let progress = progress_bar(total_bytes);
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut tally = Tally::default();
    let mut inflight: std::collections::VecDeque<JoinHandle<BatchOutcome>> = Default::default();
    let mut batch: Vec<(u64, NewEvent)> = Vec::with_capacity(batch_size);
    let mut failure: Option<(auditlog_client::Error, Vec<u64>)> = None;
    let mut buf = Vec::new();
    let mut line_no: u64 = 0;
    let mut bytes_read: u64 = 0;

    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| CliError::io(&name, e))?;
        let eof = n == 0;
        if !eof {
            line_no += 1;
            bytes_read += n as u64;
            progress.set_position(if total_bytes.is_some() {
                bytes_read
            } else {
                line_no
            });
            if let Some(parsed) = parse_line(&buf) {
                tally.lines += 1;
                match parsed {
                    Ok(event) => batch.push((line_no, event)),
                    Err(refusal) => tally.refuse(line_no, refusal),
                }
            }
        }
        if batch.len() >= batch_size || (eof && !batch.is_empty()) {
            // At most `concurrency` batches in flight: wait for the oldest before sending.
            while inflight.len() >= concurrency {
                if let Some(done) = inflight.pop_front() {
                    failure = failure.or(tally.add(join(done).await));
                }
            }
            if failure.is_some() {
                break;
            }
            let client = client.clone();
            let events = std::mem::take(&mut batch);
            inflight.push_back(tokio::spawn(send_batch(client, events)));
        }
        progress.set_message(format!(
            "accepted {}, refused {}",
            tally.accepted, tally.refused
        ));
        if eof {
            break;
        }
    }
    while let Some(done) = inflight.pop_front() {
        let failed = tally.add(join(done).await);
        failure = failure.or(failed);
    }
    progress.finish_and_clear();

    if let Some((error, unsent)) = failure {
        if tally.accepted + tally.refused > 0 {
            out.write_all(tally.summary().as_bytes())
                .map_err(CliError::Output)?;
        }
        // The first batch that failed says where sending stopped (others may have succeeded
        // after it, with concurrency; the counts say what is known).
        let from = unsent.first().copied().unwrap_or(line_no + 1);
        let context = if tally.accepted + tally.refused > 0 || from > 1 {
            format!(
                " (sending stopped: accepted {}, refused {}; lines from {from} on not all sent)",
                tally.accepted, tally.refused
            )
        } else {
            String::new()
        };
        return Err(with_context(CliError::Client(error), &context));
    }
    out.write_all(tally.summary().as_bytes())
        .map_err(CliError::Output)?;
    if tally.refused > 0 {
        return Err(CliError::Refused {
            refused: tally.refused,
            total: tally.lines,
        });
    }
    Ok(())
}

/// Adds `context` to a client error's one line, keeping its kind (and so its exit code).
fn with_context(e: CliError, context: &str) -> CliError {
    match e {
        CliError::Client(auditlog_client::Error::Transport(m)) => {
            CliError::Client(auditlog_client::Error::Transport(format!("{m}{context}")))
        }
        CliError::Client(auditlog_client::Error::Api {
            status,
            code,
            message,
            retry_after,
        }) => CliError::Client(auditlog_client::Error::Api {
            status,
            code,
            message: format!("{message}{context}"),
            retry_after,
        }),
        other => other,
    }
}

async fn join(handle: JoinHandle<BatchOutcome>) -> BatchOutcome {
    handle.await.unwrap_or_else(|e| BatchOutcome {
        failed: Some((
            auditlog_client::Error::Transport(format!("a sending task failed: {e}")),
            vec![],
        )),
        ..Default::default()
    })
}

/// One NDJSON line as an event, or why it is refused; `None` for a blank line (skipped, as
/// the service skips them). The codes are the service's, so a summary reads the same
/// whoever refused a line.
fn parse_line(line: &[u8]) -> Option<Result<NewEvent, Refusal>> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return None;
    }
    let value: Value = match serde_json::from_slice(trimmed) {
        Ok(v) => v,
        Err(e) => {
            return Some(Err(Refusal {
                code: "malformed_json".into(),
                message: format!("not valid JSON: {}", json_error(&e)),
            }))
        }
    };
    Some(match serde_json::from_value::<NewEvent>(value) {
        Ok(mut event) => {
            // An id of our own makes resending a batch after a transient failure safe: the
            // service stores an event it already has once, and answers 200.
            if event.id.is_none() {
                event.id = Some(new_event_id());
            }
            Ok(event)
        }
        Err(e) => Err(Refusal {
            code: "invalid_event".into(),
            message: e.to_string(),
        }),
    })
}

/// serde_json's message without its " at line 1 column N" (every line is line 1 here).
fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("{message} at column {}", e.column()),
        None => text,
    }
}

/// Sends one batch, resending the events (or the whole batch) the service answered with a
/// transient status — 429, 502, 503, 504, or no answer — up to [`ATTEMPTS`] times.
async fn send_batch(client: Client, batch: Vec<(u64, NewEvent)>) -> BatchOutcome {
    let (lines, events): (Vec<u64>, Vec<NewEvent>) = batch.into_iter().unzip();
    let mut outcome = BatchOutcome::default();
    let mut pending: Vec<usize> = (0..events.len()).collect();
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=ATTEMPTS {
        let last = attempt == ATTEMPTS;
        let answer = if pending.len() == events.len() {
            client.post_events(&events).await
        } else {
            let subset: Vec<NewEvent> = pending.iter().map(|&i| events[i].clone()).collect();
            client.post_events(&subset).await
        };
        let wait = match answer {
            Ok(resp) => match settle(&resp, &pending, &lines, last, &mut outcome) {
                Ok(retry) if retry.is_empty() => return outcome,
                Ok(retry) => {
                    pending = retry;
                    None
                }
                Err(e) => {
                    outcome.failed = Some((e, pending.iter().map(|&i| lines[i]).collect()));
                    return outcome;
                }
            },
            Err(e) if e.is_transient() && !last => e.retry_after(),
            Err(e) => {
                outcome.failed = Some((e, pending.iter().map(|&i| lines[i]).collect()));
                return outcome;
            }
        };
        tokio::time::sleep(wait.unwrap_or(delay).min(Duration::from_secs(30))).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    outcome
}

/// Counts a batch answer into `outcome`; returns the indexes (into the whole batch) to send
/// again.
fn settle(
    resp: &BatchResponse,
    pending: &[usize],
    lines: &[u64],
    last: bool,
    outcome: &mut BatchOutcome,
) -> Result<Vec<usize>, auditlog_client::Error> {
    if resp.results.len() != pending.len() {
        return Err(auditlog_client::Error::Decode(format!(
            "{} results for a batch of {} events",
            resp.results.len(),
            pending.len()
        )));
    }
    let mut retry = vec![];
    for (item, &i) in resp.results.iter().zip(pending) {
        if item.is_accepted() {
            outcome.accepted += 1;
        } else if matches!(item.status, 429 | 502 | 503 | 504) && !last {
            retry.push(i);
        } else {
            let refusal = match &item.error {
                Some(d) => Refusal {
                    code: d.code.clone(),
                    message: d.message.clone(),
                },
                None => Refusal {
                    code: item.status.to_string(),
                    message: format!("status {}", item.status),
                },
            };
            outcome.refused.push((lines[i], refusal));
        }
    }
    Ok(retry)
}

/// A bar over the file's bytes (a counter of lines for standard input), drawn only when
/// standard error is a terminal: in a pipeline or a log it would be noise.
fn progress_bar(total_bytes: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match total_bytes {
        Some(len) => {
            let bar = ProgressBar::new(len);
            if let Ok(style) =
                ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {elapsed} {msg}")
            {
                bar.set_style(style);
            }
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {pos} lines {elapsed} {msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditlog_client::{BatchItem, ErrorDetail};

    #[test]
    fn lines_are_events_or_refusals() {
        assert!(parse_line(b"   \r\n").is_none());
        let e = parse_line(br#"{"type":"t","consumer":"c","payload":{"a":1}}"#)
            .unwrap()
            .unwrap();
        assert_eq!((e.kind.as_str(), e.consumer.as_str()), ("t", "c"));
        assert_eq!(e.id.as_deref().map(str::len), Some(24), "an id is given");
        let e = parse_line(br#"{"type":"t","consumer":"c","id":"628e58fc08808bcd3b2af122"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            e.id.as_deref(),
            Some("628e58fc08808bcd3b2af122"),
            "the file's id is kept"
        );

        let r = parse_line(b"{\"type\": ").unwrap().unwrap_err();
        assert_eq!(r.code, "malformed_json");
        assert!(!r.message.contains("line 1"), "{r:?}");
        let r = parse_line(br#"{"type":"t"}"#).unwrap().unwrap_err();
        assert_eq!(r.code, "invalid_event");
        assert!(r.message.contains("consumer"), "{r:?}");
        let r = parse_line(br#"{"type":"t","consumer":"c","consumr":"x"}"#)
            .unwrap()
            .unwrap_err();
        assert!(r.message.contains("consumr"), "{r:?}");
        let r = parse_line(b"[1,2]").unwrap().unwrap_err();
        assert_eq!(r.code, "invalid_event");
    }

    #[test]
    fn the_summary_lists_the_first_refusals_by_line() {
        let mut t = Tally::default();
        for line in (1..=15).rev() {
            t.refuse(
                line,
                Refusal {
                    code: "c".into(),
                    message: format!("m{line}"),
                },
            );
        }
        t.accepted = 7;
        let s = t.summary();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "accepted 7, refused 15");
        assert_eq!(lines[1], "  line 1: c: m1");
        assert_eq!(lines[10], "  line 10: c: m10");
        assert_eq!(lines[11], "  … and 5 more");
        assert_eq!(lines.len(), 12);
    }

    #[test]
    fn settle_counts_and_picks_transient_failures() {
        let item = |status: u16, code: Option<&str>| BatchItem {
            status,
            id: None,
            created_at: None,
            error: code.map(|c| ErrorDetail::new(c, "msg")),
        };
        let resp = BatchResponse {
            accepted: 2,
            rejected: 2,
            results: vec![
                item(201, None),
                item(422, Some("invalid_event")),
                item(429, Some("busy")),
                item(200, None),
            ],
        };
        let mut o = BatchOutcome::default();
        let retry = settle(&resp, &[0, 1, 2, 3], &[10, 11, 12, 13], false, &mut o).unwrap();
        assert_eq!(retry, vec![2]);
        assert_eq!(o.accepted, 2);
        assert_eq!(
            o.refused,
            vec![(
                11,
                Refusal {
                    code: "invalid_event".into(),
                    message: "msg".into()
                }
            )]
        );

        let mut o = BatchOutcome::default();
        let retry = settle(&resp, &[0, 1, 2, 3], &[10, 11, 12, 13], true, &mut o).unwrap();
        assert!(retry.is_empty());
        assert_eq!(
            o.refused.len(),
            2,
            "the last attempt refuses what is still transient"
        );
        assert!(settle(&resp, &[0], &[10], false, &mut BatchOutcome::default()).is_err());
    }

    #[test]
    fn payloads() {
        assert_eq!(
            read_payload(r#"{"a":1}"#).unwrap(),
            Some(serde_json::json!({"a": 1}))
        );
        assert_eq!(read_payload("null").unwrap(), None);
        let e = read_payload("{oops").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().starts_with("--payload: not valid JSON"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.json");
        std::fs::write(&f, r#"{"from":"file"}"#).unwrap();
        assert_eq!(
            read_payload(&format!("@{}", f.display())).unwrap(),
            Some(serde_json::json!({"from": "file"}))
        );
        assert_eq!(
            read_payload("@/nonexistent/p.json")
                .unwrap_err()
                .exit_code(),
            1
        );
    }
}

//! Writing events to standard output as a table, a JSON array, NDJSON or CSV — streaming, so
//! that `find` over millions of events holds one page in memory, not the whole answer.

use std::io::Write;

use auditlog_client::Event;

/// The output formats; `find` offers all four, `tail` NDJSON and table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Ndjson,
    Csv,
}

/// Widths of the table's columns, in characters. TIME and ID always have the API's fixed
/// sizes; TYPE and CONSUMER are sized from the first rows (or fixed when following).
const TIME_WIDTH: usize = 24;
const ID_WIDTH: usize = 24;
const MAX_NAME_WIDTH: usize = 32;
const FOLLOW_TYPE_WIDTH: usize = 20;
const FOLLOW_CONSUMER_WIDTH: usize = 16;
/// The payload column shows this many characters of the compact JSON, then `…`.
const PAYLOAD_WIDTH: usize = 60;
/// Rows a table reads before it fixes its column widths and starts printing.
const TABLE_SIZING_ROWS: usize = 1000;

/// Writes events in one format. Call [`EventWriter::finish`] at the end: it closes a JSON
/// array, prints a table of fewer rows than its sizing window, and flushes.
pub struct EventWriter<W: Write> {
    inner: Inner<W>,
    /// Flush after every event (`tail -f`: each line as soon as it is known).
    flush_each: bool,
}

enum Inner<W: Write> {
    Table {
        out: W,
        /// Rows waiting for the column widths to be fixed.
        pending: Vec<[String; 5]>,
        /// (type, consumer) widths once fixed.
        widths: Option<(usize, usize)>,
    },
    Json {
        out: W,
        first: bool,
    },
    Ndjson {
        out: W,
    },
    Csv {
        // Boxed: the CSV writer carries its own buffer, far larger than the other variants.
        out: Box<csv::Writer<W>>,
    },
}

impl<W: Write> EventWriter<W> {
    /// A writer for a one-off answer (`find`, `tail` without `-f`).
    pub fn new(out: W, format: Format) -> Self {
        Self::with(out, format, false)
    }

    /// A writer for an endless stream (`tail -f`): every event is flushed at once, and a
    /// table has fixed column widths, since there is no end to size them from.
    pub fn following(out: W, format: Format) -> Self {
        Self::with(out, format, true)
    }

    fn with(out: W, format: Format, follow: bool) -> Self {
        let inner = match format {
            Format::Table => Inner::Table {
                out,
                pending: vec![],
                widths: follow.then_some((FOLLOW_TYPE_WIDTH, FOLLOW_CONSUMER_WIDTH)),
            },
            Format::Json => Inner::Json { out, first: true },
            Format::Ndjson => Inner::Ndjson { out },
            Format::Csv => {
                let mut out = csv::Writer::from_writer(out);
                // The header goes out even when no event follows, so a script can read it.
                let _ = out.write_record(["id", "type", "consumer", "created_at", "payload"]);
                Inner::Csv { out: Box::new(out) }
            }
        };
        let mut w = EventWriter {
            inner,
            flush_each: follow,
        };
        if follow {
            if let Inner::Table {
                out,
                widths: Some(widths),
                ..
            } = &mut w.inner
            {
                let _ = write_row(out, &header(), *widths);
            }
        }
        w
    }

    pub fn write(&mut self, event: &Event) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Table {
                out,
                pending,
                widths,
            } => {
                let row = table_row(event);
                match widths {
                    Some(w) => write_row(out, &row, *w)?,
                    None => {
                        pending.push(row);
                        if pending.len() >= TABLE_SIZING_ROWS {
                            *widths = Some(flush_pending(out, pending)?);
                        }
                    }
                }
            }
            Inner::Json { out, first } => {
                out.write_all(if *first { b"[\n" } else { b",\n" })?;
                *first = false;
                serde_json::to_writer(&mut *out, event)?;
            }
            Inner::Ndjson { out } => {
                serde_json::to_writer(&mut *out, event)?;
                out.write_all(b"\n")?;
            }
            Inner::Csv { out } => {
                let payload = match &event.payload {
                    Some(p) => serde_json::to_string(p)?,
                    None => String::new(),
                };
                out.write_record([
                    event.id.as_str(),
                    event.kind.as_str(),
                    event.consumer.as_str(),
                    event.created_at.as_str(),
                    payload.as_str(),
                ])
                .map_err(csv_error)?;
            }
        }
        if self.flush_each {
            self.flush()?;
        }
        Ok(())
    }

    /// Ends the output (closes the JSON array, prints a short table) and flushes it.
    pub fn finish(mut self) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Table {
                out,
                pending,
                widths,
            } => {
                if widths.is_none() {
                    flush_pending(out, pending)?;
                }
            }
            Inner::Json { out, first } => {
                out.write_all(if *first { b"[]\n" } else { b"\n]\n" })?;
            }
            Inner::Ndjson { .. } | Inner::Csv { .. } => {}
        }
        self.flush()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Table { out, .. } | Inner::Json { out, .. } | Inner::Ndjson { out } => {
                out.flush()
            }
            Inner::Csv { out } => out.flush(),
        }
    }
}

fn csv_error(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

fn header() -> [String; 5] {
    ["TIME", "TYPE", "CONSUMER", "ID", "PAYLOAD"].map(str::to_owned)
}

fn table_row(e: &Event) -> [String; 5] {
    let payload = e
        .payload
        .as_ref()
        .map(|p| shorten(&p.to_string(), PAYLOAD_WIDTH))
        .unwrap_or_default();
    [
        shorten(&e.created_at, TIME_WIDTH),
        shorten(&e.kind, MAX_NAME_WIDTH),
        shorten(&e.consumer, MAX_NAME_WIDTH),
        shorten(&e.id, ID_WIDTH),
        payload,
    ]
}

/// Sizes the TYPE and CONSUMER columns from the header and `pending`, prints them all, and
/// returns the widths for the rows after.
fn flush_pending<W: Write>(
    out: &mut W,
    pending: &mut Vec<[String; 5]>,
) -> std::io::Result<(usize, usize)> {
    let head = header();
    let width = |col: usize| {
        pending
            .iter()
            .chain(std::iter::once(&head))
            .map(|r| r[col].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = (width(1), width(2));
    write_row(out, &head, widths)?;
    for row in pending.drain(..) {
        write_row(out, &row, widths)?;
    }
    Ok(widths)
}

fn write_row<W: Write>(
    out: &mut W,
    row: &[String; 5],
    (tw, cw): (usize, usize),
) -> std::io::Result<()> {
    let line = format!(
        "{:<TIME_WIDTH$}  {:<tw$}  {:<cw$}  {:<ID_WIDTH$}  {}",
        row[0],
        shorten(&row[1], tw),
        shorten(&row[2], cw),
        row[3],
        row[4],
    );
    writeln!(out, "{}", line.trim_end())
}

/// `text` on one line, at most `max` characters: control characters (a newline in a type
/// would break the table) are escaped, and a longer text ends in `…`.
fn shorten(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    if clean.chars().count() <= max {
        return clean;
    }
    let mut cut: String = clean.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn event(id: &str, kind: &str, consumer: &str, payload: Option<Value>) -> Event {
        serde_json::from_value(json!({
            "id": id, "type": kind, "consumer": consumer,
            "created_at": "2026-11-27T04:05:58.196Z", "payload": payload,
        }))
        .unwrap()
    }

    fn sample() -> Vec<Event> {
        vec![
            event(
                "6565b3f0c1a2b3c4d5e6f708",
                "login",
                "c1",
                Some(json!({"ok": true})),
            ),
            event(
                "6565b3f0c1a2b3c4d5e6f709",
                "invoice.paid",
                "billing-eu",
                None,
            ),
            event(
                "6565b3f0c1a2b3c4d5e6f70a",
                "odd\ntype, \"quoted\"",
                "c1",
                Some(json!({"text": "x".repeat(100), "n": 1})),
            ),
        ]
    }

    fn render(format: Format, events: &[Event], follow: bool) -> String {
        let mut buf = vec![];
        let mut w = if follow {
            EventWriter::following(&mut buf, format)
        } else {
            EventWriter::new(&mut buf, format)
        };
        for e in events {
            w.write(e).unwrap();
        }
        w.finish().unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn json_is_one_array_and_ndjson_one_event_a_line() {
        let events = sample();
        let json: Value = serde_json::from_str(&render(Format::Json, &events, false)).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 3);
        assert_eq!(json[0]["type"], "login");
        assert_eq!(json[0]["payload"], json!({"ok": true}));
        assert!(
            json[1].get("payload").is_none(),
            "absent payload stays absent: {json}"
        );
        assert_eq!(render(Format::Json, &[], false), "[]\n");

        let nd = render(Format::Ndjson, &events, false);
        let lines: Vec<Value> = nd
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(Value::Array(lines), json);
    }

    #[test]
    fn csv_has_a_header_and_compact_payloads() {
        let events = sample();
        let text = render(Format::Csv, &events, false);
        let mut r = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            r.headers().unwrap(),
            vec!["id", "type", "consumer", "created_at", "payload"]
        );
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(&rows[0][4], r#"{"ok":true}"#);
        assert_eq!(&rows[1][4], "");
        assert_eq!(&rows[2][1], "odd\ntype, \"quoted\"");
        assert_eq!(
            render(Format::Csv, &[], false),
            "id,type,consumer,created_at,payload\n"
        );
    }

    #[test]
    fn table_aligns_and_shortens() {
        let events = sample();
        let text = render(Format::Table, &events, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("TIME"), "{text}");
        // Every row's id starts in the same column as the header's ID.
        let id_col = lines[0].find("ID").unwrap();
        for (line, e) in lines[1..].iter().zip(&events) {
            assert_eq!(line.find(&e.id), Some(id_col), "{text}");
        }
        assert!(
            lines[3].contains("odd\\ntype"),
            "control characters escaped: {text}"
        );
        assert!(lines[3].ends_with('…'), "long payload shortened: {text}");
        assert!(
            !text.contains("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
            "{text}"
        );

        let followed = render(Format::Table, &events[..1], true);
        assert_eq!(followed.lines().count(), 2, "{followed}");
        assert_eq!(render(Format::Table, &[], false).lines().count(), 1);
    }

    #[test]
    fn shorten_counts_characters() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "ab…");
        assert_eq!(shorten("ééééé", 4), "ééé…");
        assert_eq!(shorten("a\tb", 10), "a\\tb");
    }
}

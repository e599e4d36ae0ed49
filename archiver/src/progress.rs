//! Progress of a run: a bar (windows passed, rows, bytes, rate) when stderr is a terminal, log
//! lines otherwise, so a CronJob's log shows every window without control characters.
//!
//! The bar counts the windows a pass's stream has gone past — empty ones included, since only
//! the stream tells which hold events — and the log has a line per window recorded.

use std::io::IsTerminal;
use std::time::Instant;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};

use crate::window::Window;

pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    rows: u64,
    bytes: u64,
    /// The start of the window the stream is in.
    at: DateTime<Utc>,
}

impl Progress {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} windows  {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            rows: 0,
            bytes: 0,
            at: DateTime::<Utc>::MIN_UTC,
        }
    }

    /// A pass over `windows` windows begins at the window starting at `from`.
    pub fn begin_pass(&mut self, windows: u64, from: DateTime<Utc>) {
        if let Some(b) = &self.bar {
            b.inc_length(windows);
        }
        self.at = from;
    }

    /// The start of the window the stream is in.
    pub fn window(&self) -> DateTime<Utc> {
        self.at
    }

    /// The stream moved on to the window starting at `t`.
    pub fn set_window(&mut self, t: DateTime<Utc>) {
        self.at = t;
    }

    /// The stream went past `n` windows.
    pub fn passed(&mut self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn rows(&mut self, n: u64) {
        self.rows += n;
        self.refresh();
    }

    /// A window was recorded.
    pub fn window_done(&mut self, w: &Window, rows: u64, bytes: u64, files: usize) {
        self.bytes += bytes;
        match &self.bar {
            Some(_) => self.refresh(),
            None => tracing::info!(
                window = %w.id(), rows, bytes, files,
                rate_rows_per_s = self.rate(),
                "window archived"
            ),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }

    fn rate(&self) -> u64 {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        (self.rows as f64 / secs) as u64
    }

    fn refresh(&self) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "{} rows  {:.1} MiB  {} rows/s",
                self.rows,
                self.bytes as f64 / (1024.0 * 1024.0),
                self.rate()
            ));
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

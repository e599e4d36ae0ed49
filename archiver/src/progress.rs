//! Progress of a run: a bar (windows, rows, bytes, rate) when stderr is a terminal, log lines
//! otherwise, so a CronJob's log shows every window without control characters.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::window::Window;

pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    rows: u64,
    bytes: u64,
}

impl Progress {
    pub fn new(windows: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(windows);
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
        }
    }

    pub fn set_total(&self, windows: u64) {
        if let Some(b) = &self.bar {
            b.set_length(windows);
        }
    }

    pub fn rows(&mut self, n: u64) {
        self.rows += n;
        self.refresh();
    }

    pub fn window_done(&mut self, w: &Window, rows: u64, bytes: u64, files: usize) {
        self.bytes += bytes;
        match &self.bar {
            Some(b) => {
                b.inc(1);
                self.refresh();
            }
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

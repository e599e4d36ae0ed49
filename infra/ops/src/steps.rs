//! The running account of what a command did or skipped: each line is logged as it happens
//! and printed as a summary at the end, so an operator reading a Job's log sees every step.

use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Steps {
    lines: Mutex<Vec<String>>,
}

impl Steps {
    pub fn push(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!(step = %line, "step");
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

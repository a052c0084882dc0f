//! A one-line progress bar on stderr (only when stderr is a terminal or
//! progress was asked for).

use std::io::Write;
use std::time::Instant;

pub struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    enabled: bool,
}

impl Progress {
    pub fn new(total: usize, enabled: bool) -> Self {
        Self {
            total: total.max(1),
            done: 0,
            started: Instant::now(),
            enabled,
        }
    }

    /// Marks one step done and redraws with `label`.
    pub fn step(&mut self, label: &str) {
        self.done = (self.done + 1).min(self.total);
        if !self.enabled {
            return;
        }
        const WIDTH: usize = 30;
        let filled = WIDTH * self.done / self.total;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {:>3}/{} {:>5.1}s  {:<48.48}",
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            self.done,
            self.total,
            self.started.elapsed().as_secs_f64(),
            label
        );
        if self.done == self.total {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}

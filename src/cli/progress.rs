//! Progress of a long maintenance command: a bar on a terminal, a log line every few
//! seconds otherwise (a pipe, a log collector, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a log line reports progress when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Counts rows done out of an expected total, and shows it.
pub struct Progress {
    task: &'static str,
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    started: Instant,
    last_logged: Instant,
}

impl Progress {
    /// Starts showing `task`, expecting about `total` rows (a total that grows meanwhile is
    /// fine: the count is what matters).
    pub fn start(task: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows, eta {eta}",
                )
                .expect("a valid template"),
            );
            bar.set_prefix(task);
            bar
        });
        tracing::info!(task, total, "started");
        let now = Instant::now();
        Self {
            task,
            bar,
            total,
            done: 0,
            started: now,
            last_logged: now,
        }
    }

    /// Records `rows` more rows done.
    pub fn advance(&mut self, rows: u64) {
        self.done += rows;
        if let Some(bar) = &self.bar {
            if self.done > self.total {
                self.total = self.done;
                bar.set_length(self.total);
            }
            bar.set_position(self.done);
        } else if self.last_logged.elapsed() >= LOG_EVERY {
            self.last_logged = Instant::now();
            self.log("progress");
        }
    }

    /// Clears the bar and logs the final count and rate.
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.log("finished");
    }

    /// Rows per second so far.
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    fn log(&self, message: &'static str) {
        tracing::info!(
            task = self.task,
            done = self.done,
            total = self.total,
            rows_per_second = self.rate().round(),
            elapsed_secs = self.started.elapsed().as_secs(),
            "{message}"
        );
    }
}

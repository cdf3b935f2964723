//! Progress on stderr for offline commands that take longer than a second.
//!
//! A command names its phases ("reading s2.car", "verifying 100000 manifests") and bumps a
//! counter as it goes; a thread redraws one status line on stderr a few times a second, but
//! only once the command has run for [`PROGRESS_DELAY`] and only when stderr is a terminal, so
//! quick commands, pipes, logs and `--json` readers never see it. The line is erased when the
//! command ends, before its report is printed.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a command runs before its progress shows.
pub const PROGRESS_DELAY: Duration = Duration::from_secs(1);
/// How often the status line is redrawn.
const REDRAW_INTERVAL: Duration = Duration::from_millis(250);

/// What a phase counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes, shown in MB.
    Bytes,
    /// Things named by the phase label (manifests, cards).
    Items,
    /// Nothing: the phase shows only its elapsed time.
    None,
}

struct Phase {
    label: String,
    total: u64,
    unit: Unit,
    started: Instant,
}

struct Shared {
    phase: Mutex<Option<Phase>>,
    done: Arc<AtomicU64>,
    stopped: Mutex<bool>,
    wake: Condvar,
    drawn: AtomicBool,
}

/// A progress reporter for one command; stops and erases its line when dropped.
pub struct Progress {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts reporting to stderr, if stderr is a terminal; otherwise phases are tracked and
    /// nothing is shown.
    pub fn start() -> Self {
        if std::io::stderr().is_terminal() {
            Self::to_writer(Box::new(std::io::stderr()), PROGRESS_DELAY)
        } else {
            Self::silent()
        }
    }

    /// A reporter that shows nothing.
    pub fn silent() -> Self {
        Self {
            shared: Self::shared(),
            thread: None,
        }
    }

    /// Reports to `out` once `delay` has passed (tests use a short delay and a buffer).
    pub fn to_writer(mut out: Box<dyn Write + Send>, delay: Duration) -> Self {
        let shared = Self::shared();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let shared = thread_shared;
                let mut wait = delay;
                loop {
                    let stopped = shared
                        .stopped
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let (stopped, _) = shared
                        .wake
                        .wait_timeout_while(stopped, wait, |stopped| !*stopped)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if *stopped {
                        break;
                    }
                    drop(stopped);
                    wait = REDRAW_INTERVAL;
                    if let Some(line) = shared.line() {
                        // A terminal that cannot be written to is no reason to fail a command.
                        let _ = write!(out, "\r\x1b[2K{line}");
                        let _ = out.flush();
                        shared.drawn.store(true, Ordering::Relaxed);
                    }
                }
                if shared.drawn.load(Ordering::Relaxed) {
                    let _ = write!(out, "\r\x1b[2K");
                    let _ = out.flush();
                }
            })
            .ok();
        Self { shared, thread }
    }

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            phase: Mutex::new(None),
            done: Arc::new(AtomicU64::new(0)),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
            drawn: AtomicBool::new(false),
        })
    }

    /// Starts a phase of `total` units (0 if unknown) and returns its counter, reset to 0.
    pub fn phase(&self, label: impl Into<String>, total: u64, unit: Unit) -> Arc<AtomicU64> {
        self.shared.done.store(0, Ordering::Relaxed);
        *self
            .shared
            .phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Phase {
            label: label.into(),
            total,
            unit,
            started: Instant::now(),
        });
        self.shared.done.clone()
    }

    /// Wraps a reader so the bytes read count toward the current phase.
    pub fn reader<R: std::io::Read>(&self, inner: R) -> CountingReader<R> {
        CountingReader {
            inner,
            counter: self.shared.done.clone(),
        }
    }
}

impl Shared {
    /// The status line for the current phase.
    fn line(&self) -> Option<String> {
        let phase = self
            .phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let phase = phase.as_ref()?;
        let done = self.done.load(Ordering::Relaxed);
        let seconds = phase.started.elapsed().as_secs_f64();
        let megabytes = |n: u64| n as f64 / 1_000_000.0;
        let counted = match phase.unit {
            Unit::None => String::new(),
            Unit::Bytes if phase.total > 0 => format!(
                " {:.1}/{:.1} MB ({}%)",
                megabytes(done),
                megabytes(phase.total),
                done.saturating_mul(100) / phase.total
            ),
            Unit::Bytes => format!(" {:.1} MB", megabytes(done)),
            Unit::Items if phase.total > 0 => format!(
                " {done}/{} ({}%)",
                phase.total,
                done.saturating_mul(100) / phase.total
            ),
            Unit::Items => format!(" {done}"),
        };
        Some(format!("{}:{counted} {seconds:.1}s", phase.label))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        *self
            .shared
            .stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A reader that adds the bytes it reads to a progress counter.
pub struct CountingReader<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.counter.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A writer the test can read after the reporter is done.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn shows_phases_and_counts_after_the_delay_then_erases_its_line() {
        let out = Captured::default();
        let progress = Progress::to_writer(Box::new(out.clone()), Duration::from_millis(20));
        let counter = progress.phase("verifying 200 manifests", 200, Unit::Items);
        counter.fetch_add(50, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(120));
        let mut reader = progress.reader(&[7u8; 3000][..]);
        progress.phase("reading s.car", 3000, Unit::Bytes);
        std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        drop(progress);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("verifying 200 manifests: 50/200 (25%)"),
            "{text:?}"
        );
        assert!(
            text.contains("reading s.car: 0.0/0.0 MB (100%)"),
            "{text:?}"
        );
        assert!(
            text.ends_with("\r\x1b[2K"),
            "the line is erased at the end: {text:?}"
        );
    }

    #[test]
    fn a_quick_command_shows_nothing() {
        let out = Captured::default();
        let progress = Progress::to_writer(Box::new(out.clone()), Duration::from_secs(5));
        progress.phase("reading", 10, Unit::Bytes);
        drop(progress);
        assert!(out.0.lock().unwrap().is_empty());
    }
}

//! A results file: the runs of a long simulation campaign, one JSON line each, so that a run
//! of thousands of seeds can stop (a session ends, a machine reboots) and go on later with
//! `--results FILE`, skipping what is already recorded and reporting on all of it.
//!
//! Each finished run is appended as soon as it finishes (its [`Report::to_json`] object); each
//! invocation ends with a line `{"wall_secs": S, "runs": N}` recording how long it ran, so the
//! report of the whole campaign can say how long it took. The file is only ever appended to:
//! a line this module cannot read stops the run with an error naming it, and nothing recorded
//! is rewritten. The one exception is a last line cut short (the process was killed while
//! writing it): it is left out, and cut off the file before the next append. One process at a
//! time may use a file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};

use crate::scenarios::{Report, SCENARIOS};

/// Longest line read from a results file, in bytes (a run's line is well under 4 KiB).
pub const RESULTS_LINE_BYTES_MAX: usize = 64 * 1024;

/// Largest results file read, in bytes: it is read whole and its runs kept in memory (a
/// swarm run's line is about 300 bytes, so this holds some three million runs).
pub const RESULTS_FILE_BYTES_MAX: u64 = 1 << 30;

/// Most distinct figure names a results file may use (the scenarios use a few dozen); names
/// read from files are kept for the life of the process, so their number is bounded.
pub const FIGURE_NAMES_MAX: usize = 256;

/// Longest figure name read from a results file, in bytes.
pub const FIGURE_NAME_BYTES_MAX: usize = 64;

/// Why a results file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResultsError {
    /// The file could not be read, created or appended to.
    #[error("results file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than the limit; start a new one (`--first-seed` splits a run).
    #[error("results file {path}: {bytes} bytes, more than {max}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The limit ([`RESULTS_FILE_BYTES_MAX`]).
        max: u64,
    },
    /// A line is not a run or a session record; the file is left as it is.
    #[error("results file {path}, line {line}: {reason}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a results file holds: the runs recorded so far and the wall-clock time spent on them.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Every run recorded, by scenario and seed (a run recorded twice: the later line).
    pub runs: BTreeMap<(&'static str, u64), Report>,
    /// Wall-clock seconds of every invocation that finished and said so.
    pub wall_secs: f64,
    /// Whether the last line was cut short and left out.
    pub cut_short: bool,
    /// Bytes of the file up to the end of its last whole line (what an append keeps).
    pub whole_bytes: u64,
    /// Whether the file's last line, read whole, lacks its newline.
    pub needs_newline: bool,
}

/// Reads the results file at `path`; a file that does not exist yet holds nothing.
pub fn read(path: &Path) -> Result<Recorded, ResultsError> {
    read_at_most(path, RESULTS_FILE_BYTES_MAX)
}

fn read_at_most(path: &Path, max: u64) -> Result<Recorded, ResultsError> {
    let io = |source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    match File::open(path) {
        Ok(file) => {
            let bytes = file.metadata().map_err(io)?.len();
            if bytes > max {
                return Err(ResultsError::TooLarge {
                    path: path.to_path_buf(),
                    bytes,
                    max,
                });
            }
            // `take` keeps the bound if the file grows while it is read.
            file.take(max.saturating_add(1))
                .read_to_string(&mut text)
                .map_err(io)?;
            if text.len() as u64 > max {
                return Err(ResultsError::TooLarge {
                    path: path.to_path_buf(),
                    bytes: text.len() as u64,
                    max,
                });
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Recorded::default());
        }
        Err(error) => return Err(io(error)),
    }
    let mut recorded = Recorded::default();
    let complete = text.is_empty() || text.ends_with('\n');
    recorded.whole_bytes = text.rfind('\n').map_or(0, |at| at as u64 + 1);
    let lines: Vec<&str> = text.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        let bad = |reason: String| ResultsError::BadLine {
            path: path.to_path_buf(),
            line: number,
            reason,
        };
        if line.trim().is_empty() {
            continue;
        }
        let last_and_cut = !complete && number == lines.len();
        let parsed = if line.len() > RESULTS_LINE_BYTES_MAX {
            Err(format!(
                "{} bytes, more than {RESULTS_LINE_BYTES_MAX}",
                line.len()
            ))
        } else {
            serde_json::from_str::<Value>(line).map_err(|error| format!("not JSON: {error}"))
        };
        let value = match parsed {
            Ok(value) => value,
            Err(_) if last_and_cut => {
                recorded.cut_short = true;
                continue;
            }
            Err(reason) => return Err(bad(reason)),
        };
        if value.get("scenario").is_some() {
            let report = report_from_json(&value).map_err(bad)?;
            recorded.runs.insert((report.scenario, report.seed), report);
        } else if let Some(secs) = value.get("wall_secs") {
            match secs.as_f64() {
                Some(secs) if secs.is_finite() && secs >= 0.0 => recorded.wall_secs += secs,
                _ => return Err(bad("wall_secs is not a number of seconds".into())),
            }
        } else {
            return Err(bad(
                "neither a run (scenario, seed, ...) nor wall_secs".into()
            ));
        }
    }
    recorded.needs_newline = !complete && !recorded.cut_short;
    Ok(recorded)
}

/// A report from its [`Report::to_json`] form.
pub fn report_from_json(value: &Value) -> Result<Report, String> {
    let name = value
        .get("scenario")
        .and_then(Value::as_str)
        .ok_or("scenario is not a string")?;
    let scenario = SCENARIOS
        .iter()
        .copied()
        .find(|known| *known == name)
        .ok_or_else(|| format!("unknown scenario `{name}`"))?;
    let seed = value
        .get("seed")
        .and_then(Value::as_u64)
        .ok_or("seed is not a whole number")?;
    let failures = match value.get("failures") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or("failures are not all strings")?,
        _ => return Err("failures is not a list".into()),
    };
    let passed = value.get("passed").and_then(Value::as_bool);
    if passed != Some(failures.is_empty()) {
        return Err("passed does not match the failures listed".into());
    }
    let mut figures = BTreeMap::new();
    match value.get("figures") {
        Some(Value::Object(map)) => {
            for (name, figure) in map {
                figures.insert(figure_name(name)?, figure.clone());
            }
        }
        _ => return Err("figures is not an object".into()),
    }
    Ok(Report {
        scenario,
        seed,
        failures,
        figures,
    })
}

/// The `'static` name for a figure read from a file: each distinct name is kept once.
fn figure_name(name: &str) -> Result<&'static str, String> {
    static NAMES: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
    if name.is_empty() || name.len() > FIGURE_NAME_BYTES_MAX {
        return Err(format!(
            "a figure name must have 1 to {FIGURE_NAME_BYTES_MAX} bytes"
        ));
    }
    let mut names = match NAMES.get_or_init(Default::default).lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(known) = names.get(name) {
        return Ok(known);
    }
    if names.len() >= FIGURE_NAMES_MAX {
        return Err(format!(
            "more than {FIGURE_NAMES_MAX} distinct figure names"
        ));
    }
    let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(kept);
    Ok(kept)
}

/// A results file open for appending.
#[derive(Debug)]
pub struct Appender {
    path: PathBuf,
    file: File,
}

impl Appender {
    /// Opens (or creates) the file at `path`, as [`read`] found it, for appending: a last line
    /// cut short is cut off, and a whole last line without its newline gets one.
    pub fn open(path: &Path, recorded: &Recorded) -> Result<Self, ResultsError> {
        let mut appender = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(|file| Self {
                path: path.to_path_buf(),
                file,
            })
            .map_err(|source| ResultsError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if recorded.cut_short {
            appender
                .file
                .set_len(recorded.whole_bytes)
                .map_err(|source| ResultsError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
        } else if recorded.needs_newline {
            appender.write_line("")?;
        }
        Ok(appender)
    }

    /// Appends one finished run.
    pub fn run(&mut self, report: &Report) -> Result<(), ResultsError> {
        self.write_line(&report.to_json().to_string())
    }

    /// Appends the record of this invocation: its wall-clock time and how many runs it made.
    pub fn session(&mut self, wall_secs: f64, runs: usize) -> Result<(), ResultsError> {
        self.write_line(&json!({ "wall_secs": wall_secs, "runs": runs }).to_string())
    }

    fn write_line(&mut self, line: &str) -> Result<(), ResultsError> {
        // One write per line, flushed at once, so a kill loses at most the line being written.
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.flush())
            .map_err(|source| ResultsError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seed: u64, passed: bool) -> Report {
        Report {
            scenario: "swarm",
            seed,
            failures: if passed {
                Vec::new()
            } else {
                vec!["node 3 lags".into()]
            },
            figures: [
                ("converge_ms", json!(seed * 10)),
                ("faults", json!(["loss", "crash"])),
                ("liars", json!(true)),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn runs_and_sessions_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        assert!(read(&path).unwrap().runs.is_empty());
        let mut out = Appender::open(&path, &Recorded::default()).unwrap();
        out.run(&report(1, true)).unwrap();
        out.run(&report(2, false)).unwrap();
        out.session(12.5, 2).unwrap();
        let mut out = Appender::open(&path, &Recorded::default()).unwrap();
        out.run(&report(3, true)).unwrap();
        out.session(2.0, 1).unwrap();
        let recorded = read(&path).unwrap();
        assert_eq!(recorded.runs.len(), 3);
        assert_eq!(recorded.wall_secs, 14.5);
        assert!(!recorded.cut_short);
        let second = &recorded.runs[&("swarm", 2)];
        assert_eq!(second.failures, vec!["node 3 lags".to_string()]);
        assert_eq!(second.to_json(), report(2, false).to_json());
    }

    #[test]
    fn a_line_cut_short_at_the_end_is_left_out_and_the_next_run_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        let whole = report(1, true).to_json().to_string();
        let cut = &report(2, true).to_json().to_string()[..30];
        std::fs::write(&path, format!("{whole}\n{cut}")).unwrap();
        let recorded = read(&path).unwrap();
        assert!(recorded.cut_short);
        assert_eq!(recorded.runs.keys().collect::<Vec<_>>(), [&("swarm", 1)]);
        Appender::open(&path, &recorded)
            .unwrap()
            .run(&report(2, true))
            .unwrap();
        let recorded = read(&path).unwrap();
        assert_eq!(recorded.runs.len(), 2);
        assert!(!recorded.cut_short);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{whole}\n{}\n", report(2, true).to_json())
        );
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused_at_the_limit_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        let line = format!("{}\n", report(1, true).to_json());
        std::fs::write(&path, &line).unwrap();
        let exact = line.len() as u64;
        assert_eq!(read_at_most(&path, exact).unwrap().runs.len(), 1);
        let error = read_at_most(&path, exact - 1).unwrap_err().to_string();
        assert!(
            error.contains(&format!("{exact} bytes, more than {}", exact - 1)),
            "{error}"
        );
    }

    #[test]
    fn a_whole_last_line_without_its_newline_is_kept_and_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        let whole = report(1, true).to_json().to_string();
        std::fs::write(&path, &whole).unwrap();
        let recorded = read(&path).unwrap();
        assert!(!recorded.cut_short && recorded.needs_newline);
        assert_eq!(recorded.runs.len(), 1);
        Appender::open(&path, &recorded)
            .unwrap()
            .run(&report(2, true))
            .unwrap();
        assert_eq!(read(&path).unwrap().runs.len(), 2);
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error_naming_it_and_the_file_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        let whole = report(1, true).to_json().to_string();
        for (middle, expected) in [
            ("{not json".to_string(), "not JSON"),
            (r#"{"hello": 1}"#.to_string(), "neither a run"),
            (whole.replace("swarm", "swirl"), "unknown scenario `swirl`"),
            (
                whole.replace("\"passed\":true", "\"passed\":false"),
                "passed does not match",
            ),
            (r#"{"wall_secs": -3}"#.to_string(), "wall_secs"),
            (
                whole.replace("converge_ms", &"x".repeat(FIGURE_NAME_BYTES_MAX + 1)),
                "figure name",
            ),
            ("x".repeat(RESULTS_LINE_BYTES_MAX + 1), "more than"),
        ] {
            let text = format!("{whole}\n{middle}\n{whole}\n");
            std::fs::write(&path, &text).unwrap();
            let error = read(&path).unwrap_err().to_string();
            assert!(error.contains("line 2"), "{error}");
            assert!(error.contains(expected), "{error}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
    }
}

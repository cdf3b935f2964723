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
    /// How the file ends, which says what an append must do first.
    pub tail: Tail,
}

/// How a results file ends.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Empty, or its last line ends with a newline: append as it is.
    #[default]
    Ended,
    /// Its last line is whole but lacks the newline: append one first.
    Unended,
    /// Its last line was cut short (a kill while it was written) and is left out: cut the
    /// file back to `whole_bytes`, the end of its last whole line, before appending.
    CutShort {
        /// Bytes up to and including the last newline.
        whole_bytes: u64,
    },
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
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(file) => {
            let size = file.metadata().map_err(io)?.len();
            if size > max {
                return Err(ResultsError::TooLarge {
                    path: path.to_path_buf(),
                    bytes: size,
                    max,
                });
            }
            // `take` keeps the bound if the file grows while it is read.
            file.take(max.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(io)?;
            if bytes.len() as u64 > max {
                return Err(ResultsError::TooLarge {
                    path: path.to_path_buf(),
                    bytes: bytes.len() as u64,
                    max,
                });
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Recorded::default());
        }
        Err(error) => return Err(io(error)),
    }
    // Whole lines up to the last newline; after it, a last line without one (whole, or cut
    // short by a kill, possibly inside a multi-byte character).
    let whole_bytes = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |at| at + 1);
    let (whole, rest) = bytes.split_at(whole_bytes);
    let mut recorded = Recorded::default();
    let mut number = 0;
    // The piece after the last newline is empty; blank lines are skipped.
    for line in whole.split(|b| *b == b'\n') {
        number += 1;
        read_line(path, number, line, &mut recorded)?;
    }
    if !rest.is_empty() {
        let mut with_last = Recorded::default();
        recorded.tail = match read_line(path, number, rest, &mut with_last) {
            Ok(()) => {
                recorded.runs.append(&mut with_last.runs);
                recorded.wall_secs += with_last.wall_secs;
                Tail::Unended
            }
            Err(_) => Tail::CutShort {
                whole_bytes: whole_bytes as u64,
            },
        };
    }
    Ok(recorded)
}

/// Reads line `number` of the file into `recorded`: a run, or an invocation's time.
fn read_line(
    path: &Path,
    number: usize,
    line: &[u8],
    recorded: &mut Recorded,
) -> Result<(), ResultsError> {
    let bad = |reason: String| ResultsError::BadLine {
        path: path.to_path_buf(),
        line: number,
        reason,
    };
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    if line.len() > RESULTS_LINE_BYTES_MAX {
        return Err(bad(format!(
            "{} bytes, more than {RESULTS_LINE_BYTES_MAX}",
            line.len()
        )));
    }
    let value: Value =
        serde_json::from_slice(line).map_err(|error| bad(format!("not JSON: {error}")))?;
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
    Ok(())
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
        if let Tail::CutShort { whole_bytes } = recorded.tail {
            appender
                .file
                .set_len(whole_bytes)
                .map_err(|source| ResultsError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
        } else if recorded.tail == Tail::Unended {
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
        assert_eq!(recorded.tail, Tail::Ended);
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
        assert!(matches!(recorded.tail, Tail::CutShort { .. }));
        assert_eq!(recorded.runs.keys().collect::<Vec<_>>(), [&("swarm", 1)]);
        Appender::open(&path, &recorded)
            .unwrap()
            .run(&report(2, true))
            .unwrap();
        let recorded = read(&path).unwrap();
        assert_eq!(recorded.runs.len(), 2);
        assert_eq!(recorded.tail, Tail::Ended);
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
    fn a_line_cut_inside_a_character_is_left_out_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        let whole = report(1, true).to_json().to_string();
        let mut failed = report(2, false);
        failed.failures = vec!["n\u{153}ud 3 est en retard".into()];
        let line = failed.to_json().to_string();
        let cut = line.find('\u{153}').unwrap() + 1; // inside the two bytes of the character
        let mut bytes = format!("{whole}\n").into_bytes();
        bytes.extend_from_slice(&line.as_bytes()[..cut]);
        std::fs::write(&path, &bytes).unwrap();
        let recorded = read(&path).unwrap();
        let whole_bytes = whole.len() as u64 + 1;
        assert_eq!(recorded.tail, Tail::CutShort { whole_bytes });
        assert_eq!(recorded.runs.len(), 1);
        let mut out = Appender::open(&path, &recorded).unwrap();
        out.run(&failed).unwrap();
        let recorded = read(&path).unwrap();
        assert_eq!(recorded.runs[&("swarm", 2)].failures, failed.failures);
    }

    #[test]
    fn invalid_utf8_in_a_whole_line_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        let whole = report(1, true).to_json().to_string();
        let mut bytes = format!("{whole}\n").into_bytes();
        bytes.extend_from_slice(b"{\"scenario\": \"\xff\"}\n");
        std::fs::write(&path, &bytes).unwrap();
        let error = read(&path).unwrap_err().to_string();
        assert!(error.contains("line 2: not JSON"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_whole_last_line_without_its_newline_is_kept_and_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        let whole = report(1, true).to_json().to_string();
        std::fs::write(&path, &whole).unwrap();
        let recorded = read(&path).unwrap();
        assert_eq!(recorded.tail, Tail::Unended);
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

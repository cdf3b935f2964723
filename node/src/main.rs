//! `meridian`: the node daemon, hub launcher and offline tools of a Meridian federation.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser as _;
use meridian_node::cli::{self, Cli};

/// Prints `text` and a newline to standard output in one write. A reader that went away (`|
/// head -n 1`) is not an error: the output was not wanted any more. Any other failure to write
/// is reported on standard error and gives exit code 2.
fn print(text: &str) -> Result<(), u8> {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(format!("{text}\n").as_bytes())
        .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(error) => {
            eprintln!("error: writing the output: {error}");
            Err(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The one place a command reads the wall clock (the daemons read it in their own clock
    // functions).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match cli::run(&cli, now) {
        Ok(report) => {
            let text = if cli.json {
                format!("{:#}", report.json)
            } else {
                report.text
            };
            match print(&text) {
                Ok(()) => ExitCode::SUCCESS,
                Err(code) => ExitCode::from(code),
            }
        }
        Err(error) => {
            let code = cli::exit_code(&error);
            if cli.json {
                let body = serde_json::json!({ "ok": false, "error": format!("{error:#}"), "exit_code": code });
                // The exit code says what happened; an unwritable output changes nothing.
                let _ = print(&format!("{body:#}"));
            }
            eprintln!("error: {error:#}");
            ExitCode::from(code as u8)
        }
    }
}

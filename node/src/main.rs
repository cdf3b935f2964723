//! `meridian`: the node daemon, hub launcher and offline tools of a Meridian federation.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser as _;
use meridian_node::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The one place the wall clock is read.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match cli::run(&cli, now) {
        Ok(report) => {
            if cli.json {
                println!("{:#}", report.json);
            } else {
                println!("{}", report.text);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            let code = cli::exit_code(&error);
            if cli.json {
                println!(
                    "{:#}",
                    serde_json::json!({ "ok": false, "error": format!("{error:#}"), "exit_code": code })
                );
            }
            eprintln!("error: {error:#}");
            ExitCode::from(code as u8)
        }
    }
}

//! The architecture checks itself (in the manner of rust-analyzer's tidy tests): these read the
//! workspace's sources and fail when a rule of docs/ARCHITECTURE.md is broken, naming the file
//! and line. Comments are skipped, so a doc link to a higher layer is not an import.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Every `.rs` file under `dir` (relative to the workspace), recursively, sorted.
fn rust_files(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&workspace().join(dir), &mut out);
    out.sort();
    assert!(!out.is_empty(), "no Rust files under {dir}");
    out
}

/// The lines of `file` that are code (not `//` comments), with their numbers.
fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(number, line)| (number + 1, line.to_owned()))
        .collect()
}

/// `file:line: text` for every code line of `files` that contains one of `needles`.
fn offences(files: &[PathBuf], needles: &[&str]) -> Vec<String> {
    let root = workspace();
    let mut found = Vec::new();
    for file in files {
        for (number, line) in code_lines(file) {
            if let Some(needle) = needles.iter().find(|n| line.contains(**n)) {
                found.push(format!(
                    "{}:{number}: `{needle}` in `{}`",
                    file.strip_prefix(&root).unwrap_or(file).display(),
                    line.trim()
                ));
            }
        }
    }
    found
}

/// What a sans-IO module must not touch: sockets, async runtimes, HTTP stacks, the clock.
const IO: &[&str] = &[
    "tokio",
    "std::net",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "SystemTime",
    "Instant::now",
    "reqwest",
    "hyper",
    "axum",
    "libp2p",
    "quinn",
];

#[test]
fn sans_io_cores_open_no_socket_and_read_no_clock() {
    let mut files = rust_files("registry/src");
    files.extend(rust_files("governance/src"));
    // The sync crate's driver waits on tokio's timers; everything else in it is sans-IO.
    files.extend(
        rust_files("node/sync/src")
            .into_iter()
            .filter(|f| !f.ends_with("driver.rs")),
    );
    for core in [
        "breaker",
        "cache",
        "deltas",
        "heads",
        "machine",
        "policy",
        "ratelimit",
        "routing",
    ] {
        files.push(workspace().join(format!("hub/src/{core}.rs")));
    }
    let found = offences(&files, IO);
    assert!(
        found.is_empty(),
        "sans-IO modules must take time as an argument and move no bytes themselves:\n{}",
        found.join("\n")
    );
}

#[test]
fn nothing_below_the_command_line_imports_it() {
    let commands = [
        "crate::cli",
        "crate::gov_cli",
        "crate::agent_cli",
        "crate::agent_read",
        "crate::demo",
    ];
    let mut below = rust_files("node/src/daemon");
    for file in ["data.rs", "progress.rs", "command.rs"] {
        below.push(workspace().join("node/src").join(file));
    }
    let mut found = offences(&below, &[&commands[..], &["crate::command"]].concat());
    // `command.rs` is what the commands share; it may not import them either (it is below them).
    found.retain(|f| !f.starts_with("node/src/command.rs") || !f.contains("crate::command"));
    // The commands sit side by side under the dispatcher (`cli.rs`): none imports it.
    let mut commands_below_cli = rust_files("node/src/demo");
    commands_below_cli.push(workspace().join("node/src/gov_cli.rs"));
    commands_below_cli.push(workspace().join("node/src/agent_cli.rs"));
    commands_below_cli.push(workspace().join("node/src/agent_read.rs"));
    found.extend(offences(
        &commands_below_cli,
        &["crate::cli::", "crate::cli;"],
    ));
    assert!(
        found.is_empty(),
        "the command line sits above the daemon, and the dispatcher above the commands:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_drivers_read_the_wall_clock() {
    let allowed = [
        "node/src/main.rs",
        "node/src/daemon/mod.rs",
        "hub/src/daemon/mod.rs",
    ];
    let mut files = Vec::new();
    for dir in [
        "registry/src",
        "governance/src",
        "node/src",
        "hub/src",
        "bindings/python/src",
    ] {
        files.extend(rust_files(dir));
    }
    let found: Vec<String> = offences(&files, &["SystemTime::now"])
        .into_iter()
        .filter(|f| !allowed.iter().any(|a| f.starts_with(a)))
        .collect();
    assert!(
        found.is_empty(),
        "read the clock in a driver's one clock function and pass the time down:\n{}",
        found.join("\n")
    );
}

/// Every function signature in `text` (from `fn` to its body or `;`, over as many lines as it
/// takes), with the line it starts on and whether it is public or a trait's.
fn signatures(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(at) = rest.find("fn ") {
        let start = offset + at;
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let prefix = text[line_start..start].trim();
        let end = text[start..]
            .find(['{', ';'])
            .map_or(text.len(), |i| start + i);
        let public = prefix.starts_with("pub") && !prefix.contains("pub(");
        // A trait's methods have no `pub` but are as public as the trait.
        let in_trait = prefix.is_empty() && text[line_start..start].starts_with("    ");
        if public || in_trait {
            let signature: String = text[start..end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            found.push((text[..start].matches('\n').count() + 1, signature));
        }
        offset = start + 3;
        rest = &text[offset..];
    }
    found
}

/// The public (or trait) functions in `text` that return `Result<_, String>`.
fn string_errors(text: &str) -> Vec<(usize, String)> {
    signatures(text)
        .into_iter()
        .filter(|(_, signature)| {
            let returns = signature
                .split_once("->")
                .map(|(_, r)| r)
                .unwrap_or_default();
            // Spacing and trailing commas as rustfmt leaves a long type over several lines.
            let returns: String = returns.chars().filter(|c| !c.is_whitespace()).collect();
            let returns = returns.replace(",>", ">");
            returns.contains("Result<") && returns.contains(",String>")
        })
        .collect()
}

#[test]
fn library_apis_return_typed_errors_not_strings() {
    let mut files = Vec::new();
    for dir in ["registry/src", "governance/src", "node/sync/src", "hub/src"] {
        files.extend(rust_files(dir));
    }
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        // Tests may return what they like.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (line, signature) in signatures(text) {
            let returns = signature
                .split_once("->")
                .map(|(_, r)| r)
                .unwrap_or_default();
            if returns.contains("Result<") && returns.contains(", String>") {
                let path = file.strip_prefix(workspace()).unwrap_or(&file);
                found.push(format!("{}:{line}: {signature}", path.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "a public library function returns `Result<_, String>`; give it an error type whose variants tests can match:\n{}",
        found.join("\n")
    );
}

/// The `meridian-*` crates a crate's Cargo.toml depends on (any dependency table).
fn meridian_dependencies(manifest: &str) -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join(manifest))
        .unwrap_or_else(|e| panic!("{manifest}: {e}"));
    let mut found: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("meridian-"))
        .filter_map(|line| line.split(['=', '.', ' ']).next())
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn the_crate_graph_points_one_way() {
    // Each crate, and the Meridian crates it may depend on (docs/ARCHITECTURE.md).
    let rules: &[(&str, &[&str])] = &[
        ("registry/Cargo.toml", &[]),
        ("governance/Cargo.toml", &["meridian-registry"]),
        (
            "node/sync/Cargo.toml",
            &["meridian-governance", "meridian-registry"],
        ),
        (
            "hub/Cargo.toml",
            &["meridian-governance", "meridian-registry", "meridian-sync"],
        ),
        (
            "node/Cargo.toml",
            &[
                "meridian-governance",
                "meridian-hub",
                "meridian-registry",
                "meridian-sync",
            ],
        ),
        (
            "simulations/Cargo.toml",
            &[
                "meridian-governance",
                "meridian-hub",
                "meridian-registry",
                "meridian-sync",
            ],
        ),
        (
            "bindings/python/Cargo.toml",
            &["meridian-governance", "meridian-registry"],
        ),
    ];
    let mut broken = Vec::new();
    for (manifest, allowed) in rules {
        for dependency in meridian_dependencies(manifest) {
            if !allowed.contains(&dependency.as_str()) {
                broken.push(format!("{manifest} depends on {dependency}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "a crate depends on a crate above it:\n{}",
        broken.join("\n")
    );
}

/// Most lines a function outside tests may take, signature to closing brace.
const FUNCTION_LINES_MAX: usize = 100;

/// The functions in `text` (before its test module) longer than [`FUNCTION_LINES_MAX`]: their
/// first line, name and length. A function runs from its `fn` line to the first line after it
/// that closes a brace at the `fn` line's indentation.
fn long_functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .collect();
    let mut found = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        let code = line.trim_start();
        let indent = line.len() - code.len();
        let name = [
            "pub fn ",
            "pub async fn ",
            "pub(crate) fn ",
            "pub(crate) async fn ",
            "fn ",
            "async fn ",
            "const fn ",
            "pub const fn ",
        ]
        .iter()
        .find_map(|prefix| code.strip_prefix(prefix))
        .and_then(|rest| rest.split(['(', '<']).next());
        let Some(name) = name else {
            index += 1;
            continue;
        };
        let close = format!("{}}}", " ".repeat(indent));
        let end = lines[index + 1..]
            .iter()
            .position(|l| l.starts_with(&close) && l.len() - l.trim_start().len() == indent);
        match end {
            // A declaration without a body (`fn f();`) ends on its own line.
            _ if code.ends_with(';') => index += 1,
            Some(offset) => {
                let length = offset + 2;
                if length > FUNCTION_LINES_MAX {
                    found.push((index + 1, name.to_owned(), length));
                }
                index += offset + 2;
            }
            None => index += 1,
        }
    }
    found
}

#[test]
fn functions_are_short_enough_to_hold_in_mind() {
    let mut found = Vec::new();
    for dir in [
        "registry/src",
        "governance/src",
        "node/src",
        "node/sync/src",
        "hub/src",
        "simulations/src",
        "bindings/python/src",
    ] {
        for file in rust_files(dir) {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let path = file.strip_prefix(workspace()).unwrap_or(&file);
            for (line, name, length) in long_functions(&text) {
                found.push(format!(
                    "{}:{line}: {name} is {length} lines",
                    path.display()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "split these into functions that each do one thing (at most {FUNCTION_LINES_MAX} lines):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_forbid() {
    // The rules above pass only if they can fail: each finds its offence in a planted file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("planted.rs");
    std::fs::write(
        &file,
        "// tokio in a comment is fine\nuse tokio::net::TcpStream;\nlet now = std::time::SystemTime::now();\nuse crate::cli::Report;\npub fn f() -> Result<(), String> {}\n",
    )
    .unwrap();
    let files = vec![file];
    assert_eq!(offences(&files, IO).len(), 2);
    assert_eq!(offences(&files, &["crate::cli"]).len(), 1);
    assert_eq!(offences(&files, &["SystemTime::now"]).len(), 1);
    assert_eq!(offences(&files, &[", String>"]).len(), 1);
    // Signatures over several lines, trait methods and boxed futures are seen; private
    // functions and arguments of that type are not.
    let planted = "pub fn f() -> Result<(), String> {}\npub async fn g(\n    a: u8,\n) -> Result<\n    Vec<u8>,\n    String,\n> {}\ntrait T {\n    fn h<'a>(&'a self) -> BoxFuture<'a, Result<u8, String>>;\n}\nfn private() -> Result<(), String> {}\npub fn arg(r: Result<(), String>) -> u8 {}\n";
    let lines: Vec<usize> = string_errors(planted).into_iter().map(|(l, _)| l).collect();
    assert_eq!(lines, [1, 2, 9]);
    // A long function is found, with its length; a short one, a body-less declaration and
    // anything in the test module are not.
    let long_body = "    let x = 1;\n".repeat(FUNCTION_LINES_MAX);
    let planted = format!(
        "fn short() {{\n}}\ntrait T {{\n    fn declared();\n}}\npub fn long(\n    a: u8,\n) {{\n{long_body}}}\n#[cfg(test)]\nfn long_test() {{\n{long_body}}}\n"
    );
    assert_eq!(
        long_functions(&planted),
        [(6, "long".to_owned(), FUNCTION_LINES_MAX + 4)]
    );
    assert_eq!(
        meridian_dependencies("node/Cargo.toml"),
        [
            "meridian-governance",
            "meridian-hub",
            "meridian-registry",
            "meridian-sync"
        ]
    );
}

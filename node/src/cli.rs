//! The `meridian` command line: argument parsing and the offline tools.
//!
//! Every command returns a [`Report`](crate::command::Report) (printed as text, or as JSON with `--json`) or an error.
//! [`exit_code`] maps errors to the documented exit codes: 1 when input was checked and rejected
//! (a snapshot failed verification, a card is invalid), 2 for usage and I/O errors.

use std::fs;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use meridian_registry::Cid;
use meridian_registry::car::Limits;
use meridian_registry::keys::{Keypair, PublicKey};
use meridian_registry::snapshot::{
    self, BuildError, BuildInput, CarContents, CardInput, Snapshot, SnapshotError, VerifyOptions,
};
use meridian_registry::store::{BlockStore, MemoryStore};

use crate::command::{Rejected, Report, parse_duration_secs, utc};
use crate::data::{load_key, open_store, write_secret_file};
use crate::progress::{Progress, Unit};
use serde_json::json;

/// Meridian: a federation of AI-agent registries.
#[derive(Debug, Parser)]
#[command(
    name = "meridian",
    version,
    about = "Meridian: a federation of AI-agent registries. Runs the node daemon (`node run`) and the regional hub (`hub run`), publishes agents, and holds the offline tools for keys, snapshots and governance.",
    long_about = None,
    after_help = "Start here:\n  meridian demo                                   a whole federation on loopback\n  meridian node run --data ./meridian-data        a node (docs/runbooks/node.md)\n  meridian hub run --data ./meridian-hub          a regional hub (docs/runbooks/hub.md)\n  docs/runbooks/first-federation.md               two regions from nothing, command by command"
)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and show ed25519 keys (node keys and organisation keys).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Agents: sign a card into the body a node's publish API takes, or publish it.
    #[command(subcommand)]
    Agent(crate::agent_cli::AgentCommand),
    /// Build, verify, inspect, diff and move signed registry snapshots (CAR files).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Governance roots: create, rotate, sign and verify trust roots.
    #[command(subcommand)]
    Gov(crate::gov_cli::GovCommand),
    /// Organisations: registration requests, approval, key rotation and revocation.
    #[command(subcommand)]
    Org(crate::gov_cli::OrgCommand),
    /// Attestations: issue, co-sign, revoke and verify.
    #[command(subcommand)]
    Attest(crate::gov_cli::AttestCommand),
    /// Policy bundles: sign a TOML policy, verify a bundle.
    #[command(subcommand)]
    Policy(crate::gov_cli::PolicyCommand),
    /// The checkpoint logs (publisher heads, organisation keys): append, sign, co-sign, verify,
    /// prove, monitor.
    #[command(subcommand)]
    Checkpoint(crate::gov_cli::CheckpointCommand),
    /// The node daemon: initialise a data directory, run the gateway.
    #[command(subcommand)]
    Node(NodeCommand),
    /// The regional hub: initialise a data directory, run the hub.
    #[command(subcommand)]
    Hub(HubCommand),
    /// Run the demo: a federation on loopback (a governance root, three regions each with a hub
    /// and two nodes, sample agents, an echo A2A agent) that converges, calls across regions
    /// through the hubs and refuses a forged manifest, with a table of timings.
    ///
    /// Example: meridian demo --agents 50 --keep-running
    Demo {
        /// The data directory; the demo works in DATA/demo and clears it first.
        #[arg(long, default_value = "./meridian-data")]
        data: PathBuf,
        /// Sample agents each of the three organisations publishes.
        #[arg(long, default_value_t = 200)]
        agents: usize,
        /// Leave the federation running after the report, until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
        /// Run only the offline snapshot round trip (sign, mirror, delta, attacks).
        #[arg(long, conflicts_with_all = ["agents", "keep_running"])]
        snapshot: bool,
    },
}

/// `meridian node …`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Create a data directory: node key (0600), documented config.toml, store.
    ///
    /// Example: meridian node init --data /var/lib/meridian
    Init {
        /// The data directory.
        #[arg(long, default_value = "./meridian-data")]
        data: PathBuf,
    },
    /// Write tokens for organisations (stored hashed; shown once).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Organisation names bound to keys (without governance): list bindings and held
    /// conflicting claims, accept a held claim, or pin a name to keys. The running node applies
    /// a change within seconds.
    #[command(subcommand)]
    Names(NamesCommand),
    /// Run the node (HTTP gateway) until SIGINT or SIGTERM; initialises DATA on first run.
    ///
    /// Example: MERIDIAN_NODE_REGION=eu-west meridian node run --data /var/lib/meridian --http 0.0.0.0:7700
    Run {
        /// The data directory.
        #[arg(long, default_value = "./meridian-data")]
        data: PathBuf,
        /// A config file (default DATA/config.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The gateway's address, overriding the config (port 0 picks a free port).
        #[arg(long)]
        http: Option<String>,
    },
}

/// `meridian node names …`
#[derive(Debug, Subcommand)]
pub enum NamesCommand {
    /// List every bound organisation name with its keys, and the conflicting claims held as
    /// evidence (never served).
    ///
    /// Example: meridian node names list --data ./meridian-data
    List {
        /// The data directory.
        #[arg(long, default_value = "./meridian-data")]
        data: PathBuf,
    },
    /// Rebind ORG to the key of a held claim (shown by `list`): its agents are served from now
    /// on, and the previously bound key's are held instead.
    ///
    /// Example: meridian node names accept acme --signer did:key:z6Mk... --data ./meridian-data
    Accept {
        /// The organisation.
        org: String,
        /// The signer of the held claim, as did:key.
        #[arg(long, required = true)]
        signer: String,
        /// The data directory.
        #[arg(long, default_value = "./meridian-data")]
        data: PathBuf,
    },
    /// Bind ORG to the given keys, whatever was learned.
    ///
    /// Example: meridian node names pin acme --key did:key:z6Mk... --data ./meridian-data
    Pin {
        /// The organisation.
        org: String,
        /// A key that may sign the organisation's agents, as did:key (repeat for several).
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        /// The data directory.
        #[arg(long, default_value = "./meridian-data")]
        data: PathBuf,
    },
}

/// `meridian hub …`
#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Create a hub data directory: hub key (0600) and a documented hub.toml.
    ///
    /// Example: meridian hub init --data /var/lib/meridian-hub --region eu-west
    Init {
        /// The data directory.
        #[arg(long, default_value = "./meridian-hub")]
        data: PathBuf,
        /// The region the hub serves (written to hub.toml).
        #[arg(long)]
        region: Option<String>,
    },
    /// Run the hub (HTTP API for its region, QUIC trunk to other hubs) until SIGINT or
    /// SIGTERM; initialises DATA on first run.
    ///
    /// Example: meridian hub run --data /var/lib/meridian-hub --listen 0.0.0.0:7800 --trunk-listen 0.0.0.0:7801
    Run {
        /// The data directory.
        #[arg(long, default_value = "./meridian-hub")]
        data: PathBuf,
        /// A config file (default DATA/hub.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The HTTP API's address for the region's nodes, overriding hub.listen (port 0
        /// picks a free port, written to DATA/http.addr).
        #[arg(long)]
        listen: Option<String>,
        /// The QUIC trunk's UDP address, overriding hub.trunk_listen (DATA/trunk.addr).
        #[arg(long)]
        trunk_listen: Option<String>,
    },
    /// Hand governance documents (root versions, the policy bundle, attestations, key
    /// rotations) to the running hub of DATA, which verifies them against its root and passes
    /// them to the other regions' hubs.
    ///
    /// Example: meridian hub govern --data ./meridian-hub policy.4.cbor
    Govern {
        /// The running hub's data directory (its DATA/http.addr is read).
        #[arg(long, default_value = "./meridian-hub")]
        data: PathBuf,
        /// The documents, in the order to apply them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `meridian hub govern`: hands governance documents to the running hub of `data` (through its
/// `/v1/gossip`, as a node of its region would); exit 1 when the hub refuses one.
fn hub_govern(data: &Path, files: &[PathBuf]) -> Result<Report> {
    let addr_file = data.join(meridian_hub::daemon::HTTP_ADDR_FILE);
    let address = fs::read_to_string(&addr_file).with_context(|| {
        format!(
            "reading {} (is the hub running? `meridian hub run --data {}`)",
            addr_file.display(),
            data.display()
        )
    })?;
    let url = format!("http://{}/v1/gossip", address.trim());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut rows = Vec::new();
    let mut refused = Vec::new();
    for file in files {
        let block = fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let body = meridian_hub::wire::Gossip::Governance(block).encode();
        let (status, answer) = runtime.block_on(async {
            let response = client
                .post(&url)
                .body(body)
                .send()
                .await
                .with_context(|| format!("reaching {url}"))?;
            let status = response.status();
            anyhow::Ok((status, response.text().await.unwrap_or_default()))
        })?;
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap_or(json!({}));
        let outcome = if status.is_success() {
            if answer["new"] == true {
                "new"
            } else {
                "known"
            }
            .to_owned()
        } else {
            let why = answer["error"]["message"]
                .as_str()
                .unwrap_or("refused")
                .to_owned();
            refused.push(format!("{}: {why}", file.display()));
            format!("refused: {why}")
        };
        rows.push(json!({ "file": file, "outcome": outcome }));
    }
    if !refused.is_empty() {
        return Err(Rejected(format!("the hub refused {}", refused.join("; "))).into());
    }
    Ok(Report {
        text: rows
            .iter()
            .map(|r| {
                format!(
                    "{}: {}",
                    r["file"].as_str().unwrap_or_default(),
                    r["outcome"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        json: json!({ "documents": rows }),
    })
}

/// `meridian node token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bearer token that may publish for ORG (or, with --admin, post governance
    /// documents); printed once, stored hashed.
    ///
    /// Example: meridian node token create --org acme --data /var/lib/meridian
    Create {
        /// The organisation (required unless --admin).
        #[arg(long, required_unless_present = "admin", conflicts_with = "admin")]
        org: Option<String>,
        /// An admin token instead: attestations, policy and root updates.
        #[arg(long)]
        admin: bool,
        /// The data directory.
        #[arg(long, default_value = "./meridian-data")]
        data: PathBuf,
    },
    /// List tokens (ids and organisations, never the tokens).
    ///
    /// Example: meridian node token list --data /var/lib/meridian
    List {
        /// The data directory.
        #[arg(long, default_value = "./meridian-data")]
        data: PathBuf,
    },
    /// Revoke a token by id; takes effect on the running node at once.
    ///
    /// Example: meridian node token revoke 3f9a1c2b7d4e --data /var/lib/meridian
    Revoke {
        /// The token id (from `list`).
        id: String,
        /// The data directory.
        #[arg(long, default_value = "./meridian-data")]
        data: PathBuf,
    },
}

/// `meridian keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a new key into FILE (mode 0600) and print its did:key.
    ///
    /// Example: meridian keys generate --out acme.key
    Generate {
        /// Where to write the key file.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print the did:key of a key file.
    ///
    /// Example: meridian keys show acme.key
    Show {
        /// The key file.
        file: PathBuf,
    },
}

/// `meridian snapshot …`
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Build a signed snapshot from agent cards.
    ///
    /// Example: meridian snapshot build --key node.key --org-key acme.key --org acme --region eu-west --cards cards/ --out s1.car
    Build(BuildArgs),
    /// Verify a snapshot: hashes, encoding, signatures, expiry, limits, and optionally succession.
    ///
    /// Example: meridian snapshot verify s2.car --after s1.car --root root.1.cbor --attestations attestations/
    Verify {
        /// The snapshot CAR file.
        snapshot: PathBuf,
        /// Require this publisher (did:key).
        #[arg(long)]
        publisher: Option<String>,
        /// Also require it to be a valid successor of this older snapshot.
        #[arg(long)]
        after: Option<PathBuf>,
        /// Governance: run the acceptance rule on every agent.
        #[command(flatten)]
        governance: crate::gov_cli::GovernanceArgs,
    },
    /// Show a snapshot's commit and sizes (checks hashes and signatures, not expiry).
    ///
    /// Example: meridian snapshot inspect s1.car --json
    Inspect {
        /// The snapshot CAR file.
        snapshot: PathBuf,
    },
    /// List the agents added, removed and changed between two snapshots.
    ///
    /// Example: meridian snapshot diff s1.car s2.car
    Diff {
        /// The older snapshot.
        old: PathBuf,
        /// The newer snapshot.
        new: PathBuf,
    },
    /// Write a CAR with only the blocks a holder of OLD lacks to reach NEW.
    ///
    /// Example: meridian snapshot delta s1.car s2.car --out d.car
    Delta {
        /// The older snapshot.
        old: PathBuf,
        /// The newer snapshot.
        new: PathBuf,
        /// Where to write the delta CAR.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a snapshot (full or delta) and store it in a data directory, atomically.
    ///
    /// Example: meridian snapshot import d.car --data ./meridian-data
    Import {
        /// The snapshot or delta CAR file.
        snapshot: PathBuf,
        /// The data directory.
        #[arg(long, default_value = "./meridian-data")]
        data: PathBuf,
    },
    /// Write a publisher's current snapshot from a data directory as a CAR.
    ///
    /// Example: meridian snapshot export --data ./meridian-data --out copy.car
    Export {
        /// The data directory.
        #[arg(long, default_value = "./meridian-data")]
        data: PathBuf,
        /// Where to write the CAR.
        #[arg(long)]
        out: PathBuf,
        /// Which publisher (did:key); may be left out when the store holds one.
        #[arg(long)]
        publisher: Option<String>,
        /// Write only what a holder of this older commit (CID) lacks.
        #[arg(long)]
        since: Option<String>,
    },
}

/// Arguments of `meridian snapshot build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The node key file (signs the commit).
    #[arg(long)]
    pub key: PathBuf,
    /// The organisation key file (signs the manifests).
    #[arg(long)]
    pub org_key: PathBuf,
    /// The organisation id (a-z, 0-9, inner -).
    #[arg(long)]
    pub org: String,
    /// The region the agents are served from.
    #[arg(long)]
    pub region: String,
    /// A directory of card .json files, or a .jsonl file with one card per line.
    #[arg(long)]
    pub cards: PathBuf,
    /// Where to write the snapshot CAR.
    #[arg(long)]
    pub out: PathBuf,
    /// The previous snapshot: the new one gets its seq + 1 and links to it.
    #[arg(long)]
    pub prev: Option<PathBuf>,
    /// How long the snapshot stays valid: e.g. 3600s, 90m, 12h, 30d.
    #[arg(long, default_value = "30d", value_parser = parse_duration_secs)]
    pub expires_in: i64,
}

/// The exit code for an error: 1 if input was checked and rejected, 2 otherwise.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    for cause in error.chain() {
        if cause.is::<Rejected>() {
            return 1;
        }
        if let Some(snapshot_error) = cause.downcast_ref::<SnapshotError>() {
            return match snapshot_error {
                SnapshotError::Store(_) => 2,
                SnapshotError::Car(meridian_registry::car::CarError::Io(_)) => 2,
                _ => 1,
            };
        }
        if let Some(build_error) = cause.downcast_ref::<BuildError>() {
            return match build_error {
                BuildError::Card { .. } | BuildError::Duplicate { .. } => 1,
                _ => 2,
            };
        }
    }
    2
}

/// Runs a parsed command. `now` is the wall clock in unix seconds, read once by `main`.
pub fn run(cli: &Cli, now: i64) -> Result<Report> {
    match &cli.command {
        Command::Agent(command) => crate::agent_cli::run(command, now),
        Command::Keys(KeysCommand::Generate { out, force }) => keys_generate(out, *force),
        Command::Keys(KeysCommand::Show { file }) => {
            let key = load_key(file)?;
            Ok(Report {
                text: key.did(),
                json: json!({ "did": key.did(), "file": file }),
            })
        }
        Command::Snapshot(command) => run_snapshot(command, now),
        Command::Demo {
            data,
            agents,
            keep_running,
            snapshot,
        } => crate::demo::run(
            &crate::demo::DemoOptions {
                data: data.clone(),
                agents_per_org: *agents,
                keep_running: *keep_running,
                snapshot_only: *snapshot,
            },
            now,
        ),
        Command::Hub(command) => run_hub_command(command),
        Command::Node(command) => run_node_command(command, now),
        Command::Gov(command) => crate::gov_cli::run_gov(command, now),
        Command::Org(command) => crate::gov_cli::run_org(command, now),
        Command::Attest(command) => crate::gov_cli::run_attest(command, now),
        Command::Policy(command) => crate::gov_cli::run_policy(command, now),
        Command::Checkpoint(command) => crate::gov_cli::run_checkpoint(command, now),
    }
}

/// Runs `meridian hub …`.
fn run_hub_command(command: &HubCommand) -> Result<Report> {
    match command {
        HubCommand::Init { data, region } => {
            let did = meridian_hub::daemon::init(data, region.as_deref())?;
            Ok(Report {
                text: format!(
                    "initialised {} (hub {did}); edit {}/hub.toml, then `meridian hub run --data {}`",
                    data.display(),
                    data.display(),
                    data.display()
                ),
                json: json!({ "data": data, "did": did }),
            })
        }
        HubCommand::Govern { data, files } => hub_govern(data, files),
        HubCommand::Run {
            data,
            config,
            listen,
            trunk_listen,
        } => {
            crate::daemon::run_hub(meridian_hub::daemon::HubRunOptions {
                data: data.clone(),
                config: config.clone(),
                listen: listen.clone(),
                trunk_listen: trunk_listen.clone(),
            })?;
            Ok(Report {
                text: "hub stopped".into(),
                json: json!({ "stopped": true }),
            })
        }
    }
}

/// Runs `meridian node …`.
fn run_node_command(command: &NodeCommand, now: i64) -> Result<Report> {
    match command {
        NodeCommand::Init { data } => {
            let did = crate::daemon::init(data)?;
            Ok(Report {
                text: format!(
                    "initialised {} (node {did}); edit {}/config.toml, then `meridian node run --data {}`",
                    data.display(),
                    data.display(),
                    data.display()
                ),
                json: json!({ "data": data, "did": did }),
            })
        }
        NodeCommand::Names(command) => run_names(command, now),
        NodeCommand::Run { data, config, http } => {
            crate::daemon::run(crate::daemon::RunOptions {
                data: data.clone(),
                config: config.clone(),
                http: http.clone(),
            })?;
            Ok(Report {
                text: "node stopped".into(),
                json: json!({ "stopped": true }),
            })
        }
        NodeCommand::Token(command) => run_token(command, now),
    }
}

/// Runs `meridian node token …`.
fn run_token(command: &TokenCommand, now: i64) -> Result<Report> {
    match command {
        TokenCommand::Create {
            org,
            admin: _,
            data,
        } => {
            let (token, record) = crate::daemon::tokens::create(data, org.as_deref(), now)?;
            let holder = if record.admin {
                "admin".to_owned()
            } else {
                format!("`{}`", record.org)
            };
            Ok(Report {
                text: format!(
                    "{token}\n(token {} for {holder}; it is shown only this once)",
                    record.id
                ),
                json: json!({ "token": token, "id": record.id, "org": org, "admin": record.admin }),
            })
        }
        TokenCommand::List { data } => {
            let records = crate::daemon::tokens::list(data)?;
            let mut lines = vec![format!(
                "{:<12}  {:<16}  {:<34}  state",
                "id", "for", "created"
            )];
            lines.extend(records.iter().map(|r| {
                let holder = if r.admin {
                    "admin".to_owned()
                } else {
                    format!("org {}", r.org)
                };
                format!(
                    "{:<12}  {:<16}  {:<34}  {}",
                    r.id,
                    holder,
                    utc(r.created_at),
                    if r.revoked { "revoked" } else { "active" }
                )
            }));
            if records.is_empty() {
                lines = vec![format!("no tokens in {}", data.display())];
            }
            let text = lines.join("\n");
            Ok(Report {
                text,
                json: json!(records.iter().map(|r| json!({ "id": r.id, "org": r.org, "admin": r.admin, "created_at": r.created_at, "revoked": r.revoked })).collect::<Vec<_>>()),
            })
        }
        TokenCommand::Revoke { id, data } => {
            let record = crate::daemon::tokens::revoke(data, id)?;
            Ok(Report {
                text: format!("revoked token {} of `{}`", record.id, record.org),
                json: json!({ "id": record.id, "org": record.org, "revoked": true }),
            })
        }
    }
}

fn keys_generate(out: &Path, force: bool) -> Result<Report> {
    if out.exists() && !force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            out.display()
        );
    }
    let key = Keypair::generate().context("generating a key")?;
    write_secret_file(out, key.to_key_file().as_bytes())
        .with_context(|| format!("writing key file {}", out.display()))?;
    Ok(Report {
        text: key.did(),
        json: json!({ "did": key.did(), "file": out }),
    })
}

/// `meridian node names …`.
fn run_names(command: &NamesCommand, now: i64) -> Result<Report> {
    use crate::daemon::names;
    let (org, binding) = match command {
        NamesCommand::List { data } => {
            let (bindings, held) = names::list(data)?;
            let mut text = Vec::new();
            for (org, binding) in &bindings {
                let keys: Vec<&str> = binding.keys.iter().map(String::as_str).collect();
                text.push(format!(
                    "{org}: {} ({}, since {})",
                    keys.join(", "),
                    binding.how,
                    utc(binding.bound_at)
                ));
            }
            if bindings.is_empty() {
                text.push("no organisation names bound".to_owned());
            }
            for claim in &held {
                text.push(format!(
                    "held: {} signed by {} from publisher {} (manifest {}, last seen {})",
                    claim.agent_id,
                    claim.signer,
                    claim.publisher,
                    claim.manifest,
                    utc(claim.last_seen)
                ));
            }
            return Ok(Report {
                text: text.join("\n"),
                json: json!({ "bindings": bindings, "held": held }),
            });
        }
        NamesCommand::Accept { org, signer, data } => (org, names::accept(data, org, signer, now)?),
        NamesCommand::Pin { org, keys, data } => (org, names::pin(data, org, keys, now)?),
    };
    let keys: Vec<&str> = binding.keys.iter().map(String::as_str).collect();
    Ok(Report {
        text: format!(
            "`{org}` pinned to {}; a running node applies it within seconds",
            keys.join(", ")
        ),
        json: json!({ "org": org, "binding": binding }),
    })
}

fn temporary_path(path: &Path) -> PathBuf {
    meridian_registry::files::temporary_path(path)
}

/// Reads a CAR file, every block hash-checked, showing how much has been read.
fn read_car_file(path: &Path, limits: Limits, progress: &Progress) -> Result<CarContents> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata().map_or(0, |metadata| metadata.len());
    progress.phase(format!("reading {}", path.display()), size, Unit::Bytes);
    let reader = progress.reader(BufReader::with_capacity(1 << 20, file));
    snapshot::read_car(reader, limits).with_context(|| format!("snapshot {}", path.display()))
}

/// Options that count verified manifests toward a progress phase.
fn verify_options_with(progress: &Progress) -> VerifyOptions {
    VerifyOptions {
        progress: Some(progress.phase("verifying manifests", 0, Unit::Items)),
        ..VerifyOptions::default()
    }
}

/// Reads and fully verifies a snapshot file (no time check unless `now` is given).
fn open_snapshot(
    path: &Path,
    now: Option<i64>,
    progress: &Progress,
) -> Result<(Snapshot, snapshot::VerifiedSnapshot)> {
    let contents = read_car_file(path, Limits::DEFAULT, progress)?;
    let options = VerifyOptions {
        now,
        ..verify_options_with(progress)
    };
    snapshot::open_contents(contents, &options)
        .with_context(|| format!("snapshot {}", path.display()))
}

/// Writes `out` through a temporary file so a failed write never leaves a half file behind.
fn write_atomically(
    out: &Path,
    write: impl FnOnce(&mut BufWriter<fs::File>) -> Result<()>,
) -> Result<u64> {
    let temporary = temporary_path(out);
    let file = fs::File::create(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let result = write(&mut writer).and_then(|()| {
        let file = writer.into_inner().map_err(|e| anyhow!("{}", e.error()))?;
        file.sync_all()?;
        Ok(())
    });
    if let Err(error) = result {
        let _ = fs::remove_file(&temporary);
        return Err(error.context(format!("writing {}", out.display())));
    }
    fs::rename(&temporary, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(fs::metadata(out)?.len())
}

/// Reads cards from a directory of `.json` files (sorted by name) or a `.jsonl` file.
pub fn read_cards(path: &Path) -> Result<Vec<CardInput>> {
    let metadata =
        fs::metadata(path).with_context(|| format!("reading cards from {}", path.display()))?;
    let mut cards = Vec::new();
    if metadata.is_dir() {
        let files = meridian_registry::files::list_with_extension(path, "json")
            .with_context(|| format!("listing {}", path.display()))?;
        for file in files {
            let json = fs::read_to_string(&file)
                .with_context(|| format!("reading card {}", file.display()))?;
            cards.push(CardInput {
                source_name: file.display().to_string(),
                json: json.trim_end().to_owned(),
            });
        }
        if cards.is_empty() {
            return Err(Rejected(format!("no .json cards in {}", path.display())).into());
        }
    } else {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            cards.push(CardInput {
                source_name: format!("{}:{}", path.display(), index + 1),
                json: line.to_owned(),
            });
        }
    }
    Ok(cards)
}

fn run_snapshot(command: &SnapshotCommand, now: i64) -> Result<Report> {
    match command {
        SnapshotCommand::Build(args) => snapshot_build(args, now),
        SnapshotCommand::Verify {
            snapshot,
            publisher,
            after,
            governance,
        } => snapshot_verify(
            snapshot,
            publisher.as_deref(),
            after.as_deref(),
            governance,
            now,
        ),
        SnapshotCommand::Inspect { snapshot } => snapshot_inspect(snapshot),
        SnapshotCommand::Diff { old, new } => snapshot_diff(old, new),
        SnapshotCommand::Delta { old, new, out } => snapshot_delta(old, new, out),
        SnapshotCommand::Import { snapshot, data } => snapshot_import(snapshot, data, now),
        SnapshotCommand::Export {
            data,
            out,
            publisher,
            since,
        } => snapshot_export(data, out, publisher.as_deref(), since.as_deref()),
    }
}

fn snapshot_build(args: &BuildArgs, now: i64) -> Result<Report> {
    let node_key = load_key(&args.key)?;
    let org_key = load_key(&args.org_key)?;
    let progress = Progress::start();
    progress.phase(
        format!("reading cards from {}", args.cards.display()),
        0,
        Unit::None,
    );
    let cards = read_cards(&args.cards)?;
    let previous = match &args.prev {
        Some(path) => Some(open_snapshot(path, None, &progress)?.0),
        None => None,
    };
    let started = Instant::now();
    progress.phase(
        format!("signing and building {} agents", cards.len()),
        0,
        Unit::None,
    );
    let (built, report) = snapshot::build(BuildInput {
        node_key: &node_key,
        org_key: &org_key,
        org: &args.org,
        region: &args.region,
        cards,
        previous: previous.as_ref(),
        now,
        expires_in_secs: args.expires_in,
        limits: Limits::DEFAULT,
    })
    .context("building the snapshot")?;
    progress.phase(format!("writing {}", args.out.display()), 0, Unit::None);
    let bytes = write_atomically(&args.out, |out| {
        built.write_car(out)?;
        Ok(())
    })?;
    drop(progress);
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        text: format!(
            "wrote {} (seq {}, {} agents: {} added, {} changed, {} removed; {} new blocks; {bytes} bytes) in {seconds:.2}s\nroot {}",
            args.out.display(),
            built.commit.body.seq,
            built.tree.len(),
            report.added,
            report.changed,
            report.removed,
            report.new_blocks,
            built.commit_cid
        ),
        json: json!({
            "out": args.out,
            "root": built.commit_cid.to_string(),
            "data": built.commit.body.data.to_string(),
            "publisher": built.commit.body.publisher.to_did(),
            "seq": built.commit.body.seq,
            "agents": built.tree.len(),
            "added": report.added,
            "changed": report.changed,
            "removed": report.removed,
            "new_blocks": report.new_blocks,
            "bytes": bytes,
        }),
    })
}

fn snapshot_verify(
    path: &Path,
    publisher: Option<&str>,
    after: Option<&Path>,
    governance: &crate::gov_cli::GovernanceArgs,
    now: i64,
) -> Result<Report> {
    if governance.roots.is_empty()
        && (governance.attestations.is_some() || governance.policy.is_some())
    {
        bail!("--attestations and --policy need --root");
    }
    let expected_publisher = publisher
        .map(PublicKey::from_did)
        .transpose()
        .context("--publisher")?;
    let progress = Progress::start();
    let (base, previous) = match after {
        Some(old_path) => {
            let (old, _) = open_snapshot(old_path, None, &progress)?;
            let previous = (old.commit_cid, old.commit.clone());
            (MemoryStore::from(&old), Some(previous))
        }
        None => (MemoryStore::new(), None),
    };
    let started = Instant::now();
    let contents = read_car_file(path, Limits::DEFAULT, &progress)?;
    let options = VerifyOptions {
        now: Some(now),
        expected_publisher,
        previous,
        ..verify_options_with(&progress)
    };
    let verified = snapshot::verify(&contents, &base, &options)
        .with_context(|| format!("snapshot {}", path.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    drop(progress);
    let agents = verified.tree.len();
    let acceptance = if governance.roots.is_empty() {
        None
    } else {
        let snapshot = verified_with_manifests(&contents, &verified, &base)?;
        Some(crate::gov_cli::accept_snapshot(governance, &snapshot, now)?)
    };
    if let Some(acceptance) = acceptance {
        return Ok(Report {
            text: acceptance_text(path, verified.commit.body.seq, agents, &acceptance),
            json: json!({
                "ok": true,
                "root": verified.commit_cid.to_string(),
                "publisher": verified.commit.body.publisher.to_did(),
                "seq": verified.commit.body.seq,
                "agents": agents,
                "linked": verified.linked,
                "governance": acceptance,
            }),
        });
    }
    Ok(Report {
        text: format!(
            "ok: {} verified (seq {}, {agents} agents, {} signatures checked{}) in {seconds:.2}s",
            path.display(),
            verified.commit.body.seq,
            verified.verified_manifests.len(),
            if after.is_some() {
                if verified.linked {
                    ", links to the previous snapshot"
                } else {
                    ", newer than the previous snapshot but the chain between them is not in the file"
                }
            } else {
                ""
            }
        ),
        json: json!({
            "ok": true,
            "root": verified.commit_cid.to_string(),
            "publisher": verified.commit.body.publisher.to_did(),
            "seq": verified.commit.body.seq,
            "agents": agents,
            "signatures_checked": verified.verified_manifests.len(),
            "linked": verified.linked,
            "seconds": seconds,
        }),
    })
}

/// A verified snapshot with every manifest its tree lists: from the file, or (for a delta)
/// from the older snapshot in `base`.
fn verified_with_manifests(
    contents: &snapshot::CarContents,
    verified: &snapshot::VerifiedSnapshot,
    base: &MemoryStore,
) -> Result<Snapshot> {
    let mut blocks: std::collections::HashMap<Cid, std::sync::Arc<[u8]>> =
        contents.blocks.iter().cloned().collect();
    for (_, cid) in verified.tree.entries() {
        if !blocks.contains_key(&cid)
            && let Some(block) = base.get(&cid)?
        {
            blocks.insert(cid, block);
        }
    }
    Ok(Snapshot {
        commit: verified.commit.clone(),
        commit_cid: verified.commit_cid,
        tree: verified.tree.clone(),
        blocks,
    })
}

/// What `snapshot verify` with governance says: the counts, then each rejected agent with
/// its reasons and each governance document it ignored.
fn acceptance_text(path: &Path, seq: u64, agents: usize, acceptance: &serde_json::Value) -> String {
    let accepted = acceptance["accepted"].as_array().map_or(0, Vec::len);
    let mut text = format!(
        "ok: {} verified (seq {seq}, {agents} agents); governance (root version {}): {accepted} accepted, {} rejected",
        path.display(),
        acceptance["root_version"],
        agents.saturating_sub(accepted)
    );
    if let Some(rejected) = acceptance["rejected"].as_object() {
        for (agent, reasons) in rejected {
            let reasons: Vec<&str> = reasons
                .as_array()
                .map(|r| r.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            text.push_str(&format!("\n  rejected {agent}: {}", reasons.join("; ")));
        }
    }
    if let Some(skipped) = acceptance["skipped_documents"].as_array() {
        for skip in skipped {
            text.push_str(&format!("\n  ignored {}: {}", skip["file"], skip["reason"]));
        }
    }
    text
}

fn snapshot_inspect(path: &Path) -> Result<Report> {
    let contents = read_car_file(path, Limits::DEFAULT, &Progress::start())
        .with_context(|| format!("snapshot {}", path.display()))?;
    let verified = snapshot::verify(&contents, &MemoryStore::new(), &VerifyOptions::default())
        .with_context(|| format!("snapshot {}", path.display()))?;
    let body = &verified.commit.body;
    let json = json!({
        "root": verified.commit_cid.to_string(),
        "data": body.data.to_string(),
        "publisher": body.publisher.to_did(),
        "seq": body.seq,
        "prev": body.prev.map(|c| c.to_string()),
        "created_at": body.created_at,
        "expires_at": body.expires_at,
        "agents": verified.tree.len(),
        "blocks": contents.blocks.len(),
        "bytes": contents.bytes,
        "tree_depth": verified.tree.depth(),
    });
    Ok(Report {
        text: format!(
            "root       {}\ndata       {}\npublisher  {}\nseq        {}\nprev       {}\ncreated_at {}\nexpires_at {}\nagents     {}\nblocks     {}\nbytes      {}",
            verified.commit_cid,
            body.data,
            body.publisher,
            body.seq,
            body.prev.map_or("-".to_owned(), |c| c.to_string()),
            body.created_at,
            body.expires_at,
            verified.tree.len(),
            contents.blocks.len(),
            contents.bytes
        ),
        json,
    })
}

fn snapshot_diff(old_path: &Path, new_path: &Path) -> Result<Report> {
    let progress = Progress::start();
    let (old, _) = open_snapshot(old_path, None, &progress)?;
    let (new, _) = open_snapshot(new_path, None, &progress)?;
    drop(progress);
    let snapshot::AgentDiff {
        added,
        removed,
        changed,
    } = new.agent_diff(&old);
    let mut text = String::new();
    for (sign, keys) in [("+", &added), ("-", &removed), ("~", &changed)] {
        for key in keys {
            text.push_str(&format!("{sign} {key}\n"));
        }
    }
    text.push_str(&format!(
        "{} added, {} removed, {} changed",
        added.len(),
        removed.len(),
        changed.len()
    ));
    Ok(Report {
        text,
        json: json!({ "added": added, "removed": removed, "changed": changed }),
    })
}

fn snapshot_delta(old_path: &Path, new_path: &Path, out: &Path) -> Result<Report> {
    let progress = Progress::start();
    let (old, _) = open_snapshot(old_path, None, &progress)?;
    let (new, _) = open_snapshot(new_path, None, &progress)?;
    drop(progress);
    if old.commit.body.publisher != new.commit.body.publisher {
        return Err(Rejected(format!(
            "{} and {} are by different publishers",
            old_path.display(),
            new_path.display()
        ))
        .into());
    }
    if new.commit.body.seq <= old.commit.body.seq {
        return Err(Rejected(format!(
            "{} (seq {}) is not newer than {} (seq {})",
            new_path.display(),
            new.commit.body.seq,
            old_path.display(),
            old.commit.body.seq
        ))
        .into());
    }
    let mut blocks = 0;
    let bytes = write_atomically(out, |writer| {
        let (_, diff) = new.write_delta(&old.tree, writer)?;
        blocks = 1 + diff.new_nodes.len() + diff.added.len() + diff.changed.len();
        Ok(())
    })?;
    Ok(Report {
        text: format!("wrote {} ({blocks} blocks, {bytes} bytes)", out.display()),
        json: json!({
            "out": out,
            "root": new.commit_cid.to_string(),
            "since": old.commit_cid.to_string(),
            "blocks": blocks,
            "bytes": bytes,
        }),
    })
}

fn snapshot_import(path: &Path, data: &Path, now: i64) -> Result<Report> {
    let store = open_store(data)?;
    let started = Instant::now();
    let progress = Progress::start();
    let contents = read_car_file(path, Limits::DEFAULT, &progress)?;
    let options = VerifyOptions {
        now: Some(now),
        ..verify_options_with(&progress)
    };
    let verified = snapshot::import(&store, &contents, options)
        .with_context(|| format!("importing {}", path.display()))?;
    drop(progress);
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        text: format!(
            "imported {} into {}: seq {}, {} agents, {} blocks, {} signatures checked, {} reused, in {seconds:.2}s",
            path.display(),
            data.display(),
            verified.commit.body.seq,
            verified.tree.len(),
            verified.new_blocks.len(),
            verified.verified_manifests.len(),
            verified.reused_manifests
        ),
        json: json!({
            "root": verified.commit_cid.to_string(),
            "publisher": verified.commit.body.publisher.to_did(),
            "seq": verified.commit.body.seq,
            "agents": verified.tree.len(),
            "blocks": verified.new_blocks.len(),
            "signatures_checked": verified.verified_manifests.len(),
            "reused": verified.reused_manifests,
            "seconds": seconds,
        }),
    })
}

fn snapshot_export(
    data: &Path,
    out: &Path,
    publisher: Option<&str>,
    since: Option<&str>,
) -> Result<Report> {
    if !data.join("store").exists() {
        bail!(
            "{} holds no store (import a snapshot first)",
            data.display()
        );
    }
    let store = open_store(data)?;
    let heads = store.heads()?;
    let (publisher, head) = match publisher {
        Some(did) => {
            PublicKey::from_did(did).context("--publisher")?;
            let head = heads
                .get(did)
                .ok_or_else(|| anyhow!("{} holds no snapshot by {did}", data.display()))?;
            (did.to_owned(), *head)
        }
        None => match heads.len() {
            0 => bail!("{} holds no snapshot", data.display()),
            1 => heads
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("no heads"))?,
            n => bail!(
                "{} holds snapshots of {n} publishers; choose one with --publisher",
                data.display()
            ),
        },
    };
    let progress = Progress::start();
    progress.phase(format!("loading {publisher}'s snapshot"), 0, Unit::None);
    let snapshot = Snapshot::load(&store, &head.commit, Limits::DEFAULT)
        .with_context(|| format!("loading {publisher}'s snapshot from {}", data.display()))?;
    progress.phase(format!("writing {}", out.display()), 0, Unit::None);
    let since_cid: Option<Cid> = since
        .map(|text| meridian_registry::ids::parse_cid(text).map_err(|e| anyhow!("--since: {e}")))
        .transpose()?;
    let bytes = match since_cid {
        None => write_atomically(out, |writer| {
            snapshot.write_car(writer)?;
            Ok(())
        })?,
        Some(since_cid) => {
            let old = Snapshot::load(&store, &since_cid, Limits::DEFAULT)
                .with_context(|| format!("--since {since_cid}: not a snapshot in this store"))?;
            write_atomically(out, |writer| {
                snapshot.write_delta(&old.tree, writer)?;
                Ok(())
            })?
        }
    };
    Ok(Report {
        text: format!(
            "wrote {} (seq {}, {} agents, {bytes} bytes)",
            out.display(),
            snapshot.commit.body.seq,
            snapshot.tree.len()
        ),
        json: json!({
            "out": out,
            "root": snapshot.commit_cid.to_string(),
            "publisher": publisher,
            "seq": snapshot.commit.body.seq,
            "agents": snapshot.tree.len(),
            "bytes": bytes,
        }),
    })
}

#[cfg(test)]
mod tests {

    /// Every command a user runs shows an example in its `--help`, and every required flag is
    /// marked as such (clap lists them in the usage line).
    #[test]
    fn every_command_has_an_example_in_its_help() {
        use clap::CommandFactory as _;
        fn leaves(command: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
            let subcommands: Vec<&clap::Command> = command
                .get_subcommands()
                .filter(|c| c.get_name() != "help")
                .collect();
            if subcommands.is_empty() {
                out.push((path.clone(), command.clone()));
            }
            for sub in subcommands {
                leaves(sub, format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut all = Vec::new();
        leaves(&Cli::command(), "meridian".to_owned(), &mut all);
        let missing: Vec<String> = all
            .into_iter()
            .filter(|(_, command)| {
                let long = command
                    .get_long_about()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let after = command
                    .get_after_help()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                !(long.contains("Example") || after.contains("Example"))
            })
            .map(|(path, _)| path)
            .collect();
        assert!(
            missing.is_empty(),
            "commands without an example: {missing:?}"
        );
    }

    #[test]
    fn times_print_in_utc_beside_unix_seconds() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z (0)");
        assert_eq!(utc(1_800_000_000), "2027-01-15T08:00:00Z (1800000000)");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z (951782400)");
        assert_eq!(utc(-86_400), "1969-12-31T00:00:00Z (-86400)");
    }
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("90"), Ok(90));
        assert_eq!(parse_duration_secs("15m"), Ok(900));
        assert_eq!(parse_duration_secs("12h"), Ok(43_200));
        assert_eq!(parse_duration_secs("30d"), Ok(2_592_000));
        for bad in ["", "0s", "-5s", "5w", "h", "99999999999999d"] {
            assert!(parse_duration_secs(bad).is_err(), "{bad}");
        }
    }
}

//! `meridian agent …`: make the body `POST /api/v1/agents` takes from an agent card, and
//! publish it; sign an agent's removal and send it. The manifest is the card, the
//! organisation, the region and `updated_at`, signed by an organisation key over the canonical
//! DAG-CBOR encoding of every manifest field but `sig` (the `signer` included). A removal is the
//! same envelope with an empty card and `removed: true`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use clap::Subcommand;
use meridian_registry::manifest::ManifestBody;
use serde_json::json;

use crate::command::{Rejected, Report};
use crate::data::load_key;

/// `meridian agent …`
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Sign an agent card into the body of `POST /api/v1/agents` (`{"manifest": base64}`),
    /// printed or written to --out.
    ///
    /// Example: meridian agent sign --card echo.json --org acme --region eu-west --org-key acme.key --out body.json
    Sign {
        /// The card, organisation, region and key.
        #[command(flatten)]
        manifest: ManifestArgs,
        /// Where to write the body (default: print it).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign an agent card and publish it on a node with the organisation's token.
    ///
    /// Example: meridian agent publish --card echo.json --org acme --region eu-west --org-key acme.key --node http://127.0.0.1:7700 --token mrd_...
    Publish {
        /// The card, organisation, region and key.
        #[command(flatten)]
        manifest: ManifestArgs,
        /// The node's URL.
        #[arg(long, required = true)]
        node: String,
        /// The organisation's publish token (`meridian node token create --org ORG`).
        #[arg(long, env = "MERIDIAN_TOKEN", hide_env_values = true, required = true)]
        token: String,
    },
    /// Withdraw an agent everywhere: sign its removal with an organisation key and send it to
    /// the node that publishes it (`DELETE /api/v1/agents/ORG/NAME`), or write the body to
    /// --out. The removal beats every manifest of the agent dated at or before it, on every
    /// node, whoever lists a copy; publishing the agent again needs a later `updated_at`.
    ///
    /// Example: meridian agent remove acme/echo --region eu-west --org-key acme.key --node http://127.0.0.1:7700 --token mrd_...
    Remove {
        /// The agent, `org/name`.
        agent: String,
        /// The region the agent was served from (signed into the removal).
        #[arg(long, required = true)]
        region: String,
        /// The organisation key file that signs the removal.
        #[arg(long, required = true)]
        org_key: PathBuf,
        /// Unix seconds the removal takes effect (default: now); it must not be before the
        /// published manifest's `updated_at`.
        #[arg(long)]
        updated_at: Option<i64>,
        /// Write the DELETE body here instead of sending it.
        #[arg(long, conflicts_with_all = ["node", "token"])]
        out: Option<PathBuf>,
        /// The node's URL.
        #[arg(long, required_unless_present = "out", requires = "token")]
        node: Option<String>,
        /// The organisation's publish token.
        #[arg(long, env = "MERIDIAN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Search the agents a node serves: every word must appear in an agent's name,
    /// description, id or skills; with --relevance, agents matching any word come best first,
    /// each with a score.
    ///
    /// Example: meridian agent search book a flight --relevance --node http://127.0.0.1:7700
    Search {
        /// Words to look for.
        words: Vec<String>,
        /// The node's URL.
        #[arg(long)]
        node: String,
        /// Only agents with this skill id.
        #[arg(long)]
        skill: Option<String>,
        /// Only agents with this skill tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only this organisation's agents.
        #[arg(long)]
        org: Option<String>,
        /// Only agents served from this region.
        #[arg(long)]
        region: Option<String>,
        /// Most agents shown.
        #[arg(long, default_value = "20")]
        limit: usize,
        /// Rank by relevance to any of the words.
        #[arg(long)]
        relevance: bool,
    },
    /// Show one agent as a node serves it: its card, who published it, its provenance and its
    /// ARD identifier (or why it has none).
    ///
    /// Example: meridian agent show acme/echo --node http://127.0.0.1:7700
    Show {
        /// The agent, `org/name`.
        agent: String,
        /// The node's URL.
        #[arg(long)]
        node: String,
    },
    /// Send an agent a text message through a node's A2A proxy and print its answer's text (the
    /// A2A version, v1.0 or v0.3, is the one the agent's card declares).
    ///
    /// Example: meridian agent call acme/echo "hello" --node http://127.0.0.1:7700
    Call {
        /// The agent, `org/name`.
        agent: String,
        /// The message.
        message: String,
        /// The node's URL.
        #[arg(long)]
        node: String,
        /// Your organisation's caller token on that node, for its rate tier.
        #[arg(long, env = "MERIDIAN_CALLER_TOKEN", hide_env_values = true)]
        caller_token: Option<String>,
    },
}

/// What a manifest is made of.
#[derive(Debug, clap::Args)]
pub struct ManifestArgs {
    /// The A2A agent card (JSON, v1.0 or v0.3): a file, or an http(s) URL fetched through the
    /// SSRF guard (no redirect, at most 64 KiB), such as the agent's
    /// `/.well-known/agent-card.json`.
    #[arg(long, required = true)]
    card: PathBuf,
    /// Let a --card URL reach private, loopback and link-local addresses.
    #[arg(long)]
    allow_private: bool,
    /// The organisation (a-z, 0-9, inner -).
    #[arg(long, required = true)]
    org: String,
    /// The region the agent is served from (the publishing node's `node.region`).
    #[arg(long, required = true)]
    region: String,
    /// The organisation key file that signs it.
    #[arg(long, required = true)]
    org_key: PathBuf,
    /// Unix seconds of this version (default: now); a newer version needs a larger one.
    #[arg(long)]
    updated_at: Option<i64>,
}

/// The signed manifest block, its agent id and its CID.
fn sign(args: &ManifestArgs, now: i64) -> Result<(Vec<u8>, String, String)> {
    let card = read_card(&args.card, args.allow_private)?;
    let body = ManifestBody::from_card(
        &card,
        &args.org,
        &args.region,
        args.updated_at.unwrap_or(now),
    )
    .map_err(|e| Rejected(format!("card {}: {e}", args.card.display())))?;
    let manifest = body.sign(&load_key(&args.org_key)?);
    let (cid, block) = manifest.to_block_and_cid();
    Ok((block, manifest.body.agent_id, cid.to_string()))
}

/// The card's text: read from a file, or fetched when `path` is an http(s) URL.
fn read_card(path: &Path, allow_private: bool) -> Result<String> {
    let text = path.to_string_lossy();
    if text.starts_with("http://") || text.starts_with("https://") {
        return fetch_card(&text, allow_private);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading card {}", path.display()))
}

/// Fetches a card over HTTP(S) through the SSRF guard: no redirect, a private or loopback
/// address refused unless `allow_private`, at most [`CARD_BYTES_MAX`] bytes, in 30 s.
fn fetch_card(url: &str, allow_private: bool) -> Result<String> {
    use meridian_registry::manifest::CARD_BYTES_MAX;
    let parsed = reqwest::Url::parse(url).map_err(|e| Rejected(format!("--card {url}: {e}")))?;
    let guard = meridian_hub::relay::EgressGuard {
        allow_private,
        allow_cidrs: Vec::new(),
    };
    if let Some(why) = guard.url_refusal(&parsed) {
        return Err(Rejected(format!("--card {url}: {why} (--allow-private to fetch it)")).into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let bytes = runtime.block_on(async {
        let client = guard
            .client(std::time::Duration::from_secs(10))
            .context("building the HTTP client")?;
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            client.get(parsed).send(),
        )
        .await
        .map_err(|_| Rejected(format!("--card {url}: no answer in 30 s")))?
        .map_err(|e| Rejected(format!("--card {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(Rejected(format!(
                "--card {url}: HTTP {} (a redirect is not followed)",
                response.status()
            ))
            .into());
        }
        meridian_hub::relay::read_limited(response, CARD_BYTES_MAX)
            .await
            .map_err(|e| anyhow::Error::from(Rejected(format!("--card {url}: {e}"))))
    })?;
    String::from_utf8(bytes).map_err(|_| Rejected(format!("--card {url}: not UTF-8 text")).into())
}

fn publish_body(block: &[u8]) -> serde_json::Value {
    json!({ "manifest": base64::engine::general_purpose::STANDARD.encode(block) })
}

/// `meridian agent remove`: signs the agent's removal and sends it to the node (`node` and its
/// token) or writes the DELETE body to `out`.
fn remove(
    agent: &str,
    region: &str,
    org_key: &meridian_registry::keys::Keypair,
    updated_at: i64,
    out: Option<&Path>,
    node: Option<(&str, &str)>,
) -> Result<Report> {
    let removal = ManifestBody::tombstone(agent, region, updated_at)
        .map_err(|e| Rejected(format!("agent `{agent}`: {e}")))?
        .sign(org_key);
    let (cid, block) = removal.to_block_and_cid();
    let body = publish_body(&block);
    let removed_at = removal.body.updated_at;
    match (out, node) {
        (Some(out), _) => {
            crate::data::write_file(out, format!("{body}\n").as_bytes())?;
            Ok(Report {
                text: format!(
                    "wrote the signed removal of {agent} ({cid}, as of {removed_at}) to {}: send it with DELETE /api/v1/agents/{agent}",
                    out.display()
                ),
                json: json!({ "agent_id": agent, "removal": cid.to_string(), "removed_at": removed_at, "out": out }),
            })
        }
        (None, Some((node, token))) => {
            let url = format!("{}/api/v1/agents/{agent}", node.trim_end_matches('/'));
            let answer = send(
                reqwest::Method::DELETE,
                &url,
                token,
                body.to_string(),
                &format!("the removal of {agent}"),
            )?;
            Ok(Report {
                text: format!(
                    "removed {agent} as of {removed_at} ({cid}) on {node}: seq {}",
                    answer["seq"]
                ),
                json: answer,
            })
        }
        _ => Err(Rejected(
            "give --out FILE, or --node URL with --token (or MERIDIAN_TOKEN)".into(),
        )
        .into()),
    }
}

/// Sends `body` to the node with the organisation's token and returns its JSON answer; a
/// refusal is an error naming the node's reason (a 4xx is the caller's to fix).
fn send(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: String,
    what: &str,
) -> Result<serde_json::Value> {
    let authorization = format!("Bearer {token}");
    crate::agent_read::request_json(
        method,
        url,
        &[("authorization", authorization.as_str())],
        Some(body),
        what,
    )
}

/// Runs `meridian agent …`.
pub fn run(command: &AgentCommand, now: i64) -> Result<Report> {
    match command {
        AgentCommand::Sign { manifest, out } => {
            let (block, agent_id, cid) = sign(manifest, now)?;
            let body = publish_body(&block);
            let text = body.to_string();
            if let Some(out) = out {
                crate::data::write_file(out, format!("{text}\n").as_bytes())?;
                return Ok(Report {
                    text: format!(
                        "wrote the publish body of {agent_id} ({cid}) to {}",
                        out.display()
                    ),
                    json: json!({ "agent_id": agent_id, "manifest": cid, "out": out }),
                });
            }
            Ok(Report {
                text,
                json: json!({ "agent_id": agent_id, "manifest": cid, "body": body }),
            })
        }
        AgentCommand::Publish {
            manifest,
            node,
            token,
        } => {
            let (block, agent_id, cid) = sign(manifest, now)?;
            let url = format!("{}/api/v1/agents", node.trim_end_matches('/'));
            let answer = send(
                reqwest::Method::POST,
                &url,
                token,
                publish_body(&block).to_string(),
                &agent_id,
            )?;
            Ok(Report {
                text: format!(
                    "published {agent_id} ({cid}) on {node}: seq {}",
                    answer["seq"]
                ),
                json: answer,
            })
        }
        AgentCommand::Remove {
            agent,
            region,
            org_key,
            updated_at,
            out,
            node,
            token,
        } => remove(
            agent,
            region,
            &load_key(org_key)?,
            updated_at.unwrap_or(now),
            out.as_deref(),
            node.as_deref().zip(token.as_deref()),
        ),
        AgentCommand::Search {
            words,
            node,
            skill,
            tag,
            org,
            region,
            limit,
            relevance,
        } => {
            let filters = [
                ("skill", skill),
                ("tag", tag),
                ("org", org),
                ("region", region),
            ]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_deref()?)))
            .collect();
            crate::agent_read::search(
                node,
                &crate::agent_read::SearchArgs {
                    words,
                    filters,
                    limit: *limit,
                    relevance: *relevance,
                },
            )
        }
        AgentCommand::Show { agent, node } => crate::agent_read::show(node, agent),
        AgentCommand::Call {
            agent,
            message,
            node,
            caller_token,
        } => crate::agent_read::call(node, agent, message, caller_token.as_deref(), now),
    }
}

//! `meridian agent …`: make the body `POST /api/v1/agents` takes from an agent card, and
//! publish it; sign an agent's removal and send it. The manifest is the card, the
//! organisation, the region and `updated_at`, signed by an organisation key over the canonical
//! DAG-CBOR encoding of every manifest field but `sig` (the `signer` included). A removal is the
//! same envelope with an empty card and `removed: true`; a deprecation, the agent's current
//! manifest signed again with `deprecated: true` (and `superseded_by`).

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
    /// Deprecate an agent: it stays listed and answering, but ranks below every active agent,
    /// can be filtered out (`status=active`), and points callers to its successor. The agent's
    /// current manifest is read from the node and checked (its block, CID and organisation
    /// signature), then signed again, deprecated, with a later `updated_at`; it travels to every
    /// mirror and hub like any new version. Publishing a new version undoes it.
    ///
    /// Example: meridian agent deprecate acme/echo --superseded-by acme/echo-2 --org-key acme.key --node http://127.0.0.1:7700 --token mrd_...
    Deprecate {
        /// The agent, `org/name`.
        agent: String,
        /// The agent that replaces it, `org/name` (any organisation's).
        #[arg(long)]
        superseded_by: Option<String>,
        /// The organisation key file that signs the deprecation.
        #[arg(long, required = true)]
        org_key: PathBuf,
        /// Unix seconds of the deprecation (default: now, and always after the current
        /// manifest's `updated_at`).
        #[arg(long)]
        updated_at: Option<i64>,
        /// The node that publishes the agent: its manifest is read from here, and the
        /// deprecation sent here.
        #[arg(long, required = true)]
        node: String,
        /// Write the publish body here instead of sending it.
        #[arg(long, conflicts_with = "token")]
        out: Option<PathBuf>,
        /// The organisation's publish token.
        #[arg(
            long,
            env = "MERIDIAN_TOKEN",
            hide_env_values = true,
            required_unless_present = "out"
        )]
        token: Option<String>,
    },
    /// Withdraw an agent everywhere: sign its removal with an organisation key and send it to
    /// the node that publishes it (`DELETE /api/v1/agents/ORG/NAME`), or write the body to
    /// --out. The removal beats every manifest of the agent dated at or before it, on every
    /// node, whoever lists a copy; publishing the agent again needs a later `updated_at`.
    ///
    /// Example: meridian agent remove acme/echo --region eu-west --org-key acme.key --node http://127.0.0.1:7700 --token mrd_...
    #[command(visible_alias = "unpublish")]
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
        /// Only agents in this life-cycle state: `active` or `deprecated`.
        #[arg(long, value_parser = ["active", "deprecated"])]
        status: Option<String>,
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

/// What `meridian agent deprecate` does.
struct Deprecation<'a> {
    agent: &'a str,
    superseded_by: Option<&'a str>,
    org_key: meridian_registry::keys::Keypair,
    updated_at: Option<i64>,
    node: &'a str,
    out: Option<&'a Path>,
    token: Option<&'a str>,
}

/// The manifest `node` serves for `agent`, checked: its block hashes to the CID the node
/// names, decodes, is signed by its signer, and is the agent's (not a removal).
fn current_manifest(node: &str, agent: &str) -> Result<meridian_registry::manifest::Manifest> {
    use meridian_registry::manifest::Manifest;
    let base = node.trim_end_matches('/');
    let view = crate::agent_read::request_json(
        reqwest::Method::GET,
        &format!("{base}/api/v1/agents/{agent}"),
        &[],
        None,
        &format!("the lookup of {agent}"),
    )?;
    let cid_text = view["manifest"]["cid"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("{node} answered for {agent} without a manifest CID"))?;
    let cid: meridian_registry::Cid = cid_text
        .parse()
        .map_err(|e| anyhow::anyhow!("{node} named manifest `{cid_text}`: {e}"))?;
    let block = crate::agent_read::request_bytes(
        reqwest::Method::GET,
        &format!("{base}/api/v1/blocks/{cid}"),
        &[],
        None,
        &format!("the manifest block of {agent}"),
    )?;
    if meridian_registry::ids::dag_cbor_cid(&block) != cid {
        anyhow::bail!("{node} sent a block for {cid} that does not hash to it: not signing it");
    }
    let manifest = Manifest::decode(&block)
        .map_err(|e| anyhow::anyhow!("{node}'s manifest of {agent}: {e}"))?;
    manifest
        .verify_signature()
        .map_err(|e| anyhow::anyhow!("{node}'s manifest of {agent} has a bad signature: {e}"))?;
    if manifest.body.agent_id != agent || manifest.is_removal() {
        anyhow::bail!(
            "{node} answered for {agent} with a manifest of something else: not signing it"
        );
    }
    Ok(manifest)
}

/// `meridian agent deprecate`: the agent's current manifest, read from the node and checked,
/// signed again as deprecated and sent to the node (or written to `out`).
fn deprecate(args: &Deprecation<'_>, now: i64) -> Result<Report> {
    let agent = args.agent;
    let current = current_manifest(args.node, agent)?;
    let mut body = current.body.clone();
    body.updated_at = args
        .updated_at
        .unwrap_or_else(|| now.max(current.body.updated_at + 1));
    body.deprecation = None;
    let manifest = body
        .deprecate(args.superseded_by)
        .map_err(|e| Rejected(format!("deprecating {agent}: {e}")))?
        .sign(&args.org_key);
    let (cid, block) = manifest.to_block_and_cid();
    let publish = publish_body(&block);
    let successor = args
        .superseded_by
        .map_or_else(String::new, |s| format!(", superseded by {s}"));
    if let Some(out) = args.out {
        crate::data::write_file(out, format!("{publish}\n").as_bytes())?;
        return Ok(Report {
            text: format!(
                "wrote the deprecation of {agent}{successor} ({cid}) to {}: send it with POST /api/v1/agents",
                out.display()
            ),
            json: json!({ "agent_id": agent, "manifest": cid.to_string(), "out": out }),
        });
    }
    let token = args
        .token
        .ok_or_else(|| Rejected("give --token (or MERIDIAN_TOKEN), or --out FILE".into()))?;
    let url = format!("{}/api/v1/agents", args.node.trim_end_matches('/'));
    let answer = send(
        reqwest::Method::POST,
        &url,
        token,
        publish.to_string(),
        &format!("the deprecation of {agent}"),
    )?;
    Ok(Report {
        text: format!(
            "deprecated {agent}{successor} as of {} ({cid}) on {}: seq {}",
            manifest.body.updated_at, args.node, answer["seq"]
        ),
        json: answer,
    })
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

/// `meridian agent sign`: the publish body, printed or written to `out`.
fn sign_command(manifest: &ManifestArgs, out: Option<&Path>, now: i64) -> Result<Report> {
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

/// `meridian agent publish`: the manifest signed here and sent to the node.
fn publish_command(manifest: &ManifestArgs, node: &str, token: &str, now: i64) -> Result<Report> {
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

/// Runs `meridian agent …`.
pub fn run(command: &AgentCommand, now: i64) -> Result<Report> {
    match command {
        AgentCommand::Sign { manifest, out } => sign_command(manifest, out.as_deref(), now),
        AgentCommand::Publish {
            manifest,
            node,
            token,
        } => publish_command(manifest, node, token, now),
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
        AgentCommand::Deprecate {
            agent,
            superseded_by,
            org_key,
            updated_at,
            node,
            out,
            token,
        } => deprecate(
            &Deprecation {
                agent,
                superseded_by: superseded_by.as_deref(),
                org_key: load_key(org_key)?,
                updated_at: *updated_at,
                node,
                out: out.as_deref(),
                token: token.as_deref(),
            },
            now,
        ),
        AgentCommand::Search {
            words,
            node,
            skill,
            tag,
            org,
            region,
            limit,
            status,
            relevance,
        } => {
            let filters = [
                ("skill", skill),
                ("tag", tag),
                ("org", org),
                ("region", region),
                ("status", status),
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

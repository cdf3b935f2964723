//! Ingestion from an organisation's own site (ARD §5.2): a node that holds the organisation's
//! key polls the documents where its agents already live (`/.well-known/ard.json` manifests
//! and `/.well-known/agent-card.json` cards on the organisation's bound domain), publishes new
//! and changed A2A cards signed with that key, and unpublishes (signed removal) the agents a
//! source no longer lists.
//!
//! Every fetch is HTTPS through the `[domains]` settings (resolver overrides, extra roots, the
//! egress guard), without redirects, bounded in size, and conditional (`If-None-Match`,
//! `If-Modified-Since`). A bad document changes nothing; a bad entry gets its own error and
//! changes nothing for its agent. Each source's last result is kept for `GET /api/v1/ingest`,
//! counted (`meridian_ingest_*`) and logged; what each source published is remembered in
//! `DATA/ingest.json`, so an agent is only ever unpublished by the source that published it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use meridian_registry::keys::Keypair;
use meridian_registry::manifest::{CARD_BYTES_MAX, Manifest, ManifestBody};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use meridian_registry::store::BlockStore as _;

use super::http::{ApiError, NodeState};

/// The file that remembers what each source published, under the data directory.
pub const INGEST_FILE: &str = "ingest.json";
/// Largest ARD manifest read, in bytes.
pub const MANIFEST_DOC_BYTES_MAX: usize = 1024 * 1024;
/// Most entries of one ARD manifest taken in.
pub const ENTRIES_MAX: usize = 1000;
/// Most errors kept in a source's report.
const ERRORS_KEPT: usize = 50;
/// The ARD type of an A2A agent card entry.
const A2A_CARD_TYPE: &str = "application/a2a-agent-card+json";

/// A source's last result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceReport {
    /// The source URL.
    pub url: String,
    /// Unix seconds of the last poll (0: not yet).
    pub last_run: i64,
    /// `ok`, `unchanged` (the source answered 304; the cards it listed were read again,
    /// conditionally), or `failed` (the document changed nothing).
    pub outcome: String,
    /// Agents published for the first time.
    pub published: usize,
    /// Agents whose card changed, published again.
    pub updated: usize,
    /// Agents whose card had not changed.
    pub unchanged: usize,
    /// Agents the source no longer lists, unpublished.
    pub removed: usize,
    /// Entries of other types, skipped.
    pub skipped: usize,
    /// What went wrong, by entry.
    pub errors: Vec<String>,
}

/// What a source published and the validators of what it fetched (`DATA/ingest.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SourceMemory {
    /// The agent each card URL gave, last time it was read.
    cards: BTreeMap<String, String>,
    /// The agents this source published and still lists.
    agents: BTreeSet<String>,
    /// The card URLs the source listed last time it was read (a 304 lists them again, so a
    /// card that failed is tried again while the source stays unchanged).
    #[serde(default)]
    urls: Vec<String>,
    /// Entries of other types it listed then.
    #[serde(default)]
    skipped: usize,
}

/// The validators of one fetched URL, and what it gave.
#[derive(Debug, Clone, Default)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

/// The ingestion's state: memory per source (persisted), validators, last reports.
#[derive(Debug, Default)]
pub struct Ingest {
    memory: Mutex<BTreeMap<String, SourceMemory>>,
    validators: Mutex<HashMap<String, Validators>>,
    reports: Mutex<BTreeMap<String, SourceReport>>,
}

impl Ingest {
    /// Loads `DATA/ingest.json` (missing: nothing published yet).
    pub fn load(data: &std::path::Path) -> anyhow::Result<Self> {
        let memory = match std::fs::read(data.join(INGEST_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{} is not an ingest file: {e}", INGEST_FILE))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(anyhow::anyhow!("reading {INGEST_FILE}: {e}")),
        };
        Ok(Self {
            memory: Mutex::new(memory),
            ..Self::default()
        })
    }

    /// Forgets the validators of every URL that no source lists any more, so a site that
    /// names new URLs on every poll cannot make them pile up.
    fn prune_validators(&self, sources: &[String]) {
        let Ok(memory) = self.memory.lock() else {
            return;
        };
        let listed: std::collections::HashSet<&str> = sources
            .iter()
            .map(String::as_str)
            .chain(
                memory
                    .values()
                    .flat_map(|m| m.urls.iter().map(String::as_str)),
            )
            .collect();
        if let Ok(mut validators) = self.validators.lock() {
            validators.retain(|url, _| listed.contains(url.as_str()));
        }
    }

    fn save(&self, data: &std::path::Path) -> anyhow::Result<()> {
        let memory = self
            .memory
            .lock()
            .map_err(|_| anyhow::anyhow!("ingest lock poisoned"))?;
        crate::data::write_file(
            &data.join(INGEST_FILE),
            &serde_json::to_vec_pretty(&*memory)?,
        )
    }
}

/// What one fetch gave.
enum Fetched {
    /// 304: as last time.
    Unchanged,
    /// A new body.
    Body(Vec<u8>),
}

/// Fetches `url` conditionally (its last validators), HTTPS only, at most `max` bytes.
async fn fetch(
    state: &NodeState,
    client: &reqwest::Client,
    url: &str,
    max: usize,
) -> Result<Fetched, String> {
    let known = state
        .ingest
        .validators
        .lock()
        .ok()
        .and_then(|v| v.get(url).cloned())
        .unwrap_or_default();
    let mut request = client.get(url);
    if let Some(etag) = &known.etag {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag);
    }
    if let Some(date) = &known.last_modified {
        request = request.header(reqwest::header::IF_MODIFIED_SINCE, date);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("{url}: {}", super::domains::error_chain(&e)))?;
    let status = response.status().as_u16();
    if status == 304 {
        return Ok(Fetched::Unchanged);
    }
    if status != 200 {
        return Err(format!("{url}: HTTP {status} (a redirect is not followed)"));
    }
    let header = |name: reqwest::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let validators = Validators {
        etag: header(reqwest::header::ETAG),
        last_modified: header(reqwest::header::LAST_MODIFIED),
    };
    let body = meridian_hub::relay::read_limited(response, max)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if let Ok(mut all) = state.ingest.validators.lock() {
        all.insert(url.to_owned(), validators);
    }
    Ok(Fetched::Body(body))
}

/// Forgets `url`'s validators, so the next poll reads it whole (after a failure to take in
/// what it gave).
fn forget(state: &NodeState, url: &str) {
    if let Ok(mut all) = state.ingest.validators.lock() {
        all.remove(url);
    }
}

/// The A2A card URLs a source lists: itself for a card, the entries of type A2A card for an
/// ARD manifest (others counted as skipped); an error when the document is neither.
fn card_urls(source: &str, body: &[u8], report: &mut SourceReport) -> Result<Vec<String>, String> {
    let document: Value =
        serde_json::from_slice(body).map_err(|e| format!("{source}: not JSON: {e}"))?;
    let Some(entries) = document.get("entries") else {
        if document.get("name").is_some() {
            return Ok(vec![source.to_owned()]);
        }
        return Err(format!(
            "{source}: neither an ARD manifest (`entries`) nor an A2A agent card (`name`)"
        ));
    };
    let entries = entries
        .as_array()
        .ok_or_else(|| format!("{source}: `entries` is not an array"))?;
    if entries.len() > ENTRIES_MAX {
        return Err(format!(
            "{source}: {} entries; at most {ENTRIES_MAX} are taken in",
            entries.len()
        ));
    }
    let base = reqwest::Url::parse(source).map_err(|e| format!("{source}: {e}"))?;
    let mut urls = Vec::new();
    for (at, entry) in entries.iter().enumerate() {
        if entry.get("type").and_then(Value::as_str) != Some(A2A_CARD_TYPE) {
            report.skipped += 1;
            continue;
        }
        match entry
            .get("url")
            .and_then(Value::as_str)
            .map(|u| base.join(u))
        {
            Some(Ok(url)) => urls.push(url.to_string()),
            Some(Err(e)) => report
                .errors
                .push(format!("{source}: entry {at}: `url`: {e}")),
            None => report.errors.push(format!(
                "{source}: entry {at}: an A2A card entry without `url`"
            )),
        }
    }
    Ok(urls)
}

/// The manifest this node publishes for `agent_id`, if any.
fn own_manifest(state: &NodeState, agent_id: &str) -> Option<Manifest> {
    let cid = state.publisher.own_entry(agent_id)?;
    let block = state.store.get(&cid).ok()??;
    Manifest::decode(&block).ok()
}

/// Publishes `card` as `org`'s agent signed with `key`, unless this node already publishes
/// the same card; returns the agent id and `published`, `updated` or `unchanged`.
fn take_card(
    state: &NodeState,
    (org, key): (&str, &Keypair),
    card: &str,
) -> Result<(String, &'static str), String> {
    let now = (state.clock)();
    let body = ManifestBody::from_card(card, org, &state.config.node.region, now)
        .map_err(|e| e.to_string())?;
    let current = own_manifest(state, &body.agent_id).filter(|m| !m.is_removal());
    if let Some(current) = &current
        && current.body.card == body.card
        && current.body.deprecation.is_none()
    {
        return Ok((body.agent_id, "unchanged"));
    }
    let mut body = body;
    if let Some(current) = &current {
        body.updated_at = body.updated_at.max(current.body.updated_at + 1);
    }
    let agent_id = body.agent_id.clone();
    super::publish::publish_signed(state, body.sign(key)).map_err(|e| e.message().to_owned())?;
    Ok((
        agent_id,
        if current.is_some() {
            "updated"
        } else {
            "published"
        },
    ))
}

/// Unpublishes `agent_id` with a removal signed by `key`.
fn remove_agent(state: &NodeState, key: &Keypair, agent_id: &str) -> Result<(), String> {
    let current = own_manifest(state, agent_id);
    let Some(current) = current.filter(|m| !m.is_removal()) else {
        return Ok(());
    };
    let at = (state.clock)().max(current.body.updated_at + 1);
    let removal = ManifestBody::tombstone(agent_id, &current.body.region, at)
        .map_err(|e| e.to_string())?
        .sign(key);
    super::publish::publish_signed(state, removal)
        .map(|_| ())
        .map_err(|e| e.message().to_owned())
}

/// Whether `url` is on `domain` (the organisation's bound domain) over HTTPS.
fn on_domain(url: &str, domain: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .is_some_and(|u| u.scheme() == "https" && u.host_str() == Some(domain))
}

/// Polls one source and takes in what it lists; returns its report.
async fn poll_source(
    state: &Arc<NodeState>,
    client: &reqwest::Client,
    (org, key): (&str, &Arc<Keypair>),
    source: &str,
) -> SourceReport {
    let mut report = SourceReport {
        url: source.to_owned(),
        last_run: (state.clock)(),
        outcome: "failed".into(),
        ..SourceReport::default()
    };
    let Some(domain) = state.org_domain(org, (state.clock)()) else {
        report.errors.push(format!(
            "`{org}` is not bound to a domain: ingestion reads only its own domain's documents"
        ));
        return report;
    };
    if !on_domain(source, &domain) {
        report.errors.push(format!(
            "{source}: not an https:// URL on {org}'s domain {domain}"
        ));
        return report;
    }
    let memory = state
        .ingest
        .memory
        .lock()
        .map(|m| m.get(source).cloned().unwrap_or_default())
        .unwrap_or_default();
    let (urls, unchanged) = match fetch(state, client, source, MANIFEST_DOC_BYTES_MAX).await {
        Ok(Fetched::Unchanged) => {
            report.skipped = memory.skipped;
            (memory.urls.clone(), true)
        }
        Ok(Fetched::Body(body)) => match card_urls(source, &body, &mut report) {
            Ok(urls) => (urls, false),
            Err(error) => {
                forget(state, source);
                report.errors.push(error);
                return report;
            }
        },
        Err(error) => {
            report.errors.push(error);
            return report;
        }
    };
    let mut next = SourceMemory {
        urls: urls.clone(),
        skipped: report.skipped,
        ..SourceMemory::default()
    };
    for url in urls {
        take_entry(
            state,
            client,
            (org, key, &domain),
            &url,
            &memory,
            &mut next,
            &mut report,
        )
        .await;
    }
    for gone in memory.agents.difference(&next.agents) {
        let (state, key, gone) = (state.clone(), key.clone(), gone.clone());
        let outcome =
            tokio::task::spawn_blocking(move || remove_agent(&state, &key, &gone).map(|()| gone))
                .await;
        match outcome {
            Ok(Ok(_)) => report.removed += 1,
            Ok(Err(error)) => report.errors.push(format!("unpublishing: {error}")),
            Err(error) => report.errors.push(format!("unpublishing: {error}")),
        }
    }
    if let Ok(mut all) = state.ingest.memory.lock() {
        all.insert(source.to_owned(), next);
    }
    report.outcome = if unchanged { "unchanged" } else { "ok" }.into();
    report
}

/// Takes in one card URL of a source: fetched (conditionally), checked and published, or an
/// error for it alone. An entry that fails keeps the agent it gave last time.
async fn take_entry(
    state: &Arc<NodeState>,
    client: &reqwest::Client,
    (org, key, domain): (&str, &Arc<Keypair>, &str),
    url: &str,
    memory: &SourceMemory,
    next: &mut SourceMemory,
    report: &mut SourceReport,
) {
    let keep_last = |next: &mut SourceMemory| {
        if let Some(agent) = memory.cards.get(url) {
            next.cards.insert(url.to_owned(), agent.clone());
            if memory.agents.contains(agent) {
                next.agents.insert(agent.clone());
            }
        }
    };
    if !on_domain(url, domain) {
        report.errors.push(format!(
            "{url}: not an https:// URL on {org}'s domain {domain}"
        ));
        return;
    }
    let card = match fetch(state, client, url, CARD_BYTES_MAX).await {
        Ok(Fetched::Unchanged) if memory.cards.contains_key(url) => {
            keep_last(next);
            report.unchanged += 1;
            return;
        }
        Ok(Fetched::Unchanged) => {
            forget(state, url);
            report.errors.push(format!(
                "{url}: 304 for a card not read before; read again next time"
            ));
            return;
        }
        Ok(Fetched::Body(body)) => body,
        Err(error) => {
            keep_last(next);
            report.errors.push(error);
            return;
        }
    };
    let Ok(card) = String::from_utf8(card) else {
        forget(state, url);
        keep_last(next);
        report.errors.push(format!("{url}: not UTF-8 text"));
        return;
    };
    let (task_state, org_owned, key) = (state.clone(), org.to_owned(), key.clone());
    let taken =
        tokio::task::spawn_blocking(move || take_card(&task_state, (&org_owned, &key), &card))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
    match taken {
        Ok((agent, how)) => {
            match how {
                "published" => report.published += 1,
                "updated" => report.updated += 1,
                _ => report.unchanged += 1,
            }
            next.cards.insert(url.to_owned(), agent.clone());
            next.agents.insert(agent);
        }
        Err(error) => {
            forget(state, url);
            keep_last(next);
            report.errors.push(format!("{url}: {error}"));
        }
    }
}

/// Polls every configured source every `ingest.interval_secs`, until the node stops.
pub async fn run(state: Arc<NodeState>) {
    let config = state.config.ingest.clone();
    let sources = config.source_urls();
    if sources.is_empty() {
        return;
    }
    let key = match crate::data::load_key(std::path::Path::new(&config.org_key)) {
        Ok(key) => Arc::new(key),
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "ingest: the organisation key cannot be read; ingestion is off");
            return;
        }
    };
    let client = match state.domain_fetch.client() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "ingest: no HTTPS client; ingestion is off");
            return;
        }
    };
    let mut ticks = tokio::time::interval(Duration::from_secs(config.interval_secs.max(1)));
    loop {
        ticks.tick().await;
        for source in &sources {
            let mut report = poll_source(&state, &client, (&config.org, &key), source).await;
            report.errors.truncate(ERRORS_KEPT);
            record(&state, report);
        }
        state.ingest.prune_validators(&sources);
        if let Err(error) = state.ingest.save(&state.data_dir) {
            tracing::warn!(error = %format!("{error:#}"), "ingest: could not write {INGEST_FILE}");
        }
    }
}

/// Counts, logs and keeps a source's report.
fn record(state: &NodeState, report: SourceReport) {
    let metrics = &state.metrics;
    metrics.count(
        &format!(
            "meridian_ingest_polls_total{{outcome=\"{}\"}}",
            report.outcome
        ),
        1,
    );
    for (result, n) in [
        ("published", report.published),
        ("updated", report.updated),
        ("unchanged", report.unchanged),
        ("removed", report.removed),
        ("skipped", report.skipped),
        ("failed", report.errors.len()),
    ] {
        if n > 0 {
            metrics.count(
                &format!("meridian_ingest_entries_total{{result=\"{result}\"}}"),
                n as u64,
            );
        }
    }
    if report.errors.is_empty() {
        tracing::info!(source = %report.url, outcome = %report.outcome, published = report.published, updated = report.updated, removed = report.removed, "ingest: polled");
    } else {
        tracing::warn!(source = %report.url, outcome = %report.outcome, errors = ?report.errors, "ingest: polled with errors");
    }
    if let Ok(mut reports) = state.ingest.reports.lock() {
        reports.insert(report.url.clone(), report);
    }
}

/// Each ingestion source's last result (`[ingest]`): what it published, updated, removed and
/// skipped, and its errors by entry.
#[utoipa::path(get, path = "/api/v1/ingest", tag = "agents", responses((status = 200, description = "{org, interval_secs, sources: [{url, last_run, outcome, published, updated, unchanged, removed, skipped, errors}]}", content_type = "application/json")))]
pub async fn status(State(state): State<Arc<NodeState>>) -> Result<Json<Value>, ApiError> {
    let config = &state.config.ingest;
    let reports = state
        .ingest
        .reports
        .lock()
        .map_err(|_| ApiError::internal("ingest lock poisoned"))?
        .clone();
    let sources: Vec<SourceReport> = config
        .source_urls()
        .into_iter()
        .map(|url| {
            reports.get(&url).cloned().unwrap_or(SourceReport {
                url,
                outcome: "pending".into(),
                ..SourceReport::default()
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "org": config.org,
        "interval_secs": config.interval_secs,
        "sources": sources,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators_of_urls_no_source_lists_are_forgotten() {
        let ingest = Ingest::default();
        let source = "https://acme.example/.well-known/ard.json".to_owned();
        ingest.memory.lock().unwrap().insert(
            source.clone(),
            SourceMemory {
                urls: vec!["https://acme.example/cards/echo.json".into()],
                ..SourceMemory::default()
            },
        );
        {
            let mut validators = ingest.validators.lock().unwrap();
            for url in [
                source.as_str(),
                "https://acme.example/cards/echo.json",
                "https://acme.example/cards/gone-1.json",
                "https://acme.example/cards/gone-2.json",
            ] {
                validators.insert(url.to_owned(), Validators::default());
            }
        }
        ingest.prune_validators(std::slice::from_ref(&source));
        let mut kept: Vec<String> = ingest.validators.lock().unwrap().keys().cloned().collect();
        kept.sort();
        assert_eq!(
            kept,
            [source, "https://acme.example/cards/echo.json".to_owned()]
        );
    }
}

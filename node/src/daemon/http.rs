//! The HTTP gateway (axum): operations endpoints, the registry and snapshot API, and agent lookup
//! and search. Every error is JSON `{"error": {"code", "message", "details"}}`; every response
//! carries an `x-request-id`, which also names the request in the logs.

use super::openapi::ErrorBody;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use meridian_registry::Cid;
use meridian_registry::car::Limits;
use meridian_registry::manifest::Manifest;
use meridian_registry::snapshot::{self, Snapshot, SnapshotError, VerifyOptions};
use meridian_registry::store::{BlockStore as _, SledStore};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::config::NodeConfig;
use super::index::{AgentIndex, AgentRecord, Query as SearchQuery};
use super::metrics::Metrics;
use super::ranking::{FilterField, RANKED_DEPTH_MAX, RankFilter};

/// The media type of CAR files.
pub const CAR_MEDIA_TYPE: &str = "application/vnd.ipld.car";

/// What every handler shares.
pub struct NodeState {
    /// The store.
    pub store: SledStore,
    /// The searchable view of every agent.
    pub index: RwLock<AgentIndex>,
    /// Request metrics.
    pub metrics: Metrics,
    /// The configuration in force.
    pub config: NodeConfig,
    /// The node's own did:key.
    pub node_did: String,
    /// The wall clock, read only through this (tests can pin it).
    pub clock: fn() -> i64,
    /// Write tokens.
    pub tokens: super::tokens::TokenStore,
    /// The node's own registry, for publishing.
    pub publisher: super::publish::Publisher,
    /// Registry change events.
    pub events: super::events::EventLog,
    /// Trust root, attestations and policy.
    pub governance: super::governance::Governance,
    /// Organisation names bound to keys (trust on first use when governance is off).
    pub names: super::names::Names,
    /// The A2A proxy's client, limiter and bounds.
    pub proxy: super::a2a::Proxy,
    /// The peer mesh, once it runs: new heads of our own are announced through it.
    pub mesh: std::sync::OnceLock<tokio::sync::mpsc::Sender<super::mesh::MeshCommand>>,
    /// The gateway's bound address, once it listens.
    pub gateway_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// What the HTTP server counts (connections, refusals, timeouts), for `/metrics`.
    pub serve_counters: Arc<meridian_hub::serve::ServeCounters>,
    /// Bytes of sync answers charged per client address (`POST /api/v1/sync`).
    pub sync_budget: std::sync::Mutex<meridian_hub::ratelimit::Limiter>,
    /// The ARD API's federation with other registries (`[ard]`).
    pub ard: super::ard::Federation,
    /// How this node reaches organisations' domains (`[domains]`).
    pub domain_fetch: super::domains::DomainFetch,
    /// Organisations whose attested domain served a proof that contradicts the attestation
    /// at the last check (governance on), with why: their domain is not used until a check
    /// passes again.
    pub suspended_domains: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// When each attested domain was last checked (governance on), by organisation.
    pub domains_checked: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// Ingestion from the organisation's own site (`[ingest]`).
    pub ingest: super::ingest::Ingest,
    /// The tasks the node's own A2A agent answered.
    pub node_agent: super::agent::Tasks,
    /// Peers, lag, invalid messages and sync times, as the mesh last reported them.
    pub federation: super::federation::FederationView,
    /// The data directory.
    pub data_dir: std::path::PathBuf,
    /// When the state was made: the monotonic origin of the rate limiters' time.
    pub started: Instant,
    next_request: AtomicU64,
}

impl NodeState {
    /// State over an open store in `data`, with the index built from it.
    pub fn new(
        store: SledStore,
        config: NodeConfig,
        key: meridian_registry::keys::Keypair,
        data: &std::path::Path,
        clock: fn() -> i64,
    ) -> anyhow::Result<Self> {
        let node_did = key.did();
        let config_a2a = config.a2a.clone();
        let config_ard = config.ard.clone();
        let config_domains = config.domains.fetch()?;
        let own = super::publish::load_own(&store, &node_did)?;
        let root_file = Some(config.governance.root.as_str())
            .filter(|r| !r.is_empty())
            .map(std::path::PathBuf::from);
        let governance = super::governance::Governance::load_with_key_log(
            data,
            root_file.as_deref(),
            config.governance.key_log_trust()?,
            clock(),
        )?;
        let state = Self {
            store,
            index: RwLock::new(AgentIndex::new()),
            metrics: Metrics::default(),
            config,
            node_did,
            clock,
            tokens: super::tokens::TokenStore::new(data),
            publisher: super::publish::Publisher::new(key, own),
            events: super::events::EventLog::default(),
            governance,
            names: super::names::Names::load(data)?,
            proxy: super::a2a::Proxy::new(&config_a2a)?,
            mesh: std::sync::OnceLock::new(),
            gateway_addr: std::sync::OnceLock::new(),
            serve_counters: Arc::default(),
            sync_budget: std::sync::Mutex::new(meridian_hub::ratelimit::Limiter::new()),
            ard: super::ard::Federation::new(&config_ard)?,
            domain_fetch: config_domains,
            suspended_domains: std::sync::Mutex::default(),
            domains_checked: std::sync::Mutex::default(),
            ingest: super::ingest::Ingest::load(data)?,
            node_agent: super::agent::Tasks::default(),
            federation: super::federation::FederationView::default(),
            data_dir: data.to_owned(),
            started: Instant::now(),
            next_request: AtomicU64::new(1),
        };
        state.reindex_all()?;
        Ok(state)
    }

    /// The domain `org` is bound to at `now`: with governance, by its `org.domain`
    /// attestation (unless the domain's own proof contradicted it at this node's last check);
    /// without, by a proof this node checked itself.
    pub fn org_domain(&self, org: &str, now: i64) -> Option<String> {
        if self.governance.enabled() {
            let suspended = self
                .suspended_domains
                .lock()
                .map_or(true, |s| s.contains_key(org));
            if suspended {
                return None;
            }
            self.governance.org_domain(org, now)
        } else {
            self.names.domain(org, now)
        }
    }

    /// Queues a command for the peer mesh, if it runs. When the queue is full the command is
    /// dropped and counted (`meridian_mesh_commands_dropped_total`): announcements are
    /// repeated by the periodic heads exchange. False when it was not queued.
    pub fn tell_mesh(&self, command: super::mesh::MeshCommand) -> bool {
        let Some(mesh) = self.mesh.get() else {
            return false;
        };
        match mesh.try_send(command) {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                self.metrics
                    .count("meridian_mesh_commands_dropped_total", 1);
                tracing::warn!("the mesh's command queue is full: an announcement was dropped");
                false
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// What the operator should know is probably wrong with the configuration (also logged at
    /// start): a region the hub directory does not list, so the node has no hub.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let region = &self.config.node.region;
        let regions = self.governance.hub_regions();
        if self.config.mesh.hub.is_empty() && !regions.is_empty() && !regions.contains(region) {
            warnings.push(format!(
                "node.region `{region}` has no entry in the policy's hub directory (it lists {}): this node has no hub; check node.region or set mesh.hub",
                regions.join(", ")
            ));
        }
        warnings
    }

    /// Rebuilds the whole federated view (at start, and when the operator changes a name
    /// binding). The node's own registry goes first: without governance the first key seen
    /// binds an organisation's name, and the organisations this node hosts must not lose
    /// their names to a mirrored publisher that happens to sort earlier (a fresh binding file,
    /// or the first start after an upgrade).
    pub fn reindex_all(&self) -> anyhow::Result<()> {
        let heads = self.store.heads()?;
        if heads.contains_key(&self.node_did) {
            self.reindex(&self.node_did)?;
        }
        for publisher in heads.keys().filter(|p| **p != self.node_did) {
            self.reindex(publisher)?;
        }
        Ok(())
    }

    /// Brings the index up to date after `publisher`'s head moved (an import, a mirrored
    /// snapshot): when the index reflects an older snapshot of the publisher still in the store,
    /// only the agents that differ between the two trees are decoded and checked, and only the
    /// tree nodes on the changed paths are read ([`meridian_registry::mst::diff_stored`]), so
    /// taking in a one-agent change reads O(log n) blocks. Otherwise it is a full
    /// [`NodeState::reindex`].
    pub fn index_head(&self, publisher: &str) -> anyhow::Result<()> {
        let Some(head) = self.store.head(publisher)? else {
            return Ok(());
        };
        let indexed = self
            .index
            .read()
            .map_err(|_| anyhow::anyhow!("index lock poisoned"))?
            .indexed_commit(publisher);
        match indexed {
            Some(commit) if commit == head.commit => Ok(()),
            Some(commit) => match self.stored_diff(&commit, &head.commit) {
                Ok(diff) => self.index_changes(publisher, &diff, head),
                Err(error) => {
                    tracing::debug!(%publisher, %error, "indexed snapshot unreadable: full reindex");
                    self.reindex(publisher)
                }
            },
            None => self.reindex(publisher),
        }
    }

    /// The tree root of the snapshot whose commit is `commit`, from the store.
    fn data_root(&self, commit: &Cid) -> anyhow::Result<Cid> {
        let block = self
            .store
            .get(commit)?
            .ok_or_else(|| anyhow::anyhow!("commit {commit} is not in the store"))?;
        Ok(meridian_registry::commit::Commit::decode(&block)?.body.data)
    }

    /// What changed between two stored snapshots' trees, reading only the nodes on the
    /// changed paths (both trees were verified when they were stored).
    fn stored_diff(
        &self,
        old_commit: &Cid,
        new_commit: &Cid,
    ) -> anyhow::Result<meridian_registry::mst::TreeDiff> {
        let (old, new) = (self.data_root(old_commit)?, self.data_root(new_commit)?);
        let mut failure = None;
        let diff = meridian_registry::mst::diff_stored::<meridian_registry::ids::Blake3>(
            Some(&old),
            &new,
            &mut |cid| match self.store.get(cid) {
                Ok(block) => block,
                Err(error) => {
                    failure = Some(error);
                    None
                }
            },
        );
        if let Some(error) = failure {
            return Err(error.into());
        }
        Ok(diff?)
    }

    /// The index record of one manifest of `publisher`'s snapshot `head`, or `None` when it
    /// does not decode or the acceptance rule keeps it out of the federated view (logged).
    fn record_of(
        &self,
        publisher: &str,
        head: meridian_registry::store::Head,
        cid: &Cid,
        block: &[u8],
        keys: &mut meridian_registry::keys::KeyCache,
        now: i64,
    ) -> Option<AgentRecord> {
        let (manifest, card) = Manifest::decode_with_card(block, keys).ok()?;
        if let Err(reasons) = self.governance.accept(&manifest, publisher, now) {
            let reasons: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
            tracing::info!(agent = %manifest.body.agent_id, %publisher, ?reasons, "kept out of the federated view");
            return None;
        }
        if !self.governance.enabled() && !self.name_bound(&manifest, publisher, cid, now) {
            return None;
        }
        Some(
            AgentRecord::with_card(&manifest, card, cid, publisher, head.seq)
                .with_commit(&head.commit),
        )
    }

    /// Without governance: whether the manifest's signer may speak for its organisation on
    /// this node (trust on first use, [`super::names`]). A conflicting claim is held as
    /// evidence and announced; an error fails closed.
    fn name_bound(&self, manifest: &Manifest, publisher: &str, cid: &Cid, now: i64) -> bool {
        let signer = manifest.signer.to_did();
        let manifest_cid = cid.to_string();
        let claim = super::names::Claim {
            org: &manifest.body.org,
            agent_id: &manifest.body.agent_id,
            signer: &signer,
            publisher,
            manifest: &manifest_cid,
        };
        match self.names.check(claim, now) {
            Ok(super::names::NameCheck::Bound | super::names::NameCheck::NewlyBound) => true,
            Ok(super::names::NameCheck::Conflict { bound, new }) => {
                if new {
                    self.events.emit(
                        "name.conflict",
                        json!({ "org": manifest.body.org, "agent_id": manifest.body.agent_id, "signer": signer, "publisher": publisher, "manifest": manifest_cid, "bound_keys": bound }),
                    );
                }
                false
            }
            Err(error) => {
                tracing::error!(%error, agent = %manifest.body.agent_id, "name check failed: kept out");
                false
            }
        }
    }

    /// Takes in the agents that differ (`diff`) between the indexed tree and `head`'s.
    fn index_changes(
        &self,
        publisher: &str,
        diff: &meridian_registry::mst::TreeDiff,
        head: meridian_registry::store::Head,
    ) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let mut keys = meridian_registry::keys::KeyCache::new();
        let now = (self.clock)();
        let mut upserts = Vec::new();
        let mut removals: Vec<String> = diff
            .removed
            .iter()
            .map(|(key, _)| String::from_utf8_lossy(key).into_owned())
            .collect();
        let touched = diff
            .added
            .iter()
            .map(|(key, cid)| (key, cid))
            .chain(diff.changed.iter().map(|(key, _, cid)| (key, cid)));
        for (key, cid) in touched {
            let agent_id = String::from_utf8_lossy(key).into_owned();
            let block = self.store.get(cid)?.ok_or_else(|| {
                anyhow::anyhow!("manifest {cid} of `{agent_id}` is not in the store")
            })?;
            match self.record_of(publisher, head, cid, &block, &mut keys, now) {
                Some(record) => upserts.push(record),
                None => removals.push(agent_id),
            }
        }
        let touched = upserts.len() + removals.len();
        let changes = self
            .index
            .write()
            .map_err(|_| anyhow::anyhow!("index lock poisoned"))?
            .apply_publisher_changes(publisher, head.seq, &head.commit, upserts, removals);
        for (kind, agent_id) in changes {
            self.events.emit(kind, serde_json::json!({ "agent_id": agent_id, "publisher": publisher, "seq": head.seq }));
        }
        self.federation.accepted(publisher, now);
        self.events.emit(
            "head.accepted",
            serde_json::json!({ "publisher": publisher, "seq": head.seq, "commit": head.commit.to_string() }),
        );
        self.names.flush()?;
        tracing::debug!(%publisher, touched, elapsed = ?started.elapsed(), "index updated from the tree diff");
        Ok(())
    }

    /// Rebuilds the index entries of one publisher from its head in the store, and emits an
    /// event for every agent that changed and for the head.
    pub fn reindex(&self, publisher: &str) -> anyhow::Result<()> {
        let Some(head) = self.store.head(publisher)? else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let snapshot = Snapshot::load(&self.store, &head.commit, Limits::DEFAULT)?;
        let loaded = started.elapsed();
        let entries = snapshot.tree.entries();
        let now = (self.clock)();
        // Decoding every card is most of the work: spread it over the cores.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = entries.len().div_ceil(threads).max(1);
        let parts: Vec<Option<Vec<AgentRecord>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = entries
                .chunks(chunk)
                .map(|part| {
                    let snapshot = &snapshot;
                    scope.spawn(move || {
                        // One key cache per thread: a publisher's manifests share a few keys.
                        let mut keys = meridian_registry::keys::KeyCache::new();
                        part.iter()
                            .filter_map(|(_, cid)| {
                                let block = snapshot.blocks.get(cid)?;
                                self.record_of(publisher, head, cid, block, &mut keys, now)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().ok())
                .collect()
        });
        let mut records = Vec::with_capacity(entries.len());
        for part in parts {
            records.extend(part.ok_or_else(|| anyhow::anyhow!("an indexing thread failed"))?);
        }
        let decoded = started.elapsed();
        let agents = records.len();
        let changes = self
            .index
            .write()
            .map_err(|_| anyhow::anyhow!("index lock poisoned"))?
            .replace_publisher(publisher, &head.commit, records);
        self.names.flush()?;
        tracing::debug!(%publisher, agents, ?loaded, ?decoded, total = ?started.elapsed(), "reindexed");
        for (kind, agent_id) in changes {
            self.events.emit(kind, serde_json::json!({ "agent_id": agent_id, "publisher": publisher, "seq": head.seq }));
        }
        self.events.emit(
            "head.accepted",
            serde_json::json!({ "publisher": publisher, "seq": head.seq, "commit": head.commit.to_string() }),
        );
        Ok(())
    }
}

/// An error answer: status, stable code, message and details.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    /// The message, for callers that pass the reason on elsewhere.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code (`rate_limited`, `unknown_agent`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// An error with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// The error's answer with `Retry-After: seconds` (at least 1): a 429 or 503 the client
    /// may retry.
    pub fn retry_after(self, seconds: u64) -> Response {
        let mut response = self.into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        response
    }

    /// A 500, logged.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{error:#}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message, "details": self.details } });
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The documented routes, built from the annotated handlers: the same call gives the router and
/// the OpenAPI document, so neither can list a route the other lacks. `import_limit` and
/// `a2a_limit` are the body limits of the two routes that take large bodies.
pub fn api_router(
    import_limit: usize,
    a2a_limit: usize,
) -> utoipa_axum::router::OpenApiRouter<Arc<NodeState>> {
    use utoipa_axum::routes;
    let (schemas, paths, import) = routes!(import_snapshot);
    let import = (
        schemas,
        paths,
        import.layer(DefaultBodyLimit::max(import_limit)),
    );
    let (schemas, paths, call) = routes!(super::a2a::call);
    let call = (
        schemas,
        paths,
        call.layer(DefaultBodyLimit::max(a2a_limit))
            .layer(middleware::from_fn(super::a2a::shape_refusals)),
    );
    let (schemas, paths, own_agent) = routes!(super::agent::rpc);
    let own_agent = (
        schemas,
        paths,
        own_agent
            .layer(DefaultBodyLimit::max(a2a_limit))
            .layer(middleware::from_fn(super::a2a::shape_refusals)),
    );
    utoipa_axum::router::OpenApiRouter::with_openapi(super::openapi::base())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(super::openapi::serve))
        .routes(routes!(heads))
        .routes(routes!(super::federation::status))
        .routes(routes!(names))
        .routes(routes!(super::domains::bind_domain))
        .routes(routes!(super::ingest::status))
        .routes(routes!(export_snapshot))
        .routes(import)
        .routes(routes!(block))
        .routes(routes!(sync_request))
        .routes(routes!(super::events::stream))
        .routes(routes!(search, super::publish::create_agent))
        .routes(routes!(
            agent,
            super::publish::update_agent,
            super::publish::delete_agent
        ))
        .routes(routes!(super::provenance::provenance))
        .routes(routes!(
            super::governance::get_root,
            super::governance::post_root
        ))
        .routes(routes!(
            super::governance::get_policy,
            super::governance::post_policy
        ))
        .routes(routes!(
            super::governance::list_attestations,
            super::governance::post_attestation
        ))
        .routes(routes!(super::governance::post_key_proof))
        .routes(routes!(
            super::governance::list_registrations,
            super::governance::post_registration
        ))
        .routes(routes!(super::governance::draft_approval))
        .routes(routes!(super::governance::list_orgs))
        .routes(call)
        .routes(routes!(super::a2a::card))
        .routes(own_agent)
        .routes(routes!(super::agent::card))
        .routes(routes!(super::jws::jwks))
        .routes(routes!(super::ard::search))
        .routes(routes!(super::ard::explore))
        .routes(routes!(super::ard::list))
        .routes(routes!(super::ard::retrieve))
        .routes(routes!(super::ard::well_known))
}

/// The gateway's router.
pub fn router(state: Arc<NodeState>) -> Router {
    let import_limit = state.config.http.import_bytes_max;
    let body_limit = state.config.http.body_bytes_max;
    let a2a_limit = state.config.a2a.body_bytes_max;
    let (documented, _) = api_router(import_limit, a2a_limit).split_for_parts();
    documented
        // The web console (HTML: outside the API reference).
        .route("/console", axum::routing::get(super::console::redirect))
        .route("/console/", axum::routing::get(super::console::index))
        .route("/console/app.js", axum::routing::get(super::console::app))
        .route(
            "/console/common.js",
            axum::routing::get(super::console::common),
        )
        .route(
            "/console/style.css",
            axum::routing::get(super::console::style),
        )
        // The HTTP+JSON (REST) binding of an agent of this region, under its proxy URL + /rest
        // (described in the API reference's introduction).
        .route(
            "/a2a/{org}/{agent}/rest/{*path}",
            axum::routing::get(super::a2a::rest)
                .post(super::a2a::rest)
                .delete(super::a2a::rest)
                .put(super::a2a::rest)
                .layer(DefaultBodyLimit::max(a2a_limit))
                .layer(middleware::from_fn(super::a2a::shape_problems)),
        )
        // The same call with a trailing slash (A2A clients use both forms).
        .route(
            "/a2a/{org}/{agent}/",
            post(super::a2a::call)
                .layer(DefaultBodyLimit::max(a2a_limit))
                .layer(middleware::from_fn(super::a2a::shape_refusals)),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), read_guard))
        .layer(middleware::from_fn(super::ard::cors))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(meridian_hub::serve::json_errors))
        .layer(middleware::from_fn({
            let limits = state.config.http.serve_limits();
            let counters = state.serve_counters.clone();
            move |request, next| {
                meridian_hub::serve::body_deadline(limits, counters.clone(), request, next)
            }
        }))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// With `http.read_auth`, registry reads need a valid token (writes check their own).
async fn read_guard(State(state): State<Arc<NodeState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    // ARD's search and explore are reads made with POST.
    let ard = path.starts_with("/ard/") || path == "/.well-known/ard.json";
    let open = !state.config.http.read_auth
        || request.method() == axum::http::Method::OPTIONS
        || (!ard && (request.method() != axum::http::Method::GET || !path.starts_with("/api/")));
    if open {
        return next.run(request).await;
    }
    const NEEDS_TOKEN: &str =
        "this node requires `Authorization: Bearer <token>` to read (http.read_auth)";
    let token = super::tokens::bearer(request.headers()).map(str::to_owned);
    // Refusals in the shape of the protocol the route speaks.
    match (token.map(|t| state.tokens.lookup(&t)), ard) {
        (Some(Ok(Some(_))), _) => next.run(request).await,
        (Some(Err(error)), true) => super::ard::ArdError::internal(error).into_response(),
        (Some(Err(error)), false) => ApiError::internal(error).into_response(),
        (_, true) => super::ard::ArdError::unauthenticated(NEEDS_TOKEN).into_response(),
        (_, false) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", NEEDS_TOKEN).into_response()
        }
    }
}

/// Gives each request an id and a span, and records its route, status and latency.
async fn observe(State(state): State<Arc<NodeState>>, request: Request, next: Next) -> Response {
    let id = format!(
        "{:016x}",
        state.next_request.fetch_add(1, Ordering::Relaxed)
    );
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let span = tracing::info_span!("request", request_id = %id, %method, %route);
    let started = Instant::now();
    // A handler that panics is a bug; the client still gets a JSON 500 and the node goes on.
    let outcome = {
        use futures_util::FutureExt as _;
        std::panic::AssertUnwindSafe(next.run(request).instrument(span.clone()))
            .catch_unwind()
            .await
    };
    let mut response = match outcome {
        Ok(response) => response,
        Err(_) => {
            span.in_scope(|| tracing::error!("handler panicked"));
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error (logged)",
            )
            .into_response()
        }
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.record(&method, &route, status, elapsed);
    span.in_scope(|| tracing::info!(status, millis = elapsed.as_secs_f64() * 1000.0, "done"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The sync protocol over HTTP, answered by the node's sync engine: how a hub fetches a node's
/// blocks and deltas.
#[utoipa::path(post, path = "/api/v1/sync", tag = "registry", request_body(content = String, content_type = "application/octet-stream", description = "a sync wire request"), responses((status = 200, description = "the wire answer", content_type = "application/octet-stream"), (status = 429, description = "the client's answer budget is spent (Retry-After)", body = ErrorBody), (status = 503, description = "the peer mesh is off", body = ErrorBody)))]
async fn sync_request(
    State(state): State<Arc<NodeState>>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    body: axum::body::Bytes,
) -> Response {
    // Each client address has a byte budget for answers (http.sync_bytes_per_client_per_second,
    // twice that at once): a 70-byte request can ask for an 8 MiB answer, so requests alone
    // are the wrong thing to count.
    let client = client.map_or_else(
        || "unknown".to_owned(),
        |axum::Extension(axum::extract::ConnectInfo(address))| address.ip().to_string(),
    );
    let per_second = state.config.http.sync_bytes_per_client_per_second;
    let budget = meridian_hub::ratelimit::Rate {
        per_second,
        burst: per_second.saturating_mul(2),
    };
    if let Some(refusal) = sync_budget_refusal(&state, &client, budget) {
        return refusal;
    }
    // Blocks and deltas come from the store alone: answered on the blocking pool, off the
    // mesh's event loop, so a client asking for large deltas cannot stall the mesh. Only a
    // heads request needs the sync engine. A malformed request is refused here.
    use meridian_hub::wire::{MESSAGE_BYTES_MAX, Request as WireRequest, Response as WireResponse};
    let answer = match WireRequest::decode(&body, MESSAGE_BYTES_MAX) {
        Err(error) => {
            state
                .metrics
                .count("meridian_sync_gateway_answers_total{kind=\"malformed\"}", 1);
            let answer = WireResponse::Refused(format!("bad request: {error}")).encode();
            return ([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response();
        }
        Ok(WireRequest::Heads) => engine_answer(&state, &body).await,
        Ok(request) => store_answer(&state, request).await,
    };
    match answer {
        Ok(answer) => {
            if let Ok(mut limiter) = state.sync_budget.lock() {
                limiter.charge(
                    &client,
                    budget,
                    answer.len() as u64,
                    state.started.elapsed(),
                );
            }
            ([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response()
        }
        Err(refusal) => refusal,
    }
}

/// 429 with `Retry-After` when `client` has used its budget of sync answer bytes.
fn sync_budget_refusal(
    state: &NodeState,
    client: &str,
    budget: meridian_hub::ratelimit::Rate,
) -> Option<Response> {
    let admitted = match state.sync_budget.lock() {
        Ok(mut limiter) => limiter.admit(client, budget, state.started.elapsed()),
        Err(_) => return Some(ApiError::internal("sync budget lock poisoned").into_response()),
    };
    let meridian_hub::ratelimit::Decision::Wait(wait) = admitted else {
        return None;
    };
    state
        .metrics
        .count("meridian_sync_requests_refused_total{reason=\"budget\"}", 1);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Some(
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "sync_budget",
            format!("{client} used its answer budget (http.sync_bytes_per_client_per_second); retry in {seconds} s"),
        )
        .retry_after(seconds),
    )
}

/// A blocks or delta request, answered from the store on the blocking pool.
async fn store_answer(
    state: &Arc<NodeState>,
    request: meridian_hub::wire::Request,
) -> Result<Vec<u8>, Response> {
    use meridian_hub::wire::{Request as WireRequest, Response as WireResponse};
    let task_state = state.clone();
    let answered = tokio::task::spawn_blocking(move || {
        let config = crate::sync::SyncConfig::default();
        match request {
            WireRequest::Blocks(cids) => {
                crate::sync::engine::blocks_answer(&task_state.store, &config, &cids)
            }
            WireRequest::Delta { from, to } => {
                match crate::sync::engine::delta_blocks(&task_state.store, &config, from, to) {
                    Ok(blocks) => WireResponse::Blocks(blocks),
                    Err(why) => WireResponse::Refused(why.to_string()),
                }
            }
            WireRequest::Heads => WireResponse::Refused("heads go to the engine".into()),
        }
    })
    .await;
    let answer = answered
        .map_err(|error| ApiError::internal(error).into_response())?
        .encode();
    state
        .metrics
        .count("meridian_sync_gateway_answers_total{kind=\"store\"}", 1);
    Ok(answer)
}

/// A heads request, answered by the sync engine through the mesh's queue (503 when the mesh
/// is off, stopped, or has too much queued).
async fn engine_answer(state: &NodeState, body: &[u8]) -> Result<Vec<u8>, Response> {
    let mesh_off = |message: &'static str| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "mesh_off", message).into_response()
    };
    let Some(mesh) = state.mesh.get() else {
        return Err(mesh_off(
            "the sync engine runs with the peer mesh (mesh.enabled)",
        ));
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let command = super::mesh::MeshCommand::Serve {
        request: body.to_vec(),
        reply,
    };
    match mesh.try_send(command) {
        Ok(()) => {}
        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "sync_busy",
                "the sync engine has too much queued; try again shortly",
            )
            .retry_after(1));
        }
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
            return Err(mesh_off("the peer mesh stopped"));
        }
    }
    answer.await.map_err(|_| mesh_off("the peer mesh stopped"))
}

/// Liveness.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "alive", content_type = "application/json")))]
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the store is open.
#[utoipa::path(get, path = "/ready", tag = "operations", responses((status = 200, description = "ready, with `warnings` about the configuration", content_type = "application/json"), (status = 503, description = "store unavailable", body = ErrorBody)))]
pub async fn ready(State(state): State<Arc<NodeState>>) -> ApiResult<Json<Value>> {
    let heads = state.store.heads().map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
    })?;
    Ok(Json(
        json!({ "status": "ready", "publishers": heads.len(), "node": state.node_did, "warnings": state.warnings() }),
    ))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "metrics", content_type = "text/plain")))]
pub async fn metrics(State(state): State<Arc<NodeState>>) -> Response {
    let (agents, removed, hidden) = state.index.read().map_or((0, 0, 0), |i| {
        (i.len(), i.removals_len(), i.hidden_by_removal())
    });
    let heads = state.store.heads().map_or(0, |h| h.len()) as f64;
    let disk = state.store.size_on_disk().unwrap_or(0) as f64;
    let held = state.names.snapshot().map_or(0, |(_, held)| held.len()) as f64;
    let (conflicts, dropped) = state.names.counters();
    let serve_rows = state.serve_counters.rows();
    let mut gauges = vec![
        (
            "meridian_agents",
            "Agents in the federated view.",
            agents as f64,
        ),
        (
            "meridian_agents_removed",
            "Agents whose organisation signed a removal that some publisher lists.",
            removed as f64,
        ),
        (
            "meridian_manifests_hidden_by_removal_total",
            "Manifests kept out of the view since start because a signed removal is as new or newer.",
            hidden as f64,
        ),
        (
            "meridian_heads",
            "Publishers whose head this node has accepted.",
            heads,
        ),
        (
            "meridian_store_disk_bytes",
            "Bytes the store takes on disk.",
            disk,
        ),
        (
            "meridian_name_conflicts_held",
            "Conflicting claims on bound organisation names held as evidence (never served).",
            held,
        ),
        (
            "meridian_name_conflicts_total",
            "Conflicting claims on bound organisation names seen since start.",
            conflicts as f64,
        ),
        (
            "meridian_name_conflicts_dropped_total",
            "Held conflicting claims dropped past the evidence limit since start.",
            dropped as f64,
        ),
    ];
    gauges.extend(serve_rows);
    let text = state.metrics.render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Organisation names bound to keys on this node, the conflicting claims held as evidence
/// (never served), and the domains this node checked itself. Empty bindings with governance on: the acceptance rule decides then.
#[utoipa::path(get, path = "/api/v1/names", tag = "registry", responses((status = 200, description = "bindings and held claims", content_type = "application/json")))]
pub async fn names(State(state): State<Arc<NodeState>>) -> ApiResult<Json<Value>> {
    let (bindings, held) = state.names.snapshot().map_err(ApiError::internal)?;
    Ok(Json(json!({
        "governance": state.governance.enabled(),
        "bindings": bindings,
        "held": held,
        "domains": state.names.domains(),
    })))
}

/// Every publisher head this node has accepted.
#[utoipa::path(get, path = "/api/v1/registry/heads", tag = "registry", responses((status = 200, description = "heads", content_type = "application/json")))]
pub async fn heads(State(state): State<Arc<NodeState>>) -> ApiResult<Json<Value>> {
    let heads = state.store.heads().map_err(ApiError::internal)?;
    let list: Vec<Value> = heads
        .iter()
        .map(|(publisher, head)| json!({ "publisher": publisher, "seq": head.seq, "commit": head.commit.to_string() }))
        .collect();
    Ok(Json(json!({ "heads": list })))
}

fn parse_cid(text: &str, field: &str) -> ApiResult<Cid> {
    meridian_registry::ids::parse_cid(text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_cid", format!("{field}: {e}")))
}

/// One immutable block (strong ETag, long Cache-Control).
#[utoipa::path(get, path = "/api/v1/blocks/{cid}", tag = "registry", params(("cid" = String, Path, description = "block CID")), responses((status = 200, description = "the block", content_type = "application/vnd.ipld.dag-cbor"), (status = 304, description = "not modified", body = ErrorBody), (status = 400, description = "bad CID", body = ErrorBody), (status = 404, description = "unknown block", body = ErrorBody)))]
pub async fn block(
    State(state): State<Arc<NodeState>>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let cid = parse_cid(&cid, "cid")?;
    let etag = format!("\"{cid}\"");
    let cache = "public, max-age=31536000, immutable";
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        && state.store.contains(&cid).map_err(ApiError::internal)?
    {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (header::CACHE_CONTROL, cache.to_owned()),
            ],
        )
            .into_response());
    }
    let block = state
        .store
        .get(&cid)
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_block",
                format!("no block {cid}"),
            )
        })?;
    let media = if cid.codec() == meridian_registry::ids::CODEC_DAG_CBOR {
        "application/vnd.ipld.dag-cbor"
    } else {
        "application/octet-stream"
    };
    Ok((
        [
            (header::CONTENT_TYPE, media.to_owned()),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache.to_owned()),
        ],
        Bytes::copy_from_slice(&block),
    )
        .into_response())
}

/// Query of the snapshot export.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotParams {
    publisher: Option<String>,
    since: Option<String>,
}

/// A publisher's snapshot as a CAR, or a delta since an older commit.
#[utoipa::path(get, path = "/api/v1/registry/snapshot", tag = "registry", params(("publisher" = Option<String>, Query, description = "did:key (needed when the node holds several)"), ("since" = Option<String>, Query, description = "older commit CID: only what its holder lacks")), responses((status = 200, description = "CAR", content_type = "application/vnd.ipld.car"), (status = 400, description = "publisher needed, or bad CID", body = ErrorBody), (status = 404, description = "no such publisher or commit", body = ErrorBody)))]
pub async fn export_snapshot(
    State(state): State<Arc<NodeState>>,
    Query(params): Query<SnapshotParams>,
) -> ApiResult<Response> {
    let since = params
        .since
        .as_deref()
        .map(|s| parse_cid(s, "since"))
        .transpose()?;
    let heads = state.store.heads().map_err(ApiError::internal)?;
    let (publisher, head) = match &params.publisher {
        Some(did) => heads.get(did).map(|h| (did.clone(), *h)).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_publisher",
                format!("no snapshot by {did}"),
            )
        })?,
        None if heads.len() == 1 => heads
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("heads vanished"))?,
        None if heads.is_empty() => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_snapshot",
                "this node holds no snapshot yet",
            ));
        }
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "publisher_required",
                "this node holds several publishers' snapshots; choose one with ?publisher=",
            ));
        }
    };
    let task_state = state.clone();
    let bytes = tokio::task::spawn_blocking(move || -> ApiResult<Vec<u8>> {
        let snap = Snapshot::load(&task_state.store, &head.commit, Limits::DEFAULT)
            .map_err(ApiError::internal)?;
        match since {
            None => snap.write_car(Vec::new()).map_err(ApiError::internal),
            Some(since) => {
                let old =
                    Snapshot::load(&task_state.store, &since, Limits::DEFAULT).map_err(|e| {
                        ApiError::new(
                            StatusCode::NOT_FOUND,
                            "unknown_since",
                            format!("since {since}: {e}"),
                        )
                    })?;
                if old.commit.body.publisher != snap.commit.body.publisher {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "since_other_publisher",
                        "since names another publisher's commit",
                    ));
                }
                snap.write_delta(&old.tree, Vec::new())
                    .map(|(bytes, _)| bytes)
                    .map_err(ApiError::internal)
            }
        }
    })
    .await
    .map_err(ApiError::internal)??;
    tracing::info!(%publisher, seq = head.seq, bytes = bytes.len(), "snapshot exported");
    Ok(([(header::CONTENT_TYPE, CAR_MEDIA_TYPE)], bytes).into_response())
}

fn snapshot_error(error: SnapshotError) -> ApiError {
    let code = match &error {
        SnapshotError::Store(_) => return ApiError::internal(error),
        SnapshotError::Rollback { .. } => "rollback",
        SnapshotError::Equivocation { .. } => "equivocation",
        SnapshotError::Expired { .. } => "expired",
        SnapshotError::BadSignature { .. } => "bad_signature",
        SnapshotError::MissingBlock { .. } => "missing_block",
        SnapshotError::HashMismatch(_) => "hash_mismatch",
        SnapshotError::Car(meridian_registry::car::CarError::Block(_)) => "hash_mismatch",
        SnapshotError::Car(_) => "bad_car",
        _ => "snapshot_rejected",
    };
    let mut api = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, error.to_string());
    if let SnapshotError::Equivocation {
        first, second, seq, ..
    } = &error
    {
        api.details =
            json!({ "seq": seq, "first": first.to_string(), "second": second.to_string() });
    }
    api
}

/// Verify and import a snapshot or delta, atomically.
#[utoipa::path(post, path = "/api/v1/registry/import", tag = "registry", security(("adminToken" = [])), request_body(content = String, content_type = "application/vnd.ipld.car", description = "a CAR file"), responses((status = 200, description = "imported", content_type = "application/json"), (status = 401, description = "no or bad token", body = ErrorBody), (status = 403, description = "not an admin token", body = ErrorBody), (status = 413, description = "too large", body = ErrorBody), (status = 415, description = "not a CAR", body = ErrorBody), (status = 422, description = "rejected: rollback, equivocation, expired, bad_signature, hash_mismatch, missing_block", body = ErrorBody)))]
pub async fn import_snapshot(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    // Imports store up to http.import_bytes_max of someone's blocks: not for anonymous callers.
    super::governance::require_admin(&state, &headers)?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(media.starts_with(CAR_MEDIA_TYPE) || media.starts_with("application/octet-stream")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send a CAR file as {CAR_MEDIA_TYPE}, not `{media}`"),
        ));
    }
    let task_state = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let options = VerifyOptions {
            now: Some((task_state.clock)()),
            ..VerifyOptions::default()
        };
        let contents = snapshot::read_car(&body[..], options.limits)?;
        snapshot::import(&task_state.store, &contents, options)
    })
    .await
    .map_err(ApiError::internal)?;
    let verified = match result {
        Ok(verified) => verified,
        Err(error) => {
            state
                .metrics
                .count("meridian_imports_total{outcome=\"rejected\"}", 1);
            tracing::warn!(%error, "snapshot import rejected");
            return Err(snapshot_error(error));
        }
    };
    state
        .metrics
        .count("meridian_imports_total{outcome=\"accepted\"}", 1);
    // Peers learn of the new head as of any other: they fetch what they lack from this node.
    state.tell_mesh(super::mesh::MeshCommand::Announce(
        verified.commit.to_block(),
    ));
    let publisher = verified.commit.body.publisher.to_did();
    let reindex_state = state.clone();
    let reindex_publisher = publisher.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        reindex_state.index_head(&reindex_publisher)?;
        // A snapshot of this node's own key came from outside (a restore): publish on top of it.
        if reindex_publisher == reindex_state.node_did {
            let own = super::publish::load_own(&reindex_state.store, &reindex_publisher)?;
            reindex_state.publisher.reset(own);
        }
        Ok(())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    tracing::info!(%publisher, seq = verified.commit.body.seq, agents = verified.tree.len(), "snapshot imported");
    Ok(Json(json!({
        "root": verified.commit_cid.to_string(),
        "publisher": publisher,
        "seq": verified.commit.body.seq,
        "agents": verified.tree.len(),
        "blocks": verified.new_blocks.len(),
        "signatures_checked": verified.verified_manifests.len(),
        "linked": verified.linked,
    })))
}

#[derive(serde::Serialize)]
struct ManifestView<'a> {
    cid: &'a str,
    signer: &'a str,
}

#[derive(serde::Serialize)]
struct Provenance<'a> {
    publisher: &'a str,
    seq: u64,
    commit: Option<&'a str>,
    /// Ids of the unrevoked attestations about the organisation.
    attestations: Vec<String>,
    /// The same with their types (`org.verified`, `org.domain`...): who vouches, and for what.
    vouched_by: Vec<serde_json::Value>,
    /// The organisation's domain, when an `org.domain` attestation binds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
    /// The agent's ARD identifier, or why it has none.
    ard: serde_json::Value,
}

#[derive(serde::Serialize)]
struct AgentView<'a> {
    agent_id: &'a str,
    org: &'a str,
    region: &'a str,
    updated_at: i64,
    /// `active` or `deprecated`.
    status: &'a str,
    /// A deprecated agent's successor, when its organisation named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    superseded_by: Option<&'a str>,
    card: &'a serde_json::value::RawValue,
    manifest: ManifestView<'a>,
    provenance: Provenance<'a>,
}

/// The error for an agent the index does not serve: 410 `agent_removed` when its organisation
/// signed a removal, 404 `unknown_agent` otherwise.
pub(crate) fn unknown_agent(index: &AgentIndex, agent_id: &str) -> ApiError {
    match index.removal(agent_id) {
        Some(removal) => ApiError::new(
            StatusCode::GONE,
            "agent_removed",
            format!(
                "`{agent_id}` was removed by its organisation as of {} (signed removal {}, listed by {})",
                removal.updated_at, removal.manifest, removal.publisher
            ),
        ),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_agent",
            format!("no agent `{agent_id}`"),
        ),
    }
}

/// One agent: the card as published, its manifest and provenance.
#[utoipa::path(get, path = "/api/v1/agents/{org}/{agent}", tag = "agents", params(("org" = String, Path, description = "organisation id"), ("agent" = String, Path, description = "agent name")), responses((status = 200, description = "the agent", content_type = "application/json"), (status = 404, description = "unknown agent", body = ErrorBody), (status = 410, description = "removed by its organisation (`agent_removed`)", body = ErrorBody)))]
pub async fn agent(
    State(state): State<Arc<NodeState>>,
    Path((org, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let agent_id = format!("{org}/{name}");
    let kinds = state.governance.org_attestation_kinds(&org);
    let attestations = kinds.iter().map(|(_, id)| id.clone()).collect();
    let vouched_by = kinds
        .into_iter()
        .map(|(kind, id)| json!({ "type": kind, "id": id }))
        .collect();
    let domain = state.org_domain(&org, (state.clock)());
    // Everything comes from the index: a lookup reads no block and decodes nothing.
    let body = {
        let index = state
            .index
            .read()
            .map_err(|_| ApiError::internal("index lock poisoned"))?;
        let record = index
            .get(&agent_id)
            .ok_or_else(|| unknown_agent(&index, &agent_id))?;
        let card = record
            .card
            .as_deref()
            .ok_or_else(|| ApiError::internal(format!("indexed agent `{agent_id}` has no card")))?;
        let view = AgentView {
            agent_id: &record.agent_id,
            org: &record.org,
            region: &record.region,
            updated_at: record.updated_at,
            status: record.status,
            superseded_by: record.superseded_by.as_deref(),
            card,
            manifest: ManifestView {
                cid: &record.manifest,
                signer: &record.signer,
            },
            provenance: Provenance {
                publisher: &record.publisher,
                seq: record.seq,
                commit: record.commit.as_deref(),
                attestations,
                vouched_by,
                ard: match &domain {
                    Some(domain) => {
                        json!({ "identifier": format!("urn:air:{domain}:{org}:{name}") })
                    }
                    None => json!({
                        "identifier": null,
                        "why": "its organisation has no verified domain (an org.domain attestation, `meridian org verify-domain`): ARD identifiers are anchored to one",
                    }),
                },
                domain,
            },
        };
        serde_json::to_vec(&view).map_err(ApiError::internal)?
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Query of the agent search.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    q: Option<String>,
    skill: Option<String>,
    tag: Option<String>,
    org: Option<String>,
    region: Option<String>,
    input_mode: Option<String>,
    output_mode: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
    sort: Option<String>,
    facets: Option<String>,
    verified: Option<String>,
}

/// Search the federated view (stable order, cursor pagination; `sort=relevance` ranks by
/// relevance to `q` instead, each agent with its `score`).
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", params(("q" = Option<String>, Query, description = "words that must all appear"), ("skill" = Option<String>, Query, description = "skill id"), ("tag" = Option<String>, Query, description = "skill tag"), ("org" = Option<String>, Query, description = "organisation"), ("region" = Option<String>, Query, description = "region"), ("input_mode" = Option<String>, Query, description = "input media type"), ("output_mode" = Option<String>, Query, description = "output media type"), ("status" = Option<String>, Query, description = "life-cycle state: `active` or `deprecated`"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("limit" = Option<u32>, Query, description = "page size (default 50)"), ("facets" = Option<String>, Query, description = "comma-separated fields to count the matching agents by, each value's count in `facets` (the ten most common): org, region, tag, skill, status, verified"), ("verified" = Option<String>, Query, description = "`yes`: only agents of organisations bound to a verified domain (the identity their ARD identifier is anchored to); `no`: only the others"), ("sort" = Option<String>, Query, description = "`relevance`: rank by relevance to q (any of its words; rarer words and name words weigh more; a typo or an unfinished last word still matches, at half weight), each agent with a score 1-100, deprecated agents after every active one; without it, q's words must all appear and the order is by agent id")), responses((status = 200, description = "a page of agents and next_cursor", content_type = "application/json"), (status = 400, description = "bad query, limit, status or sort", body = ErrorBody)))]
pub async fn search(
    State(state): State<Arc<NodeState>>,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let (mut query, ranked_text, limit) = parse_search(&params, state.config.http.search_page_max)?;
    let wants_verified = params
        .facets
        .as_deref()
        .is_some_and(|f| f.split(',').any(|f| f.trim() == "verified"));
    let verified = (params.verified.is_some() || wants_verified).then(|| verified_orgs(&state));
    if let (Some(want), Some(verified)) = (params.verified.as_deref(), &verified) {
        let want = want == "yes";
        let orgs = state
            .index
            .read()
            .map_err(|_| ApiError::internal("index lock poisoned"))?
            .orgs()
            .filter(|org| verified.contains(*org) == want)
            .map(str::to_owned)
            .collect();
        query.orgs = Some(orgs);
    }
    let index = state
        .index
        .read()
        .map_err(|_| ApiError::internal("index lock poisoned"))?;
    let mut answer = match &ranked_text {
        None => {
            let (page, next) = index.search(&query);
            json!({ "agents": page, "next_cursor": next })
        }
        Some(text) => ranked_search(&index, &query, text, params.cursor.as_deref(), limit)?,
    };
    if let Some(fields) = params.facets.as_deref() {
        let verified = verified.unwrap_or_default();
        answer["facets"] = facets(&index, &query, ranked_text.as_deref(), fields, &verified)?;
    }
    Ok(Json(answer))
}

/// The organisations bound to a verified domain now (what the `verified` filter and facet
/// ask about: the identity an ARD identifier is anchored to).
fn verified_orgs(state: &NodeState) -> std::collections::HashSet<String> {
    let now = (state.clock)();
    let orgs: Vec<String> = state
        .index
        .read()
        .map(|index| index.orgs().map(str::to_owned).collect())
        .unwrap_or_default();
    orgs.into_iter()
        .filter(|org| state.org_domain(org, now).is_some())
        .collect()
}

/// Checks the search's parameters: the index query, the text to rank by (with
/// `sort=relevance`) and the page size.
fn parse_search(
    params: &SearchParams,
    page_max: usize,
) -> ApiResult<(SearchQuery, Option<String>, usize)> {
    let limit = params.limit.unwrap_or(50);
    if limit == 0 || limit > page_max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("limit must be between 1 and {page_max}"),
        ));
    }
    let relevance = match params.sort.as_deref() {
        None => false,
        Some("relevance") => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_sort",
                format!("sort `{other}`: the one order besides the default is `relevance`"),
            ));
        }
    };
    if let Some(status) = params.status.as_deref()
        && !["active", "deprecated"].contains(&status)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!(
                "status `{status}`: an agent listed is `active` or `deprecated` (a removed one answers 410)"
            ),
        ));
    }
    if let Some(verified) = params.verified.as_deref()
        && !["yes", "no"].contains(&verified)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!(
                "verified `{verified}`: `yes` (the organisation is bound to a verified domain) or `no`"
            ),
        ));
    }
    let ranked_text = if relevance {
        let text = params.q.clone().filter(|q| !q.trim().is_empty());
        Some(text.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "sort=relevance ranks by relevance to q: give q",
            )
        })?)
    } else {
        None
    };
    let query = SearchQuery {
        text: if relevance { None } else { params.q.clone() },
        skill: params.skill.clone(),
        tag: params.tag.clone(),
        org: params.org.clone(),
        region: params.region.clone(),
        input_mode: params.input_mode.clone(),
        output_mode: params.output_mode.clone(),
        status: params.status.clone(),
        orgs: None,
        after: if relevance {
            None
        } else {
            params.cursor.clone()
        },
        limit: if relevance { usize::MAX } else { limit },
    };
    Ok((query, ranked_text, limit))
}

/// The fields `?facets=` counts by.
pub const FACET_FIELDS: &[&str] = &["org", "region", "tag", "skill", "status", "verified"];
/// Values listed per facet, the most common first.
const FACET_VALUES_MAX: usize = 10;

/// How many of the agents a search matches (all of them, not one page) have each value of the
/// asked `fields`: the ten most common values per field.
fn facets(
    index: &AgentIndex,
    query: &SearchQuery,
    text: Option<&str>,
    fields: &str,
    verified: &std::collections::HashSet<String>,
) -> ApiResult<Value> {
    let fields: Vec<&str> = fields
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    if let Some(bad) = fields.iter().find(|f| !FACET_FIELDS.contains(f)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("facet `{bad}`: count by {}", FACET_FIELDS.join(", ")),
        ));
    }
    let filtered = [
        &query.skill,
        &query.tag,
        &query.org,
        &query.region,
        &query.input_mode,
        &query.output_mode,
        &query.status,
    ]
    .iter()
    .any(|f| f.is_some())
        || query.orgs.is_some();
    let matched: Vec<&AgentRecord> = match text {
        // Words alone: the matched agents straight from the ranked index.
        Some(text) if !filtered => index
            .matching(text)
            .map_err(ApiError::internal)?
            .iter()
            .filter_map(|id| index.get(id))
            .collect(),
        Some(text) => {
            let ids = index.matching(text).map_err(ApiError::internal)?;
            let filters = SearchQuery {
                text: None,
                after: None,
                limit: usize::MAX,
                ..query.clone()
            };
            index
                .search(&filters)
                .0
                .into_iter()
                .filter(|r| ids.contains(r.agent_id.as_str()))
                .collect()
        }
        None => {
            let all = SearchQuery {
                after: None,
                limit: usize::MAX,
                ..query.clone()
            };
            index.search(&all).0
        }
    };
    let mut out = serde_json::Map::new();
    for field in fields {
        let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for record in &matched {
            let (one, many): (Option<&str>, &[String]) = match field {
                "org" => (Some(&record.org), &[]),
                "verified" if verified.contains(&record.org) => (Some("yes"), &[]),
                "verified" => (Some("no"), &[]),
                "region" => (Some(&record.region), &[]),
                "status" => (Some(record.status), &[]),
                "tag" => (None, &record.tags),
                _ => (None, &record.skills),
            };
            for value in one.into_iter().chain(many.iter().map(String::as_str)) {
                *counts.entry(value).or_default() += 1;
            }
        }
        let mut counts: Vec<(&str, usize)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts.truncate(FACET_VALUES_MAX);
        let buckets: Vec<Value> = counts
            .into_iter()
            .map(|(value, count)| json!({ "value": value, "count": count }))
            .collect();
        out.insert(field.to_owned(), Value::Array(buckets));
    }
    Ok(Value::Object(out))
}

/// `sort=relevance`: the agents `query` filters to that match any word of `text`, best first,
/// each with its score; the cursor is the offset of the next page.
fn ranked_search(
    index: &AgentIndex,
    query: &SearchQuery,
    text: &str,
    cursor: Option<&str>,
    limit: usize,
) -> ApiResult<Value> {
    let offset = match cursor {
        None => 0,
        Some(cursor) => cursor
            .strip_prefix('@')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_cursor",
                    "this cursor is not from a sort=relevance page",
                )
            })?,
    };
    if offset.saturating_add(limit) > RANKED_DEPTH_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_cursor",
            format!("ranked pages reach the best {RANKED_DEPTH_MAX} agents; narrow the query"),
        ));
    }
    let mut filter = RankFilter::default();
    for (field, value) in [
        (FilterField::Org, &query.org),
        (FilterField::Region, &query.region),
        (FilterField::Skill, &query.skill),
        (FilterField::Tag, &query.tag),
        (FilterField::InputMode, &query.input_mode),
        (FilterField::OutputMode, &query.output_mode),
        (FilterField::Status, &query.status),
    ] {
        if let Some(value) = value {
            filter.any(field, vec![value.clone()]);
        }
    }
    if let Some(orgs) = &query.orgs {
        filter.any(FilterField::Org, orgs.clone());
    }
    let ranked = index
        .rank(text, &filter, offset, limit)
        .map_err(ApiError::internal)?;
    let page: Vec<Value> = ranked
        .hits
        .iter()
        .map(|(record, score)| {
            let mut agent = serde_json::to_value(record).unwrap_or_default();
            agent["score"] = json!(score);
            agent
        })
        .collect();
    let next = (offset + limit < ranked.total).then(|| format!("@{}", offset + limit));
    Ok(json!({ "agents": page, "next_cursor": next }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::config::NodeConfig;
    use crate::daemon::mesh::{MESH_COMMANDS_MAX, MeshCommand};
    use meridian_registry::keys::Keypair;

    fn clock() -> i64 {
        1_800_000_000
    }

    fn state(dir: &std::path::Path) -> NodeState {
        let store = meridian_registry::store::SledStore::open(&dir.join("store")).unwrap();
        let key = Keypair::from_secret(&[7; 32]);
        NodeState::new(store, NodeConfig::default(), key, dir, clock).unwrap()
    }

    /// The status, error code and Retry-After of a refusal.
    async fn refusal(response: Response) -> (StatusCode, String, Option<String>) {
        let status = response.status();
        let retry = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let code = body["error"]["code"].as_str().unwrap_or_default();
        (status, code.to_owned(), retry)
    }

    #[tokio::test]
    async fn a_full_mesh_queue_drops_announcements_counted_and_refuses_sync_with_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        // Without a mesh the engine cannot answer.
        let off = engine_answer(&state, b"request").await.unwrap_err();
        let (status, code, _) = refusal(off).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "mesh_off")
        );
        // A mesh that has stopped taking commands: its queue fills.
        let (tx, rx) = tokio::sync::mpsc::channel(MESH_COMMANDS_MAX);
        state.mesh.set(tx).unwrap();
        for _ in 0..MESH_COMMANDS_MAX {
            assert!(state.tell_mesh(MeshCommand::Announce(vec![1])));
        }
        assert!(!state.tell_mesh(MeshCommand::Announce(vec![2])));
        assert_eq!(
            state
                .metrics
                .counter("meridian_mesh_commands_dropped_total"),
            1
        );
        let busy = engine_answer(&state, b"request").await.unwrap_err();
        assert_eq!(
            refusal(busy).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "sync_busy".to_owned(),
                Some("1".to_owned())
            )
        );
        // The mesh gone: the engine is off, not busy.
        drop(rx);
        let gone = engine_answer(&state, b"request").await.unwrap_err();
        let (status, code, _) = refusal(gone).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "mesh_off")
        );
    }
}

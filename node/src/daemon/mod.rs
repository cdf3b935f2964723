//! `meridian node`: the long-running node. This module is the driver: it reads the config, opens
//! the store, binds the gateway, and shuts down cleanly; the registry logic it serves lives in
//! `meridian-registry`.

pub mod a2a;
pub mod agent;
pub mod ard;
pub mod config;
pub mod console;
pub mod domains;
pub mod events;
pub mod federation;
pub mod governance;
pub mod http;
pub mod index;
pub mod ingest;
pub mod jws;
pub mod mesh;
pub mod names;
pub use meridian_hub::metrics;
pub mod openapi;
pub mod provenance;
pub mod publish;
pub mod ranking;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use meridian_registry::keys::Keypair;

use config::{DEFAULT_CONFIG_TOML, NodeConfig};

/// The node key file under the data directory.
pub const NODE_KEY_FILE: &str = "node.key";
/// The config file under the data directory.
pub const CONFIG_FILE: &str = "config.toml";
/// Where the gateway's bound address is written once it listens.
pub const HTTP_ADDR_FILE: &str = "http.addr";
/// How often the running node looks for a change of `DATA/name-pins.json`.
pub const NAME_PINS_POLL: Duration = Duration::from_secs(2);

/// Creates a data directory: the node key (0600), a documented config file and the store.
/// Existing files are kept, so running it twice is harmless. Returns the node's did.
pub fn init(data: &Path) -> Result<String> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let key_path = data.join(NODE_KEY_FILE);
    let key = if key_path.exists() {
        crate::data::load_key(&key_path)?
    } else {
        let key = Keypair::generate()?;
        crate::data::write_secret_file(&key_path, key.to_key_file().as_bytes())
            .with_context(|| format!("writing {}", key_path.display()))?;
        key
    };
    let config_path = data.join(CONFIG_FILE);
    if !config_path.exists() {
        std::fs::write(&config_path, DEFAULT_CONFIG_TOML)
            .with_context(|| format!("writing {}", config_path.display()))?;
    }
    let store = crate::data::open_store(data)?;
    store.flush()?;
    Ok(key.did())
}

/// What `meridian node run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The data directory.
    pub data: PathBuf,
    /// A config file other than `DATA/config.toml`.
    pub config: Option<PathBuf>,
    /// Overrides `http.listen`.
    pub http: Option<String>,
}

fn wall_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Loads the configuration for `options` from file, environment and flags.
pub fn load_config(options: &RunOptions) -> Result<NodeConfig> {
    let file = options
        .config
        .clone()
        .or_else(|| Some(options.data.join(CONFIG_FILE)).filter(|p| p.exists()));
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config = NodeConfig::load(file.as_deref(), &env)?;
    if let Some(http) = &options.http {
        config.http.listen = http.clone();
        config.validate().context("--http")?;
    }
    Ok(config)
}

/// Logs to stderr in `format` (`text` or `json`), at the verbosity `RUST_LOG` gives.
pub(crate) fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tantivy=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless; ignore it.
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// Runs a hub until SIGINT or SIGTERM (`meridian hub run`).
pub fn run_hub(options: meridian_hub::daemon::HubRunOptions) -> Result<()> {
    let config = meridian_hub::daemon::load_config(&options)?;
    init_logging(&config.log.format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(meridian_hub::daemon::serve(
        options,
        config,
        shutdown_signal(),
    ))
}

/// Runs the node until SIGINT or SIGTERM.
pub fn run(options: RunOptions) -> Result<()> {
    let config = load_config(&options)?;
    init_logging(&config.log.format);
    if !options.data.join(NODE_KEY_FILE).exists() {
        let did = init(&options.data)?;
        tracing::info!(data = %options.data.display(), %did, "initialised a new data directory");
    }
    let (state, key) = open(&options.data, &config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(state, key, &options.data, &config, shutdown_signal()))
}

/// Opens an initialised data directory with `config`: the node key and the node's state over
/// its store, ready for [`serve`].
pub fn open(data: &Path, config: &NodeConfig) -> Result<(Arc<http::NodeState>, Keypair)> {
    let key = crate::data::load_key(&data.join(NODE_KEY_FILE))?;
    let store = crate::data::open_store(data)?;
    let state = Arc::new(http::NodeState::new(
        store,
        config.clone(),
        key.clone(),
        data,
        wall_clock,
    )?);
    Ok((state, key))
}

/// Keeps the node's own head from expiring while it runs (re-signs it when due) and drops
/// the signed removals whose retention ran out; checked every minute.
async fn refresh_head(state: Arc<http::NodeState>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    loop {
        ticks.tick().await;
        let state = state.clone();
        let upkeep = move || {
            publish::refresh_if_due(&state)?;
            publish::prune_removals_if_due(&state)
        };
        match tokio::task::spawn_blocking(upkeep).await {
            Ok(Err(error)) => tracing::warn!(?error, "could not keep the node's head up"),
            Err(error) => tracing::warn!(%error, "head upkeep task failed"),
            Ok(Ok(_)) => {}
        }
    }
}

/// The operator rebinds a name by editing DATA/name-pins.json (`meridian node names pin`):
/// looks for a change every [`NAME_PINS_POLL`] and rebuilds the view when there is one.
async fn watch_name_pins(state: Arc<http::NodeState>) {
    let mut ticks = tokio::time::interval(NAME_PINS_POLL);
    loop {
        ticks.tick().await;
        let state = state.clone();
        let outcome = tokio::task::spawn_blocking(move || -> Result<bool> {
            if state.names.reload_pins_if_changed()? {
                state.reindex_all()?;
                return Ok(true);
            }
            Ok(false)
        })
        .await;
        match outcome {
            Ok(Ok(true)) => tracing::info!("name pins changed: federated view rebuilt"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::warn!(?error, "could not apply the name pins"),
            Err(error) => tracing::warn!(%error, "name pins task failed"),
        }
    }
}

/// Serves the node (gateway, peer mesh, head refresh) until `stop` resolves, then drains
/// in-flight requests for at most `http.shutdown_grace_secs` and flushes the store.
/// `meridian node run` passes SIGINT/SIGTERM; `meridian demo` runs several nodes in one process.
pub async fn serve(
    state: Arc<http::NodeState>,
    mesh_key: Keypair,
    data: &Path,
    config: &NodeConfig,
    stop: impl std::future::Future<Output = ()> + Send,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen_addr()?)
        .await
        .with_context(|| format!("binding the gateway to {}", config.http.listen))?;
    let address = listener.local_addr()?;
    let _ = state.gateway_addr.set(address);
    let addr_file = data.join(HTTP_ADDR_FILE);
    std::fs::write(&addr_file, format!("{address}\n"))
        .with_context(|| format!("writing {}", addr_file.display()))?;
    tracing::info!(%address, node = %state.node_did, region = %config.node.region, "gateway listening");
    for warning in state.warnings() {
        tracing::warn!("{warning}");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut mesh_task = None;
    if config.mesh.enabled {
        let (mesh_tx, mesh_rx) = tokio::sync::mpsc::channel(mesh::MESH_COMMANDS_MAX);
        let _ = state.mesh.set(mesh_tx);
        let mesh_state = state.clone();
        let mesh_data = data.to_path_buf();
        let mesh_stop = stop_rx.clone();
        mesh_task = Some(tokio::spawn(async move {
            if let Err(error) =
                mesh::run(mesh_state, mesh_key, &mesh_data, mesh_rx, mesh_stop).await
            {
                tracing::error!(?error, "the peer mesh stopped");
            }
        }));
    }
    let app = http::router(state.clone());
    let refresh_task = tokio::spawn(refresh_head(state.clone()));
    let names_task = tokio::spawn(watch_name_pins(state.clone()));
    let ingest_task = tokio::spawn(ingest::run(state.clone()));
    let domains_task = tokio::spawn(domains::recheck_domains(
        state.clone(),
        Duration::from_secs(config.domains.recheck_secs.clamp(1, 60)),
    ));
    let grace = Duration::from_secs(config.http.shutdown_grace_secs);
    meridian_hub::serve::serve(
        listener,
        app,
        config.http.serve_limits(),
        state.serve_counters.clone(),
        async move {
            stop.await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: finishing in-flight requests"
            );
            let _ = stop_tx.send(true);
        },
        grace,
    )
    .await;
    refresh_task.abort();
    names_task.abort();
    domains_task.abort();
    ingest_task.abort();
    if let Some(task) = mesh_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    state.store.flush().context("flushing the store")?;
    let _ = std::fs::remove_file(&addr_file);
    tracing::info!("stopped");
    Ok(())
}

//! `meridian hub`: the long-running hub. This module is the driver: it reads the config, opens
//! the store, binds the HTTP API and the QUIC trunk, and shuts down cleanly; the decisions live
//! in the sans-IO cores of this crate.

pub mod config;
pub mod http;
pub mod state;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use meridian_registry::keys::Keypair;

use config::{DEFAULT_HUB_CONFIG_TOML, HubConfig};
use state::Hub;

/// The hub key file under the data directory.
pub const HUB_KEY_FILE: &str = "hub.key";
/// The config file under the data directory.
pub const CONFIG_FILE: &str = "hub.toml";
/// Where the HTTP API's bound address is written once it listens.
pub const HTTP_ADDR_FILE: &str = "http.addr";
/// Where the trunk's bound UDP address is written once it listens.
pub const TRUNK_ADDR_FILE: &str = "trunk.addr";

/// Writes the hub key: 0600, synced, renamed into place ([`meridian_registry::files`]).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    meridian_registry::files::write_secret(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Creates a hub data directory: the hub key (0600) and a documented config file with the
/// region set. Existing files are kept. Returns the hub's did.
pub fn init(data: &Path, region: Option<&str>) -> Result<String> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let key_path = data.join(HUB_KEY_FILE);
    let key = if key_path.exists() {
        load_key(data)?
    } else {
        let key = Keypair::generate()?;
        write_private(&key_path, key.to_key_file().as_bytes())?;
        key
    };
    let config_path = data.join(CONFIG_FILE);
    if !config_path.exists() {
        let mut text = DEFAULT_HUB_CONFIG_TOML.to_owned();
        if let Some(region) = region {
            meridian_registry::manifest::check_name("region", region)
                .map_err(|problem| anyhow::anyhow!("--region: {problem}"))?;
            text = text.replacen("region = \"local\"", &format!("region = \"{region}\""), 1);
        }
        std::fs::write(&config_path, text)
            .with_context(|| format!("writing {}", config_path.display()))?;
    }
    Ok(key.did())
}

/// The hub key of a data directory.
pub fn load_key(data: &Path) -> Result<Keypair> {
    let path = data.join(HUB_KEY_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Keypair::from_key_file(&text).with_context(|| format!("{}", path.display()))
}

/// What `meridian hub run` was asked to do.
#[derive(Debug, Clone)]
pub struct HubRunOptions {
    /// The data directory.
    pub data: PathBuf,
    /// A config file other than `DATA/hub.toml`.
    pub config: Option<PathBuf>,
    /// The HTTP API's address, overriding `hub.listen`.
    pub listen: Option<String>,
    /// The QUIC trunk's address, overriding `hub.trunk_listen`.
    pub trunk_listen: Option<String>,
}

/// Loads the configuration for `options` from file and environment.
pub fn load_config(options: &HubRunOptions) -> Result<HubConfig> {
    let file = options
        .config
        .clone()
        .or_else(|| Some(options.data.join(CONFIG_FILE)).filter(|p| p.exists()));
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config = HubConfig::load(file.as_deref(), &env)?;
    if let Some(listen) = &options.listen {
        config.hub.listen = listen.clone();
        config.validate().context("--listen")?;
    }
    if let Some(trunk_listen) = &options.trunk_listen {
        config.hub.trunk_listen = trunk_listen.clone();
        config.validate().context("--trunk-listen")?;
    }
    Ok(config)
}

fn wall_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs the hub until `stop` resolves (the binary passes SIGINT/SIGTERM).
pub async fn serve(
    options: HubRunOptions,
    config: HubConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let data = &options.data;
    if !data.join(HUB_KEY_FILE).exists() {
        let did = init(data, Some(&config.hub.region))?;
        tracing::info!(data = %data.display(), %did, "initialised a new hub data directory");
    }
    let key = load_key(data)?;
    let allowed: crate::trunk::AllowedKeys = Default::default();
    let server_config = crate::trunk::server_config(&key, allowed.clone())?;
    let trunk_addr = config.trunk_addr()?;
    let endpoint = quinn::Endpoint::server(server_config, trunk_addr)
        .with_context(|| format!("binding the trunk to {trunk_addr}"))?;
    let hub = Arc::new(Hub::open(
        config.clone(),
        key,
        data,
        endpoint.clone(),
        allowed,
        wall_clock,
    )?);
    let trunk_local = endpoint.local_addr()?;
    std::fs::write(data.join(TRUNK_ADDR_FILE), format!("{trunk_local}\n"))?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr()?)
        .await
        .with_context(|| format!("binding the hub API to {}", config.hub.listen))?;
    let address = listener.local_addr()?;
    std::fs::write(data.join(HTTP_ADDR_FILE), format!("{address}\n"))?;
    tracing::info!(%address, trunk = %trunk_local, hub = %hub.did, region = %config.hub.region, "hub listening");
    for warning in hub.warnings() {
        tracing::warn!("{warning}");
    }
    // Anti-entropy with the other regions' hubs: at start, then every hub.anti_entropy_secs.
    let entropy_hub = hub.clone();
    let period = Duration::from_secs(config.hub.anti_entropy_secs);
    let anti_entropy = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            entropy_hub.anti_entropy().await;
        }
    });
    let accept_hub = hub.clone();
    let accept_endpoint = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept_endpoint.accept().await {
            let hub = accept_hub.clone();
            tokio::spawn(async move {
                match incoming.await {
                    Ok(connection) => http::serve_trunk_connection(hub, connection).await,
                    Err(error) => tracing::debug!(%error, "trunk handshake failed"),
                }
            });
        }
    });
    // Long-polls would hold the shutdown for their whole wait: bound the drain.
    crate::serve::serve(
        listener,
        http::router(hub.clone()),
        config.http.serve_limits(),
        hub.serve_counters.clone(),
        async move {
            stop.await;
            tracing::info!("shutting down: finishing in-flight requests");
        },
        Duration::from_secs(3),
    )
    .await;
    anti_entropy.abort();
    endpoint.close(0u32.into(), b"hub stopping");
    hub.flush()?;
    let _ = std::fs::remove_file(data.join(HTTP_ADDR_FILE));
    let _ = std::fs::remove_file(data.join(TRUNK_ADDR_FILE));
    tracing::info!("hub stopped");
    Ok(())
}

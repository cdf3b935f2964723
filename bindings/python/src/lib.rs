//! `meridian._native`: the Python extension behind the `meridian` package.
//!
//! It sits beside the node at the edge of the crate graph, using only `registry` and
//! `governance` (never the daemon): Python code can check a snapshot, an attestation, a policy
//! bundle or a checkpoint, run the acceptance rule, and sign its own agent manifests, all
//! offline and with the same code the `meridian` binary runs. Every error crosses the boundary
//! as a Python exception of its own class ([`errors`]) carrying the message the CLI prints;
//! nothing panics across it. The HTTP client for a node's API is plain Python
//! (`python/meridian/client.py`).

use std::collections::HashMap;
use std::sync::Arc;

use meridian_governance::accept::{GovernanceView, accept};
use meridian_governance::attestation::{Attestation, AttestationSet, Subject};
use meridian_governance::checkpoint::{Checkpoint, SignedNote};
use meridian_governance::policy::PolicyBundle;
use meridian_governance::root::{ExpiryCheck, RootChainError, TrustedRoot};
use meridian_registry::Cid;
use meridian_registry::car::Limits;
use meridian_registry::keys::{Keypair as RegistryKeypair, PublicKey};
use meridian_registry::manifest::{Manifest, ManifestBody};
use meridian_registry::snapshot::{self, Snapshot as RegistrySnapshot, VerifyOptions};
use meridian_registry::store::MemoryStore;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

mod errors;

use errors::{
    GovernanceError, InputError, SignatureError, governance_error, input_error, snapshot_error,
};

/// Reads `source`: bytes are the document itself, a `str` or `os.PathLike` names a file.
fn read_source(source: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = source.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    if let Ok(bytes) = source.extract::<Vec<u8>>()
        && !source.is_instance_of::<pyo3::types::PyString>()
    {
        return Ok(bytes);
    }
    let path: std::path::PathBuf = source
        .extract()
        .map_err(|_| InputError::new_err(format!("{what}: expected bytes or a file path")))?;
    let os_error = |e: std::io::Error| {
        pyo3::exceptions::PyOSError::new_err(format!("{what}: reading {}: {e}", path.display()))
    };
    // Bounded while reading, so a huge or endless file is refused without filling memory.
    let max = Limits::DEFAULT.car_bytes_max;
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .map_err(os_error)?
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(os_error)?;
    if bytes.len() as u64 > max {
        return Err(errors::LimitError::new_err(format!(
            "{what}: {} is over the limit of {max} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

fn public_key(did: &str, what: &str) -> PyResult<PublicKey> {
    PublicKey::from_did(did).map_err(|e| input_error(format!("{what}: {e}")))
}

/// An ed25519 key: an organisation's manifest-signing key or a node key, in the same key-file
/// format as `meridian keys generate`.
#[pyclass(module = "meridian._native", frozen)]
struct Keypair {
    inner: RegistryKeypair,
}

#[pymethods]
impl Keypair {
    /// A new random key.
    #[staticmethod]
    fn generate() -> PyResult<Self> {
        RegistryKeypair::generate()
            .map(|inner| Self { inner })
            .map_err(|e| input_error(e.to_string()))
    }

    /// Loads a key file written by `meridian keys generate` or `Keypair.save`.
    #[staticmethod]
    fn load(path: std::path::PathBuf) -> PyResult<Self> {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            pyo3::exceptions::PyOSError::new_err(format!("reading {}: {e}", path.display()))
        })?;
        Self::from_key_file(&text).map_err(|e| input_error(format!("{}: {e}", path.display())))
    }

    /// Parses the text of a key file.
    #[staticmethod]
    fn from_key_file(text: &str) -> PyResult<Self> {
        RegistryKeypair::from_key_file(text)
            .map(|inner| Self { inner })
            .map_err(|e| input_error(e.to_string()))
    }

    /// A key from its 32 secret bytes (for tests and key derivation).
    #[staticmethod]
    fn from_secret(secret: &[u8]) -> PyResult<Self> {
        let secret: [u8; 32] = secret
            .try_into()
            .map_err(|_| input_error(format!("a secret is 32 bytes, not {}", secret.len())))?;
        Ok(Self {
            inner: RegistryKeypair::from_secret(&secret),
        })
    }

    /// Writes the key file to `path`, readable by its owner only; refuses to overwrite.
    fn save(&self, path: std::path::PathBuf) -> PyResult<()> {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&path).map_err(|e| {
            pyo3::exceptions::PyOSError::new_err(format!("creating {}: {e}", path.display()))
        })?;
        file.write_all(self.inner.to_key_file().as_bytes())
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("{}: {e}", path.display())))
    }

    /// The key file's text.
    fn to_key_file(&self) -> String {
        self.inner.to_key_file()
    }

    /// The public key as a `did:key`.
    #[getter]
    fn did(&self) -> String {
        self.inner.did()
    }

    fn __repr__(&self) -> String {
        format!("Keypair({})", self.inner.did())
    }
}

fn card_text(card: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(text) = card.extract::<String>() {
        return Ok(text);
    }
    let json = card.py().import("json")?;
    json.call_method1("dumps", (card,))?.extract()
}

/// What a manifest says, as a dict.
fn manifest_dict<'py>(
    py: Python<'py>,
    manifest: &Manifest,
    cid: &Cid,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("agent_id", &manifest.body.agent_id)?;
    dict.set_item("org", &manifest.body.org)?;
    dict.set_item("region", &manifest.body.region)?;
    dict.set_item("updated_at", manifest.body.updated_at)?;
    dict.set_item("signer", manifest.signer.to_did())?;
    dict.set_item("cid", cid.to_string())?;
    dict.set_item("card", &manifest.body.card)?;
    dict.set_item("removed", manifest.body.removed)?;
    dict.set_item("status", manifest.lifecycle().as_str())?;
    dict.set_item(
        "superseded_by",
        manifest
            .body
            .deprecation
            .as_ref()
            .and_then(|d| d.superseded_by.as_deref()),
    )?;
    Ok(dict)
}

/// Builds a manifest from an A2A card (a dict or JSON text; v1.0 or v0.3), signs it with
/// `key` and returns the manifest block (DAG-CBOR bytes), ready for `POST /api/v1/agents`.
/// With `deprecated=True` (and optionally `superseded_by="org/name"`) the agent is signed as
/// deprecated: still listed and answering, ranked after active agents.
#[pyfunction]
#[pyo3(signature = (card, org, region, key, updated_at, *, deprecated = false, superseded_by = None))]
#[allow(clippy::too_many_arguments)]
fn sign_manifest<'py>(
    py: Python<'py>,
    card: &Bound<'py, PyAny>,
    org: &str,
    region: &str,
    key: &Keypair,
    updated_at: i64,
    deprecated: bool,
    superseded_by: Option<&str>,
) -> PyResult<Bound<'py, PyBytes>> {
    let text = card_text(card)?;
    let mut body = ManifestBody::from_card(&text, org, region, updated_at)
        .map_err(|e| input_error(format!("card: {e}")))?;
    if deprecated {
        body = body
            .deprecate(superseded_by)
            .map_err(|e| input_error(format!("deprecation: {e}")))?;
    } else if superseded_by.is_some() {
        return Err(input_error("superseded_by needs deprecated=True"));
    }
    Ok(PyBytes::new(py, &body.sign(&key.inner).to_block()))
}

/// Signs the deprecation of the agent whose current manifest is `block` (as a node serves it
/// at `/api/v1/blocks/{cid}`): the block is checked first (encoding, card, signature, not a
/// removal), then the same card is signed again with `key` as deprecated, naming
/// `superseded_by` (`org/name`) when given, as of `updated_at` (which must be after the
/// current manifest's). Returns the block for `POST /api/v1/agents`.
#[pyfunction]
#[pyo3(signature = (block, key, updated_at, superseded_by = None))]
fn sign_deprecation<'py>(
    py: Python<'py>,
    block: &[u8],
    key: &Keypair,
    updated_at: i64,
    superseded_by: Option<&str>,
) -> PyResult<Bound<'py, PyBytes>> {
    let current = Manifest::decode(block).map_err(|e| input_error(format!("manifest: {e}")))?;
    current
        .verify_signature()
        .map_err(|e| SignatureError::new_err(format!("manifest: {e}")))?;
    if updated_at <= current.body.updated_at {
        return Err(input_error(format!(
            "updated_at {updated_at} is not after the current manifest's {}",
            current.body.updated_at
        )));
    }
    let mut body = current.body;
    body.updated_at = updated_at;
    body.deprecation = None;
    let body = body
        .deprecate(superseded_by)
        .map_err(|e| input_error(format!("deprecation: {e}")))?;
    Ok(PyBytes::new(py, &body.sign(&key.inner).to_block()))
}

/// Signs the removal (tombstone) of `agent_id` (`org/name`) as of `updated_at` with `key` and
/// returns its block, ready for `DELETE /api/v1/agents/{org}/{name}` (`NodeClient.delete(...,
/// removal=block)`). A removal beats every manifest of the agent with an older or equal
/// `updated_at`, whichever node lists it.
#[pyfunction]
#[pyo3(signature = (agent_id, region, key, updated_at))]
fn sign_removal<'py>(
    py: Python<'py>,
    agent_id: &str,
    region: &str,
    key: &Keypair,
    updated_at: i64,
) -> PyResult<Bound<'py, PyBytes>> {
    let body = ManifestBody::tombstone(agent_id, region, updated_at)
        .map_err(|e| input_error(format!("removal: {e}")))?;
    Ok(PyBytes::new(py, &body.sign(&key.inner).to_block()))
}

/// Checks a manifest block (hash-canonical encoding, card, signature) and returns what it
/// says: `agent_id`, `org`, `region`, `updated_at`, `signer`, `cid`, `card`, `removed`
/// (true for a signed removal, whose `card` is empty), `status` (`active`, `deprecated` or
/// `removed`) and `superseded_by` (a deprecated agent's successor, or `None`). Which keys may
/// sign for an organisation is the acceptance rule's question (`Snapshot.accept`).
#[pyfunction]
fn verify_manifest<'py>(py: Python<'py>, block: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    let manifest = Manifest::decode(block).map_err(|e| input_error(format!("manifest: {e}")))?;
    manifest
        .verify_signature()
        .map_err(|e| SignatureError::new_err(format!("manifest: {e}")))?;
    manifest_dict(py, &manifest, &meridian_registry::ids::dag_cbor_cid(block))
}

/// A snapshot (a signed commit and every block it reaches) that passed verification.
#[pyclass(module = "meridian._native", frozen)]
struct Snapshot {
    inner: Arc<RegistrySnapshot>,
}

fn verify_options(
    now: Option<i64>,
    publisher: Option<&str>,
    after: Option<&Snapshot>,
) -> PyResult<VerifyOptions> {
    Ok(VerifyOptions {
        now,
        expected_publisher: publisher.map(|d| public_key(d, "publisher")).transpose()?,
        previous: after.map(|old| (old.inner.commit_cid, old.inner.commit.clone())),
        ..VerifyOptions::default()
    })
}

#[pymethods]
impl Snapshot {
    /// Reads and verifies a CAR snapshot (bytes or a path): every block's hash, the commit's
    /// signature, the tree, every manifest's signature, the limits. `now` (unix seconds)
    /// enables the expiry checks; `publisher` (did:key) is the node it must come from;
    /// `after` is the older snapshot this one must succeed (rollback, linkage, equivocation),
    /// and also supplies the blocks a delta leaves out.
    #[staticmethod]
    #[pyo3(signature = (source, *, now=None, publisher=None, after=None))]
    fn open(
        py: Python<'_>,
        source: &Bound<'_, PyAny>,
        now: Option<i64>,
        publisher: Option<&str>,
        after: Option<&Snapshot>,
    ) -> PyResult<Self> {
        let bytes = read_source(source, "snapshot")?;
        let options = verify_options(now, publisher, after)?;
        let base = after.map_or_else(MemoryStore::new, |old| MemoryStore::from(&*old.inner));
        let snapshot = py
            .detach(
                move || -> Result<RegistrySnapshot, snapshot::SnapshotError> {
                    let contents = snapshot::read_car(&bytes[..], options.limits)?;
                    let verified = snapshot::verify(&contents, &base, &options)?;
                    let mut blocks: HashMap<Cid, Arc<[u8]>> = contents.blocks.into_iter().collect();
                    // A delta's unchanged manifests come from the older snapshot.
                    for (_, cid) in verified.tree.entries() {
                        if !blocks.contains_key(&cid)
                            && let Ok(Some(block)) =
                                meridian_registry::store::BlockStore::get(&base, &cid)
                        {
                            blocks.insert(cid, block);
                        }
                    }
                    Ok(RegistrySnapshot {
                        commit: verified.commit,
                        commit_cid: verified.commit_cid,
                        tree: verified.tree,
                        blocks,
                    })
                },
            )
            .map_err(snapshot_error)?;
        Ok(Self {
            inner: Arc::new(snapshot),
        })
    }

    /// The commit's CID (the CAR's root).
    #[getter]
    fn root(&self) -> String {
        self.inner.commit_cid.to_string()
    }

    /// The registry tree's root CID.
    #[getter]
    fn data(&self) -> String {
        self.inner.commit.body.data.to_string()
    }

    /// The publishing node's did:key.
    #[getter]
    fn publisher(&self) -> String {
        self.inner.commit.body.publisher.to_did()
    }

    /// The commit's sequence number.
    #[getter]
    fn seq(&self) -> u64 {
        self.inner.commit.body.seq
    }

    /// The previous commit's CID, or `None` for a publisher's first.
    #[getter]
    fn prev(&self) -> Option<String> {
        self.inner.commit.body.prev.map(|c| c.to_string())
    }

    /// Unix seconds the commit was made.
    #[getter]
    fn created_at(&self) -> i64 {
        self.inner.commit.body.created_at
    }

    /// Unix seconds after which the commit is refused.
    #[getter]
    fn expires_at(&self) -> i64 {
        self.inner.commit.body.expires_at
    }

    /// Agents in the registry.
    fn __len__(&self) -> usize {
        self.inner.tree.len()
    }

    /// `root`, `data`, `publisher`, `seq`, `prev`, `created_at`, `expires_at`, `agents` and
    /// `blocks`, as `meridian snapshot inspect --json` gives them.
    fn inspect<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("root", self.root())?;
        dict.set_item("data", self.data())?;
        dict.set_item("publisher", self.publisher())?;
        dict.set_item("seq", self.seq())?;
        dict.set_item("prev", self.prev())?;
        dict.set_item("created_at", self.created_at())?;
        dict.set_item("expires_at", self.expires_at())?;
        dict.set_item("agents", self.inner.tree.len())?;
        dict.set_item("blocks", self.inner.blocks.len())?;
        Ok(dict)
    }

    /// Every agent, in key order, as `verify_manifest` describes one.
    fn agents<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for (key, cid) in self.inner.tree.entries() {
            let manifest = self.manifest_at(&key, &cid)?;
            list.append(manifest_dict(py, &manifest, &cid)?)?;
        }
        Ok(list)
    }

    /// One agent by its key (`org/name`), or `None`.
    fn get<'py>(&self, py: Python<'py>, agent_id: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(cid) = self.inner.tree.get(agent_id.as_bytes()) else {
            return Ok(None);
        };
        let manifest = self.manifest_at(agent_id.as_bytes(), &cid)?;
        Ok(Some(manifest_dict(py, &manifest, &cid)?))
    }

    /// What changed since `older`: `added`, `removed` and `changed` agent keys (a signed
    /// removal counts as removed; an agent published again after one, as added).
    fn diff<'py>(&self, py: Python<'py>, older: &Snapshot) -> PyResult<Bound<'py, PyDict>> {
        let diff = self.inner.agent_diff(&older.inner);
        let dict = PyDict::new(py);
        dict.set_item("added", diff.added)?;
        dict.set_item("removed", diff.removed)?;
        dict.set_item("changed", diff.changed)?;
        Ok(dict)
    }

    /// Runs the acceptance rule over every agent: `roots` is the trust root chain (oldest
    /// first, as bytes or paths), `attestations` the attestation, revocation and key-rotation
    /// documents, `policy` the policy bundle. Returns `accepted` (agent keys), `rejected`
    /// (agent key -> every reason) and `skipped` (documents that did not verify, with why).
    #[pyo3(signature = (roots, attestations=Vec::new(), policy=None, *, now))]
    fn accept<'py>(
        &self,
        py: Python<'py>,
        roots: Vec<Bound<'py, PyAny>>,
        attestations: Vec<Bound<'py, PyAny>>,
        policy: Option<Bound<'py, PyAny>>,
        now: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let root = trusted_root(&roots, now)?;
        let (set, skipped) = attestation_set(&attestations, &root, now)?;
        let bundle = match policy {
            None => None,
            Some(source) => Some(verified_policy(
                &read_source(&source, "policy")?,
                &root,
                now,
            )?),
        };
        let view = GovernanceView {
            attestations: &set,
            policy: bundle.as_ref(),
        };
        let accepted = PyList::empty(py);
        let rejected = PyDict::new(py);
        for (key, cid) in self.inner.tree.entries() {
            let manifest = self.manifest_at(&key, &cid)?;
            let agent = String::from_utf8_lossy(&key).into_owned();
            match accept(view, &manifest, &self.inner.commit.body.publisher, now) {
                Ok(()) => accepted.append(agent)?,
                Err(reasons) => rejected.set_item(
                    agent,
                    reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                )?,
            }
        }
        let dict = PyDict::new(py);
        dict.set_item("root_version", root.current().body.version)?;
        dict.set_item("policy_version", bundle.as_ref().map(|p| p.body.version))?;
        dict.set_item("accepted", accepted)?;
        dict.set_item("rejected", rejected)?;
        dict.set_item("skipped", skipped)?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        format!(
            "Snapshot(root={}, publisher={}, seq={}, agents={})",
            self.root(),
            self.publisher(),
            self.seq(),
            self.inner.tree.len()
        )
    }
}

impl Snapshot {
    fn manifest_at(&self, key: &[u8], cid: &Cid) -> PyResult<Manifest> {
        let agent = String::from_utf8_lossy(key);
        let block =
            self.inner.blocks.get(cid).ok_or_else(|| {
                snapshot_error(snapshot::SnapshotError::MissingBlock { cid: *cid })
            })?;
        Manifest::decode(block).map_err(|e| input_error(format!("{agent}: {e}")))
    }
}

/// A trusted root from a chain of root documents, oldest first; the newest must be fresh.
fn trusted_root(roots: &[Bound<'_, PyAny>], now: i64) -> PyResult<TrustedRoot> {
    let blocks: Vec<Vec<u8>> = roots
        .iter()
        .map(|source| read_source(source, "root"))
        .collect::<PyResult<_>>()?;
    let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
    TrustedRoot::from_chain(&refs, now, ExpiryCheck::Enforce).map_err(|error| match error {
        RootChainError::Empty => input_error(error.to_string()),
        other => governance_error(other.to_string()),
    })
}

/// The attestation set of `sources` (see `AttestationSet::from_documents`); documents that
/// do not verify are skipped and reported.
fn attestation_set(
    sources: &[Bound<'_, PyAny>],
    root: &TrustedRoot,
    now: i64,
) -> PyResult<(AttestationSet, Vec<String>)> {
    let blocks: Vec<Vec<u8>> = sources
        .iter()
        .map(|source| read_source(source, "attestation"))
        .collect::<PyResult<_>>()?;
    let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
    let (set, skipped) = AttestationSet::from_documents(&refs, root, now);
    let skipped = skipped
        .into_iter()
        .map(|s| format!("document #{}: {}", s.index + 1, s.reason))
        .collect();
    Ok((set, skipped))
}

fn verified_policy(bytes: &[u8], root: &TrustedRoot, now: i64) -> PyResult<PolicyBundle> {
    let bundle =
        PolicyBundle::decode(bytes).map_err(|e| governance_error(format!("policy: {e}")))?;
    bundle
        .verify(root, now)
        .map_err(|e| governance_error(format!("policy: {e}")))?;
    Ok(bundle)
}

/// Verifies a chain of trust root documents (oldest first; each version signed by thresholds
/// of the old and new root keys; the newest fresh at `now`). Returns `version`, `id`,
/// `expires_at` and the keys of every role.
#[pyfunction]
#[pyo3(signature = (roots, *, now))]
fn verify_root_chain<'py>(
    py: Python<'py>,
    roots: Vec<Bound<'py, PyAny>>,
    now: i64,
) -> PyResult<Bound<'py, PyDict>> {
    let root = trusted_root(&roots, now)?;
    let current = root.current();
    let dict = PyDict::new(py);
    dict.set_item("version", current.body.version)?;
    dict.set_item("id", current.id().to_string())?;
    dict.set_item("expires_at", current.body.expires_at)?;
    let roles = PyDict::new(py);
    for (name, set) in &current.body.roles {
        let role = PyDict::new(py);
        role.set_item(
            "keys",
            set.keys.iter().map(PublicKey::to_did).collect::<Vec<_>>(),
        )?;
        role.set_item("threshold", set.threshold)?;
        roles.set_item(name.as_str(), role)?;
    }
    dict.set_item("roles", roles)?;
    Ok(dict)
}

fn subject_text(subject: &Subject) -> String {
    match subject {
        Subject::Org(org) => format!("org:{org}"),
        Subject::Agent(agent) => format!("agent:{agent}"),
        Subject::Key(key) => format!("key:{}", key.to_did()),
        Subject::Node(key) => format!("node:{}", key.to_did()),
        Subject::Document(cid) => format!("cid:{cid}"),
    }
}

/// Verifies an attestation against the trust root chain `roots` (threshold of the `attest`
/// role, validity window at `now`), and that none of `revocations` revokes it. Returns `id`,
/// `subject` (`org:ID`, `agent:ORG/NAME`, `key:DID`, `node:DID` or `cid:CID`), `type`,
/// `issued_at` and `expires_at`.
#[pyfunction]
#[pyo3(signature = (attestation, roots, revocations=Vec::new(), *, now))]
fn verify_attestation<'py>(
    py: Python<'py>,
    attestation: Bound<'py, PyAny>,
    roots: Vec<Bound<'py, PyAny>>,
    revocations: Vec<Bound<'py, PyAny>>,
    now: i64,
) -> PyResult<Bound<'py, PyDict>> {
    let root = trusted_root(&roots, now)?;
    let document = Attestation::decode(&read_source(&attestation, "attestation")?)
        .map_err(|e| governance_error(format!("attestation: {e}")))?;
    document
        .verify(&root, now, 300)
        .map_err(|e| governance_error(format!("attestation: {e}")))?;
    let mut set = AttestationSet::new();
    for (index, source) in revocations.iter().enumerate() {
        let revocation = Attestation::decode(&read_source(source, "revocation")?)
            .map_err(|e| governance_error(format!("revocation #{}: {e}", index + 1)))?;
        set.add(revocation, &root, now)
            .map_err(|e| governance_error(format!("revocation #{}: {e}", index + 1)))?;
    }
    let id = document.id();
    if set.is_revoked(&id) {
        return Err(errors::RevokedError::new_err(format!(
            "attestation {id} is revoked"
        )));
    }
    let dict = PyDict::new(py);
    dict.set_item("id", id.to_string())?;
    dict.set_item("subject", subject_text(&document.body.subject))?;
    dict.set_item("type", &document.body.kind)?;
    dict.set_item("issued_at", document.body.issued_at)?;
    dict.set_item("expires_at", document.body.expires_at)?;
    Ok(dict)
}

/// Verifies a policy bundle against the trust root chain `roots` (threshold of the `policy`
/// role, validity at `now`). Returns `version`, `id`, the lists, the rate tiers and the hub
/// directory.
#[pyfunction]
#[pyo3(signature = (bundle, roots, *, now))]
fn verify_policy<'py>(
    py: Python<'py>,
    bundle: Bound<'py, PyAny>,
    roots: Vec<Bound<'py, PyAny>>,
    now: i64,
) -> PyResult<Bound<'py, PyDict>> {
    let root = trusted_root(&roots, now)?;
    let policy = verified_policy(&read_source(&bundle, "policy")?, &root, now)?;
    let body = &policy.body;
    let dict = PyDict::new(py);
    dict.set_item("version", body.version)?;
    dict.set_item("id", policy.id().to_string())?;
    dict.set_item("issued_at", body.issued_at)?;
    dict.set_item("expires_at", body.expires_at)?;
    dict.set_item("allow_orgs", body.allow_orgs.clone())?;
    dict.set_item("deny_orgs", body.deny_orgs.clone())?;
    dict.set_item("deny_agents", body.deny_agents.clone())?;
    dict.set_item("deny_node_keys", body.deny_node_keys.clone())?;
    dict.set_item("allow_node_keys", body.allow_node_keys.clone())?;
    let tiers = PyList::empty(py);
    for tier in &body.rate_limits {
        let item = PyDict::new(py);
        item.set_item("scope", &tier.scope)?;
        item.set_item("requests_per_second", tier.requests_per_second)?;
        item.set_item("burst", tier.burst)?;
        tiers.append(item)?;
    }
    dict.set_item("rate_limits", tiers)?;
    let hubs = PyList::empty(py);
    for hub in &body.hubs {
        let item = PyDict::new(py);
        item.set_item("region", &hub.region)?;
        item.set_item("address", &hub.address)?;
        item.set_item("key", hub.key.to_did())?;
        item.set_item("http", hub.http_url())?;
        hubs.append(item)?;
    }
    dict.set_item("hubs", hubs)?;
    Ok(dict)
}

/// Verifies a checkpoint (a C2SP signed note) signed by the log key `log_key` (did:key), and
/// counts the valid cosignatures of `witnesses` (name -> did:key); fewer than
/// `witness_threshold` is an error. Returns `origin`, `size`, `root` (hex) and `witnesses`.
#[pyfunction]
#[pyo3(signature = (note, log_key, witnesses=HashMap::new(), witness_threshold=0))]
fn verify_checkpoint<'py>(
    py: Python<'py>,
    note: &str,
    log_key: &str,
    witnesses: HashMap<String, String>,
    witness_threshold: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let parsed =
        SignedNote::parse(note).map_err(|e| governance_error(format!("checkpoint: {e}")))?;
    let checkpoint = Checkpoint::parse_body(&parsed.body)
        .map_err(|e| governance_error(format!("checkpoint: {e}")))?;
    parsed
        .verify(&checkpoint.origin, &public_key(log_key, "log_key")?)
        .map_err(|e| SignatureError::new_err(format!("checkpoint: {e}")))?;
    let mut names: Vec<&String> = witnesses.keys().collect();
    names.sort();
    let mut cosigned = Vec::new();
    for name in names {
        let key = public_key(&witnesses[name], &format!("witness {name}"))?;
        if parsed.verify_cosignature(name, &key).is_ok() {
            cosigned.push(name.clone());
        }
    }
    if cosigned.len() < witness_threshold {
        return Err(GovernanceError::new_err(format!(
            "checkpoint: {} of the required {witness_threshold} witness cosignatures",
            cosigned.len()
        )));
    }
    let dict = PyDict::new(py);
    dict.set_item("origin", &checkpoint.origin)?;
    dict.set_item("size", checkpoint.size)?;
    dict.set_item(
        "root",
        checkpoint
            .root
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )?;
    dict.set_item("witnesses", cosigned)?;
    Ok(dict)
}

/// The extension module.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(module)?;
    module.add_class::<Keypair>()?;
    module.add_class::<Snapshot>()?;
    module.add_function(wrap_pyfunction!(sign_manifest, module)?)?;
    module.add_function(wrap_pyfunction!(sign_removal, module)?)?;
    module.add_function(wrap_pyfunction!(sign_deprecation, module)?)?;
    module.add_function(wrap_pyfunction!(verify_manifest, module)?)?;
    module.add_function(wrap_pyfunction!(verify_root_chain, module)?)?;
    module.add_function(wrap_pyfunction!(verify_attestation, module)?)?;
    module.add_function(wrap_pyfunction!(verify_policy, module)?)?;
    module.add_function(wrap_pyfunction!(verify_checkpoint, module)?)?;
    module.add("CAR_BYTES_MAX", Limits::DEFAULT.car_bytes_max)?;
    Ok(())
}

//! The governance commands: `gov`, `org`, `attest`, `policy` and `checkpoint`.
//!
//! Documents are DAG-CBOR files (`.cbor`). Commands that create a document write it unsigned
//! (or signed only by the keys that must prove possession), and every admin adds a signature
//! with `meridian gov sign DOC --key KEY`, so offline keys never need to be in one place.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use meridian_governance::accept::{GovernanceView, accept};
use meridian_governance::attestation::{
    Attestation, AttestationSet, KIND_KEY_REVOKED, KeyRotation, Registration, Subject,
};
use meridian_governance::checkpoint::{
    Checkpoint, Hash, MerkleLog, SignedNote, Witness, head_leaf, verify_inclusion,
};
use meridian_governance::document::{KeySet, SignedDocument};
use meridian_governance::domain::DomainProof;
use meridian_governance::keylog::{KeyChainAudit, KeyLogProof, key_event_leaf};
use meridian_governance::policy::{HubEntry, PolicyBody, PolicyBundle, RateTier};
use meridian_governance::root::{
    ExpiryCheck, RoleName, RootBody, RootChainError, RootDocument, TrustedRoot,
};
use meridian_registry::Cid;
use meridian_registry::cbor::{self, MapReader, Value};
use meridian_registry::keys::PublicKey;
use meridian_registry::manifest::{Manifest, ManifestBody};
use serde_json::json;

use crate::command::{Rejected, Report, parse_duration_secs};
use crate::data::load_key;

/// `meridian gov …`
#[derive(Debug, Subcommand)]
pub enum GovCommand {
    /// Create version 1 of a trust root, unsigned; root admins then sign it with `gov sign`.
    ///
    /// Example: meridian gov init --root-key a1.key --root-key a2.key --root-threshold 2 --attest-key at.key --policy-key p.key --witness-key w.key --out root.1.cbor
    Init {
        /// Roles, keys and thresholds.
        #[command(flatten)]
        roles: RoleArgs,
        /// How long it stays valid (e.g. 365d).
        #[arg(long, default_value = "365d", value_parser = parse_duration_secs)]
        expires_in: i64,
        /// Where to write the root document.
        #[arg(long)]
        out: PathBuf,
    },
    /// Create the next root version, unsigned; a threshold of the old and of the new root keys
    /// must sign it. Roles not given keep their keys.
    ///
    /// Example: meridian gov rotate --current root.1.cbor --root-key a1.key --root-key a2.key --root-key a4.key --root-threshold 2 --out root.2.cbor
    Rotate {
        /// The root now in force.
        #[arg(long)]
        current: PathBuf,
        /// Roles to change.
        #[command(flatten)]
        roles: RoleArgs,
        /// How long the new version stays valid.
        #[arg(long, default_value = "365d", value_parser = parse_duration_secs)]
        expires_in: i64,
        /// Where to write the new root document.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add your signature to a governance document (root, attestation, policy bundle). A key
    /// the document's role does not list is refused: a root version takes keys of its own root
    /// role, or of the version it succeeds (give that with --root); attestations and policy
    /// bundles are checked against the attest and policy roles when --root gives the root.
    ///
    /// Example: meridian gov sign root.2.cbor --key root3.key --root root.1.cbor
    Sign {
        /// The document.
        document: PathBuf,
        /// Your secret key file.
        #[arg(long, required = true)]
        key: PathBuf,
        /// The root chain in force (oldest first): checks the signer holds the role.
        #[arg(long = "root")]
        roots: Vec<PathBuf>,
        /// Sign even with a key the role does not list (the signature will not count).
        #[arg(long)]
        force: bool,
    },
    /// Check a root chain: a trusted root, then every newer version in order.
    ///
    /// Example: meridian gov verify root.1.cbor root.2.cbor
    Verify {
        /// The root you trust (obtained out of band).
        trusted: PathBuf,
        /// Newer versions, oldest first.
        chain: Vec<PathBuf>,
        /// Accept an expired final root (recovery only; logged).
        #[arg(long)]
        allow_expired: bool,
    },
}

/// Keys and thresholds of the four roles. Keys are did:keys or key files.
#[derive(Debug, Args, Default)]
pub struct RoleArgs {
    /// A root key (repeat for each; at least one with `gov init`).
    #[arg(long = "root-key")]
    pub root_keys: Vec<String>,
    /// Root signatures required: required with more than one --root-key, 1 with one.
    #[arg(long)]
    pub root_threshold: Option<usize>,
    /// An attest key (repeat for each).
    #[arg(long = "attest-key")]
    pub attest_keys: Vec<String>,
    /// Attest signatures required: required with more than one --attest-key, 1 with one.
    #[arg(long)]
    pub attest_threshold: Option<usize>,
    /// A policy key (repeat for each; at least one with `gov init`).
    #[arg(long = "policy-key")]
    pub policy_keys: Vec<String>,
    /// Policy signatures required: required with more than one --policy-key, 1 with one.
    #[arg(long)]
    pub policy_threshold: Option<usize>,
    /// A witness key (repeat for each; at least one with `gov init`).
    #[arg(long = "witness-key")]
    pub witness_keys: Vec<String>,
    /// Witness cosignatures required: required with more than one --witness-key, 1 with one.
    #[arg(long)]
    pub witness_threshold: Option<usize>,
}

/// `meridian org …`
#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Show an organisation's key history as a node holds it: its verification, each
    /// rotation and revocation in order, the keys after each, and each document's position in
    /// the governance key log (from the key-log proofs the node received).
    ///
    /// Example: meridian org keys acme --data ./meridian-data
    Keys {
        /// The organisation.
        org: String,
        /// The node's data directory.
        #[arg(long, default_value = "./meridian-data")]
        data: PathBuf,
    },
    /// Re-sign an organisation's agents on a node under a new key (after a rotation removed
    /// the key they were signed with, they leave the federated view): reads the node's own
    /// snapshot, signs each of the organisation's cards again with --org-key, and publishes
    /// them with the organisation's token.
    ///
    /// Example: meridian org resign --node http://127.0.0.1:7700 --token mrd_... --org acme --org-key acme-2.key
    Resign {
        /// The node's URL.
        #[arg(long)]
        node: String,
        /// The organisation's publish token on that node.
        #[arg(long, env = "MERIDIAN_TOKEN", hide_env_values = true)]
        token: String,
        /// The organisation.
        #[arg(long)]
        org: String,
        /// The key file to sign with (a key of the organisation's current set).
        #[arg(long)]
        org_key: PathBuf,
    },
    /// Create a registration request, signed by every key it lists (proof of possession).
    ///
    /// Example: meridian org request --org acme --domain acme.example --contact ops@acme.example --key acme.key --out acme.request.cbor
    Request {
        /// The organisation id (a-z, 0-9, inner -).
        #[arg(long)]
        org: String,
        /// Its domain.
        #[arg(long)]
        domain: String,
        /// How to reach its operators.
        #[arg(long)]
        contact: String,
        /// A secret key file of the organisation (repeat for each).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Where to write the request.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a request and write the `org.verified` attestation approving it (unsigned).
    ///
    /// Example: meridian org approve acme.request.cbor --out acme.verified.cbor
    Approve {
        /// The request.
        request: PathBuf,
        /// How long the verification holds.
        #[arg(long, default_value = "365d", value_parser = parse_duration_secs)]
        expires_in: i64,
        /// Where to write the attestation.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a request and write an `org.rejected` attestation with the reason (unsigned).
    ///
    /// Example: meridian org reject acme.request.cbor --reason "domain not proven" --out acme.rejected.cbor
    Reject {
        /// The request.
        request: PathBuf,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Where to write the attestation.
        #[arg(long)]
        out: PathBuf,
    },
    /// Rotate an organisation's keys: signed by a current key and every added key.
    ///
    /// Example: meridian org rotate-key --org acme --current-key acme-1.key --add-key acme-2.key --remove-key did:key:z6Mk... --out acme.rotation.cbor
    RotateKey {
        /// The organisation.
        #[arg(long)]
        org: String,
        /// A key file the organisation holds now (signs the rotation).
        #[arg(long, required = true)]
        current_key: PathBuf,
        /// The organisation's whole current key set (did:key or key file, repeat for each), which
        /// the rotation names as the set it replaces. Default: the --current-key alone.
        #[arg(long = "current-set")]
        current_set: Vec<String>,
        /// A new key file to add (repeat for each).
        #[arg(long = "add-key")]
        add_keys: Vec<PathBuf>,
        /// A key (did:key or file) to remove (repeat for each).
        #[arg(long = "remove-key")]
        remove_keys: Vec<String>,
        /// Where to write the rotation.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the proof that the organisation controls a domain, to serve at
    /// `https://DOMAIN/.well-known/meridian-org.json`: its id, its current key set and an
    /// expiry, signed by the keys given (at least the organisation's threshold of its set).
    /// Then an admin checks it with `meridian org verify-domain`.
    ///
    /// Example: meridian org bind-domain --org acme --domain acme.example --key acme.key --out meridian-org.json
    BindDomain {
        /// The organisation.
        #[arg(long)]
        org: String,
        /// The domain (lowercase; punycode for other scripts).
        #[arg(long)]
        domain: String,
        /// A key file of the organisation's current set to sign with (repeat for each).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// The organisation's whole current key set (did:key or key file, repeat for each).
        /// Default: the --key keys.
        #[arg(long = "current-set")]
        current_set: Vec<String>,
        /// How long the proof holds (at most 366d; serve a new one before it ends).
        #[arg(long, default_value = "90d", value_parser = parse_duration_secs)]
        expires_in: i64,
        /// Where to write the proof file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Fetch an organisation's domain proof over HTTPS, check it against the organisation's
    /// current keys (from its org.verified attestation and rotations), and write the
    /// `org.domain` attestation (unsigned: attest admins sign it with `gov sign`).
    ///
    /// Example: meridian org verify-domain acme acme.example --root root.1.cbor --attestations ./attestations --out acme.domain.cbor
    VerifyDomain {
        /// The organisation.
        org: String,
        /// The domain.
        domain: String,
        /// Trust root (repeat for newer versions, in order).
        #[arg(long = "root", required = true)]
        roots: Vec<PathBuf>,
        /// Directory of attestation and key-rotation documents (*.cbor) holding the
        /// organisation's verification.
        #[arg(long, required = true)]
        attestations: PathBuf,
        /// Reach DOMAIN at this address instead of through DNS (DOMAIN=IP:PORT, repeat).
        #[arg(long = "resolve", value_parser = crate::daemon::domains::parse_resolve)]
        resolve: Vec<(String, std::net::SocketAddr)>,
        /// An extra trusted root certificate, PEM (repeat), beside the platform's.
        #[arg(long = "ca-cert")]
        ca_certs: Vec<PathBuf>,
        /// Where to write the attestation.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a `key.revoked` attestation (unsigned): the key's manifests signed from
    /// `--revoked-at` on are refused.
    ///
    /// Example: meridian org revoke-key --org acme --key did:key:z6Mk... --revoked-at 1795460000 --out acme.key-revoked.cbor
    RevokeKey {
        /// The organisation.
        #[arg(long)]
        org: String,
        /// The key to revoke (did:key or file).
        #[arg(long)]
        key: String,
        /// Unix seconds from which it is revoked (default now; set earlier for a compromise).
        #[arg(long)]
        revoked_at: Option<i64>,
        /// How long the revocation is kept.
        #[arg(long, default_value = "3650d", value_parser = parse_duration_secs)]
        expires_in: i64,
        /// Where to write the attestation.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `meridian attest …`
#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Write an attestation (unsigned); attest admins sign it with `attest cosign`.
    ///
    /// Example: meridian attest issue --subject node:did:key:z6Mk... --type node.verified --out node-eu-1.cbor
    Issue {
        /// `org:ID`, `agent:ORG/NAME`, `key:DID`, `node:DID` or `cid:CID`.
        #[arg(long)]
        subject: String,
        /// The claim type, e.g. `org.verified`.
        #[arg(long = "type")]
        kind: String,
        /// A claim `name=value` (repeat; values are text, or integers when they parse as one).
        #[arg(long = "claim")]
        claims: Vec<String>,
        /// How long it holds.
        #[arg(long, default_value = "365d", value_parser = parse_duration_secs)]
        expires_in: i64,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add your signature to an attestation (a second admin reaching the threshold).
    ///
    /// Example: meridian attest cosign acme.verified.cbor --key attest.key
    Cosign {
        /// The attestation.
        attestation: PathBuf,
        /// Your secret key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Write the revocation of an attestation (unsigned).
    ///
    /// Example: meridian attest revoke acme.verified.cbor --reason "key leaked" --out acme.revocation.cbor
    Revoke {
        /// The attestation to revoke.
        attestation: PathBuf,
        /// Why.
        #[arg(long)]
        reason: String,
        /// How long the revocation is kept.
        #[arg(long, default_value = "3650d", value_parser = parse_duration_secs)]
        expires_in: i64,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an attestation under a trust root.
    ///
    /// Example: meridian attest verify acme.verified.cbor --root root.1.cbor
    Verify {
        /// The attestation.
        attestation: PathBuf,
        /// The trust root (and its newer versions, in order, with --root repeated).
        #[arg(long = "root", required = true)]
        roots: Vec<PathBuf>,
    },
}

/// `meridian policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Turn a hand-written TOML policy into a bundle signed with your policy key.
    ///
    /// Example: meridian policy sign policy.toml --key policy.key --out policy.1.cbor
    Sign {
        /// The policy TOML file.
        policy: PathBuf,
        /// Your policy key file.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the bundle.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a policy bundle under a trust root.
    ///
    /// Example: meridian policy verify policy.1.cbor --root root.1.cbor
    Verify {
        /// The bundle.
        bundle: PathBuf,
        /// The trust root (and its newer versions, in order, with --root repeated).
        #[arg(long = "root", required = true)]
        roots: Vec<PathBuf>,
    },
}

/// `meridian checkpoint …`
#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Append to a log file: a verified snapshot's head (publisher, seq, commit), or a key-set
    /// document (org.verified, key.revoked or a key rotation) to the key log.
    ///
    /// Example: meridian checkpoint append --log keys.log --document acme.rotation.cbor
    Append {
        /// The log file (one hex leaf hash per line; created if missing).
        #[arg(long)]
        log: PathBuf,
        /// The snapshot whose head to append.
        #[arg(
            long,
            required_unless_present = "document",
            conflicts_with = "document"
        )]
        snapshot: Option<PathBuf>,
        /// A key-set document to append to the key log.
        #[arg(long)]
        document: Option<PathBuf>,
    },
    /// Write a key-log proof for a document: its place in the log and the co-signed
    /// checkpoint that includes it, what a node with governance.require_key_log takes on
    /// POST /api/v1/governance/key-proofs.
    ///
    /// Example: meridian checkpoint prove-document --log keys.log --document acme.verified.cbor --note cp.note --out acme.verified.proof
    ProveDocument {
        /// The key log file.
        #[arg(long)]
        log: PathBuf,
        /// The document (appended to the log before the checkpoint was signed).
        #[arg(long)]
        document: PathBuf,
        /// The co-signed checkpoint note of the log.
        #[arg(long)]
        note: PathBuf,
        /// Where to write the proof.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check an organisation's key history in the key log: every change must be its first
    /// verification, a rotation signed by its previous keys, or a revocation. Exits 1 with the
    /// change at fault otherwise (a key added behind the organisation's back).
    ///
    /// Example: meridian checkpoint monitor --log keys.log --documents keydocs/ --root root.1.cbor --org acme
    Monitor {
        /// The key log file.
        #[arg(long)]
        log: PathBuf,
        /// A directory of the log's documents (.cbor files, matched to the log by id).
        #[arg(long)]
        documents: PathBuf,
        /// The trusted root, then newer versions.
        #[arg(long = "root", required = true)]
        roots: Vec<PathBuf>,
        /// The organisation to watch.
        #[arg(long)]
        org: String,
    },
    /// Sign the log's current checkpoint as a C2SP signed note.
    ///
    /// Example: meridian checkpoint sign --log heads.log --origin gov.example/heads --key log.key --out cp.note
    Sign {
        /// The log file.
        #[arg(long)]
        log: PathBuf,
        /// The log's origin (its name, e.g. gov.example/heads).
        #[arg(long)]
        origin: String,
        /// The log key file.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the note.
        #[arg(long)]
        out: PathBuf,
    },
    /// Co-sign a checkpoint as a witness, after checking it is consistent with the last one
    /// this witness co-signed (kept in --state).
    ///
    /// Example: meridian checkpoint cosign cp.note --name w1 --key w1.key --log-key did:key:z6Mk... --state w1.state --proof consistency.txt
    Cosign {
        /// The signed checkpoint note (co-signed in place).
        note: PathBuf,
        /// The witness's name.
        #[arg(long)]
        name: String,
        /// The witness key file.
        #[arg(long)]
        key: PathBuf,
        /// The log's public key (did:key or file).
        #[arg(long)]
        log_key: String,
        /// The witness state file (its last co-signed checkpoint).
        #[arg(long)]
        state: PathBuf,
        /// Consistency proof from the last co-signed size (from `checkpoint prove --old-size`).
        #[arg(long)]
        proof: Option<PathBuf>,
    },
    /// Verify a checkpoint note: the log's signature and a threshold of witness cosignatures.
    ///
    /// Example: meridian checkpoint verify cp.note --log-key did:key:z6Mk... --witness w1=did:key:z6Mk... --witness-threshold 1
    Verify {
        /// The note.
        note: PathBuf,
        /// The log's public key (did:key or file).
        #[arg(long)]
        log_key: String,
        /// A witness as NAME=DID (repeat for each).
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// Cosignatures required.
        #[arg(long, default_value_t = 0)]
        witness_threshold: usize,
    },
    /// Print an inclusion proof (--index) or a consistency proof (--old-size), base64 per line.
    ///
    /// Example: meridian checkpoint prove --log heads.log --old-size 41
    Prove {
        /// The log file.
        #[arg(long)]
        log: PathBuf,
        /// Leaf index for an inclusion proof.
        #[arg(long)]
        index: Option<u64>,
        /// Older size for a consistency proof.
        #[arg(long)]
        old_size: Option<u64>,
        /// Tree size to prove against (default: the whole log).
        #[arg(long)]
        size: Option<u64>,
    },
}

/// Reads a key argument: a did:key, or a key file whose public half is used.
fn public_key_arg(text: &str) -> Result<PublicKey> {
    if text.starts_with("did:") {
        return PublicKey::from_did(text).with_context(|| format!("key `{text}`"));
    }
    Ok(load_key(Path::new(text))?.public())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::data::write_file(path, bytes)
}

fn rejected(error: impl std::fmt::Display, path: &Path) -> anyhow::Error {
    Rejected(format!("{}: {error}", path.display())).into()
}

fn key_set(keys: &[String], threshold: Option<usize>, role: &str) -> Result<Option<KeySet>> {
    if keys.is_empty() {
        if threshold.is_some() {
            bail!("--{role}-threshold given without any --{role}-key");
        }
        return Ok(None);
    }
    let keys = keys
        .iter()
        .map(|k| public_key_arg(k))
        .collect::<Result<Vec<_>>>()?;
    // With several keys, an unstated threshold of one would let any single key act alone:
    // the operator says what they mean.
    let threshold = match threshold {
        Some(threshold) => threshold,
        None if keys.len() == 1 => 1,
        None => bail!(
            "--{role}-threshold is required with {} --{role}-key values (a threshold of 1 lets any one of them sign alone; give --{role}-threshold 1 if that is meant)",
            keys.len()
        ),
    };
    if threshold == 0 || threshold > keys.len() {
        bail!(
            "--{role}-threshold {threshold} must be between 1 and the {} --{role}-key values given",
            keys.len()
        );
    }
    Ok(Some(KeySet { keys, threshold }))
}

/// Warnings for roles whose threshold lets fewer keys act than the role holds.
fn threshold_warnings(roles: &BTreeMap<RoleName, KeySet>) -> Vec<String> {
    roles
        .iter()
        .filter(|(_, set)| set.threshold < set.keys.len())
        .map(|(role, set)| {
            format!(
                "warning: role `{}` needs {} of its {} keys: {} of them can act without the others",
                role.as_str(),
                set.threshold,
                set.keys.len(),
                set.threshold
            )
        })
        .collect()
}

fn roles_from_args(args: &RoleArgs, base: Option<&RootBody>) -> Result<BTreeMap<RoleName, KeySet>> {
    let mut roles = base.map(|b| b.roles.clone()).unwrap_or_default();
    for (name, keys, threshold) in [
        (RoleName::Root, &args.root_keys, args.root_threshold),
        (RoleName::Attest, &args.attest_keys, args.attest_threshold),
        (RoleName::Policy, &args.policy_keys, args.policy_threshold),
        (
            RoleName::Witness,
            &args.witness_keys,
            args.witness_threshold,
        ),
    ] {
        if let Some(set) = key_set(keys, threshold, name.as_str())? {
            roles.insert(name, set);
        } else if base.is_none() {
            bail!("--{}-key is required (at least one)", name.as_str());
        }
    }
    Ok(roles)
}

/// Loads a trust root chain: the first file is trusted, the rest are walked in order.
fn trusted_root(paths: &[PathBuf], now: i64, expiry: ExpiryCheck) -> Result<TrustedRoot> {
    if paths.is_empty() {
        bail!("no trust root given");
    }
    let blocks: Vec<Vec<u8>> = paths.iter().map(|p| read(p)).collect::<Result<_>>()?;
    let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
    TrustedRoot::from_chain(&refs, now, expiry).map_err(|error| {
        let path = error
            .index()
            .and_then(|i| paths.get(i))
            .unwrap_or(&paths[0]);
        match error {
            RootChainError::Decode { error, .. } => rejected(error, path),
            RootChainError::Rejected { error, .. } => rejected(error, path),
            other => rejected(other, path),
        }
    })
}

/// Reads any governance document's `$type` so `gov sign` can sign whatever it is given.
fn document_kind(bytes: &[u8], path: &Path) -> Result<String> {
    let value = cbor::decode(bytes).map_err(|e| rejected(e, path))?;
    let mut reader = MapReader::new(value).map_err(|e| rejected(e, path))?;
    reader.text("$type").map_err(|e| rejected(e, path))
}

/// Whether `key` may sign a document of `kind`, checked against the roles that count: `Ok` with
/// a warning when nothing could be checked, `Err` naming the role when it does not list the key.
fn signer_role_check(
    kind: &str,
    bytes: &[u8],
    key: &meridian_registry::keys::PublicKey,
    roots: &[PathBuf],
    now: i64,
) -> Result<Option<String>, String> {
    let in_force = if roots.is_empty() {
        None
    } else {
        Some(
            trusted_root(roots, now, ExpiryCheck::AllowExpiredForRecovery)
                .map_err(|e| format!("--root: {e:#}"))?,
        )
    };
    let role_of = |root: &RootBody, role: RoleName| {
        root.roles
            .get(&role)
            .is_some_and(|set| set.keys.contains(key))
    };
    let role = match kind {
        meridian_governance::root::ROOT_TYPE => {
            let document = RootDocument::decode(bytes).map_err(|e| e.to_string())?;
            let own = role_of(&document.body, RoleName::Root);
            let previous = in_force
                .as_ref()
                .is_some_and(|root| role_of(&root.current().body, RoleName::Root));
            if own || previous {
                return Ok(None);
            }
            let hint = if in_force.is_none() {
                "; a key of the version it succeeds signs with --root root.N.cbor"
            } else {
                ""
            };
            return Err(format!(
                "{} is not a root key of version {}, nor of the version given with --root{hint}",
                key.to_did(),
                document.body.version
            ));
        }
        meridian_governance::policy::POLICY_TYPE => RoleName::Policy,
        meridian_governance::attestation::ATTESTATION_TYPE => RoleName::Attest,
        _ => return Ok(None),
    };
    match in_force {
        Some(root) if role_of(&root.current().body, role) => Ok(None),
        Some(root) => Err(format!(
            "{} is not a key of the `{}` role of root version {}",
            key.to_did(),
            role.as_str(),
            root.current().body.version
        )),
        None => Ok(Some(format!(
            "warning: not checked against a root; give --root ROOT to check that the signer holds the `{}` role",
            role.as_str()
        ))),
    }
}

fn sign_document(
    path: &Path,
    key_path: &Path,
    roots: &[PathBuf],
    force: bool,
    now: i64,
) -> Result<Report> {
    let key = load_key(key_path)?;
    let bytes = read(path)?;
    let kind = document_kind(&bytes, path)?;
    let mut document = SignedDocument::decode(&bytes, &kind).map_err(|e| rejected(e, path))?;
    let warning = match signer_role_check(&kind, &bytes, &key.public(), roots, now) {
        Ok(warning) => warning,
        Err(problem) if force => Some(format!("warning: signed anyway (--force): {problem}")),
        Err(problem) => {
            return Err(Rejected(format!(
                "{}: {problem}; nothing written (--force signs anyway, and the signature will not count)",
                path.display()
            ))
            .into());
        }
    };
    document.sign(&key);
    write(path, &document.to_block())?;
    let mut text = format!(
        "signed {} ({kind}) as {}; it has {} signature(s)",
        path.display(),
        key.did(),
        document.signatures.len()
    );
    if let Some(warning) = &warning {
        text.push('\n');
        text.push_str(warning);
    }
    Ok(Report {
        text,
        json: json!({ "document": path, "type": kind, "id": document.id().to_string(), "signer": key.did(), "signatures": document.signatures.len(), "warning": warning }),
    })
}

/// Runs `meridian gov …`.
pub fn run_gov(command: &GovCommand, now: i64) -> Result<Report> {
    match command {
        GovCommand::Init {
            roles,
            expires_in,
            out,
        } => {
            let body = RootBody {
                version: 1,
                created_at: now,
                expires_at: now + expires_in,
                roles: roles_from_args(roles, None)?,
            };
            let warnings = threshold_warnings(&body.roles);
            let root = RootDocument::new(body).map_err(|e| Rejected(e.to_string()))?;
            write(out, &root.to_block())?;
            let mut text = format!(
                "wrote root version 1 to {} (unsigned: root admins sign it with `meridian gov sign {} --key KEY`)",
                out.display(),
                out.display()
            );
            for warning in &warnings {
                text.push('\n');
                text.push_str(warning);
            }
            Ok(Report {
                text,
                json: json!({ "out": out, "version": 1, "id": root.id().to_string(), "warnings": warnings }),
            })
        }
        GovCommand::Rotate {
            current,
            roles,
            expires_in,
            out,
        } => {
            let old = RootDocument::decode(&read(current)?).map_err(|e| rejected(e, current))?;
            let version = old.body.version + 1;
            let body = RootBody {
                version,
                created_at: now,
                expires_at: now + expires_in,
                roles: roles_from_args(roles, Some(&old.body))?,
            };
            let root = RootDocument::new(body).map_err(|e| Rejected(e.to_string()))?;
            write(out, &root.to_block())?;
            Ok(Report {
                text: format!(
                    "wrote root version {version} to {} (unsigned: a threshold of version {}'s root keys and of its own must sign it)",
                    out.display(),
                    version - 1
                ),
                json: json!({ "out": out, "version": version, "id": root.id().to_string() }),
            })
        }
        GovCommand::Sign {
            document,
            key,
            roots,
            force,
        } => sign_document(document, key, roots, *force, now),
        GovCommand::Verify {
            trusted,
            chain,
            allow_expired,
        } => {
            let mut paths = vec![trusted.clone()];
            paths.extend(chain.iter().cloned());
            let expiry = if *allow_expired {
                ExpiryCheck::AllowExpiredForRecovery
            } else {
                ExpiryCheck::Enforce
            };
            let root = trusted_root(&paths, now, expiry)?;
            let body = &root.current().body;
            let roles: serde_json::Map<String, serde_json::Value> = body
                .roles
                .iter()
                .map(|(name, set)| {
                    (
                        name.as_str().to_owned(),
                        json!({ "keys": set.keys.iter().map(|k| k.to_did()).collect::<Vec<_>>(), "threshold": set.threshold }),
                    )
                })
                .collect();
            Ok(Report {
                text: format!(
                    "ok: trust root version {} (expires at {})",
                    body.version,
                    crate::command::utc(body.expires_at)
                ),
                json: json!({ "ok": true, "version": body.version, "expires_at": body.expires_at, "id": root.current().id().to_string(), "roles": roles }),
            })
        }
    }
}

/// Checks a registration request and writes its `org.rejected` attestation (unsigned).
fn org_reject(request: &Path, reason: &str, out: &Path, now: i64) -> Result<Report> {
    let registration =
        Registration::decode_and_verify(&read(request)?).map_err(|e| rejected(e, request))?;
    let claims = [
        ("reason".to_owned(), Value::Text(reason.to_owned())),
        (
            "registration".to_owned(),
            Value::Link(registration.document.id()),
        ),
    ]
    .into();
    let attestation = Attestation::new(
        Subject::Org(registration.org.clone()),
        "org.rejected",
        claims,
        now,
        now + 365 * 86_400,
    )
    .map_err(|e| Rejected(e.to_string()))?;
    write(out, &attestation.to_block())?;
    Ok(Report {
        text: format!(
            "wrote the rejection of `{}` to {}",
            registration.org,
            out.display()
        ),
        json: json!({ "out": out, "org": registration.org, "id": attestation.id().to_string() }),
    })
}

/// Writes an organisation's key rotation, signed by a current key and every added one.
fn org_rotate_key(
    org: &str,
    current_key: &Path,
    current_set: &[String],
    add_keys: &[PathBuf],
    remove_keys: &[String],
    out: &Path,
    now: i64,
) -> Result<Report> {
    let current = load_key(current_key)?;
    let added = add_keys
        .iter()
        .map(|p| load_key(p))
        .collect::<Result<Vec<_>>>()?;
    let removed = remove_keys
        .iter()
        .map(|k| public_key_arg(k))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&_> = added.iter().collect();
    let mut set = current_set
        .iter()
        .map(|k| public_key_arg(k))
        .collect::<Result<Vec<_>>>()?;
    if set.is_empty() {
        set.push(current.public());
    }
    if !set.contains(&current.public()) {
        bail!("--current-key {} is not in --current-set", current.did());
    }
    let rotation = KeyRotation::create(org, &set, &[&current], &refs, &removed, now)
        .map_err(|e| Rejected(e.to_string()))?;
    write(out, &rotation.to_block())?;
    Ok(Report {
        text: format!(
            "wrote key rotation for `{org}` ({} added, {} removed) to {}",
            added.len(),
            removed.len(),
            out.display()
        ),
        json: json!({ "out": out, "org": org, "id": rotation.document.id().to_string() }),
    })
}

/// Writes the `key.revoked` attestation of an organisation key (unsigned).
fn org_revoke_key(
    org: &str,
    key: &str,
    revoked_at: Option<i64>,
    expires_in: i64,
    out: &Path,
    now: i64,
) -> Result<Report> {
    let key = public_key_arg(key)?;
    let at = revoked_at.unwrap_or(now);
    let claims = [
        ("org".to_owned(), Value::Text(org.to_owned())),
        ("revoked_at".to_owned(), Value::Integer(i128::from(at))),
    ]
    .into();
    let attestation = Attestation::new(
        Subject::Key(key),
        KIND_KEY_REVOKED,
        claims,
        now,
        now + expires_in,
    )
    .map_err(|e| Rejected(e.to_string()))?;
    write(out, &attestation.to_block())?;
    Ok(Report {
        text: format!(
            "wrote the revocation of {key} (from {at}) to {} (unsigned: attest admins sign it)",
            out.display()
        ),
        json: json!({ "out": out, "key": key.to_did(), "revoked_at": at, "id": attestation.id().to_string() }),
    })
}

/// Runs `meridian org …`.
pub fn run_org(command: &OrgCommand, now: i64) -> Result<Report> {
    match command {
        OrgCommand::Keys { org, data } => org_keys(org, data),
        OrgCommand::Resign {
            node,
            token,
            org,
            org_key,
        } => resign(node, token, org, &load_key(org_key)?, now),
        OrgCommand::Request {
            org,
            domain,
            contact,
            keys,
            out,
        } => org_request(org, domain, contact, keys, out),
        OrgCommand::Approve {
            request,
            expires_in,
            out,
        } => org_approve(request, *expires_in, out, now),
        OrgCommand::Reject {
            request,
            reason,
            out,
        } => org_reject(request, reason, out, now),
        OrgCommand::RotateKey {
            org,
            current_key,
            current_set,
            add_keys,
            remove_keys,
            out,
        } => org_rotate_key(
            org,
            current_key,
            current_set,
            add_keys,
            remove_keys,
            out,
            now,
        ),
        OrgCommand::RevokeKey {
            org,
            key,
            revoked_at,
            expires_in,
            out,
        } => org_revoke_key(org, key, *revoked_at, *expires_in, out, now),
        OrgCommand::BindDomain {
            org,
            domain,
            keys,
            current_set,
            expires_in,
            out,
        } => org_bind_domain(org, domain, keys, current_set, *expires_in, out, now),
        OrgCommand::VerifyDomain {
            org,
            domain,
            roots,
            attestations,
            resolve,
            ca_certs,
            out,
        } => {
            let fetch = crate::daemon::domains::DomainFetch {
                resolve: resolve.clone(),
                extra_roots_pem: ca_certs.iter().map(|p| read(p)).collect::<Result<_>>()?,
                timeout: crate::daemon::domains::DOMAIN_FETCH_TIMEOUT,
                // The admin's own machine, at the admin's word.
                egress: None,
            };
            org_verify_domain(
                org,
                domain,
                (roots.as_slice(), attestations.as_path()),
                &fetch,
                out,
                now,
            )
        }
    }
}

/// Writes a registration request signed by every key it lists.
fn org_request(
    org: &str,
    domain: &str,
    contact: &str,
    keys: &[PathBuf],
    out: &Path,
) -> Result<Report> {
    let keys = keys
        .iter()
        .map(|p| load_key(p))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&_> = keys.iter().collect();
    let request =
        Registration::create(org, domain, contact, &refs).map_err(|e| Rejected(e.to_string()))?;
    write(out, &request.to_block())?;
    Ok(Report {
        text: format!(
            "wrote registration request for `{org}` to {}",
            out.display()
        ),
        json: json!({ "out": out, "org": org, "id": request.document.id().to_string() }),
    })
}

/// Checks a registration request and writes the `org.verified` attestation approving it.
fn org_approve(request: &Path, expires_in: i64, out: &Path, now: i64) -> Result<Report> {
    let registration =
        Registration::decode_and_verify(&read(request)?).map_err(|e| rejected(e, request))?;
    let attestation = registration
        .approve(now, now + expires_in)
        .map_err(|e| Rejected(e.to_string()))?;
    write(out, &attestation.to_block())?;
    Ok(Report {
        text: format!(
            "request by `{}` ({}) checked; wrote its org.verified attestation to {} (unsigned: attest admins sign it)",
            registration.org,
            registration.domain,
            out.display()
        ),
        json: json!({ "out": out, "org": registration.org, "id": attestation.id().to_string() }),
    })
}

/// Writes an organisation's domain proof file, signed by `keys`.
fn org_bind_domain(
    org: &str,
    domain: &str,
    keys: &[PathBuf],
    current_set: &[String],
    expires_in: i64,
    out: &Path,
    now: i64,
) -> Result<Report> {
    let signers = keys
        .iter()
        .map(|p| load_key(p))
        .collect::<Result<Vec<_>>>()?;
    let set: Vec<PublicKey> = if current_set.is_empty() {
        signers.iter().map(|k| k.public()).collect()
    } else {
        current_set
            .iter()
            .map(|k| public_key_arg(k))
            .collect::<Result<_>>()?
    };
    let refs: Vec<&_> = signers.iter().collect();
    let proof = DomainProof::create(org, domain, &set, &refs, now, now + expires_in)
        .map_err(|e| Rejected(e.to_string()))?;
    write(out, proof.to_json().as_bytes())?;
    Ok(Report {
        text: format!(
            "wrote the proof that `{org}` controls {domain} to {}; serve it at {} until {}, then ask an admin to run `meridian org verify-domain {org} {domain}`",
            out.display(),
            crate::daemon::domains::proof_url(domain),
            crate::command::utc(proof.expires_at),
        ),
        json: json!({
            "out": out,
            "org": org,
            "domain": domain,
            "url": crate::daemon::domains::proof_url(domain),
            "expires_at": proof.expires_at,
            "id": proof.document.id().to_string(),
        }),
    })
}

/// Fetches and checks an organisation's domain proof and writes its `org.domain`
/// attestation (unsigned).
fn org_verify_domain(
    org: &str,
    domain: &str,
    (roots, attestations): (&[PathBuf], &Path),
    fetch: &crate::daemon::domains::DomainFetch,
    out: &Path,
    now: i64,
) -> Result<Report> {
    let root = trusted_root(roots, now, ExpiryCheck::Enforce)?;
    let files = meridian_registry::files::list_with_extension(attestations, "cbor")
        .with_context(|| format!("listing {}", attestations.display()))?;
    let blocks: Vec<Vec<u8>> = files.iter().map(|p| read(p)).collect::<Result<_>>()?;
    let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
    let (set, _) = AttestationSet::from_documents(&refs, &root, now);
    let current = set.org_key_set(org, now).ok_or_else(|| {
        Rejected(format!(
            "`{org}` is not verified in {} (an org.verified attestation signed by the attest role is needed first)",
            attestations.display()
        ))
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let bytes = runtime
        .block_on(crate::daemon::domains::fetch_proof(domain, fetch))
        .map_err(|e| Rejected(e.to_string()))?;
    let url = crate::daemon::domains::proof_url(domain);
    let proof = DomainProof::from_json(&bytes).map_err(|e| Rejected(format!("{url}: {e}")))?;
    proof
        .verify(domain, org, &current, now)
        .map_err(|e| Rejected(format!("{url}: {e}")))?;
    let attestation = proof
        .attestation(now)
        .map_err(|e| Rejected(e.to_string()))?;
    write(out, &attestation.to_block())?;
    Ok(Report {
        text: format!(
            "{url} proves that `{org}` controls {domain} (signed by its current keys, valid until {}); wrote its org.domain attestation to {} (unsigned: attest admins sign it)",
            crate::command::utc(proof.expires_at),
            out.display()
        ),
        json: json!({
            "out": out,
            "org": org,
            "domain": domain,
            "expires_at": proof.expires_at,
            "proof": proof.document.id().to_string(),
            "id": attestation.id().to_string(),
        }),
    })
}

fn parse_subject(text: &str) -> Result<Subject> {
    let (kind, id) = text.split_once(':').ok_or_else(|| {
        anyhow!("--subject `{text}` must be TYPE:ID (org, agent, key, node or cid)")
    })?;
    Ok(match kind {
        "org" => Subject::Org(id.to_owned()),
        "agent" => Subject::Agent(id.to_owned()),
        "key" => Subject::Key(public_key_arg(id)?),
        "node" => Subject::Node(public_key_arg(id)?),
        "cid" => Subject::Document(
            meridian_registry::ids::parse_cid(id).map_err(|e| anyhow!("--subject: {e}"))?,
        ),
        other => bail!("--subject type `{other}` is not org, agent, key, node or cid"),
    })
}

/// Runs `meridian attest …`.
pub fn run_attest(command: &AttestCommand, now: i64) -> Result<Report> {
    match command {
        AttestCommand::Issue {
            subject,
            kind,
            claims,
            expires_in,
            out,
        } => {
            let subject = parse_subject(subject)?;
            let mut map = BTreeMap::new();
            for claim in claims {
                let (name, value) = claim
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--claim `{claim}` must be name=value"))?;
                let value = match value.parse::<i64>() {
                    Ok(n) => Value::Integer(i128::from(n)),
                    Err(_) => Value::Text(value.to_owned()),
                };
                map.insert(name.to_owned(), value);
            }
            let attestation = Attestation::new(subject, kind, map, now, now + expires_in)
                .map_err(|e| Rejected(e.to_string()))?;
            write(out, &attestation.to_block())?;
            Ok(Report {
                text: format!(
                    "wrote attestation {} to {} (unsigned)",
                    attestation.id(),
                    out.display()
                ),
                json: json!({ "out": out, "id": attestation.id().to_string() }),
            })
        }
        AttestCommand::Cosign { attestation, key } => {
            sign_document(attestation, key, &[], false, now)
        }
        AttestCommand::Revoke {
            attestation,
            reason,
            expires_in,
            out,
        } => {
            let revoked =
                Attestation::decode(&read(attestation)?).map_err(|e| rejected(e, attestation))?;
            let revocation = Attestation::revocation(revoked.id(), reason, now, now + expires_in)
                .map_err(|e| Rejected(e.to_string()))?;
            write(out, &revocation.to_block())?;
            Ok(Report {
                text: format!(
                    "wrote the revocation of {} to {} (unsigned)",
                    revoked.id(),
                    out.display()
                ),
                json: json!({ "out": out, "revokes": revoked.id().to_string(), "id": revocation.id().to_string() }),
            })
        }
        AttestCommand::Verify { attestation, roots } => {
            let root = trusted_root(roots, now, ExpiryCheck::Enforce)?;
            let document =
                Attestation::decode(&read(attestation)?).map_err(|e| rejected(e, attestation))?;
            document
                .verify(&root, now, 300)
                .map_err(|e| rejected(e, attestation))?;
            Ok(Report {
                text: format!(
                    "ok: attestation {} ({}) holds until {}",
                    document.id(),
                    document.body.kind,
                    crate::command::utc(document.body.expires_at)
                ),
                json: json!({ "ok": true, "id": document.id().to_string(), "type": document.body.kind, "expires_at": document.body.expires_at }),
            })
        }
    }
}

/// The hand-written policy, as TOML.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyToml {
    version: u64,
    #[serde(default)]
    expires_in: Option<String>,
    #[serde(default)]
    expires_at: Option<i64>,
    #[serde(default)]
    allow_orgs: Vec<String>,
    #[serde(default)]
    deny_orgs: Vec<String>,
    #[serde(default)]
    deny_agents: Vec<String>,
    #[serde(default)]
    deny_node_keys: Vec<String>,
    #[serde(default)]
    allow_node_keys: Vec<String>,
    #[serde(default)]
    rate_limits: Vec<RateToml>,
    #[serde(default)]
    hubs: Vec<HubToml>,
    #[serde(default)]
    registries: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RateToml {
    scope: String,
    rps: u32,
    burst: u32,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HubToml {
    region: String,
    address: String,
    key: String,
    #[serde(default)]
    http: Option<String>,
}

/// Runs `meridian policy …`.
pub fn run_policy(command: &PolicyCommand, now: i64) -> Result<Report> {
    match command {
        PolicyCommand::Sign { policy, key, out } => {
            let text = fs::read_to_string(policy)
                .with_context(|| format!("reading {}", policy.display()))?;
            let parsed: PolicyToml = toml::from_str(&text).map_err(|e| rejected(e, policy))?;
            let expires_at = match (parsed.expires_at, parsed.expires_in) {
                (Some(at), None) => at,
                (None, Some(duration)) => {
                    now + parse_duration_secs(&duration).map_err(|e| rejected(e, policy))?
                }
                (None, None) => now + 30 * 86_400,
                (Some(_), Some(_)) => {
                    return Err(rejected("set expires_at or expires_in, not both", policy));
                }
            };
            let hubs = parsed
                .hubs
                .into_iter()
                .map(|h| {
                    Ok(HubEntry {
                        region: h.region,
                        address: h.address,
                        key: PublicKey::from_did(&h.key).map_err(|e| rejected(e, policy))?,
                        http: h.http,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let body = PolicyBody {
                version: parsed.version,
                issued_at: now,
                expires_at,
                allow_orgs: parsed.allow_orgs,
                deny_orgs: parsed.deny_orgs,
                deny_agents: parsed.deny_agents,
                deny_node_keys: parsed.deny_node_keys,
                allow_node_keys: parsed.allow_node_keys,
                rate_limits: parsed
                    .rate_limits
                    .into_iter()
                    .map(|r| RateTier {
                        scope: r.scope,
                        requests_per_second: r.rps,
                        burst: r.burst,
                    })
                    .collect(),
                hubs,
                registries: parsed.registries,
            };
            let mut bundle = PolicyBundle::new(body).map_err(|e| rejected(e, policy))?;
            let signer = load_key(key)?;
            bundle.sign(&signer);
            write(out, &bundle.to_block())?;
            Ok(Report {
                text: format!(
                    "wrote policy version {} to {}, signed by {}",
                    bundle.body.version,
                    out.display(),
                    signer.did()
                ),
                json: json!({ "out": out, "version": bundle.body.version, "id": bundle.id().to_string() }),
            })
        }
        PolicyCommand::Verify { bundle, roots } => {
            let root = trusted_root(roots, now, ExpiryCheck::Enforce)?;
            let policy = PolicyBundle::decode(&read(bundle)?).map_err(|e| rejected(e, bundle))?;
            policy.verify(&root, now).map_err(|e| rejected(e, bundle))?;
            Ok(Report {
                text: format!(
                    "ok: policy version {} holds until {}",
                    policy.body.version,
                    crate::command::utc(policy.body.expires_at)
                ),
                json: json!({ "ok": true, "version": policy.body.version, "expires_at": policy.body.expires_at, "id": policy.id().to_string() }),
            })
        }
    }
}

fn read_log(path: &Path) -> Result<MerkleLog> {
    let mut log = MerkleLog::new();
    if !path.exists() {
        return Ok(log);
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hashes = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let bytes: Option<Hash> = (line.len() == 64 && line.is_ascii())
            .then(|| {
                (0..32)
                    .map(|i| u8::from_str_radix(&line[i * 2..i * 2 + 2], 16).ok())
                    .collect::<Option<Vec<u8>>>()
            })
            .flatten()
            .and_then(|v| v.try_into().ok());
        let hash = bytes
            .ok_or_else(|| anyhow!("{}:{}: not a hex leaf hash", path.display(), index + 1))?;
        hashes.push(hash);
    }
    log = MerkleLog::from_leaf_hashes(hashes);
    Ok(log)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The witness state file: the last checkpoint it co-signed.
fn read_witness_state(path: &Path) -> Result<Option<Checkpoint>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let checkpoint =
        Checkpoint::parse_body(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Some(checkpoint))
}

/// `meridian org keys`: the key-set documents about `org` under `DATA/governance`, in the
/// order the node applied them, with their key-log positions.
fn org_keys(org: &str, data: &Path) -> Result<Report> {
    let dir = data.join(crate::daemon::governance::GOVERNANCE_DIR);
    if !dir.exists() {
        bail!(
            "{} holds no governance documents (is it a node data directory with governance on?)",
            dir.display()
        );
    }
    let rows: Vec<serde_json::Value> = meridian_sync::governance::key_history(&dir, org)
        .into_iter()
        .map(|entry| {
            let position = entry.log.map_or_else(
                || "not in the key log".to_owned(),
                |(index, size)| format!("key log leaf {index} of {size}"),
            );
            json!({ "document": entry.document.to_string(), "change": entry.change, "state": entry.state, "log": position })
        })
        .collect();
    let text = if rows.is_empty() {
        format!("no key documents about `{org}` in {}", dir.display())
    } else {
        rows.iter()
            .map(|r| {
                format!(
                    "{} {} ({}; {})",
                    r["document"].as_str().unwrap_or_default(),
                    r["change"].as_str().unwrap_or_default(),
                    r["state"].as_str().unwrap_or_default(),
                    r["log"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Report {
        text,
        json: json!({ "org": org, "history": rows }),
    })
}

/// `meridian org resign`: the organisation's manifests in the node's own snapshot, signed
/// again with `key` (card, region unchanged; `updated_at` now) and published.
fn resign(
    node: &str,
    token: &str,
    org: &str,
    key: &meridian_registry::keys::Keypair,
    now: i64,
) -> Result<Report> {
    let base = node.trim_end_matches('/').to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let (republished, skipped) = runtime.block_on(async {
        let ready = client
            .get(format!("{base}/ready"))
            .send()
            .await
            .with_context(|| format!("reaching {base}"))?
            .bytes()
            .await?;
        let ready: serde_json::Value =
            serde_json::from_slice(&ready).with_context(|| format!("{base}/ready is not JSON"))?;
        let publisher = ready["node"]
            .as_str()
            .ok_or_else(|| anyhow!("{base}/ready names no node"))?
            .to_owned();
        let mut url = reqwest::Url::parse(&format!("{base}/api/v1/registry/snapshot"))
            .with_context(|| format!("--node `{base}` is not a URL"))?;
        url.query_pairs_mut().append_pair("publisher", &publisher);
        let car = client
            .get(url)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("exporting {publisher}'s snapshot from {base}"))?
            .bytes()
            .await?;
        let (snapshot, _) = meridian_registry::snapshot::open(&car[..], &Default::default())
            .with_context(|| format!("the snapshot {base} exported"))?;
        let mut republished = Vec::new();
        let mut skipped = 0usize;
        for (agent_id, _) in snapshot.tree.entries() {
            let agent_id = String::from_utf8_lossy(&agent_id).into_owned();
            let Some(manifest) = snapshot.manifest(&agent_id).transpose()? else {
                continue;
            };
            if manifest.body.org != org || manifest.signer == key.public() {
                skipped += usize::from(manifest.body.org == org);
                continue;
            }
            let body = ManifestBody::from_card(
                &manifest.body.card,
                org,
                &manifest.body.region,
                now.max(manifest.body.updated_at + 1),
            )?;
            let block = body.sign(key).to_block();
            let answer = client
                .post(format!("{base}/api/v1/agents"))
                .bearer_auth(token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json!({ "manifest": b64(&block) }).to_string())
                .send()
                .await?;
            let status = answer.status();
            if !status.is_success() {
                let text = answer.text().await.unwrap_or_default();
                bail!("publishing {agent_id} again: HTTP {status}: {text}");
            }
            republished.push(agent_id);
        }
        anyhow::Ok((republished, skipped))
    })?;
    Ok(Report {
        text: format!(
            "signed {} agents of `{org}` again with {} and published them ({skipped} already were)",
            republished.len(),
            key.did()
        ),
        json: json!({ "org": org, "republished": republished, "already": skipped, "key": key.did() }),
    })
}

/// The id and organisation of a key-set document file, or why it is none.
fn key_document(path: &Path) -> Result<(meridian_registry::Cid, String)> {
    let block = read(path)?;
    meridian_governance::keylog::key_document_id(&block).ok_or_else(|| {
        Rejected(format!(
            "{} is not a key-set document (org.verified, key.revoked or a key rotation)",
            path.display()
        ))
        .into()
    })
}

/// `checkpoint prove-document`: the document's leaf in the log, its inclusion proof against
/// the note's checkpoint, written as a key-log proof.
fn prove_document(log: &Path, document: &Path, note: &Path, out: &Path) -> Result<Report> {
    let (id, org) = key_document(document)?;
    let merkle = read_log(log)?;
    let text = fs::read_to_string(note).with_context(|| format!("reading {}", note.display()))?;
    let parsed = SignedNote::parse(&text).map_err(|e| rejected(e, note))?;
    let checkpoint = Checkpoint::parse_body(&parsed.body).map_err(|e| rejected(e, note))?;
    let leaf = meridian_governance::checkpoint::leaf_hash(&key_event_leaf(&id));
    let index = (0..checkpoint.size.min(merkle.size()))
        .find(|i| merkle.leaf(*i) == Some(leaf))
        .ok_or_else(|| {
            Rejected(format!(
                "{} is not among the first {} leaves of {} (append it, then sign a new checkpoint)",
                document.display(),
                checkpoint.size,
                log.display()
            ))
        })?;
    let root = merkle.root(checkpoint.size).map_err(|e| anyhow!("{e}"))?;
    if root != checkpoint.root {
        return Err(rejected(
            format!(
                "{} is not a checkpoint of {}",
                note.display(),
                log.display()
            ),
            note,
        ));
    }
    let proof = KeyLogProof {
        document: id,
        index,
        hashes: merkle
            .inclusion_proof(index, checkpoint.size)
            .map_err(|e| anyhow!("{e}"))?,
        note: parsed,
    };
    write(out, proof.to_text().as_bytes())?;
    Ok(Report {
        text: format!(
            "wrote the proof of {id} (`{org}`) at leaf {index} of {} to {}",
            checkpoint.size,
            out.display()
        ),
        json: json!({ "out": out, "document": id.to_string(), "org": org, "index": index, "size": checkpoint.size }),
    })
}

/// `checkpoint monitor`: the organisation's key-set documents in log order, audited.
fn monitor(log: &Path, documents: &Path, roots: &[PathBuf], org: &str, now: i64) -> Result<Report> {
    let merkle = read_log(log)?;
    let root = trusted_root(roots, now, ExpiryCheck::Enforce)?;
    let mut by_leaf = std::collections::HashMap::new();
    let entries =
        fs::read_dir(documents).with_context(|| format!("reading {}", documents.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "cbor") {
            continue;
        }
        let block = read(&path)?;
        if let Some((id, _)) = meridian_governance::keylog::key_document_id(&block) {
            by_leaf.insert(
                meridian_governance::checkpoint::leaf_hash(&key_event_leaf(&id)),
                block,
            );
        }
    }
    let mut audit = KeyChainAudit::new(&root, org);
    let mut unmatched = 0;
    for index in 0..merkle.size() {
        match merkle.leaf(index).and_then(|leaf| by_leaf.get(&leaf)) {
            Some(block) => audit.offer(index, block, now),
            None => unmatched += 1,
        }
    }
    let events = audit.events();
    let lines: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "leaf {}: {} {} -> keys {}{}",
                e.index,
                e.kind,
                e.document,
                e.keys.join(", "),
                e.problem
                    .as_ref()
                    .map(|p| format!("  ALERT: {p}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let alerts: Vec<&meridian_governance::keylog::KeyEvent> =
        events.iter().filter(|e| !e.authorised).collect();
    if let Some(first) = alerts.first() {
        return Err(Rejected(format!(
            "`{org}`'s key set changed without a rotation signed by its previous keys at leaf {} ({}): {}\n{}",
            first.index,
            first.document,
            first.problem.clone().unwrap_or_default(),
            lines.join("\n")
        ))
        .into());
    }
    Ok(Report {
        text: format!(
            "{}\n`{org}`: {} key-set changes, every one authorised ({unmatched} log entries are not in {})",
            lines.join("\n"),
            events.len(),
            documents.display()
        ),
        json: json!({ "org": org, "events": events.iter().map(|e| json!({ "index": e.index, "document": e.document.to_string(), "kind": e.kind, "keys": e.keys, "authorised": e.authorised })).collect::<Vec<_>>(), "unmatched": unmatched }),
    })
}

/// Appends a snapshot's head, or a key-set document, to a checkpoint log.
fn checkpoint_append(
    log: &Path,
    snapshot: Option<&Path>,
    document: Option<&Path>,
) -> Result<Report> {
    let (leaf, what) = match (snapshot, document) {
        (Some(snapshot), _) => {
            let file = fs::File::open(snapshot)
                .with_context(|| format!("opening {}", snapshot.display()))?;
            let (snap, _) = meridian_registry::snapshot::open(
                std::io::BufReader::new(file),
                &Default::default(),
            )
            .with_context(|| format!("snapshot {}", snapshot.display()))?;
            let leaf = head_leaf(
                &snap.commit.body.publisher,
                snap.commit.body.seq,
                &snap.commit_cid,
            );
            let what = format!(
                "head seq {} of {}",
                snap.commit.body.seq, snap.commit.body.publisher
            );
            (leaf, what)
        }
        (None, Some(document)) => {
            let (id, org) = key_document(document)?;
            (key_event_leaf(&id), format!("key document {id} of `{org}`"))
        }
        (None, None) => bail!("give --snapshot or --document"),
    };
    let mut merkle = read_log(log)?;
    let index = merkle.append(&leaf);
    let hash = merkle
        .leaf(index)
        .ok_or_else(|| anyhow!("appended leaf missing"))?;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    use std::io::Write as _;
    writeln!(file, "{}", hex(&hash)).with_context(|| format!("appending to {}", log.display()))?;
    file.sync_all()?;
    Ok(Report {
        text: format!(
            "appended {what} as leaf {index}; log size {}",
            merkle.size()
        ),
        json: json!({ "index": index, "size": merkle.size(), "leaf": hex(&hash) }),
    })
}

/// Co-signs a checkpoint as a witness, if it is consistent with the last one this witness signed.
fn checkpoint_cosign(
    note: &Path,
    name: &str,
    key: &Path,
    log_key: &str,
    state: &Path,
    proof: Option<&Path>,
    now: i64,
) -> Result<Report> {
    let text = fs::read_to_string(note).with_context(|| format!("reading {}", note.display()))?;
    let parsed = SignedNote::parse(&text).map_err(|e| rejected(e, note))?;
    let checkpoint = Checkpoint::parse_body(&parsed.body).map_err(|e| rejected(e, note))?;
    let proof_hashes: Vec<Hash> = match proof {
        None => Vec::new(),
        Some(path) => fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .map(|line| {
                base64::engine::general_purpose::STANDARD
                    .decode(line)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| anyhow!("{}: `{line}` is not a base64 hash", path.display()))
            })
            .collect::<Result<_>>()?,
    };
    let mut witness = Witness::new(
        name,
        load_key(key)?,
        &checkpoint.origin,
        public_key_arg(log_key)?,
        read_witness_state(state)?,
    );
    let timestamp = u64::try_from(now).unwrap_or(0);
    let cosigned = witness
        .cosign(&parsed, &proof_hashes, timestamp)
        .map_err(|e| rejected(e, note))?;
    write(note, cosigned.to_text().as_bytes())?;
    write(state, checkpoint.body().as_bytes())?;
    Ok(Report {
        text: format!("co-signed checkpoint of size {} as {name}", checkpoint.size),
        json: json!({ "note": note, "size": checkpoint.size, "witness": name }),
    })
}

/// Verifies a checkpoint's log signature and its witness threshold.
fn checkpoint_verify(
    note: &Path,
    log_key: &str,
    witnesses: &[String],
    witness_threshold: usize,
) -> Result<Report> {
    let text = fs::read_to_string(note).with_context(|| format!("reading {}", note.display()))?;
    let parsed = SignedNote::parse(&text).map_err(|e| rejected(e, note))?;
    let checkpoint = Checkpoint::parse_body(&parsed.body).map_err(|e| rejected(e, note))?;
    parsed
        .verify(&checkpoint.origin, &public_key_arg(log_key)?)
        .map_err(|e| rejected(e, note))?;
    let mut cosigned = Vec::new();
    for witness in witnesses {
        let (name, did) = witness
            .split_once('=')
            .ok_or_else(|| anyhow!("--witness `{witness}` must be NAME=DID"))?;
        if parsed
            .verify_cosignature(name, &public_key_arg(did)?)
            .is_ok()
        {
            cosigned.push(name.to_owned());
        }
    }
    if cosigned.len() < witness_threshold {
        return Err(rejected(
            format!(
                "{} of the required {witness_threshold} witness cosignatures",
                cosigned.len()
            ),
            note,
        ));
    }
    Ok(Report {
        text: format!(
            "ok: checkpoint {} size {} signed by the log, co-signed by {}",
            checkpoint.origin,
            checkpoint.size,
            if cosigned.is_empty() {
                "no witness".to_owned()
            } else {
                cosigned.join(", ")
            }
        ),
        json: json!({ "ok": true, "origin": checkpoint.origin, "size": checkpoint.size, "root": b64(&checkpoint.root), "witnesses": cosigned }),
    })
}

/// Runs `meridian checkpoint …`.
pub fn run_checkpoint(command: &CheckpointCommand, now: i64) -> Result<Report> {
    match command {
        CheckpointCommand::Append {
            log,
            snapshot,
            document,
        } => checkpoint_append(log, snapshot.as_deref(), document.as_deref()),
        CheckpointCommand::Sign {
            log,
            origin,
            key,
            out,
        } => {
            let merkle = read_log(log)?;
            let checkpoint = Checkpoint {
                origin: origin.clone(),
                size: merkle.size(),
                root: merkle.root(merkle.size()).map_err(|e| anyhow!("{e}"))?,
            };
            let note = SignedNote::sign(&checkpoint.body(), origin, &load_key(key)?)
                .map_err(|e| Rejected(e.to_string()))?;
            write(out, note.to_text().as_bytes())?;
            Ok(Report {
                text: format!(
                    "wrote checkpoint of size {} to {}",
                    checkpoint.size,
                    out.display()
                ),
                json: json!({ "out": out, "size": checkpoint.size, "root": b64(&checkpoint.root) }),
            })
        }
        CheckpointCommand::Cosign {
            note,
            name,
            key,
            log_key,
            state,
            proof,
        } => checkpoint_cosign(note, name, key, log_key, state, proof.as_deref(), now),
        CheckpointCommand::Verify {
            note,
            log_key,
            witnesses,
            witness_threshold,
        } => checkpoint_verify(note, log_key, witnesses, *witness_threshold),
        CheckpointCommand::ProveDocument {
            log,
            document,
            note,
            out,
        } => prove_document(log, document, note, out),
        CheckpointCommand::Monitor {
            log,
            documents,
            roots,
            org,
        } => monitor(log, documents, roots, org, now),
        CheckpointCommand::Prove {
            log,
            index,
            old_size,
            size,
        } => {
            let merkle = read_log(log)?;
            let size = size.unwrap_or(merkle.size());
            let (kind, proof) = match (index, old_size) {
                (Some(index), None) => {
                    let proof = merkle
                        .inclusion_proof(*index, size)
                        .map_err(|e| anyhow!("{e}"))?;
                    let root = merkle.root(size).map_err(|e| anyhow!("{e}"))?;
                    let leaf = merkle
                        .leaf(*index)
                        .ok_or_else(|| anyhow!("no leaf {index}"))?;
                    verify_inclusion(&leaf, *index, size, &proof, &root)
                        .map_err(|e| anyhow!("{e}"))?;
                    ("inclusion", proof)
                }
                (None, Some(old)) => (
                    "consistency",
                    merkle
                        .consistency_proof(*old, size)
                        .map_err(|e| anyhow!("{e}"))?,
                ),
                _ => bail!("give exactly one of --index and --old-size"),
            };
            let lines: Vec<String> = proof.iter().map(|h| b64(h)).collect();
            Ok(Report {
                text: lines.join("\n"),
                json: json!({ "kind": kind, "size": size, "proof": lines }),
            })
        }
    }
}

/// Governance inputs of `snapshot verify`: a root chain, an attestation directory and a policy.
#[derive(Debug, Args, Default)]
pub struct GovernanceArgs {
    /// Trust root (repeat for newer versions, in order); enables the acceptance rule.
    #[arg(long = "root")]
    pub roots: Vec<PathBuf>,
    /// Directory of attestation and key-rotation documents (*.cbor).
    #[arg(long)]
    pub attestations: Option<PathBuf>,
    /// Policy bundle.
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

/// Runs the acceptance rule over every agent of a verified snapshot.
pub fn accept_snapshot(
    args: &GovernanceArgs,
    snapshot: &meridian_registry::snapshot::Snapshot,
    now: i64,
) -> Result<serde_json::Value> {
    let root = trusted_root(&args.roots, now, ExpiryCheck::Enforce)?;
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(dir) = &args.attestations {
        files = meridian_registry::files::list_with_extension(dir, "cbor")
            .with_context(|| format!("listing {}", dir.display()))?;
    }
    let blocks: Vec<Vec<u8>> = files.iter().map(|p| read(p)).collect::<Result<_>>()?;
    let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
    let (set, left_out) = AttestationSet::from_documents(&refs, &root, now);
    let skipped: Vec<serde_json::Value> = left_out
        .iter()
        .map(|s| json!({ "file": files[s.index], "reason": s.reason }))
        .collect();
    let policy = match &args.policy {
        None => None,
        Some(path) => {
            let bundle = PolicyBundle::decode(&read(path)?).map_err(|e| rejected(e, path))?;
            bundle.verify(&root, now).map_err(|e| rejected(e, path))?;
            Some(bundle)
        }
    };
    let view = GovernanceView {
        attestations: &set,
        policy: policy.as_ref(),
    };
    let mut accepted = Vec::new();
    let mut rejected_agents = serde_json::Map::new();
    for (key, cid) in snapshot.tree.entries() {
        let agent = String::from_utf8_lossy(&key).into_owned();
        let manifest = snapshot
            .blocks
            .get(&cid)
            .ok_or_else(|| anyhow!("missing manifest block {cid}"))
            .and_then(|block| Manifest::decode(block).map_err(|e| anyhow!("{agent}: {e}")))?;
        match accept(view, &manifest, &snapshot.commit.body.publisher, now) {
            Ok(()) => accepted.push(agent),
            Err(reasons) => {
                rejected_agents.insert(
                    agent,
                    json!(reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>()),
                );
            }
        }
    }
    let root_id: Cid = root.current().id();
    Ok(json!({
        "root_version": root.current().body.version,
        "root_id": root_id.to_string(),
        "policy_version": policy.as_ref().map(|p| p.body.version),
        "accepted": accepted,
        "rejected": rejected_agents,
        "skipped_documents": skipped,
    }))
}

//! Checkpoints: an append-only log of accepted publisher heads, and the notes that sign it.
//!
//! The log is an RFC 6962 / RFC 9162 Merkle tree (SHA-256, leaf prefix 0x00, node prefix 0x01)
//! with inclusion and consistency proofs. Its state is published as a C2SP `tlog-checkpoint`
//! (origin, size, root) in a C2SP `signed-note` signed by the log key; witnesses co-sign it with
//! C2SP `tlog-cosignature/v1` signatures, and only after checking that it is consistent with the
//! last checkpoint they signed. Two signed checkpoints of one log with one size and different
//! roots are a [`CheckpointEquivocation`] anyone can check.

use base64::Engine as _;
use cid::Cid;
use meridian_registry::cbor::{self, Value};
use meridian_registry::keys::{Keypair, PublicKey};
use sha2::{Digest as _, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Longest proof accepted (a tree of 2^64 leaves needs 64 hashes; consistency adds one).
pub const PROOF_HASHES_MAX: usize = 65;
/// Largest signed note accepted, in bytes.
pub const NOTE_BYTES_MAX: usize = 16 * 1024;
/// Most signature lines in one note.
pub const NOTE_SIGNATURES_MAX: usize = 64;

/// The hash of an empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf hash of `data`: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    hasher.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// Why a proof, note or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// An inclusion or consistency proof does not prove what it claims.
    #[error("invalid proof: {0}")]
    InvalidProof(String),
    /// A note or checkpoint that does not follow its format.
    #[error("malformed note: {0}")]
    Malformed(String),
    /// No valid signature by the expected key.
    #[error("no valid signature by `{name}`")]
    MissingSignature {
        /// The key name looked for.
        name: String,
    },
    /// A witness refuses a checkpoint that is not consistent with what it signed before.
    #[error("witness refuses: {0}")]
    Inconsistent(String),
}

fn invalid(reason: impl Into<String>) -> CheckpointError {
    CheckpointError::InvalidProof(reason.into())
}

/// The largest power of two strictly below `n` (for `n > 1`).
fn split_point(n: u64) -> u64 {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// An append-only Merkle log held in memory: leaf hashes in order.
#[derive(Debug, Clone, Default)]
pub struct MerkleLog {
    leaves: Vec<Hash>,
}

impl MerkleLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A log from leaf hashes already computed (as kept in a log file).
    pub fn from_leaf_hashes(leaves: Vec<Hash>) -> Self {
        Self { leaves }
    }

    /// Appends a leaf (its data, hashed as a leaf) and returns its index.
    pub fn append(&mut self, data: &[u8]) -> u64 {
        self.leaves.push(leaf_hash(data));
        self.leaves.len() as u64 - 1
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.leaves.get(index as usize).copied()
    }

    fn range_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(
                    &Self::range_root(&leaves[..k]),
                    &Self::range_root(&leaves[k..]),
                )
            }
        }
    }

    /// The root of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, CheckpointError> {
        let leaves = self
            .leaves
            .get(..size as usize)
            .ok_or_else(|| invalid(format!("size {size} beyond the log's {}", self.size())))?;
        Ok(Self::range_root(leaves))
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves (RFC 9162 PATH).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, CheckpointError> {
        if index >= size || size > self.size() {
            return Err(invalid(format!("no leaf {index} in a tree of size {size}")));
        }
        let mut proof = Vec::new();
        Self::path(index as usize, &self.leaves[..size as usize], &mut proof);
        Ok(proof)
    }

    fn path(index: usize, leaves: &[Hash], proof: &mut Vec<Hash>) {
        if leaves.len() <= 1 {
            return;
        }
        let k = split_point(leaves.len() as u64) as usize;
        if index < k {
            Self::path(index, &leaves[..k], proof);
            proof.push(Self::range_root(&leaves[k..]));
        } else {
            Self::path(index - k, &leaves[k..], proof);
            proof.push(Self::range_root(&leaves[..k]));
        }
    }

    /// The consistency proof from the tree of size `old` to the tree of size `new` (RFC 9162 PROOF).
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, CheckpointError> {
        if old == 0 || old > new || new > self.size() {
            return Err(invalid(format!("no consistency proof from {old} to {new}")));
        }
        let mut proof = Vec::new();
        if old < new {
            Self::subproof(old as usize, &self.leaves[..new as usize], true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(m: usize, leaves: &[Hash], complete: bool, proof: &mut Vec<Hash>) {
        let n = leaves.len();
        if m == n {
            if !complete {
                proof.push(Self::range_root(leaves));
            }
            return;
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            Self::subproof(m, &leaves[..k], complete, proof);
            proof.push(Self::range_root(&leaves[k..]));
        } else {
            Self::subproof(m - k, &leaves[k..], false, proof);
            proof.push(Self::range_root(&leaves[..k]));
        }
    }
}

/// Checks that `leaf` is at `index` in the tree of `size` leaves with root `root` (RFC 9162 2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), CheckpointError> {
    if index >= size {
        return Err(invalid(format!(
            "leaf index {index} is not below tree size {size}"
        )));
    }
    if proof.len() > PROOF_HASHES_MAX {
        return Err(invalid("proof too long"));
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(invalid("proof longer than the path"));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(invalid("proof shorter than the path"));
    }
    if r != *root {
        return Err(invalid("computed root does not match"));
    }
    Ok(())
}

/// Checks that the tree of `size2` leaves with root `root2` extends the tree of `size1` leaves
/// with root `root1` (RFC 9162 2.1.4.2). Roots are taken as bytes: equal sizes need equal roots
/// whatever their length, and anything else needs 32-byte hashes.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &[u8],
    root2: &[u8],
    proof: &[Hash],
) -> Result<(), CheckpointError> {
    if size1 > size2 {
        return Err(invalid(format!(
            "old size {size1} is larger than new size {size2}"
        )));
    }
    if proof.len() > PROOF_HASHES_MAX {
        return Err(invalid("proof too long"));
    }
    if size1 == 0 {
        // Every tree extends the empty tree, so such a proof says nothing; RFC 9162 leaves
        // size 0 out and the reference refuses it, even between two empty trees.
        return Err(invalid("consistency with an empty tree proves nothing"));
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(invalid("proof between equal sizes must be empty"));
        }
        if root1 != root2 {
            return Err(invalid("equal sizes with different roots"));
        }
        return Ok(());
    }
    if proof.is_empty() {
        return Err(invalid("empty proof"));
    }
    let root1: &Hash = root1
        .try_into()
        .map_err(|_| invalid("old root is not a 32-byte hash"))?;
    let root2: &Hash = root2
        .try_into()
        .map_err(|_| invalid("new root is not a 32-byte hash"))?;
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if size1.is_power_of_two() {
        path.push(*root1);
    }
    path.extend_from_slice(proof);
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if sn == 0 {
            return Err(invalid("proof longer than needed"));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(invalid("proof shorter than needed"));
    }
    if fr != *root1 {
        return Err(invalid("old root does not match"));
    }
    if sr != *root2 {
        return Err(invalid("new root does not match"));
    }
    Ok(())
}

/// Whether `[start, end)` is a subtree in the sense of the Merkle Tree Certificates draft: not
/// empty, and `start` a multiple of the smallest power of two at least `end - start`.
pub fn is_valid_subtree(start: u64, end: u64) -> bool {
    if start >= end {
        return false;
    }
    match (end - start).checked_next_power_of_two() {
        Some(width) => start.is_multiple_of(width),
        None => false,
    }
}

/// Checks that `leaf` at `index` is in the subtree `[start, end)` whose hash is `subtree_root`:
/// an ordinary inclusion proof inside the subtree.
pub fn verify_subtree_inclusion(
    leaf: &Hash,
    index: u64,
    start: u64,
    end: u64,
    proof: &[Hash],
    subtree_root: &Hash,
) -> Result<(), CheckpointError> {
    if !is_valid_subtree(start, end) {
        return Err(invalid(format!("[{start}, {end}) is not a subtree")));
    }
    if index < start || index >= end {
        return Err(invalid(format!(
            "index {index} is outside [{start}, {end})"
        )));
    }
    verify_inclusion(leaf, index - start, end - start, proof, subtree_root)
}

/// Checks that the subtree `[start, end)` with hash `subtree_root` is part of the tree of `size`
/// leaves with root `root` (the draft's subtree consistency proof). An empty subtree is part of
/// every tree: it needs the empty-tree hash and an empty proof, and says nothing about `root`.
pub fn verify_subtree_consistency(
    start: u64,
    end: u64,
    size: u64,
    subtree_root: &[u8],
    root: &[u8],
    proof: &[Hash],
) -> Result<(), CheckpointError> {
    if start == end && end <= size {
        if !proof.is_empty() {
            return Err(invalid("proof for an empty subtree must be empty"));
        }
        if subtree_root != empty_root() {
            return Err(invalid("an empty subtree must have the empty-tree hash"));
        }
        return Ok(());
    }
    if !is_valid_subtree(start, end) {
        return Err(invalid(format!("[{start}, {end}) is not a subtree")));
    }
    if end > size {
        return Err(invalid(format!(
            "subtree end {end} is beyond tree size {size}"
        )));
    }
    if proof.len() > PROOF_HASHES_MAX {
        return Err(invalid("proof too long"));
    }
    let (mut fn_, mut sn, mut tn) = (start, end - 1, size - 1);
    // Climb to the lowest node that the subtree and the tree's right edge still share.
    if sn == tn {
        while fn_ != sn {
            fn_ >>= 1;
            sn >>= 1;
            tn >>= 1;
        }
    } else {
        while fn_ != sn && sn & 1 == 1 {
            fn_ >>= 1;
            sn >>= 1;
            tn >>= 1;
        }
    }
    if fn_ == sn && tn == 0 && proof.is_empty() {
        // The subtree is the whole tree: nothing to hash, the two roots must be the same bytes.
        if subtree_root != root {
            return Err(invalid("subtree is the whole tree but the roots differ"));
        }
        return Ok(());
    }
    let subtree_root: &Hash = subtree_root
        .try_into()
        .map_err(|_| invalid("subtree root is not a 32-byte hash"))?;
    let mut rest = proof;
    let (mut fr, mut sr) = if fn_ == sn {
        (*subtree_root, *subtree_root)
    } else {
        let (first, tail) = rest
            .split_first()
            .ok_or_else(|| invalid("empty proof for a subtree that is not a node of the tree"))?;
        rest = tail;
        (*first, *first)
    };
    for c in rest {
        if tn == 0 {
            return Err(invalid("proof longer than needed"));
        }
        if sn & 1 == 1 || sn == tn {
            if fn_ < sn {
                fr = node_hash(c, &fr);
            }
            sr = node_hash(c, &sr);
            while sn & 1 == 0 && sn != 0 {
                fn_ >>= 1;
                sn >>= 1;
                tn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
        tn >>= 1;
    }
    if tn != 0 {
        return Err(invalid("proof shorter than needed"));
    }
    if fr != *subtree_root {
        return Err(invalid("subtree hash does not match"));
    }
    if sr[..] != *root {
        return Err(invalid("tree root does not match"));
    }
    Ok(())
}

/// The leaf Meridian logs for an accepted publisher head.
pub fn head_leaf(publisher: &PublicKey, seq: u64, commit: &Cid) -> Vec<u8> {
    cbor::encode(&cbor::map([
        ("publisher", Value::Text(publisher.to_did())),
        ("seq", Value::Integer(i128::from(seq))),
        ("commit", Value::Link(*commit)),
    ]))
}

/// A checkpoint: the log's origin, size and root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name, a schema-less URL.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// Root hash of those leaves.
    pub root: Hash,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Checkpoint {
    /// The note body: `origin\nsize\nbase64(root)\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            b64().encode(self.root)
        )
    }

    /// Parses a note body (extension lines are allowed and ignored).
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let bad = |reason: &str| CheckpointError::Malformed(reason.to_owned());
        if !body.ends_with('\n') {
            return Err(bad("checkpoint body must end with a newline"));
        }
        let mut lines = body.lines();
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad("missing origin"))?;
        let size_text = lines.next().ok_or_else(|| bad("missing size"))?;
        if size_text.is_empty()
            || !size_text.bytes().all(|b| b.is_ascii_digit())
            || (size_text.len() > 1 && size_text.starts_with('0'))
        {
            return Err(bad("size is not a decimal without leading zeros"));
        }
        let size = size_text.parse().map_err(|_| bad("size out of range"))?;
        let root_text = lines.next().ok_or_else(|| bad("missing root hash"))?;
        let root: Hash = b64()
            .decode(root_text)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| bad("root hash is not 32 bytes of base64"))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The decoded signature: 4-byte key id, then the signature bytes.
    pub bytes: Vec<u8>,
}

/// A C2SP signed note: a body and its signature lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The text that is signed, ending with a newline.
    pub body: String,
    /// The signature lines.
    pub signatures: Vec<NoteSignature>,
}

const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// The signed-note key id: `SHA-256(name || "\n" || algorithm || key)[:4]`.
pub fn key_id(name: &str, algorithm: u8, key: &PublicKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([algorithm]);
    hasher.update(key.as_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Signature type of a plain ed25519 note signature.
const ALGORITHM_ED25519: u8 = 0x01;
/// Signature type of a timestamped ed25519 cosignature (`cosignature/v1`).
const ALGORITHM_COSIGNATURE_V1: u8 = 0x04;

fn check_key_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('+') {
        return Err(CheckpointError::Malformed(format!(
            "key name `{name}` must be non-empty without spaces or `+`"
        )));
    }
    Ok(())
}

impl SignedNote {
    /// Parses a note: body, a blank line, then `— name base64` lines.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let bad = |reason: &str| CheckpointError::Malformed(reason.to_owned());
        if text.len() > NOTE_BYTES_MAX {
            return Err(bad("note too large"));
        }
        let split = text
            .rfind("\n\n")
            .ok_or_else(|| bad("no blank line before signatures"))?;
        let body = &text[..split + 1];
        let signature_text = &text[split + 2..];
        if !signature_text.ends_with('\n') {
            return Err(bad("note must end with a newline"));
        }
        let mut signatures = Vec::new();
        for line in signature_text.lines() {
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or_else(|| bad("signature line must start with an em dash and a space"))?;
            let (name, encoded) = rest
                .split_once(' ')
                .ok_or_else(|| bad("signature line lacks a signature"))?;
            check_key_name(name)?;
            let bytes = b64()
                .decode(encoded)
                .map_err(|_| bad("signature is not base64"))?;
            if bytes.len() < 5 {
                return Err(bad("signature too short"));
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                bytes,
            });
            if signatures.len() > NOTE_SIGNATURES_MAX {
                return Err(bad("too many signatures"));
            }
        }
        if signatures.is_empty() {
            return Err(bad("note has no signatures"));
        }
        Ok(Self {
            body: body.to_owned(),
            signatures,
        })
    }

    /// The note as text.
    pub fn to_text(&self) -> String {
        let mut text = self.body.clone();
        text.push('\n');
        for signature in &self.signatures {
            text.push_str(&format!(
                "{SIGNATURE_PREFIX}{} {}\n",
                signature.name,
                b64().encode(&signature.bytes)
            ));
        }
        text
    }

    /// Signs `body` as `name` with a plain ed25519 note signature.
    pub fn sign(body: &str, name: &str, key: &Keypair) -> Result<Self, CheckpointError> {
        check_key_name(name)?;
        if !body.ends_with('\n') {
            return Err(CheckpointError::Malformed(
                "note body must end with a newline".into(),
            ));
        }
        let mut bytes = key_id(name, ALGORITHM_ED25519, &key.public()).to_vec();
        bytes.extend_from_slice(&key.sign(body.as_bytes()));
        Ok(Self {
            body: body.to_owned(),
            signatures: vec![NoteSignature {
                name: name.to_owned(),
                bytes,
            }],
        })
    }

    /// Checks that `name` with `key` signed the note (plain ed25519 signature).
    pub fn verify(&self, name: &str, key: &PublicKey) -> Result<(), CheckpointError> {
        let id = key_id(name, ALGORITHM_ED25519, key);
        let valid = self.signatures.iter().any(|s| {
            s.name == name
                && s.bytes.len() == 68
                && s.bytes[..4] == id
                && <[u8; 64]>::try_from(&s.bytes[4..])
                    .is_ok_and(|sig| key.verify(self.body.as_bytes(), &sig).is_ok())
        });
        if valid {
            Ok(())
        } else {
            Err(CheckpointError::MissingSignature {
                name: name.to_owned(),
            })
        }
    }

    /// Checks a `cosignature/v1` by witness `name` with `key`; returns its timestamp.
    pub fn verify_cosignature(&self, name: &str, key: &PublicKey) -> Result<u64, CheckpointError> {
        let id = key_id(name, ALGORITHM_COSIGNATURE_V1, key);
        for signature in &self.signatures {
            if signature.name != name
                || signature.bytes.len() != 4 + 8 + 64
                || signature.bytes[..4] != id
            {
                continue;
            }
            let mut timestamp = [0u8; 8];
            timestamp.copy_from_slice(&signature.bytes[4..12]);
            let timestamp = u64::from_be_bytes(timestamp);
            let Ok(sig) = <[u8; 64]>::try_from(&signature.bytes[12..]) else {
                continue;
            };
            if key
                .verify(cosigned_message(&self.body, timestamp).as_bytes(), &sig)
                .is_ok()
            {
                return Ok(timestamp);
            }
        }
        Err(CheckpointError::MissingSignature {
            name: name.to_owned(),
        })
    }
}

fn cosigned_message(body: &str, timestamp: u64) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{body}")
}

/// A witness: co-signs checkpoints of one log, each only if it is consistent with the last one
/// it co-signed. Sans-IO: the caller persists [`Witness::last`] and passes time in.
#[derive(Debug, Clone)]
pub struct Witness {
    /// The witness's key name.
    pub name: String,
    key: Keypair,
    /// The log it watches: key name and key.
    log_name: String,
    log_key: PublicKey,
    /// The last checkpoint it co-signed.
    last: Option<Checkpoint>,
}

impl Witness {
    /// A witness for the log `log_name` (key `log_key`), starting from `last` if it has co-signed before.
    pub fn new(
        name: &str,
        key: Keypair,
        log_name: &str,
        log_key: PublicKey,
        last: Option<Checkpoint>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            key,
            log_name: log_name.to_owned(),
            log_key,
            last,
        }
    }

    /// The last checkpoint co-signed.
    pub fn last(&self) -> Option<&Checkpoint> {
        self.last.as_ref()
    }

    /// Co-signs `note` at `timestamp` if the log signed it and it is consistent with the last
    /// checkpoint this witness co-signed (`proof` proves consistency from that one). Returns the
    /// note with the cosignature added.
    pub fn cosign(
        &mut self,
        note: &SignedNote,
        proof: &[Hash],
        timestamp: u64,
    ) -> Result<SignedNote, CheckpointError> {
        note.verify(&self.log_name, &self.log_key)?;
        let checkpoint = Checkpoint::parse_body(&note.body)?;
        if checkpoint.origin != self.log_name {
            return Err(CheckpointError::Inconsistent(format!(
                "checkpoint origin `{}` is not the watched log `{}`",
                checkpoint.origin, self.log_name
            )));
        }
        if let Some(last) = &self.last {
            if checkpoint.size < last.size {
                return Err(CheckpointError::Inconsistent(format!(
                    "size {} is below the {} already co-signed",
                    checkpoint.size, last.size
                )));
            }
            if last.size > 0 {
                verify_consistency(
                    last.size,
                    checkpoint.size,
                    &last.root,
                    &checkpoint.root,
                    proof,
                )
                .map_err(|e| CheckpointError::Inconsistent(e.to_string()))?;
            }
        }
        let mut bytes = key_id(&self.name, ALGORITHM_COSIGNATURE_V1, &self.key.public()).to_vec();
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(
            &self
                .key
                .sign(cosigned_message(&note.body, timestamp).as_bytes()),
        );
        let mut cosigned = note.clone();
        cosigned.signatures.retain(|s| s.name != self.name);
        cosigned.signatures.push(NoteSignature {
            name: self.name.clone(),
            bytes,
        });
        self.last = Some(checkpoint);
        Ok(cosigned)
    }
}

/// Two checkpoints signed by one log with the same size and different roots: a split view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointEquivocation {
    /// The first signed checkpoint (note text).
    pub first: String,
    /// The conflicting one.
    pub second: String,
}

impl CheckpointEquivocation {
    /// Checks the proof against the log's key: both notes signed by it, same origin and size,
    /// different roots. Returns the size.
    pub fn verify(&self, log_name: &str, log_key: &PublicKey) -> Result<u64, CheckpointError> {
        let first = SignedNote::parse(&self.first)?;
        let second = SignedNote::parse(&self.second)?;
        first.verify(log_name, log_key)?;
        second.verify(log_name, log_key)?;
        let a = Checkpoint::parse_body(&first.body)?;
        let b = Checkpoint::parse_body(&second.body)?;
        if a.origin != b.origin || a.size != b.size {
            return Err(CheckpointError::Malformed(
                "checkpoints differ in origin or size".into(),
            ));
        }
        if a.root == b.root {
            return Err(CheckpointError::Malformed("checkpoints agree".into()));
        }
        Ok(a.size)
    }
}

//! The registry tree: a Merkle Search Tree mapping agent keys to manifest CIDs.
//!
//! Follows the atproto repository specification's MST: a key's layer is the number of leading
//! zero 2-bit groups in the hash of the key; a node at layer `L` holds the keys of layer `L` in
//! order, and between them (and before the first) optional subtrees at layer `L - 1`. Each node
//! is a DAG-CBOR block `{l, e: [{p, k, v, t}]}` with keys prefix-compressed against the previous
//! entry of the same node. The shape depends only on the set of keys, never on insertion order,
//! so equal registries have equal roots, and a change rewrites only the nodes on its path.
//!
//! Nodes live in memory behind [`Arc`]s and cache their own encoding, so after an update only
//! the O(log n) rewritten nodes are encoded and hashed again. The hash function is a type
//! parameter: [`crate::ids::Blake3`] for Meridian data, [`crate::ids::Sha256`] for the atproto
//! conformance vectors.

use std::collections::{BTreeMap, HashSet};
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use cid::Cid;

use crate::cbor::{self, Value};
use crate::ids::{self, CODEC_DAG_CBOR, HashFunction};

/// Deepest tree [`Mst::load`] accepts, in layers. Reaching layer 48 by chance needs a key hash
/// with 96 leading zero bits, so an honest registry never comes near it.
pub const TREE_DEPTH_MAX: u32 = 48;

/// The layer of `key` in a tree hashed with `H`: leading zero 2-bit groups of `H(key)`.
pub fn key_layer<H: HashFunction>(key: &[u8]) -> u32 {
    let digest = H::digest(key);
    let mut layer = 0;
    for byte in digest {
        if byte == 0 {
            layer += 4;
            continue;
        }
        layer += byte.leading_zeros() / 2;
        break;
    }
    layer
}

/// Length of the common prefix of two keys, in bytes.
pub fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[derive(Debug)]
struct Node {
    layer: u32,
    left: Option<Arc<Node>>,
    entries: Vec<Entry>,
    /// The node's block and CID, computed once.
    block: OnceLock<(Cid, Arc<[u8]>)>,
}

#[derive(Debug, Clone)]
struct Entry {
    key: Arc<[u8]>,
    value: Cid,
    right: Option<Arc<Node>>,
}

impl Node {
    fn new(layer: u32, left: Option<Arc<Node>>, entries: Vec<Entry>) -> Self {
        Self {
            layer,
            left,
            entries,
            block: OnceLock::new(),
        }
    }

    /// The subtree between entry `index - 1` and entry `index`.
    fn gap(&self, index: usize) -> Option<&Arc<Node>> {
        if index == 0 {
            self.left.as_ref()
        } else {
            self.entries[index - 1].right.as_ref()
        }
    }

    fn set_gap(&mut self, index: usize, subtree: Option<Arc<Node>>) {
        if index == 0 {
            self.left = subtree;
        } else {
            self.entries[index - 1].right = subtree;
        }
    }

    fn copy(&self) -> Node {
        Node::new(self.layer, self.left.clone(), self.entries.clone())
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.left.is_none()
    }

    fn position(&self, key: &[u8]) -> usize {
        self.entries.partition_point(|entry| &*entry.key < key)
    }

    fn block<H: HashFunction>(&self) -> &(Cid, Arc<[u8]>) {
        self.block.get_or_init(|| {
            let bytes = cbor::encode(&self.to_value::<H>());
            (ids::cid_of::<H>(CODEC_DAG_CBOR, &bytes), bytes.into())
        })
    }

    fn cid<H: HashFunction>(&self) -> Cid {
        self.block::<H>().0
    }

    fn to_value<H: HashFunction>(&self) -> Value {
        let link = |subtree: &Option<Arc<Node>>| match subtree {
            Some(node) => Value::Link(node.cid::<H>()),
            None => Value::Null,
        };
        let mut previous: &[u8] = &[];
        let entries = self
            .entries
            .iter()
            .map(|entry| {
                let shared = common_prefix_len(previous, &entry.key);
                previous = &entry.key;
                cbor::map([
                    ("p", Value::Integer(shared as i128)),
                    ("k", Value::Bytes(entry.key[shared..].to_vec())),
                    ("v", Value::Link(entry.value)),
                    ("t", link(&entry.right)),
                ])
            })
            .collect();
        cbor::map([("l", link(&self.left)), ("e", Value::Array(entries))])
    }
}

fn normalize(node: Node) -> Option<Arc<Node>> {
    if node.is_empty() {
        None
    } else {
        Some(Arc::new(node))
    }
}

/// A Merkle Search Tree over hash function `H`. Cheap to clone; clones share nodes.
pub struct Mst<H: HashFunction> {
    root: Option<Arc<Node>>,
    len: usize,
    hash: PhantomData<H>,
}

impl<H: HashFunction> Clone for Mst<H> {
    fn clone(&self) -> Self {
        Self {
            root: self.root.clone(),
            len: self.len,
            hash: PhantomData,
        }
    }
}

impl<H: HashFunction> Default for Mst<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: HashFunction> std::fmt::Debug for Mst<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mst")
            .field("root", &self.root_cid())
            .field("len", &self.len)
            .finish()
    }
}

/// What changed between two trees, from [`Mst::diff`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeDiff {
    /// Keys only in the new tree, with their values.
    pub added: Vec<(Vec<u8>, Cid)>,
    /// Keys only in the old tree, with their old values.
    pub removed: Vec<(Vec<u8>, Cid)>,
    /// Keys in both with different values: `(key, old, new)`.
    pub changed: Vec<(Vec<u8>, Cid, Cid)>,
    /// Tree nodes of the new tree that the old tree does not have, as `(cid, block)`.
    pub new_nodes: Vec<(Cid, Arc<[u8]>)>,
}

/// Why blocks could not be loaded as a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A node block the tree links to is not available.
    #[error("missing tree block {cid}")]
    MissingBlock {
        /// The missing block.
        cid: Cid,
    },
    /// A node block does not hash to its CID.
    #[error(transparent)]
    Block(#[from] ids::BlockError),
    /// A node block is not canonical DAG-CBOR.
    #[error("tree block {cid}: {error}")]
    NonCanonical {
        /// The block.
        cid: Cid,
        /// The decoding error.
        error: cbor::DecodeError,
    },
    /// A node block decodes but is not a valid tree node, or breaks the tree's invariants.
    #[error("tree block {cid}: {problem}")]
    Invalid {
        /// The block.
        cid: Cid,
        /// What is wrong.
        problem: String,
    },
    /// The tree is deeper than allowed.
    #[error("tree depth {depth} exceeds the limit of {max} layers")]
    TooDeep {
        /// The depth found.
        depth: u32,
        /// The limit.
        max: u32,
    },
    /// The tree holds more keys than allowed.
    #[error("tree holds more than {max} keys")]
    TooManyKeys {
        /// The limit.
        max: usize,
    },
}

impl<H: HashFunction> Mst<H> {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            root: None,
            len: 0,
            hash: PhantomData,
        }
    }

    /// Builds a tree from `(key, value)` pairs in any order; later duplicates replace earlier.
    pub fn from_entries<K: AsRef<[u8]>>(entries: impl IntoIterator<Item = (K, Cid)>) -> Self {
        let mut sorted: BTreeMap<Vec<u8>, Cid> = BTreeMap::new();
        for (key, value) in entries {
            sorted.insert(key.as_ref().to_vec(), value);
        }
        let items: Vec<(Arc<[u8]>, Cid, u32)> = sorted
            .into_iter()
            .map(|(key, value)| {
                let layer = key_layer::<H>(&key);
                (Arc::from(key), value, layer)
            })
            .collect();
        let len = items.len();
        let root = items
            .iter()
            .map(|item| item.2)
            .max()
            .and_then(|top| build(&items, top));
        Self {
            root,
            len,
            hash: PhantomData,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree has no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The CID of the root node (the empty node for an empty tree).
    pub fn root_cid(&self) -> Cid {
        match &self.root {
            Some(node) => node.cid::<H>(),
            None => Node::new(0, None, Vec::new()).cid::<H>(),
        }
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Option<Cid> {
        let mut node = self.root.as_ref()?;
        loop {
            let index = node.position(key);
            if let Some(entry) = node.entries.get(index)
                && &*entry.key == key
            {
                return Some(entry.value);
            }
            node = node.gap(index)?;
        }
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: &[u8], value: Cid) -> Option<Cid> {
        let layer = key_layer::<H>(key);
        let previous = self.get(key);
        let root = match self.root.take() {
            None => Arc::new(Node::new(layer, None, vec![leaf(key, value)])),
            Some(root) if layer > root.layer => {
                let (left, right) = split(Some(&root), key);
                let mut entry = leaf(key, value);
                entry.right = lift(right, layer - 1);
                Arc::new(Node::new(layer, lift(left, layer - 1), vec![entry]))
            }
            Some(root) => insert_into(&root, key, value, layer),
        };
        self.root = Some(root);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes `key`, returning its value if it was present.
    pub fn remove(&mut self, key: &[u8]) -> Option<Cid> {
        let previous = self.get(key)?;
        let root = self.root.take()?;
        let mut root = remove_from(&root, key);
        // Trim: the root must hold entries unless the tree is empty.
        while let Some(node) = &root {
            if node.entries.is_empty() {
                root = node.left.clone();
            } else {
                break;
            }
        }
        self.root = root;
        self.len -= 1;
        Some(previous)
    }

    /// Calls `visit` for every `(key, value)` with `start <= key < end` in key order
    /// (`end = None` means no upper bound), skipping subtrees outside the range.
    pub fn for_each_in_range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], Cid),
    ) {
        if let Some(root) = &self.root {
            walk_range(root, start, end, &mut |key, value| visit(key, value));
        }
    }

    /// Every `(key, value)` in key order, the keys shared with the tree rather than copied.
    pub fn shared_entries(&self) -> Vec<(Arc<[u8]>, Cid)> {
        let mut out = Vec::with_capacity(self.len);
        if let Some(root) = &self.root {
            walk_range(root, &[], None, &mut |key, value| {
                out.push((key.clone(), value))
            });
        }
        out
    }

    /// Every `(key, value)` in key order.
    pub fn entries(&self) -> Vec<(Vec<u8>, Cid)> {
        let mut out = Vec::with_capacity(self.len);
        self.for_each_in_range(&[], None, &mut |key, value| out.push((key.to_vec(), value)));
        out
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Cid)> {
        let end = prefix_successor(prefix);
        let mut out = Vec::new();
        self.for_each_in_range(prefix, end.as_deref(), &mut |key, value| {
            out.push((key.to_vec(), value))
        });
        out
    }

    /// Every node block of the tree, root first, as `(cid, block)`.
    pub fn blocks(&self) -> Vec<(Cid, Arc<[u8]>)> {
        let mut out = Vec::new();
        match &self.root {
            Some(root) => collect_blocks::<H>(root, &mut out),
            None => {
                let node = Node::new(0, None, Vec::new());
                let (cid, bytes) = node.block::<H>();
                out.push((*cid, bytes.clone()));
            }
        }
        out
    }

    /// Depth of the tree in layers (0 for an empty tree or a single layer-0 node).
    pub fn depth(&self) -> u32 {
        self.root.as_ref().map_or(0, |root| root.layer)
    }

    /// The blocks a reader needs to check `key`'s presence or absence, and to undo a write of it:
    /// the path to the key and, where the key sits, the edges of its neighbouring subtrees.
    pub fn covering_proof(&self, key: &[u8]) -> Vec<(Cid, Arc<[u8]>)> {
        let mut out = Vec::new();
        if let Some(root) = &self.root {
            proof_walk::<H>(root, key, &mut out);
        } else {
            out = self.blocks();
        }
        out
    }

    /// What changed from `old` to `self`, skipping every subtree the two share.
    pub fn diff(&self, old: &Mst<H>) -> TreeDiff {
        let mut diff = TreeDiff::default();
        let mut old_stack = Cursor::new(old.root.clone());
        let mut new_stack = Cursor::new(self.root.clone());
        let mut old_nodes: HashSet<Cid> = HashSet::new();
        let mut new_nodes: Vec<(Cid, Arc<[u8]>)> = Vec::new();
        loop {
            match (old_stack.peek(), new_stack.peek()) {
                (None, None) => break,
                (Some(Item::Tree(a)), Some(Item::Tree(b))) => {
                    let (a_cid, b_cid) = (a.cid::<H>(), b.cid::<H>());
                    if a_cid == b_cid {
                        old_stack.pop();
                        new_stack.pop();
                    } else if a.layer > b.layer {
                        old_nodes.insert(a_cid);
                        old_stack.expand();
                    } else if b.layer > a.layer {
                        new_nodes.push(b.block::<H>().clone());
                        new_stack.expand();
                    } else {
                        old_nodes.insert(a_cid);
                        new_nodes.push(b.block::<H>().clone());
                        old_stack.expand();
                        new_stack.expand();
                    }
                }
                (Some(Item::Tree(a)), _) => {
                    old_nodes.insert(a.cid::<H>());
                    old_stack.expand();
                }
                (_, Some(Item::Tree(b))) => {
                    new_nodes.push(b.block::<H>().clone());
                    new_stack.expand();
                }
                (Some(Item::Leaf(a_key, a_value)), Some(Item::Leaf(b_key, b_value))) => {
                    match a_key.cmp(&b_key) {
                        std::cmp::Ordering::Less => {
                            diff.removed.push((a_key.to_vec(), a_value));
                            old_stack.pop();
                        }
                        std::cmp::Ordering::Greater => {
                            diff.added.push((b_key.to_vec(), b_value));
                            new_stack.pop();
                        }
                        std::cmp::Ordering::Equal => {
                            if a_value != b_value {
                                diff.changed.push((a_key.to_vec(), a_value, b_value));
                            }
                            old_stack.pop();
                            new_stack.pop();
                        }
                    }
                }
                (Some(Item::Leaf(a_key, a_value)), None) => {
                    diff.removed.push((a_key.to_vec(), a_value));
                    old_stack.pop();
                }
                (None, Some(Item::Leaf(b_key, b_value))) => {
                    diff.added.push((b_key.to_vec(), b_value));
                    new_stack.pop();
                }
            }
        }
        let new_root = self.root_cid();
        if self.root.is_none() && new_root != old.root_cid() {
            new_nodes.extend(self.blocks());
        }
        diff.new_nodes = new_nodes
            .into_iter()
            .filter(|(cid, _)| !old_nodes.contains(cid))
            .collect();
        diff
    }

    /// Loads a tree from its root CID, fetching node blocks with `get`. Every block is hashed
    /// against its CID, decoded strictly, and checked against the tree's invariants (layers,
    /// key order, canonical prefix compression, and the key-count limit; depth is limited to
    /// [`TREE_DEPTH_MAX`]).
    pub fn load(
        root: &Cid,
        keys_max: usize,
        get: &mut dyn FnMut(&Cid) -> Option<Arc<[u8]>>,
    ) -> Result<Self, LoadError> {
        Self::load_with_depth(root, keys_max, TREE_DEPTH_MAX, get)
    }

    /// [`Mst::load`] with an explicit depth limit in layers.
    pub fn load_with_depth(
        root: &Cid,
        keys_max: usize,
        depth_max: u32,
        get: &mut dyn FnMut(&Cid) -> Option<Arc<[u8]>>,
    ) -> Result<Self, LoadError> {
        Self::load_visiting(root, keys_max, depth_max, get, &mut |_, _| {})
    }

    /// [`Mst::load_with_depth`] that also calls `visit` with every `(key, value)` in key order
    /// as the load reaches it, so a caller can start work on the values (verifying manifests)
    /// before the whole tree is loaded. A visited entry has passed every check that needs only
    /// the nodes above it; the load can still fail later, so work done on it must not count
    /// until the load returns `Ok`.
    pub fn load_visiting(
        root: &Cid,
        keys_max: usize,
        depth_max: u32,
        get: &mut dyn FnMut(&Cid) -> Option<Arc<[u8]>>,
        visit: &mut dyn FnMut(&Arc<[u8]>, Cid),
    ) -> Result<Self, LoadError> {
        let bytes = get(root).ok_or(LoadError::MissingBlock { cid: *root })?;
        let mut loader = Loader::<H> {
            get,
            visit,
            keys_max,
            len: 0,
            previous_key: None,
            hash: PhantomData,
        };
        let decoded = loader.decode(root, bytes)?;
        if decoded.entries.is_empty() {
            if decoded.left.is_some() {
                return Err(LoadError::Invalid {
                    cid: *root,
                    problem: "root holds no entries but has a subtree (untrimmed tree)".into(),
                });
            }
            return Ok(Self::new());
        }
        let layer = key_layer::<H>(&decoded.entries[0].0);
        if layer > depth_max {
            return Err(LoadError::TooDeep {
                depth: layer,
                max: depth_max,
            });
        }
        let node = loader.build(root, decoded, layer)?;
        Ok(Self {
            len: loader.len,
            root: Some(node),
            hash: PhantomData,
        })
    }
}

/// Decodes one tree node on its own (no store behind it).
fn decode_one<H: HashFunction>(cid: &Cid, bytes: Arc<[u8]>) -> Result<DecodedNode, LoadError> {
    let mut none = |_: &Cid| None;
    let mut loader = Loader::<H> {
        get: &mut none,
        visit: &mut |_, _| {},
        keys_max: usize::MAX,
        len: 0,
        previous_key: None,
        hash: PhantomData,
    };
    loader.decode(cid, bytes)
}

/// The links out of one tree node: what a sync walk fetches next when it holds the node but not
/// what it points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLinks {
    /// Subtree nodes (the left pointer and every entry's right pointer).
    pub subtrees: Vec<Cid>,
    /// Entries: full key and value (a manifest CID in the registry).
    pub values: Vec<(Vec<u8>, Cid)>,
}

/// Decodes one tree node block on its own: the hash is checked against `cid`, the encoding
/// strictly, and the prefix compression; the invariants that need the whole tree (layers, global
/// key order) are checked when the complete tree is loaded.
pub fn node_links<H: HashFunction>(cid: &Cid, bytes: Arc<[u8]>) -> Result<NodeLinks, LoadError> {
    let decoded = decode_one::<H>(cid, bytes)?;
    let mut subtrees: Vec<Cid> = decoded.left.into_iter().collect();
    let mut values = Vec::with_capacity(decoded.entries.len());
    for (key, value, right) in decoded.entries {
        subtrees.extend(right);
        values.push((key.to_vec(), value));
    }
    Ok(NodeLinks { subtrees, values })
}

/// What changed from the tree rooted at `old` to the tree rooted at `new` (`None`: the empty
/// tree), reading node blocks one at a time with `get` and skipping every subtree the two share,
/// so a one-key change in a tree of `n` keys reads O(log n) nodes instead of loading both trees.
/// Each block read is checked against its CID and decoded strictly, but the invariants that need
/// a whole tree (layers, global key order, limits) are not checked again: both trees must have
/// been verified before, as every tree a node stores has. `new_nodes` lists the new tree's
/// nodes that were read and are not in the old tree.
pub fn diff_stored<H: HashFunction>(
    old: Option<&Cid>,
    new: &Cid,
    get: &mut dyn FnMut(&Cid) -> Option<Arc<[u8]>>,
) -> Result<TreeDiff, LoadError> {
    let mut diff = TreeDiff::default();
    let mut old_cursor = StoredCursor::start::<H>(old, get)?;
    let mut new_cursor = StoredCursor::start::<H>(Some(new), get)?;
    let mut old_nodes: HashSet<Cid> = HashSet::new();
    let mut new_nodes: Vec<(Cid, Arc<[u8]>)> = Vec::new();
    new_nodes.extend(new_cursor.root_block.take());
    if let Some((cid, _)) = old_cursor.root_block.take() {
        old_nodes.insert(cid);
    }
    loop {
        match (old_cursor.stack.last(), new_cursor.stack.last()) {
            (None, None) => break,
            (Some(StoredItem::Tree(a, a_layer)), Some(StoredItem::Tree(b, b_layer))) => {
                let (a, b, a_layer, b_layer) = (*a, *b, *a_layer, *b_layer);
                if a == b {
                    old_cursor.stack.pop();
                    new_cursor.stack.pop();
                } else {
                    if a_layer >= b_layer {
                        old_nodes.insert(a);
                        old_cursor.expand::<H>(get)?;
                    }
                    if b_layer >= a_layer {
                        new_nodes.extend(new_cursor.expand::<H>(get)?);
                    }
                }
            }
            (Some(StoredItem::Tree(a, _)), _) => {
                old_nodes.insert(*a);
                old_cursor.expand::<H>(get)?;
            }
            (_, Some(StoredItem::Tree(..))) => {
                new_nodes.extend(new_cursor.expand::<H>(get)?);
            }
            (Some(StoredItem::Leaf(a_key, a_value)), Some(StoredItem::Leaf(b_key, b_value))) => {
                match a_key.cmp(b_key) {
                    std::cmp::Ordering::Less => {
                        diff.removed.push((a_key.to_vec(), *a_value));
                        old_cursor.stack.pop();
                    }
                    std::cmp::Ordering::Greater => {
                        diff.added.push((b_key.to_vec(), *b_value));
                        new_cursor.stack.pop();
                    }
                    std::cmp::Ordering::Equal => {
                        if a_value != b_value {
                            diff.changed.push((a_key.to_vec(), *a_value, *b_value));
                        }
                        old_cursor.stack.pop();
                        new_cursor.stack.pop();
                    }
                }
            }
            (Some(StoredItem::Leaf(a_key, a_value)), None) => {
                diff.removed.push((a_key.to_vec(), *a_value));
                old_cursor.stack.pop();
            }
            (None, Some(StoredItem::Leaf(b_key, b_value))) => {
                diff.added.push((b_key.to_vec(), *b_value));
                new_cursor.stack.pop();
            }
        }
    }
    diff.new_nodes = new_nodes
        .into_iter()
        .filter(|(cid, _)| !old_nodes.contains(cid))
        .collect();
    Ok(diff)
}

/// A decoded node's entries: `(full key, value, right subtree)`.
type DecodedEntry = (Arc<[u8]>, Cid, Option<Cid>);
/// A block and its CID.
type NodeBlock = (Cid, Arc<[u8]>);

/// An item of [`StoredCursor`]: a subtree not read yet (its CID and layer), or an entry.
enum StoredItem {
    Tree(Cid, u32),
    Leaf(Arc<[u8]>, Cid),
}

/// [`Cursor`] over blocks in a store: a subtree is read only when it is expanded.
struct StoredCursor {
    /// Items in reverse order.
    stack: Vec<StoredItem>,
    /// The root block, read to learn the root's layer.
    root_block: Option<NodeBlock>,
}

impl StoredCursor {
    fn start<H: HashFunction>(
        root: Option<&Cid>,
        get: &mut dyn FnMut(&Cid) -> Option<Arc<[u8]>>,
    ) -> Result<Self, LoadError> {
        let mut cursor = Self {
            stack: Vec::new(),
            root_block: None,
        };
        let Some(root) = root else {
            return Ok(cursor);
        };
        let bytes = get(root).ok_or(LoadError::MissingBlock { cid: *root })?;
        let decoded = decode_one::<H>(root, bytes)?;
        let Some((first, _, _)) = decoded.entries.first() else {
            // An empty tree (a root with no entries has no subtree either: it was verified).
            return Ok(cursor);
        };
        let layer = key_layer::<H>(first);
        cursor.push(decoded.left, &decoded.entries, layer);
        cursor.root_block = Some(decoded.block);
        Ok(cursor)
    }

    fn push(&mut self, left: Option<Cid>, entries: &[DecodedEntry], layer: u32) {
        let child = layer.saturating_sub(1);
        for (key, value, right) in entries.iter().rev() {
            if let Some(right) = right {
                self.stack.push(StoredItem::Tree(*right, child));
            }
            self.stack.push(StoredItem::Leaf(key.clone(), *value));
        }
        if let Some(left) = left {
            self.stack.push(StoredItem::Tree(left, child));
        }
    }

    /// Reads the subtree on top and puts its items in its place; returns its block.
    fn expand<H: HashFunction>(
        &mut self,
        get: &mut dyn FnMut(&Cid) -> Option<Arc<[u8]>>,
    ) -> Result<Option<NodeBlock>, LoadError> {
        let Some(StoredItem::Tree(cid, layer)) = self.stack.pop() else {
            return Ok(None);
        };
        let bytes = get(&cid).ok_or(LoadError::MissingBlock { cid })?;
        let decoded = decode_one::<H>(&cid, bytes)?;
        self.push(decoded.left, &decoded.entries, layer);
        Ok(Some(decoded.block))
    }
}

/// One step of a key lookup that fetches tree nodes one at a time (a hub reading through its
/// cache): what the node at hand says about the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupStep {
    /// The key is here, with this value.
    Found(Cid),
    /// The key can only be in this subtree: fetch it and step again.
    Descend(Cid),
    /// The key is not in the tree.
    Absent,
}

/// Looks for `key` in one tree node (checked against `cid` as [`node_links`] does).
pub fn lookup_step<H: HashFunction>(
    cid: &Cid,
    bytes: Arc<[u8]>,
    key: &[u8],
) -> Result<LookupStep, LoadError> {
    let decoded = decode_one::<H>(cid, bytes)?;
    let index = decoded.entries.partition_point(|(k, _, _)| &k[..] < key);
    if let Some((k, value, _)) = decoded.entries.get(index)
        && &k[..] == key
    {
        return Ok(LookupStep::Found(*value));
    }
    let gap = if index == 0 {
        decoded.left
    } else {
        decoded.entries[index - 1].2
    };
    Ok(gap.map_or(LookupStep::Absent, LookupStep::Descend))
}

fn leaf(key: &[u8], value: Cid) -> Entry {
    Entry {
        key: Arc::from(key),
        value,
        right: None,
    }
}

/// Builds the subtree at `layer` for `items` (sorted, all of layer <= `layer`).
fn build(items: &[(Arc<[u8]>, Cid, u32)], layer: u32) -> Option<Arc<Node>> {
    if items.is_empty() {
        return None;
    }
    let child = |segment: &[(Arc<[u8]>, Cid, u32)]| {
        if layer == 0 {
            None
        } else {
            build(segment, layer - 1)
        }
    };
    let mut entries = Vec::new();
    let mut segment_start = 0;
    let mut left = None;
    for (index, item) in items.iter().enumerate() {
        if item.2 == layer {
            let subtree = child(&items[segment_start..index]);
            match entries.last_mut() {
                None => left = subtree,
                Some(previous) => {
                    let previous: &mut Entry = previous;
                    previous.right = subtree;
                }
            }
            entries.push(Entry {
                key: item.0.clone(),
                value: item.1,
                right: None,
            });
            segment_start = index + 1;
        }
    }
    let tail = child(&items[segment_start..]);
    match entries.last_mut() {
        None => left = tail,
        Some(last) => last.right = tail,
    }
    normalize(Node::new(layer, left, entries))
}

/// Wraps `subtree` in entry-less nodes until it sits at `layer`.
fn lift(subtree: Option<Arc<Node>>, layer: u32) -> Option<Arc<Node>> {
    let mut node = subtree?;
    while node.layer < layer {
        node = Arc::new(Node::new(node.layer + 1, Some(node), Vec::new()));
    }
    Some(node)
}

/// A chain of nodes from `layer` down to `key`'s own layer, holding only `key`.
fn chain(layer: u32, key: &[u8], value: Cid, key_layer: u32) -> Arc<Node> {
    let mut node = Arc::new(Node::new(key_layer, None, vec![leaf(key, value)]));
    while node.layer < layer {
        node = Arc::new(Node::new(node.layer + 1, Some(node), Vec::new()));
    }
    node
}

fn insert_into(node: &Arc<Node>, key: &[u8], value: Cid, layer: u32) -> Arc<Node> {
    let index = node.position(key);
    let mut copy = node.copy();
    if node.layer == layer {
        if let Some(entry) = copy.entries.get_mut(index)
            && &*entry.key == key
        {
            entry.value = value;
            return Arc::new(copy);
        }
        let (left, right) = split(node.gap(index), key);
        let mut entry = leaf(key, value);
        entry.right = right;
        copy.entries.insert(index, entry);
        copy.set_gap(index, left);
    } else {
        let child = match node.gap(index) {
            Some(child) => insert_into(child, key, value, layer),
            None => chain(node.layer - 1, key, value, layer),
        };
        copy.set_gap(index, Some(child));
    }
    Arc::new(copy)
}

/// Splits a subtree into the parts below and above `key` (which it does not hold).
fn split(node: Option<&Arc<Node>>, key: &[u8]) -> (Option<Arc<Node>>, Option<Arc<Node>>) {
    let Some(node) = node else {
        return (None, None);
    };
    let index = node.position(key);
    let (below, above) = split(node.gap(index), key);
    let mut left = Node::new(
        node.layer,
        node.left.clone(),
        node.entries[..index].to_vec(),
    );
    left.set_gap(index, below);
    let right = Node::new(node.layer, above, node.entries[index..].to_vec());
    (normalize(left), normalize(right))
}

fn remove_from(node: &Arc<Node>, key: &[u8]) -> Option<Arc<Node>> {
    let index = node.position(key);
    let mut copy = node.copy();
    if let Some(entry) = node.entries.get(index)
        && &*entry.key == key
    {
        let merged = merge(node.gap(index).cloned(), entry.right.clone());
        copy.entries.remove(index);
        copy.set_gap(index, merged);
    } else if let Some(child) = node.gap(index) {
        let child = remove_from(child, key);
        copy.set_gap(index, child);
    }
    normalize(copy)
}

/// Joins two adjacent subtrees of the same layer (all keys of `a` below all keys of `b`).
fn merge(a: Option<Arc<Node>>, b: Option<Arc<Node>>) -> Option<Arc<Node>> {
    match (a, b) {
        (None, other) | (other, None) => other,
        (Some(a), Some(b)) => {
            let mut joined = a.copy();
            let seam = joined.entries.len();
            let inner = merge(joined.gap(seam).cloned(), b.left.clone());
            joined.set_gap(seam, inner);
            joined.entries.extend(b.entries.iter().cloned());
            normalize(joined)
        }
    }
}

fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn walk_range(
    node: &Arc<Node>,
    start: &[u8],
    end: Option<&[u8]>,
    visit: &mut dyn FnMut(&Arc<[u8]>, Cid),
) {
    let first = node.position(start);
    for index in first..=node.entries.len() {
        if let Some(subtree) = node.gap(index) {
            walk_range(subtree, start, end, visit);
        }
        let Some(entry) = node.entries.get(index) else {
            break;
        };
        if end.is_some_and(|end| &*entry.key >= end) {
            return;
        }
        visit(&entry.key, entry.value);
    }
}

fn collect_blocks<H: HashFunction>(node: &Arc<Node>, out: &mut Vec<(Cid, Arc<[u8]>)>) {
    out.push(node.block::<H>().clone());
    if let Some(left) = &node.left {
        collect_blocks::<H>(left, out);
    }
    for entry in &node.entries {
        if let Some(right) = &entry.right {
            collect_blocks::<H>(right, out);
        }
    }
}

fn proof_walk<H: HashFunction>(node: &Arc<Node>, key: &[u8], out: &mut Vec<(Cid, Arc<[u8]>)>) {
    out.push(node.block::<H>().clone());
    let index = node.position(key);
    if let Some(entry) = node.entries.get(index)
        && &*entry.key == key
    {
        if let Some(before) = node.gap(index) {
            proof_walk::<H>(before, key, out);
        }
        if let Some(after) = &entry.right {
            proof_walk::<H>(after, key, out);
        }
    } else if let Some(subtree) = node.gap(index) {
        proof_walk::<H>(subtree, key, out);
    }
}

enum Item {
    Tree(Arc<Node>),
    Leaf(Arc<[u8]>, Cid),
}

/// An in-order walk that can skip whole subtrees: the stack holds items in reverse order.
struct Cursor {
    stack: Vec<Item>,
}

impl Cursor {
    fn new(root: Option<Arc<Node>>) -> Self {
        Self {
            stack: root.map(Item::Tree).into_iter().collect(),
        }
    }

    fn peek(&self) -> Option<Item> {
        self.stack.last().map(|item| match item {
            Item::Tree(node) => Item::Tree(node.clone()),
            Item::Leaf(key, value) => Item::Leaf(key.clone(), *value),
        })
    }

    fn pop(&mut self) {
        self.stack.pop();
    }

    fn expand(&mut self) {
        if let Some(Item::Tree(node)) = self.stack.pop() {
            for entry in node.entries.iter().rev() {
                if let Some(right) = &entry.right {
                    self.stack.push(Item::Tree(right.clone()));
                }
                self.stack.push(Item::Leaf(entry.key.clone(), entry.value));
            }
            if let Some(left) = &node.left {
                self.stack.push(Item::Tree(left.clone()));
            }
        }
    }
}

struct DecodedNode {
    left: Option<Cid>,
    /// `(full key, value, right subtree)`.
    entries: Vec<(Arc<[u8]>, Cid, Option<Cid>)>,
    block: (Cid, Arc<[u8]>),
}

struct Loader<'a, H> {
    get: &'a mut dyn FnMut(&Cid) -> Option<Arc<[u8]>>,
    visit: &'a mut dyn FnMut(&Arc<[u8]>, Cid),
    keys_max: usize,
    len: usize,
    previous_key: Option<Arc<[u8]>>,
    hash: PhantomData<H>,
}

impl<H: HashFunction> Loader<'_, H> {
    fn invalid(cid: &Cid, problem: impl Into<String>) -> LoadError {
        LoadError::Invalid {
            cid: *cid,
            problem: problem.into(),
        }
    }

    fn decode(&mut self, cid: &Cid, bytes: Arc<[u8]>) -> Result<DecodedNode, LoadError> {
        ids::verify_block(cid, &bytes)?;
        if cid.codec() != CODEC_DAG_CBOR || cid.hash().code() != H::CODE {
            return Err(Self::invalid(
                cid,
                "tree node named with the wrong codec or hash",
            ));
        }
        let value = cbor::decode_ref(&bytes)
            .map_err(|error| LoadError::NonCanonical { cid: *cid, error })?;
        let shape = |error: cbor::ShapeError| Self::invalid(cid, error.to_string());
        let mut reader = cbor::MapRefReader::new(value).map_err(shape)?;
        let left = reader.nullable_link("l").map_err(shape)?;
        let raw_entries = reader.array("e").map_err(shape)?;
        reader.finish().map_err(shape)?;
        let mut entries: Vec<(Arc<[u8]>, Cid, Option<Cid>)> = Vec::with_capacity(raw_entries.len());
        // The full key under construction: the shared prefix of the previous key, then the suffix.
        let mut key: Vec<u8> = Vec::new();
        for raw in raw_entries {
            let mut entry = cbor::MapRefReader::new(raw).map_err(shape)?;
            let shared = entry.u64("p").map_err(shape)? as usize;
            let suffix = entry.bytes("k").map_err(shape)?;
            let value = entry.link("v").map_err(shape)?;
            let right = entry.nullable_link("t").map_err(shape)?;
            entry.finish().map_err(shape)?;
            if shared > key.len() {
                return Err(Self::invalid(
                    cid,
                    "key prefix longer than the previous key",
                ));
            }
            if entries.is_empty() && shared != 0 {
                return Err(Self::invalid(
                    cid,
                    "first key of a node is prefix-compressed",
                ));
            }
            // Canonical compression shares the longest common prefix: the suffix must not
            // start with the byte that followed the prefix in the previous key.
            if !entries.is_empty() && key.len() > shared && suffix.first() == Some(&key[shared]) {
                return Err(Self::invalid(
                    cid,
                    "key prefix compression is not canonical",
                ));
            }
            key.truncate(shared);
            key.extend_from_slice(suffix);
            entries.push((Arc::from(&key[..]), value, right));
        }
        Ok(DecodedNode {
            left,
            entries,
            block: (*cid, bytes),
        })
    }

    fn child(
        &mut self,
        parent: &Cid,
        cid: Option<Cid>,
        layer: u32,
    ) -> Result<Option<Arc<Node>>, LoadError> {
        let Some(cid) = cid else {
            return Ok(None);
        };
        if layer == 0 {
            return Err(Self::invalid(parent, "layer 0 node has a subtree"));
        }
        let bytes = (self.get)(&cid).ok_or(LoadError::MissingBlock { cid })?;
        let decoded = self.decode(&cid, bytes)?;
        if decoded.entries.is_empty() && decoded.left.is_none() {
            return Err(Self::invalid(&cid, "empty node inside the tree"));
        }
        self.build(&cid, decoded, layer - 1).map(Some)
    }

    fn build(
        &mut self,
        cid: &Cid,
        decoded: DecodedNode,
        layer: u32,
    ) -> Result<Arc<Node>, LoadError> {
        let left = self.child(cid, decoded.left, layer)?;
        let mut entries = Vec::with_capacity(decoded.entries.len());
        for (key, value, right) in decoded.entries {
            if key_layer::<H>(&key) != layer {
                return Err(Self::invalid(
                    cid,
                    format!(
                        "key {} is not on layer {layer}",
                        String::from_utf8_lossy(&key)
                    ),
                ));
            }
            if self
                .previous_key
                .as_ref()
                .is_some_and(|previous| previous[..] >= key[..])
            {
                return Err(Self::invalid(
                    cid,
                    "keys are not in strictly increasing order",
                ));
            }
            self.previous_key = Some(key.clone());
            self.len += 1;
            if self.len > self.keys_max {
                return Err(LoadError::TooManyKeys { max: self.keys_max });
            }
            (self.visit)(&key, value);
            let right = self.child(cid, right, layer)?;
            entries.push(Entry { key, value, right });
        }
        let node = Node::new(layer, left, entries);
        let _ = node.block.set(decoded.block);
        Ok(Arc::new(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Blake3;

    #[test]
    fn lookup_steps_find_what_get_finds() {
        let leaf = |i: usize| ids::dag_cbor_cid(&i.to_be_bytes());
        let tree =
            Mst::<Blake3>::from_entries((0..2000).map(|i| (format!("acme/agent-{i}"), leaf(i))));
        let blocks: std::collections::HashMap<Cid, Arc<[u8]>> = tree.blocks().into_iter().collect();
        let find = |key: &str| {
            let mut at = tree.root_cid();
            for _ in 0..64 {
                match lookup_step::<Blake3>(&at, blocks[&at].clone(), key.as_bytes()) {
                    Ok(LookupStep::Found(value)) => return Some(value),
                    Ok(LookupStep::Descend(next)) => at = next,
                    Ok(LookupStep::Absent) => return None,
                    Err(error) => panic!("{error}"),
                }
            }
            panic!("lookup did not end");
        };
        for i in [0, 1, 999, 1999] {
            assert_eq!(find(&format!("acme/agent-{i}")), Some(leaf(i)));
        }
        assert_eq!(find("acme/agent-x"), None);
        assert_eq!(find("a"), None);
        assert_eq!(find("zzz"), None);
        // A node that does not match its CID is refused.
        let root = tree.root_cid();
        let other = *blocks.keys().find(|c| **c != root).expect("several nodes");
        assert!(lookup_step::<Blake3>(&root, blocks[&other].clone(), b"acme/agent-1").is_err());
    }

    #[test]
    fn a_stored_diff_finds_what_the_loaded_diff_finds_reading_few_nodes() {
        let leaf = |i: usize| ids::dag_cbor_cid(&i.to_be_bytes());
        let n = 3000;
        let old = Mst::<Blake3>::from_entries((0..n).map(|i| (format!("acme/agent-{i}"), leaf(i))));
        let mut new = old.clone();
        new.insert(b"acme/agent-17", leaf(n + 1));
        new.insert(b"acme/agent-new", leaf(n + 2));
        new.remove(b"acme/agent-2500");
        let blocks: std::collections::HashMap<Cid, Arc<[u8]>> =
            old.blocks().into_iter().chain(new.blocks()).collect();
        let mut reads = 0;
        let mut get = |cid: &Cid| {
            reads += 1;
            blocks.get(cid).cloned()
        };
        let stored =
            diff_stored::<Blake3>(Some(&old.root_cid()), &new.root_cid(), &mut get).unwrap();
        let loaded = new.diff(&old);
        assert_eq!(stored.added, loaded.added);
        assert_eq!(stored.removed, loaded.removed);
        assert_eq!(stored.changed, loaded.changed);
        let listed = |d: &TreeDiff| d.new_nodes.iter().map(|(c, _)| *c).collect::<HashSet<_>>();
        assert_eq!(listed(&stored), listed(&loaded));
        assert!(reads < 100, "{reads} nodes read of {}", blocks.len());

        // From nothing, everything is added; to the same tree, nothing changed.
        let everything =
            diff_stored::<Blake3>(None, &old.root_cid(), &mut |c| blocks.get(c).cloned()).unwrap();
        assert_eq!(everything.added.len(), n);
        let same = diff_stored::<Blake3>(Some(&old.root_cid()), &old.root_cid(), &mut |c| {
            blocks.get(c).cloned()
        })
        .unwrap();
        assert_eq!(same, TreeDiff::default());
        // A missing or tampered block is an error, not a wrong answer.
        let missing = diff_stored::<Blake3>(Some(&old.root_cid()), &new.root_cid(), &mut |c| {
            (*c != new.root_cid())
                .then(|| blocks.get(c).cloned())
                .flatten()
        });
        assert!(matches!(missing, Err(LoadError::MissingBlock { .. })));
        let tampered = diff_stored::<Blake3>(Some(&old.root_cid()), &new.root_cid(), &mut |c| {
            blocks.get(c).map(|b| {
                let mut bytes = b.to_vec();
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
                Arc::from(bytes)
            })
        });
        assert!(tampered.is_err());
    }

    #[test]
    fn diff_lists_every_new_node() {
        for n in [10usize, 100, 1000, 3000] {
            let leaf = |i: usize| ids::dag_cbor_cid(&i.to_be_bytes());
            let old =
                Mst::<Blake3>::from_entries((0..n).map(|i| (format!("acme/agent-{i}"), leaf(i))));
            for changed in [0, n / 3, n - 1] {
                let mut new = old.clone();
                new.insert(format!("acme/agent-{changed}").as_bytes(), leaf(n + 7));
                let diff = new.diff(&old);
                let old_blocks: HashSet<Cid> = old.blocks().into_iter().map(|(c, _)| c).collect();
                let listed: HashSet<Cid> = diff.new_nodes.iter().map(|(c, _)| *c).collect();
                for (cid, _) in new.blocks() {
                    assert!(
                        old_blocks.contains(&cid) || listed.contains(&cid),
                        "n={n} changed={changed}: new node {cid} not in diff"
                    );
                }
                assert_eq!(diff.changed.len(), 1);
            }
        }
    }
}

//! Block stores: where a node keeps blocks, publisher heads and what it has already verified.
//!
//! [`BlockStore`] is the one interface; [`MemoryStore`] serves tests and simulations and
//! [`SledStore`] is the on-disk default. Every change goes through [`BlockStore::apply`] as one
//! [`StoreBatch`], applied atomically: a failed or interrupted import leaves the previous snapshot
//! current and readable. Hashes are checked when a block is written and again when it is read back.
//!
//! A store admits blocks only as part of a snapshot that verified in full (see
//! [`crate::snapshot::import`]), so every manifest it holds has had its signature checked: holding
//! a manifest is how a store remembers that it was verified, with no separate record to keep in
//! step (a separate marker per manifest cost 30% of a 100k-agent import in sled).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use cid::Cid;

use crate::ids::{self, BlockError};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage engine failed.
    #[error("storage error: {0}")]
    Backend(String),
    /// A block read back from storage no longer matches its CID (disk corruption).
    #[error("stored block is corrupt: {0}")]
    Corrupt(#[from] BlockError),
    /// Another open handle holds the store's lock: another process (a running node or hub
    /// on the same data directory), or one this process is still closing.
    #[error(
        "the store in {0} is in use by another process (is a node already running on this data directory?)"
    )]
    Locked(String),
    /// A stored record cannot be decoded.
    #[error("stored record {key} is unreadable: {reason}")]
    BadRecord {
        /// The record's key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The batch would move a publisher's head to a seq not above the one held: two imports
    /// of one publisher raced and the other won. Nothing of the batch was applied.
    #[error("head of {publisher} is at seq {held}; a batch for seq {offered} came too late")]
    HeadNotNewer {
        /// The publisher.
        publisher: String,
        /// The seq held now.
        held: u64,
        /// The seq the batch carried.
        offered: u64,
    },
}

/// The compare-and-set rule every store applies to heads inside its write lock: a head only
/// moves to a higher seq (or stays, for the very same commit), so two imports of one
/// publisher that race cannot move it backwards.
fn check_head_moves_forward(
    publisher: &str,
    held: Option<Head>,
    offered: Head,
) -> Result<(), StoreError> {
    match held {
        Some(held) if held == offered || held.seq < offered.seq => Ok(()),
        Some(held) => Err(StoreError::HeadNotNewer {
            publisher: publisher.to_owned(),
            held: held.seq,
            offered: offered.seq,
        }),
        None => Ok(()),
    }
}

/// How many times, [`LOCK_RETRY_PAUSE`] apart, opening waits for a store lock another handle
/// holds: a handle this process just dropped releases it within moments (sled's flusher
/// thread ends after the drop), a running node never does.
pub const LOCK_RETRIES: u32 = 50;
/// The pause between two tries to take a held store lock.
pub const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(40);

/// Opens the sled database in `dir`, waiting briefly for a lock held by a handle being closed.
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    let mut tries = 0;
    loop {
        // HighThroughput measured 13% faster than the default for a 100k-agent import; the
        // durability point is still the flush at the end of every `apply`.
        let opened = sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .open();
        match opened {
            // sled reports a held lock as an I/O error naming it (the OS error is inside).
            Err(sled::Error::Io(error))
                if error.kind() == std::io::ErrorKind::WouldBlock
                    || error.to_string().contains("could not acquire lock") =>
            {
                tries += 1;
                if tries > LOCK_RETRIES {
                    return Err(StoreError::Locked(dir.display().to_string()));
                }
                std::thread::sleep(LOCK_RETRY_PAUSE);
            }
            other => return Ok(other?),
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError::Backend(error.to_string())
    }
}

/// A publisher's current head as a store records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The commit CID.
    pub commit: Cid,
    /// Its seq.
    pub seq: u64,
}

/// Changes applied together or not at all.
#[derive(Debug, Default, Clone)]
pub struct StoreBatch {
    /// Blocks to add, already verified.
    pub blocks: Vec<(Cid, Arc<[u8]>)>,
    /// Publisher heads to set, keyed by the publisher's did.
    pub heads: Vec<(String, Head)>,
    /// Equivocation proofs to keep, keyed by publisher did and seq.
    pub equivocations: Vec<(String, u64, Vec<u8>)>,
}

/// Sizes for metrics and `inspect`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Blocks held.
    pub blocks: u64,
    /// Bytes of block data held.
    pub bytes: u64,
}

/// A content-addressed block store with publisher heads.
///
/// Only blocks of snapshots that verified in full may be applied: [`BlockStore::is_verified`]
/// relies on it.
pub trait BlockStore: Send + Sync {
    /// The block named `cid`, hash-checked, or `None`.
    fn get(&self, cid: &Cid) -> Result<Option<Arc<[u8]>>, StoreError>;
    /// Whether the store holds `cid`.
    fn contains(&self, cid: &Cid) -> Result<bool, StoreError>;
    /// Applies a batch atomically and durably. Every block's hash is checked first; one bad
    /// block rejects the whole batch.
    fn apply(&self, batch: StoreBatch) -> Result<(), StoreError>;
    /// The head recorded for `publisher`.
    fn head(&self, publisher: &str) -> Result<Option<Head>, StoreError>;
    /// Every recorded head, by publisher.
    fn heads(&self) -> Result<BTreeMap<String, Head>, StoreError>;
    /// Whether the manifest `cid` has been verified before: true when the store holds it.
    fn is_verified(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.contains(cid)
    }
    /// Equivocation proofs kept for `publisher`, as `(seq, proof block)`.
    fn equivocations(&self, publisher: &str) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Block count and bytes.
    fn stats(&self) -> Result<StoreStats, StoreError>;
}

fn check_batch(batch: &StoreBatch) -> Result<(), StoreError> {
    Ok(ids::verify_blocks(&batch.blocks)?)
}

#[derive(Default, Clone)]
struct MemoryInner {
    blocks: HashMap<Cid, Arc<[u8]>>,
    bytes: u64,
    heads: BTreeMap<String, Head>,
    equivocations: BTreeMap<(String, u64), Vec<u8>>,
}

/// A store in memory, for tests and simulations.
#[derive(Default, Clone)]
pub struct MemoryStore {
    inner: Arc<RwLock<MemoryInner>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An independent store with the same contents (blocks are shared, not copied or hashed
    /// again): many simulated nodes start from one verified registry this way.
    pub fn fork(&self) -> Result<Self, StoreError> {
        let inner = self.read()?.clone();
        Ok(Self {
            inner: Arc::new(RwLock::new(inner)),
        })
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, MemoryInner>, StoreError> {
        self.inner
            .read()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))
    }
}

impl BlockStore for MemoryStore {
    fn get(&self, cid: &Cid) -> Result<Option<Arc<[u8]>>, StoreError> {
        let block = self.read()?.blocks.get(cid).cloned();
        if let Some(block) = &block {
            ids::verify_block(cid, block)?;
        }
        Ok(block)
    }

    fn contains(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.read()?.blocks.contains_key(cid))
    }

    fn apply(&self, batch: StoreBatch) -> Result<(), StoreError> {
        check_batch(&batch)?;
        let mut inner = self
            .inner
            .write()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))?;
        for (publisher, head) in &batch.heads {
            check_head_moves_forward(publisher, inner.heads.get(publisher).copied(), *head)?;
        }
        for (cid, block) in batch.blocks {
            let len = block.len() as u64;
            if inner.blocks.insert(cid, block).is_none() {
                inner.bytes += len;
            }
        }
        for (publisher, head) in batch.heads {
            inner.heads.insert(publisher, head);
        }
        for (publisher, seq, proof) in batch.equivocations {
            inner.equivocations.insert((publisher, seq), proof);
        }
        Ok(())
    }

    fn head(&self, publisher: &str) -> Result<Option<Head>, StoreError> {
        Ok(self.read()?.heads.get(publisher).copied())
    }

    fn heads(&self) -> Result<BTreeMap<String, Head>, StoreError> {
        Ok(self.read()?.heads.clone())
    }

    fn equivocations(&self, publisher: &str) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .read()?
            .equivocations
            .iter()
            .filter(|((p, _), _)| p == publisher)
            .map(|((_, seq), proof)| (*seq, proof.clone()))
            .collect())
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let inner = self.read()?;
        Ok(StoreStats {
            blocks: inner.blocks.len() as u64,
            bytes: inner.bytes,
        })
    }
}

// Key prefixes of the single sled tree; one tree so that one `apply_batch` covers everything.
/// A block kept inside sled itself: how stores written before the pack file held blocks. Still
/// read, never written.
const PREFIX_BLOCK: u8 = b'b';
/// A segment record: the index of the blocks one batch appended to the pack, keyed by the
/// offset where they start (u64, big-endian).
const PREFIX_SEGMENT: u8 = b's';
const PREFIX_HEAD: u8 = b'h';
const PREFIX_EQUIVOCATION: u8 = b'e';
/// Bytes of the pack file that the index vouches for (u64, big-endian), written in the same
/// sled batch as the segment record that covers them.
const KEY_PACK_BYTES: &[u8] = b"m:pack-bytes";
/// The pack file's name inside the store directory.
pub const PACK_FILE: &str = "blocks.pack";
/// Buffer between a batch's blocks and the pack file, in bytes.
const PACK_WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// Bytes of one CID the store can hold: version, codec, hash code, digest length and a 32-byte
/// digest, each code one byte. [`ids::verify_block`] accepts no other CID, so no other CID can
/// be stored.
const STORED_CID_BYTES: usize = 36;
/// One entry of a segment record: the CID, the block's offset (u64) and length (u32).
const SEGMENT_ENTRY_BYTES: usize = STORED_CID_BYTES + 8 + 4;

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(rest.len() + 1);
    key.push(prefix);
    key.extend_from_slice(rest);
    key
}

/// Where a block lies in the pack file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedBlock {
    offset: u64,
    len: u32,
}

/// The in-memory index of the pack: CID bytes to where the block lies, with totals.
#[derive(Default)]
struct PackIndex {
    blocks: HashMap<[u8; STORED_CID_BYTES], PackedBlock>,
    /// Bytes of the blocks indexed.
    bytes: u64,
    /// The committed end of the pack: where the next batch appends.
    end: u64,
}

/// The on-disk store: block data in an append-only pack file; in sled, the index of where each
/// block lies (one record per batch), publisher heads and equivocation proofs.
///
/// sled rewrites a node on every change to it, so writing a registry's blocks into sled (or
/// even one small index record per block) cost microseconds per block: importing 100,000
/// agents spent 4 s in sled alone, more than verifying them. Here a batch costs one sequential
/// append and one sled record, and the index of the pack is held in memory (about 64 bytes a
/// block), loaded from the segment records when the store opens: the Bitcask and WiscKey
/// layout.
///
/// A change is atomic and durable in two steps: the batch's new blocks are appended past the
/// pack's committed end and synced; then one sled batch adds the segment record, the heads and
/// the pack's new committed length, and sled is flushed. A process killed between the two
/// leaves bytes past the committed end that no record names; opening the store cuts them off.
/// Every block read back is hash-checked.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    pack: Arc<std::fs::File>,
    pack_path: Arc<Path>,
    index: Arc<RwLock<PackIndex>>,
    /// Held while a batch appends and commits, so batches append one after another; readers
    /// never take it.
    append_lock: Arc<std::sync::Mutex<()>>,
    /// Whether sled holds blocks of the older layout, so reads must look there too.
    inline_blocks: bool,
}

impl SledStore {
    /// Opens (or creates) a store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = open_sled(dir)?;
        let committed = match db.get(KEY_PACK_BYTES)? {
            None => 0,
            Some(value) => u64::from_be_bytes(value.as_ref().try_into().map_err(|_| {
                StoreError::BadRecord {
                    key: String::from_utf8_lossy(KEY_PACK_BYTES).into_owned(),
                    reason: "pack length record is not 8 bytes".into(),
                }
            })?),
        };
        let pack_path: Arc<Path> = Arc::from(dir.join(PACK_FILE));
        let pack = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&pack_path)
            .map_err(|error| pack_error(&pack_path, "opening", &error))?;
        let on_disk = pack
            .metadata()
            .map_err(|error| pack_error(&pack_path, "reading the length of", &error))?
            .len();
        if on_disk < committed {
            return Err(StoreError::Backend(format!(
                "pack file {} is {on_disk} bytes but the index names {committed}: blocks were \
                 lost outside meridian (restore the store from a backup)",
                pack_path.display()
            )));
        }
        if on_disk > committed {
            // An append whose batch never committed: no record names these bytes.
            pack.set_len(committed).map_err(|error| {
                pack_error(&pack_path, "cutting the uncommitted tail of", &error)
            })?;
        }
        let mut index = PackIndex {
            end: committed,
            ..PackIndex::default()
        };
        for record in db.scan_prefix([PREFIX_SEGMENT]) {
            let (record_key, value) = record?;
            load_segment(&record_key, &value, committed, &mut index)?;
        }
        let inline_blocks = db.scan_prefix([PREFIX_BLOCK]).next().is_some();
        Ok(Self {
            db,
            pack: Arc::new(pack),
            pack_path,
            index: Arc::new(RwLock::new(index)),
            append_lock: Arc::new(std::sync::Mutex::new(())),
            inline_blocks,
        })
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        let pack = self
            .pack
            .metadata()
            .map_err(|error| pack_error(&self.pack_path, "reading the length of", &error))?
            .len();
        Ok(self.db.size_on_disk()? + pack)
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.pack
            .sync_data()
            .map_err(|error| pack_error(&self.pack_path, "syncing", &error))?;
        self.db.flush()?;
        Ok(())
    }

    fn decode_head(key: &[u8], value: &[u8]) -> Result<Head, StoreError> {
        let bad = |reason: &str| StoreError::BadRecord {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_owned(),
        };
        if value.len() < 9 {
            return Err(bad("head record too short"));
        }
        let seq = u64::from_be_bytes(value[..8].try_into().map_err(|_| bad("bad seq"))?);
        let commit = Cid::try_from(&value[8..]).map_err(|_| bad("bad cid"))?;
        Ok(Head { commit, seq })
    }

    fn read_index(&self) -> Result<std::sync::RwLockReadGuard<'_, PackIndex>, StoreError> {
        self.index
            .read()
            .map_err(|_| StoreError::Backend("pack index lock poisoned".into()))
    }

    /// Where the pack holds `cid`, if it does.
    fn packed(&self, cid: &Cid) -> Result<Option<PackedBlock>, StoreError> {
        let Some(cid_key) = stored_cid_key(cid) else {
            return Ok(None);
        };
        Ok(self.read_index()?.blocks.get(&cid_key).copied())
    }

    /// Appends `blocks` to the pack at `start` and syncs it; returns the segment record and
    /// the new end of the pack.
    fn append(
        &self,
        start: u64,
        blocks: &[(&[u8; STORED_CID_BYTES], &Arc<[u8]>)],
    ) -> Result<(Vec<u8>, u64), StoreError> {
        use std::io::{Seek, Write};
        let failed =
            |doing: &str, error: std::io::Error| pack_error(&self.pack_path, doing, &error);
        let mut file = &*self.pack;
        file.seek(std::io::SeekFrom::Start(start))
            .map_err(|e| failed("seeking in", e))?;
        let mut writer = std::io::BufWriter::with_capacity(PACK_WRITE_BUFFER_BYTES, file);
        let mut segment = Vec::with_capacity(blocks.len() * SEGMENT_ENTRY_BYTES);
        let mut end = start;
        for (cid_key, block) in blocks {
            let len = u32::try_from(block.len()).map_err(|_| {
                StoreError::Backend(format!(
                    "a block of {} bytes is over the store's limit of {} bytes",
                    block.len(),
                    u32::MAX
                ))
            })?;
            writer
                .write_all(block)
                .map_err(|e| failed("appending to", e))?;
            segment.extend_from_slice(&cid_key[..]);
            segment.extend_from_slice(&end.to_be_bytes());
            segment.extend_from_slice(&len.to_be_bytes());
            end += u64::from(len);
        }
        writer.flush().map_err(|e| failed("appending to", e))?;
        drop(writer);
        self.pack.sync_data().map_err(|e| failed("syncing", e))?;
        Ok((segment, end))
    }
}

/// The fixed-size key of a CID the store can hold, or `None` for any other CID.
fn stored_cid_key(cid: &Cid) -> Option<[u8; STORED_CID_BYTES]> {
    cid.to_bytes().try_into().ok()
}

/// Adds one segment record to the index, refusing records that do not parse or that name
/// bytes past the committed end of the pack.
fn load_segment(
    record_key: &[u8],
    value: &[u8],
    committed: u64,
    index: &mut PackIndex,
) -> Result<(), StoreError> {
    let bad = |reason: String| StoreError::BadRecord {
        key: format!("segment {}", hex_of(record_key)),
        reason,
    };
    if !value.len().is_multiple_of(SEGMENT_ENTRY_BYTES) {
        return Err(bad(format!(
            "{} bytes is not a whole number of {SEGMENT_ENTRY_BYTES}-byte entries",
            value.len()
        )));
    }
    for entry in value.chunks_exact(SEGMENT_ENTRY_BYTES) {
        let (cid_key, place) = entry.split_at(STORED_CID_BYTES);
        let (offset, len) = place.split_at(8);
        let cid_key: [u8; STORED_CID_BYTES] =
            cid_key.try_into().map_err(|_| bad("short cid".into()))?;
        let offset = u64::from_be_bytes(offset.try_into().map_err(|_| bad("offset".into()))?);
        let len = u32::from_be_bytes(len.try_into().map_err(|_| bad("length".into()))?);
        if offset.saturating_add(u64::from(len)) > committed {
            return Err(bad(format!(
                "names bytes {offset}..{} past the committed end {committed}",
                offset.saturating_add(u64::from(len))
            )));
        }
        if index
            .blocks
            .insert(cid_key, PackedBlock { offset, len })
            .is_none()
        {
            index.bytes += u64::from(len);
        }
    }
    Ok(())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pack_error(path: &Path, doing: &str, error: &std::io::Error) -> StoreError {
    StoreError::Backend(format!("{doing} pack file {}: {error}", path.display()))
}

impl BlockStore for SledStore {
    fn get(&self, cid: &Cid) -> Result<Option<Arc<[u8]>>, StoreError> {
        let block = match self.packed(cid)? {
            Some(place) => {
                let mut block = vec![0u8; place.len as usize];
                std::os::unix::fs::FileExt::read_exact_at(&*self.pack, &mut block, place.offset)
                    .map_err(|error| pack_error(&self.pack_path, "reading", &error))?;
                block
            }
            None if self.inline_blocks => match self.db.get(key(PREFIX_BLOCK, &cid.to_bytes()))? {
                Some(inline) => inline.to_vec(),
                None => return Ok(None),
            },
            None => return Ok(None),
        };
        ids::verify_block(cid, &block)?;
        Ok(Some(Arc::from(block)))
    }

    fn contains(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.packed(cid)?.is_some()
            || (self.inline_blocks && self.db.contains_key(key(PREFIX_BLOCK, &cid.to_bytes()))?))
    }

    fn apply(&self, batch: StoreBatch) -> Result<(), StoreError> {
        check_batch(&batch)?;
        let _appending = self
            .append_lock
            .lock()
            .map_err(|_| StoreError::Backend("pack lock poisoned".into()))?;
        // Under the append lock no other batch runs: the heads read here are the ones the
        // batch replaces.
        for (publisher, head) in &batch.heads {
            check_head_moves_forward(publisher, self.head(publisher)?, *head)?;
        }
        // Blocks the store holds already, or that the batch repeats, are not appended again.
        let mut new_blocks = Vec::with_capacity(batch.blocks.len());
        {
            let index = self.read_index()?;
            let mut seen = std::collections::HashSet::with_capacity(batch.blocks.len());
            for (cid, block) in &batch.blocks {
                let Some(cid_key) = stored_cid_key(cid) else {
                    // verify_block accepted it, so it has the stored shape; refuse rather
                    // than store what could not be found again.
                    return Err(StoreError::Backend(format!(
                        "block {cid} has a cid the store cannot index"
                    )));
                };
                if !index.blocks.contains_key(&cid_key) && seen.insert(cid_key) {
                    new_blocks.push((cid_key, block));
                }
            }
        }
        let committed = self.read_index()?.end;
        let mut sled_batch = sled::Batch::default();
        let mut end = committed;
        if !new_blocks.is_empty() {
            let refs: Vec<_> = new_blocks.iter().map(|(k, b)| (k, *b)).collect();
            let (segment, new_end) = self.append(committed, &refs)?;
            sled_batch.insert(key(PREFIX_SEGMENT, &committed.to_be_bytes()), segment);
            sled_batch.insert(KEY_PACK_BYTES, &new_end.to_be_bytes()[..]);
            end = new_end;
        }
        for (publisher, head) in &batch.heads {
            let mut value = head.seq.to_be_bytes().to_vec();
            value.extend_from_slice(&head.commit.to_bytes());
            sled_batch.insert(key(PREFIX_HEAD, publisher.as_bytes()), value);
        }
        for (publisher, seq, proof) in &batch.equivocations {
            let mut rest = publisher.as_bytes().to_vec();
            rest.push(0);
            rest.extend_from_slice(&seq.to_be_bytes());
            sled_batch.insert(key(PREFIX_EQUIVOCATION, &rest), &proof[..]);
        }
        self.db.apply_batch(sled_batch)?;
        self.db.flush()?;
        let mut index = self
            .index
            .write()
            .map_err(|_| StoreError::Backend("pack index lock poisoned".into()))?;
        let mut offset = committed;
        for (cid_key, block) in new_blocks {
            let len = block.len() as u32;
            index.blocks.insert(cid_key, PackedBlock { offset, len });
            index.bytes += u64::from(len);
            offset += u64::from(len);
        }
        index.end = end;
        Ok(())
    }

    fn head(&self, publisher: &str) -> Result<Option<Head>, StoreError> {
        let record_key = key(PREFIX_HEAD, publisher.as_bytes());
        match self.db.get(&record_key)? {
            None => Ok(None),
            Some(value) => Self::decode_head(&record_key, &value).map(Some),
        }
    }

    fn heads(&self) -> Result<BTreeMap<String, Head>, StoreError> {
        let mut heads = BTreeMap::new();
        for record in self.db.scan_prefix([PREFIX_HEAD]) {
            let (record_key, value) = record?;
            let publisher = String::from_utf8_lossy(&record_key[1..]).into_owned();
            heads.insert(publisher, Self::decode_head(&record_key, &value)?);
        }
        Ok(heads)
    }

    fn equivocations(&self, publisher: &str) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut prefix = key(PREFIX_EQUIVOCATION, publisher.as_bytes());
        prefix.push(0);
        let mut out = Vec::new();
        for record in self.db.scan_prefix(&prefix) {
            let (record_key, value) = record?;
            let seq_bytes: [u8; 8] =
                record_key[prefix.len()..]
                    .try_into()
                    .map_err(|_| StoreError::BadRecord {
                        key: String::from_utf8_lossy(&record_key).into_owned(),
                        reason: "bad seq".into(),
                    })?;
            out.push((u64::from_be_bytes(seq_bytes), value.to_vec()));
        }
        Ok(out)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let index = self.read_index()?;
        let mut stats = StoreStats {
            blocks: index.blocks.len() as u64,
            bytes: index.bytes,
        };
        drop(index);
        if self.inline_blocks {
            for record in self.db.scan_prefix([PREFIX_BLOCK]) {
                let (_, value) = record?;
                stats.blocks += 1;
                stats.bytes += value.len() as u64;
            }
        }
        Ok(stats)
    }
}

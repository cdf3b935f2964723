//! The hub's block cache, sans-IO: a size-bounded LRU of immutable blocks, every block checked
//! against its CID before it is cached, and concurrent misses for one CID collapsed into one
//! upstream fetch.
//!
//! The driver asks [`BlockCache::lookup`]; on a miss it gets either [`Miss::Fetch`] (it is the
//! first to ask: fetch upstream and report with [`BlockCache::fetched`] or
//! [`BlockCache::fetch_failed`]) or [`Miss::Wait`] (someone is already fetching: wait for the
//! waiter id to be woken). Completing a fetch returns the waiters to wake.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use meridian_registry::Cid;
use meridian_registry::ids::{self, BlockError};

/// Largest single block the cache keeps, in bytes.
pub const BLOCK_BYTES_MAX: usize = 1024 * 1024;
/// Most requests waiting on one in-flight fetch.
pub const WAITERS_PER_FETCH_MAX: usize = 4096;

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The block, from the cache.
    Hit(Arc<[u8]>),
    /// Not cached.
    Miss(Miss),
}

/// What to do about a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Fetch it upstream (nobody else is).
    Fetch,
    /// A fetch is under way; wait to be woken with this waiter id.
    Wait(u64),
    /// Too many are already waiting on this block; answer "busy".
    Busy,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that were not.
    pub misses: u64,
    /// Bytes served from the cache.
    pub bytes_served: u64,
    /// Blocks refused because they did not match their CID.
    pub rejected: u64,
    /// Blocks dropped to make room.
    pub evicted: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Blocks held now.
    pub blocks: u64,
}

/// Why a fetched block was not cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// It does not hash to its CID: an upstream served a wrong block.
    #[error(transparent)]
    Mismatch(#[from] BlockError),
    /// It is larger than [`BLOCK_BYTES_MAX`].
    #[error("block of {size} bytes exceeds the cache's {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// The cache.
#[derive(Debug)]
pub struct BlockCache {
    capacity_bytes: u64,
    blocks: HashMap<Cid, (Arc<[u8]>, u64)>,
    /// Recency: tick -> CID; the smallest tick is the least recently used.
    order: BTreeMap<u64, Cid>,
    tick: u64,
    in_flight: HashMap<Cid, Vec<u64>>,
    next_waiter: u64,
    stats: CacheStats,
    evicted_log: Vec<Cid>,
}

impl BlockCache {
    /// A cache holding at most `capacity_bytes` of blocks.
    pub fn new(capacity_bytes: u64) -> Self {
        Self {
            capacity_bytes,
            blocks: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            in_flight: HashMap::new(),
            next_waiter: 1,
            stats: CacheStats::default(),
            evicted_log: Vec::new(),
        }
    }

    fn touch(&mut self, cid: &Cid) {
        if let Some((_, tick)) = self.blocks.get_mut(cid) {
            self.order.remove(tick);
            self.tick += 1;
            *tick = self.tick;
            self.order.insert(self.tick, *cid);
        }
    }

    /// Looks a block up; a miss says whether to fetch or wait.
    pub fn lookup(&mut self, cid: &Cid) -> Lookup {
        if let Some((block, _)) = self.blocks.get(cid) {
            let block = block.clone();
            self.touch(cid);
            self.stats.hits += 1;
            self.stats.bytes_served += block.len() as u64;
            return Lookup::Hit(block);
        }
        self.stats.misses += 1;
        match self.in_flight.get_mut(cid) {
            None => {
                self.in_flight.insert(*cid, Vec::new());
                Lookup::Miss(Miss::Fetch)
            }
            Some(waiters) if waiters.len() >= WAITERS_PER_FETCH_MAX => Lookup::Miss(Miss::Busy),
            Some(waiters) => {
                let id = self.next_waiter;
                self.next_waiter += 1;
                waiters.push(id);
                Lookup::Miss(Miss::Wait(id))
            }
        }
    }

    /// Reports a fetched block: it is checked against its CID, cached (evicting the least
    /// recently used blocks as needed), and the waiters to wake are returned. A block that fails
    /// the check is not cached; the waiters are returned all the same, to be told so.
    pub fn fetched(&mut self, cid: &Cid, block: Arc<[u8]>) -> (Result<(), CacheError>, Vec<u64>) {
        let waiters = self.in_flight.remove(cid).unwrap_or_default();
        if block.len() > BLOCK_BYTES_MAX {
            self.stats.rejected += 1;
            return (
                Err(CacheError::TooLarge {
                    size: block.len(),
                    max: BLOCK_BYTES_MAX,
                }),
                waiters,
            );
        }
        if let Err(error) = ids::verify_block(cid, &block) {
            self.stats.rejected += 1;
            return (Err(error.into()), waiters);
        }
        self.insert(cid, block);
        (Ok(()), waiters)
    }

    /// Reports a failed fetch; returns the waiters to wake (they may retry, one of them fetching).
    pub fn fetch_failed(&mut self, cid: &Cid) -> Vec<u64> {
        self.in_flight.remove(cid).unwrap_or_default()
    }

    fn insert(&mut self, cid: &Cid, block: Arc<[u8]>) {
        let size = block.len() as u64;
        if size > self.capacity_bytes || self.blocks.contains_key(cid) {
            self.touch(cid);
            return;
        }
        while self.stats.bytes + size > self.capacity_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((evicted, _)) = self.blocks.remove(&oldest) {
                self.evicted_log.push(oldest);
                self.stats.bytes -= evicted.len() as u64;
                self.stats.blocks -= 1;
                self.stats.evicted += 1;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, *cid);
        self.blocks.insert(*cid, (block, self.tick));
        self.stats.bytes += size;
        self.stats.blocks += 1;
    }

    /// Whether the block is cached (not counted, recency unchanged).
    pub fn contains(&self, cid: &Cid) -> bool {
        self.blocks.contains_key(cid)
    }

    /// The block if it is cached (counted as a hit), without registering a fetch on a miss.
    pub fn cached(&mut self, cid: &Cid) -> Option<Arc<[u8]>> {
        let (block, _) = self.blocks.get(cid)?;
        let block = block.clone();
        self.touch(cid);
        self.stats.hits += 1;
        self.stats.bytes_served += block.len() as u64;
        Some(block)
    }

    /// Puts a block back after a restart (from the hub's own disk), oldest first, so the
    /// recency order survives. It is checked against its CID like any other.
    pub fn preload(&mut self, cid: &Cid, block: Arc<[u8]>) -> Result<(), CacheError> {
        if block.len() > BLOCK_BYTES_MAX {
            return Err(CacheError::TooLarge {
                size: block.len(),
                max: BLOCK_BYTES_MAX,
            });
        }
        ids::verify_block(cid, &block)?;
        self.insert(cid, block);
        Ok(())
    }

    /// The CIDs evicted since the last call, for the driver to drop from disk.
    pub fn take_evicted(&mut self) -> Vec<Cid> {
        std::mem::take(&mut self.evicted_log)
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use meridian_registry::cbor::{Value, encode};

    use super::*;

    fn block(n: u32, size: usize) -> (Cid, Arc<[u8]>) {
        let data = encode(&Value::Bytes(vec![n as u8; size]));
        (ids::dag_cbor_cid(&data), Arc::from(data))
    }

    #[test]
    fn concurrent_misses_become_one_fetch() {
        let mut cache = BlockCache::new(1 << 20);
        let (cid, data) = block(1, 100);
        assert_eq!(cache.lookup(&cid), Lookup::Miss(Miss::Fetch));
        let Lookup::Miss(Miss::Wait(a)) = cache.lookup(&cid) else {
            panic!("second asker should wait")
        };
        let Lookup::Miss(Miss::Wait(b)) = cache.lookup(&cid) else {
            panic!("third asker should wait")
        };
        let (result, woken) = cache.fetched(&cid, data.clone());
        assert!(result.is_ok());
        assert_eq!(woken, vec![a, b]);
        assert_eq!(cache.lookup(&cid), Lookup::Hit(data.clone()));
        assert_eq!(cache.cached(&cid), Some(data));
        let (other, _) = block(2, 100);
        // `cached` never registers a fetch: the next lookup of a miss is still the fetcher.
        assert_eq!(cache.cached(&other), None);
        assert_eq!(cache.lookup(&other), Lookup::Miss(Miss::Fetch));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.blocks), (2, 4, 1));
    }

    #[test]
    fn a_wrong_block_is_never_cached_or_served() {
        let mut cache = BlockCache::new(1 << 20);
        let (cid, _) = block(1, 100);
        let (_, other) = block(2, 100);
        assert_eq!(cache.lookup(&cid), Lookup::Miss(Miss::Fetch));
        let Lookup::Miss(Miss::Wait(waiter)) = cache.lookup(&cid) else {
            panic!()
        };
        let (result, woken) = cache.fetched(&cid, other);
        assert!(matches!(result, Err(CacheError::Mismatch(_))));
        assert_eq!(woken, vec![waiter]);
        // Still a miss, and the next asker fetches again.
        assert_eq!(cache.lookup(&cid), Lookup::Miss(Miss::Fetch));
        assert_eq!(cache.stats().rejected, 1);
        assert_eq!(cache.stats().blocks, 0);
    }

    #[test]
    fn size_bound_evicts_least_recently_used() {
        let sizes = block(0, 1000).1.len() as u64;
        let mut cache = BlockCache::new(3 * sizes);
        let blocks: Vec<_> = (0..4).map(|n| block(n, 1000)).collect();
        for (cid, data) in &blocks[..3] {
            assert_eq!(cache.lookup(cid), Lookup::Miss(Miss::Fetch));
            assert!(cache.fetched(cid, data.clone()).0.is_ok());
        }
        // Use block 0, so block 1 is now the least recently used.
        assert!(matches!(cache.lookup(&blocks[0].0), Lookup::Hit(_)));
        assert_eq!(cache.lookup(&blocks[3].0), Lookup::Miss(Miss::Fetch));
        assert!(cache.fetched(&blocks[3].0, blocks[3].1.clone()).0.is_ok());
        assert!(matches!(cache.lookup(&blocks[0].0), Lookup::Hit(_)));
        assert!(matches!(
            cache.lookup(&blocks[1].0),
            Lookup::Miss(Miss::Fetch)
        ));
        let stats = cache.stats();
        assert_eq!((stats.evicted, stats.blocks), (1, 3));
        assert_eq!(cache.take_evicted(), vec![blocks[1].0]);
        assert!(cache.take_evicted().is_empty());
        assert!(stats.bytes <= 3 * sizes);
    }

    #[test]
    fn limits_on_block_size_and_waiters() {
        let mut cache = BlockCache::new(u64::MAX);
        let (cid, data) = block(9, BLOCK_BYTES_MAX);
        assert_eq!(cache.lookup(&cid), Lookup::Miss(Miss::Fetch));
        assert!(matches!(
            cache.fetched(&cid, data).0,
            Err(CacheError::TooLarge { .. })
        ));
        let (cid, _) = block(8, 10);
        assert_eq!(cache.lookup(&cid), Lookup::Miss(Miss::Fetch));
        for _ in 0..WAITERS_PER_FETCH_MAX {
            assert!(matches!(cache.lookup(&cid), Lookup::Miss(Miss::Wait(_))));
        }
        assert_eq!(cache.lookup(&cid), Lookup::Miss(Miss::Busy));
        assert_eq!(cache.fetch_failed(&cid).len(), WAITERS_PER_FETCH_MAX);
        assert_eq!(cache.lookup(&cid), Lookup::Miss(Miss::Fetch));
    }
}

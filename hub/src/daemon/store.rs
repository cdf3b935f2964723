//! What a hub keeps on disk so a restart is warm: the cached blocks (in the order they were
//! cached, for the LRU), the heads and equivocation proofs it mirrors with their upstreams, and
//! the governance documents in arrival order. [`HubStore`] is the interface with typed errors,
//! so the hub never drops a disk error unseen (it counts and logs each); [`SledHubStore`] keeps
//! it in sled.

use std::sync::{Arc, Mutex};

use meridian_registry::Cid;

/// Why the hub's store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused a read or a write.
    #[error("hub store: {0}")]
    Sled(#[from] sled::Error),
    /// A lock was poisoned by a panic.
    #[error("hub store: lock poisoned")]
    Poisoned,
}

/// Cached blocks as kept, oldest first.
pub type StoredBlocks = Vec<(Cid, Arc<[u8]>)>;

/// One mirrored head or equivocation proof as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHead {
    /// Where the hub fetches the publisher's blocks, encoded by the hub.
    pub upstream: String,
    /// `b'H'` for a commit, `b'E'` for an equivocation proof.
    pub tag: u8,
    /// The commit or proof block.
    pub block: Vec<u8>,
}

/// The hub's persistence.
pub trait HubStore: Send + Sync {
    /// Keeps a cached block (after the blocks kept before it).
    fn put_block(&self, cid: &Cid, block: &[u8]) -> Result<(), StoreError>;
    /// Forgets a block the cache evicted.
    fn forget_block(&self, cid: &Cid) -> Result<(), StoreError>;
    /// Every kept block, oldest first. Entries a crash left half written are dropped.
    fn blocks(&self) -> Result<StoredBlocks, StoreError>;
    /// Keeps the newest head (or proof) of a publisher under `key`.
    fn put_head(&self, key: &str, head: &StoredHead) -> Result<(), StoreError>;
    /// Every kept head and proof.
    fn heads(&self) -> Result<Vec<StoredHead>, StoreError>;
    /// Keeps a governance document (after the ones kept before it).
    fn put_governance(&self, block: &[u8]) -> Result<(), StoreError>;
    /// Every kept governance document, in arrival order.
    fn governance(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Makes everything kept so far durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// [`HubStore`] in sled: a block is kept as `tick ++ bytes` under its CID, with an order entry
/// `tick -> CID`; an order entry whose block does not carry its tick is what a crash between
/// the two writes leaves, and is dropped on reading.
pub struct SledHubStore {
    db: sled::Db,
    blocks: sled::Tree,
    order: sled::Tree,
    heads: sled::Tree,
    governance: sled::Tree,
    tick: Mutex<u64>,
}

impl SledHubStore {
    /// The store in an open sled database (the hub's `hub.sled`, or a temporary one).
    pub fn new(db: sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            blocks: db.open_tree("blocks")?,
            order: db.open_tree("order")?,
            heads: db.open_tree("heads")?,
            governance: db.open_tree("governance")?,
            db,
            tick: Mutex::new(0),
        })
    }

    /// Blocks kept (for tests and metrics).
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }
}

impl HubStore for SledHubStore {
    fn put_block(&self, cid: &Cid, block: &[u8]) -> Result<(), StoreError> {
        let tick = {
            let mut tick = self.tick.lock().map_err(|_| StoreError::Poisoned)?;
            *tick += 1;
            *tick
        };
        let key = cid.to_bytes();
        let mut value = Vec::with_capacity(8 + block.len());
        value.extend_from_slice(&tick.to_be_bytes());
        value.extend_from_slice(block);
        self.blocks.insert(&key, value)?;
        self.order.insert(tick.to_be_bytes(), key)?;
        Ok(())
    }

    fn forget_block(&self, cid: &Cid) -> Result<(), StoreError> {
        if let Some(value) = self.blocks.remove(cid.to_bytes())?
            && value.len() >= 8
        {
            self.order.remove(&value[..8])?;
        }
        Ok(())
    }

    fn blocks(&self) -> Result<StoredBlocks, StoreError> {
        let mut out = Vec::new();
        let mut last_tick = 0;
        for entry in self.order.iter() {
            let (order, cid_bytes) = entry?;
            if let Ok(bytes) = <[u8; 8]>::try_from(order.as_ref()) {
                last_tick = u64::from_be_bytes(bytes);
            }
            let stored = self.blocks.get(&cid_bytes)?;
            let fresh = stored
                .as_ref()
                .filter(|v| v.len() >= 8 && v[..8] == order[..]);
            match (Cid::try_from(cid_bytes.as_ref()), fresh) {
                (Ok(cid), Some(value)) => out.push((cid, Arc::from(&value[8..]))),
                _ => {
                    self.order.remove(&order)?;
                    if stored.is_some_and(|v| v.len() < 8 || v[..8] == order[..]) {
                        self.blocks.remove(&cid_bytes)?;
                    }
                }
            }
        }
        *self.tick.lock().map_err(|_| StoreError::Poisoned)? = last_tick;
        Ok(out)
    }

    fn put_head(&self, key: &str, head: &StoredHead) -> Result<(), StoreError> {
        let mut value = head.upstream.clone().into_bytes();
        value.push(b'\n');
        value.push(head.tag);
        value.extend_from_slice(&head.block);
        self.heads.insert(key.as_bytes(), value)?;
        Ok(())
    }

    fn heads(&self) -> Result<Vec<StoredHead>, StoreError> {
        let mut out = Vec::new();
        for entry in self.heads.iter() {
            let (_, value) = entry?;
            let Some(split) = value.iter().position(|b| *b == b'\n') else {
                continue;
            };
            let Some((&tag, block)) = value[split + 1..].split_first() else {
                continue;
            };
            out.push(StoredHead {
                upstream: String::from_utf8_lossy(&value[..split]).into_owned(),
                tag,
                block: block.to_vec(),
            });
        }
        Ok(out)
    }

    fn put_governance(&self, block: &[u8]) -> Result<(), StoreError> {
        let key = self.db.generate_id()?;
        self.governance.insert(key.to_be_bytes(), block)?;
        Ok(())
    }

    fn governance(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.governance
            .iter()
            .map(|entry| Ok(entry?.1.to_vec()))
            .collect()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> SledHubStore {
        SledHubStore::new(sled::Config::new().temporary(true).open().unwrap()).unwrap()
    }

    #[test]
    fn blocks_heads_and_documents_read_back_in_order() {
        let store = store();
        let cids: Vec<Cid> = (0u8..3)
            .map(|i| meridian_registry::ids::dag_cbor_cid(&[i]))
            .collect();
        for (i, cid) in cids.iter().enumerate() {
            store.put_block(cid, &[i as u8; 4]).unwrap();
        }
        store.forget_block(&cids[1]).unwrap();
        let kept: Vec<Cid> = store
            .blocks()
            .unwrap()
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(kept, [cids[0], cids[2]]);
        // Ticks go on after a reload: a block kept now sorts last.
        let fourth = meridian_registry::ids::dag_cbor_cid(&[9]);
        store.put_block(&fourth, b"x").unwrap();
        assert_eq!(store.blocks().unwrap().last().unwrap().0, fourth);

        let head = StoredHead {
            upstream: "node:http://127.0.0.1:1".into(),
            tag: b'H',
            block: vec![1, 2, 3],
        };
        store.put_head("did:key:a", &head).unwrap();
        assert_eq!(store.heads().unwrap(), [head]);
        store.put_governance(b"first").unwrap();
        store.put_governance(b"second").unwrap();
        assert_eq!(
            store.governance().unwrap(),
            [b"first".to_vec(), b"second".to_vec()]
        );
        store.flush().unwrap();
    }

    #[test]
    fn a_block_whose_write_a_crash_cut_is_dropped_on_reading() {
        let store = store();
        let cid = meridian_registry::ids::dag_cbor_cid(b"a");
        store.put_block(&cid, b"block").unwrap();
        // The order entry of a second write that never reached the blocks tree.
        let other = meridian_registry::ids::dag_cbor_cid(b"b");
        store
            .order
            .insert(7u64.to_be_bytes(), other.to_bytes())
            .unwrap();
        let kept = store.blocks().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0, cid);
        assert!(store.order.get(7u64.to_be_bytes()).unwrap().is_none());
        assert_eq!(store.block_count(), 1);
    }
}

//! The hub's head mirror, sans-IO: the newest verified commit of every publisher, where its
//! blocks can be fetched, equivocation proofs, and a version counter for long-polls.
//!
//! A head is checked on its own before it is kept (size, encoding, signature, expiry, a
//! creation time not ahead of the hub's clock by more than the skew allowance) and only ever
//! replaced by a higher `seq` of the same publisher: a hub cannot be made to roll a publisher
//! back, and two different commits with one `seq` become a kept [`EquivocationProof`]. The
//! mirror never decides what a node accepts: nodes verify every head and block again.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_registry::Cid;
use meridian_registry::commit::{COMMIT_BYTES_MAX, Commit, EquivocationProof};
use meridian_registry::ids;

/// Where a publisher's blocks can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A node of this hub's region, by its gateway URL (vouched for by the publisher's key).
    Node(String),
    /// The hub of another region, by region name (reached over the trunk).
    Hub(String),
    /// Nowhere known yet (a head learnt from a node without a source): try every upstream.
    Unknown,
}

/// One publisher's newest head.
#[derive(Debug, Clone)]
pub struct Head {
    /// The commit block.
    pub block: Arc<[u8]>,
    /// Its CID.
    pub cid: Cid,
    /// The publisher's did:key.
    pub publisher: String,
    /// Its sequence number.
    pub seq: u64,
    /// The registry tree root it commits to.
    pub data: Cid,
    /// When it stops being acceptable (unix seconds).
    pub expires_at: i64,
    /// Where its blocks are.
    pub upstream: Upstream,
    /// The mirror version at which it arrived.
    pub version: u64,
}

/// What offering a head did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offered {
    /// It is the publisher's newest head now.
    New,
    /// The mirror already holds it.
    Duplicate,
    /// The mirror already holds it, and now knows where its blocks are.
    SourceLearnt,
    /// The mirror holds a newer head of that publisher.
    Stale,
    /// It conflicts with the held head of the same `seq`: the proof is kept and returned.
    Equivocation(Vec<u8>),
}

/// Why a head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// Larger than a commit can be.
    #[error("commit of {size} bytes exceeds {COMMIT_BYTES_MAX}")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// Not a commit.
    #[error("not a commit: {0}")]
    Malformed(String),
    /// The signature does not verify.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// Expired.
    #[error("commit expired at {expires_at} (now {now})")]
    Expired {
        /// Its expiry.
        expires_at: i64,
        /// The hub's clock.
        now: i64,
    },
    /// Made in the future by more than the allowed skew.
    #[error("commit created at {created_at}, ahead of the hub's clock ({now})")]
    FromFuture {
        /// Its creation time.
        created_at: i64,
        /// The hub's clock.
        now: i64,
    },
    /// The mirror tracks as many publishers as it may.
    #[error("the hub already mirrors {0} publishers")]
    TooManyPublishers(usize),
}

/// Sources (client addresses) whose new-publisher counts are tracked at most.
pub const SOURCES_MAX: usize = 10_000;

/// How many new publishers one source (a node's client address) may introduce to a hub that
/// has no governance to admit nodes by: at most `per_minute` in any minute and `total_max`
/// in all, so one client cannot fill the hub's publisher slots with heads of random keys.
#[derive(Debug)]
pub struct NewPublisherBudget {
    per_minute: u32,
    total_max: u32,
    sources: std::collections::HashMap<String, SourceCount>,
}

#[derive(Debug, Clone, Copy)]
struct SourceCount {
    window_start: i64,
    in_window: u32,
    total: u32,
}

/// Why a source may not introduce another publisher ([`NewPublisherBudget::take`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetRefusal {
    /// [`SOURCES_MAX`] sources are introducing publishers at once.
    #[error("{SOURCES_MAX} sources are introducing publishers; try later")]
    TooManySources,
    /// The source has introduced as many publishers as one source may in all.
    #[error(
        "{client} introduced {count} publishers, the most one source may (hub.publishers_per_source_max)"
    )]
    Total {
        /// The client address.
        client: String,
        /// Publishers it introduced.
        count: u32,
    },
    /// The source has introduced as many publishers this minute as one source may.
    #[error(
        "{client} introduced {count} publishers this minute, the most one source may (hub.new_publishers_per_source_per_minute)"
    )]
    PerMinute {
        /// The client address.
        client: String,
        /// Publishers it introduced this minute.
        count: u32,
    },
}

/// Why an equivocation proof was not kept ([`HeadMirror::offer_equivocation`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofRefusal {
    /// The block is not a proof.
    #[error("{0}")]
    Decode(meridian_registry::commit::CommitError),
    /// The proof proves nothing.
    #[error("{0}")]
    Invalid(meridian_registry::commit::EquivocationError),
    /// The mirror is full and does not know the publisher.
    #[error("the hub already mirrors {0} publishers")]
    Full(usize),
}

impl NewPublisherBudget {
    /// A budget of `per_minute` new publishers a minute and `total_max` in all, per source.
    pub fn new(per_minute: u32, total_max: u32) -> Self {
        Self {
            per_minute,
            total_max,
            sources: std::collections::HashMap::new(),
        }
    }

    /// Takes one new publisher from `source`'s budget at `now` (unix seconds), or says why not.
    pub fn take(&mut self, source: &str, now: i64) -> Result<(), BudgetRefusal> {
        if !self.sources.contains_key(source) && self.sources.len() >= SOURCES_MAX {
            // Sources whose minute is over and who introduced little are forgotten first.
            self.sources
                .retain(|_, c| now - c.window_start < 60 || c.total >= self.per_minute);
            if self.sources.len() >= SOURCES_MAX {
                return Err(BudgetRefusal::TooManySources);
            }
        }
        let count = self
            .sources
            .entry(source.to_owned())
            .or_insert(SourceCount {
                window_start: now,
                in_window: 0,
                total: 0,
            });
        if now - count.window_start >= 60 {
            count.window_start = now;
            count.in_window = 0;
        }
        if count.total >= self.total_max {
            return Err(BudgetRefusal::Total {
                client: source.to_owned(),
                count: count.total,
            });
        }
        if count.in_window >= self.per_minute {
            return Err(BudgetRefusal::PerMinute {
                client: source.to_owned(),
                count: count.in_window,
            });
        }
        count.in_window += 1;
        count.total += 1;
        Ok(())
    }
}

/// The mirror.
#[derive(Debug)]
pub struct HeadMirror {
    heads: BTreeMap<String, Head>,
    equivocations: BTreeMap<String, Vec<u8>>,
    version: u64,
    publishers_max: usize,
    clock_skew_secs: i64,
}

impl HeadMirror {
    /// An empty mirror tracking at most `publishers_max` publishers.
    pub fn new(publishers_max: usize, clock_skew_secs: i64) -> Self {
        Self {
            heads: BTreeMap::new(),
            equivocations: BTreeMap::new(),
            version: 0,
            publishers_max,
            clock_skew_secs,
        }
    }

    /// Checks a commit block and keeps it if it is the publisher's newest.
    pub fn offer(
        &mut self,
        block: &[u8],
        upstream: Upstream,
        now: i64,
    ) -> Result<Offered, HeadError> {
        if block.len() > COMMIT_BYTES_MAX {
            return Err(HeadError::TooLarge { size: block.len() });
        }
        let commit = Commit::decode(block).map_err(|e| HeadError::Malformed(e.to_string()))?;
        commit
            .verify_signature()
            .map_err(|e| HeadError::BadSignature(e.to_string()))?;
        if commit.body.expires_at <= now {
            return Err(HeadError::Expired {
                expires_at: commit.body.expires_at,
                now,
            });
        }
        if commit.body.created_at > now.saturating_add(self.clock_skew_secs) {
            return Err(HeadError::FromFuture {
                created_at: commit.body.created_at,
                now,
            });
        }
        let publisher = commit.body.publisher.to_did();
        let cid = ids::dag_cbor_cid(block);
        if let Some(held) = self.heads.get_mut(&publisher) {
            if held.cid == cid {
                if held.upstream == Upstream::Unknown && upstream != Upstream::Unknown {
                    held.upstream = upstream;
                    return Ok(Offered::SourceLearnt);
                }
                return Ok(Offered::Duplicate);
            }
            if commit.body.seq == held.seq {
                let proof = EquivocationProof {
                    first: held.block.to_vec(),
                    second: block.to_vec(),
                }
                .to_block();
                if !self.equivocations.contains_key(&publisher) {
                    self.version += 1;
                    self.equivocations.insert(publisher, proof.clone());
                }
                return Ok(Offered::Equivocation(proof));
            }
            if commit.body.seq < held.seq {
                return Ok(Offered::Stale);
            }
        } else if self.heads.len() >= self.publishers_max {
            return Err(HeadError::TooManyPublishers(self.publishers_max));
        }
        self.version += 1;
        self.heads.insert(
            publisher.clone(),
            Head {
                block: block.into(),
                cid,
                publisher,
                seq: commit.body.seq,
                data: commit.body.data,
                expires_at: commit.body.expires_at,
                upstream,
                version: self.version,
            },
        );
        Ok(Offered::New)
    }

    /// Keeps an equivocation proof received from elsewhere, once it verifies. Returns whether it
    /// was new.
    pub fn offer_equivocation(&mut self, block: &[u8]) -> Result<bool, ProofRefusal> {
        let proof = EquivocationProof::decode(block).map_err(ProofRefusal::Decode)?;
        let (publisher, _) = proof.verify().map_err(ProofRefusal::Invalid)?;
        let publisher = publisher.to_did();
        if self.equivocations.contains_key(&publisher) {
            return Ok(false);
        }
        if !self.heads.contains_key(&publisher) && self.heads.len() >= self.publishers_max {
            return Err(ProofRefusal::Full(self.publishers_max));
        }
        self.version += 1;
        self.equivocations.insert(publisher, block.to_vec());
        Ok(true)
    }

    /// The current version: it grows with every new head or proof.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Heads that arrived after `version` and have not expired at `now`.
    pub fn since(&self, version: u64, now: i64) -> Vec<&Head> {
        self.heads
            .values()
            .filter(|h| h.version > version && h.expires_at > now)
            .collect()
    }

    /// Every unexpired head.
    pub fn all(&self, now: i64) -> Vec<&Head> {
        self.since(0, now)
    }

    /// One publisher's head.
    pub fn get(&self, publisher: &str) -> Option<&Head> {
        self.heads.get(publisher)
    }

    /// The head whose commit has this CID.
    pub fn by_cid(&self, cid: &Cid) -> Option<&Head> {
        self.heads.values().find(|h| h.cid == *cid)
    }

    /// The equivocation proof blocks kept.
    pub fn equivocations(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.equivocations.values()
    }

    /// How many publishers are mirrored.
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    /// Whether no publisher is mirrored.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use meridian_registry::commit::CommitBody;
    use meridian_registry::keys::Keypair;

    use super::*;

    fn commit(key: &Keypair, seq: u64, data_tag: &[u8], expires_at: i64) -> Vec<u8> {
        CommitBody {
            publisher: key.public(),
            seq,
            data: ids::dag_cbor_cid(data_tag),
            prev: (seq > 1).then(|| ids::dag_cbor_cid(b"previous")),
            created_at: 100,
            expires_at,
        }
        .sign(key)
        .expect("sign")
        .to_block()
    }

    fn key(seed: u8) -> Keypair {
        Keypair::from_secret(&[seed; 32])
    }

    #[test]
    fn newest_seq_wins_and_rollback_is_stale() {
        let mut mirror = HeadMirror::new(10, 300);
        let k = key(1);
        let one = commit(&k, 1, b"a", 10_000);
        let two = commit(&k, 2, b"b", 10_000);
        assert_eq!(mirror.offer(&two, Upstream::Unknown, 200), Ok(Offered::New));
        assert_eq!(
            mirror.offer(&one, Upstream::Unknown, 200),
            Ok(Offered::Stale)
        );
        assert_eq!(mirror.get(&k.did()).map(|h| h.seq), Some(2));
        assert_eq!(
            mirror.offer(&two, Upstream::Node("http://n".into()), 200),
            Ok(Offered::SourceLearnt)
        );
        assert_eq!(
            mirror.offer(&two, Upstream::Node("http://n".into()), 200),
            Ok(Offered::Duplicate)
        );
        assert_eq!(
            mirror.get(&k.did()).map(|h| h.upstream.clone()),
            Some(Upstream::Node("http://n".into()))
        );
        assert_eq!(mirror.since(1, 200).len(), 0);
        assert_eq!(mirror.since(0, 200).len(), 1);
    }

    #[test]
    fn refuses_forged_expired_future_and_garbage() {
        let mut mirror = HeadMirror::new(10, 300);
        let k = key(2);
        let mut forged = commit(&k, 1, b"a", 10_000);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            mirror.offer(&forged, Upstream::Unknown, 200),
            Err(HeadError::BadSignature(_) | HeadError::Malformed(_))
        ));
        let expired = commit(&k, 1, b"a", 150);
        assert!(matches!(
            mirror.offer(&expired, Upstream::Unknown, 200),
            Err(HeadError::Expired { .. })
        ));
        let fresh = commit(&k, 1, b"a", 10_000);
        assert!(matches!(
            mirror.offer(&fresh, Upstream::Unknown, -1000),
            Err(HeadError::FromFuture { .. })
        ));
        assert!(matches!(
            mirror.offer(b"\xa0", Upstream::Unknown, 200),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            mirror.offer(&vec![0u8; 5000], Upstream::Unknown, 200),
            Err(HeadError::TooLarge { .. })
        ));
        assert!(mirror.is_empty());
    }

    #[test]
    fn equivocation_is_kept_once_and_head_not_replaced() {
        let mut mirror = HeadMirror::new(10, 300);
        let k = key(3);
        let a = commit(&k, 5, b"a", 10_000);
        let b = commit(&k, 5, b"b", 10_000);
        mirror.offer(&a, Upstream::Unknown, 200).expect("a");
        let Ok(Offered::Equivocation(proof)) = mirror.offer(&b, Upstream::Unknown, 200) else {
            panic!("expected an equivocation");
        };
        assert_eq!(mirror.get(&k.did()).map(|h| h.block.to_vec()), Some(a));
        assert_eq!(mirror.equivocations().count(), 1);
        let mut other = HeadMirror::new(10, 300);
        assert_eq!(other.offer_equivocation(&proof), Ok(true));
        assert_eq!(other.offer_equivocation(&proof), Ok(false));
        assert!(matches!(
            other.offer_equivocation(b"junk"),
            Err(ProofRefusal::Decode(_))
        ));
    }

    #[test]
    fn publisher_bound_holds() {
        let mut mirror = HeadMirror::new(2, 300);
        for seed in 1..=2 {
            mirror
                .offer(&commit(&key(seed), 1, b"a", 10_000), Upstream::Unknown, 200)
                .expect("fits");
        }
        assert_eq!(
            mirror.offer(&commit(&key(9), 1, b"a", 10_000), Upstream::Unknown, 200),
            Err(HeadError::TooManyPublishers(2))
        );
        // Newer heads of known publishers still get in.
        assert_eq!(
            mirror.offer(&commit(&key(1), 2, b"b", 10_000), Upstream::Unknown, 200),
            Ok(Offered::New)
        );
    }

    #[test]
    fn new_publishers_per_source_are_rate_limited_and_capped() {
        let mut budget = NewPublisherBudget::new(3, 5);
        for _ in 0..3 {
            assert_eq!(budget.take("10.0.0.1", 100), Ok(()));
        }
        assert_eq!(
            budget.take("10.0.0.1", 110),
            Err(BudgetRefusal::PerMinute {
                client: "10.0.0.1".into(),
                count: 3
            })
        );
        // Another source has its own budget.
        assert_eq!(budget.take("10.0.0.2", 110), Ok(()));
        // A minute later: two more, then the total cap.
        assert_eq!(budget.take("10.0.0.1", 160), Ok(()));
        assert_eq!(budget.take("10.0.0.1", 161), Ok(()));
        let refused = budget.take("10.0.0.1", 230).unwrap_err();
        assert_eq!(
            refused,
            BudgetRefusal::Total {
                client: "10.0.0.1".into(),
                count: 5
            }
        );
        assert!(
            refused.to_string().contains("publishers_per_source_max"),
            "{refused}"
        );
    }
}

//! The sync protocol's messages and their byte encoding, shared by every driver (the node's
//! libp2p mesh, the hub's HTTP endpoint and QUIC trunk, the turmoil simulations and tests).
//!
//! The encoding is a small length-prefixed binary format, decoded with a hard size limit and
//! without trusting any length it reads: a peer can make decoding fail, never allocate more than
//! the bytes it sent or panic.
//!
//! ```text
//! message  = kind:u8 count:u32 item*        (big-endian)
//! item     = len:u32 bytes
//! ```
//! Block items carry the CID's binary form and then the block (`cid_len:u16 cid block`).

use std::sync::Arc;

use meridian_registry::Cid;

/// Largest encoded message the decoder accepts unless a driver sets its own bound.
pub const MESSAGE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most CIDs one [`Request::Blocks`] may name. The decoder refuses more before it parses a
/// single CID, so a small message cannot make a server decode a million of them only to refuse
/// the request afterwards.
pub const REQUEST_BLOCKS_MAX: usize = 1024;

/// Largest gossip message (a head, a governance document or a proof) accepted by default.
pub const GOSSIP_BYTES_MAX: usize = 64 * 1024;
/// Gossip messages at least this big are followed by a "don't want" notice (gossipsub v1.2's
/// IDONTWANT): a node that receives one tells its other peers at once that it has it, so they
/// skip sending it another copy. Heads (a signed commit, about 300 bytes), governance documents
/// and proofs are all above it; the notice (the 32-byte [`gossip_id`]) costs far less than the
/// copies it saves.
pub const DONT_WANT_BYTES_MIN: usize = 128;

/// The id a gossip message is known by between peers: the blake3 hash of its encoded bytes
/// (gossipsub's message id in the daemon, and what "don't want" notices name).
pub fn gossip_id(encoded: &[u8]) -> [u8; 32] {
    *blake3::hash(encoded).as_bytes()
}

/// Something broadcast to every peer (gossipsub topics in production).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gossip {
    /// A publisher's signed commit block: "this is my newest head".
    Head(Vec<u8>),
    /// A governance document block (root version, policy bundle, attestation, revocation).
    Governance(Vec<u8>),
    /// An equivocation proof: two signed commits of one publisher with one seq.
    Equivocation(Vec<u8>),
}

/// A question to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Every head and governance document the peer holds (sent when a peer comes up).
    Heads,
    /// These blocks.
    Blocks(Vec<Cid>),
    /// Every block a holder of commit `from` lacks to reach commit `to` (one publisher): the
    /// new commit, tree nodes and manifests, in one answer.
    Delta {
        /// The commit the asker holds.
        from: Cid,
        /// The commit it wants.
        to: Cid,
    },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Heads (commit blocks), governance documents and equivocation proofs.
    Heads {
        /// Commit blocks, one per publisher.
        commits: Vec<Vec<u8>>,
        /// Governance document blocks, in the order to apply them.
        governance: Vec<Vec<u8>>,
        /// Equivocation proof blocks.
        equivocations: Vec<Vec<u8>>,
    },
    /// The blocks the peer holds of those asked for; absent ones it lacks.
    Blocks(Vec<(Cid, Arc<[u8]>)>),
    /// The peer refused (over a limit, busy); the text says why.
    Refused(String),
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message is larger than allowed.
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes end inside the message.
    #[error("message truncated")]
    Truncated,
    /// Bytes after the end of the message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// An unknown message kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A CID that does not parse.
    #[error("invalid CID: {0}")]
    BadCid(String),
    /// Text that is not UTF-8.
    #[error("text is not UTF-8")]
    BadText,
    /// More items than a message of this kind may carry.
    #[error("{count} items; at most {max} per message")]
    TooManyItems {
        /// How many the message claimed.
        count: usize,
        /// The limit.
        max: usize,
    },
}

const GOSSIP_HEAD: u8 = 1;
const GOSSIP_GOVERNANCE: u8 = 2;
const GOSSIP_EQUIVOCATION: u8 = 3;
const REQUEST_HEADS: u8 = 16;
const REQUEST_BLOCKS: u8 = 17;
const REQUEST_DELTA: u8 = 18;
const RESPONSE_HEADS: u8 = 32;
const RESPONSE_BLOCKS: u8 = 33;
const RESPONSE_REFUSED: u8 = 34;

struct Writer(Vec<u8>);

impl Writer {
    fn new(kind: u8, count: usize) -> Self {
        let mut out = Vec::with_capacity(64);
        out.push(kind);
        out.extend_from_slice(&(count as u32).to_be_bytes());
        Writer(out)
    }
    fn item(&mut self, bytes: &[u8]) {
        self.0
            .extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }
    fn block(&mut self, cid: &Cid, block: &[u8]) {
        let cid = cid.to_bytes();
        let len = 2 + cid.len() + block.len();
        self.0.extend_from_slice(&(len as u32).to_be_bytes());
        self.0.extend_from_slice(&(cid.len() as u16).to_be_bytes());
        self.0.extend_from_slice(&cid);
        self.0.extend_from_slice(block);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<usize, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn item(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.u32()?;
        self.take(len)
    }
    /// A count of items, each at least 4 bytes: a count the rest cannot hold is a lie.
    fn count(&mut self) -> Result<usize, WireError> {
        let count = self.u32()?;
        if count > self.bytes.len() / 4 {
            return Err(WireError::Truncated);
        }
        Ok(count)
    }
    fn items(&mut self, count: usize) -> Result<Vec<Vec<u8>>, WireError> {
        (0..count)
            .map(|_| self.item().map(<[u8]>::to_vec))
            .collect()
    }
    fn cid(bytes: &[u8]) -> Result<Cid, WireError> {
        let cid = Cid::try_from(bytes).map_err(|e| WireError::BadCid(e.to_string()))?;
        // The parser stops at the CID's own end and takes non-minimal varints: bytes after it,
        // or a longer spelling, would give one request two encodings.
        if cid.to_bytes() != bytes {
            return Err(WireError::BadCid(
                "not the canonical bytes of a CID (trailing bytes or non-minimal varints)".into(),
            ));
        }
        Ok(cid)
    }
    fn block(&mut self) -> Result<(Cid, Arc<[u8]>), WireError> {
        let mut item = Reader {
            bytes: self.item()?,
        };
        let cid_len = item.take(2)?;
        let cid_len = u16::from_be_bytes([cid_len[0], cid_len[1]]) as usize;
        let cid = Self::cid(item.take(cid_len)?)?;
        Ok((cid, Arc::from(item.bytes)))
    }
    fn finish(self) -> Result<(), WireError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(self.bytes.len()))
        }
    }
}

fn start(bytes: &[u8], max: usize) -> Result<(u8, Reader<'_>), WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    let mut reader = Reader { bytes };
    let kind = reader.take(1)?[0];
    Ok((kind, reader))
}

impl Gossip {
    /// The encoded message.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body) = match self {
            Gossip::Head(b) => (GOSSIP_HEAD, b),
            Gossip::Governance(b) => (GOSSIP_GOVERNANCE, b),
            Gossip::Equivocation(b) => (GOSSIP_EQUIVOCATION, b),
        };
        let mut w = Writer::new(kind, 1);
        w.item(body);
        w.0
    }

    /// Decodes a message of at most `max` bytes.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Self, WireError> {
        let (kind, mut r) = start(bytes, max)?;
        if r.count()? != 1 {
            return Err(WireError::Truncated);
        }
        let body = r.item()?.to_vec();
        r.finish()?;
        match kind {
            GOSSIP_HEAD => Ok(Gossip::Head(body)),
            GOSSIP_GOVERNANCE => Ok(Gossip::Governance(body)),
            GOSSIP_EQUIVOCATION => Ok(Gossip::Equivocation(body)),
            other => Err(WireError::UnknownKind(other)),
        }
    }

    /// What kind of gossip this is, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Gossip::Head(_) => "head",
            Gossip::Governance(_) => "governance",
            Gossip::Equivocation(_) => "equivocation",
        }
    }
}

impl Request {
    /// The encoded message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Heads => Writer::new(REQUEST_HEADS, 0).0,
            Request::Blocks(cids) => {
                let mut w = Writer::new(REQUEST_BLOCKS, cids.len());
                for cid in cids {
                    w.item(&cid.to_bytes());
                }
                w.0
            }
            Request::Delta { from, to } => {
                let mut w = Writer::new(REQUEST_DELTA, 2);
                w.item(&from.to_bytes());
                w.item(&to.to_bytes());
                w.0
            }
        }
    }

    /// Decodes a message of at most `max` bytes.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Self, WireError> {
        let (kind, mut r) = start(bytes, max)?;
        let count = r.count()?;
        let request = match kind {
            REQUEST_HEADS => {
                if count != 0 {
                    return Err(WireError::Trailing(count));
                }
                Request::Heads
            }
            REQUEST_BLOCKS if count > REQUEST_BLOCKS_MAX => {
                return Err(WireError::TooManyItems {
                    count,
                    max: REQUEST_BLOCKS_MAX,
                });
            }
            REQUEST_BLOCKS => Request::Blocks(
                (0..count)
                    .map(|_| r.item().and_then(Reader::cid))
                    .collect::<Result<_, _>>()?,
            ),
            REQUEST_DELTA => {
                if count != 2 {
                    return Err(WireError::Truncated);
                }
                let from = Reader::cid(r.item()?)?;
                let to = Reader::cid(r.item()?)?;
                Request::Delta { from, to }
            }
            other => return Err(WireError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(request)
    }
}

impl Response {
    /// The encoded message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Heads {
                commits,
                governance,
                equivocations,
            } => {
                let mut w = Writer::new(RESPONSE_HEADS, 3);
                for list in [commits, governance, equivocations] {
                    let mut inner = Writer::new(0, list.len());
                    for item in list {
                        inner.item(item);
                    }
                    w.item(&inner.0);
                }
                w.0
            }
            Response::Blocks(blocks) => {
                let mut w = Writer::new(RESPONSE_BLOCKS, blocks.len());
                for (cid, block) in blocks {
                    w.block(cid, block);
                }
                w.0
            }
            Response::Refused(why) => {
                let mut w = Writer::new(RESPONSE_REFUSED, 1);
                w.item(why.as_bytes());
                w.0
            }
        }
    }

    /// Decodes a message of at most `max` bytes.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Self, WireError> {
        let (kind, mut r) = start(bytes, max)?;
        let count = r.count()?;
        let response = match kind {
            RESPONSE_HEADS => {
                if count != 3 {
                    return Err(WireError::Truncated);
                }
                let mut lists = Vec::with_capacity(3);
                for _ in 0..3 {
                    let mut inner = Reader { bytes: r.item()? };
                    // A list's kind byte is always 0: anything else is a second encoding.
                    let kind = inner.take(1)?[0];
                    if kind != 0 {
                        return Err(WireError::UnknownKind(kind));
                    }
                    let n = inner.count()?;
                    lists.push(inner.items(n)?);
                    inner.finish()?;
                }
                let equivocations = lists.pop().unwrap_or_default();
                let governance = lists.pop().unwrap_or_default();
                let commits = lists.pop().unwrap_or_default();
                Response::Heads {
                    commits,
                    governance,
                    equivocations,
                }
            }
            RESPONSE_BLOCKS => {
                Response::Blocks((0..count).map(|_| r.block()).collect::<Result<_, _>>()?)
            }
            RESPONSE_REFUSED => {
                if count != 1 {
                    return Err(WireError::Truncated);
                }
                // Strict UTF-8, not lossy: a lossy decode would give two encodings one message.
                let text = std::str::from_utf8(r.item()?).map_err(|_| WireError::BadText)?;
                Response::Refused(text.to_owned())
            }
            other => return Err(WireError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_registry::ids::{Blake3, cid_of};

    fn cid(data: &[u8]) -> Cid {
        cid_of::<Blake3>(meridian_registry::ids::CODEC_RAW, data)
    }

    #[test]
    fn every_message_round_trips() {
        let block: Arc<[u8]> = Arc::from(&b"block"[..]);
        let gossip = [
            Gossip::Head(b"commit".to_vec()),
            Gossip::Governance(vec![]),
            Gossip::Equivocation(vec![7; 300]),
        ];
        for g in gossip {
            assert_eq!(Gossip::decode(&g.encode(), MESSAGE_BYTES_MAX), Ok(g));
        }
        let requests = [
            Request::Heads,
            Request::Blocks(vec![cid(b"a"), cid(b"b")]),
            Request::Delta {
                from: cid(b"a"),
                to: cid(b"b"),
            },
        ];
        for r in requests {
            assert_eq!(Request::decode(&r.encode(), MESSAGE_BYTES_MAX), Ok(r));
        }
        let responses = [
            Response::Heads {
                commits: vec![b"c1".to_vec(), b"c2".to_vec()],
                governance: vec![b"g".to_vec()],
                equivocations: vec![],
            },
            Response::Blocks(vec![(cid(b"block"), block)]),
            Response::Refused("busy".into()),
        ];
        for r in responses {
            assert_eq!(Response::decode(&r.encode(), MESSAGE_BYTES_MAX), Ok(r));
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let good = Response::Blocks(vec![(cid(b"x"), Arc::from(&b"x"[..]))]).encode();
        for cut in 0..good.len() {
            assert!(Response::decode(&good[..cut], MESSAGE_BYTES_MAX).is_err());
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            Response::decode(&long, MESSAGE_BYTES_MAX),
            Err(WireError::Trailing(1))
        );
        // A count far beyond the bytes sent is refused before anything is allocated.
        let lie = [REQUEST_BLOCKS, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            Request::decode(&lie, MESSAGE_BYTES_MAX),
            Err(WireError::Truncated)
        );
        assert_eq!(
            Gossip::decode(&[99, 0, 0, 0, 1, 0, 0, 0, 0], 64),
            Err(WireError::UnknownKind(99))
        );
        assert!(matches!(
            Gossip::decode(&Gossip::Head(vec![0; 100]).encode(), 64),
            Err(WireError::TooLarge { max: 64, .. })
        ));
        // Random bytes: errors only.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let len = (x % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> (i % 56)) as u8
                })
                .collect();
            let _ = Gossip::decode(&bytes, 64);
            let _ = Request::decode(&bytes, 64);
            let _ = Response::decode(&bytes, 64);
        }
    }

    #[test]
    fn a_blocks_request_over_the_cap_is_refused_before_its_cids_are_read() {
        let cids: Vec<Cid> = (0..=REQUEST_BLOCKS_MAX as u32)
            .map(|i| cid(&i.to_be_bytes()))
            .collect();
        let over = Request::Blocks(cids.clone()).encode();
        assert_eq!(
            Request::decode(&over, MESSAGE_BYTES_MAX),
            Err(WireError::TooManyItems {
                count: REQUEST_BLOCKS_MAX + 1,
                max: REQUEST_BLOCKS_MAX
            })
        );
        // The count alone decides: a message claiming a million CIDs with garbage after the
        // header is refused for the count, not parsed.
        let mut claim = vec![REQUEST_BLOCKS];
        claim.extend_from_slice(&1_000_000u32.to_be_bytes());
        claim.extend(std::iter::repeat_n(0u8, 4_000_000));
        assert!(matches!(
            Request::decode(&claim, MESSAGE_BYTES_MAX),
            Err(WireError::TooManyItems {
                count: 1_000_000,
                ..
            })
        ));
        let at = Request::Blocks(cids[..REQUEST_BLOCKS_MAX].to_vec());
        assert_eq!(Request::decode(&at.encode(), MESSAGE_BYTES_MAX), Ok(at));
    }

    #[test]
    fn second_spellings_of_a_message_are_refused() {
        // Found by fuzzing (fuzz/regressions/sync_wire/crash-*): each decoded to a message
        // that encodes to other bytes.
        let refusal_not_utf8 = [34, 0, 0, 0, 1, 0, 0, 0, 2, 0xff, 0xfe];
        assert_eq!(
            Response::decode(&refusal_not_utf8, MESSAGE_BYTES_MAX),
            Err(WireError::BadText)
        );
        let mut with_trailing = cid(b"x").to_bytes();
        with_trailing.extend_from_slice(&[0, 0]);
        let mut request = vec![REQUEST_BLOCKS, 0, 0, 0, 1];
        request.extend_from_slice(&(with_trailing.len() as u32).to_be_bytes());
        request.extend_from_slice(&with_trailing);
        assert!(matches!(
            Request::decode(&request, MESSAGE_BYTES_MAX),
            Err(WireError::BadCid(_))
        ));
        let mut heads = Response::Heads {
            commits: vec![],
            governance: vec![],
            equivocations: vec![],
        }
        .encode();
        // The first inner list's kind byte (after kind, count and the item's length).
        heads[9] = 42;
        assert_eq!(
            Response::decode(&heads, MESSAGE_BYTES_MAX),
            Err(WireError::UnknownKind(42))
        );
    }
}

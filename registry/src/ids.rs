//! Content identifiers: how every block in Meridian is named.
//!
//! Meridian data uses CIDv1 with codec dag-cbor (0x71) and a BLAKE3 multihash (0x1e, 32 bytes).
//! SHA-256 (0x12) is supported so the atproto conformance vectors pass; raw (0x55) names opaque
//! bytes. A block is only ever accepted after [`verify_block`] recomputed its hash.

use cid::Cid;
use cid::multihash::Multihash;

/// Multicodec code of DAG-CBOR.
pub const CODEC_DAG_CBOR: u64 = 0x71;
/// Multicodec code of raw bytes.
pub const CODEC_RAW: u64 = 0x55;
/// Multihash code of BLAKE3 (256-bit output).
pub const HASH_BLAKE3: u64 = 0x1e;
/// Multihash code of SHA-256.
pub const HASH_SHA2_256: u64 = 0x12;

/// A 256-bit hash function that can name blocks and place keys in a Merkle Search Tree.
///
/// A type parameter rather than a runtime value, so a tree cannot mix hash functions.
pub trait HashFunction: Send + Sync + 'static {
    /// Multihash code of the function.
    const CODE: u64;
    /// Hashes `data`.
    fn digest(data: &[u8]) -> [u8; 32];
}

/// BLAKE3, the hash of Meridian data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Blake3;

impl HashFunction for Blake3 {
    const CODE: u64 = HASH_BLAKE3;
    fn digest(data: &[u8]) -> [u8; 32] {
        *blake3::hash(data).as_bytes()
    }
}

/// SHA-256, used for the atproto conformance vectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sha256;

impl HashFunction for Sha256 {
    const CODE: u64 = HASH_SHA2_256;
    fn digest(data: &[u8]) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(data).into()
    }
}

/// The CID of `data` under `codec`, hashed with `H`.
pub fn cid_of<H: HashFunction>(codec: u64, data: &[u8]) -> Cid {
    let digest = H::digest(data);
    // A 32-byte digest always fits the 64-byte multihash.
    let hash = Multihash::<64>::wrap(H::CODE, &digest).unwrap_or_default();
    Cid::new_v1(codec, hash)
}

/// The CID of a DAG-CBOR block of Meridian data (BLAKE3).
pub fn dag_cbor_cid(data: &[u8]) -> Cid {
    cid_of::<Blake3>(CODEC_DAG_CBOR, data)
}

/// Why a block does not match the CID that names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The data hashes to something else.
    #[error("block {cid} hash mismatch: data hashes to {actual}")]
    HashMismatch {
        /// The CID the block was offered under.
        cid: Cid,
        /// The CID the data actually has.
        actual: Cid,
    },
    /// The CID uses a hash function Meridian does not accept.
    #[error("block {cid} uses unsupported hash function 0x{code:x}")]
    UnsupportedHash {
        /// The CID.
        cid: Cid,
        /// Its multihash code.
        code: u64,
    },
    /// The CID uses a codec Meridian does not accept.
    #[error("block {cid} uses unsupported codec 0x{codec:x}")]
    UnsupportedCodec {
        /// The CID.
        cid: Cid,
        /// Its codec.
        codec: u64,
    },
}

/// Recomputes the hash of `data` and checks it is the one `cid` names.
pub fn verify_block(cid: &Cid, data: &[u8]) -> Result<(), BlockError> {
    let codec = cid.codec();
    if codec != CODEC_DAG_CBOR && codec != CODEC_RAW {
        return Err(BlockError::UnsupportedCodec { cid: *cid, codec });
    }
    let actual = match cid.hash().code() {
        HASH_BLAKE3 => cid_of::<Blake3>(codec, data),
        HASH_SHA2_256 => cid_of::<Sha256>(codec, data),
        code => return Err(BlockError::UnsupportedHash { cid: *cid, code }),
    };
    if cid.version() != cid::Version::V1 || actual != *cid {
        return Err(BlockError::HashMismatch { cid: *cid, actual });
    }
    Ok(())
}

/// [`verify_block`] for many blocks, the work split over the cores; the error is the first bad
/// block in order.
pub fn verify_blocks(blocks: &[(Cid, std::sync::Arc<[u8]>)]) -> Result<(), BlockError> {
    let check = |part: &[(Cid, std::sync::Arc<[u8]>)]| {
        part.iter()
            .try_for_each(|(cid, block)| verify_block(cid, block))
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || blocks.len() < 64 {
        return check(blocks);
    }
    let chunk = blocks.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = blocks.chunks(chunk);
        let first = parts.next().unwrap_or_default();
        let handles: Vec<_> = parts
            .map(|part| (part, scope.spawn(move || check(part))))
            .collect();
        check(first)?;
        for (part, handle) in handles {
            // A hashing thread cannot panic on any input; if one did, its part is hashed here.
            handle.join().unwrap_or_else(|_| check(part))?;
        }
        Ok(())
    })
}

/// Text that is not a CID, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a cid: {reason}")]
pub struct CidTextError {
    /// The text given.
    pub text: String,
    /// What the CID parser said.
    pub reason: String,
}

/// Parses the base32 text form of a CID, with an error that says what was wrong.
pub fn parse_cid(text: &str) -> Result<Cid, CidTextError> {
    Cid::try_from(text).map_err(|error| CidTextError {
        text: text.to_owned(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampered_block_is_refused() {
        let data = b"\xa1\x61a\x01";
        let cid = dag_cbor_cid(data);
        assert!(verify_block(&cid, data).is_ok());
        let err = verify_block(&cid, b"\xa1\x61a\x02").unwrap_err();
        assert!(matches!(err, BlockError::HashMismatch { .. }));
        assert!(err.to_string().contains(&cid.to_string()));
    }

    #[test]
    fn text_form_is_base32_v1() {
        let cid = dag_cbor_cid(b"\xf6");
        let text = cid.to_string();
        assert!(text.starts_with('b'), "{text}");
        assert_eq!(parse_cid(&text), Ok(cid));
        assert!(parse_cid("not-a-cid").is_err());
    }
}

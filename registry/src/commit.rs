//! Snapshot commits: the signed head of a node's registry.
//!
//! A commit names its publisher (the node's `did:key`), a strictly increasing sequence number,
//! the registry tree root, the previous commit, and its validity window. Chaining through `prev`
//! makes history tamper-evident; two different commits by one publisher with one `seq` are an
//! equivocation, which [`EquivocationProof`] keeps as evidence anyone can check.

use cid::Cid;

use crate::cbor::{self, MapReader, Value};
use crate::ids;
use crate::keys::{KeyError, Keypair, PublicKey};

/// The `$type` of a commit block.
pub const COMMIT_TYPE: &str = "meridian.commit.v1";
/// The `$type` of an equivocation proof block.
pub const EQUIVOCATION_TYPE: &str = "meridian.equivocation.v1";
/// Largest commit block accepted, in bytes.
pub const COMMIT_BYTES_MAX: usize = 1024;

/// The unsigned fields of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitBody {
    /// The publishing node's key.
    pub publisher: PublicKey,
    /// Strictly increasing per publisher, starting at 1.
    pub seq: u64,
    /// The registry tree root.
    pub data: Cid,
    /// The previous commit, `None` for the first.
    pub prev: Option<Cid>,
    /// Unix seconds when it was made.
    pub created_at: i64,
    /// Unix seconds after which nobody may accept it (freeze protection).
    pub expires_at: i64,
}

/// A signed commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// What was signed.
    pub body: CommitBody,
    /// Signature by `body.publisher` over the canonical encoding of the body.
    pub sig: [u8; 64],
}

/// Why a commit block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// Not canonical DAG-CBOR.
    #[error("not canonical dag-cbor: {0}")]
    NonCanonical(cbor::DecodeError),
    /// Wrong shape.
    #[error("{0}")]
    Shape(cbor::ShapeError),
    /// Contradictory fields.
    #[error("{0}")]
    Invalid(String),
    /// A bad publisher key.
    #[error("{0}")]
    Key(KeyError),
    /// Over [`COMMIT_BYTES_MAX`].
    #[error("commit is {size} bytes, over the limit of {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl From<cbor::DecodeError> for CommitError {
    fn from(error: cbor::DecodeError) -> Self {
        Self::NonCanonical(error)
    }
}

impl From<cbor::ShapeError> for CommitError {
    fn from(error: cbor::ShapeError) -> Self {
        Self::Shape(error)
    }
}

impl From<KeyError> for CommitError {
    fn from(error: KeyError) -> Self {
        Self::Key(error)
    }
}

impl CommitBody {
    fn fields(&self) -> std::collections::BTreeMap<String, Value> {
        [
            ("$type", Value::Text(COMMIT_TYPE.into())),
            ("publisher", Value::Text(self.publisher.to_did())),
            ("seq", Value::Integer(i128::from(self.seq))),
            ("data", Value::Link(self.data)),
            ("prev", self.prev.map_or(Value::Null, Value::Link)),
            ("created_at", Value::Integer(i128::from(self.created_at))),
            ("expires_at", Value::Integer(i128::from(self.expires_at))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        cbor::encode(&Value::Map(self.fields()))
    }

    /// Signs the body; the key must be the publisher's.
    pub fn sign(self, key: &Keypair) -> Result<Commit, CommitError> {
        if key.public() != self.publisher {
            return Err(CommitError::Invalid(format!(
                "signing key {} is not the publisher {}",
                key.did(),
                self.publisher
            )));
        }
        let sig = key.sign(&self.signing_bytes());
        Ok(Commit { body: self, sig })
    }
}

impl Commit {
    /// The commit block.
    pub fn to_block(&self) -> Vec<u8> {
        let mut fields = self.body.fields();
        fields.insert("sig".into(), Value::Bytes(self.sig.to_vec()));
        cbor::encode(&Value::Map(fields))
    }

    /// The block and its CID.
    pub fn to_block_and_cid(&self) -> (Cid, Vec<u8>) {
        let block = self.to_block();
        (ids::dag_cbor_cid(&block), block)
    }

    /// The commit's CID.
    pub fn cid(&self) -> Cid {
        self.to_block_and_cid().0
    }

    /// Decodes a commit block strictly; does not check the signature.
    pub fn decode(block: &[u8]) -> Result<Self, CommitError> {
        if block.len() > COMMIT_BYTES_MAX {
            return Err(CommitError::TooLarge {
                size: block.len(),
                max: COMMIT_BYTES_MAX,
            });
        }
        let mut reader = MapReader::new(cbor::decode(block)?)?;
        let kind = reader.text("$type")?;
        if kind != COMMIT_TYPE {
            return Err(CommitError::Invalid(format!(
                "`$type` is `{kind}`, expected `{COMMIT_TYPE}`"
            )));
        }
        let body = CommitBody {
            publisher: PublicKey::from_did(&reader.text("publisher")?)?,
            seq: reader.u64("seq")?,
            data: reader.link("data")?,
            prev: reader.nullable_link("prev")?,
            created_at: reader.i64("created_at")?,
            expires_at: reader.i64("expires_at")?,
        };
        let sig: [u8; 64] = reader
            .bytes("sig")?
            .try_into()
            .map_err(|_| CommitError::Invalid("`sig` is not 64 bytes".into()))?;
        reader.finish()?;
        if body.seq == 0 {
            return Err(CommitError::Invalid("`seq` must start at 1".into()));
        }
        if (body.seq == 1) != body.prev.is_none() {
            return Err(CommitError::Invalid(
                "`prev` must be null exactly when `seq` is 1".into(),
            ));
        }
        if body.expires_at <= body.created_at {
            return Err(CommitError::Invalid(
                "`expires_at` is not after `created_at`".into(),
            ));
        }
        Ok(Self { body, sig })
    }

    /// Checks the publisher's signature.
    pub fn verify_signature(&self) -> Result<(), KeyError> {
        self.body
            .publisher
            .verify(&self.body.signing_bytes(), &self.sig)
    }
}

/// Why an [`EquivocationProof`] proves nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EquivocationError {
    /// One of the two blocks is not a validly signed commit.
    #[error("{which} commit: {source}")]
    Commit {
        /// `first` or `second`.
        which: &'static str,
        /// What is wrong with it.
        source: CommitError,
    },
    /// The commits are by different publishers.
    #[error("commits have different publishers")]
    DifferentPublishers,
    /// The commits have different sequence numbers.
    #[error("commits have different seq")]
    DifferentSeq,
    /// The two blocks are the same commit.
    #[error("commits are identical")]
    Identical,
}

/// Two signed commits by one publisher with one `seq` but different content: proof that the
/// publisher showed different histories to different readers. Anyone can check it offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EquivocationProof {
    /// The first commit block seen.
    pub first: Vec<u8>,
    /// The conflicting commit block.
    pub second: Vec<u8>,
}

impl EquivocationProof {
    /// Checks the proof: both blocks are valid commits, signed by the same publisher, with the
    /// same `seq` and different CIDs. Returns the publisher and seq.
    pub fn verify(&self) -> Result<(PublicKey, u64), EquivocationError> {
        let decode = |which: &'static str, block: &[u8]| {
            let commit = Commit::decode(block)
                .map_err(|source| EquivocationError::Commit { which, source })?;
            commit
                .verify_signature()
                .map_err(|error| EquivocationError::Commit {
                    which,
                    source: error.into(),
                })?;
            Ok(commit)
        };
        let first = decode("first", &self.first)?;
        let second = decode("second", &self.second)?;
        if first.body.publisher != second.body.publisher {
            return Err(EquivocationError::DifferentPublishers);
        }
        if first.body.seq != second.body.seq {
            return Err(EquivocationError::DifferentSeq);
        }
        if self.first == self.second {
            return Err(EquivocationError::Identical);
        }
        Ok((first.body.publisher, first.body.seq))
    }

    /// The proof as one DAG-CBOR block, to store or send.
    pub fn to_block(&self) -> Vec<u8> {
        cbor::encode(&cbor::map([
            ("$type", Value::Text(EQUIVOCATION_TYPE.into())),
            ("first", Value::Bytes(self.first.clone())),
            ("second", Value::Bytes(self.second.clone())),
        ]))
    }

    /// Reads a proof block written by [`EquivocationProof::to_block`]; [`EquivocationProof::verify`]
    /// then checks it.
    pub fn decode(block: &[u8]) -> Result<Self, CommitError> {
        if block.len() > 2 * COMMIT_BYTES_MAX + 128 {
            return Err(CommitError::TooLarge {
                size: block.len(),
                max: 2 * COMMIT_BYTES_MAX + 128,
            });
        }
        let mut reader = MapReader::new(cbor::decode(block)?)?;
        let kind = reader.text("$type")?;
        if kind != EQUIVOCATION_TYPE {
            return Err(CommitError::Invalid(format!(
                "`$type` is `{kind}`, expected `{EQUIVOCATION_TYPE}`"
            )));
        }
        let proof = Self {
            first: reader.bytes("first")?,
            second: reader.bytes("second")?,
        };
        reader.finish()?;
        Ok(proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(key: &Keypair, seq: u64, prev: Option<Cid>) -> CommitBody {
        CommitBody {
            publisher: key.public(),
            seq,
            data: ids::dag_cbor_cid(b"\xf6"),
            prev,
            created_at: 100,
            expires_at: 200,
        }
    }

    #[test]
    fn round_trip_and_signature() {
        let key = Keypair::from_secret(&[5; 32]);
        let commit = body(&key, 1, None).sign(&key).unwrap();
        let decoded = Commit::decode(&commit.to_block()).unwrap();
        assert_eq!(decoded, commit);
        decoded.verify_signature().unwrap();
    }

    #[test]
    fn wrong_key_cannot_sign_or_forge() {
        let key = Keypair::from_secret(&[5; 32]);
        let other = Keypair::from_secret(&[6; 32]);
        assert!(body(&key, 1, None).sign(&other).is_err());
        let mut commit = body(&key, 1, None).sign(&key).unwrap();
        commit.sig = other.sign(&commit.body.signing_bytes());
        assert!(commit.verify_signature().is_err());
    }

    #[test]
    fn inconsistent_fields_are_refused() {
        let key = Keypair::from_secret(&[5; 32]);
        let first = body(&key, 1, None).sign(&key).unwrap();
        let no_prev = body(&key, 2, None).sign(&key).unwrap();
        assert!(Commit::decode(&no_prev.to_block()).is_err());
        let mut backwards = body(&key, 2, Some(first.cid()));
        backwards.expires_at = 50;
        let backwards = backwards.sign(&key).unwrap();
        assert!(Commit::decode(&backwards.to_block()).is_err());
    }

    #[test]
    fn equivocation_proof_checks() {
        let key = Keypair::from_secret(&[5; 32]);
        let a = body(&key, 1, None).sign(&key).unwrap();
        let mut b = body(&key, 1, None);
        b.data = ids::dag_cbor_cid(b"\xf5");
        let b = b.sign(&key).unwrap();
        let proof = EquivocationProof {
            first: a.to_block(),
            second: b.to_block(),
        };
        assert_eq!(proof.verify().unwrap(), (key.public(), 1));
        let decoded = EquivocationProof::decode(&proof.to_block()).unwrap();
        assert_eq!(decoded.verify().unwrap(), (key.public(), 1));
        assert!(EquivocationProof::decode(&a.to_block()).is_err());
        let same = EquivocationProof {
            first: a.to_block(),
            second: a.to_block(),
        };
        assert_eq!(same.verify(), Err(EquivocationError::Identical));
    }
}

//! Multi-signed governance documents.
//!
//! Every governance document is one DAG-CBOR block `{ $type, body, signatures: [{key, sig}] }`.
//! The signatures cover the canonical encoding of `{ $type, body }`, so the type is part of what is
//! signed (a signature on a policy can never pass as one on an attestation). A document's **id**
//! is the CID of those signed bytes: co-signing adds signatures without changing the id, so a
//! revocation can name a document before or after its second admin signed it.

use cid::Cid;
use meridian_registry::cbor::{self, MapReader, Value};
use meridian_registry::ids;
use meridian_registry::keys::{KeyCache, Keypair, PublicKey, SignatureCheck, verify_batch};

/// Largest governance document accepted, in bytes ("endless data" protection).
pub const DOCUMENT_BYTES_MAX: usize = 256 * 1024;
/// Most signatures on one document.
pub const SIGNATURES_MAX: usize = 32;

/// Why a governance document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// Over [`DOCUMENT_BYTES_MAX`] or [`SIGNATURES_MAX`].
    #[error("{what} {value} exceeds the limit of {max}")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// The value found.
        value: usize,
        /// The limit.
        max: usize,
    },
    /// Not canonical DAG-CBOR.
    #[error("not canonical dag-cbor: {0}")]
    NonCanonical(cbor::DecodeError),
    /// Wrong shape: a missing, unknown or mistyped field.
    #[error("{0}")]
    Shape(cbor::ShapeError),
    /// A document of another type where this one was expected.
    #[error("document is a `{found}`, expected `{expected}`")]
    WrongType {
        /// The type expected.
        expected: String,
        /// The type found.
        found: String,
    },
    /// A field's value breaks the document's rules.
    #[error("{0}")]
    Invalid(String),
    /// Too few valid signatures by the role's keys.
    #[error("{role}: {valid} valid signature(s) by its keys, threshold is {threshold}")]
    ThresholdNotMet {
        /// Which role (and which key set) was checked.
        role: String,
        /// Valid signatures by distinct keys of the role.
        valid: usize,
        /// Signatures required.
        threshold: usize,
    },
}

impl From<cbor::DecodeError> for DocumentError {
    fn from(error: cbor::DecodeError) -> Self {
        Self::NonCanonical(error)
    }
}

impl From<cbor::ShapeError> for DocumentError {
    fn from(error: cbor::ShapeError) -> Self {
        Self::Shape(error)
    }
}

/// One signature on a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentSignature {
    /// The signing key.
    pub key: PublicKey,
    /// The signature over the document's signed bytes.
    pub sig: [u8; 64],
}

/// A set of keys and how many of them must sign: what a role (or an organisation) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    /// The keys, without repeats.
    pub keys: Vec<PublicKey>,
    /// How many distinct keys must sign (at least 1, at most the number of keys).
    pub threshold: usize,
}

impl KeySet {
    /// Checks the threshold is between 1 and the number of keys and that no key repeats.
    pub fn validate(&self, name: &str) -> Result<(), DocumentError> {
        if self.threshold == 0 || self.threshold > self.keys.len() {
            return Err(DocumentError::Invalid(format!(
                "role `{name}` has threshold {} for {} key(s)",
                self.threshold,
                self.keys.len()
            )));
        }
        for (index, key) in self.keys.iter().enumerate() {
            if self.keys[..index].contains(key) {
                return Err(DocumentError::Invalid(format!(
                    "role `{name}` lists key {key} twice"
                )));
            }
        }
        Ok(())
    }

    /// The key set as a data-model value `{keys: [did], threshold}`.
    pub fn to_value(&self) -> Value {
        cbor::map([
            (
                "keys",
                Value::Array(self.keys.iter().map(|k| Value::Text(k.to_did())).collect()),
            ),
            ("threshold", Value::Integer(self.threshold as i128)),
        ])
    }

    /// Reads `{keys: [did], threshold}`.
    pub fn from_value(value: Value, name: &str) -> Result<Self, DocumentError> {
        let mut reader = MapReader::new(value)?;
        let mut keys = Vec::new();
        for key in reader.array("keys")? {
            let Value::Text(did) = key else {
                return Err(DocumentError::Invalid(format!(
                    "role `{name}`: a key is not a did:key string"
                )));
            };
            keys.push(
                PublicKey::from_did(&did)
                    .map_err(|e| DocumentError::Invalid(format!("role `{name}`: {e}")))?,
            );
        }
        let threshold = reader.u64("threshold")? as usize;
        reader.finish()?;
        let set = Self { keys, threshold };
        set.validate(name)?;
        Ok(set)
    }
}

/// A governance document: a typed body and the signatures on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDocument {
    /// The document type, e.g. `meridian.root.v1`.
    pub kind: String,
    /// The body (a map).
    pub body: Value,
    /// The signatures, at most one per key.
    pub signatures: Vec<DocumentSignature>,
}

impl SignedDocument {
    /// An unsigned document.
    pub fn new(kind: &str, body: Value) -> Self {
        Self {
            kind: kind.to_owned(),
            body,
            signatures: Vec::new(),
        }
    }

    /// The bytes every signature covers: the canonical encoding of `{$type, body}`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        cbor::encode(&cbor::map([
            ("$type", Value::Text(self.kind.clone())),
            ("body", self.body.clone()),
        ]))
    }

    /// The document's id: the CID of its signed bytes (stable when more signatures are added).
    pub fn id(&self) -> Cid {
        ids::dag_cbor_cid(&self.signing_bytes())
    }

    /// Adds (or replaces) `key`'s signature.
    pub fn sign(&mut self, key: &Keypair) {
        let sig = key.sign(&self.signing_bytes());
        let public = key.public();
        self.signatures.retain(|s| s.key != public);
        self.signatures.push(DocumentSignature { key: public, sig });
    }

    /// The full block, signatures included.
    pub fn to_block(&self) -> Vec<u8> {
        let signatures = self
            .signatures
            .iter()
            .map(|s| {
                cbor::map([
                    ("key", Value::Text(s.key.to_did())),
                    ("sig", Value::Bytes(s.sig.to_vec())),
                ])
            })
            .collect();
        cbor::encode(&cbor::map([
            ("$type", Value::Text(self.kind.clone())),
            ("body", self.body.clone()),
            ("signatures", Value::Array(signatures)),
        ]))
    }

    /// Decodes a block strictly, requiring type `expected_kind`. Does not check signatures.
    pub fn decode(block: &[u8], expected_kind: &str) -> Result<Self, DocumentError> {
        if block.len() > DOCUMENT_BYTES_MAX {
            return Err(DocumentError::TooLarge {
                what: "document bytes",
                value: block.len(),
                max: DOCUMENT_BYTES_MAX,
            });
        }
        let mut reader = MapReader::new(cbor::decode(block)?)?;
        let kind = reader.text("$type")?;
        if kind != expected_kind {
            return Err(DocumentError::WrongType {
                expected: expected_kind.to_owned(),
                found: kind,
            });
        }
        let body = reader.take("body")?;
        if !matches!(body, Value::Map(_)) {
            return Err(DocumentError::Invalid("`body` is not a map".into()));
        }
        let raw_signatures = reader.array("signatures")?;
        reader.finish()?;
        if raw_signatures.len() > SIGNATURES_MAX {
            return Err(DocumentError::TooLarge {
                what: "signatures",
                value: raw_signatures.len(),
                max: SIGNATURES_MAX,
            });
        }
        let mut keys = KeyCache::new();
        let mut signatures: Vec<DocumentSignature> = Vec::with_capacity(raw_signatures.len());
        for raw in raw_signatures {
            let mut entry = MapReader::new(raw)?;
            let key = keys
                .parse(&entry.text("key")?)
                .map_err(|e| DocumentError::Invalid(format!("signature key: {e}")))?;
            let sig: [u8; 64] = entry
                .bytes("sig")?
                .try_into()
                .map_err(|_| DocumentError::Invalid("a signature is not 64 bytes".into()))?;
            entry.finish()?;
            if signatures.iter().any(|s| s.key == key) {
                return Err(DocumentError::Invalid(format!("key {key} signed twice")));
            }
            signatures.push(DocumentSignature { key, sig });
        }
        Ok(Self {
            kind,
            body,
            signatures,
        })
    }

    /// Counts valid signatures by distinct keys of `set` and checks the threshold. Signatures by
    /// other keys are ignored, as TUF does; an invalid signature by a listed key does not count.
    pub fn verify_threshold(&self, set: &KeySet, role: &str) -> Result<usize, DocumentError> {
        let message = self.signing_bytes();
        let mut valid = 0;
        for signature in &self.signatures {
            if !set.keys.contains(&signature.key) {
                continue;
            }
            let check = SignatureCheck {
                key: signature.key,
                message: &message,
                signature: signature.sig,
            };
            if verify_batch(std::slice::from_ref(&check), &[0; 32]) {
                valid += 1;
            }
        }
        if valid < set.threshold {
            return Err(DocumentError::ThresholdNotMet {
                role: role.to_owned(),
                valid,
                threshold: set.threshold,
            });
        }
        Ok(valid)
    }
}

/// Reads an array of text values.
pub(crate) fn text_list(value: Value, field: &str) -> Result<Vec<String>, DocumentError> {
    let Value::Array(items) = value else {
        return Err(DocumentError::Invalid(format!("`{field}` is not an array")));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Text(text) => Ok(text),
            _ => Err(DocumentError::Invalid(format!(
                "`{field}` holds a non-string"
            ))),
        })
        .collect()
}

/// A text array value.
pub(crate) fn text_array(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::Text(s.clone())).collect())
}

//! Attestations, revocations and organisation registration.
//!
//! An attestation is a claim by the `attest` role about a subject (an organisation, an agent, a
//! key, a node or a document CID), with a validity window, signed by a threshold of the role's
//! keys (a second admin co-signs an existing attestation to reach it). A revocation is an
//! attestation of type [`KIND_REVOCATION`] whose subject is the revoked attestation's id.
//!
//! Organisations ask to be verified with a [`Registration`] that every key it lists signs (proof
//! of possession); admins approve it by issuing an [`KIND_ORG_VERIFIED`] attestation that binds
//! the organisation to its domain and keys.

use std::collections::{BTreeMap, HashMap, HashSet};

use cid::Cid;
use meridian_registry::cbor::{self, MapReader, Value};
use meridian_registry::keys::{Keypair, PublicKey};
use meridian_registry::manifest::check_name;

use crate::document::{DocumentError, KeySet, SignedDocument, text_array, text_list};
use crate::root::{RoleName, TrustedRoot};

/// The `$type` of an attestation.
pub const ATTESTATION_TYPE: &str = "meridian.attestation.v1";
/// The `$type` of a registration request.
pub const REGISTRATION_TYPE: &str = "meridian.registration.v1";
/// The `$type` of an organisation's key rotation.
pub const KEY_ROTATION_TYPE: &str = "meridian.key-rotation.v1";
/// An organisation is verified; claims `domain` (text) and `keys` (array of did:key).
pub const KIND_ORG_VERIFIED: &str = "org.verified";
/// A key is revoked from a time on; subject is the key, claims `org` and `revoked_at`.
pub const KIND_KEY_REVOKED: &str = "key.revoked";
/// A node key vouched for by the `attest` role: hubs admit its heads.
pub const KIND_NODE_VERIFIED: &str = "node.verified";
/// An attestation is withdrawn; subject is its document id.
pub const KIND_REVOCATION: &str = "revocation";

/// What an attestation is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// An organisation id.
    Org(String),
    /// An agent key `{org}/{agent}`.
    Agent(String),
    /// An organisation's signing key.
    Key(PublicKey),
    /// A node's key.
    Node(PublicKey),
    /// A document or block.
    Document(Cid),
}

impl Subject {
    fn to_value(&self) -> Value {
        let (kind, id) = match self {
            Subject::Org(org) => ("org", Value::Text(org.clone())),
            Subject::Agent(agent) => ("agent", Value::Text(agent.clone())),
            Subject::Key(key) => ("key", Value::Text(key.to_did())),
            Subject::Node(key) => ("node", Value::Text(key.to_did())),
            Subject::Document(cid) => ("cid", Value::Link(*cid)),
        };
        cbor::map([("type", Value::Text(kind.into())), ("id", id)])
    }

    fn from_value(value: Value) -> Result<Self, DocumentError> {
        let mut reader = MapReader::new(value)?;
        let kind = reader.text("type")?;
        let id = reader.take("id")?;
        reader.finish()?;
        let text = |id: Value| match id {
            Value::Text(text) => Ok(text),
            _ => Err(DocumentError::Invalid(format!(
                "subject of type `{kind}` needs a text id"
            ))),
        };
        let key = |id: Value| {
            text(id).and_then(|did| {
                PublicKey::from_did(&did).map_err(|e| DocumentError::Invalid(e.to_string()))
            })
        };
        match kind.as_str() {
            "org" => Ok(Subject::Org(text(id)?)),
            "agent" => Ok(Subject::Agent(text(id)?)),
            "key" => Ok(Subject::Key(key(id)?)),
            "node" => Ok(Subject::Node(key(id)?)),
            "cid" => match id {
                Value::Link(cid) => Ok(Subject::Document(cid)),
                _ => Err(DocumentError::Invalid(
                    "subject of type `cid` needs a link".into(),
                )),
            },
            other => Err(DocumentError::Invalid(format!(
                "unknown subject type `{other}`"
            ))),
        }
    }
}

/// What an attestation says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationBody {
    /// What it is about.
    pub subject: Subject,
    /// What kind of claim, e.g. [`KIND_ORG_VERIFIED`].
    pub kind: String,
    /// The claim's details.
    pub claims: BTreeMap<String, Value>,
    /// The issuing role (always `attest` today; kept so the document says who vouches).
    pub issuer: String,
    /// Unix seconds it was issued.
    pub issued_at: i64,
    /// Unix seconds after which it no longer holds.
    pub expires_at: i64,
}

/// A signed attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// What it says.
    pub body: AttestationBody,
    /// The signed document.
    pub document: SignedDocument,
}

/// Why an attestation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationError {
    /// Bad document or too few signatures.
    #[error("attestation {id}: {error}")]
    Document {
        /// The attestation's id.
        id: Cid,
        /// Why.
        error: DocumentError,
    },
    /// Expired.
    #[error("attestation {id} expired at {expires_at} (now {now})")]
    Expired {
        /// The attestation's id.
        id: Cid,
        /// Its expiry.
        expires_at: i64,
        /// The time checked.
        now: i64,
    },
    /// Issued in the future beyond the allowed skew.
    #[error("attestation {id} is issued at {issued_at}, in the future (now {now})")]
    NotYetValid {
        /// The attestation's id.
        id: Cid,
        /// Its issue time.
        issued_at: i64,
        /// The time checked.
        now: i64,
    },
}

impl AttestationBody {
    fn to_value(&self) -> Value {
        cbor::map([
            ("subject", self.subject.to_value()),
            ("type", Value::Text(self.kind.clone())),
            ("claims", Value::Map(self.claims.clone())),
            ("issuer", Value::Text(self.issuer.clone())),
            ("issued_at", Value::Integer(i128::from(self.issued_at))),
            ("expires_at", Value::Integer(i128::from(self.expires_at))),
        ])
    }

    fn from_value(value: Value) -> Result<Self, DocumentError> {
        let mut reader = MapReader::new(value)?;
        let subject = Subject::from_value(reader.take("subject")?)?;
        let kind = reader.text("type")?;
        let claims = match reader.take("claims")? {
            Value::Map(map) => map,
            _ => return Err(DocumentError::Invalid("`claims` is not a map".into())),
        };
        let issuer = reader.text("issuer")?;
        let issued_at = reader.i64("issued_at")?;
        let expires_at = reader.i64("expires_at")?;
        reader.finish()?;
        let body = Self {
            subject,
            kind,
            claims,
            issuer,
            issued_at,
            expires_at,
        };
        body.validate()?;
        Ok(body)
    }

    fn validate(&self) -> Result<(), DocumentError> {
        if self.expires_at <= self.issued_at {
            return Err(DocumentError::Invalid(
                "`expires_at` is not after `issued_at`".into(),
            ));
        }
        if self.issuer != RoleName::Attest.as_str() {
            return Err(DocumentError::Invalid(format!(
                "issuer `{}` is not the attest role",
                self.issuer
            )));
        }
        match self.kind.as_str() {
            KIND_ORG_VERIFIED => {
                if !matches!(self.subject, Subject::Org(_)) {
                    return Err(DocumentError::Invalid(
                        "org.verified needs an org subject".into(),
                    ));
                }
                org_keys_from_claims(&self.claims)?;
            }
            KIND_KEY_REVOKED => {
                if !matches!(self.subject, Subject::Key(_)) {
                    return Err(DocumentError::Invalid(
                        "key.revoked needs a key subject".into(),
                    ));
                }
                match self.claims.get("revoked_at") {
                    Some(Value::Integer(_)) => {}
                    _ => {
                        return Err(DocumentError::Invalid(
                            "key.revoked needs an integer `revoked_at` claim".into(),
                        ));
                    }
                }
            }
            KIND_REVOCATION if !matches!(self.subject, Subject::Document(_)) => {
                return Err(DocumentError::Invalid(
                    "a revocation needs a cid subject".into(),
                ));
            }
            crate::domain::KIND_ORG_DOMAIN => {
                if !matches!(self.subject, Subject::Org(_)) {
                    return Err(DocumentError::Invalid(
                        "org.domain needs an org subject".into(),
                    ));
                }
                match self.claims.get("domain") {
                    Some(Value::Text(domain)) => crate::domain::check_domain(domain)
                        .map_err(|e| DocumentError::Invalid(format!("org.domain: {e}")))?,
                    _ => {
                        return Err(DocumentError::Invalid(
                            "org.domain needs a text `domain` claim".into(),
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn org_keys_from_claims(claims: &BTreeMap<String, Value>) -> Result<Vec<PublicKey>, DocumentError> {
    let keys = claims
        .get("keys")
        .cloned()
        .ok_or_else(|| DocumentError::Invalid("org.verified lacks a `keys` claim".into()))?;
    text_list(keys, "keys")?
        .iter()
        .map(|did| PublicKey::from_did(did).map_err(|e| DocumentError::Invalid(e.to_string())))
        .collect()
}

impl Attestation {
    /// An unsigned attestation issued by the attest role.
    pub fn new(
        subject: Subject,
        kind: &str,
        claims: BTreeMap<String, Value>,
        issued_at: i64,
        expires_at: i64,
    ) -> Result<Self, DocumentError> {
        let body = AttestationBody {
            subject,
            kind: kind.to_owned(),
            claims,
            issuer: RoleName::Attest.as_str().to_owned(),
            issued_at,
            expires_at,
        };
        body.validate()?;
        let document = SignedDocument::new(ATTESTATION_TYPE, body.to_value());
        Ok(Self { body, document })
    }

    /// A revocation of the attestation with id `revoked`.
    pub fn revocation(
        revoked: Cid,
        reason: &str,
        issued_at: i64,
        expires_at: i64,
    ) -> Result<Self, DocumentError> {
        let claims = [("reason".to_owned(), Value::Text(reason.to_owned()))].into();
        Self::new(
            Subject::Document(revoked),
            KIND_REVOCATION,
            claims,
            issued_at,
            expires_at,
        )
    }

    /// Adds (or co-signs with) an admin's signature.
    pub fn sign(&mut self, key: &Keypair) {
        self.document.sign(key);
    }

    /// Decodes an attestation block; [`Attestation::verify`] checks it.
    pub fn decode(block: &[u8]) -> Result<Self, DocumentError> {
        let document = SignedDocument::decode(block, ATTESTATION_TYPE)?;
        let body = AttestationBody::from_value(document.body.clone())?;
        Ok(Self { body, document })
    }

    /// The block.
    pub fn to_block(&self) -> Vec<u8> {
        self.document.to_block()
    }

    /// The id: what a revocation names.
    pub fn id(&self) -> Cid {
        self.document.id()
    }

    /// Checks the attest role's threshold under `root` and the validity window at `now`
    /// (allowing `clock_skew_secs` for an issue time slightly in the future).
    pub fn verify(
        &self,
        root: &TrustedRoot,
        now: i64,
        clock_skew_secs: i64,
    ) -> Result<(), AttestationError> {
        let id = self.id();
        self.document
            .verify_threshold(root.role(RoleName::Attest), "attest role")
            .map_err(|error| AttestationError::Document { id, error })?;
        if self.body.expires_at <= now {
            return Err(AttestationError::Expired {
                id,
                expires_at: self.body.expires_at,
                now,
            });
        }
        if self.body.issued_at > now.saturating_add(clock_skew_secs) {
            return Err(AttestationError::NotYetValid {
                id,
                issued_at: self.body.issued_at,
                now,
            });
        }
        Ok(())
    }
}

/// An organisation's request to be verified, signed by every key it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The organisation id.
    pub org: String,
    /// Its domain.
    pub domain: String,
    /// How to reach its operators.
    pub contact: String,
    /// The keys it will sign manifests with.
    pub keys: Vec<PublicKey>,
    /// The signed document.
    pub document: SignedDocument,
}

impl Registration {
    /// A request signed by every one of `keys` (proof that the organisation holds them).
    pub fn create(
        org: &str,
        domain: &str,
        contact: &str,
        keys: &[&Keypair],
    ) -> Result<Self, DocumentError> {
        check_name("org", org).map_err(|e| DocumentError::Invalid(e.to_string()))?;
        if keys.is_empty() {
            return Err(DocumentError::Invalid(
                "a registration needs at least one key".into(),
            ));
        }
        let dids: Vec<String> = keys.iter().map(|k| k.did()).collect();
        let body = cbor::map([
            ("org", Value::Text(org.to_owned())),
            ("domain", Value::Text(domain.to_owned())),
            ("contact", Value::Text(contact.to_owned())),
            ("keys", text_array(&dids)),
        ]);
        let mut document = SignedDocument::new(REGISTRATION_TYPE, body);
        for key in keys {
            document.sign(key);
        }
        Ok(Self {
            org: org.to_owned(),
            domain: domain.to_owned(),
            contact: contact.to_owned(),
            keys: keys.iter().map(|k| k.public()).collect(),
            document,
        })
    }

    /// Decodes a request and checks proof of possession: every listed key signed it.
    pub fn decode_and_verify(block: &[u8]) -> Result<Self, DocumentError> {
        let document = SignedDocument::decode(block, REGISTRATION_TYPE)?;
        let mut reader = MapReader::new(document.body.clone())?;
        let org = reader.text("org")?;
        let domain = reader.text("domain")?;
        let contact = reader.text("contact")?;
        let dids = text_list(reader.take("keys")?, "keys")?;
        reader.finish()?;
        check_name("org", &org).map_err(|e| DocumentError::Invalid(e.to_string()))?;
        let keys: Vec<PublicKey> = dids
            .iter()
            .map(|d| PublicKey::from_did(d).map_err(|e| DocumentError::Invalid(e.to_string())))
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Err(DocumentError::Invalid(
                "a registration needs at least one key".into(),
            ));
        }
        let all = KeySet {
            keys: keys.clone(),
            threshold: keys.len(),
        };
        all.validate("registration keys")?;
        document.verify_threshold(&all, "proof of possession (every listed key)")?;
        Ok(Self {
            org,
            domain,
            contact,
            keys,
            document,
        })
    }

    /// The block.
    pub fn to_block(&self) -> Vec<u8> {
        self.document.to_block()
    }

    /// The unsigned `org.verified` attestation that approves this request; admins sign it.
    pub fn approve(&self, issued_at: i64, expires_at: i64) -> Result<Attestation, DocumentError> {
        let dids: Vec<String> = self.keys.iter().map(|k| k.to_did()).collect();
        let claims = [
            ("domain".to_owned(), Value::Text(self.domain.clone())),
            ("keys".to_owned(), text_array(&dids)),
            ("registration".to_owned(), Value::Link(self.document.id())),
        ]
        .into();
        Attestation::new(
            Subject::Org(self.org.clone()),
            KIND_ORG_VERIFIED,
            claims,
            issued_at,
            expires_at,
        )
    }
}

/// An organisation changes its keys: adds some, removes others. A link in the organisation's
/// key chain: it names the key set it replaces (`prev`, [`key_set_digest`]) and must be signed
/// by a threshold of that set (one key unless the organisation's verification sets a
/// `threshold` claim) and by every key it adds (proof of possession). A node applies it only
/// when `prev` is the organisation's current set, so rotations apply in one order and an old
/// rotation replayed later (say, one that added a key removed since) does nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    /// The organisation.
    pub org: String,
    /// The digest of the key set this rotation replaces.
    pub prev: [u8; 32],
    /// Keys added.
    pub add: Vec<PublicKey>,
    /// Keys removed: from the moment a node applies the rotation they sign nothing it accepts,
    /// whatever time a manifest claims (a thief can backdate `updated_at`).
    pub remove: Vec<PublicKey>,
    /// Unix seconds the organisation meant the change to take effect (informational: what a
    /// node can check decides, which is when it applied the rotation).
    pub effective_at: i64,
    /// The signed document.
    pub document: SignedDocument,
}

/// The digest by which a rotation names an organisation's key set: SHA-256 of the
/// sorted, deduplicated did:keys under a domain string, so it does not depend on order.
pub fn key_set_digest(keys: &[PublicKey]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut dids: Vec<String> = keys.iter().map(PublicKey::to_did).collect();
    dids.sort();
    dids.dedup();
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"meridian org key set v1\n");
    for did in dids {
        hasher.update(did.as_bytes());
        hasher.update(b"\n");
    }
    hasher.finalize().into()
}

impl KeyRotation {
    /// A rotation of `org`'s key set `current_set`, signed by `signers` (keys of that set,
    /// at least its threshold) and every key in `add`.
    pub fn create(
        org: &str,
        current_set: &[PublicKey],
        signers: &[&Keypair],
        add: &[&Keypair],
        remove: &[PublicKey],
        effective_at: i64,
    ) -> Result<Self, DocumentError> {
        check_name("org", org).map_err(|e| DocumentError::Invalid(e.to_string()))?;
        let added: Vec<String> = add.iter().map(|k| k.did()).collect();
        let removed: Vec<String> = remove.iter().map(|k| k.to_did()).collect();
        let body = cbor::map([
            ("org", Value::Text(org.to_owned())),
            ("prev", Value::Bytes(key_set_digest(current_set).to_vec())),
            ("add", text_array(&added)),
            ("remove", text_array(&removed)),
            ("effective_at", Value::Integer(i128::from(effective_at))),
        ]);
        let mut document = SignedDocument::new(KEY_ROTATION_TYPE, body);
        for key in signers {
            document.sign(key);
        }
        for key in add {
            document.sign(key);
        }
        Self::from_document(document)
    }

    /// Decodes a rotation block (signatures are checked by [`AttestationSet::apply_rotation`]).
    pub fn decode(block: &[u8]) -> Result<Self, DocumentError> {
        Self::from_document(SignedDocument::decode(block, KEY_ROTATION_TYPE)?)
    }

    fn from_document(document: SignedDocument) -> Result<Self, DocumentError> {
        let mut reader = MapReader::new(document.body.clone())?;
        let org = reader.text("org")?;
        let prev: [u8; 32] = reader.bytes("prev")?.try_into().map_err(|_| {
            DocumentError::Invalid(
                "`prev` must be the 32-byte digest of the key set it replaces".into(),
            )
        })?;
        let parse = |dids: Vec<String>| -> Result<Vec<PublicKey>, DocumentError> {
            dids.iter()
                .map(|d| PublicKey::from_did(d).map_err(|e| DocumentError::Invalid(e.to_string())))
                .collect()
        };
        let add = parse(text_list(reader.take("add")?, "add")?)?;
        let remove = parse(text_list(reader.take("remove")?, "remove")?)?;
        let effective_at = reader.i64("effective_at")?;
        reader.finish()?;
        if add.is_empty() && remove.is_empty() {
            return Err(DocumentError::Invalid(
                "a rotation must add or remove a key".into(),
            ));
        }
        Ok(Self {
            org,
            prev,
            add,
            remove,
            effective_at,
            document,
        })
    }

    /// The block.
    pub fn to_block(&self) -> Vec<u8> {
        self.document.to_block()
    }
}

/// Why a key rotation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// The organisation is not verified, so it has no current keys.
    #[error("organisation `{org}` is not verified")]
    NotVerified {
        /// The organisation.
        org: String,
    },
    /// No valid signature by a current key, or a missing proof of possession.
    #[error("key rotation for `{org}`: {error}")]
    Document {
        /// The organisation.
        org: String,
        /// Why.
        error: DocumentError,
    },
    /// The rotation would leave the organisation without keys.
    #[error("key rotation would leave `{org}` without keys")]
    NoKeysLeft {
        /// The organisation.
        org: String,
    },
    /// The rotation replaces a key set that is not the organisation's current one: applied
    /// already, replayed, or a link of the chain is missing.
    #[error("key rotation for `{org}` replaces a key set that is not its current one")]
    NotCurrent {
        /// The organisation.
        org: String,
    },
}

/// What a node knows about organisations: the attestations that verified under the trusted
/// root, with revocations applied.
#[derive(Debug, Clone, Default)]
pub struct AttestationSet {
    attestations: HashMap<Cid, Attestation>,
    /// The ids of `attestations` by subject: the acceptance rule asks about one organisation
    /// per manifest, so [`AttestationSet::about`] must not scan every attestation.
    by_subject: HashMap<Subject, Vec<Cid>>,
    revoked: HashSet<Cid>,
    /// Keys organisations added by rotation, per organisation.
    added_keys: HashMap<String, Vec<PublicKey>>,
    /// Keys organisations removed by rotation, with the rotation's `effective_at`.
    removed_keys: HashMap<PublicKey, i64>,
    /// Rotations applied, in the order they were.
    rotations: Vec<KeyRotation>,
}

/// Why an attestation was not added to a set.
pub type AddError = AttestationError;

/// A governance document [`AttestationSet::from_documents`] left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedDocument {
    /// Its place in the list given.
    pub index: usize,
    /// Why it was left out.
    pub reason: String,
}

impl AttestationSet {
    /// The set made of `blocks`: attestations (revocations included) first, in order, then key
    /// rotations, which need the organisations' verifications in place. A block that does not
    /// verify, or is neither, is left out and reported; it never stops the others. The CLI and
    /// the bindings build their sets through this one function.
    pub fn from_documents(
        blocks: &[&[u8]],
        root: &TrustedRoot,
        now: i64,
    ) -> (Self, Vec<SkippedDocument>) {
        let mut set = Self::new();
        let mut rotations = Vec::new();
        let mut skipped = Vec::new();
        for (index, block) in blocks.iter().enumerate() {
            if let Ok(attestation) = Attestation::decode(block) {
                if let Err(error) = set.add(attestation, root, now) {
                    skipped.push(SkippedDocument {
                        index,
                        reason: error.to_string(),
                    });
                }
            } else if let Ok(rotation) = KeyRotation::decode(block) {
                rotations.push((index, rotation));
            } else {
                skipped.push(SkippedDocument {
                    index,
                    reason: "not an attestation or key rotation".into(),
                });
            }
        }
        // Each rotation names the set it replaces, so the chain has one order whatever order
        // the files came in: apply what fits until nothing more does.
        let mut pending = rotations;
        loop {
            let before = pending.len();
            let mut left = Vec::new();
            for (index, rotation) in pending {
                match set.apply_rotation(&rotation, now) {
                    Ok(()) => {}
                    Err(RotationError::NotCurrent { .. }) => left.push((index, rotation)),
                    Err(error) => skipped.push(SkippedDocument {
                        index,
                        reason: error.to_string(),
                    }),
                }
            }
            pending = left;
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        for (index, rotation) in pending {
            skipped.push(SkippedDocument {
                index,
                reason: RotationError::NotCurrent { org: rotation.org }.to_string(),
            });
        }
        (set, skipped)
    }

    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies `attestation` under `root` at `now` and adds it. A revocation takes effect at once.
    pub fn add(
        &mut self,
        attestation: Attestation,
        root: &TrustedRoot,
        now: i64,
    ) -> Result<Cid, AddError> {
        attestation.verify(root, now, 300)?;
        let id = attestation.id();
        if attestation.body.kind == KIND_REVOCATION
            && let Subject::Document(revoked) = attestation.body.subject
        {
            self.revoked.insert(revoked);
        }
        let subject = attestation.body.subject.clone();
        if self.attestations.insert(id, attestation).is_none() {
            self.by_subject.entry(subject).or_default().push(id);
        }
        Ok(id)
    }

    /// Applies an organisation's key rotation at `now`: it must replace the organisation's
    /// current key set (`prev`), be signed by a threshold of that set and by every key it adds,
    /// and leave at least one key. A key removed or revoked is not in the current set, so it can
    /// sign neither manifests nor further rotations.
    pub fn apply_rotation(
        &mut self,
        rotation: &KeyRotation,
        now: i64,
    ) -> Result<(), RotationError> {
        let org = rotation.org.clone();
        let (OrgStatus::Verified { keys }, threshold) =
            (self.org_status(&org, now), self.org_threshold(&org, now))
        else {
            return Err(RotationError::NotVerified { org });
        };
        if key_set_digest(&keys) != rotation.prev {
            return Err(RotationError::NotCurrent { org });
        }
        let current = KeySet {
            keys: keys.clone(),
            threshold: threshold.clamp(1, keys.len().max(1)),
        };
        rotation
            .document
            .verify_threshold(&current, "a threshold of the organisation's current keys")
            .map_err(|error| RotationError::Document {
                org: org.clone(),
                error,
            })?;
        if !rotation.add.is_empty() {
            let added = KeySet {
                keys: rotation.add.clone(),
                threshold: rotation.add.len(),
            };
            rotation
                .document
                .verify_threshold(&added, "proof of possession (every added key)")
                .map_err(|error| RotationError::Document {
                    org: org.clone(),
                    error,
                })?;
        }
        let remaining = keys
            .iter()
            .chain(&rotation.add)
            .filter(|k| !rotation.remove.contains(k))
            .count();
        if remaining == 0 {
            return Err(RotationError::NoKeysLeft { org });
        }
        let entry = self.added_keys.entry(org).or_default();
        for key in &rotation.add {
            if !entry.contains(key) {
                entry.push(*key);
            }
            self.removed_keys.remove(key);
        }
        for key in &rotation.remove {
            self.removed_keys.insert(*key, rotation.effective_at);
        }
        self.rotations.push(rotation.clone());
        Ok(())
    }

    /// The rotations applied, in order: what a node hands peers so they reach the same key sets.
    pub fn rotations(&self) -> &[KeyRotation] {
        &self.rotations
    }

    /// How many of an organisation's current keys must sign its rotations: the `threshold`
    /// claim of its verification, else one.
    fn org_threshold(&self, org: &str, now: i64) -> usize {
        let subject = Subject::Org(org.to_owned());
        self.about(&subject)
            .filter(|(_, a, revoked)| {
                !revoked && a.body.kind == KIND_ORG_VERIFIED && now < a.body.expires_at
            })
            .filter_map(|(_, a, _)| match a.body.claims.get("threshold") {
                Some(Value::Integer(n)) => usize::try_from(*n).ok(),
                _ => None,
            })
            .max()
            .unwrap_or(1)
    }

    /// The organisation's current key set with its threshold (as its rotations and a domain
    /// proof must be signed), when it is verified at `now`.
    pub fn org_key_set(&self, org: &str, now: i64) -> Option<KeySet> {
        let OrgStatus::Verified { keys } = self.org_status(org, now) else {
            return None;
        };
        let threshold = self.org_threshold(org, now).clamp(1, keys.len().max(1));
        Some(KeySet { keys, threshold })
    }

    /// The domain `org` is bound to at `now`: from its newest unrevoked, unexpired
    /// `org.domain` attestation, while the organisation is verified. `None` when it has none.
    pub fn org_domain(&self, org: &str, now: i64) -> Option<String> {
        if !matches!(self.org_status(org, now), OrgStatus::Verified { .. }) {
            return None;
        }
        let subject = Subject::Org(org.to_owned());
        self.about(&subject)
            .filter(|(_, a, revoked)| {
                !revoked
                    && a.body.kind == crate::domain::KIND_ORG_DOMAIN
                    && a.body.issued_at <= now
                    && now < a.body.expires_at
            })
            .max_by_key(|(_, a, _)| a.body.issued_at)
            .and_then(|(_, a, _)| match a.body.claims.get("domain") {
                Some(Value::Text(domain)) => Some(domain.clone()),
                _ => None,
            })
    }

    /// Whether the attestation `id` is held.
    pub fn contains(&self, id: &Cid) -> bool {
        self.attestations.contains_key(id)
    }

    /// Whether the attestation `id` has been revoked.
    pub fn is_revoked(&self, id: &Cid) -> bool {
        self.revoked.contains(id)
    }

    /// Every attestation about `subject`, with its id (kept, not hashed again) and whether it
    /// is revoked.
    pub fn about<'a>(
        &'a self,
        subject: &'a Subject,
    ) -> impl Iterator<Item = (&'a Cid, &'a Attestation, bool)> + 'a {
        self.by_subject
            .get(subject)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                self.attestations
                    .get_key_value(id)
                    .map(|(id, a)| (id, a, self.revoked.contains(id)))
            })
    }

    /// Every attestation held, with its id (kept, not hashed again).
    pub fn all(&self) -> impl Iterator<Item = (&Cid, &Attestation)> {
        self.attestations.iter()
    }

    /// The current `org.verified` status of `org` at `now`.
    pub fn org_status(&self, org: &str, now: i64) -> OrgStatus {
        let subject = Subject::Org(org.to_owned());
        let mut status = OrgStatus::Unverified;
        for (_, attestation, revoked) in self.about(&subject) {
            if attestation.body.kind != KIND_ORG_VERIFIED {
                continue;
            }
            if revoked {
                if status == OrgStatus::Unverified {
                    status = OrgStatus::Revoked;
                }
                continue;
            }
            if attestation.body.expires_at <= now {
                if matches!(status, OrgStatus::Unverified | OrgStatus::Revoked) {
                    status = OrgStatus::Expired;
                }
                continue;
            }
            let keys = org_keys_from_claims(&attestation.body.claims).unwrap_or_default();
            match &mut status {
                OrgStatus::Verified { keys: known } => {
                    for key in keys {
                        if !known.contains(&key) {
                            known.push(key);
                        }
                    }
                }
                _ => status = OrgStatus::Verified { keys },
            }
        }
        if let OrgStatus::Verified { keys } = &mut status {
            if let Some(added) = self.added_keys.get(org) {
                for key in added {
                    if !keys.contains(key) {
                        keys.push(*key);
                    }
                }
            }
            // Removed by a rotation or revoked by the attest role: out of the current set, so
            // it signs nothing from now on.
            keys.retain(|key| self.key_revoked_at(key).is_none());
        }
        status
    }

    /// When `key` was revoked, if it was: the earliest of an unrevoked `key.revoked`
    /// attestation's `revoked_at` and the `effective_at` of a rotation that removed it. The
    /// time is for people: a revoked key signs nothing the acceptance rule takes, whatever
    /// time its manifests claim.
    pub fn key_revoked_at(&self, key: &PublicKey) -> Option<i64> {
        let subject = Subject::Key(*key);
        self.about(&subject)
            .filter(|(_, a, revoked)| !revoked && a.body.kind == KIND_KEY_REVOKED)
            .filter_map(|(_, a, _)| match a.body.claims.get("revoked_at") {
                Some(Value::Integer(at)) => i64::try_from(*at).ok(),
                _ => None,
            })
            .chain(self.removed_keys.get(key).copied())
            .min()
    }
}

/// Whether an organisation is verified, and with which keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgStatus {
    /// No `org.verified` attestation.
    Unverified,
    /// Its only verification was revoked.
    Revoked,
    /// Its verification expired.
    Expired,
    /// Verified, with the keys bound to it.
    Verified {
        /// Keys the organisation may sign manifests with.
        keys: Vec<PublicKey>,
    },
}

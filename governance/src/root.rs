//! The trust root: which keys hold which governance role, TUF-style.
//!
//! A root document lists the keys and threshold of each role (`root`, `attest`, `policy`,
//! `witness`), a version and an expiry. A client starts from a root it got out of band and walks
//! forward one version at a time: version N+1 counts only when a threshold of version N's root
//! keys *and* a threshold of its own root keys signed it. Versions never skip and never go back.
//! An expired root is refused unless the caller opts in to [`ExpiryCheck::AllowExpiredForRecovery`],
//! which is logged every time it is used.

use std::collections::BTreeMap;

use cid::Cid;
use meridian_registry::cbor::{self, MapReader, Value};
use meridian_registry::keys::Keypair;

use crate::document::{DocumentError, KeySet, SignedDocument};

/// The `$type` of a root document.
pub const ROOT_TYPE: &str = "meridian.root.v1";

/// A governance role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleName {
    /// Signs new root versions.
    Root,
    /// Issues and revokes attestations (organisation verification among them).
    Attest,
    /// Signs policy bundles.
    Policy,
    /// Co-signs checkpoints.
    Witness,
}

impl RoleName {
    /// Every role, in document order.
    pub const ALL: [RoleName; 4] = [
        RoleName::Root,
        RoleName::Attest,
        RoleName::Policy,
        RoleName::Witness,
    ];

    /// The role's name in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleName::Root => "root",
            RoleName::Attest => "attest",
            RoleName::Policy => "policy",
            RoleName::Witness => "witness",
        }
    }
}

/// What a root says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootBody {
    /// Starts at 1, grows by exactly 1 per rotation.
    pub version: u64,
    /// Unix seconds it was made.
    pub created_at: i64,
    /// Unix seconds after which it is refused (freeze protection).
    pub expires_at: i64,
    /// Keys and threshold of every role.
    pub roles: BTreeMap<RoleName, KeySet>,
}

impl RootBody {
    fn to_value(&self) -> Value {
        let roles = self
            .roles
            .iter()
            .map(|(name, set)| (name.as_str().to_owned(), set.to_value()))
            .collect();
        cbor::map([
            ("version", Value::Integer(i128::from(self.version))),
            ("created_at", Value::Integer(i128::from(self.created_at))),
            ("expires_at", Value::Integer(i128::from(self.expires_at))),
            ("roles", Value::Map(roles)),
        ])
    }

    fn from_value(value: Value) -> Result<Self, DocumentError> {
        let mut reader = MapReader::new(value)?;
        let version = reader.u64("version")?;
        let created_at = reader.i64("created_at")?;
        let expires_at = reader.i64("expires_at")?;
        let roles_value = reader.take("roles")?;
        reader.finish()?;
        let mut roles_reader = MapReader::new(roles_value)?;
        let mut roles = BTreeMap::new();
        for name in RoleName::ALL {
            let set = KeySet::from_value(roles_reader.take(name.as_str())?, name.as_str())?;
            roles.insert(name, set);
        }
        roles_reader.finish()?;
        let body = Self {
            version,
            created_at,
            expires_at,
            roles,
        };
        body.validate()?;
        Ok(body)
    }

    /// Checks the body's own rules: version at least 1, a validity window, every role present
    /// with a sane threshold.
    pub fn validate(&self) -> Result<(), DocumentError> {
        if self.version == 0 {
            return Err(DocumentError::Invalid("root `version` starts at 1".into()));
        }
        if self.expires_at <= self.created_at {
            return Err(DocumentError::Invalid(
                "root `expires_at` is not after `created_at`".into(),
            ));
        }
        for name in RoleName::ALL {
            let set = self.roles.get(&name).ok_or_else(|| {
                DocumentError::Invalid(format!("root lacks role `{}`", name.as_str()))
            })?;
            set.validate(name.as_str())?;
        }
        Ok(())
    }

    /// The keys and threshold of `role`.
    pub fn role(&self, role: RoleName) -> &KeySet {
        // `validate` guarantees every role is present; a body built by hand is validated
        // before it becomes a document.
        static EMPTY: KeySet = KeySet {
            keys: Vec::new(),
            threshold: usize::MAX,
        };
        self.roles.get(&role).unwrap_or(&EMPTY)
    }
}

/// A root document: its body and its signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDocument {
    /// What it says.
    pub body: RootBody,
    /// The signed document.
    pub document: SignedDocument,
}

impl RootDocument {
    /// An unsigned root document with a validated body.
    pub fn new(body: RootBody) -> Result<Self, DocumentError> {
        body.validate()?;
        let document = SignedDocument::new(ROOT_TYPE, body.to_value());
        Ok(Self { body, document })
    }

    /// Adds a signature.
    pub fn sign(&mut self, key: &Keypair) {
        self.document.sign(key);
    }

    /// Decodes a root block; signatures are checked by [`TrustedRoot`].
    pub fn decode(block: &[u8]) -> Result<Self, DocumentError> {
        let document = SignedDocument::decode(block, ROOT_TYPE)?;
        let body = RootBody::from_value(document.body.clone())?;
        Ok(Self { body, document })
    }

    /// The block.
    pub fn to_block(&self) -> Vec<u8> {
        self.document.to_block()
    }

    /// The document id.
    pub fn id(&self) -> Cid {
        self.document.id()
    }
}

/// Whether an expired root may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiryCheck {
    /// Refuse an expired root (the default, always).
    #[default]
    Enforce,
    /// Accept an expired root to recover from a lapse; logged at warn level each time.
    AllowExpiredForRecovery,
}

/// Why a root was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RootError {
    /// The document itself is bad, or a threshold is not met.
    #[error("root version {version}: {error}")]
    Document {
        /// The version offered.
        version: u64,
        /// Why.
        error: DocumentError,
    },
    /// A version at or below the trusted one (rollback).
    #[error("root rollback: version {offered} offered, version {trusted} already trusted")]
    Rollback {
        /// The trusted version.
        trusted: u64,
        /// The version offered.
        offered: u64,
    },
    /// A version more than one above the trusted one.
    #[error("root version {offered} skips versions after the trusted {trusted}")]
    SkippedVersion {
        /// The trusted version.
        trusted: u64,
        /// The version offered.
        offered: u64,
    },
    /// The root has expired (freeze protection).
    #[error("root version {version} expired at {expires_at} (now {now})")]
    Expired {
        /// Its version.
        version: u64,
        /// Its expiry.
        expires_at: i64,
        /// The time checked.
        now: i64,
    },
}

/// The root a client trusts, advanced only by valid successors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedRoot {
    current: RootDocument,
}

/// Why a chain of root documents could not be trusted; `index` is the document's place in the
/// chain (0 is the first, the one trusted out of band).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RootChainError {
    /// The chain is empty.
    #[error("no trust root given")]
    Empty,
    /// A document is not a root document.
    #[error("root document #{}: {error}", index + 1)]
    Decode {
        /// Its place in the chain.
        index: usize,
        /// Why.
        error: DocumentError,
    },
    /// A document is not a valid successor, or the newest is not fresh.
    #[error("root document #{}: {error}", index + 1)]
    Rejected {
        /// Its place in the chain.
        index: usize,
        /// Why.
        error: RootError,
    },
}

impl RootChainError {
    /// The place in the chain of the document at fault, if one was.
    pub fn index(&self) -> Option<usize> {
        match self {
            RootChainError::Empty => None,
            RootChainError::Decode { index, .. } | RootChainError::Rejected { index, .. } => {
                Some(*index)
            }
        }
    }
}

impl TrustedRoot {
    /// Trusts a chain of root document blocks, oldest first: the first (trusted out of band)
    /// may have expired, since newer versions renew it; each next one must be signed by
    /// thresholds of the old and new root keys and be exactly one version up; the newest must
    /// pass [`TrustedRoot::check_fresh`] with `expiry`. The CLI, the bindings and tests load
    /// roots through this one function.
    pub fn from_chain(
        blocks: &[&[u8]],
        now: i64,
        expiry: ExpiryCheck,
    ) -> Result<Self, RootChainError> {
        let (first, rest) = blocks.split_first().ok_or(RootChainError::Empty)?;
        let decode = |index: usize, block: &[u8]| {
            RootDocument::decode(block).map_err(|error| RootChainError::Decode { index, error })
        };
        let mut trusted =
            TrustedRoot::bootstrap(decode(0, first)?, now, ExpiryCheck::AllowExpiredForRecovery)
                .map_err(|error| RootChainError::Rejected { index: 0, error })?;
        for (offset, block) in rest.iter().enumerate() {
            let index = offset + 1;
            trusted
                .update(decode(index, block)?)
                .map_err(|error| RootChainError::Rejected { index, error })?;
        }
        trusted
            .check_fresh(now, expiry)
            .map_err(|error| RootChainError::Rejected {
                index: blocks.len() - 1,
                error,
            })?;
        Ok(trusted)
    }

    /// Trusts a root obtained out of band (shipped with the node or handed over by an admin):
    /// it must be signed by a threshold of its own root keys and, unless overridden, not expired.
    pub fn bootstrap(root: RootDocument, now: i64, expiry: ExpiryCheck) -> Result<Self, RootError> {
        let version = root.body.version;
        root.document
            .verify_threshold(root.body.role(RoleName::Root), "root role of this version")
            .map_err(|error| RootError::Document { version, error })?;
        let trusted = Self { current: root };
        trusted.check_fresh(now, expiry)?;
        Ok(trusted)
    }

    /// Moves to `next`, which must be exactly the next version, signed by a threshold of the
    /// current root keys and a threshold of its own. Expiry is not checked here (an old link in a
    /// chain may have expired); call [`TrustedRoot::check_fresh`] after the last one, or use
    /// [`TrustedRoot::walk`].
    pub fn update(&mut self, next: RootDocument) -> Result<(), RootError> {
        let trusted = self.current.body.version;
        let offered = next.body.version;
        if offered <= trusted {
            return Err(RootError::Rollback { trusted, offered });
        }
        if offered != trusted + 1 {
            return Err(RootError::SkippedVersion { trusted, offered });
        }
        next.document
            .verify_threshold(
                self.current.body.role(RoleName::Root),
                &format!("root role of trusted version {trusted}"),
            )
            .map_err(|error| RootError::Document {
                version: offered,
                error,
            })?;
        next.document
            .verify_threshold(
                next.body.role(RoleName::Root),
                "root role of the new version",
            )
            .map_err(|error| RootError::Document {
                version: offered,
                error,
            })?;
        self.current = next;
        Ok(())
    }

    /// Applies a chain of successors in order, then checks the final root is not expired.
    /// On error the trusted root is left where the last valid link put it.
    pub fn walk(
        &mut self,
        chain: impl IntoIterator<Item = RootDocument>,
        now: i64,
        expiry: ExpiryCheck,
    ) -> Result<(), RootError> {
        for next in chain {
            self.update(next)?;
        }
        self.check_fresh(now, expiry)
    }

    /// Refuses an expired root unless recovery was explicitly allowed (and then logs it).
    pub fn check_fresh(&self, now: i64, expiry: ExpiryCheck) -> Result<(), RootError> {
        let body = &self.current.body;
        if body.expires_at > now {
            return Ok(());
        }
        match expiry {
            ExpiryCheck::Enforce => Err(RootError::Expired {
                version: body.version,
                expires_at: body.expires_at,
                now,
            }),
            ExpiryCheck::AllowExpiredForRecovery => {
                tracing::warn!(
                    version = body.version,
                    expires_at = body.expires_at,
                    now,
                    "using an EXPIRED trust root because recovery was explicitly allowed"
                );
                Ok(())
            }
        }
    }

    /// The trusted root document.
    pub fn current(&self) -> &RootDocument {
        &self.current
    }

    /// The keys and threshold of a role in the trusted root.
    pub fn role(&self, role: RoleName) -> &KeySet {
        self.current.body.role(role)
    }
}

//! The exception classes of the `meridian` package, one per way a check can fail, and the
//! mapping from the Rust error values to them. Messages are the ones the CLI prints.

use meridian_registry::car::CarError;
use meridian_registry::ids::BlockError;
use meridian_registry::snapshot::SnapshotError;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

pyo3::create_exception!(
    _native,
    MeridianError,
    PyException,
    "Base of every error the meridian package raises."
);
pyo3::create_exception!(
    _native,
    InputError,
    MeridianError,
    "Input that is not what it claims to be: a malformed key, card, manifest or argument."
);
pyo3::create_exception!(
    _native,
    VerificationError,
    MeridianError,
    "A document or snapshot was checked and rejected."
);
pyo3::create_exception!(
    _native,
    SignatureError,
    VerificationError,
    "A signature does not verify."
);
pyo3::create_exception!(
    _native,
    WrongPublisherError,
    VerificationError,
    "A snapshot comes from another publisher than the one expected."
);
pyo3::create_exception!(
    _native,
    ExpiredError,
    VerificationError,
    "A commit has expired, or is dated too far in the future."
);
pyo3::create_exception!(
    _native,
    RollbackError,
    VerificationError,
    "A snapshot's seq is not above the one it must succeed."
);
pyo3::create_exception!(
    _native,
    BrokenChainError,
    VerificationError,
    "A snapshot's prev does not link to the one it must succeed."
);
pyo3::create_exception!(
    _native,
    EquivocationError,
    VerificationError,
    "A publisher signed two different commits with one seq."
);
pyo3::create_exception!(
    _native,
    HashMismatchError,
    VerificationError,
    "A block does not hash to its CID (tampered bytes)."
);
pyo3::create_exception!(
    _native,
    MissingBlockError,
    VerificationError,
    "A block the snapshot needs is absent."
);
pyo3::create_exception!(
    _native,
    LimitError,
    VerificationError,
    "A size limit was exceeded (blocks, bytes, depth, agents)."
);
pyo3::create_exception!(
    _native,
    InvalidSnapshotError,
    VerificationError,
    "A snapshot is malformed: a bad CAR, commit, tree or manifest, or a non-canonical block."
);
pyo3::create_exception!(
    _native,
    GovernanceError,
    VerificationError,
    "A governance document (root, attestation, policy, checkpoint) was rejected."
);
pyo3::create_exception!(
    _native,
    RevokedError,
    GovernanceError,
    "An attestation was revoked."
);

/// An [`InputError`] with `message`.
pub fn input_error(message: impl Into<String>) -> PyErr {
    InputError::new_err(message.into())
}

/// A [`GovernanceError`] with `message`.
pub fn governance_error(message: impl Into<String>) -> PyErr {
    GovernanceError::new_err(message.into())
}

/// The exception for a snapshot that failed verification.
pub fn snapshot_error(error: SnapshotError) -> PyErr {
    let message = error.to_string();
    match error {
        SnapshotError::BadSignature { .. } => SignatureError::new_err(message),
        SnapshotError::WrongPublisher { .. } => WrongPublisherError::new_err(message),
        SnapshotError::Expired { .. } | SnapshotError::NotYetValid { .. } => {
            ExpiredError::new_err(message)
        }
        SnapshotError::Rollback { .. } => RollbackError::new_err(message),
        SnapshotError::BrokenChain { .. } => BrokenChainError::new_err(message),
        SnapshotError::Equivocation { .. } => EquivocationError::new_err(message),
        SnapshotError::MissingBlock { .. } => MissingBlockError::new_err(message),
        SnapshotError::HashMismatch(BlockError::HashMismatch { .. })
        | SnapshotError::Car(CarError::Block(BlockError::HashMismatch { .. })) => {
            HashMismatchError::new_err(message)
        }
        SnapshotError::Limit { .. } | SnapshotError::Car(CarError::Limit { .. }) => {
            LimitError::new_err(message)
        }
        SnapshotError::Car(CarError::Io(_)) => pyo3::exceptions::PyOSError::new_err(message),
        _ => InvalidSnapshotError::new_err(message),
    }
}

/// Adds every exception class to the module.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("MeridianError", py.get_type::<MeridianError>())?;
    module.add("InputError", py.get_type::<InputError>())?;
    module.add("VerificationError", py.get_type::<VerificationError>())?;
    module.add("SignatureError", py.get_type::<SignatureError>())?;
    module.add("WrongPublisherError", py.get_type::<WrongPublisherError>())?;
    module.add("ExpiredError", py.get_type::<ExpiredError>())?;
    module.add("RollbackError", py.get_type::<RollbackError>())?;
    module.add("BrokenChainError", py.get_type::<BrokenChainError>())?;
    module.add("EquivocationError", py.get_type::<EquivocationError>())?;
    module.add("HashMismatchError", py.get_type::<HashMismatchError>())?;
    module.add("MissingBlockError", py.get_type::<MissingBlockError>())?;
    module.add("LimitError", py.get_type::<LimitError>())?;
    module.add(
        "InvalidSnapshotError",
        py.get_type::<InvalidSnapshotError>(),
    )?;
    module.add("GovernanceError", py.get_type::<GovernanceError>())?;
    module.add("RevokedError", py.get_type::<RevokedError>())?;
    Ok(())
}

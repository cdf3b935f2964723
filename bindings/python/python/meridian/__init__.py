"""Meridian from Python: verify snapshots and governance documents, sign agent manifests, and
talk to a node.

Everything except the HTTP client runs offline, in the same Rust code as the ``meridian``
binary (the ``meridian._native`` extension)::

    import meridian

    snapshot = meridian.Snapshot.open("s2.car", after=meridian.Snapshot.open("s1.car"), now=now)
    for agent in snapshot.agents():
        print(agent["agent_id"], agent["signer"])

    key = meridian.Keypair.generate()
    block = meridian.sign_manifest(card, org="acme", region="eu-west", key=key, updated_at=now)
    meridian.NodeClient("http://127.0.0.1:7700", token=token).publish(block)

Errors are exceptions of :class:`MeridianError`; checks that reject something raise a
:class:`VerificationError` subclass named for the reason (:class:`RollbackError`,
:class:`ExpiredError`, :class:`SignatureError`, :class:`HashMismatchError`, ...).
"""

from ._native import (
    CAR_BYTES_MAX,
    BrokenChainError,
    EquivocationError,
    ExpiredError,
    GovernanceError,
    HashMismatchError,
    InputError,
    InvalidSnapshotError,
    Keypair,
    LimitError,
    MeridianError,
    MissingBlockError,
    RevokedError,
    RollbackError,
    SignatureError,
    Snapshot,
    VerificationError,
    WrongPublisherError,
    sign_deprecation,
    sign_manifest,
    sign_removal,
    verify_attestation,
    verify_checkpoint,
    verify_manifest,
    verify_policy,
    verify_root_chain,
)
from .ard import ArdClient, ArdError
from .client import AsyncNodeClient, Event, NodeClient, NodeError

__all__ = [
    "CAR_BYTES_MAX",
    "ArdClient",
    "ArdError",
    "AsyncNodeClient",
    "BrokenChainError",
    "EquivocationError",
    "Event",
    "ExpiredError",
    "GovernanceError",
    "HashMismatchError",
    "InputError",
    "InvalidSnapshotError",
    "Keypair",
    "LimitError",
    "MeridianError",
    "MissingBlockError",
    "NodeClient",
    "NodeError",
    "RevokedError",
    "RollbackError",
    "SignatureError",
    "Snapshot",
    "VerificationError",
    "WrongPublisherError",
    "sign_deprecation",
    "sign_manifest",
    "sign_removal",
    "verify_attestation",
    "verify_checkpoint",
    "verify_manifest",
    "verify_policy",
    "verify_root_chain",
]

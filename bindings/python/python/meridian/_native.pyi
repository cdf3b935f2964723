"""Type stubs of the ``meridian._native`` extension (Rust, via PyO3)."""

import os
from typing import Any, Mapping, Sequence, TypedDict

Source = bytes | str | os.PathLike[str]
"""A document: its bytes, or the path of a file holding it."""

CAR_BYTES_MAX: int
"""The largest snapshot (CAR) accepted, in bytes."""

class MeridianError(Exception):
    """Base of every error the meridian package raises."""

class InputError(MeridianError):
    """Input that is not what it claims to be: a malformed key, card, manifest or argument."""

class VerificationError(MeridianError):
    """A document or snapshot was checked and rejected."""

class SignatureError(VerificationError):
    """A signature does not verify."""

class WrongPublisherError(VerificationError):
    """A snapshot comes from another publisher than the one expected."""

class ExpiredError(VerificationError):
    """A commit has expired, or is dated too far in the future."""

class RollbackError(VerificationError):
    """A snapshot's seq is not above the one it must succeed."""

class BrokenChainError(VerificationError):
    """A snapshot's prev does not link to the one it must succeed."""

class EquivocationError(VerificationError):
    """A publisher signed two different commits with one seq."""

class HashMismatchError(VerificationError):
    """A block does not hash to its CID (tampered bytes)."""

class MissingBlockError(VerificationError):
    """A block the snapshot needs is absent."""

class LimitError(VerificationError):
    """A size limit was exceeded (blocks, bytes, depth, agents)."""

class InvalidSnapshotError(VerificationError):
    """A snapshot is malformed: a bad CAR, commit, tree or manifest, or a non-canonical block."""

class GovernanceError(VerificationError):
    """A governance document (root, attestation, policy, checkpoint) was rejected."""

class RevokedError(GovernanceError):
    """An attestation was revoked."""

class Keypair:
    """An ed25519 key in the key-file format of ``meridian keys generate``."""

    @staticmethod
    def generate() -> Keypair:
        """A new random key."""
    @staticmethod
    def load(path: str | os.PathLike[str]) -> Keypair:
        """Loads a key file."""
    @staticmethod
    def from_key_file(text: str) -> Keypair:
        """Parses the text of a key file."""
    @staticmethod
    def from_secret(secret: bytes) -> Keypair:
        """A key from its 32 secret bytes."""
    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the key file (mode 0600); refuses to overwrite."""
    def to_key_file(self) -> str:
        """The key file's text."""
    @property
    def did(self) -> str:
        """The public key as a did:key."""

class Agent(TypedDict):
    """One agent of a snapshot, or a verified manifest."""

    agent_id: str
    org: str
    region: str
    updated_at: int
    signer: str
    cid: str
    card: str
    removed: bool
    """True for a signed removal (tombstone); its ``card`` is empty."""
    status: str
    """``active``, ``deprecated`` or ``removed``."""
    superseded_by: str | None
    """A deprecated agent's successor (``org/name``), when its organisation named one."""

class Inspection(TypedDict):
    """What ``Snapshot.inspect`` says."""

    root: str
    data: str
    publisher: str
    seq: int
    prev: str | None
    created_at: int
    expires_at: int
    agents: int
    blocks: int

class Diff(TypedDict):
    """Agent keys that differ between two snapshots."""

    added: list[str]
    removed: list[str]
    changed: list[str]

class Acceptance(TypedDict):
    """The acceptance rule's verdict on every agent of a snapshot."""

    root_version: int
    policy_version: int | None
    accepted: list[str]
    rejected: dict[str, list[str]]
    skipped: list[str]

class Snapshot:
    """A snapshot (a signed commit and every block it reaches) that passed verification."""

    @staticmethod
    def open(
        source: Source,
        *,
        now: int | None = None,
        publisher: str | None = None,
        after: Snapshot | None = None,
    ) -> Snapshot:
        """Reads and verifies a CAR snapshot; raises a VerificationError subclass if it fails."""
    @property
    def root(self) -> str:
        """The commit's CID."""
    @property
    def data(self) -> str:
        """The registry tree's root CID."""
    @property
    def publisher(self) -> str:
        """The publishing node's did:key."""
    @property
    def seq(self) -> int:
        """The commit's sequence number."""
    @property
    def prev(self) -> str | None:
        """The previous commit's CID."""
    @property
    def created_at(self) -> int:
        """Unix seconds the commit was made."""
    @property
    def expires_at(self) -> int:
        """Unix seconds after which it is refused."""
    def __len__(self) -> int:
        """Agents in the registry."""
    def inspect(self) -> Inspection:
        """The fields ``meridian snapshot inspect --json`` gives."""
    def agents(self) -> list[Agent]:
        """Every agent, in key order."""
    def get(self, agent_id: str) -> Agent | None:
        """One agent by its key (org/name)."""
    def diff(self, older: Snapshot) -> Diff:
        """What changed since ``older``."""
    def accept(
        self,
        roots: Sequence[Source],
        attestations: Sequence[Source] = ...,
        policy: Source | None = None,
        *,
        now: int,
    ) -> Acceptance:
        """Runs the acceptance rule over every agent."""

def sign_manifest(
    card: str | Mapping[str, Any],
    org: str,
    region: str,
    key: Keypair,
    updated_at: int,
    *,
    deprecated: bool = False,
    superseded_by: str | None = None,
) -> bytes:
    """Builds and signs a manifest from an A2A card (deprecated, naming its successor, when
    asked); returns the DAG-CBOR block."""

def sign_deprecation(
    block: bytes, key: Keypair, updated_at: int, superseded_by: str | None = None
) -> bytes:
    """Checks an agent's current manifest block and signs it again, deprecated, as of
    ``updated_at`` (after the current one); returns the block for ``NodeClient.publish``."""

def sign_removal(agent_id: str, region: str, key: Keypair, updated_at: int) -> bytes:
    """Signs the removal of ``org/name`` as of ``updated_at``; returns the DAG-CBOR block for
    ``NodeClient.delete(agent_id, removal=...)``."""

def verify_manifest(block: bytes) -> Agent:
    """Checks a manifest block and its signature; returns what it says."""

def verify_root_chain(roots: Sequence[Source], *, now: int) -> dict[str, Any]:
    """Verifies a chain of trust root documents, oldest first."""

def verify_attestation(
    attestation: Source,
    roots: Sequence[Source],
    revocations: Sequence[Source] = ...,
    *,
    now: int,
) -> dict[str, Any]:
    """Verifies an attestation and that none of ``revocations`` revokes it."""

def verify_policy(bundle: Source, roots: Sequence[Source], *, now: int) -> dict[str, Any]:
    """Verifies a policy bundle."""

def verify_checkpoint(
    note: str,
    log_key: str,
    witnesses: Mapping[str, str] = ...,
    witness_threshold: int = 0,
) -> dict[str, Any]:
    """Verifies a checkpoint signed note and counts witness cosignatures."""

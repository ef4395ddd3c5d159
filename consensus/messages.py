"""PBFT wire messages: the only place consensus messages are built, signed and parsed.

Owns the six message kinds of Castro & Liskov's PBFT (OSDI'99 §4, TOCS'02 §4) as
frozen dataclasses, their *signing bodies* and their canonical wire encoding.

Rules:
- Every message is signed by its ``sender`` (a 32-byte validator key) over
  ``codec.tagged(DOMAIN, body(chain_id))``; each kind has its own ``Domain`` tag, so
  a signature over one kind can never be replayed as another, and the chain id is in
  every body, so a signature cannot be replayed on another chain.
- The COMMIT body is exactly ``ledger.types.commit_vote_body(chain_id, height, view,
  block_id)``: a quorum of Commit signatures *is* the ledger's ``CommitCertificate``.
- The PREPARE body also binds ``parent_id``: a prepared certificate then proves the
  chain link, which the new-view selection in ``consensus.certs`` relies on.
- The wire form is a msgpack array ``[kind, *fields, sender, signature]``; the chain
  id is not sent (both ends know it). ``decode_message`` is strict: it raises only
  ``DecodeError``, rejects input over ``MAX_MESSAGE_BYTES`` and anything that does not
  re-encode to identical bytes (see ``ledger.codec``).
- Signatures are not checked here (that needs the injected ``Crypto``); see
  ``consensus.certs.verify_signed``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from typing import Any, ClassVar, Protocol

from ledger.codec import (
    Domain,
    as_bytes,
    as_hash,
    as_int,
    as_list,
    decode,
    encode,
    fields,
    require_sorted_unique,
    sha256,
)
from ledger.errors import DecodeError
from ledger.types import MAX_BLOCK_BYTES, MAX_VALIDATORS, commit_vote_body

KEY_SIZE = 32
SIGNATURE_SIZE = 64
#: A pre-prepare carries one block; everything else is far smaller.
MAX_PAYLOAD_BYTES = MAX_BLOCK_BYTES
#: Hard ceiling for one decoded message (a block plus its envelope).
MAX_MESSAGE_BYTES = MAX_PAYLOAD_BYTES + 64 * 1024
#: Most proofs one view-change may carry (the log size L is far below this).
MAX_PROOFS = 1024

SignatureList = tuple[tuple[int, bytes], ...]


class Kind(IntEnum):
    """First field of every wire message."""

    PRE_PREPARE = 1
    PREPARE = 2
    COMMIT = 3
    VIEW_CHANGE = 4
    NEW_VIEW = 5
    CHECKPOINT = 6


class ProofKind(IntEnum):
    """What a view-change proof shows about one height."""

    PREPARED = 1  # a quorum of PREPAREs in ``view`` (PBFT's prepared certificate)
    COMMITTED = 2  # a quorum of COMMITs in ``view`` (the ledger's commit certificate)


class Signer(Protocol):
    """What ``sign`` needs: this replica's key and a signing function."""

    public_key: bytes

    def sign(self, domain: Domain, body: bytes) -> bytes: ...


def prepare_body(chain_id: str, height: int, view: int, block_id: bytes, parent_id: bytes) -> bytes:
    """Signed by a PREPARE (Domain.PREPARE) and by each signature of a PREPARED proof."""
    return encode([chain_id, height, view, block_id, parent_id])


def checkpoint_body(chain_id: str, height: int, block_id: bytes, state_root: bytes) -> bytes:
    """Signed by a CHECKPOINT (Domain.CHECKPOINT) and by each signature of its proof."""
    return encode([chain_id, height, block_id, state_root])


def _signatures(value: Any, name: str) -> SignatureList:
    out = []
    for item in as_list(value, name, MAX_VALIDATORS):
        pair = fields(item, 2, name)
        out.append(
            (
                as_int(pair[0], f"{name}.index", 0, MAX_VALIDATORS - 1),
                as_bytes(pair[1], f"{name}.signature", SIGNATURE_SIZE),
            )
        )
    require_sorted_unique([i for i, _ in out], name)
    return tuple(out)


def _sig_wire(sigs: SignatureList) -> list[Any]:
    return [[i, s] for i, s in sigs]


# ---------------------------------------------------------------------------
# Proofs carried inside VIEW-CHANGE messages
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Proof:
    """Evidence about one height: a prepared or a committed certificate.

    ``signatures`` are ``(validator_index, signature)`` pairs over ``vote_body``,
    strictly increasing by index into the validator set in force at ``height``. A
    COMMITTED proof has an empty ``parent_id`` (commit votes do not sign the parent;
    committed blocks are chained by agreement, see docs/CONSENSUS.md).
    """

    kind: ProofKind
    height: int
    view: int
    block_id: bytes
    parent_id: bytes
    signatures: SignatureList

    @property
    def domain(self) -> Domain:
        return Domain.PREPARE if self.kind is ProofKind.PREPARED else Domain.COMMIT

    def vote_body(self, chain_id: str) -> bytes:
        if self.kind is ProofKind.PREPARED:
            return prepare_body(chain_id, self.height, self.view, self.block_id, self.parent_id)
        return commit_vote_body(chain_id, self.height, self.view, self.block_id)

    def to_wire(self) -> list[Any]:
        return [
            int(self.kind),
            self.height,
            self.view,
            self.block_id,
            self.parent_id,
            _sig_wire(self.signatures),
        ]

    @classmethod
    def from_wire(cls, obj: Any) -> Proof:
        f = fields(obj, 6, "proof")
        code = as_int(f[0], "proof.kind", 1, 2)
        kind = ProofKind(code)
        parent = as_bytes(f[4], "proof.parent_id", max_size=32)
        if len(parent) != (32 if kind is ProofKind.PREPARED else 0):
            raise DecodeError("proof.parent_id: 32 bytes for PREPARED, empty for COMMITTED")
        return cls(
            kind,
            as_int(f[1], "proof.height", 1),
            as_int(f[2], "proof.view"),
            as_hash(f[3], "proof.block_id"),
            parent,
            _signatures(f[5], "proof.signatures"),
        )


@dataclass(frozen=True)
class CheckpointProof:
    """A stable checkpoint (PBFT §4.3): a quorum of CHECKPOINT signatures.

    Height 0 is the genesis anchor and carries no signatures; it is trusted only if
    ``block_id`` is the configured genesis block id.
    """

    height: int
    block_id: bytes
    state_root: bytes
    signatures: SignatureList

    def body(self, chain_id: str) -> bytes:
        return checkpoint_body(chain_id, self.height, self.block_id, self.state_root)

    def to_wire(self) -> list[Any]:
        return [self.height, self.block_id, self.state_root, _sig_wire(self.signatures)]

    @classmethod
    def from_wire(cls, obj: Any) -> CheckpointProof:
        f = fields(obj, 4, "checkpoint_proof")
        return cls(
            as_int(f[0], "checkpoint_proof.height"),
            as_hash(f[1], "checkpoint_proof.id"),
            as_bytes(f[2], "checkpoint_proof.state_root", max_size=64),
            _signatures(f[3], "checkpoint_proof.signatures"),
        )


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


class _Signed:
    """Shared behaviour: wire encoding, signing and a compact repr."""

    KIND: ClassVar[Kind]
    DOMAIN: ClassVar[Domain]
    sender: bytes
    signature: bytes

    def body(self, chain_id: str) -> bytes:
        raise NotImplementedError

    def fields_wire(self) -> list[Any]:
        raise NotImplementedError

    @cached_property
    def encoded(self) -> bytes:
        return encode([int(self.KIND), *self.fields_wire(), self.sender, self.signature])

    def encode(self) -> bytes:
        return self.encoded

    def signed_by(self, signer: Signer, chain_id: str) -> Any:
        """A copy with ``sender`` = the signer's key and a fresh signature."""
        unsigned = dataclasses.replace(self, sender=signer.public_key, signature=b"")  # type: ignore[type-var]
        signature = signer.sign(self.DOMAIN, unsigned.body(chain_id))
        return dataclasses.replace(unsigned, signature=signature)  # type: ignore[type-var]


@dataclass(frozen=True, eq=True)
class PrePrepare(_Signed):
    """The primary's proposal of ``payload`` (block ``block_id``) at (height, view).

    The payload is outside the signature; it is bound by ``block_id``, which the
    receiver recomputes with ``App.validate_proposal``.
    """

    height: int
    view: int
    block_id: bytes
    parent_id: bytes
    payload: bytes
    sender: bytes = b""
    signature: bytes = b""

    KIND: ClassVar[Kind] = Kind.PRE_PREPARE
    DOMAIN: ClassVar[Domain] = Domain.PRE_PREPARE

    def body(self, chain_id: str) -> bytes:
        return encode([chain_id, self.height, self.view, self.block_id, self.parent_id])

    def fields_wire(self) -> list[Any]:
        return [self.height, self.view, self.block_id, self.parent_id, self.payload]

    def __repr__(self) -> str:
        return (
            f"PrePrepare(h={self.height}, v={self.view}, id={self.block_id.hex()[:8]}, "
            f"from={self.sender.hex()[:6]})"
        )


@dataclass(frozen=True, eq=True)
class Prepare(_Signed):
    """A backup's agreement to order ``block_id`` (child of ``parent_id``) at (height, view)."""

    height: int
    view: int
    block_id: bytes
    parent_id: bytes
    sender: bytes = b""
    signature: bytes = b""

    KIND: ClassVar[Kind] = Kind.PREPARE
    DOMAIN: ClassVar[Domain] = Domain.PREPARE

    def body(self, chain_id: str) -> bytes:
        return prepare_body(chain_id, self.height, self.view, self.block_id, self.parent_id)

    def fields_wire(self) -> list[Any]:
        return [self.height, self.view, self.block_id, self.parent_id]

    def __repr__(self) -> str:
        return (
            f"Prepare(h={self.height}, v={self.view}, id={self.block_id.hex()[:8]}, "
            f"from={self.sender.hex()[:6]})"
        )


@dataclass(frozen=True, eq=True)
class Commit(_Signed):
    """A commit vote; its signature is one entry of the ledger's CommitCertificate."""

    height: int
    view: int
    block_id: bytes
    sender: bytes = b""
    signature: bytes = b""

    KIND: ClassVar[Kind] = Kind.COMMIT
    DOMAIN: ClassVar[Domain] = Domain.COMMIT

    def body(self, chain_id: str) -> bytes:
        return commit_vote_body(chain_id, self.height, self.view, self.block_id)

    def fields_wire(self) -> list[Any]:
        return [self.height, self.view, self.block_id]

    def __repr__(self) -> str:
        return (
            f"Commit(h={self.height}, v={self.view}, id={self.block_id.hex()[:8]}, "
            f"from={self.sender.hex()[:6]})"
        )


@dataclass(frozen=True, eq=True)
class Checkpoint(_Signed):
    """A replica's statement that applying blocks up to ``height`` gave ``state_root``."""

    height: int
    block_id: bytes
    state_root: bytes
    sender: bytes = b""
    signature: bytes = b""

    KIND: ClassVar[Kind] = Kind.CHECKPOINT
    DOMAIN: ClassVar[Domain] = Domain.CHECKPOINT

    def body(self, chain_id: str) -> bytes:
        return checkpoint_body(chain_id, self.height, self.block_id, self.state_root)

    def fields_wire(self) -> list[Any]:
        return [self.height, self.block_id, self.state_root]


@dataclass(frozen=True, eq=True)
class ViewChange(_Signed):
    """PBFT's VIEW-CHANGE: move to ``view`` of the epoch starting at height ``epoch``.

    ``stable`` is the sender's latest stable checkpoint (height >= epoch - 1);
    ``proofs`` hold, for every height above it in the log window, the sender's best
    proof (COMMITTED, else its highest-view PREPARED), strictly increasing by height.
    The whole content is signed.
    """

    epoch: int
    view: int
    stable: CheckpointProof
    proofs: tuple[Proof, ...]
    sender: bytes = b""
    signature: bytes = b""

    KIND: ClassVar[Kind] = Kind.VIEW_CHANGE
    DOMAIN: ClassVar[Domain] = Domain.VIEW_CHANGE

    def body(self, chain_id: str) -> bytes:
        return encode(
            [
                chain_id,
                self.epoch,
                self.view,
                self.stable.to_wire(),
                [p.to_wire() for p in self.proofs],
            ]
        )

    def fields_wire(self) -> list[Any]:
        return [self.epoch, self.view, self.stable.to_wire(), [p.to_wire() for p in self.proofs]]

    @cached_property
    def digest(self) -> bytes:
        return sha256(self.encoded)

    def __repr__(self) -> str:
        return (
            f"ViewChange(e={self.epoch}, v={self.view}, stable={self.stable.height}, "
            f"proofs={[(p.height, p.view, p.kind.name[0]) for p in self.proofs]}, "
            f"from={self.sender.hex()[:6]})"
        )


@dataclass(frozen=True, eq=True)
class NewView(_Signed):
    """PBFT's NEW-VIEW: the new primary's quorum of VIEW-CHANGEs for ``view``.

    The re-proposals (PBFT's O set) are not sent: every replica recomputes them from
    ``view_changes`` with ``consensus.certs.select_reproposals``, so a primary cannot
    send an O that disagrees with its own evidence. The signature covers the digests
    of the included view-changes.
    """

    epoch: int
    view: int
    view_changes: tuple[ViewChange, ...]
    sender: bytes = b""
    signature: bytes = b""

    KIND: ClassVar[Kind] = Kind.NEW_VIEW
    DOMAIN: ClassVar[Domain] = Domain.NEW_VIEW

    def body(self, chain_id: str) -> bytes:
        return encode([chain_id, self.epoch, self.view, [vc.digest for vc in self.view_changes]])

    def fields_wire(self) -> list[Any]:
        return [
            self.epoch,
            self.view,
            [vc.fields_wire() + [vc.sender, vc.signature] for vc in self.view_changes],
        ]

    def __repr__(self) -> str:
        return (
            f"NewView(e={self.epoch}, v={self.view}, n_vc={len(self.view_changes)}, "
            f"from={self.sender.hex()[:6]})"
        )


Message = PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def _tail(f: list[Any], what: str) -> tuple[bytes, bytes]:
    return (
        as_bytes(f[-2], f"{what}.sender", KEY_SIZE),
        as_bytes(f[-1], f"{what}.signature", SIGNATURE_SIZE),
    )


def _view_change(f: list[Any]) -> ViewChange:
    """``f`` = [epoch, view, stable, proofs, sender, signature]."""
    sender, sig = _tail(f, "view_change")
    proofs = tuple(Proof.from_wire(p) for p in as_list(f[3], "view_change.proofs", MAX_PROOFS))
    require_sorted_unique([p.height for p in proofs], "view_change.proofs")
    return ViewChange(
        as_int(f[0], "view_change.epoch", 1),
        as_int(f[1], "view_change.view"),
        CheckpointProof.from_wire(f[2]),
        proofs,
        sender,
        sig,
    )


def _from_wire(obj: Any) -> Message:
    if not isinstance(obj, list) or not obj:
        raise DecodeError("message: expected a non-empty array")
    code = as_int(obj[0], "message.kind", 1, 6)
    kind = Kind(code)
    if kind is Kind.PRE_PREPARE:
        f = fields(obj, 8, "pre_prepare")[1:]
        s, sig = _tail(f, "pre_prepare")
        return PrePrepare(
            as_int(f[0], "pre_prepare.height", 1),
            as_int(f[1], "pre_prepare.view"),
            as_hash(f[2], "pre_prepare.block_id"),
            as_hash(f[3], "pre_prepare.parent_id"),
            as_bytes(f[4], "pre_prepare.payload", max_size=MAX_PAYLOAD_BYTES),
            s,
            sig,
        )
    if kind is Kind.PREPARE:
        f = fields(obj, 7, "prepare")[1:]
        s, sig = _tail(f, "prepare")
        return Prepare(
            as_int(f[0], "prepare.height", 1),
            as_int(f[1], "prepare.view"),
            as_hash(f[2], "prepare.block_id"),
            as_hash(f[3], "prepare.parent_id"),
            s,
            sig,
        )
    if kind is Kind.COMMIT:
        f = fields(obj, 6, "commit")[1:]
        s, sig = _tail(f, "commit")
        return Commit(
            as_int(f[0], "commit.height", 1),
            as_int(f[1], "commit.view"),
            as_hash(f[2], "commit.block_id"),
            s,
            sig,
        )
    if kind is Kind.CHECKPOINT:
        f = fields(obj, 6, "checkpoint")[1:]
        s, sig = _tail(f, "checkpoint")
        return Checkpoint(
            as_int(f[0], "checkpoint.height", 1),
            as_hash(f[1], "checkpoint.id"),
            as_bytes(f[2], "checkpoint.state_root", max_size=64),
            s,
            sig,
        )
    if kind is Kind.VIEW_CHANGE:
        return _view_change(fields(obj, 7, "view_change")[1:])
    f = fields(obj, 6, "new_view")[1:]
    s, sig = _tail(f, "new_view")
    vcs = tuple(
        _view_change(fields(v, 6, "new_view.view_change"))
        for v in as_list(f[2], "new_view.view_changes", MAX_VALIDATORS)
    )
    return NewView(as_int(f[0], "new_view.epoch", 1), as_int(f[1], "new_view.view"), vcs, s, sig)


def encode_message(message: Message) -> bytes:
    """Canonical wire bytes of ``message``."""
    return message.encoded


def decode_message(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse wire bytes strictly; raise ``DecodeError`` on anything but a canonical message."""
    message = _from_wire(decode(data, max_bytes))
    message.__dict__["encoded"] = bytes(data)  # identical by the codec's round-trip check
    return message


def slot_key(message: Message) -> tuple[Any, ...]:
    """The (kind, position) at which one honest sender signs at most one content.

    Two signed messages with the same ``slot_key`` and sender but different
    ``content_key`` are equivocation (see ``consensus.evidence``).
    """
    if isinstance(message, (PrePrepare, Prepare, Commit)):
        return (message.KIND, message.height, message.view)
    if isinstance(message, Checkpoint):
        return (message.KIND, message.height)
    return (message.KIND, message.epoch, message.view)


def content_key(message: Message) -> bytes:
    """What must not differ between two messages with the same ``slot_key``."""
    if isinstance(message, PrePrepare):
        return message.block_id + message.parent_id
    if isinstance(message, Prepare):
        return message.block_id + message.parent_id
    if isinstance(message, Commit):
        return message.block_id
    if isinstance(message, Checkpoint):
        return message.block_id + message.state_root
    if isinstance(message, ViewChange):
        return message.digest
    return sha256(message.body(""))

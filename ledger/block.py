"""Blocks and commit certificates: what validators certify, and the proof that they did.

Part of ``ledger.types`` (the public entry point, which re-exports this module's names).
This module owns ``BlockHeader`` (the block id), ``Block`` (with the fast ``split_block``
decoder), ``CommitCertificate`` (its sign bytes, ``commit_vote_body``, and its stateless
check against a validator set) and ``CertifiedBlock``.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from ledger import crypto
from ledger.codec import (
    Domain,
    array_header,
    as_bytes,
    as_hash,
    as_int,
    as_list,
    decode,
    encode,
    fields,
    require_sorted_unique,
    tagged,
    tagged_hash,
)
from ledger.consortium import ValidatorSet
from ledger.errors import DecodeError, ValidationError
from ledger.protocol import MAX_VERSION
from ledger.transaction import Transaction
from ledger.tx_tree import upper_nodes
from ledger.types_base import (
    MAX_BLOCK_BYTES,
    MAX_BLOCK_TXS,
    MAX_VALIDATORS,
    _ident,
    cached_property,
    tx_id_of,
)

# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockHeader:
    """What validators certify. Block id = SHA-256("dvp/block/v1" || 0x00 || encode(header)).

    - ``version``: the protocol version in force at ``height`` (``ChainRecord.version_at``;
      ``ledger.protocol``). A block of any other version is refused.
    - ``state_root``: root of the state tree *after* applying this block.
    - ``history_root``: RFC 6962 root over the ids of blocks 0..height-1 (size = height).
    - ``validator_set_hash``: the set that certifies this block;
      ``next_validator_set_hash``: the set that certifies the next one.
    """

    version: int
    chain_id: str
    height: int
    prev_block_id: bytes
    time_ms: int
    proposer: bytes
    tx_count: int
    tx_root: bytes
    state_root: bytes
    validator_set_hash: bytes
    next_validator_set_hash: bytes
    history_root: bytes

    def to_wire(self) -> list[Any]:
        return [
            self.version,
            self.chain_id,
            self.height,
            self.prev_block_id,
            self.time_ms,
            self.proposer,
            self.tx_count,
            self.tx_root,
            self.state_root,
            self.validator_set_hash,
            self.next_validator_set_hash,
            self.history_root,
        ]

    @cached_property
    def encoded(self) -> bytes:
        return encode(self.to_wire())

    def encode(self) -> bytes:
        return self.encoded

    @cached_property
    def block_id(self) -> bytes:
        return tagged_hash(Domain.BLOCK_ID, self.encoded)

    @classmethod
    def from_wire(cls, obj: Any) -> BlockHeader:
        f = fields(obj, 12, "header")
        proposer = as_bytes(f[5], "header.proposer", max_size=32)
        if len(proposer) not in (0, 32):  # empty only for the genesis block
            raise DecodeError("header.proposer: must be a 32-byte key (empty at genesis)")
        return cls(
            as_int(f[0], "header.version", 1, MAX_VERSION),
            _ident(f[1], "header.chain_id"),
            as_int(f[2], "header.height"),
            as_hash(f[3], "header.prev_block_id"),
            as_int(f[4], "header.time_ms"),
            proposer,
            as_int(f[6], "header.tx_count", 0, MAX_BLOCK_TXS),
            as_hash(f[7], "header.tx_root"),
            as_hash(f[8], "header.state_root"),
            as_hash(f[9], "header.validator_set_hash"),
            as_hash(f[10], "header.next_validator_set_hash"),
            as_hash(f[11], "header.history_root"),
        )

    @classmethod
    def decode(cls, data: bytes) -> BlockHeader:
        return cls.from_wire(decode(data, 4096))


@dataclass(frozen=True)
class Block:
    """A header and its transactions (in order)."""

    header: BlockHeader
    txs: tuple[Transaction, ...]

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def block_id(self) -> bytes:
        return self.header.block_id

    def to_wire(self) -> list[Any]:
        return [self.header.to_wire(), [tx.to_wire() for tx in self.txs]]

    @cached_property
    def encoded(self) -> bytes:
        # Splice the cached encodings (0x92 = array of 2) instead of re-encoding every
        # transaction: identical bytes to encode(self.to_wire()), a test checks it.
        parts = [b"\x92", self.header.encoded, array_header(len(self.txs))]
        parts.extend(tx.encoded for tx in self.txs)
        return b"".join(parts)

    def encode(self) -> bytes:
        return self.encoded

    @cached_property
    def tx_ids(self) -> list[bytes]:
        return [tx.tx_id for tx in self.txs]

    @cached_property
    def tx_tree_nodes(self) -> bytes:
        """The tx-tree nodes the store keeps above the chunks (ledger/tx_tree.py);
        ``ledger.state.execute`` sets it from the pass that computed the tx root."""
        return upper_nodes(self.tx_ids)

    @classmethod
    def from_wire(cls, obj: Any) -> Block:
        f = fields(obj, 2, "block")
        header = BlockHeader.from_wire(f[0])
        raw_txs = as_list(f[1], "block.txs", MAX_BLOCK_TXS)
        txs = tuple(Transaction.from_wire(t, encode(t)) for t in raw_txs)
        if header.tx_count != len(txs):
            raise DecodeError("block: header.tx_count does not match the transactions")
        return cls(header, txs)

    @classmethod
    def decode(
        cls, data: bytes, known: Callable[[bytes], Transaction | None] | None = None
    ) -> Block:
        """Strictly decode a block; ``known(tx_id)`` may supply already decoded transactions.

        A replica has nearly every transaction of a proposal in its mempool already
        (gossip); ``known`` lets it reuse those objects instead of decoding each one a
        second time. The id is the hash of the exact bytes, so a transaction found by
        id has exactly these bytes; the others are decoded strictly.
        """
        if known is None:
            return cls.from_wire(decode(data, MAX_BLOCK_BYTES, typed=True))
        return _decode_block_reusing(data, known)


def split_block(data: bytes, max_txs: int = MAX_BLOCK_TXS) -> tuple[int, array]:  # type: ignore[type-arg]
    """Where a block encoding's header ends and each transaction starts, decoding nothing.

    The encoding is fixarray(2) || header || array(n) || tx_1 .. tx_n; msgpack's own
    parser skips each part (in C). Returns ``header_end`` (the header is
    ``data[1:header_end]``) and ``n + 1`` offsets (transaction i is
    ``data[offsets[i]:offsets[i + 1]]``). Checks what no strict decode of the parts
    checks: the outer and transaction array headers are canonical, ``n <= max_txs``,
    nothing trails. ``DecodeError`` otherwise.
    """
    if data[:1] != b"\x92":
        raise DecodeError("block: expected an array of 2")
    unpacker = msgpack.Unpacker(raw=True, max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    try:
        unpacker.read_array_header()
        unpacker.skip()
        header_end = unpacker.tell()
        n = unpacker.read_array_header()
        start = unpacker.tell()
        if n > max_txs or data[header_end:start] != array_header(n):
            raise DecodeError("block.txs: not a canonical array within the limit")
        offsets = array("q", [start])
        for _ in range(n):
            unpacker.skip()
            offsets.append(unpacker.tell())
    except DecodeError:
        raise
    except Exception:  # noqa: BLE001 - msgpack raises assorted types on garbage
        raise DecodeError("block: malformed") from None
    if offsets[-1] != len(data):
        raise DecodeError("block: trailing bytes")
    return header_end, offsets


def _decode_block_reusing(data: bytes, known: Callable[[bytes], Transaction | None]) -> Block:
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_BLOCK_BYTES:
        raise DecodeError("block: not bytes or over the size limit")
    data = bytes(data)
    header_end, offsets = split_block(data)
    header = BlockHeader.decode(data[1:header_end])
    txs = []
    for i in range(len(offsets) - 1):
        raw = data[offsets[i] : offsets[i + 1]]
        tx = known(tx_id_of(raw))
        txs.append(tx if tx is not None else Transaction.decode(raw))
    if header.tx_count != len(txs):
        raise DecodeError("block: header.tx_count does not match the transactions")
    return Block(header, tuple(txs))


# ---------------------------------------------------------------------------
# Votes and commit certificates
# ---------------------------------------------------------------------------


class CertificateSignatureError(ValidationError):
    """A certificate lists a signature that does not verify."""


class QuorumError(ValidationError):
    """A certificate has fewer valid signatures than the quorum of its validator set."""


def commit_vote_body(chain_id: str, height: int, view: int, block_id: bytes) -> bytes:
    """What a validator signs (under Domain.COMMIT) to commit ``block_id`` at ``height``."""
    return encode([chain_id, height, view, block_id])


@dataclass(frozen=True)
class CommitCertificate:
    """Quorum of commit signatures over (chain id, height, view, block id).

    ``signatures`` are ``(validator_index, signature)`` pairs, strictly increasing by
    index; indexes refer to the validator set in force at ``height``.
    """

    height: int
    view: int
    block_id: bytes
    signatures: tuple[tuple[int, bytes], ...]

    def to_wire(self) -> list[Any]:
        return [self.height, self.view, self.block_id, [[i, s] for i, s in self.signatures]]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def from_wire(cls, obj: Any) -> CommitCertificate:
        f = fields(obj, 4, "certificate")
        sigs = []
        for item in as_list(f[3], "certificate.signatures", MAX_VALIDATORS):
            pair = fields(item, 2, "certificate.signature")
            sigs.append(
                (
                    as_int(pair[0], "certificate.index", 0, MAX_VALIDATORS - 1),
                    as_bytes(pair[1], "certificate.signature", 64),
                )
            )
        require_sorted_unique([i for i, _ in sigs], "certificate.signatures")
        return cls(
            as_int(f[0], "certificate.height"),
            as_int(f[1], "certificate.view"),
            as_hash(f[2], "certificate.block_id"),
            tuple(sigs),
        )

    @classmethod
    def decode(cls, data: bytes) -> CommitCertificate:
        return cls.from_wire(decode(data, 64 * 1024))

    def verify(
        self, chain_id: str, validators: ValidatorSet, block_id: bytes | None = None
    ) -> None:
        """Raise ``ValidationError`` unless >= quorum distinct validators signed this commit."""
        if block_id is not None and block_id != self.block_id:
            raise ValidationError("certificate is for a different block")
        body = commit_vote_body(chain_id, self.height, self.view, self.block_id)
        message = tagged(Domain.COMMIT, body)
        good = 0
        seen: set[int] = set()
        for index, sig in self.signatures:
            if index in seen:
                raise ValidationError("certificate lists a validator twice")
            seen.add(index)
            if index >= validators.n:
                raise ValidationError(f"certificate index {index} is outside the validator set")
            if not crypto.verify_message(validators.keys[index], message, sig):
                raise CertificateSignatureError(
                    f"certificate signature of validator {index} is invalid"
                )
            good += 1
        if good < validators.quorum:
            raise QuorumError(
                f"certificate has {good} signatures; {validators.quorum} of {validators.n} needed"
            )


@dataclass(frozen=True)
class CertifiedBlock:
    """A block with the certificate that commits it (what catch-up transfers)."""

    block: Block
    certificate: CommitCertificate

    def to_wire(self) -> list[Any]:
        return [self.block.to_wire(), self.certificate.to_wire()]

    @classmethod
    def from_wire(cls, obj: Any) -> CertifiedBlock:
        f = fields(obj, 2, "certified_block")
        return cls(Block.from_wire(f[0]), CommitCertificate.from_wire(f[1]))

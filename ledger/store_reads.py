"""The ledger store's reads: blocks, headers, certificates, app metadata and indexes by
height, block id, transaction id and commitment.

``StoreReads`` is part of ``ledger.store.Store`` (a mixin, like the consensus replica's):
it owns the read paths and their integrity checks (sealed values are checked on every
read, a missing value below the committed height is damage, never "absent"), and relies on
the fields ``Store`` sets, declared below. Not thread- or task-safe.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from ledger.codec import Domain, array_header, tagged_hash
from ledger.errors import BodyPruned, DecodeError, StoreDamage, StoreError
from ledger.kv import KV_ERRORS
from ledger.store_format import (
    P_APP,
    P_ATTESTED,
    P_BLOCK,
    P_BLOCK_ID,
    P_CERT,
    P_CHUNK,
    P_HEADER,
    P_TX,
    P_TX_TREE,
    TX_KEY_BYTES,
    chunk_key,
    h8,
    leveldb_reason,
    parse_tx_location,
    unseal,
)
from ledger.tx_tree import CHUNK_TXS, chunk_items
from ledger.types import Block, BlockHeader, CommitCertificate, Transaction


class StoreReads:
    """The read half of ``ledger.store.Store`` (see the module docstring)."""

    _db: Any
    _height: int
    _bodies_from: int
    retain_blocks_hint: int  # the owner's retention, named in ``BodyPruned`` messages
    _tip_id: bytes
    _closed: bool
    _attested_index: bool
    _blocks: OrderedDict[int, Block]
    _block_cache: int

    # ------------------------------------------------------------------ raw reads

    def _sealed(self, prefix: bytes, height: int, what: str) -> bytes | None:
        if self._closed:
            raise StoreError("the store is closed")
        if type(height) is not int or not 0 <= height <= self._height:
            return None
        return self._sealed_key(prefix + h8(height), what, height)

    def get_header_bytes(self, height: int) -> bytes | None:
        """Canonical header bytes of block ``height`` (None outside [0, height])."""
        return self._sealed(P_HEADER, height, "header")

    def get_block_bytes(self, height: int) -> bytes | None:
        """Canonical block bytes (``Block.encode()``) of block ``height``;
        ``BodyPruned`` below ``bodies_from`` (the transactions were pruned)."""
        header = self._sealed(P_HEADER, height, "header")
        if header is None:
            return None
        self.check_body_kept(height)
        count, items = self._chunk(height, 0, self._sealed(P_BLOCK, height, "block"))
        parts, total = [items], count
        if count == CHUNK_TXS:  # a full first chunk: the others follow under "X"
            prefix = P_CHUNK + h8(height)
            try:
                with self._db.iterator(prefix=prefix, verify_checksums=True) as it:
                    for key, value in it:
                        chunk = len(parts)
                        if count != CHUNK_TXS or key != chunk_key(height, chunk):
                            raise StoreDamage(
                                f"the transactions of height {height} are damaged: chunk "
                                f"{chunk} is missing or a stray one follows"
                            )
                        what = f"chunk {chunk} of block at height {height}"
                        count, items = self._chunk(height, chunk, unseal(key, value, what))
                        parts.append(items)
                        total += count
            except KV_ERRORS as exc:
                raise StoreDamage(
                    f"block at height {height}: LevelDB read failed "
                    f"({leveldb_reason(exc)}); the database is damaged"
                ) from exc
        return b"\x92" + header + array_header(total) + b"".join(parts)

    def _chunk(self, height: int, chunk: int, payload: bytes | None) -> tuple[int, bytes]:
        assert payload is not None
        try:
            return chunk_items(payload)
        except ValueError as exc:
            raise StoreDamage(
                f"chunk {chunk} of the transactions at height {height} is damaged ({exc})"
            ) from None

    def get_tx_chunk(self, height: int, chunk: int) -> bytes:
        """Chunk ``chunk`` of block ``height``'s stored transactions (a msgpack array,
        ledger/tx_tree.py); ``BodyPruned`` below ``bodies_from``, ``StoreDamage`` if it
        is not there. Requires a committed height and a chunk its header's tx count has."""
        self.check_body_kept(height)
        if chunk == 0:
            payload = self._sealed(P_BLOCK, height, "block")
            assert payload is not None, f"no committed block at height {height}"
            return payload
        return self._sealed_key(chunk_key(height, chunk), f"chunk {chunk} of block", height)

    def get_tx_tree_nodes(self, height: int) -> bytes:
        """Block ``height``'s tx-tree nodes above its chunks (``ledger.tx_tree.upper_nodes``);
        for a block of more than one chunk only. ``BodyPruned`` below ``bodies_from``."""
        self.check_body_kept(height)
        return self._sealed_key(P_TX_TREE + h8(height), "tx-tree nodes of block", height)

    def has_tx_tree_nodes(self, height: int) -> bool:
        """Is a tx-tree node record stored for block ``height``? (the store check's)"""
        return self._db.get(P_TX_TREE + h8(height)) is not None

    def _sealed_key(self, key: bytes, what: str, height: int) -> bytes:
        """The sealed value at ``key`` of committed ``height``: missing is damage."""
        if self._closed:
            raise StoreError("the store is closed")
        try:
            value = self._db.get(key, verify_checksums=True)
        except KV_ERRORS as exc:
            raise StoreDamage(
                f"{what} at height {height}: LevelDB read failed "
                f"({leveldb_reason(exc)}); the database is damaged"
            ) from exc
        if value is None:
            raise StoreDamage(
                f"{what} at height {height} is missing although the store is "
                f"at height {self._height}; the database is damaged"
            )
        return unseal(key, value, f"{what} at height {height}")

    def check_body_kept(self, height: int) -> None:
        """``BodyPruned`` if block ``height``'s body was pruned from this store."""
        if height < self._bodies_from:
            raise BodyPruned(height, self._bodies_from, self.retain_blocks_hint)

    def get_certificate_bytes(self, height: int) -> bytes | None:
        """Certificate bytes of block ``height`` (None at 0 and outside [0, height])."""
        if height == 0:
            return None
        return self._sealed(P_CERT, height, "certificate")

    # ------------------------------------------------------------------ decoded reads

    def get_header(self, height: int) -> BlockHeader | None:
        return _decoded(self.get_header_bytes(height), height, "header", BlockHeader.decode)

    def _load_block(self, height: int) -> Block | None:
        return _decoded(self.get_block_bytes(height), height, "block", Block.decode)

    def get_block(self, height: int) -> Block | None:
        """Block ``height`` (decoded blocks are kept in a small LRU); ``BodyPruned``
        below ``bodies_from``."""
        block = self._blocks.get(height)
        if block is not None:
            self._blocks.move_to_end(height)
            return block
        block = self._load_block(height)
        if block is not None:
            self._blocks[height] = block
            if len(self._blocks) > self._block_cache:
                self._blocks.popitem(last=False)
        return block

    def iter_blocks(self, from_h: int = 0, to_h: int | None = None) -> Iterator[Block]:
        """Blocks ``from_h`` .. ``to_h`` *inclusive* (default: up to the committed height),
        read one at a time without filling the block cache (``BodyPruned`` at the
        first pruned one)."""
        last = self._height if to_h is None else min(to_h, self._height)
        for h in range(max(0, from_h), last + 1):
            block = self._load_block(h)
            assert block is not None
            yield block

    def get_certificate(self, height: int) -> CommitCertificate | None:
        raw = self.get_certificate_bytes(height)
        return _decoded(raw, height, "certificate", CommitCertificate.decode)

    def get_block_id(self, height: int) -> bytes | None:
        """Id of block ``height``: the tagged hash of its (checksummed) header bytes."""
        if height == self._height and not self._closed:
            tip: bytes = self._tip_id
            return tip
        raw = self.get_header_bytes(height)
        return None if raw is None else tagged_hash(Domain.BLOCK_ID, raw)

    def height_of_block(self, block_id: bytes) -> int | None:
        raw = self._db.get(P_BLOCK_ID + block_id)
        if raw is None:
            return None
        if len(raw) != 8:
            raise StoreDamage(f"block-id index entry for {block_id.hex()} is corrupt")
        return int.from_bytes(raw, "big")

    def app_meta(self, height: int) -> bytes | None:
        """The application metadata blob committed with block ``height``."""
        return self._sealed(P_APP, height, "app metadata")

    def key_span(self, prefix: bytes) -> tuple[int, bytes | None, bytes | None]:
        """(how many keys start with ``prefix``, the first, the last): the store check's
        cheap test that a per-height record exists for exactly the heights 0..height.
        Counted in C (``deque`` over the key iterator), not key by key in Python."""
        with self._db.iterator(prefix=prefix, include_value=False) as it:
            first = next(it, None)
            if first is None:
                return 0, None, None
            last = deque(enumerate(it, 2), maxlen=1)
        count, last_key = last[0] if last else (1, first)
        return count, first, last_key

    # ------------------------------------------------------------------ transactions

    @property
    def attestation_indexed(self) -> bool:
        """True if ``ever_attested`` is authoritative (the store kept the index from its
        genesis on)."""
        return self._attested_index

    def attested_height(self, commitment: bytes) -> int | None:
        """The height the attested-commitment index ("K") names for ``commitment``."""
        raw = self._db.get(P_ATTESTED + commitment)
        if raw is None:
            return None
        if len(raw) != 8:
            raise StoreDamage(f"attested-commitment index entry for {commitment.hex()} is corrupt")
        return int.from_bytes(raw, "big")

    def ever_attested(self, commitment: bytes) -> bool:
        """True if a committed block at or below ``height`` attested ``commitment``.

        Only meaningful when ``attestation_indexed``. Records are never deleted, so False
        also holds for every committed height below."""
        return self._db.get(P_ATTESTED + commitment) is not None

    def never_attested(self, commitment: bytes) -> bool:
        """``not ever_attested(commitment)``, as one call: asked of every transaction a
        node admits (``LedgerState.never_attested`` of committed states)."""
        return self._db.get(P_ATTESTED + commitment) is None

    def tx_committed(self, tx_id: bytes) -> bool:
        """True if ``tx_id`` is in the tx index (``tx_location`` without decoding the
        entry): the replay check asked of every transaction admitted and executed."""
        return self._db.get(P_TX + tx_id[:TX_KEY_BYTES]) is not None

    def tx_location(self, tx_id: bytes) -> tuple[int, int] | None:
        """(height, position in block) of a committed transaction, or None."""
        raw = self._db.get(P_TX + tx_id[:TX_KEY_BYTES])
        if raw is None:
            return None
        try:
            return parse_tx_location(raw)
        except ValueError as exc:
            raise StoreDamage(f"tx index entry for {tx_id.hex()} is corrupt ({exc})") from exc

    def get_tx(self, tx_id: bytes) -> Transaction | None:
        """A committed transaction by id (decodes its block through the block cache);
        ``BodyPruned`` if its block's body was pruned (the index entry stays: it is the
        replay check)."""
        loc = self.tx_location(tx_id)
        if loc is None:
            return None
        height, pos = loc
        block = self.get_block(height)
        if block is None or pos >= len(block.txs) or block.txs[pos].tx_id != tx_id:
            raise StoreDamage(
                f"tx index entry for {tx_id.hex()} points to height {height} "
                f"position {pos}, which does not hold that transaction"
            )
        return block.txs[pos]


class _AtHeight(Protocol):
    @property
    def height(self) -> int: ...


_R = TypeVar("_R", bound=_AtHeight)


def _decoded(raw: bytes | None, height: int, what: str, decode: Callable[[bytes], _R]) -> _R | None:
    """``decode(raw)`` of the record stored at ``height``; ``StoreDamage`` if it does not
    decode or names another height."""
    if raw is None:
        return None
    try:
        record = decode(raw)
    except DecodeError as exc:
        raise StoreDamage(f"{what} at height {height} does not decode ({exc})") from exc
    if record.height != height:
        raise StoreDamage(f"{what} at height {height} says height {record.height}")
    return record

"""State snapshots: a certified height's state, served by one store and imported, verified,
into an empty one (state sync: a node joins, or recovers a lost disk, without replaying
every block).

A snapshot at height s is four kinds of chunk, each a canonical msgpack array, in this
order (``export_snapshot`` yields them; a peer serves each kind on request, see
node/sync.py):

    ["snapshot", s]
    ["headers", first, [[header, certificate (b"" at 0), app_meta], ...]]   heights 0..s
    ["leaves", [[key, value], ...], done]       the state tree's leaves at version s,
                                                in key order
    ["bodies", first, [block, ...]]             blocks body_floor(s)..s

``SnapshotImport`` takes them into an empty store and trusts only the genesis file:

1. **Headers 0..s, each when it arrives.** Header 0 and its app metadata are the genesis
   file's. For h >= 1: the chain link (chain, height, previous block id), the validator
   set header h-1 named (read from the chain record of app metadata h-1, which must hash
   to it), header h's certificate against that set, the history root against the block
   ids so far; app metadata h must agree with what header h pins (time, the history
   accumulator). So header s is certified by a chain of certificates from genesis.
2. **The leaves.** Strictly ascending keys; once all are in, the tree is rebuilt from
   them with the normal update (``SparseMerkleTree.update``) at version s, and its root
   must equal header s's state root *before* anything of it is written. A changed,
   missing or extra leaf changes the root. App metadata s must then be exactly what the
   state says: its chain record is the state's, its member and open-proposal lists are
   exactly the state's members and open proposals.
3. **Bodies.** Replay protection needs the ids of every transaction that could still be
   valid after s: a transaction committed at c expires by c + tx_ttl_heights (at c), so
   the blocks from ``body_floor`` = s + 1 - (the largest ``tx_ttl_heights`` any chain
   record 0..s holds) are fetched and checked against their certified headers' tx roots;
   their bodies and tx-index entries are kept. Bodies below are absent, as in a pruned
   store (``Store.bodies_from``: proofs of attestations there say "pruned, ask an archive
   node").

Only then does ``finish`` commit the store at height s (``Store.finish_import``): the
node opens it as a ``Ledger`` and catches up from s + 1 with normal, certified block
sync. Nothing is served or voted on from a store still importing (``Ledger`` refuses
to open it). What state sync trusts that a replay from genesis does not: that the
transactions below s were valid -- their effect is the state root a quorum certified.
The attested-commitment index is not rebuilt (the tree keys are hashes of the
commitments); the synced store answers "was this attested?" from the state tree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ledger import merkle
from ledger.codec import as_bool, as_bytes, as_int, as_list, as_str, decode, encode, fields
from ledger.consortium import Member
from ledger.errors import DecodeError, LedgerError, StoreError
from ledger.header_link import LinkFailure, check_link
from ledger.records import CHAIN_KEY, ProposalRecord, ProposalStatus, member_key, proposal_key
from ledger.smt import KEY_SIZE, MemoryNodeStore, SparseMerkleTree
from ledger.state import AppMeta, decode_app_meta, genesis_execution
from ledger.store import Store
from ledger.types import MAX_BLOCK_BYTES, Block, BlockHeader, CommitCertificate, Genesis

HEADERS_PER_CHUNK = 256
LEAVES_PER_CHUNK = 4096
BODIES_PER_CHUNK = 8
#: Bounds of one decoded chunk (a leaf value is a state record: a few hundred bytes).
MAX_CHUNK_BYTES = 16 * 1024 * 1024
MAX_LEAF_VALUE = 64 * 1024
#: A bodies chunk stops after this many bytes (one block always fits a p2p frame).
MAX_BODIES_BYTES = 2 * 1024 * 1024
NODES_PER_BATCH = 20_000

_MEMBER_WIRE = 0x95  # msgpack fixarray of 5: a member (or the chain record)
_PROPOSAL_WIRE = 0x98  # fixarray of 8: a proposal record


class SnapshotError(LedgerError):
    """A snapshot that cannot be served, or that does not verify (it names what)."""


# --------------------------------------------------------------------------- serving


def body_floor(height: int, max_ttl: int) -> int:
    """The lowest height whose body a snapshot at ``height`` carries (see step 3)."""
    return min(height, max(1, height + 1 - max_ttl))


def max_ttl(store: Store, upto: int) -> int:
    """The largest ``tx_ttl_heights`` of the chain records at heights 0..``upto``."""
    best = 1
    for h in range(upto + 1):
        meta = store.app_meta(h)
        assert meta is not None
        best = max(best, decode_app_meta(meta).chain.params.tx_ttl_heights)
    return best


def headers_chunk(store: Store, first: int, last: int) -> bytes:
    """Heights ``first``..``last`` (at most ``HEADERS_PER_CHUNK``): header, certificate,
    app metadata."""
    out: list[list[bytes]] = []
    for h in range(first, min(last, store.height, first + HEADERS_PER_CHUNK - 1) + 1):
        header, meta = store.get_header_bytes(h), store.app_meta(h)
        assert header is not None and meta is not None
        out.append([header, store.get_certificate_bytes(h) or b"", meta])
    return encode(["headers", first, out])


def leaves_chunk(store: Store, version: int, after: bytes | None, limit: int) -> bytes:
    """Up to ``limit`` leaves of state version ``version`` above key ``after``."""
    if version < store.state_pruned_below or version > store.height:
        raise SnapshotError(
            f"state version {version} is not kept here (kept: {store.state_pruned_below}.."
            f"{store.height}); start the state sync again at a newer height"
        )
    tree = SparseMerkleTree(store)
    out: list[list[bytes]] = []
    for key, value in tree.items_after(version, after):
        out.append([key, value])
        if len(out) >= max(1, limit):
            break
    done = len(out) < max(1, limit)
    return encode(["leaves", out, done])


def bodies_chunk(store: Store, first: int, last: int) -> bytes:
    """Blocks ``first``..``last`` as stored (at most ``BODIES_PER_CHUNK``, and no more
    once ``MAX_BODIES_BYTES`` are reached)."""
    if first < store.bodies_from:
        raise SnapshotError(
            f"block {first}'s body is pruned here (kept from {store.bodies_from}): this "
            f"node cannot serve a snapshot that needs it"
        )
    out = []
    size = 0
    for h in range(first, min(last, store.height, first + BODIES_PER_CHUNK - 1) + 1):
        block = store.get_block_bytes(h)
        assert block is not None
        out.append(block)
        size += len(block)
        if size >= MAX_BODIES_BYTES:
            break
    return encode(["bodies", first, out])


def export_snapshot(store: Store, height: int | None = None) -> Iterator[bytes]:
    """The whole snapshot of ``store`` at ``height`` (default: its head), chunk by chunk.
    The store must not commit meanwhile (a node serves the chunks one request at a time
    instead, node/sync.py)."""
    s = store.height if height is None else height
    if s < 1:
        raise SnapshotError("a snapshot needs a chain above genesis (height >= 1)")
    yield encode(["snapshot", s])
    for first in range(0, s + 1, HEADERS_PER_CHUNK):
        yield headers_chunk(store, first, s)
    after: bytes | None = None
    while True:
        chunk = leaves_chunk(store, s, after, LEAVES_PER_CHUNK)
        yield chunk
        _kind, leaves, done = parse_chunk(chunk)
        if done:
            break
        after = leaves[-1][0]
    floor = body_floor(s, max_ttl(store, s))
    for first in range(floor, s + 1, BODIES_PER_CHUNK):
        yield bodies_chunk(store, first, s)


# --------------------------------------------------------------------------- wire


def parse_chunk(data: bytes) -> tuple[Any, ...]:
    """Decode one chunk strictly: ("snapshot", s) | ("headers", first, [(header, cert,
    meta)]) | ("leaves", [(key, value)], done) | ("bodies", first, [block])."""
    obj = decode(data, MAX_CHUNK_BYTES)
    if not isinstance(obj, list) or not obj:
        raise DecodeError("snapshot chunk: expected a non-empty array")
    kind = as_str(obj[0], "snapshot.kind", 16)
    if kind == "error":
        why = as_str(obj[1] if len(obj) > 1 else "", "error", 512)
        raise SnapshotError(f"the peer refused: {why}")
    if kind == "snapshot":
        f = fields(obj, 2, "snapshot chunk")
        return ("snapshot", as_int(f[1], "snapshot.height", 1))
    if kind == "headers":
        f = fields(obj, 3, "headers chunk")
        items = []
        for item in as_list(f[2], "headers", HEADERS_PER_CHUNK):
            g = fields(item, 3, "headers[]")
            items.append(
                (
                    as_bytes(g[0], "header", max_size=4096),
                    as_bytes(g[1], "certificate", max_size=64 * 1024),
                    as_bytes(g[2], "app_meta", max_size=1 << 20),
                )
            )
        return ("headers", as_int(f[1], "headers.first"), items)
    if kind == "leaves":
        f = fields(obj, 3, "leaves chunk")
        leaves = []
        for item in as_list(f[1], "leaves", 1 << 20):
            g = fields(item, 2, "leaves[]")
            leaves.append(
                (as_bytes(g[0], "key", KEY_SIZE), as_bytes(g[1], "value", max_size=MAX_LEAF_VALUE))
            )
        return ("leaves", leaves, as_bool(f[2], "leaves.done"))
    if kind == "bodies":
        f = fields(obj, 3, "bodies chunk")
        blocks = [
            as_bytes(b, "block", max_size=MAX_BLOCK_BYTES)
            for b in as_list(f[2], "bodies", BODIES_PER_CHUNK)
        ]
        return ("bodies", as_int(f[1], "bodies.first", 1), blocks)
    raise DecodeError(f"snapshot chunk: unknown kind {kind!r}")


# --------------------------------------------------------------------------- import


@dataclass
class SnapshotInfo:
    """What an import brought in."""

    height: int
    leaves: int
    bodies_from: int
    state_root: bytes


class SnapshotImport:
    """Verify and write a snapshot at ``height`` into the empty ``store`` (module docstring).

    Feed the chunks in order (``add_headers`` for 0..height, ``add_leaves`` until done,
    ``add_bodies`` from ``bodies_from`` to height), then ``finish``. Any failure raises
    ``SnapshotError``; the store stays marked as importing (start again)."""

    def __init__(self, store: Store, genesis: Genesis, height: int) -> None:
        if height < 1:
            raise SnapshotError("a snapshot needs a chain above genesis (height >= 1)")
        if store.chain_id != genesis.chain_id or store.genesis_hash != genesis.hash:
            raise SnapshotError("the store belongs to another chain than the genesis file")
        self.store = store
        self.genesis = genesis
        self.height = height
        self.next_header = 0
        self._headers: dict[int, BlockHeader] = {}  # header s (the others are in the store)
        self._prev: BlockHeader | None = None
        self._prev_app: AppMeta | None = None
        self._history = merkle.MerkleAccumulator()
        self._max_ttl = 1
        self._leaves: dict[bytes, bytes] = {}
        self._last_key: bytes | None = None
        self.leaves_done = False
        self.bodies_from = 0
        self.next_body = 0
        self._meta_s: bytes = b""
        self._root_ok = False
        store.begin_import()

    # ------------------------------------------------------------------ headers

    def add_headers(self, first: int, items: list[tuple[bytes, bytes, bytes]]) -> None:
        if not items:
            raise SnapshotError(f"the peer sent no headers from height {first}")
        if first != self.next_header:
            raise SnapshotError(f"expected headers from height {self.next_header}, got {first}")
        if self.next_header + len(items) > self.height + 1:
            raise SnapshotError(f"the peer sent headers above the snapshot height {self.height}")
        records = []
        for i, (raw, cert, meta) in enumerate(items):
            h = first + i
            header, app = self._check_header(h, raw, cert, meta)
            records.append((h, header.block_id, raw, cert if h else None, meta))
            if h == self.height:
                self._meta_s = meta
            self._prev, self._prev_app = header, app
        self.store.import_heights(records)
        self.next_header = first + len(items)
        if self.next_header == self.height + 1:
            self.bodies_from = body_floor(self.height, self._max_ttl)
            self.next_body = self.bodies_from

    def _check_header(
        self, h: int, raw: bytes, cert_raw: bytes, meta: bytes
    ) -> tuple[BlockHeader, AppMeta]:
        try:
            header = BlockHeader.decode(raw)
            if header.encoded != raw:
                raise DecodeError("the header is not canonically encoded")
            app = decode_app_meta(meta)
        except DecodeError as exc:
            raise SnapshotError(f"height {h}: {exc}") from None
        if h == 0:
            genesis = genesis_execution(self.genesis)
            if header != genesis.block.header or meta != genesis.state.app_meta():
                raise SnapshotError("height 0 is not the genesis file's block (wrong genesis?)")
        else:
            assert self._prev is not None and self._prev_app is not None
            try:
                cert = CommitCertificate.decode(cert_raw)
            except DecodeError as exc:
                raise SnapshotError(f"height {h}: the certificate does not verify: {exc}") from None
            try:
                check_link(
                    self.genesis.chain_id,
                    self._prev,
                    self._prev_app,
                    header,
                    cert,
                    self._history.root(),
                )
            except LinkFailure as exc:
                raise SnapshotError(f"height {h}: {exc.message}") from None
            if app.time_ms != header.time_ms:
                raise SnapshotError(f"app metadata {h} has another time than its header")
        self._history.append(merkle.leaf_hash(header.block_id))
        if app.history.size != self._history.size or app.history.frontier != self._history.frontier:
            raise SnapshotError(f"app metadata {h} has another history than the headers")
        self._max_ttl = max(self._max_ttl, app.chain.params.tx_ttl_heights)
        if h == self.height:
            self._headers[h] = header
        return header, app

    # ------------------------------------------------------------------ leaves

    def add_leaves(self, leaves: list[tuple[bytes, bytes]], done: bool) -> None:
        if self.leaves_done:
            raise SnapshotError("leaves after the last page")
        if not leaves and not done:
            raise SnapshotError("the peer sent an empty page of leaves")
        last = self._last_key
        for key, value in leaves:
            if last is not None and key <= last:
                raise SnapshotError("the snapshot's leaves are not in strictly ascending key order")
            self._leaves[key] = value
            last = key
        self._last_key = last
        self.leaves_done = done

    @property
    def last_key(self) -> bytes | None:
        """The last leaf key received (the next page starts after it)."""
        return self._last_key

    def _build_state(self) -> None:
        """Rebuild the tree at version s, check it against header s, then write it."""
        header = self._headers[self.height]
        update = SparseMerkleTree(MemoryNodeStore()).update(None, self.height, self._leaves)
        if update.root != header.state_root:
            raise SnapshotError(
                f"the snapshot's state does not hash to the certified state root of "
                f"height {self.height} (a leaf is changed, missing or extra)"
            )
        self._check_meta_s()
        batch: dict[bytes, bytes] = {}
        for k, v in update.new_nodes.items():
            batch[k] = v
            if len(batch) >= NODES_PER_BATCH:
                self.store.import_nodes(batch)
                batch = {}
        self.store.import_nodes(batch)
        self._root_ok = True

    def _check_meta_s(self) -> None:
        """App metadata s lists exactly the state's chain record, members and open
        proposals (the certified root vouches for the leaves, not for the list)."""
        meta = decode_app_meta(self._meta_s)
        leaves = self._leaves
        if leaves.get(CHAIN_KEY) != meta.chain.encode():
            raise SnapshotError(f"app metadata {self.height}'s chain record is not the state's")
        members: set[bytes] = set()
        proposals: set[bytes] = set()
        for key, value in leaves.items():
            first = value[0] if value else 0
            try:
                if first == _MEMBER_WIRE and key != CHAIN_KEY:
                    m = Member.from_wire(decode(value))
                    if member_key(m.member_id) == key:
                        members.add(key)
                elif first == _PROPOSAL_WIRE:
                    if ProposalRecord.decode(value).status == ProposalStatus.OPEN:
                        proposals.add(key)
            except DecodeError:
                continue
        if members != {member_key(m) for m in meta.member_ids}:
            raise SnapshotError(f"app metadata {self.height}'s members are not the state's")
        if proposals != {proposal_key(p) for p in meta.proposal_ids}:
            raise SnapshotError(f"app metadata {self.height}'s open proposals are not the state's")

    # ------------------------------------------------------------------ bodies

    def add_bodies(self, first: int, blocks: list[bytes]) -> None:
        if self.next_header <= self.height:
            raise SnapshotError("bodies before all headers")
        if not blocks:
            raise SnapshotError(f"the peer sent no bodies from height {first}")
        if first != self.next_body or first + len(blocks) > self.height + 1:
            raise SnapshotError(f"expected bodies from height {self.next_body}, got {first}")
        decoded = []
        for i, raw in enumerate(blocks):
            h = first + i
            try:
                block = Block.decode(raw)
            except DecodeError as exc:
                raise SnapshotError(f"block {h}: {exc}") from None
            header = self._header_at(h)
            if block.header != header or merkle.root(block.tx_ids) != header.tx_root:
                raise SnapshotError(f"block {h}'s transactions are not its certified header's")
            decoded.append(block)
        self.store.import_bodies(decoded)
        self.next_body = first + len(blocks)

    def _header_at(self, h: int) -> BlockHeader:
        header = self._headers.get(h)
        if header is None:
            header = BlockHeader.decode(self.store.imported_header(h))
        return header

    # ------------------------------------------------------------------ finish

    def finish(self) -> SnapshotInfo:
        if self.next_header != self.height + 1:
            raise SnapshotError(f"the snapshot lacks headers from height {self.next_header}")
        if not self.leaves_done:
            raise SnapshotError("the snapshot's leaves are incomplete")
        if self.next_body != self.height + 1:
            raise SnapshotError(f"the snapshot lacks block bodies from height {self.next_body}")
        if not self._root_ok:
            self._build_state()
        self.store.finish_import(self.height, self.bodies_from)
        info = SnapshotInfo(
            self.height, len(self._leaves), self.bodies_from, self._headers[self.height].state_root
        )
        self._leaves = {}
        return info

    def feed(self, chunk: bytes) -> None:
        """Take one encoded chunk (``parse_chunk``) of any kind but "snapshot"."""
        try:
            parsed = parse_chunk(chunk)
        except DecodeError as exc:
            raise SnapshotError(f"a malformed snapshot chunk: {exc}") from None
        kind = parsed[0]
        if kind == "headers":
            self.add_headers(parsed[1], parsed[2])
        elif kind == "leaves":
            self.add_leaves(parsed[1], parsed[2])
        elif kind == "bodies":
            self.add_bodies(parsed[1], parsed[2])
        else:
            raise SnapshotError(f"unexpected {kind!r} chunk")


def import_snapshot(store: Store, genesis: Genesis, chunks: Iterable[bytes]) -> SnapshotInfo:
    """Import a whole snapshot (``export_snapshot``'s chunks) into the empty ``store``."""
    it = iter(chunks)
    try:
        head = parse_chunk(next(it))
    except StopIteration:
        raise SnapshotError("an empty snapshot") from None
    except DecodeError as exc:
        raise SnapshotError(f"a malformed snapshot chunk: {exc}") from None
    if head[0] != "snapshot":
        raise SnapshotError("a snapshot starts with its height")
    imp = SnapshotImport(store, genesis, head[1])
    for chunk in it:
        imp.feed(chunk)
    try:
        return imp.finish()
    except StoreError as exc:
        raise SnapshotError(str(exc)) from None

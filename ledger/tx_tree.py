"""A block's tx tree as the store keeps it: transactions in chunks, the nodes above them.

A proof that a transaction is in a block (``ledger.bundle.IncludedTx``) needs the
transaction and its RFC 6962 inclusion proof in the block's tx tree. Recomputing that
tree from the whole body (2,000 tx ids and ~4,000 node hashes) cost a look-up ~13 ms,
so the store (ledger/store_format.py) keeps a block's transactions in chunks of
``CHUNK_TXS`` and, for a block of more than one chunk, the tree's nodes from the chunk
roots up. A proof then reads one chunk (~3 KB) and one node record (~8 KB at 2,000
transactions) and hashes ~30 times, whatever the block's size.

The tree (docs/proofs-merkle.md §2, ``ledger.merkle``) is built level by level over the
leaf hashes of the tx ids: adjacent pairs are hashed and an unpaired last node moves up
unchanged. Level ``k`` then has ``ceil(n / 2**k)`` nodes and node ``j`` of it is the
root of leaves ``[j * 2**k, min((j + 1) * 2**k, n))`` built the same way, so chunk
``c``'s own tree is the subtree under node ``c`` of level ``CHUNK_LEVEL``: a proof is the
chunk's proof followed by the siblings above it.

Pure computation: no I/O (the store reads and writes the records).
"""

from __future__ import annotations

import msgpack

from ledger import merkle
from ledger.codec import array_header
from ledger.store_format import P_TX_TREE, chunk_key, h8, seal
from ledger.types_base import tx_id_of

CHUNK_LEVEL = 4
CHUNK_TXS = 1 << CHUNK_LEVEL  # transactions per stored chunk (a power of two)
HASH = 32
_CHUNK_FULL_HEADER = b"\xdc\x00\x10"  # msgpack array header of CHUNK_TXS items


def levels(leaf_hashes: list[bytes]) -> tuple[list[bytes], ...]:
    """The tree level by level, leaf hashes first; the last level is the root (none for
    an empty tree)."""
    out = [leaf_hashes]
    node = merkle.node_hash
    while len(out[-1]) > 1:
        below = out[-1]
        up = [node(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            up.append(below[-1])
        out.append(up)
    return tuple(out)


def level_proof(tree: tuple[list[bytes], ...], index: int) -> list[bytes]:
    """RFC 9162 inclusion proof of leaf ``index`` from ``levels``: at each level the
    sibling, if there is one (a carried-up last node has none)."""
    proof = []
    for level in tree[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index >>= 1
    return proof


def chunk_count(tx_count: int) -> int:
    """Chunks of a block of ``tx_count`` transactions (an empty block has one, empty)."""
    return max(1, -(-tx_count // CHUNK_TXS))


def _upper_sizes(tx_count: int) -> list[int]:
    """Node counts of the levels from ``CHUNK_LEVEL`` up to the root (tx_count > CHUNK_TXS)."""
    sizes = [-(-tx_count // CHUNK_TXS)]
    while sizes[-1] > 1:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def root_and_upper_nodes(tx_ids: list[bytes]) -> tuple[bytes, bytes]:
    """(the tx root, the stored node record) from one pass over the tree: the record is
    every node from level ``CHUNK_LEVEL`` up to the root, level by level, 32 bytes each,
    and empty for one chunk (its root is the header's)."""
    leaf = merkle.leaf_hash
    tree = levels([leaf(t) for t in tx_ids])
    root = tree[-1][0] if tx_ids else merkle.EMPTY_ROOT
    if len(tx_ids) <= CHUNK_TXS:
        return root, b""
    return root, b"".join(b"".join(level) for level in tree[CHUNK_LEVEL:])


def upper_nodes(tx_ids: list[bytes]) -> bytes:
    """The stored node record of a block with these transactions (``root_and_upper_nodes``)."""
    return root_and_upper_nodes(tx_ids)[1]


def upper_size_ok(upper: bytes, tx_count: int) -> bool:
    """Does a node record have the length a block of ``tx_count`` transactions gives?"""
    if tx_count <= CHUNK_TXS:
        return upper == b""
    return len(upper) == HASH * sum(_upper_sizes(tx_count))


def upper_proof(upper: bytes, tx_count: int, chunk: int) -> tuple[bytes, list[bytes]]:
    """(chunk ``chunk``'s root as recorded, the proof siblings above it) from a node
    record that ``upper_size_ok`` accepted. Requires tx_count > CHUNK_TXS."""
    sizes = _upper_sizes(tx_count)
    recorded = upper[HASH * chunk : HASH * (chunk + 1)]
    proof = []
    base, index = 0, chunk
    for size in sizes[:-1]:
        sibling = index ^ 1
        if sibling < size:
            at = HASH * (base + sibling)
            proof.append(upper[at : at + HASH])
        base += size
        index >>= 1
    return recorded, proof


def root_from_path(leaf_hash: bytes, index: int, size: int, proof: list[bytes]) -> bytes | None:
    """The root ``proof`` gives for leaf ``index`` of ``size`` leaves (None if it does
    not fit that shape): what a verifier computes (``ledger.merkle``)."""
    try:
        return merkle.root_from_inclusion_proof(leaf_hash, index, size, proof)
    except merkle.ProofError:
        return None


def chunk_payloads(encoded_txs: list[bytes]) -> list[bytes]:
    """The stored chunks: msgpack arrays of ``CHUNK_TXS`` transactions (the last one
    shorter; one empty array for an empty block)."""
    out = []
    for start in range(0, max(1, len(encoded_txs)), CHUNK_TXS):
        part = encoded_txs[start : start + CHUNK_TXS]
        out.append(array_header(len(part)) + b"".join(part))
    return out


def chunk_items(payload: bytes) -> tuple[int, bytes]:
    """(how many transactions, their concatenated encodings) of a stored chunk;
    ValueError if its array header is not a chunk's."""
    first = payload[:1]
    if first and 0x90 <= first[0] <= 0x9F:
        return first[0] - 0x90, payload[1:]
    if payload[:3] == _CHUNK_FULL_HEADER:
        return CHUNK_TXS, payload[3:]
    raise ValueError("not an array of at most 16 transactions")


def split_chunk(payload: bytes) -> list[bytes]:
    """A stored chunk's transaction encodings, decoding nothing (msgpack's C parser
    skips each); ValueError if it is not an array of at most ``CHUNK_TXS`` items with
    nothing trailing."""
    count, _ = chunk_items(payload)
    unpacker = msgpack.Unpacker(raw=True, max_buffer_size=len(payload) + 1)
    unpacker.feed(payload)
    out = []
    try:
        unpacker.read_array_header()
        start = unpacker.tell()
        for _ in range(count):
            unpacker.skip()
            end = unpacker.tell()
            out.append(payload[start:end])
            start = end
    except Exception:  # noqa: BLE001 - msgpack raises assorted types on garbage
        raise ValueError("a transaction in it is malformed") from None
    if start != len(payload):
        raise ValueError("trailing bytes")
    return out


def chunk_leaves(txs: list[bytes]) -> list[bytes]:
    """The leaf hashes of a chunk's transactions (of their ids)."""
    leaf = merkle.leaf_hash
    return [leaf(tx_id_of(t)) for t in txs]


def body_records(h: int, txs: list[bytes], upper: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, sealed value) records that store block ``h``'s transactions (their
    encodings ``txs``): its chunks and, past one chunk, its node record ``upper``
    (``upper_nodes``; ledger/store_format.py)."""
    out = []
    for c, payload in enumerate(chunk_payloads(txs)):
        key = chunk_key(h, c)
        out.append((key, seal(key, payload)))
    if upper:
        key = P_TX_TREE + h8(h)
        out.append((key, seal(key, upper)))
    return out

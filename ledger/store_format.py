"""The ledger store's on-disk format: key prefixes, value encodings, integrity seals.

``ledger.store.Store`` reads and writes through these; the auditor and the crash tests
name keys with them. Changing anything here changes the store format
(``FORMAT_VERSION``).

Key layout (1-byte prefix; ``h8`` = height as 8-byte big-endian, so keys sort by
height; ``seal(x)`` = CRC-32 (4 bytes, big-endian) of key || x, then x)::

    key                      value
    "M" "magic"              b"dvp-ledger-store"
    "M" "format"             format version, 4 bytes big-endian (currently 2; version 1
                             kept a block's transactions in one "B" record, no "X"/"P")
    "M" "chain"              chain id, UTF-8
    "M" "genesis"            genesis hash (32 bytes)
    "M" "height"             last committed height, h8 (absent while empty)
    "M" "pruned"             state versions below this may be pruned, h8 (absent: none)
    "M" "bodies-from"        the lowest height whose "B" record is kept, h8 (absent: 0,
                             an archive store); "B" records below it were pruned on
                             purpose (``Store.prune_bodies``), which is not damage
    "M" "attested-index"     b"1": "K" has been kept since genesis (absent: no index)
    "M" "tx-index-from"      the lowest height whose transactions are in "T", h8 (absent:
                             0); a store joined by state sync indexes only the blocks
                             within the transaction lifetime below its snapshot
    "M" "importing"          b"1" while a state-sync import is filling an empty store
                             (ledger.state_snapshot); absent once the import committed
    "H" h8                   seal(canonical header bytes)
    "B" h8                   seal(msgpack array of the block's first 16 transactions,
                             or all of them if fewer: chunk 0, ledger/tx_tree.py)
    "X" h8 c2                seal(msgpack array of transactions 16c .. 16c + 15): chunk
                             c >= 1 (c2 = c as 2-byte big-endian), only for blocks of
                             more than 16 transactions; every chunk but the last is full
    "P" h8                   seal(the block's tx-tree nodes from the chunk roots up to
                             the root, level by level, 32 bytes each), only for blocks of
                             more than 16 transactions (one chunk's root is the header's
                             tx_root): a transaction's inclusion proof reads its chunk
                             and this record, never the whole body
    "C" h8                   seal(commit certificate bytes)      (no entry at height 0)
    "A" h8                   seal(application metadata blob)
    "I" block_id (32)        h8
    "T" tx_id[:16]           uvarint(height) || uvarint(position in block)
    "K" commitment (32)      h8 of the block that attested it (an index of the state's
                             attestation records, written in the same batch)
    "N" node_key             state-tree node (ledger.smt encoding)
    "S" v8                   msgpack array of the node keys made stale by version v
"""

from __future__ import annotations

import zlib

from ledger.errors import StoreDamage

FORMAT_VERSION = 2
MAGIC = b"dvp-ledger-store"

P_META = b"M"
P_HEADER = b"H"
P_BLOCK = b"B"  # chunk 0 of a block's transactions
P_CHUNK = b"X"  # chunks 1.. of a block's transactions
P_TX_TREE = b"P"  # a block's tx-tree nodes above the chunks
P_CERT = b"C"
P_APP = b"A"
P_BLOCK_ID = b"I"
P_TX = b"T"
# The tx index is keyed by the first 16 bytes of the tx id: 16 bytes less per committed
# transaction (~4% of the disk per attestation). A 128-bit prefix collision between two
# honest transactions is out of reach (birthday bound 2^64); one an issuer mints between
# its own transactions only gets its second transaction refused as a replay.
TX_KEY_BYTES = 16
P_NODE = b"N"
P_STALE = b"S"
# Every attested commitment (the ATTESTs of committed blocks), so that "was this ever
# attested?" -- asked of every transaction a node admits, its own clients' and its peers'
# -- costs one LevelDB look-up (a miss is usually answered by the tables' bloom filters)
# instead of a walk down the state tree (~12 us in Python at 200,000 attestations).
P_ATTESTED = b"K"

K_MAGIC = P_META + b"magic"
K_FORMAT = P_META + b"format"
K_CHAIN = P_META + b"chain"
K_GENESIS = P_META + b"genesis"
K_HEIGHT = P_META + b"height"
K_PRUNED = P_META + b"pruned"
K_BODIES_FROM = P_META + b"bodies-from"
# Present when the store has kept P_ATTESTED since its genesis (stores created before the
# index have none, and are read through the state tree).
K_ATTESTED_INDEX = P_META + b"attested-index"
K_TX_INDEX_FROM = P_META + b"tx-index-from"
K_IMPORTING = P_META + b"importing"


#: How every ``StoreDamage`` message of the ledger store ends (a node replaces it with
#: the exact command, ``dvp store resync --config <its config>``).
DAMAGE_HINT = "restore the data directory from a backup or re-sync it from peers"


def h8(height: int) -> bytes:
    """A height (or state version) as the 8-byte big-endian key suffix."""
    return height.to_bytes(8, "big")


def chunk_key(height: int, chunk: int) -> bytes:
    """Where chunk ``chunk`` of block ``height``'s transactions is stored."""
    return P_BLOCK + h8(height) if chunk == 0 else P_CHUNK + h8(height) + chunk.to_bytes(2, "big")


def seal(key: bytes, payload: bytes) -> bytes:
    return zlib.crc32(payload, zlib.crc32(key)).to_bytes(4, "big") + payload


def unseal(key: bytes, value: bytes, what: str) -> bytes:
    if len(value) < 4 or zlib.crc32(value[4:], zlib.crc32(key)) != int.from_bytes(value[:4], "big"):
        raise StoreDamage(f"{what} is corrupt: checksum mismatch (the stored value was damaged)")
    return value[4:]


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tx_location_value(height: int, position: int) -> bytes:
    return uvarint(height) + uvarint(position)


def parse_tx_location(value: bytes) -> tuple[int, int]:
    """Inverse of ``tx_location_value``; ValueError if malformed."""
    nums: list[int] = []
    n = shift = 0
    for b in value:
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            nums.append(n)
            n = shift = 0
        elif shift > 63:
            raise ValueError("varint too long")
    if shift or len(nums) != 2:
        raise ValueError("expected two varints")
    return nums[0], nums[1]


_KEY_KINDS = {
    P_HEADER: "the header",
    P_BLOCK: "the transactions",
    P_CHUNK: "the transactions",
    P_TX_TREE: "the tx-tree nodes",
    P_CERT: "the certificate",
    P_APP: "the app metadata",
    P_STALE: "the stale-node journal",
    P_NODE: "a state-tree node",
}
_INDEXES = {P_BLOCK_ID: "block-id", P_TX: "tx", P_ATTESTED: "attested-commitment"}


def describe_key(key: bytes | None) -> str:
    """Where a store key is, for people: "the header of height 12", "the tx index"."""
    if key is None:
        return "the first entry"
    prefix = key[:1]
    if prefix in _KEY_KINDS and len(key) >= 9:
        of = "version" if prefix in (P_NODE, P_STALE) else "height"
        return f"{_KEY_KINDS[prefix]} of {of} {int.from_bytes(key[1:9], 'big')}"
    if prefix in _INDEXES:
        return f"the {_INDEXES[prefix]} index"
    if prefix == P_META:
        return "the store's metadata"
    return f"key {key[:12].hex()}"


def leveldb_reason(exc: BaseException) -> str:
    """plyvel's message as text (it carries LevelDB's status as bytes)."""
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)

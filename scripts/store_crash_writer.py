"""A realistic chain builder for store tests, and the writer process of the crash test.

``ChainBuilder`` extends the chain held in a ``ledger.store.Store`` with real blocks:
ATTEST transactions signed by issuer keys, a state-tree update at version = height
whose root is the header's ``state_root``, the RFC 6962 history root over earlier block
ids, and a commit certificate signed by a quorum of validator keys. It keeps nothing
the store does not: it resumes from any committed height (the history frontier is the
app metadata blob), which is what a restarted node does.

Run as a script (``python scripts/store_crash_writer.py DB_DIR SEED``) it opens or
creates the store, prints ``ready <height>``, then commits blocks as fast as it can,
printing ``committed <height>`` after each ``commit`` returns, pruning state versions
older than ``RETAIN`` every few blocks, until it is killed.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger import merkle
from ledger.codec import Domain, as_hash, as_int, as_list, decode, encode, fields
from ledger.crypto import KeyPair
from ledger.records import AttestationRecord, attestation_key
from ledger.smt import SparseMerkleTree, UpdateResult
from ledger.store import Store
from ledger.types import (
    ZERO_HASH,
    Attest,
    Block,
    BlockHeader,
    CommitCertificate,
    Transaction,
    Validator,
    ValidatorSet,
    commit_vote_body,
)

CHAIN_ID = "dvp-store-test"
GENESIS_HASH = hashlib.sha256(b"dvp-store-test genesis").digest()
GENESIS_TIME_MS = 1_700_000_000_000
RETAIN = 8  # state versions the writer keeps readable below its tip
PRUNE_EVERY = 4

VALIDATOR_KEYS = [KeyPair.from_seed(bytes([0x10 + i]) * 32) for i in range(4)]
VALIDATORS = ValidatorSet.of(
    [Validator(f"val-{i}", k.public_key) for i, k in enumerate(VALIDATOR_KEYS)]
)
ISSUER_KEYS = [KeyPair.from_seed(bytes([0x40 + i]) * 32) for i in range(3)]
ISSUER_IDS = [f"issuer-{i}" for i in range(len(ISSUER_KEYS))]


def open_store(path: Path, create: bool = True) -> Store:
    return Store.open(path, chain_id=CHAIN_ID, genesis_hash=GENESIS_HASH, create=create)


def encode_app_meta(time_ms: int, history: merkle.MerkleAccumulator) -> bytes:
    return encode([time_ms, history.size, history.frontier])


def decode_app_meta(blob: bytes) -> tuple[int, merkle.MerkleAccumulator]:
    f = fields(decode(blob), 3, "test app meta")
    frontier = [as_hash(h, "frontier") for h in as_list(f[2], "frontier", 64)]
    return as_int(f[0], "time_ms"), merkle.MerkleAccumulator(as_int(f[1], "size"), frontier)


def sign_certificate(block: Block, view: int = 0, signers: int = 3) -> CommitCertificate:
    body = commit_vote_body(block.header.chain_id, block.height, view, block.block_id)
    sigs = tuple((i, VALIDATOR_KEYS[i].sign(Domain.COMMIT, body)) for i in range(signers))
    return CommitCertificate(block.height, view, block.block_id, sigs)


class ChainBuilder:
    """Builds and commits the next block of the chain in ``store`` (see module doc)."""

    def __init__(self, store: Store, seed: int = 0) -> None:
        self.store = store
        self.tree = SparseMerkleTree(store)
        self.rng = random.Random(seed)

    def make_txs(self, height: int, count: int) -> list[Transaction]:
        txs = []
        for i in range(count):
            k = self.rng.randrange(len(ISSUER_KEYS))
            commitment = hashlib.sha256(b"doc %d %d %d" % (height, i, self.rng.getrandbits(64)))
            payload = Attest("credit-report", commitment.digest(), GENESIS_TIME_MS + height)
            tx = Transaction(
                CHAIN_ID, ISSUER_KEYS[k].public_key, height * 100_000 + i, height + 1000, payload
            )
            txs.append(tx.signed(ISSUER_KEYS[k]))
        return txs

    def build(self, n_txs: int) -> tuple[Block, CommitCertificate | None, UpdateResult, bytes]:
        """The next block (not committed): (block, certificate, state update, app meta)."""
        store = self.store
        height = store.height + 1
        txs = self.make_txs(height, n_txs) if height else []
        changes: dict[bytes, bytes | None] = {}
        for pos, tx in enumerate(txs):
            assert isinstance(tx.payload, Attest)
            issuer = ISSUER_IDS[[k.public_key for k in ISSUER_KEYS].index(tx.sender)]
            record = AttestationRecord(issuer, tx.sender, tx.payload.doc_type, 0, height, pos)
            changes[attestation_key(tx.payload.commitment)] = record.encode()
        # A counter every block rewrites and a key that comes and goes: updates and
        # deletions, not only inserts, so the stale journal sees every kind of change.
        changes[hashlib.sha256(b"counter").digest()] = height.to_bytes(8, "big")
        changes[hashlib.sha256(b"blinker").digest()] = b"on" if height % 2 else None
        prev_id: bytes | None = ZERO_HASH
        if height == 0:
            update = self.tree.update(None, 0, changes)
            time_ms = GENESIS_TIME_MS
            history = merkle.MerkleAccumulator()
        else:
            update = self.tree.update(height - 1, height, changes)
            prev_id = store.get_block_id(height - 1)
            meta = store.app_meta(height - 1)
            assert meta is not None
            parent_time, history = decode_app_meta(meta)
            time_ms = parent_time + 1 + self.rng.randrange(1000)
        assert prev_id is not None
        tx_ids = [tx.tx_id for tx in txs]
        header = BlockHeader(
            1,
            CHAIN_ID,
            height,
            prev_id,
            time_ms,
            VALIDATOR_KEYS[height % 4].public_key if height else b"",
            len(txs),
            merkle.root(tx_ids),
            update.root,
            VALIDATORS.hash,
            VALIDATORS.hash,
            history.root(),
        )
        block = Block(header, tuple(txs))
        history.append(merkle.leaf_hash(block.block_id))
        cert = sign_certificate(block) if height else None
        return block, cert, update, encode_app_meta(time_ms, history)

    def commit_next(self, n_txs: int) -> Block:
        block, cert, update, meta = self.build(n_txs)
        self.store.commit(block, cert, update.new_nodes, update.stale, meta)
        return block


def main(argv: list[str]) -> int:
    path, seed = Path(argv[1]), int(argv[2])
    store = open_store(path)
    builder = ChainBuilder(store, seed)
    print(f"ready {store.height}", flush=True)
    if store.height < 0:
        builder.commit_next(0)
        print("committed 0", flush=True)
    while True:
        block = builder.commit_next(builder.rng.randrange(1, 20))
        print(f"committed {block.height}", flush=True)
        if block.height % PRUNE_EVERY == 0 and block.height > RETAIN:
            store.prune_state(block.height - RETAIN)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

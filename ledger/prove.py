"""Building proof bundles from a ledger (the serving side of ``ledger.verify``).

``Prover(ledger)`` keeps two in-memory indexes the bundles need: an RFC 6962 tree of all
committed block ids (history proofs in O(log n)) and the heights where the validator
set changes. Both are built on first use from the store and extended as blocks commit
(``refresh`` is cheap when nothing changed).
"""

from __future__ import annotations

from collections import OrderedDict

from ledger import merkle
from ledger.bundle import CertifiedHeader, IncludedTx, ProofBundle, ValsetChange
from ledger.chain import Ledger
from ledger.records import AttestationRecord, attestation_key
from ledger.state import decode_app_meta


class Prover:
    def __init__(self, ledger: Ledger, tx_tree_cache: int = 32) -> None:
        self.ledger = ledger
        self.history = merkle.MerkleTree()
        self.changes: list[int] = []  # heights whose header announces a new validator set
        self._tx_trees: OrderedDict[int, merkle.MerkleTree] = OrderedDict()
        self._cap = tx_tree_cache

    def refresh(self) -> int:
        """Index blocks committed since the last call; returns the head height."""
        store = self.ledger.store
        top = store.height
        for h in range(self.history.size, top + 1):
            header = store.get_header(h)
            assert header is not None, f"committed header {h} missing"
            self.history.append(merkle.leaf_hash(header.block_id))
            if header.next_validator_set_hash != header.validator_set_hash:
                self.changes.append(h)
        return top

    def _tx_tree(self, height: int) -> merkle.MerkleTree:
        tree = self._tx_trees.get(height)
        if tree is None:
            block = self.ledger.store.get_block(height)
            assert block is not None
            tree = merkle.MerkleTree.from_leaves(block.tx_ids)
            self._tx_trees[height] = tree
            while len(self._tx_trees) > self._cap:
                self._tx_trees.popitem(last=False)
        return tree

    def included(self, height: int, position: int, head: int) -> IncludedTx:
        store = self.ledger.store
        block = store.get_block(height)
        assert block is not None and position < len(block.txs)
        history = self.history.inclusion_proof(height, head) if height < head else []
        return IncludedTx(block.txs[position].encode(), block.header.encoded, position,
                          tuple(self._tx_tree(height).inclusion_proof(position)),
                          tuple(history))

    def bundle(self, commitment: bytes, height: int | None = None) -> ProofBundle:
        """The proof bundle for ``commitment`` as of ``height`` (default: the head)."""
        head = self.refresh() if height is None else height
        self.refresh()
        store = self.ledger.store
        header_bytes = store.get_header_bytes(head)
        cert_bytes = store.get_certificate_bytes(head)
        if header_bytes is None or cert_bytes is None:
            raise KeyError(f"no certified header at height {head}")
        changes = []
        for h in self.changes:
            if h >= head:
                break
            meta = store.app_meta(h)
            assert meta is not None
            nxt = decode_app_meta(meta).chain.validators_at(h + 1)
            cb = store.get_certificate_bytes(h)
            hb = store.get_header_bytes(h)
            assert cb is not None and hb is not None, f"validator change at {h} uncertified"
            changes.append(ValsetChange(hb, cb, nxt.encode()))
        record, proof = self.ledger.tree.get_with_proof(attestation_key(commitment), head)
        attest = revoke = None
        if record is not None:
            rec = AttestationRecord.decode(record)
            attest = self.included(rec.height, rec.position, head)
            if rec.revoked_height:
                block = store.get_block(rec.revoked_height)
                if block is not None and rec.revoke_position < len(block.txs):
                    revoke = self.included(rec.revoked_height, rec.revoke_position, head)
        return ProofBundle(self.ledger.chain_id, commitment,
                           CertifiedHeader(header_bytes, cert_bytes), tuple(changes), record,
                           proof.to_json(), attest, revoke)

"""Building proof bundles from a ledger (the serving side of ``ledger.verify``).

``Prover(ledger)`` keeps two in-memory indexes the bundles need: an RFC 6962 tree of all
committed block ids (history proofs in O(log n)) and the heights where the validator
set changes. Both are built on first use from the store and extended as blocks commit
(``refresh`` is cheap when nothing changed).

Look-ups are the bank-facing hot path (``getAttestationProof``), so what is per height
and shared by every bundle that touches that height is cached: the newest heads with
their certificates; the stored chunks of committed blocks' transactions
(ledger/tx_tree.py) with their tx-tree proofs (an LRU bounded by bytes,
``block_cache_bytes``); the history proofs against the current head; and each
validator-set change entry (immutable once committed). A proof reads one chunk of 16
transactions and the block's tx-tree node record, never the whole body (recomputing a
2,000-transaction block's tree cost ~13 ms a look-up), and is checked against the
header's ``tx_root`` when read. A chunk's transactions are byte slices of the stored
canonical encoding, which is what ``Transaction.encode()`` returns for them, so bundles
are byte-identical to those built from decoded blocks.

A bundle carries the ATTEST (and REVOKE) transaction with its inclusion proof, read from
its block's body. On a node that pruned that body (``[ledger] retain_blocks``) there is
no such transaction to carry, so ``bundle`` raises ``ledger.errors.BodyPruned`` (RPC
error -32006, docs/RPC.md) rather than answer a bundle without it; an archive node
serves every bundle (docs/PROOFS.md §13).

A document bound to a data subject is served with the recorded access the caller names
(``bundle(commitment, access=tx_id)``): the ACCESS transaction and the grant it was made
under — the grant's record proven at the head and the subject's signed CONSENT_GRANT —
go in the bundle's ``consent`` part (docs/CONSENT.md §5). An ``access`` that is not a
committed ACCESS to this commitment, or a document bound to no subject, is
``ConsentProofError``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ledger import merkle, tx_tree
from ledger.bundle import (
    CertifiedHeader,
    ConsentProof,
    IncludedTx,
    ProofBundle,
    ProposalProof,
    ValsetChange,
)
from ledger.chain import Ledger
from ledger.consent_records import GrantRecord, grant_key
from ledger.errors import DecodeError, StoreError
from ledger.records import AttestationRecord, attestation_key, proposal_key
from ledger.state import decode_app_meta
from ledger.transaction import Access
from ledger.types import BlockHeader, GovPropose, GovVote, Transaction

DEFAULT_BLOCK_CACHE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One stored chunk of a committed block's transactions, with what its proofs need."""

    header: bytes  # the block's canonical header
    txs: list[bytes]  # the chunk's transactions, as stored
    levels: tuple[list[bytes], ...]  # the chunk's own tx tree, leaf hashes first
    above: tuple[bytes, ...]  # the proof siblings above the chunk's root

    def proof(self, index: int) -> tuple[bytes, ...]:
        """The tx-tree inclusion proof of the chunk's transaction ``index``."""
        return (*tx_tree.level_proof(self.levels, index), *self.above)

    @property
    def cost(self) -> int:
        """Approximate bytes held: the transactions and ~70 B per hash."""
        hashes = sum(map(len, self.levels)) + len(self.above)
        return len(self.header) + sum(map(len, self.txs)) + 70 * hashes


class ConsentProofError(ValueError):
    """``access`` cannot prove a use of this document: not a committed ACCESS to it, or
    the document is bound to no subject. The message says which, for the caller."""


class Prover:
    def __init__(self, ledger: Ledger, block_cache_bytes: int = DEFAULT_BLOCK_CACHE_BYTES) -> None:
        self.ledger = ledger
        self.history = merkle.MerkleTree()
        self.changes: list[int] = []  # heights whose header announces a new validator set
        self._chunks: OrderedDict[tuple[int, int], _Chunk] = OrderedDict()
        self._chunks_bytes = 0
        self._cap = block_cache_bytes
        self._valset_changes: dict[int, ValsetChange] = {}  # committed: never changes
        self._history_head = -1  # the head the cached history proofs are against
        self._certified: dict[int, CertifiedHeader] = {}  # committed: never changes
        self._history_proofs: dict[int, tuple[bytes, ...]] = {}

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

    def drop_caches(self) -> None:
        """Forget the cached chunks, history proofs and state-tree nodes, so the next
        bundle costs what one for data not served lately does (the common case in a
        large store; ``scripts/bench_scale.py`` measures both)."""
        self._chunks.clear()
        self._chunks_bytes = 0
        self._history_proofs.clear()
        self.ledger.tree.clear_cache()

    def _chunk(self, height: int, position: int) -> _Chunk:
        """The chunk of block ``height`` holding transaction ``position`` (LRU), read
        from the store and checked against the header's ``tx_root`` (the same check a
        verifier makes). ``BodyPruned`` if the store pruned the body, even while a copy
        is cached here: a node answers the same for a height whatever its cache holds."""
        store = self.ledger.store
        store.check_body_kept(height)
        key = (height, position >> tx_tree.CHUNK_LEVEL)
        chunk = self._chunks.get(key)
        if chunk is not None:
            self._chunks.move_to_end(key)
            return chunk
        header_bytes = store.get_header_bytes(height)
        if header_bytes is None:
            raise KeyError(f"no committed block at height {height}")
        try:
            header = BlockHeader.decode(header_bytes)
        except DecodeError as exc:
            raise StoreError(f"the header at height {height} does not decode ({exc})") from None
        n, c = header.tx_count, key[1]
        if not 0 <= position < n:
            raise KeyError(f"block {height} has no transaction {position}")
        try:
            txs = tx_tree.split_chunk(store.get_tx_chunk(height, c))
        except ValueError as exc:
            raise StoreError(f"chunk {c} of block {height} does not split ({exc})") from None
        levels = tx_tree.levels(tx_tree.chunk_leaves(txs))
        above: list[bytes] = []
        if n > tx_tree.CHUNK_TXS:
            upper = store.get_tx_tree_nodes(height)
            if not tx_tree.upper_size_ok(upper, n):
                raise StoreError(f"block {height}: the tx-tree node record has the wrong size")
            recorded, above = tx_tree.upper_proof(upper, n, c)
            if recorded != levels[-1][0]:
                raise StoreError(f"block {height}: chunk {c} does not match its tx-tree node")
        chunk = _Chunk(header_bytes, txs, levels, tuple(above))
        index = position & (tx_tree.CHUNK_TXS - 1)
        root = tx_tree.root_from_path(levels[0][index], position, n, list(chunk.proof(index)))
        if root != header.tx_root:
            raise StoreError(f"block at height {height}: transactions do not match tx_root")
        self._chunks[key] = chunk
        self._chunks_bytes += chunk.cost
        while self._chunks_bytes > self._cap and len(self._chunks) > 1:
            self._chunks_bytes -= self._chunks.popitem(last=False)[1].cost
        return chunk

    def included(self, height: int, position: int, head: int) -> IncludedTx:
        chunk = self._chunk(height, position)
        if head != self._history_head:  # proofs against an older head are never reused
            self._history_proofs.clear()
            self._history_head = head
        history = self._history_proofs.get(height)
        if history is None:
            history = self._history_proofs[height] = tuple(
                self.history.inclusion_proof(height, head) if height < head else ()
            )
        index = position & (tx_tree.CHUNK_TXS - 1)
        return IncludedTx(chunk.txs[index], chunk.header, position, chunk.proof(index), history)

    def valset_change(self, height: int) -> ValsetChange:
        change = self._valset_changes.get(height)
        if change is None:
            store = self.ledger.store
            meta = store.app_meta(height)
            assert meta is not None
            nxt = decode_app_meta(meta).chain.validators_at(height + 1)
            cb = store.get_certificate_bytes(height)
            hb = store.get_header_bytes(height)
            assert cb is not None and hb is not None, f"validator change at {height} uncertified"
            change = self._valset_changes[height] = ValsetChange(hb, cb, nxt.encode())
        return change

    def bundle(
        self, commitment: bytes, height: int | None = None, access: bytes | None = None
    ) -> ProofBundle:
        """The proof bundle for ``commitment`` as of ``height`` (default: the head);
        with ``access`` (the id of a committed ACCESS to it) its ``consent`` part."""
        head = self.refresh() if height is None else height
        self.refresh()
        store = self.ledger.store
        certified = self._certified.get(head)
        if certified is None:
            header_bytes = store.get_header_bytes(head)
            cert_bytes = store.get_certificate_bytes(head)
            if header_bytes is None or cert_bytes is None:
                raise KeyError(f"no certified header at height {head}")
            certified = CertifiedHeader(header_bytes, cert_bytes)
            if len(self._certified) >= 4:  # heads only move forward: keep the newest few
                self._certified.pop(min(self._certified))
            self._certified[head] = certified
        changes = []
        for h in self.changes:
            if h >= head:
                break
            changes.append(self.valset_change(h))
        record, proof = self.ledger.tree.get_with_proof(attestation_key(commitment), head)
        attest = revoke = proposal = consent = None
        if record is not None:
            rec = AttestationRecord.decode(record)
            attest = self.included(rec.height, rec.position, head)
            if rec.revoked_height:
                revoke = self.included(rec.revoked_height, rec.revoke_position, head)
                proposal = self._proposal(revoke.tx, head)
            if access is not None:
                if not rec.subject:
                    raise ConsentProofError(
                        "this document is bound to no data subject: it needs no access"
                    )
                consent = self._consent(commitment, access, head)
        elif access is not None:
            raise ConsentProofError("no attestation of this commitment: it needs no access")
        return ProofBundle(
            self.ledger.chain_id,
            commitment,
            certified,
            tuple(changes),
            record,
            proof.to_json(),
            attest,
            revoke,
            proposal,
            consent,
        )

    def _consent(self, commitment: bytes, access_id: bytes, head: int) -> ConsentProof:
        """The ``consent`` part for the ACCESS ``access_id``, proven at ``head``."""
        short = access_id.hex()[:16]
        loc = self.ledger.store.tx_location(access_id)
        if loc is None or loc[0] > head:
            raise ConsentProofError(f"no committed transaction {short}")
        access = self.included(*loc, head)
        tx = Transaction.decode(access.tx)
        if tx.tx_id != access_id:  # the index is keyed by an id prefix
            raise ConsentProofError(f"no committed transaction {short}")
        p = tx.payload
        if not isinstance(p, Access):
            raise ConsentProofError(f"transaction {short} is not an ACCESS")
        if p.commitment != commitment:
            raise ConsentProofError(f"ACCESS {short} is to another document")
        raw, proof = self.ledger.tree.get_with_proof(grant_key(p.grant_id), head)
        if raw is None:
            raise StoreError(
                f"ACCESS {short} was recorded under grant {p.grant_id.hex()} that has no record"
            )
        grant = GrantRecord.decode(raw)
        if (loc[0], loc[1]) not in {(a.height, a.position) for a in grant.accesses}:
            raise StoreError(f"ACCESS {short} is not listed in its grant's record")
        return ConsentProof(
            p.grant_id,
            raw,
            proof.to_json(),
            self.included(grant.height, grant.position, head),
            access,
        )

    def _proposal(self, revoking_tx: bytes, head: int) -> ProposalProof | None:
        """The proposal a governance revocation carried out, proven at ``head``; None
        when the revoking transaction is the issuer's REVOKE."""
        tx = Transaction.decode(revoking_tx)
        if isinstance(tx.payload, GovVote):
            pid = tx.payload.proposal_id
        elif isinstance(tx.payload, GovPropose):
            pid = tx.tx_id  # quorum reached by the proposer's own yes vote
        else:
            return None
        record, proof = self.ledger.tree.get_with_proof(proposal_key(pid), head)
        if record is None:
            raise StoreError(f"proposal {pid.hex()} decided a revocation but has no record")
        return ProposalProof(pid, record, proof.to_json())

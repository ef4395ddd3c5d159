"""Building proof bundles from a ledger (the serving side of ``ledger.verify``).

``Prover(ledger)`` keeps two in-memory indexes the bundles need: an RFC 6962 tree of all
committed block ids (history proofs in O(log n)) and the heights where the validator
set changes. Both are built on first use from the store and extended as blocks commit
(``refresh`` is cheap when nothing changed).

Look-ups are the bank-facing hot path (``getAttestationProof``), so what is per height
and shared by every bundle that touches that height is cached: the newest heads with
their certificates; a committed block's stored bytes with each transaction's offset in
them and its tx tree (an LRU bounded by bytes, ``block_cache_bytes``: decoding a whole
2,000-transaction block to serve one transaction cost ~30 ms); the history proofs
against the current head; and each validator-set change entry (immutable once
committed). A cached block's transactions are byte slices of the stored canonical
encoding, which is what ``Transaction.encode()`` returns for them, and its tx tree is
checked against the header's ``tx_root`` when built, so bundles are byte-identical to
those built from decoded blocks.

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

from array import array
from collections import OrderedDict
from dataclasses import dataclass

from ledger import merkle
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
from ledger.types import GovPropose, GovVote, Transaction, split_block, tx_id_of

DEFAULT_BLOCK_CACHE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _StoredBlock:
    """A committed block as stored: ``raw`` = ``0x92 || header || txs array``."""

    raw: bytes
    header_end: int  # raw[1:header_end] is the canonical header
    offsets: array  # type: ignore[type-arg]  # tx i is raw[offsets[i]:offsets[i + 1]]
    levels: tuple[list[bytes], ...]  # the tx tree level by level, leaf hashes first

    @property
    def header(self) -> bytes:
        return self.raw[1 : self.header_end]

    def tx(self, position: int) -> bytes:
        return self.raw[self.offsets[position] : self.offsets[position + 1]]

    @property
    def size(self) -> int:
        return len(self.offsets) - 1

    @property
    def cost(self) -> int:
        """Approximate bytes held: the block, the offsets, ~70 B per tree hash."""
        return len(self.raw) + 8 * len(self.offsets) + 70 * sum(map(len, self.levels))


class ConsentProofError(ValueError):
    """``access`` cannot prove a use of this document: not a committed ACCESS to it, or
    the document is bound to no subject. The message says which, for the caller."""


def _levels(leaf_hashes: list[bytes]) -> tuple[list[bytes], ...]:
    """A static RFC 6962 tree level by level: adjacent pairs are hashed and an unpaired
    last node moves up unchanged (the same tree as RFC 9162's split recursion,
    docs/proofs-merkle.md §2). The last level is the root (none for an empty tree)."""
    levels = [leaf_hashes]
    node = merkle.node_hash
    while len(levels[-1]) > 1:
        below = levels[-1]
        up = [node(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            up.append(below[-1])
        levels.append(up)
    return tuple(levels)


def _level_proof(levels: tuple[list[bytes], ...], index: int) -> list[bytes]:
    """RFC 9162 inclusion proof of leaf ``index`` from ``_levels``: at each level the
    sibling, if there is one (a carried-up last node has none)."""
    proof = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index >>= 1
    return proof


class Prover:
    def __init__(self, ledger: Ledger, block_cache_bytes: int = DEFAULT_BLOCK_CACHE_BYTES) -> None:
        self.ledger = ledger
        self.history = merkle.MerkleTree()
        self.changes: list[int] = []  # heights whose header announces a new validator set
        self._blocks: OrderedDict[int, _StoredBlock] = OrderedDict()
        self._blocks_bytes = 0
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

    def _block(self, height: int) -> _StoredBlock:
        """Block ``height`` as stored, split into transactions, with its tx tree (LRU).
        ``BodyPruned`` if the store pruned its body, even while a copy is cached here:
        a node answers the same for a height whatever its cache holds."""
        self.ledger.store.check_body_kept(height)
        block = self._blocks.get(height)
        if block is not None:
            self._blocks.move_to_end(height)
            return block
        raw = self.ledger.store.get_block_bytes(height)
        header = self.ledger.store.get_header(height)
        if raw is None or header is None:
            raise KeyError(f"no committed block at height {height}")
        try:
            header_end, offsets = split_block(raw)
        except DecodeError as exc:
            raise StoreError(f"block at height {height} does not split ({exc})") from exc
        leaf = merkle.leaf_hash
        levels = _levels(
            [leaf(tx_id_of(raw[offsets[i] : offsets[i + 1]])) for i in range(len(offsets) - 1)]
        )
        root = levels[-1][0] if levels[-1] else merkle.root([])
        if root != header.tx_root:  # the same check a verifier makes
            raise StoreError(f"block at height {height}: transactions do not match tx_root")
        block = _StoredBlock(raw, header_end, offsets, levels)
        self._blocks[height] = block
        self._blocks_bytes += block.cost
        while self._blocks_bytes > self._cap and len(self._blocks) > 1:
            self._blocks_bytes -= self._blocks.popitem(last=False)[1].cost
        return block

    def included(self, height: int, position: int, head: int) -> IncludedTx:
        block = self._block(height)
        assert position < block.size
        if head != self._history_head:  # proofs against an older head are never reused
            self._history_proofs.clear()
            self._history_head = head
        history = self._history_proofs.get(height)
        if history is None:
            history = self._history_proofs[height] = tuple(
                self.history.inclusion_proof(height, head) if height < head else ()
            )
        return IncludedTx(
            block.tx(position),
            block.header,
            position,
            tuple(_level_proof(block.levels, position)),
            history,
        )

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

"""The mempool: transactions this node holds until a block commits them.

Rules:
- Deduplicated by tx id; bounded (``max_txs`` and ``max_bytes``): when full, ``add``
  answers BUSY instead of growing, which the RPC turns into a "busy, retry" error.
- Each signature is verified once per node: ``verified(tx_id)`` tells block execution
  it may skip the check (the id covers the signature bytes, so a different signature
  is a different id).
- ``add`` pre-checks against the newest state (member key, issuer rights, already
  attested, expiry; governance: validator member, proposal open, not voted yet) so
  obviously doomed transactions are refused at the door; the block builder still
  applies the full rules.
- Transactions are proposed in arrival order (FIFO); committed ones are removed by id;
  expired ones are dropped when the chain passes their ``expiry_height``.
Pure data structure: no I/O, no clock; owned by one task.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ledger.errors import RuleError
from ledger.state import LedgerState
from ledger.types import Attest, Block, GovPropose, GovVote, Revoke, Role, Transaction


class AddStatus(StrEnum):
    ADDED = "added"
    DUPLICATE = "duplicate"
    BUSY = "busy"
    REJECTED = "rejected"


@dataclass(frozen=True)
class AddResult:
    status: AddStatus
    code: str = ""
    message: str = ""


# Transactions the gossip and RPC admission loops admit (decode + signature check, ~80 us
# each) between checkpoints. 64 let consensus messages in sooner but also let the block
# builder see transactions in smaller lots: in a 60-s bench_node run at 2,000 tx/s it
# cut 417 blocks instead of ~330-349, and each height costs every node CPU (p99 1.59 s
# vs 0.86-1.09 s).
ADMIT_CHUNK = 256
# Re-checked against the new head after every commit (``committed``): the oldest this
# many. Gossiped copies are admitted without state look-ups, so a backup may hold e.g.
# a second attestation of a document; its replica would accuse every primary of
# censoring it, one view change after another.
RECHECK_MAX = 256


ADDED = AddResult(AddStatus.ADDED)
DUPLICATE = AddResult(AddStatus.DUPLICATE)
FULL = AddResult(AddStatus.BUSY, "busy", "the mempool is full; retry later")
#: A client's transaction refused because the node already holds as many pending as
#: clients may queue (``Node.client_limit``); the mempool itself may still have room.
CLIENT_BUSY = AddResult(
    AddStatus.BUSY,
    "busy",
    "this node has as many transactions pending as it queues for clients; retry later",
)


class Mempool:
    """Pending transactions in arrival order, with a verified-signature cache."""

    def __init__(
        self,
        chain_id: str,
        max_txs: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        verified_cache: int = 200_000,
    ) -> None:
        self.chain_id = chain_id
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self._txs: OrderedDict[bytes, Transaction] = OrderedDict()
        self._bytes = 0
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._verified_cap = verified_cache
        # No transaction expires below this height: drop_expired can skip its scan
        # (it ran over the whole pool after every block). May be low, never high.
        self._min_expiry = 0
        self.stats = {
            "added": 0,
            "duplicate": 0,
            "busy": 0,
            "rejected": 0,
            "expired": 0,
            "committed": 0,
        }

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self._txs

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, tx_id: bytes) -> Transaction | None:
        return self._txs.get(tx_id)

    def verified(self, tx_id: bytes) -> bool:
        """True if this node already checked the signature of ``tx_id``."""
        return tx_id in self._verified

    def mark_verified(self, tx_ids: Iterable[bytes]) -> None:
        """Remember that the signatures of ``tx_ids`` were checked (e.g. in a valid block)."""
        for tx_id in tx_ids:
            self._mark_verified(tx_id)

    def _mark_verified(self, tx_id: bytes) -> None:
        self._verified[tx_id] = None
        if len(self._verified) > self._verified_cap:
            self._verified.popitem(last=False)

    def add(
        self,
        tx: Transaction,
        state: LedgerState,
        *,
        check_state: bool = True,
        from_peer: bool = False,
    ) -> AddResult:
        """Admit ``tx`` if it can plausibly commit on top of ``state``.

        ``from_peer`` (or ``check_state=False``): a transaction gossiped by a peer, which
        pre-checked it at its door; the state-tree look-ups are skipped, signatures and
        rights are still checked.
        """
        if from_peer:
            check_state = False
        tx_id = tx.tx_id
        if tx_id in self._txs:
            self.stats["duplicate"] += 1
            return DUPLICATE
        if len(self._txs) >= self.max_txs or self._bytes + len(tx.encoded) > self.max_bytes:
            self.stats["busy"] += 1
            return FULL
        try:
            self._precheck(tx, state, check_state)
        except RuleError as err:
            self.stats["rejected"] += 1
            return AddResult(AddStatus.REJECTED, err.code, err.message)
        self._txs[tx_id] = tx
        self._bytes += len(tx.encoded)
        self._min_expiry = min(self._min_expiry, tx.expiry_height)
        self.stats["added"] += 1
        return ADDED

    def _precheck(self, tx: Transaction, state: LedgerState, check_state: bool = True) -> None:
        if tx.chain_id != self.chain_id:
            raise RuleError("wrong_chain", f"transaction is for chain {tx.chain_id!r}")
        next_height = state.height + 1
        if tx.expiry_height < next_height:
            raise RuleError("expired", f"expiry_height {tx.expiry_height} has passed")
        ttl = state.chain.params.tx_ttl_heights
        if tx.expiry_height > next_height + ttl:
            raise RuleError("expiry_too_far", f"expiry_height may be at most {ttl} blocks ahead")
        if state.tx_seen(tx.tx_id):
            raise RuleError("replay", "transaction already committed")
        member = state.member_of_key(tx.sender)
        if member is None:
            raise RuleError("unknown_sender", "the signing key is not a current member key")
        if not self.verified(tx.tx_id):
            if not tx.signature_ok():
                raise RuleError("bad_signature", "transaction signature does not verify")
            self._mark_verified(tx.tx_id)
        p = tx.payload
        if isinstance(p, Attest):
            if not member.has_role(Role.ISSUER):
                raise RuleError("not_issuer", f"{member.member_id} does not hold the issuer role")
            if p.doc_type not in member.doc_types:
                raise RuleError(
                    "doc_type_not_granted",
                    f"{member.member_id} is not admitted to issue {p.doc_type!r}",
                )
            if check_state and state.attestation(p.commitment) is not None:
                raise RuleError("already_attested", "this commitment is already attested")
        elif isinstance(p, Revoke) and check_state:
            rec = state.attestation(p.commitment)
            if rec is None:
                raise RuleError("not_found", "no attestation of this commitment")
            if rec.issuer != member.member_id:
                raise RuleError("not_original_issuer", "only the original issuer may revoke")
        elif isinstance(p, GovPropose | GovVote):
            # Governance is rare, so these checks cost nothing that matters; without them
            # a doomed vote waits in the pool and its sender for a commit that never comes.
            voters = state.validators_at(next_height)
            if member.member_id not in {v.member_id for v in voters.validators}:
                raise RuleError("not_validator", "only validator members may propose or vote")
            if isinstance(p, GovVote) and check_state:
                prop = state.open_proposals.get(p.proposal_id)
                if prop is None:
                    raise RuleError("no_open_proposal", "no open proposal with this id")
                if member.member_id in prop.yes or member.member_id in prop.no:
                    raise RuleError("already_voted", f"{member.member_id} already voted")

    def take(
        self, max_txs: int, max_bytes: int, exclude: set[bytes] | None = None
    ) -> list[Transaction]:
        """Up to ``max_txs``/``max_bytes`` of the oldest transactions (not removed)."""
        out: list[Transaction] = []
        size = 0
        for tx_id, tx in self._txs.items():
            if exclude and tx_id in exclude:
                continue
            n = len(tx.encoded)
            if len(out) >= max_txs or size + n > max_bytes:
                break
            out.append(tx)
            size += n
        return out

    def tx_ids(self) -> list[bytes]:
        return list(self._txs)

    def remove(self, tx_ids: Iterable[bytes], *, committed: bool = True) -> int:
        removed = 0
        for tx_id in tx_ids:
            tx = self._txs.pop(tx_id, None)
            if tx is not None:
                self._bytes -= len(tx.encoded)
                removed += 1
        if committed:
            self.stats["committed"] += removed
        return removed

    def recheck(self, tx_ids: Iterable[bytes], state: LedgerState) -> list[bytes]:
        """Drop those of ``tx_ids`` that can no longer commit on top of ``state`` (e.g. a
        second attestation of a document that a committed block attested, which a
        gossiped copy was admitted without checking); returns their ids."""
        gone = []
        for tx_id in tx_ids:
            tx = self._txs.get(tx_id)
            if tx is None:
                continue
            try:
                self._precheck(tx, state, True)
            except RuleError:
                gone.append(tx_id)
        self.remove(gone, committed=False)
        return gone

    def committed(self, block: Block, head: LedgerState) -> list[bytes]:
        """After a commit (``head`` is the new state): remove ``block``'s transactions,
        drop expired ones and re-check the oldest ``RECHECK_MAX`` against ``head``;
        the ids that left without committing."""
        self.remove(block.tx_ids)
        gone = self.drop_expired(head.height + 1)
        gone += self.recheck(list(itertools.islice(self._txs, RECHECK_MAX)), head)
        return gone

    def drop_expired(self, next_height: int) -> list[bytes]:
        """Drop transactions that can no longer commit at ``next_height`` or later."""
        if next_height <= self._min_expiry:
            return []
        gone = [tid for tid, tx in self._txs.items() if tx.expiry_height < next_height]
        self.remove(gone, committed=False)
        self._min_expiry = min((tx.expiry_height for tx in self._txs.values()), default=1 << 62)
        self.stats["expired"] += len(gone)
        return gone

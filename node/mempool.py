"""The mempool: transactions this node holds until a block commits them.

Rules:
- The mempool never holds a transaction the ledger would refuse (checked at the end of
  every call, against the committed head). ``add`` runs the ledger's rule book
  (``ledger.rules.apply_tx``) against the committed head *plus the effects of every
  transaction already pending* (an overlay, CometBFT's CheckTx over its pending set): a
  second ATTEST of a pending commitment, a REVOKE of one whose REVOKE is pending, a
  second vote are refused at the door with ``conflicts_with_pending``; a transaction
  the head alone refuses gets that rule's own code (``already_revoked``...).
  Peers' transactions take the same check (``from_peer`` changes no rule): the state
  read it costs is one LevelDB look-up (the store's index of attested commitments);
  scripts/bench_admission.py measures admission, docs/PERFORMANCE.md has the figures.
- ``committed(block, head)`` after every commit: removes the block's transactions,
  rebases the overlay on ``head`` and re-checks the pending transactions whose outcome
  the block could change: by the state keys they touch (``ledger.rules.touched_keys``:
  a commitment, consent records; not the accesses under a grant whose block accesses
  were all pending here, ``_settled``); everything when the block
  or the pool holds governance, or members, proposals, parameters or validators moved.
  Expired ones go too. Block time is the consent rules' "now" (docs/CONSENT.md §4): the
  overlay takes the new head's time, and a pending ACCESS or CONSENT_GRANT whose grant
  window ends by then is re-checked too (a block need not touch its records to end it).
  It returns the ids that left without committing (the node tells
  its replica they are no longer pending), including those a ``remove`` made doomed.
- Deduplicated by tx id; bounded (``max_txs`` and ``max_bytes``): when full, ``add``
  answers BUSY instead of growing, which the RPC turns into a "busy, retry" error.
- Each signature is verified once per node: ``verified(tx_id)`` tells block execution
  it may skip the check (the id covers the signature bytes, so a different signature
  is a different id).
- Transactions are proposed in arrival order (FIFO); the overlay applies them in that
  order, so the pending set executed in order on the head is a valid block.
Pure data structure: no I/O, no clock; owned by one task.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ledger.consent import grant_record
from ledger.errors import RuleError
from ledger.rules import apply_tx, touched_keys
from ledger.state import LedgerState
from ledger.transaction import Access, ConsentGrant
from ledger.types import Block, GovPropose, GovVote, Transaction
from ledger.working_set import WorkingSet


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


#: Codes a transaction gets before its signature is checked (else the signature is good).
_BEFORE_SIGNATURE = frozenset(
    {"wrong_chain", "expired", "expiry_too_far", "replay", "unknown_sender", "bad_signature"}
)


def _is_gov(tx: Transaction) -> bool:
    return isinstance(tx.payload, GovPropose | GovVote)


def _window_end(tx: Transaction, ws: WorkingSet) -> int | None:
    """The first block time at which ``tx``, admitted on ``ws``, is refused by time alone:
    its grant's window has ended (``bad_window`` for a CONSENT_GRANT from its
    ``not_after_ms``, ``grant_expired`` for an ACCESS after it)."""
    p = tx.payload
    if isinstance(p, ConsentGrant):
        return p.not_after_ms
    if isinstance(p, Access):
        return grant_record(ws, p.grant_id).not_after_ms + 1
    return None


class Mempool:
    """Pending transactions in arrival order, their effects as an overlay over the
    committed head, and a verified-signature cache."""

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
        # No transaction expires below this height: committed() can skip its scan
        # (it ran over the whole pool after every block). May be low, never high.
        self._min_expiry = 0
        # The overlay: the head it is based on, the pending transactions' effects on it,
        # and which pending transactions touch each commitment (arrival order).
        self._head: LedgerState | None = None
        self._ws: WorkingSet | None = None
        self._by_key: dict[bytes, list[bytes]] = {}
        self._gov: set[bytes] = set()
        # Pending consent transactions by the block time that may doom them
        # (``_window_end``), and a bound below all of them (may be low, never high).
        self._window_ends: dict[bytes, int] = {}
        self._min_window_end = 1 << 62
        self._dropped: list[bytes] = []  # made doomed by remove(); reported by committed()
        self.stats = {
            "added": 0,
            "duplicate": 0,
            "busy": 0,
            "rejected": 0,
            "expired": 0,
            "committed": 0,
            "rechecked_out": 0,
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

    def tx_ids(self) -> list[bytes]:
        return list(self._txs)

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

    # -- admission -------------------------------------------------------------
    def add(self, tx: Transaction, head: LedgerState, *, from_peer: bool = False) -> AddResult:
        """Admit ``tx`` if the ledger would execute it after the pending transactions on
        ``head`` (the committed head). ``from_peer``: gossiped by a peer; the same rules
        apply (a peer's check at its door cannot see what committed since)."""
        tx_id = tx.tx_id
        if tx_id in self._txs:
            self.stats["duplicate"] += 1
            return DUPLICATE
        if len(self._txs) >= self.max_txs or self._bytes + len(tx.encoded) > self.max_bytes:
            self.stats["busy"] += 1
            return FULL
        ws = self._ws
        if ws is None or (head is not self._head and not self._same_head(head)):
            ws = self._overlay(head)
        try:
            # The cache's own membership test: a Python-level wrapper cost ~0.2 us a call.
            apply_tx(ws, tx, self._verified.__contains__)
        except RuleError as err:
            if err.code not in _BEFORE_SIGNATURE:
                self._mark_verified(tx_id)
            err = self._explain(tx, head, err)
            self.stats["rejected"] += 1
            return AddResult(AddStatus.REJECTED, err.code, err.message)
        self._mark_verified(tx_id)
        self._insert(tx)
        end = _window_end(tx, ws)
        if end is not None:
            self._window_ends[tx_id] = end
            self._min_window_end = min(self._min_window_end, end)
        self.stats["added"] += 1
        return ADDED

    def _insert(self, tx: Transaction) -> None:
        tx_id = tx.tx_id
        self._txs[tx_id] = tx
        self._bytes += len(tx.encoded)
        if tx.expiry_height < self._min_expiry:
            self._min_expiry = tx.expiry_height
        keys = touched_keys(tx)
        if keys is None:
            self._gov.add(tx_id)
            return
        for k in keys:
            pending = self._by_key.get(k)
            if pending is None:
                self._by_key[k] = [tx_id]
            else:
                pending.append(tx_id)

    def _explain(self, tx: Transaction, head: LedgerState, err: RuleError) -> RuleError:
        """``err`` if the head alone refuses ``tx``; ``conflicts_with_pending`` if only the
        pending transactions' effects do."""
        pending = [k for k in touched_keys(tx) or () if k in self._by_key]
        if not (self._gov or pending):
            return err  # nothing pending that tx could conflict with
        if err.code in _BEFORE_SIGNATURE and err.code != "unknown_sender":
            return err
        try:
            apply_tx(self._fresh(head), tx, self.verified, check_replay=False)
        except RuleError:
            return err
        other = self._by_key[pending[0]][0] if pending else b""
        which = f"pending tx {other.hex()[:16]}" if other else "a pending transaction"
        return RuleError(
            "conflicts_with_pending", f"conflicts with {which} ({err.code}: {err.message})"
        )

    # -- the overlay -----------------------------------------------------------
    def _fresh(self, head: LedgerState) -> WorkingSet:
        """The head alone, at the height pending transactions are checked for. Its reads
        are the head's own: for a commitment never attested, one look-up in the store's
        index (``LedgerState.never_attested``)."""
        return WorkingSet(head, head.height + 1, track_changes=False)

    def _same_head(self, head: LedgerState) -> bool:
        """True if the overlay can serve ``head``: it is based on it, or ``head`` is a
        caller's stale copy (ours is newer)."""
        ours = self._head
        return ours is not None and (head.block_id == ours.block_id or head.height < ours.height)

    def _overlay(self, head: LedgerState) -> WorkingSet:
        if self._ws is not None and self._same_head(head):
            return self._ws
        # A head we were not told of by committed(): re-check everything on it, replays
        # included (the blocks in between may have committed some of ours).
        self._rebuild(head, check_replay=True)
        assert self._ws is not None
        return self._ws

    def _rebuild(self, head: LedgerState, *, check_replay: bool = False) -> None:
        """Re-apply every pending transaction, in order, on ``head``; drop what fails.
        ``check_replay`` unless every block since the last head went through
        ``committed`` (which removed the ids it committed)."""
        self._head = head
        self._ws = ws = self._fresh(head)
        doomed = []
        for tx_id, tx in self._txs.items():
            try:
                apply_tx(ws, tx, self.verified, check_replay=check_replay)
            except RuleError:
                doomed.append(tx_id)
        self._drop(doomed)

    def _recheck_keys(self, keys: set[bytes]) -> None:
        """Re-apply, on the head, the pending transactions touching ``keys``
        (valid only while no governance is pending: members and rights are the head's).

        Nearly every transaction touches one key (its commitment): those are re-applied
        key by key, in arrival order per key. A transaction touching several (consent)
        pulls its other keys in too -- their cached effects are dropped and re-made --
        and then everything affected is re-applied in arrival order."""
        ws = self._ws
        assert ws is not None
        affected: set[bytes] = set()
        frontier = list(keys)
        multi = False
        while frontier:
            for tx_id in self._by_key.get(frontier.pop(), ()):
                if tx_id in affected:
                    continue
                affected.add(tx_id)
                more = touched_keys(self._txs[tx_id]) or ()
                if len(more) > 1:
                    multi = True
                    for k in more:
                        if k not in keys:
                            keys.add(k)
                            frontier.append(k)
        for k in keys:
            ws.attestations.pop(k, None)
            ws.records.pop(k, None)
            ws.decoded.pop(k, None)
        if multi:
            order = [tx_id for tx_id in self._txs if tx_id in affected]
        else:
            order = [tx_id for k in keys for tx_id in self._by_key.get(k, ())]
        doomed = []
        for tx_id in order:
            ws.tx_ids.discard(tx_id)
            try:
                apply_tx(ws, self._txs[tx_id], self.verified, check_replay=False)
            except RuleError:
                doomed.append(tx_id)
        self._drop(doomed)

    def _drop(self, tx_ids: list[bytes]) -> None:
        """Remove doomed transactions (their effects were not applied) and report them."""
        if tx_ids:
            self._forget(tx_ids)
            self._dropped.extend(tx_ids)
            self.stats["rechecked_out"] += len(tx_ids)

    def _forget(self, tx_ids: Iterable[bytes]) -> list[Transaction]:
        out = []
        for tx_id in tx_ids:
            tx = self._txs.pop(tx_id, None)
            if tx is None:
                continue
            out.append(tx)
            self._bytes -= len(tx.encoded)
            self._window_ends.pop(tx_id, None)
            keys = touched_keys(tx)
            if keys is None:
                self._gov.discard(tx_id)
            for k in keys or ():
                ids = self._by_key[k]
                ids.remove(tx_id)
                if not ids:
                    del self._by_key[k]
            if self._ws is not None:
                self._ws.tx_ids.discard(tx_id)
        return out

    # -- leaving ---------------------------------------------------------------
    def committed(self, block: Block, head: LedgerState) -> list[bytes]:
        """After ``block`` committed (``head`` is the state after it): drop its
        transactions, rebase on ``head``, re-check what the block could have doomed, drop
        the expired; returns the ids that left without committing since the last call."""
        old = self._head
        block_ids = block.tx_ids
        settled = self._settled(block)
        left = self._forget(block_ids)
        self.stats["committed"] += len(left)
        expired = self._expired(head.height + 1)
        touched: set[bytes] = set()
        governance = False  # the block, or an expired transaction, was governance
        timed = self._window_ended(head.time_ms)
        for tx in (*block.txs, *expired, *timed):
            keys = touched_keys(tx)
            if keys is None:
                governance = True
            else:
                touched.update(keys)
        for tx in (*expired, *timed):  # they left or failed: their keys are re-checked
            settled.difference_update(touched_keys(tx) or ())
        # Blocks went by that committed() was not told of: they may have committed ours.
        skipped = old is None or old.block_id != block.header.prev_block_id
        if (
            old is None
            or skipped
            or governance
            or self._gov
            or self._ws is None
            or head.members is not old.members
            or head.open_proposals is not old.open_proposals
            or (head.chain is not old.chain and head.chain != old.chain)
            or head.chain.settle(head.height + 1) is not head.chain
        ):
            # Rights, members, proposals or validators may have moved: re-check all.
            self._rebuild(head, check_replay=skipped)
        else:
            # Only commitments changed: rebase and re-check those pending on them.
            ws = self._ws
            self._head = head
            ws.parent, ws.height, ws.read_attestation = head, head.height + 1, head.attestation
            ws.time_ms = head.time_ms  # "now" at admission is the head's (consent windows)
            self._recheck_keys(touched - settled)
        gone, self._dropped = self._dropped, []
        return [tx.tx_id for tx in expired] + gone

    def _settled(self, block: Block) -> set[bytes]:
        """Keys of ``block`` whose pending transactions are all ACCESSes and whose block
        transactions were all among them (in any order: another node's pool orders them
        otherwise). The overlay holds their effects already: accesses commute (each
        appends one use; the rules read only how many are recorded, and time, which
        ``_window_ended`` covers), so the rest need no re-check. Without this, a load of
        accesses under a few hundred grants re-applied nearly every pending access after
        every block, each re-encoding its grant record: quadratic in the accesses
        pending under a grant."""
        in_block: dict[bytes, list[bytes]] = {}
        for tx in block.txs:
            # Every kind: a CONSENT_REVOKE of the grant in the block (from another node's
            # pool) must leave its key unsettled, so the pending accesses are re-checked.
            for k in touched_keys(tx) or ():
                in_block.setdefault(k, []).append(tx.tx_id)
        settled = set()
        for k, ids in in_block.items():
            pending = self._by_key.get(k)
            if pending is None or len(ids) > len(pending):
                continue
            mine = set(pending)
            if mine.issuperset(ids) and all(
                isinstance(self._txs[t].payload, Access) for t in pending
            ):
                settled.add(k)
        return settled

    def _window_ended(self, time_ms: int) -> list[Transaction]:
        """Pending consent transactions whose grant window ended by ``time_ms``."""
        if time_ms < self._min_window_end:
            return []
        ended = [self._txs[t] for t, end in self._window_ends.items() if end <= time_ms]
        self._min_window_end = min(
            (end for end in self._window_ends.values() if end > time_ms), default=1 << 62
        )
        return ended

    def _expired(self, next_height: int) -> list[Transaction]:
        if next_height <= self._min_expiry:
            return []
        ids = [tid for tid, tx in self._txs.items() if tx.expiry_height < next_height]
        gone = self._forget(ids)
        self._min_expiry = min((tx.expiry_height for tx in self._txs.values()), default=1 << 62)
        self.stats["expired"] += len(gone)
        return gone

    def remove(self, tx_ids: Iterable[bytes], *, committed: bool = False) -> int:
        """Remove ``tx_ids`` (e.g. the block builder refused them); returns how many were
        held. Pending transactions that depended on them are re-checked on the head, and
        those now doomed are reported by the next ``committed``."""
        gone = self._forget(list(tx_ids))
        if committed:
            self.stats["committed"] += len(gone)
        if gone and self._head is not None and self._ws is not None:
            if self._gov or any(_is_gov(tx) for tx in gone):
                self._rebuild(self._head)
            else:
                self._recheck_keys({k for tx in gone for k in touched_keys(tx) or ()})
        return len(gone)

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

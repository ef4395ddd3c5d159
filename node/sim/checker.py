"""The whole-node checkers: outside the code under test, run on every seed.

They see what leaves a node (frames, ``Committed`` effects, client answers) and read
its stores and mempool; they never ask the node whether it is right:

(a) agreement: no two honest nodes commit different blocks at a height, and a node
    never comes back from a power cut below a height it reported committed;
(b) liveness: once the network heals, every admitted transaction is committed on every
    honest node within a bounded simulated time, or the ledger refuses it on the final
    committed state (a conflicting twin won, it expired);
(c) no client-caused view change: in a calm run (honest nodes, no faults) no honest
    node ever sends a VIEW-CHANGE, whatever the client submits;
(d) the mempool never holds a transaction the ledger would refuse: after each step of
    an honest node, its pending transactions, applied in arrival order by the ledger's
    rule book (``ledger.rules.apply_tx``, what block execution runs) on its committed
    head, must all be accepted: the pending set is a valid block (a REVOKE may follow
    its pending ATTEST; two ATTESTs of one commitment may not both wait);
(e) no honest node signs two different messages for one (kind, view, sequence) over
    its whole life, restarts included: the proof that every fsync it relies on is there;
(f) no honest node blames an honest peer: no ``Penalise`` of an honest node by an
    honest one, no equivocation evidence recorded against an honest node.

Violations are strings with the simulated time, collected, never raised.
"""

from __future__ import annotations

from typing import Any

from consensus.messages import ViewChange, content_key, decode_message, slot_key
from ledger.chain import Ledger
from ledger.errors import LedgerError, RuleError
from ledger.rules import apply_tx
from ledger.state import LedgerState, execute
from ledger.working_set import WorkingSet


class NodeChecker:
    def __init__(self, honest: set[int], calm: bool) -> None:
        self.honest = honest
        self.calm = calm
        self.now = 0
        self.violations: list[str] = []
        # (d)'s findings also apart (the mutation test looks for them)
        self.mempool_violations: list[str] = []
        self.agreed: dict[int, bytes] = {}
        self.heights: dict[int, int] = {}
        self.signed: dict[int, dict[tuple[Any, ...], bytes]] = {}
        self.admitted: dict[bytes, int] = {}  # tx id -> simulated time first admitted
        self.commits = 0
        self.lost = 0
        self.messages_signed = 0
        self.view_changes = 0
        self._mempool_ok: dict[int, tuple[bytes, tuple[bytes, ...]]] = {}
        self._signatures_ok: set[bytes] = set()  # tx ids whose signature (d) checked
        self.penalties = 0

    def violation(self, text: str) -> None:
        if len(self.violations) < 30:
            self.violations.append(f"t={self.now}ms {text}")

    @property
    def ok(self) -> bool:
        return not self.violations

    # (a) ------------------------------------------------------------------------------

    def on_committed(self, node: int, height: int, block_id: bytes) -> None:
        if node not in self.honest:
            return
        self.commits += 1
        last = self.heights.get(node, 0)
        if height != last + 1:
            self.violation(f"ORDER: node {node} committed height {height} after {last}")
        self.heights[node] = max(last, height)
        agreed = self.agreed.setdefault(height, block_id)
        if agreed != block_id:
            self.violation(
                f"AGREEMENT: node {node} committed {block_id.hex()[:12]} at height {height}, "
                f"another honest node {agreed.hex()[:12]}"
            )

    def on_restart(self, node: int, height: int) -> None:
        if node in self.honest and height < self.heights.get(node, 0):
            self.violation(
                f"DURABILITY: node {node} restarted at height {height} after reporting "
                f"{self.heights[node]} committed"
            )
        if node in self.honest:
            self.heights[node] = height

    # (c) and (e) ------------------------------------------------------------------------

    def on_frame(self, node: int, payload: bytes) -> None:
        """A consensus frame an honest node sent (its own or one it forwards)."""
        if node not in self.honest:
            return
        message = decode_message(payload)
        if message.sender != self._keys[node]:
            return  # forwarded: signed by someone else
        self.messages_signed += 1
        if isinstance(message, ViewChange):
            self.view_changes += 1
            if self.calm:
                self.violation(
                    f"VIEW CHANGE in a calm run: node {node} sent VIEW-CHANGE to view "
                    f"{message.view}"
                )
        seen = self.signed.setdefault(node, {})
        key = slot_key(message)
        content = content_key(message)
        prior = seen.setdefault(key, content)
        if prior != content:
            self.violation(f"DOUBLE SIGN by honest node {node} at {key}: {message!r}"[:400])

    _keys: dict[int, bytes] = {}

    def set_keys(self, keys: dict[int, bytes]) -> None:
        self._keys = keys

    # (d) ------------------------------------------------------------------------------

    def check_mempool(self, node: int, txs: list[Any], ledger: Ledger) -> None:
        """Apply the pending transactions in order on the committed head (see (d))."""
        if node not in self.honest:
            return
        head = ledger.head
        ids = tuple(tx.tx_id for tx in txs)
        if self._mempool_ok.get(node) == (head.block_id, ids):
            return  # nothing changed since the last check of this node
        ws = WorkingSet(head, head.height + 1)
        known = self._signatures_ok
        for tx in txs:
            try:
                apply_tx(ws, tx, known.__contains__)
            except RuleError as err:
                self._mempool_ok.pop(node, None)
                text = (
                    f"MEMPOOL: node {node} holds {tx.tx_id.hex()[:12]} "
                    f"({type(tx.payload).__name__}), which the ledger refuses after the "
                    f"pending transactions before it at height {head.height + 1} "
                    f"({err.code}: {err.message})"
                )
                if len(self.mempool_violations) < 30:
                    self.mempool_violations.append(f"t={self.now}ms {text}")
                self.violation(text)
                return
            known.add(tx.tx_id)
        if len(known) > 200_000:
            known.clear()
        self._mempool_ok[node] = (head.block_id, ids)

    # (f) ------------------------------------------------------------------------------

    def on_penalised(self, node: int, peer: int | None, reason: str) -> None:
        self.penalties += 1
        if node in self.honest and peer in self.honest:
            self.violation(f"BLAME: honest node {node} penalised honest node {peer} ({reason})")

    def on_evidence(self, node: int, accused: int | None) -> None:
        if node in self.honest and accused in self.honest:
            self.violation(f"BLAME: node {node} recorded evidence against honest node {accused}")

    # (b) ------------------------------------------------------------------------------

    def on_admitted(self, tx_id: bytes) -> None:
        self.admitted.setdefault(tx_id, self.now)

    def forget(self, tx_id: bytes) -> None:
        if self.admitted.pop(tx_id, None) is not None:
            self.lost += 1

    def check_liveness(
        self,
        heal_ms: int,
        bound_ms: int,
        committed: dict[int, set[bytes]],
        refused_on_head: dict[bytes, bool],
    ) -> None:
        """Every admitted transaction committed on every honest node (or now refused)."""
        for tx_id in self.admitted:
            missing = [n for n, ids in committed.items() if tx_id not in ids]
            if not missing:
                continue
            if refused_on_head.get(tx_id, False):
                continue
            self.violation(
                f"LIVENESS: admitted {tx_id.hex()[:12]} not committed on nodes {missing} "
                f"{bound_ms}ms after the heal at t={heal_ms}ms, and still valid"
            )


def proposer_of(state: LedgerState) -> bytes:
    """A validator's key for the next block (execution checks the proposer is one)."""
    return state.validators_at(state.height + 1).validators[0].node_key


def _accepts(state: LedgerState, tx: Any) -> bool:
    try:
        execute(state, [tx], time_ms=state.time_ms + 1, proposer=proposer_of(state), strict=True)
    except LedgerError:
        return False
    return True


def _refusal(state: LedgerState, tx: Any) -> str:
    try:
        execute(state, [tx], time_ms=state.time_ms + 1, proposer=proposer_of(state), strict=True)
    except LedgerError as exc:
        return str(getattr(exc, "code", exc))
    return "accepted"

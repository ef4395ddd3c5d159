"""The external checker: PBFT's safety and liveness claims, checked from outside.

Like TigerBeetle's ``state_checker.zig``, it never looks inside a replica; it sees
only what a node's caller sees (``CommitBlock`` actions, signed messages leaving a
node, reported evidence) and keeps its own reference ledger. Checks, after every
step of every node:

- agreement: no two honest nodes commit different blocks at one height;
- order: each honest node commits heights 1, 2, 3... exactly once (across restarts);
- validity: every committed payload was produced by some block builder and passes
  the reference App's validation on top of the agreed parent;
- certificates: every commit certificate has a quorum of valid signatures by
  distinct validators of the set in force at that height (reference schedule);
- no honest equivocation: an honest node never signs two conflicting messages
  (the restart-safety claim), and evidence never accuses an honest node and always
  verifies with ``consensus.evidence.verify_evidence``;
- liveness (``check_liveness``): after the network heals with <= f faulty nodes,
  every honest node commits new blocks within a bounded simulated time.

Violations are collected as strings (with the simulated time), never raised, so a
test can show all of them together with the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.certs import verify_commit_certificate
from consensus.evidence import Evidence, verify_evidence
from consensus.messages import Message, content_key, slot_key
from ledger.types import CommitCertificate
from node.sim.pbft.app import MemApp, parse
from node.sim.pbft.crypto import FakeCrypto


class Checker:
    def __init__(
        self, chain_id: str, keys: Sequence[bytes], initial: Sequence[int], change_delay: int
    ) -> None:
        self.chain_id = chain_id
        self.keys = list(keys)
        self.reference = MemApp(keys, initial, change_delay)
        self.crypto = FakeCrypto(b"\x00" * 32)
        self.agreed: dict[int, bytes] = {}
        self.proposed: set[bytes] = set()
        self.heights: dict[int, int] = {}  # node -> last committed height
        self.signed: dict[int, dict[tuple[object, ...], bytes]] = {}
        self.violations: list[str] = []
        self.now = 0
        self.commits = 0
        self.evidence_seen = 0
        self.views_entered = 0  # ViewEntered actions of all nodes
        self.penalties = 0  # PeerMisbehaved actions of all nodes

    def violation(self, text: str) -> None:
        if len(self.violations) < 50:
            self.violations.append(f"t={self.now}ms {text}")

    @property
    def ok(self) -> bool:
        return not self.violations

    # -- hooks called by the cluster ----------------------------------------------------

    def on_proposed(self, payload: bytes) -> None:
        self.proposed.add(payload)

    def on_restart(self, node: int, height: int) -> None:
        if height != self.heights.get(node, 0):
            self.violation(
                f"node {node} restarted at height {height}, disk had {self.heights.get(node, 0)}"
            )

    def on_commit(self, node: int, height: int, payload: bytes, cert: CommitCertificate) -> None:
        self.commits += 1
        last = self.heights.get(node, 0)
        if height != last + 1:
            self.violation(f"node {node} committed height {height} after {last}")
            return
        self.heights[node] = height
        parsed = parse(payload)
        if parsed is None:
            self.violation(f"node {node} committed an unparseable payload at {height}")
            return
        block_id = parsed.block_id
        agreed = self.agreed.get(height)
        if agreed is None:
            self._first_commit(node, height, payload, block_id)
        elif agreed != block_id:
            self.violation(
                f"AGREEMENT: node {node} committed {block_id.hex()[:8]} at height "
                f"{height}, others {agreed.hex()[:8]}"
            )
            return
        if cert.block_id != block_id or cert.height != height:
            self.violation(f"node {node}: certificate does not match block at {height}")
        validators = self.reference.validators_at(height)
        if validators is None or not verify_commit_certificate(
            cert, self.chain_id, validators, self.crypto
        ):
            self.violation(
                f"CERTIFICATE: node {node} height {height}: not a quorum of valid "
                f"signatures of the set in force"
            )

    def _first_commit(self, node: int, height: int, payload: bytes, block_id: bytes) -> None:
        if height != len(self.agreed) + 1:
            self.violation(f"node {node} first to commit {height} with a gap below")
            return
        if payload not in self.proposed:
            self.violation(f"VALIDITY: node {node} committed a block nobody proposed at {height}")
        parent = self.reference.last_id
        if self.reference.validate_proposal(height, payload, parent) != block_id:
            self.violation(f"VALIDITY: node {node} committed an invalid block at {height}")
        self.agreed[height] = block_id
        self.reference.apply(payload)

    def on_signed(self, node: int, message: Message) -> None:
        """Every message an honest node signed: it must never sign two conflicting ones."""
        seen = self.signed.setdefault(node, {})
        key = slot_key(message)
        content = content_key(message)
        prior = seen.get(key)
        if prior is None:
            seen[key] = content
            if len(seen) > 50_000:  # memory bound for long soaks: keep the recent half
                for k in list(seen)[:25_000]:
                    del seen[k]
        elif prior != content:
            self.violation(f"EQUIVOCATION by honest node {node}: {message!r}")

    def on_evidence(self, node: int, evidence: Evidence, honest: set[bytes]) -> None:
        self.evidence_seen += 1
        accused = evidence.sender
        if accused in honest:
            self.violation(f"node {node} reported evidence against honest {accused.hex()[:8]}")
        first = evidence.first
        height = int(getattr(first, "height", 0) or getattr(first, "epoch", 1))
        validators = self.reference.validators_at(height)
        if validators is not None and validators.index_of(accused) is not None:
            if not verify_evidence(evidence, self.chain_id, validators, self.crypto):
                self.violation(f"node {node} reported evidence that does not verify")

    def on_misbehaved(self, node: int, peer: bytes, reason: str, honest: set[bytes]) -> None:
        """Honest nodes send and forward only messages they signed or checked."""
        self.penalties += 1
        if peer in honest:
            self.violation(f"node {node} blamed honest {peer.hex()[:8]} for {reason}")

    # -- liveness --------------------------------------------------------------------------

    def check_liveness(
        self,
        before: dict[int, int],
        after: dict[int, int],
        honest_up: Sequence[int],
        window_ms: int,
    ) -> None:
        for node in honest_up:
            if after.get(node, 0) <= before.get(node, 0):
                self.violation(
                    f"LIVENESS: honest node {node} committed nothing in {window_ms}ms "
                    f"after heal (stuck at {after.get(node, 0)})"
                )

"""Byzantine behaviours: rewrite what a faulty node sends, builds and serves.

A Byzantine node runs an ordinary ``Replica`` (so it knows the protocol state) and a
``Behaviour`` rewrites its output before the cluster executes it. It signs with its
own key only: forgeries of others' signatures are random bytes, which is all the
fake crypto's soundness relies on. Each behaviour is one fault from the issue:

- ``Silent``: drops its messages (all, or only some kinds: a silent primary);
- ``Equivocate``: two PRE-PREPAREs per (height, view), conflicting PREPARE/COMMIT/
  VIEW-CHANGE messages to different halves of the cluster (and both to one victim,
  so evidence can be formed);
- ``BadSignatures``: corrupts signatures;
- ``Replay``: resends old messages from anyone, to anyone;
- ``WrongVotes``: validly signed votes for wrong views, heights and blocks;
- ``Forge``: VIEW-CHANGEs and checkpoints with forged proofs, NEW-VIEWs without a
  quorum, and forged certificates / tampered blocks when serving catch-up;
- ``InvalidBlocks``: proposes blocks the App rejects;
- ``Censor``: as block builder, leaves out transactions marked for censorship.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import TYPE_CHECKING, Any

from consensus.api import Action, Broadcast, CertifiedPayload, Send
from consensus.messages import (
    Checkpoint,
    CheckpointProof,
    Commit,
    Message,
    NewView,
    Prepare,
    PrePrepare,
    Proof,
    ProofKind,
    ViewChange,
)
from ledger.types import CommitCertificate
from node.sim.pbft.app import make_payload, parse

if TYPE_CHECKING:
    from node.sim.pbft.cluster import Cluster, Node

CHAIN_ID = "sim-chain"


class Behaviour:
    """Honest by default; subclasses override one aspect."""

    invalid_blocks = False
    name = "honest"

    def rewrite(self, cluster: Cluster, node: Node, actions: list[Action]) -> list[Action]:
        return actions

    def censors(self, tx_id: bytes) -> bool:
        return False

    def serve(
        self, cluster: Cluster, node: Node, blocks: list[CertifiedPayload]
    ) -> list[CertifiedPayload]:
        return blocks

    def __repr__(self) -> str:
        return self.name


def _others(cluster: Cluster, node: Node) -> list[int]:
    return [n.index for n in cluster.nodes if n.index != node.index]


def _sign(node: Node, message: Any) -> Any:
    return message.signed_by(node.crypto, CHAIN_ID)


def _random_bytes(cluster: Cluster, size: int) -> bytes:
    return cluster.rng.getrandbits(8 * size).to_bytes(size, "big")


class Silent(Behaviour):
    def __init__(self, kinds: tuple[type, ...] | None = None) -> None:
        self.kinds = kinds
        self.name = (
            "silent" if kinds is None else "silent(" + ",".join(k.__name__ for k in kinds) + ")"
        )

    def rewrite(self, cluster: Cluster, node: Node, actions: list[Action]) -> list[Action]:
        out = []
        for a in actions:
            if isinstance(a, (Send, Broadcast)) and (
                self.kinds is None or isinstance(a.message, self.kinds)
            ):
                continue
            out.append(a)
        return out


class Equivocate(Behaviour):
    name = "equivocate"

    def rewrite(self, cluster: Cluster, node: Node, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            if not isinstance(a, Broadcast) or a.message.sender != node.key:
                out.append(a)
                continue
            alt = self._alternative(cluster, node, a.message)
            if alt is None:
                out.append(a)
                continue
            others = _others(cluster, node)
            cluster.rng.shuffle(others)
            half = len(others) // 2
            victim = others[0]
            for i in others[:half]:
                out.append(Send(cluster.keys[i], a.message))
            for i in others[half:]:
                out.append(Send(cluster.keys[i], alt))
            out.append(Send(cluster.keys[victim], alt))  # the victim holds both: evidence
        return out

    def _alternative(self, cluster: Cluster, node: Node, m: Message) -> Message | None:
        if isinstance(m, PrePrepare):
            p = parse(m.payload)
            if p is None:
                return None
            node.nonce += 1
            payload = make_payload(m.height, m.parent_id, node.index, node.nonce, p.tx_ids[:1])
            cluster.checker.on_proposed(payload)
            block_id = parse(payload).block_id  # type: ignore[union-attr]
            pre_prepare: PrePrepare = _sign(
                node, PrePrepare(m.height, m.view, block_id, m.parent_id, payload)
            )
            return pre_prepare
        if isinstance(m, (Prepare, Commit)):
            vote: Prepare | Commit = _sign(
                node, dataclasses.replace(m, block_id=_random_bytes(cluster, 32))
            )
            return vote
        if isinstance(m, ViewChange):
            view_change: ViewChange = _sign(node, dataclasses.replace(m, proofs=()))
            return view_change
        return None


class BadSignatures(Behaviour):
    name = "bad-signatures"

    def __init__(self, rate: float = 0.5) -> None:
        self.rate = rate

    def rewrite(self, cluster: Cluster, node: Node, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            if isinstance(a, (Send, Broadcast)) and cluster.rng.random() < self.rate:
                bad = dataclasses.replace(a.message, signature=_random_bytes(cluster, 64))
                a = Broadcast(bad) if isinstance(a, Broadcast) else Send(a.to, bad)
            out.append(a)
        return out


class Replay(Behaviour):
    """Resends random old messages it has seen (from anyone) to random nodes."""

    name = "replay"

    def __init__(self, rate: float = 0.3, memory: int = 500) -> None:
        self.rate = rate
        self.history: deque[Message] = deque(maxlen=memory)

    def rewrite(self, cluster: Cluster, node: Node, actions: list[Action]) -> list[Action]:
        out = list(actions)
        for a in actions:
            if isinstance(a, (Send, Broadcast)):
                self.history.append(a.message)
        if self.history and cluster.rng.random() < self.rate:
            old = self.history[cluster.rng.randrange(len(self.history))]
            target = cluster.rng.choice(_others(cluster, node))
            out.append(Send(cluster.keys[target], old))
        return out


class WrongVotes(Behaviour):
    """Validly signed votes for wrong views, heights and blocks."""

    name = "wrong-votes"

    def __init__(self, rate: float = 0.3) -> None:
        self.rate = rate

    def rewrite(self, cluster: Cluster, node: Node, actions: list[Action]) -> list[Action]:
        out = list(actions)
        rng = cluster.rng
        if node.replica is None or rng.random() >= self.rate:
            return out
        r = node.replica
        height = max(1, r.committed + rng.randint(-40, 40))
        view = max(0, r.view + rng.randint(-3, 5))
        block_id = _random_bytes(cluster, 32)
        kind = rng.randrange(4)
        if kind == 0:
            m: Message = _sign(node, Prepare(height, view, block_id, _random_bytes(cluster, 32)))
        elif kind == 1:
            m = _sign(node, Commit(height, view, block_id))
        elif kind == 2:
            m = _sign(node, Checkpoint(height, block_id, _random_bytes(cluster, 32)))
        else:
            m = _sign(node, ViewChange(r.epoch, r.view + rng.randint(1, 100), r.stable, ()))
        out.append(Broadcast(m))
        return out


class Forge(Behaviour):
    """Forged certificates everywhere a certificate travels."""

    name = "forge"

    def __init__(self, rate: float = 0.3) -> None:
        self.rate = rate

    def rewrite(self, cluster: Cluster, node: Node, actions: list[Action]) -> list[Action]:
        out = list(actions)
        rng = cluster.rng
        if node.replica is None or rng.random() >= self.rate:
            return out
        r = node.replica
        fake_sigs = tuple((i, _random_bytes(cluster, 64)) for i in range(r.vset.n))
        height = r.committed + rng.randint(1, 4)
        block_id = _random_bytes(cluster, 32)
        kind = rng.randrange(3)
        if kind == 0:  # a view-change proving a block nobody prepared
            proof = Proof(
                ProofKind.PREPARED,
                max(height, r.low + 1),
                r.view,
                block_id,
                _random_bytes(cluster, 32),
                fake_sigs,
            )
            m: Message = _sign(node, ViewChange(r.epoch, r.view + 1, r.stable, (proof,)))
        elif kind == 1:  # a stable checkpoint nobody signed
            stable = CheckpointProof(r.low + 8, block_id, _random_bytes(cluster, 32), fake_sigs)
            m = _sign(node, ViewChange(r.epoch, r.view + 1, stable, ()))
        else:  # a NEW-VIEW with one view-change instead of a quorum
            vc = _sign(node, ViewChange(r.epoch, r.view + 1, r.stable, ()))
            m = _sign(node, NewView(r.epoch, r.view + 1, (vc,)))
        out.append(Broadcast(m))
        return out

    def serve(
        self, cluster: Cluster, node: Node, blocks: list[CertifiedPayload]
    ) -> list[CertifiedPayload]:
        out = []
        for b in blocks:
            c = b.certificate
            if cluster.rng.random() < 0.5:
                sigs = tuple((i, _random_bytes(cluster, 64)) for i, _ in c.signatures)
                cert = CommitCertificate(c.height, c.view, c.block_id, sigs)
                b = CertifiedPayload(b.payload, cert)
            else:
                p = parse(b.payload)
                assert p is not None
                b = CertifiedPayload(make_payload(p.height, p.parent_id, node.index, 999, ()), c)
            out.append(b)
        return out


class InvalidBlocks(Behaviour):
    name = "invalid-blocks"
    invalid_blocks = True


class Censor(Behaviour):
    name = "censor"

    def censors(self, tx_id: bytes) -> bool:
        return tx_id[:1] == b"\xcc"


class Combined(Behaviour):
    """Several behaviours at once, applied in order."""

    def __init__(self, parts: list[Behaviour]) -> None:
        self.parts = parts
        self.name = "+".join(p.name for p in parts)
        self.invalid_blocks = any(p.invalid_blocks for p in parts)

    def rewrite(self, cluster: Cluster, node: Node, actions: list[Action]) -> list[Action]:
        for p in self.parts:
            actions = p.rewrite(cluster, node, actions)
        return actions

    def censors(self, tx_id: bytes) -> bool:
        return any(p.censors(tx_id) for p in self.parts)

    def serve(
        self, cluster: Cluster, node: Node, blocks: list[CertifiedPayload]
    ) -> list[CertifiedPayload]:
        for p in self.parts:
            blocks = p.serve(cluster, node, blocks)
        return blocks


def all_behaviours() -> list[Behaviour]:
    return [
        Silent(),
        Silent((PrePrepare, NewView)),
        Equivocate(),
        BadSignatures(),
        Replay(),
        WrongVotes(),
        Forge(),
        InvalidBlocks(),
        Censor(),
    ]

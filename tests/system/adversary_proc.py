"""A Byzantine validator in its own OS process (tests/system/test_byzantine_peer.py,
tests/system/test_fuzz_p2p.py).

Run as ``python -m tests.system.adversary_proc <node config.toml> '<plan json>'`` from the
repository root. It runs a real ``Node`` from that validator's config, so it holds the
validator's node key (its libp2p identity and its consensus signing key), knows the
protocol state and takes part in consensus; ``AdversaryTransport`` then rewrites and adds
traffic on the real protocols. The plan's phases run in this order, each optional:

- ``equivocate`` (N): as primary, for each of its next N proposals send two different
  valid, validly signed PRE-PREPAREs for the same (height, view): block A to two
  replicas, block B (same transactions, a later time) to the third, then B to the first
  one too, so that replica holds both (evidence);
- ``replay_forge_s`` (s): replay old messages (its own and others') to random peers, and
  send validly signed VIEW-CHANGEs carrying a commit certificate for a block that does
  not exist (forged co-signatures) and COMMIT votes for such blocks;
- ``fuzz`` (N, with ``seed``): N malformed frames on each p2p protocol -- consensus,
  txs (gossip batches) and sync (requests, answered or refused) -- from ``junk_frames``;
- ``flood_s`` (s): messages with invalid signatures, malformed frames and oversize
  frames (over the receivers' 4 MiB limit), as fast as the send queues take them.

After the last phase it behaves honestly. It prints one JSON line on stdout per phase,
``{"phase": name, ...counts}``, and ``{"phase": "done"}`` at the end.
"""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import sys
from collections import deque
from pathlib import Path
from typing import Any

import msgpack
import trio

from consensus.messages import (
    Commit,
    PrePrepare,
    Proof,
    ProofKind,
    ViewChange,
    decode_message,
)
from ledger.codec import encode
from ledger.errors import DecodeError
from ledger.state import execute
from node.config import load_config
from node.logs import setup_logging
from node.node import Node
from node.p2p_transport import Libp2pTransport
from node.transport import CONSENSUS, TXS
from p2p import RequestError

MiB = 1024 * 1024
OVERSIZE = 4 * MiB + 1  # the receivers' max_frame_bytes is 4 MiB


def report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def junk_frames(rng: random.Random, channel: str, samples: list[bytes], n: int) -> list[bytes]:
    """``n`` malformed frames for ``channel``: random bytes, damaged real messages,
    non-canonical or wrongly shaped msgpack, deep nesting, absurd declared lengths."""
    out: list[bytes] = []
    for _ in range(n):
        kind = rng.randrange(9)
        if kind == 0:
            frame = rng.randbytes(rng.choice((1, 2, 9, 100, 3000, 60_000)))
        elif kind == 1 and samples:  # one byte of a real message flipped
            b = bytearray(rng.choice(samples))
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            frame = bytes(b)
        elif kind == 2 and samples:  # a real message cut short
            s = rng.choice(samples)
            frame = s[: rng.randrange(1, len(s))] if len(s) > 1 else b"\xc1"
        elif kind == 3:  # msgpack the canonical codec refuses: maps, floats, nil, negatives
            frame = msgpack.packb(_random_value(rng, 4), use_bin_type=True)
        elif kind == 4:  # deep nesting
            depth = rng.choice((64, 1000, 100_000))
            frame = b"\x91" * depth + b"\xc0"
        elif kind == 5:  # containers and strings declaring ~4 GiB
            frame = rng.choice(
                (
                    b"\xdd\xff\xff\xff\xff",
                    b"\xc6\xff\xff\xff\xff",
                    b"\xdb\x7f\xff\xff\xff\x00",
                    b"\xdf\xff\xff\xff\xff",
                )
            )
        elif kind == 6:  # well-formed canonical arrays of the wrong shape
            frame = encode([rng.randrange(256), rng.randbytes(32), 2**64 - 1, [b"x"] * 3])
        elif kind == 7 and channel == TXS:  # a batch of junk "transactions"
            frame = encode([rng.randbytes(rng.randrange(1, 300)) for _ in range(20)])
        elif kind == 7:  # sync requests that decode but ask for nonsense
            frame = msgpack.packb(
                rng.choice(
                    (
                        ["blocks", 2**63, 2**64 - 1],
                        ["blocks", 9, 1],
                        ["blocks", -1, 5],
                        ["status", 1],
                        ["blocks"],
                        ["nope"],
                        ["blocks", 1, -(2**63)],
                    )
                )
            )
        else:  # trailing bytes after a real message
            frame = (rng.choice(samples) if samples else b"\x90") + rng.randbytes(3)
        out.append(frame or b"\xc1")
    return out


def _random_value(rng: random.Random, depth: int) -> Any:
    choice = rng.randrange(8 if depth > 0 else 5)
    if choice == 0:
        return rng.randrange(-(2**63), 2**64)
    if choice == 1:
        return rng.random() * 1e300
    if choice == 2:
        return None
    if choice == 3:
        return rng.randbytes(rng.randrange(0, 40))
    if choice == 4:
        return "é" * rng.randrange(0, 10)
    if choice == 5:
        return {str(i): _random_value(rng, depth - 1) for i in range(rng.randrange(4))}
    return [_random_value(rng, depth - 1) for _ in range(rng.randrange(6))]


class AdversaryTransport(Libp2pTransport):
    """The node's libp2p transport with its outbound consensus traffic rewritten."""

    def __init__(self, node: Node, peers: dict[bytes, str], plan: dict[str, Any]) -> None:
        super().__init__(node, peers)
        # Our own frame limit is raised so that we can send frames over the receivers'.
        self.host.config.max_frame_bytes = 8 * MiB
        self.equivocate_left = int(plan.get("equivocate", 0))
        self.equivocations = 0
        self.history: deque[bytes] = deque(maxlen=1000)  # consensus frames seen or sent

    def broadcast(self, channel: str, payload: bytes) -> None:
        if channel == CONSENSUS:
            self.history.append(payload)
            if self.equivocate_left > 0 and self._equivocate(payload):
                return
        super().broadcast(channel, payload)

    def send(self, peer: bytes, channel: str, payload: bytes) -> None:
        if channel == CONSENSUS:
            self.history.append(payload)
        super().send(peer, channel, payload)

    def _equivocate(self, payload: bytes) -> bool:
        node = self.node
        msg = decode_message(payload)
        peers = sorted(self.host.connected_peers())
        if not isinstance(msg, PrePrepare) or msg.sender != node.key.public_key or len(peers) < 3:
            return False
        block = node.app.block_of(msg.payload)
        parent = node.ledger.state_of_block(msg.parent_id)
        if block is None or parent is None:
            return False
        # Block B: the same transactions a millisecond later -- valid, but another id.
        # Executed outside the ledger so our own pending chain keeps block A.
        alt = execute(
            parent,
            list(block.txs),
            time_ms=block.header.time_ms + 1,
            proposer=node.key.public_key,
            strict=False,
            verified=node.mempool.verified,
        ).block
        b = PrePrepare(msg.height, msg.view, alt.block_id, msg.parent_id, alt.encode()).signed_by(
            node.crypto, node.chain_id
        )
        victim, second, third = peers[:3]
        for peer, m in ((victim, msg), (second, msg), (third, b), (victim, b)):
            self.host.send(peer, CONSENSUS, m.encoded)
        for peer in peers[3:]:
            self.host.send(peer, CONSENSUS, msg.encoded)
        self.equivocate_left -= 1
        self.equivocations += 1
        report(
            event="equivocated",
            height=msg.height,
            view=msg.view,
            a=msg.block_id.hex()[:16],
            b=alt.block_id.hex()[:16],
            victim=victim.hex()[:16],
        )
        return True

    async def _pump(self, channel: str) -> None:
        deliver = self.node.deliver
        async for peer, payload in self.host.inbound(channel):
            if channel == CONSENSUS:
                self.history.append(payload)
            deliver(channel, peer, payload)


def _forged_view_change(node: Node, rng: random.Random) -> ViewChange | None:
    """A validly signed VIEW-CHANGE whose proof is a commit certificate, with forged
    co-signatures, for a block that does not exist."""
    r = node.replica
    if r is None:
        return None
    h = max(node.ledger.height + 1, r.stable.height + 1)
    n = r.vset.n
    sigs = tuple((i, rng.randbytes(64)) for i in range(min(n, r.vset.quorum)))
    proof = Proof(ProofKind.COMMITTED, h, r.view, rng.randbytes(32), b"", sigs)
    return ViewChange(r.epoch, r.view + 1, r.stable, (proof,)).signed_by(node.crypto, node.chain_id)


async def _replay_and_forge(
    node: Node, t: AdversaryTransport, rng: random.Random, seconds: float
) -> dict[str, int]:
    counts = {"replayed": 0, "forged_view_changes": 0, "commits_for_missing_blocks": 0}
    end = trio.current_time() + seconds
    while trio.current_time() < end:
        peers = sorted(t.host.connected_peers())
        if peers and t.history:
            old = list(t.history)
            for _ in range(10):
                t.host.send(rng.choice(peers), CONSENSUS, rng.choice(old))
                counts["replayed"] += 1
        vc = _forged_view_change(node, rng)
        if vc is not None:
            t.host.broadcast(CONSENSUS, vc.encoded)
            counts["forged_view_changes"] += 1
        r = node.replica
        if r is not None:
            c = Commit(node.ledger.height + 1, r.view, rng.randbytes(32)).signed_by(
                node.crypto, node.chain_id
            )
            t.host.broadcast(CONSENSUS, c.encoded)
            counts["commits_for_missing_blocks"] += 1
        await trio.sleep(0.05)  # pacing the attack (its rate), not a wait
    return counts


async def _fuzz(t: AdversaryTransport, rng: random.Random, n: int) -> dict[str, Any]:
    samples = list(t.history)[-50:]
    counts: dict[str, Any] = {"consensus": 0, "txs": 0, "sync": 0, "sync_answers": {}}
    peers = sorted(t.host.connected_peers())
    counts["peers"] = len(peers)
    for channel in (CONSENSUS, TXS):
        for frame in junk_frames(rng, channel, samples, n):
            for peer in peers:
                t.host.send(peer, channel, frame)
            counts[channel] += 1
            if counts[channel] % 50 == 0:
                # Pacing the attack: stay within the send queues and rate limits. Frames
                # lost to a full queue only blunt the attack; no assert counts them.
                await trio.sleep(0.05)
    answers: dict[str, int] = counts["sync_answers"]
    for frame in junk_frames(rng, "sync", samples, n):
        peer = rng.choice(peers)
        try:
            resp = await t.host.request(peer, frame, 5.0)
            try:
                outcome = str(msgpack.unpackb(resp)[0])[:20]
            except Exception:
                outcome = "undecodable"
        except RequestError as exc:
            outcome = type(exc).__name__
        answers[outcome] = answers.get(outcome, 0) + 1
        counts["sync"] += 1
    return counts


async def _flood(
    node: Node, t: AdversaryTransport, rng: random.Random, seconds: float
) -> dict[str, int]:
    counts = {"bad_signatures": 0, "malformed": 0, "oversize": 0}
    me = node.key.public_key
    end = trio.current_time() + seconds
    last_oversize = -1.0
    while trio.current_time() < end:
        peers = sorted(t.host.connected_peers())
        own = []
        for raw in list(t.history)[-200:]:
            try:
                m = decode_message(raw)
            except DecodeError:
                continue
            if m.sender == me:
                own.append(m)
        for m in own[-5:]:
            sig = bytearray(m.signature)
            sig[rng.randrange(len(sig))] ^= 0xFF
            bad = dataclasses.replace(m, signature=bytes(sig))
            for peer in peers:
                t.host.send(peer, CONSENSUS, bad.encoded)
            counts["bad_signatures"] += 1
        for frame in junk_frames(rng, CONSENSUS, [], 5):
            for peer in peers:
                t.host.send(peer, CONSENSUS, frame)
            counts["malformed"] += 1
        if trio.current_time() - last_oversize >= 1.0:
            last_oversize = trio.current_time()
            for peer in peers:
                t.host.send(peer, CONSENSUS, b"\x00" * OVERSIZE)
            counts["oversize"] += 1
        await trio.sleep(0.05)  # pacing the flood (its rate), not a wait
    return counts


async def attack(node: Node, t: AdversaryTransport, plan: dict[str, Any]) -> None:
    rng = random.Random(plan.get("seed", 1))
    # Every phase attacks every honest node, so start only once connected to all three
    # (devnet_with_adversary is a 4-validator devnet); a node not yet connected would
    # simply receive nothing and count nothing.
    while node.replica is None or len(t.host.connected_peers()) < 3:
        await trio.sleep(0.1)  # polling; the test's wait_phase("started") is the deadline
    report(phase="started", height=node.ledger.height)
    if t.equivocate_left:
        with trio.move_on_after(plan.get("equivocate_timeout_s", 60)):
            while t.equivocate_left:
                await trio.sleep(0.1)
        t.equivocate_left = 0
        report(phase="equivocate", count=t.equivocations, height=node.ledger.height)
    if plan.get("replay_forge_s"):
        counts = await _replay_and_forge(node, t, rng, plan["replay_forge_s"])
        report(phase="replay_forge", height=node.ledger.height, **counts)
    if plan.get("fuzz"):
        counts = await _fuzz(t, rng, plan["fuzz"])
        report(phase="fuzz", height=node.ledger.height, **counts)
    if plan.get("flood_s"):
        counts = await _flood(node, t, rng, plan["flood_s"])
        # Report once the honest nodes have cut it off, or how many have not after 10 s
        # (the test itself checks the honest nodes' side, with its own deadline).
        with trio.move_on_after(10):
            while t.host.connected_peers():
                await trio.sleep(0.1)
        report(
            phase="flood",
            height=node.ledger.height,
            connected=len(t.host.connected_peers()),
            **counts,
        )
    report(phase="done")


async def main(config_path: Path, plan: dict[str, Any]) -> None:
    cfg = load_config(config_path)
    setup_logging(cfg.name, "warning")
    made: list[AdversaryTransport] = []

    def factory(node: Node, peers: dict[bytes, str]) -> AdversaryTransport:
        made.append(AdversaryTransport(node, peers, plan))
        return made[0]

    node = Node(cfg, factory)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            await nursery.start(node.run)
            nursery.start_soon(attack, node, made[0], plan)
            async for _sig in signals:
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), json.loads(sys.argv[2]))

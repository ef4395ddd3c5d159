"""What the simulated nodes put on the wire: messages and bytes, and when blocks moved.

``Traffic`` is the whole-node world's meter (``cluster.World`` feeds it; nothing here
decides anything). Every frame a node sends is counted once per destination, at send
time, by the length of its real encoded payload (the consensus message's
``Message.encoded``, the gossip batch, the fetched blocks with their certificates):
transport framing and encryption are not included. Consensus frames are labelled by
their message kind (the second byte of the msgpack array ``[kind, ...]``); gossip is
``tx_gossip`` and catch-up answers ``fetch``. It also records when each height was
first proposed (the primary's PRE-PREPARE leaving it), when each node committed it,
and when each node entered a new view: the scale runs' latencies (``node.sim.scale``).
Pure bookkeeping over simulated time, so runs stay deterministic.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from consensus.messages import Kind, PrePrepare, decode_message
from node.transport import CONSENSUS, TXS

KIND_NAMES = {int(k): k.name.lower() for k in Kind}


@dataclass
class Snapshot:
    """The counters at one moment; ``minus`` gives what happened in between."""

    msgs: Counter[str]
    size: Counter[str]  # bytes
    sent_bytes: list[int]
    recv_bytes: list[int]
    sent_msgs: list[int]
    recv_msgs: list[int]

    def minus(self, earlier: Snapshot) -> Snapshot:
        def sub(a: list[int], b: list[int]) -> list[int]:
            return [x - y for x, y in zip(a, b, strict=True)]

        return Snapshot(
            self.msgs - earlier.msgs,
            self.size - earlier.size,
            sub(self.sent_bytes, earlier.sent_bytes),
            sub(self.recv_bytes, earlier.recv_bytes),
            sub(self.sent_msgs, earlier.sent_msgs),
            sub(self.recv_msgs, earlier.recv_msgs),
        )


@dataclass
class Traffic:
    nodes: int
    msgs: Counter[str] = field(default_factory=Counter)
    size: Counter[str] = field(default_factory=Counter)  # bytes
    sent_bytes: list[int] = field(default_factory=list)
    recv_bytes: list[int] = field(default_factory=list)
    sent_msgs: list[int] = field(default_factory=list)
    recv_msgs: list[int] = field(default_factory=list)
    proposed: dict[int, int] = field(default_factory=dict)  # height -> first PRE-PREPARE
    commits: dict[int, dict[int, int]] = field(default_factory=dict)  # height -> node -> ms
    views: list[tuple[int, int, int]] = field(default_factory=list)  # (ms, node, view)

    def __post_init__(self) -> None:
        for counts in (self.sent_bytes, self.recv_bytes, self.sent_msgs, self.recv_msgs):
            counts.extend([0] * self.nodes)

    def on_send(self, src: int, dsts: list[int], channel: str, payload: bytes, now: int) -> None:
        """``payload`` left ``src`` for each of ``dsts``."""
        if not dsts:
            return
        if channel == CONSENSUS:
            kind = payload[1] if len(payload) > 1 else -1
            label = KIND_NAMES.get(kind, "consensus_other")
            if kind == Kind.PRE_PREPARE:
                msg = decode_message(payload)
                assert isinstance(msg, PrePrepare)
                self.proposed.setdefault(msg.height, now)
        else:
            label = "tx_gossip" if channel == TXS else channel
        self.count(src, dsts, label, len(payload))

    def count(self, src: int, dsts: list[int], label: str, size: int) -> None:
        k = len(dsts)
        self.msgs[label] += k
        self.size[label] += k * size
        self.sent_msgs[src] += k
        self.sent_bytes[src] += k * size
        for d in dsts:
            self.recv_msgs[d] += 1
            self.recv_bytes[d] += size

    def on_commit(self, node: int, height: int, now: int) -> None:
        self.commits.setdefault(height, {}).setdefault(node, now)

    def on_view(self, node: int, view: int, now: int) -> None:
        self.views.append((now, node, view))

    def snapshot(self) -> Snapshot:
        return Snapshot(
            Counter(self.msgs),
            Counter(self.size),
            list(self.sent_bytes),
            list(self.recv_bytes),
            list(self.sent_msgs),
            list(self.recv_msgs),
        )

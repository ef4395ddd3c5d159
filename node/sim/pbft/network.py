"""Simulated time and network: one seeded scheduler, lossy reordering links, partitions.

``SimNetwork`` owns the event heap (simulated milliseconds, FIFO among equal times)
and the link model. A message sent at time t is delivered at t + delay, delay drawn
uniformly from [min_delay_ms, max_delay_ms] (so messages reorder), unless it is lost
(probability ``loss``), and it may be delivered twice (``duplicate``). Whether two
nodes can talk is decided at *delivery* time by the current partition and by the
``filters`` (test hooks: ``filter(src, dst, message) -> True`` drops it), like
raft's test network ``cut``/``isolate``/``recover``. ``extra_delay_ms`` adds a fixed
one-way delay to every message to or from a node (a member far away: both ends add).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Filter = Callable[[int, int, Any], bool]


@dataclass
class LinkModel:
    min_delay_ms: int = 1
    max_delay_ms: int = 20
    loss: float = 0.0
    duplicate: float = 0.0


class SimNetwork:
    """The event scheduler plus message links between node indexes."""

    def __init__(self, rng: random.Random, link: LinkModel | None = None) -> None:
        self.rng = rng
        self.link = link or LinkModel()
        self.now = 0
        self._heap: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.groups: dict[int, int] | None = None  # node -> partition group
        self.filters: list[Filter] = []
        self.extra_delay_ms: dict[int, int] = {}  # node -> added one-way delay
        self.sent = 0
        self.delivered = 0
        self.dropped = 0

    # -- scheduling -----------------------------------------------------------------

    def at(self, time_ms: int, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(time_ms, self.now), self._seq, fn, args))

    def after(self, delay_ms: int, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay_ms, fn, *args)

    def next_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def run_one(self) -> bool:
        if not self._heap:
            return False
        time_ms, _, fn, args = heapq.heappop(self._heap)
        self.now = time_ms
        fn(*args)
        return True

    # -- partitions -------------------------------------------------------------------

    def partition(self, groups: list[list[int]]) -> None:
        self.groups = {node: g for g, members in enumerate(groups) for node in members}

    def heal(self) -> None:
        self.groups = None

    def connected(self, a: int, b: int) -> bool:
        if self.groups is None:
            return True
        return self.groups.get(a, -1) == self.groups.get(b, -2)

    # -- messages ----------------------------------------------------------------------

    def delay(self) -> int:
        link = self.link  # rng.random() is several times cheaper than randint
        span = link.max_delay_ms - link.min_delay_ms + 1
        return link.min_delay_ms + int(self.rng.random() * span)

    def send(
        self, src: int, dst: int, message: Any, deliver: Callable[[int, int, Any], None]
    ) -> None:
        self.sent += 1
        rng = self.rng
        if self.link.loss and rng.random() < self.link.loss:
            self.dropped += 1
            return
        copies = 2 if self.link.duplicate and rng.random() < self.link.duplicate else 1
        link = self.link
        span = link.max_delay_ms - link.min_delay_ms + 1
        extra = self.extra_delay_ms
        base = extra.get(src, 0) + extra.get(dst, 0) if extra else 0
        for _ in range(copies):
            self._seq += 1
            delay = base + link.min_delay_ms + int(rng.random() * span)
            heapq.heappush(
                self._heap,
                (self.now + delay, self._seq, self._arrive, (src, dst, message, deliver)),
            )

    def _arrive(
        self, src: int, dst: int, message: Any, deliver: Callable[[int, int, Any], None]
    ) -> None:
        if not self.connected(src, dst) or any(f(src, dst, message) for f in self.filters):
            self.dropped += 1
            return
        self.delivered += 1
        deliver(src, dst, message)

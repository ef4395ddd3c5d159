"""Joining by state sync: an empty node fetches a certified state snapshot from a peer.

``join`` is what ``node.node.Node.run`` does first when ``[node] state_sync = true`` and
the store holds nothing but the genesis block (a new node, or one whose disk was lost).
Before the node serves RPC, votes or answers peers' sync requests:

1. It asks the connected peers for their heights (``["status"]``) for up to
   ``WAIT_PEERS_S``. If no peer is above genesis it returns None and the node catches
   up block by block as without state sync (e.g. every node of a new network).
2. From the highest peer it asks the snapshot height s (``["snapshot"]``: the peer's
   head, which the peer then keeps as a state version while it is fetched), then pages
   through the headers 0..s, the state leaves at s and the bodies of the transaction
   lifetime below s (node/sync.py's ``snap_*`` requests), feeding each page to
   ``ledger.state_snapshot.SnapshotImport``, which verifies it against the genesis file
   and the certified header s before anything is kept (the trust argument is that
   module's).
3. Any failure (a refused or malformed page, a timeout, a page that does not verify)
   is logged and the whole import starts again from the best peer after ``RETRY_S``,
   the failing peer last; once an import has begun the node never starts without one.

Afterwards the node opens the imported store as its ledger and catches up from s + 1
with the normal block sync.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from ledger.errors import DecodeError, StoreError
from ledger.state_snapshot import (
    HEADERS_PER_CHUNK,
    LEAVES_PER_CHUNK,
    SnapshotError,
    SnapshotImport,
    SnapshotInfo,
    parse_chunk,
)
from ledger.store import Store
from ledger.types import Genesis
from node import sync
from node.logs import get_logger
from node.transport import Transport, TransportError

log = get_logger("state_sync")

#: How long to wait for a peer above genesis before starting without state sync.
WAIT_PEERS_S = 10.0
POLL_S = 0.2
#: One page's wait (a page is at most a few MiB).
REQUEST_TIMEOUT_S = 30.0
RETRY_S = 1.0


@dataclass
class JoinReport:
    """What ``join`` did: the snapshot imported, from whom, how long it took."""

    info: SnapshotInfo
    peer: bytes
    attempts: int
    elapsed_s: float
    failures: list[str] = field(default_factory=list)


async def _heights(transport: Transport) -> dict[bytes, int]:
    heights: dict[bytes, int] = {}
    for peer in sorted(transport.connected_peers()):
        try:
            data = await transport.request(peer, sync.status_request(), 2.0)
            heights[peer] = sync.parse_status(data)[0]
        except (TransportError, DecodeError):
            continue
    return heights


Ask = Callable[[bytes], Awaitable[bytes]]


async def fetch(ask: Ask, store: Store, genesis: Genesis) -> SnapshotInfo:
    """One import into ``store`` of the snapshot a peer serves through ``ask(request) ->
    answer`` (raises on any failure)."""
    head = parse_chunk(await ask(sync.snapshot_request()))
    if head[0] != "snapshot":
        raise SnapshotError("the peer did not answer with a snapshot height")
    s: int = head[1]
    imp = SnapshotImport(store, genesis, s)
    while imp.next_header <= s:
        last = min(s, imp.next_header + HEADERS_PER_CHUNK - 1)
        imp.feed(await ask(sync.snap_headers_request(imp.next_header, last)))
    while not imp.leaves_done:
        request = sync.snap_leaves_request(s, imp.last_key, LEAVES_PER_CHUNK)
        imp.feed(await ask(request))
    while imp.next_body <= s:
        imp.feed(await ask(sync.snap_bodies_request(imp.next_body, s)))
    return imp.finish()


async def join(transport: Transport, store: Store, genesis: Genesis) -> JoinReport | None:
    """Fill the genesis-only ``store`` from a peer's snapshot (module docstring); None if
    no peer above genesis answered within ``WAIT_PEERS_S``."""
    t0 = time.perf_counter()
    deadline = trio.current_time() + WAIT_PEERS_S
    failures: list[str] = []
    last_failed: bytes | None = None
    attempts = 0
    while True:
        heights = {p: h for p, h in (await _heights(transport)).items() if h >= 1}
        if not heights:
            if attempts == 0 and trio.current_time() >= deadline:
                return None
            await trio.sleep(POLL_S)
            continue
        # The highest peer; one that just failed only if it is the only one.
        peer = max(heights, key=lambda p: (p != last_failed, heights[p], p))
        attempts += 1
        try:
            info = await fetch(
                partial(transport.request, peer, timeout_s=REQUEST_TIMEOUT_S), store, genesis
            )
        except (SnapshotError, DecodeError, StoreError, TransportError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            failures.append(reason[:300])
            last_failed = peer
            log.warning("state sync failed; starting again", peer=peer, error=reason[:300])
            await trio.sleep(RETRY_S)
            continue
        return JoinReport(info, peer, attempts, time.perf_counter() - t0, failures)


def reset_unfinished(ledger_dir: Path, genesis: Genesis) -> bool:
    """Empty a store left with an unfinished import (a node stopped mid state sync), so
    the node opens it and imports again; True if there was one."""
    if not (ledger_dir / "CURRENT").is_file():
        return False
    with Store.open(ledger_dir, chain_id=genesis.chain_id, genesis_hash=genesis.hash) as store:
        if not store.importing:
            return False
        store.abort_import()
        return True

"""Four nodes in one trio run over the in-memory transport: the node wiring end to end.

The real multi-process tests (libp2p, kill -9) are in tests/system/test_node_processes.py;
these run the same Node code deterministically enough to debug, in a few seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from cli.devnet_files import create_devnet
from ledger.codec import encode
from ledger.types import Transaction
from node.config import load_config
from node.node import Node
from node.transport import TXS, MemoryHub
from p2p.runtime import TaskStatus
from tests.support.cluster import attest, transport_factory, wait_until


def _cluster(root: Path, **params: int) -> tuple[MemoryHub, list[Node]]:
    """Four validator nodes of a fresh devnet over one in-memory hub (not started)."""
    entries = create_devnet(root, nodes=4, params=params)
    hub = MemoryHub()
    return hub, [Node(load_config(e.config), transport_factory(hub)) for e in entries]


async def _start(nursery: trio.Nursery, nodes: list[Node]) -> None:
    for n in nodes:
        await nursery.start(n.run)


async def _run_cluster(root: Path, seconds_budget: float) -> list[Node]:
    _hub, nodes = _cluster(root, heartbeat_ms=200)
    async with trio.open_nursery() as nursery:
        await _start(nursery, nodes)
        with trio.fail_after(seconds_budget):
            # transactions submitted to different nodes
            for i in range(40):
                nodes[i % 4].submit(attest(root, i))
            await wait_until(
                lambda: (
                    min(n.ledger.height for n in nodes) >= 6
                    and not any(len(n.mempool) for n in nodes)
                ),
                "every node at height 6 with an empty mempool",
                timeout_s=seconds_budget,
            )
        nursery.cancel_scope.cancel()
    return nodes


def test_four_nodes_commit_the_same_chain(tmp_path: Path) -> None:
    nodes = trio.run(_run_cluster, tmp_path / "net", 60.0)
    heights = [n.ledger.height for n in nodes]
    assert min(heights) >= 6
    # reopen the stores (the nodes closed them on shutdown) and compare block ids
    from ledger.chain import Ledger

    ledgers = [Ledger.open(n.config.data_dir / "ledger", n.genesis, create=False) for n in nodes]
    try:
        top = min(lg.height for lg in ledgers)
        for h in range(top + 1):
            assert len({lg.store.get_block_id(h) for lg in ledgers}) == 1, f"fork at {h}"
        committed = sum(
            ledgers[0].store.get_block(h).header.tx_count  # type: ignore[union-attr]
            for h in range(1, ledgers[0].height + 1)
        )
        assert committed == 40
    finally:
        for lg in ledgers:
            lg.close()


async def _restart_after_checkpoint(root: Path) -> tuple[list[Node], int]:
    hub, nodes = _cluster(root, heartbeat_ms=100, checkpoint_interval=8)
    scopes: list[tuple[trio.CancelScope, trio.Event]] = []
    async with trio.open_nursery() as nursery:

        async def start(node: Node) -> tuple[trio.CancelScope, trio.Event]:
            scope, stopped = trio.CancelScope(), trio.Event()

            async def runner(task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                try:
                    with scope:
                        await node.run(task_status=task_status)
                finally:
                    stopped.set()  # the node has closed its stores: its data may be reopened

            await nursery.start(runner)
            return scope, stopped

        for n in nodes:
            scopes.append(await start(n))
        with trio.fail_after(60):
            await wait_until(lambda: nodes[1].ledger.height >= 12, "past a stable checkpoint")
            scope, stopped = scopes[0]
            scope.cancel()  # stop the primary, then bring it back on the same data
            hub.endpoints[nodes[0].key.public_key].up = False
            await stopped.wait()
            nodes[0] = Node(nodes[0].config, transport_factory(hub))  # the same node, restarted
            scopes[0] = await start(nodes[0])
            target = max(n.ledger.height for n in nodes) + 10
            await wait_until(
                lambda: min(n.ledger.height for n in nodes) >= target,
                f"all nodes, the restarted one too, at height {target}",
            )
        sent = max(n.replica.stats.get("help_sent", 0) for n in nodes if n.replica)
        nursery.cancel_scope.cancel()
    return nodes, sent


def test_restart_after_a_checkpoint_does_not_start_a_message_storm(tmp_path: Path) -> None:
    """Regression: stale CHECKPOINTs were answered every time, and replicas that were all
    stable kept 'helping' each other with forwarded proofs (thousands of messages a
    second, starving consensus) once a restarted node retransmitted its checkpoint."""
    _nodes, help_sent = trio.run(_restart_after_checkpoint, tmp_path / "net")
    assert help_sent < 50


async def _idle_primary_dies(root: Path) -> tuple[int, int]:
    hub, nodes = _cluster(root, heartbeat_ms=200, view_timeout_ms=500)
    async with trio.open_nursery() as nursery:
        await _start(nursery, nodes)
        with trio.fail_after(60):
            await wait_until(lambda: nodes[1].ledger.height >= 3, "height 3")
            primary = nodes[0].key.public_key  # cnix: validators[0], primary of view 0
            assert nodes[1].replica is not None and nodes[1].replica.view == 0
            hub.isolate(primary)  # the primary is cut off while nothing is pending
            rest = [n for n in nodes if n.key.public_key != primary]
            start = min(n.ledger.height for n in rest)
            await wait_until(
                lambda: min(n.ledger.height for n in rest) >= start + 3,
                "three more blocks without the primary",
            )
        views = min(n.replica.view for n in rest)  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()
    return start, views


def test_idle_chain_replaces_a_dead_primary(tmp_path: Path) -> None:
    """Heartbeat blocks keep coming when the primary dies while no transaction is pending."""
    _start, views = trio.run(_idle_primary_dies, tmp_path / "net")
    assert views >= 1


async def _censoring_primary(root: Path) -> tuple[list[Node], Transaction]:
    _hub, nodes = _cluster(root, heartbeat_ms=200, view_timeout_ms=300)
    victim = attest(root, 7)
    primary = nodes[0]  # cnix: validators[0], primary of view 0
    honest_take = primary.mempool.take

    def take(*args: object, **kwargs: object) -> list[Transaction]:
        return [
            tx
            for tx in honest_take(*args, **kwargs)  # type: ignore[arg-type]
            if tx.tx_id != victim.tx_id
        ]

    primary.mempool.take = take  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await _start(nursery, nodes)
        with trio.fail_after(60):
            await wait_until(lambda: nodes[1].ledger.height >= 2, "height 2")
            nodes[1].submit(victim)
            await wait_until(
                lambda: all(n.committed_height_of(victim.tx_id) is not None for n in nodes),
                "the censored transaction committed on every node",
            )
        nursery.cancel_scope.cancel()
    return nodes, victim


def test_a_censorship_view_change_says_which_transaction(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A primary that leaves one transaction out of its blocks is replaced, and the
    backups' logs name the transaction they accused it of censoring."""
    caplog.set_level(logging.WARNING, logger="dvp")
    nodes, victim = trio.run(_censoring_primary, tmp_path / "net")
    assert all(n.replica is not None and n.replica.view >= 1 for n in nodes[1:])
    named = [
        r.fields
        for r in caplog.records  # type: ignore[attr-defined]
        if r.getMessage().startswith("censorship timeout")
    ]
    assert named, "no censorship timeout was logged"
    first = named[0]["oldest"][0]
    assert first["tx"] == victim.tx_id[:8].hex() and first["in_mempool"] is True


async def _client_queue(root: Path) -> tuple[list[str], list[str], int, list[Node]]:
    # Derived client limit: 2 x pipeline_window (1) x max_block_txs (2) = 4 pending.
    _hub, nodes = _cluster(root, heartbeat_ms=200, max_block_txs=2, pipeline_window=1)
    door = nodes[1]
    txs = [attest(root, i) for i in range(10)]
    first = [door.submit(tx).status.value for tx in txs[:6]]
    # A resubmission of a queued transaction is still "pending", not busy; a peer's
    # gossip is admitted past the client limit (up to the hard bound).
    again = [door.submit(txs[0]).status.value, door.submit(txs[6], gossip=False).status.value]
    refused_before = door.mempool.stats["busy"]
    async with trio.open_nursery() as nursery:
        await _start(nursery, nodes)
        with trio.fail_after(60):
            await wait_until(lambda: not len(door.mempool), "the chain drained the queue")
            for tx in txs[7:]:  # ...and clients are served again
                assert door.submit(tx).status.value == "added"
            done = [txs[i] for i in (0, 1, 2, 3, 6, 7, 8, 9)]
            await wait_until(
                lambda: all(
                    n.committed_height_of(tx.tx_id) is not None for n in nodes for tx in done
                ),
                "the admitted transactions committed on every node",
            )
        # the refused ones never entered any mempool or block
        never = [n.committed_height_of(txs[i].tx_id) for n in nodes for i in (4, 5)]
        limit = door.client_limit()
        nursery.cancel_scope.cancel()
    assert never == [None] * 8
    assert limit == 4
    return first, again, refused_before, nodes


def test_clients_are_told_busy_once_two_pipelines_are_queued(tmp_path: Path) -> None:
    """A node refuses clients' transactions (busy, before checking them) once it holds
    2 x pipeline_window x max_block_txs pending, and serves them again when blocks have
    drained its queue; what it accepted commits everywhere."""
    first, again, refused, nodes = trio.run(_client_queue, tmp_path / "net")
    assert first == ["added"] * 4 + ["busy"] * 2
    assert again == ["duplicate", "added"]
    assert refused == 2
    assert nodes[1].metrics.client_refused._value.get() == 2  # type: ignore[attr-defined]


def test_client_queue_limit_from_the_config(tmp_path: Path) -> None:
    from node.config import ConfigError

    entries = create_devnet(tmp_path / "net", nodes=4)
    path = entries[0].config
    text = path.read_text()
    path.write_text(text + "\n[mempool]\nclient_max_txs = 0\n")
    with pytest.raises(
        ConfigError,
        match=r"\[mempool\] client_max_txs: expected a value greater than or equal to 1, got 0",
    ):
        load_config(path)
    path.write_text(text + "\n[mempool]\nclient_max_txs = 7\n")
    node = Node(load_config(path), transport_factory(MemoryHub()))
    try:
        assert node.client_limit() == 7
    finally:
        node.close()


async def _slow_disk(root: Path) -> list[Node]:
    from node.node import SLOW_WRITE_MS

    _hub, nodes = _cluster(root, heartbeat_ms=200)
    real_commit = nodes[1].ledger.commit

    def slow_commit(*args, **kwargs):  # type: ignore[no-untyped-def]
        import time

        time.sleep(SLOW_WRITE_MS / 1000 + 0.05)  # what a stalled fdatasync looks like
        return real_commit(*args, **kwargs)

    nodes[1].ledger.commit = slow_commit  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await _start(nursery, nodes)
        with trio.fail_after(60):
            tx = attest(root, 1)
            nodes[0].submit(tx)
            await wait_until(
                lambda: all(n.committed_height_of(tx.tx_id) is not None for n in nodes),
                "the transaction committed on every node",
            )
        nursery.cancel_scope.cancel()
    return nodes


def test_a_slow_disk_write_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A commit that holds the node for longer than SLOW_WRITE_MS is logged with what it
    was, how long it took and the height: the explanation of a latency spike."""
    from node.node import SLOW_WRITE_MS

    caplog.set_level(logging.WARNING, logger="dvp")
    trio.run(_slow_disk, tmp_path / "net")
    slow = [
        r.fields
        for r in caplog.records  # type: ignore[attr-defined]
        if r.getMessage() == "slow synced write"
    ]
    assert slow and all(
        f["what"] == "block commit" and f["ms"] >= SLOW_WRITE_MS and f["height"] >= 1 for f in slow
    )


async def _late_pending(root: Path) -> tuple[bool, bool, int]:
    _hub, nodes = _cluster(root, heartbeat_ms=200)
    node = nodes[1]
    async with trio.open_nursery() as nursery:
        await _start(nursery, nodes)
        with trio.fail_after(60):
            await wait_until(
                lambda: node.replica is not None and node.ledger.height >= 2,
                "node 1 voting at height 2",
            )
            # The race, made certain: a transaction that committed arrives again (a
            # peer's late gossip of it) after its block removed it from the mempool.
            tx = attest(root, 5)
            node.submit(tx)
            await wait_until(
                lambda: all(n.committed_height_of(tx.tx_id) is not None for n in nodes),
                "the transaction committed on every node",
            )
            node.deliver(TXS, nodes[0].key.public_key, encode([tx.encoded]))
            # The core has taken the frame (its queue is empty) and flushed what it
            # admitted (nothing left to tell the replica).
            await wait_until(
                lambda: (
                    node.events_rx.statistics().current_buffer_used == 0
                    and not node.core._new_pending
                ),
                "the core took the gossiped frame and flushed",
            )
            assert node.replica is not None
            stuck = tx.tx_id in node.replica.pending_txs
            # while one still in the mempool is tracked (a doomed second attestation,
            # as gossip admits it without state look-ups, until the re-check drops it)
            twin = attest(root, 5, expiry=201)
            node.submit(twin, gossip=False)
            await wait_until(lambda: not node.core._new_pending, "the twin's flush")
            tracked = twin.tx_id in node.replica.pending_txs or twin.tx_id not in node.mempool
            view = node.replica.view
        nursery.cancel_scope.cancel()
    return stuck, tracked, view


def test_a_transaction_committed_while_its_pending_event_waited_is_not_left_pending(
    tmp_path: Path,
) -> None:
    """Regression (RELIABILITY 3.5 item 6): a transaction that committed must not be
    left "pending" in the replica when it shows up again, where its censorship timer
    would force view change after view change."""
    stuck, tracked, view = trio.run(_late_pending, tmp_path / "net")
    assert not stuck
    assert tracked
    assert view == 0

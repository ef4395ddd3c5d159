"""State sync (issue 19 item 2), scaled down: joining and recovering from a certified
snapshot instead of replaying every block.

Four validators of a devnet in one trio run (in-memory transport, real RPC over HTTP),
with a transaction lifetime of a few heights so that a snapshot carries only the newest
bodies. After some attested history:

- an observer started empty with ``[node] state_sync = true`` imports a peer's snapshot
  before it serves anything (its store keeps every header but only the bodies of the
  transaction lifetime below the snapshot), reaches the head, and serves VALID proofs
  for new attestations and the "pruned, ask an archive node" error for old ones;
- a validator whose data directory is wiped restarts with state sync, catches up, and
  votes again: with another validator stopped, the chain commits only with its vote;
- ``dvp store check`` (the full check) and ``dvp audit replay --datadir`` pass on the
  observer's data directory.

The full-size comparison with catch-up by blocks is scripts/bench_join.py's.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from cli.devnet_files import create_devnet
from ledger.audit import replay_datadir
from ledger.genesis import read_genesis
from ledger.types import Transaction
from ledger.verify import TrustAnchor, verify_bundle_json
from node.config import load_config
from node.node import Node
from node.stores import check_datadir
from node.transport import MemoryHub
from tests.support.cluster import attest, transport_factory, wait_until
from tests.support.rpc_node import call, error_code

pytestmark = [pytest.mark.timeout(300)]

TTL = 6
ROUNDS = 8


def _enable_state_sync(config: Path) -> None:
    text = config.read_text()
    assert "[node]\n" in text
    config.write_text(text.replace("[node]\n", "[node]\nstate_sync = true\n", 1))


def test_observer_joins_and_wiped_validator_recovers_by_state_sync(tmp_path: Path) -> None:
    root = tmp_path / "net"
    entries = create_devnet(
        root, nodes=4, observers=1, params={"heartbeat_ms": 200, "tx_ttl_heights": TTL}
    )
    validators, observer = entries[:4], entries[4]
    _enable_state_sync(observer.config)
    genesis = read_genesis(root / "genesis.json")
    anchor = TrustAnchor(genesis.chain_id, genesis.validators)
    seen: dict[str, Any] = {}
    serial = iter(range(1000))

    def rpc_checks(port: int, old: Transaction, new: Transaction) -> None:
        now = int(time.time() * 1000)
        c_new = new.payload.commitment  # type: ignore[union-attr]
        doc = call(port, "getAttestationProof", {"commitment": c_new.hex()})["result"]
        verdict = verify_bundle_json(doc, anchor, now_ms=now, max_age_ms=None)
        assert verdict.status.name == "VALID", verdict
        c_old = old.payload.commitment  # type: ignore[union-attr]
        refused = call(port, "getAttestationProof", {"commitment": c_old.hex()})
        assert error_code(refused) == -32006, refused
        assert "archive node" in refused["error"]["message"]
        seen["rpc"] = True

    async def main() -> None:
        hub = MemoryHub()
        scopes: dict[bytes, trio.CancelScope] = {}

        async def run(node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                scopes[node.key.public_key] = scope
                await node.run(task_status=task_status)

        async def stop(node: Node) -> None:
            hub.endpoints[node.key.public_key].up = False
            scopes[node.key.public_key].cancel()
            await trio.sleep(0.2)

        async def commit_round(nodes: list[Node], n: int, via: Node) -> list[Transaction]:
            txs = [attest(root, next(serial), via.ledger.height + TTL - 1) for _ in range(n)]
            for tx in txs:
                via.submit(tx)
            await wait_until(
                lambda: all(n.ledger.store.tx_location(t.tx_id) for n in nodes for t in txs),
                "a round committed on every node",
                timeout_s=90,
            )
            return txs

        nodes = [Node(load_config(e.config), transport_factory(hub)) for e in validators]
        async with trio.open_nursery() as nursery:
            for n in nodes:
                await nursery.start(run, n)
            with trio.fail_after(240):
                history: list[Transaction] = []
                for r in range(ROUNDS):
                    history += await commit_round(nodes, 2, nodes[r % 4])
                await wait_until(lambda: nodes[0].ledger.height > 3 * TTL, "a longer chain")

                # An observer joins by state sync (``run`` returns once it has imported).
                late = Node(load_config(observer.config), transport_factory(hub))
                assert late.joining
                await nursery.start(run, late)
                store = late.ledger.store
                assert not late.joining and store.height > 3 * TTL
                assert 1 < store.bodies_from <= store.height, store.bodies_from
                assert store.get_header(1) is not None  # every header is kept
                target = nodes[0].ledger.height
                await wait_until(
                    lambda: late.ledger.height >= target, "the observer reached the head"
                )
                new = await commit_round([*nodes, late], 1, nodes[1])
                assert late.ledger.store.bodies_from > 1  # it never replayed from genesis
                await trio.to_thread.run_sync(rpc_checks, late.rpc_ports["rpc"], history[0], new[0])

                # A validator loses its disk and comes back by state sync.
                victim = nodes[3]
                await stop(victim)
                name = validators[3].name
                shutil.rmtree(root / "data" / name)
                _enable_state_sync(validators[3].config)
                reborn = Node(load_config(validators[3].config), transport_factory(hub))
                assert reborn.joining
                await nursery.start(run, reborn)
                assert reborn.ledger.store.bodies_from > 1
                target = nodes[0].ledger.height
                await wait_until(lambda: reborn.ledger.height >= target, "the validator caught up")
                # With validator 2 stopped, a quorum (3 of 4) needs the reborn validator.
                await stop(nodes[2])
                live = [nodes[0], nodes[1], reborn, late]
                await commit_round(live, 2, nodes[0])
                seen["voted"] = reborn.replica is not None
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert seen.get("rpc") and seen.get("voted")
    checked = check_datadir(root / "data" / observer.name, genesis, workdir=tmp_path)
    assert checked.ok, checked.damage
    assert checked.ledger is not None and checked.ledger.state_entries
    # The auditor replays it like a pruned store: certified headers from genesis, the
    # state at the snapshot against its header, the blocks above re-executed.
    replay = replay_datadir(root / "data" / observer.name, genesis, workdir=tmp_path)
    assert replay.ok, replay.failure

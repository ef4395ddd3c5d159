"""Bounded disks (issue 19 item 3), scaled down: pruned nodes beside an archive node.

Four validators of a devnet in one trio run (in-memory transport, real RPC over HTTP):
one is an archive node (the one with the highest key, so that a catching-up node asks a
pruned peer first), the three others keep the newest ``RETAIN`` block bodies (``[ledger]
retain_blocks``). Attestations are committed over many heights, then:

- proofs of old attestations on a pruned node answer -32006, naming the retention and
  an archive node; the archive node serves them; recent ones verify on a pruned node;
- ``getBlock`` / ``getTransaction`` of a pruned height answer the same error;
- an observer started empty afterwards catches up to the head: the pruned peers refuse
  the old ranges and it fetches them from the archive node;
- ``dvp audit replay`` replays the archive node from genesis and a pruned node from a
  certified snapshot, both to the archive's state roots; over a pruned node's RPC it
  refuses (exit 2) naming the pruning and an archive node.

The full-size figures are scripts/bench_disk.py's (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from cli.devnet_files import create_devnet
from ledger.audit import replay_datadir, snapshot_height
from ledger.chain import Ledger
from ledger.codec import decode
from ledger.crypto import read_key_file
from ledger.genesis import read_genesis
from ledger.store import Store
from ledger.verify import TrustAnchor, verify_bundle_json
from node import sync
from node.config import load_config
from node.node import Node
from node.transport import MemoryHub
from tests.support.cluster import attest, transport_factory, wait_until
from tests.support.rpc_node import call, error_code

pytestmark = [pytest.mark.timeout(240)]

RETAIN = 4
ROUNDS = 14  # heights with attestations: well above RETAIN + the pruning per commit
REPO = Path(__file__).resolve().parents[2]


def _dvp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def _valid(doc: dict[str, Any], anchor: TrustAnchor) -> bool:
    now = int(time.time() * 1000)
    return verify_bundle_json(doc, anchor, now_ms=now, max_age_ms=None).status.name == "VALID"


def test_pruned_nodes_refuse_old_proofs_archive_serves_and_audits_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "net"
    entries = create_devnet(root, nodes=4, observers=1, params={"heartbeat_ms": 200})
    observer = entries[4]
    validators = sorted(
        entries[:4],
        key=lambda e: read_key_file(load_config(e.config).key_file).public_key,
        reverse=True,
    )  # the archive first: the highest key, asked last by a catching-up node
    for e in validators[1:]:
        e.config.write_text(e.config.read_text() + f"\n[ledger]\nretain_blocks = {RETAIN}\n")
    refusals: list[bytes] = []
    serve = sync.serve

    def counting_serve(store: Store, request: bytes) -> bytes:
        answer = serve(store, request)
        if decode(answer)[0] == "error":
            refusals.append(answer)
        return answer

    monkeypatch.setattr(sync, "serve", counting_serve)
    genesis = read_genesis(root / "genesis.json")
    anchor = TrustAnchor(genesis.chain_id, genesis.validators)
    txs = [attest(root, i) for i in range(2 * ROUNDS)]
    committed_at: dict[bytes, int] = {}
    seen: dict[str, object] = {}

    def rpc_checks(archive: Node, pruned: Node) -> None:
        old_tx, new_tx = txs[0], txs[-1]
        old, new = old_tx.payload.commitment, new_tx.payload.commitment  # type: ignore[union-attr]
        a, p = archive.rpc_ports["rpc"], pruned.rpc_ports["rpc"]
        refused = call(p, "getAttestationProof", {"commitment": old.hex()})
        assert error_code(refused) == -32006, refused
        message = refused["error"]["message"]
        assert f"newest {RETAIN} block bodies" in message and "archive node" in message
        assert refused["error"]["data"]["height"] == committed_at[old_tx.tx_id]
        now = int(time.time() * 1000)
        served = call(a, "getAttestationProof", {"commitment": old.hex()})["result"]
        assert (
            verify_bundle_json(served, anchor, now_ms=now, max_age_ms=None).status.name == "VALID"
        )
        recent = call(p, "getAttestationProof", {"commitment": new.hex()})["result"]
        assert (
            verify_bundle_json(recent, anchor, now_ms=now, max_age_ms=None).status.name == "VALID"
        )
        for method, params in (
            ("getTransaction", {"tx_id": old_tx.tx_id.hex()}),
            ("getBlock", {"height": committed_at[old_tx.tx_id]}),
        ):
            assert error_code(call(p, method, params)) == -32006, method
        # A replay from genesis over the pruned node's RPC is refused, saying why.
        run = _dvp(
            "audit",
            "replay",
            "--rpc",
            f"http://127.0.0.1:{p}/",
            "--genesis",
            str(root / "genesis.json"),
        )
        assert run.returncode == 2, run.stderr
        assert "pruned" in run.stderr and "archive node" in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert call(a, "status")["result"]["bodies_from"] == 0
        assert call(p, "status")["result"]["bodies_from"] == pruned.ledger.store.bodies_from > 0
        seen["rpc"] = True

    async def main() -> None:
        hub = MemoryHub()
        nodes = [Node(load_config(e.config), transport_factory(hub)) for e in validators]
        async with trio.open_nursery() as nursery:
            for n in nodes:
                await nursery.start(n.run)
            with trio.fail_after(180):
                for r in range(ROUNDS):
                    start = nodes[0].ledger.height
                    for tx in txs[2 * r : 2 * r + 2]:
                        nodes[r % 4].submit(tx)
                    await wait_until(
                        lambda s=start: (
                            min(n.ledger.height for n in nodes) > s
                            and not any(len(n.mempool) for n in nodes)
                        ),
                        f"round {r} committed everywhere",
                    )
                for tx in txs:
                    loc = nodes[0].ledger.store.tx_location(tx.tx_id)
                    assert loc is not None
                    committed_at[tx.tx_id] = loc[0]
                pruned = nodes[1]
                assert pruned.ledger.store.bodies_from > committed_at[txs[0].tx_id]
                assert nodes[0].ledger.store.bodies_from == 0
                await trio.to_thread.run_sync(rpc_checks, nodes[0], pruned)
                # A fresh observer: its pruned peers refuse the old heights.
                late = Node(load_config(observer.config), transport_factory(hub))
                await nursery.start(late.run)
                target = nodes[0].ledger.height
                await wait_until(lambda: late.ledger.height >= target, "the observer caught up")
                seen["caught_up"] = late.ledger.store.get_block_id(target)
                seen["block_id"] = nodes[0].ledger.store.get_block_id(target)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert seen["rpc"] and seen["caught_up"] == seen["block_id"]
    assert refusals and all(b"ask an archive peer" in r for r in refusals)

    archive_dir = root / "data" / validators[0].name
    pruned_dir = root / "data" / validators[1].name
    full = replay_datadir(archive_dir, genesis, workdir=tmp_path)
    assert full.ok and full.transactions == len(txs), full.failure
    with Ledger.open(pruned_dir / "ledger", genesis, create=False) as lg:
        start, head = snapshot_height(lg.store), lg.height
        assert 0 < lg.store.bodies_from <= start + 1 <= head
    snap = replay_datadir(pruned_dir, genesis, workdir=tmp_path)
    assert snap.ok, snap.failure
    assert snap.height == head
    assert any(f"re-executed blocks {start + 1}..{head}" in n for n in snap.notes), snap.notes
    with Ledger.open(archive_dir / "ledger", genesis, create=False) as lg:
        header = lg.store.get_header(head)
        assert header is not None and header.state_root == snap.state_root
        kept = [lg.store.get_header(h) for h in range(start + 1, head + 1)]
        assert snap.transactions == sum(h.tx_count for h in kept if h is not None)
    run = _dvp("audit", "replay", "--datadir", str(pruned_dir))
    assert run.returncode == 0, run.stderr
    assert "verified" in run.stdout and "pruned" in run.stderr

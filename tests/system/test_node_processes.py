"""Real node processes on 127.0.0.1 over py-libp2p: the consortium as an operator runs it.

One devnet (4 validators + 1 observer started late) serves the tests of this module in
order: commits with transactions sent to different nodes, kill -9 of a replica and of
the primary under load, the late observer, and a non-member that is refused.
Processes are always stopped in teardown (``devnet down``: SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import devnet
from cli.devnet_files import NodeEntry, load_devnet
from cli.rpc_client import RpcCallError, RpcClient
from ledger.crypto import read_key_file
from ledger.types import Attest, Transaction

pytestmark = [pytest.mark.processes, pytest.mark.timeout(600)]

HEARTBEAT_MS = 500


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("devnet")
    try:
        devnet.up(
            root,
            nodes=4,
            observers=1,
            wait_s=90,
            only=["cnix", "hkbank", "szcredit", "webank"],
            params={"heartbeat_ms": HEARTBEAT_MS, "view_timeout_ms": 1000},
        )
        yield root
    finally:
        if (root / "devnet.json").exists():
            devnet.down(root, grace_s=5)


def _entries(root: Path) -> dict[str, NodeEntry]:
    return {e.name: e for e in load_devnet(root)}


def _client(e: NodeEntry) -> RpcClient:
    return RpcClient(e.rpc_url, timeout_s=10)


def _status(e: NodeEntry) -> dict | None:  # type: ignore[type-arg]
    return devnet.node_status(e, timeout_s=2)


_DOCS = itertools.count(1)


class Issuer:
    """Shenzhen Credit Service attesting fresh documents (unique across the module)."""

    def __init__(self, root: Path) -> None:
        self.key = read_key_file(root / "keys" / "szcredit.member.json")

    def txs(self, count: int, height: int) -> list[Transaction]:
        out = []
        for _ in range(count):
            n = next(_DOCS)
            c = hashlib.sha256(b"process-test %d %d" % (os.getpid(), n)).digest()
            p = Attest("credit-report", c, 1_760_000_000_000, 0, b"")
            out.append(
                Transaction("dvp-demo", self.key.public_key, n, height + 500, p).signed(self.key)
            )
        return out


def _submit(e: NodeEntry, txs: list[Transaction], wait: bool = False) -> list[str]:
    c = _client(e)
    try:
        res = c.call(
            "submitTransactions", txs=[t.encode().hex() for t in txs], wait=wait, timeout_s=30
        )
    finally:
        c.close()
    assert res["accepted"] == len(txs), res
    return [r["tx_id"] for r in res["results"]]


def _wait_height(entries: list[NodeEntry], height: int, timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        sts = [_status(e) for e in entries]
        if all(s is not None and s["height"] >= height for s in sts):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(
        f"not all of {[e.name for e in entries]} reached height {height} in "
        f"{timeout_s} s: {[s and s['height'] for s in sts]}"
    )


def _block_ids(e: NodeEntry, top: int) -> list[str]:
    c = _client(e)
    try:
        return [c.call("getHeader", height=h)["block_id"] for h in range(top + 1)]
    finally:
        c.close()


def _assert_same_chain(entries: list[NodeEntry]) -> int:
    top = min(_status(e)["height"] for e in entries)  # type: ignore[index]
    chains = {e.name: _block_ids(e, top) for e in entries}
    first = next(iter(chains.values()))
    for name, ids in chains.items():
        diverged = [h for h, (a, b) in enumerate(zip(ids, first, strict=True)) if a != b]
        assert not diverged, f"{name} disagrees from height {diverged[:1]}"
    return top


def _primary(root: Path) -> str:
    st = _status(_entries(root)["cnix"])
    assert st is not None
    return str(st["primary"])


def test_validators_commit_transactions_sent_to_different_nodes(net: Path) -> None:
    es = _entries(net)
    validators = [es[n] for n in ("cnix", "hkbank", "szcredit", "webank")]
    issuer = Issuer(net)
    height = _status(validators[0])["height"]  # type: ignore[index]
    for i, e in enumerate(validators):
        _submit(e, issuer.txs(25, height), wait=(i == len(validators) - 1))
    _wait_height(validators, 10, 60)
    _assert_same_chain(validators)


def _kill_and_recover(net: Path, victim: str, expect_view_change: bool) -> float:
    es = _entries(net)
    validators = [es[n] for n in ("cnix", "hkbank", "szcredit", "webank")]
    others = [e for e in validators if e.name != victim]
    issuer = Issuer(net)
    pid = devnet.running_pid(net, es[victim])
    assert pid is not None
    base = max(_status(e)["height"] for e in others)  # type: ignore[index]
    _submit(others[0], issuer.txs(50, base))
    os.kill(pid, signal.SIGKILL)
    t_kill = time.monotonic()
    devnet.reap(pid)
    # under load, the other three keep committing (a view change first if it was primary)
    _submit(others[1], issuer.txs(50, base))
    _wait_height(others, base + 4, 60)
    recovered = time.monotonic() - t_kill
    if expect_view_change:
        st = _status(others[0])
        assert st is not None and st["view"] >= 1 and st["primary"] != victim
    devnet.up(net, only=[victim], wait_s=60)
    top = max(_status(e)["height"] for e in others)  # type: ignore[index]
    _wait_height([es[victim]], top, 60)
    _assert_same_chain(validators)
    return recovered


def test_kill_a_replica_under_load_then_restart(net: Path) -> None:
    primary = _primary(net)
    victim = next(n for n in ("webank", "hkbank", "szcredit", "cnix") if n != primary)
    _kill_and_recover(net, victim, expect_view_change=False)


def test_kill_the_primary_under_load_view_change(net: Path) -> None:
    primary = _primary(net)
    seconds = _kill_and_recover(net, primary, expect_view_change=True)
    print(f"\ncommits resumed {seconds:.1f} s after kill -9 of the primary {primary}")


def test_late_observer_syncs_and_serves_reads(net: Path) -> None:
    es = _entries(net)
    obs = es["observer-1"]
    devnet.up(net, only=["observer-1"], wait_s=60)
    top = _status(es["cnix"])["height"]  # type: ignore[index]
    _wait_height([obs], top, 60)
    st = _status(obs)
    assert st is not None and st["role"] == "observer" and st["view"] is None
    _assert_same_chain([es["cnix"], obs])


def test_a_non_member_is_refused(net: Path) -> None:
    """A process with a valid libp2p key that is not a consortium member cannot connect,
    so it cannot inject transactions or consensus messages."""
    import trio

    from ledger.crypto import KeyPair
    from p2p import P2PConfig, P2PHost, RequestError

    es = _entries(net)
    target = es["cnix"]
    cnix_key = read_key_file(net / "keys" / "cnix.node.json").public_key
    intruder = KeyPair.generate()
    before = _status(target)
    outcome: dict[str, object] = {}

    async def attempt() -> None:
        host = P2PHost(
            P2PConfig(
                seed=intruder.seed, listen_port=0, peers={cnix_key: f"127.0.0.1:{target.p2p_port}"}
            )
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(host.run)
            # Several dial attempts, each refused (polled, never connected meanwhile).
            seen: set[bytes] = set()
            with trio.move_on_after(60):
                while host.stats["dial_failures"] < 3:
                    seen |= host.connected_peers()
                    await trio.sleep(0.05)
            assert host.stats["dial_failures"] >= 3, f"three refused dials: {host.stats}"
            outcome["connected"] = seen | host.connected_peers()
            for _ in range(20):
                host.send(cnix_key, "txs", b"\x91\xc4\x01\x00")
                host.send(cnix_key, "consensus", b"\x00" * 100)
            try:
                await host.request(cnix_key, b"\x91\xa6status", 2.0)
                outcome["request"] = "answered"
            except RequestError as exc:
                outcome["request"] = type(exc).__name__
            nursery.cancel_scope.cancel()

    trio.run(attempt)
    assert outcome["connected"] == set()
    assert outcome["request"] != "answered"
    after = _status(target)
    assert before is not None and after is not None
    assert after["peers"] == before["peers"]  # still just the validators
    log = (net / "data" / "cnix" / "node.log").read_text()
    assert "refused a peer that is not in the allowlist" in log


def test_proof_bundles_over_plain_http_verify_offline(net: Path) -> None:
    """A bank fetches bundles with nothing but urllib and checks them with ledger.verify."""
    import json as _json
    import urllib.request

    from ledger.genesis import read_genesis
    from ledger.records import Status
    from ledger.verify import TrustAnchor, verify_bundle_json

    es = _entries(net)
    issuer = Issuer(net)
    height = _status(es["szcredit"])["height"]  # type: ignore[index]
    txs = issuer.txs(3, height)
    _submit(es["szcredit"], txs, wait=True)
    top = _status(es["szcredit"])["height"]  # type: ignore[index]
    _wait_height([es["hkbank"]], top, 30)
    anchor = TrustAnchor.from_genesis(read_genesis(net / "genesis.json"))

    def fetch(commitment: bytes) -> dict:  # type: ignore[type-arg]
        body = _json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "getAttestationProof",
                "params": {"commitment": commitment.hex()},
            }
        ).encode()
        req = urllib.request.Request(
            es["hkbank"].rpc_url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return _json.loads(resp.read())["result"]  # type: ignore[no-any-return]

    for tx in txs:
        doc = fetch(tx.payload.commitment)  # type: ignore[union-attr]
        verdict = verify_bundle_json(doc, anchor, now_ms=int(time.time() * 1000))
        assert verdict.status == Status.VALID and verdict.issuer == "szcredit"
    doc = fetch(hashlib.sha256(b"never attested").digest())
    absent = verify_bundle_json(doc, anchor, now_ms=int(time.time() * 1000))
    assert absent.status == Status.NOT_FOUND


def test_read_methods_return_verifiable_data(net: Path) -> None:
    from ledger import merkle
    from ledger.types import BlockHeader, CommitCertificate, ValidatorSet

    es = _entries(net)
    c = _client(es["webank"])
    try:
        issuer = Issuer(net)
        tx = issuer.txs(1, c.call("status")["height"])[0]
        res = c.call("submitTransaction", tx=tx.encode().hex(), wait=True)
        got = c.call("getTransaction", tx_id=res["tx_id"])
        block = BlockHeader.decode(bytes.fromhex(got["block_header"]))
        assert merkle.verify_inclusion(
            tx.tx_id,
            got["index"],
            block.tx_count,
            [bytes.fromhex(h) for h in got["tx_proof"]],
            block.tx_root,
        )
        head = BlockHeader.decode(bytes.fromhex(got["head"]["header"]))
        vs = c.call("getValidators", height=head.height)
        vset = ValidatorSet.decode(bytes.fromhex(vs["encoded"]))
        assert vset.hash == head.validator_set_hash
        CommitCertificate.decode(bytes.fromhex(got["head"]["certificate"])).verify(
            "dvp-demo", vset, head.block_id
        )
        if block.height < head.height:
            assert merkle.verify_inclusion(
                block.block_id,
                block.height,
                head.height,
                [bytes.fromhex(h) for h in got["history_proof"]],
                head.history_root,
            )
        hp = c.call("getHistoryProof", height=1)
        hh = BlockHeader.decode(bytes.fromhex(hp["head"]["header"]))
        proof = [bytes.fromhex(h) for h in hp["proof"]]
        assert merkle.verify_inclusion(
            bytes.fromhex(hp["block_id"]), 1, hh.height, proof, hh.history_root
        )
        old = BlockHeader.decode(bytes.fromhex(c.call("getHeader", height=2)["encoded"]))
        cp = c.call("getConsistencyProof", old_height=2, new_height=hh.height)
        cproof = [bytes.fromhex(h) for h in cp["proof"]]
        assert merkle.verify_consistency(2, hh.height, cproof, old.history_root, hh.history_root)
        members = c.call("getMembers")["members"]  # devnet: open mode
        assert {m["member_id"] for m in members} >= {"cnix", "szcredit", "gzfintech"}
        with pytest.raises(RpcCallError) as e:
            c.call("getTransaction", tx_id="00" * 32)
        assert e.value.code == -32001
        with pytest.raises(RpcCallError) as e:
            c.call("getHeader", height="7")
        assert e.value.code == -32602
    finally:
        c.close()

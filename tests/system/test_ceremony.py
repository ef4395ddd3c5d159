"""The key ceremony across organisations (docs/OPERATIONS.md), scaled down: four
organisations run `dvp org init` in their own folders, a coordinator combines only
their public descriptions with `dvp genesis new`, each organisation sees the same hash
with `dvp genesis show`, starts its node from its own folder, and an attestation made
through one organisation's node verifies through another's against its own genesis
copy. scripts/ceremony.py runs the same at full size with timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli import devnet
from cli.testnet import create_network
from scripts.harness.ceremony import Org, attest_and_verify, prepare, start, stop

pytestmark = [pytest.mark.processes, pytest.mark.timeout(400)]

ORGS = [
    Org("cnix", "China Internet Exchange (Qianhai)", ("auditor",)),
    Org("szcredit", "Shenzhen Credit Service Co.", ("issuer",), ("credit-report",)),
    Org("webank", "WeBank Technology Services"),
    Org("hkbank", "A Hong Kong bank", ("verifier",)),
]


def test_four_organisations_make_a_chain_from_their_descriptions(tmp_path: Path) -> None:
    c = prepare(tmp_path, ORGS, chain_id="dvp-ceremony-test")
    try:
        # Every organisation saw the coordinator's hash in its own copy.
        assert set(c.hashes_seen.values()) == {c.genesis_hash}, c.hashes_seen
        assert set(c.hashes_seen) == {o.id for o in ORGS}
        genesis = json.loads((c.home("hkbank") / "genesis.json").read_text())
        assert genesis["chain_id"] == "dvp-ceremony-test"
        assert sorted(v["member_id"] for v in genesis["validators"]) == sorted(o.id for o in ORGS)
        # No private key left its organisation's folder; no folder holds another's key.
        for o in ORGS:
            keys = sorted(p.name for p in (c.home(o) / "keys").iterdir())
            assert keys == [f"{o.id}.member.json", f"{o.id}.node.json"]
            assert all((c.home(o) / "keys" / k).stat().st_mode & 0o077 == 0 for k in keys)
        assert not list(c.coordinator.rglob("*.member.json"))
        assert not list(c.coordinator.rglob("*.node.json"))
        start(c)
        out = attest_and_verify(c, ORGS[1], "credit-report", ORGS[3])
        assert out["attestation"]["status"] == "committed", out
        assert out["verdict"]["status"] == "VALID", out
    finally:
        stop(c)
    for o in ORGS:  # stopped by a signal: status 0
        assert c.procs[o.id].returncode == 0, (o.id, c.procs[o.id].returncode)


def test_devnet_commands_run_a_testnet_folder(tmp_path: Path) -> None:
    """`dvp testnet` then `dvp devnet up|status|down --dir` on it: each node's data, log
    and pid stay in its organisation's folder."""
    root = tmp_path / "net"
    create_network(root, validators=4, observers=1)
    try:
        devnet.up(root, wait_s=120)
        rows = {r["name"]: r for r in devnet.status(root)}
        assert all(r["pid"] and r["height"] >= 1 for r in rows.values()), rows
        assert (root / "hkbank" / "data" / "observer-1" / "node.pid").exists()
        assert (root / "cnix" / "data" / "cnix" / "ledger").is_dir()
        assert not (root / "data").exists() and not (root / "keys").exists()
    finally:
        stopped = devnet.down(root)
    assert sorted(stopped) == ["cnix", "hkbank", "observer-1", "szcredit", "webank"]
    assert not list(root.glob("*/data/*/node.pid"))

"""Governance drills under load, scaled down (scripts/drills.py runs them full size).

Four validator processes on 127.0.0.1 serve the tests of this module in order (the
last ones build on the earlier ones' consortium: the rolling upgrade leaves the node
added by the validator drill on the old build, the identity drill uses the member whose
validator was removed) while the chaos harness's load keeps attesting through every
node. Each drill changes the consortium with real governance transactions
(scripts/harness/drills.py, drills_nodes.py); after each, the verdict must hold (every
acknowledged transaction in every live node's chain exactly once, no fork, every
certificate verifies against the set in force) and the chain must have kept
committing: the longest time without an acknowledged commit during the change stays
below ``LIVENESS_BOUND_S``. That bound is a liveness property (commits never stopped
for long; a stuck consortium fails it), not a speed target: the full-size figures are
in scripts/drills.py's output.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.protocol import REHEARSAL_ENV
from scripts.harness import open_env
from scripts.harness.drills import NEW_VALIDATOR, Drill
from scripts.harness.drills_nodes import NodeDrills as Drills

pytestmark = [pytest.mark.processes, pytest.mark.timeout(400)]

WINDOW_S = 3.0  # load measured before and after each drill
LIVENESS_BOUND_S = 30.0


@pytest.fixture(scope="module")
def drills(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drills]:
    with open_env(tmp_path_factory.mktemp("drills") / "net", netns=False) as env:
        yield Drills(env)


def _kept_committing(d: Drill) -> None:
    pause = d.longest_pause_s
    assert pause < LIVENESS_BOUND_S, f"no commit for {pause:.1f} s during the change"
    assert d.tx_per_s["after"] > 0, "no commit after the change"


def test_issuer_key_rotation_keeps_old_attestations_valid(drills: Drills) -> None:
    before = drills.keys["szcredit"].public_key
    d = drills.rotate_issuer_key(WINDOW_S)
    print("\n" + d.line())
    assert d.lost == 0 and d.acked > 0
    _kept_committing(d)
    assert d.details["old_attestation"] == "VALID", d.details
    assert d.details["new_attestation"] == "VALID", d.details
    c = drills.client()
    try:
        members = {m["member_id"]: m for m in c.call("getMembers")["members"]}
    finally:
        c.close()
    assert members["szcredit"]["key"] == drills.keys["szcredit"].public_key.hex() != before.hex()


def test_a_fifth_validator_joins_and_one_leaves(drills: Drills) -> None:
    genesis = [v.member_id for v in drills.validators(1).validators]
    d = drills.add_and_remove_validator(WINDOW_S, remove="webank")
    print(f"\n{d.line()}\n{d.details}")
    assert d.lost == 0
    _kept_committing(d)
    assert d.details["validators_with_five"] == sorted([*genesis, NEW_VALIDATOR])
    assert [v.member_id for v in drills.validators().validators] == sorted(
        [*(m for m in genesis if m != "webank"), NEW_VALIDATOR]
    )


def test_a_validators_consensus_key_is_replaced(drills: Drills) -> None:
    d = drills.rotate_node_key(WINDOW_S, victim="hkbank")
    print(f"\n{d.line()}\n{d.details}")
    assert d.lost == 0
    _kept_committing(d)
    assert d.details["old_key"] != d.details["new_key"]
    # It votes again: a certificate committed after its restart holds its new key's
    # signature (not just following the chain by block sync).
    assert d.details["new_key_signed"], f"hkbank's new node key signs no certificate: {d.details}"


def test_a_rolling_upgrade_activates_version_2(drills: Drills) -> None:
    d = drills.rolling_upgrade(WINDOW_S, lead_s=15.0)
    print(f"\n{d.line()}\n{d.details}")
    assert d.lost == 0
    _kept_committing(d)
    det = d.details
    at = det["activation_height"]
    assert all(v == [1, 2] for v in det["upgraded_supported"].values()), det
    versions = det["versions_by_height"]
    assert versions[at - 1] == 1 and versions[at] == 2 and max(versions) >= at, versions
    # the node left on the old build stopped by itself, with the one line, and was
    # refused on the old build; upgraded, it runs version 2
    assert det["old_build_exit_status"] == 5, det
    assert "runs protocol version 2" in det["old_build_stop_line"], det
    assert "protocol version" in det["old_build_refused"], det
    assert (
        "speaks protocol versions 1-1, but the consortium runs version 2"
        in (det["old_build_newcomer_refused"])
    ), det
    assert det["protocol_version_now"] == 2


def test_an_observers_identity_and_tls_certificate_are_replaced(
    drills: Drills, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = drills.replace_node_identity(WINDOW_S)
    print(f"\n{d.line()}\n{d.details}")
    assert d.lost == 0
    _kept_committing(d)
    det = d.details
    assert det["old_peer_id"] != det["new_peer_id"]
    assert det["https_new_certificate"] and det["https_old_certificate_refused"], det
    assert det["peers"], det
    # every block since genesis, re-executed by the auditor's replay (the last test of
    # the module): the sets the verdict was taught, and the protocol versions, are the
    # ones the governance transactions put in force
    drills.env.load.stop()
    v = drills.env.verdict(honest=drills.live)
    v.assert_ok()
    monkeypatch.setenv(REHEARSAL_ENV, "2")  # the auditor runs the new build too
    audit = drills.env.checker.full_audit(drills.live[0])
    assert audit.ok, audit.failure

"""The second implementation: node/web/verify.mjs, the JavaScript verifier of
docs/PROOFS.md §11, run under Node's own test runner (``node --test``) from here so CI
runs it with the Python suite. Its fixture (tests/js/fixtures/bundles.json) records the
reference verifier's answers; this file checks they are still the reference's, that the
vendored msgpack is the pinned package's files, and that the JavaScript tests pass.
Node is required: a missing ``node`` fails, it is not skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ledger.genesis import genesis_from_json
from tests.js.make_fixtures import FIXTURE, answer, swapped
from tests.support.bundles import leaf_paths, mutate

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "node" / "web"


def test_the_fixture_holds_the_reference_verifiers_answers() -> None:
    fx = json.loads(FIXTURE.read_text())
    genesis = genesis_from_json(fx["genesis"])
    statuses = set()
    for case in fx["cases"]:
        doc = case["bundle"]
        assert answer(doc, genesis, fx["now_ms"]) == case["expected"], case["name"]
        assert answer(doc, genesis, fx["stale_now_ms"]) == case["stale"], case["name"]
        assert sorted(p for p, _ in case["mutations"]) == sorted(list(p) for p in leaf_paths(doc))
        for path, expected in case["mutations"][::7]:  # a sample: all were made by the reference
            assert answer(mutate(doc, tuple(path)), genesis, fx["now_ms"]) == expected
        for part, value, expected in case["swaps"]:
            assert answer(swapped(doc, part, value), genesis, fx["now_ms"]) == expected
            # a bound document's consent left out is no verdict (docs/CONSENT.md §5)
            want = "UNVERIFIABLE" if expected.get("reason") == "consent_missing" else "INVALID"
            assert expected["status"] == want, (case["name"], part)
        statuses.add(case["expected"]["status"])
    assert statuses == {"VALID", "REVOKED", "EXPIRED", "NOT_FOUND"}
    # a governance revocation, so its proposal part is altered field by field too
    gov = [c for c in fx["cases"] if c["bundle"]["proposal"] is not None]
    assert gov and any(p[0] == "proposal" for p, _ in gov[0]["mutations"])


def test_vendored_msgpack_is_the_pinned_packages_files() -> None:
    listing = (WEB / "vendor" / "VENDOR.md").read_text()
    sums = dict(
        (path, digest) for digest, path in re.findall(r"^([0-9a-f]{64})  \./(\S+)$", listing, re.M)
    )
    files = {
        p.relative_to(WEB / "vendor" / "msgpack").as_posix()
        for p in (WEB / "vendor" / "msgpack").rglob("*")
        if p.is_file()
    }
    assert files == set(sums)
    for path, digest in sums.items():
        data = (WEB / "vendor" / "msgpack" / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, path


@pytest.mark.timeout(120)
def test_node_test_runner_passes_the_javascript_verifier() -> None:
    node = shutil.which("node")
    assert node is not None, "node (>= 20) is required for the JavaScript verifier's tests"
    out = subprocess.run(
        [node, "--test", str(WEB)], cwd=ROOT, capture_output=True, text=True, timeout=110
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"^# pass [1-9]", out.stdout, re.M), out.stdout[-2000:]
    assert re.search(r"^# fail 0$", out.stdout, re.M)

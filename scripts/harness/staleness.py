"""The stale-read scenario: a validator cut off from the others must never answer VALID
for a document revoked after the cut (scripts/chaos.py's ``cut-off`` fault and
tests/system/test_stale_reads.py).

``stale_read(cluster, victim, via, max_age_s)`` plays it on a running ``Cluster``:

1. the issuer attests a fresh document through ``via``; the victim holds it (VALID);
2. the victim is cut off (``Cluster.cut_off``: restarted with no peers, on loopback too);
3. the issuer revokes the document through ``via``;
4. once the victim's head is older than ``max_age_s``, a bank asks the victim with
   ``dvp verify --max-age`` and ``verifyAttestation``, and asks ``via`` with the defaults;
   the victim's ``/readyz`` and ``/livez`` are read;
5. the victim rejoins (``Cluster.rejoin``); its ``/readyz`` must come back to 200 and it
   must then say REVOKED.

It returns what was seen (``StaleRead``); ``problems()`` lists every departure from the
above, so chaos counts them and the test asserts there are none (and shows the rest).
"""

from __future__ import annotations

import http.client
import json
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cli.documents import attest_file, revoke
from cli.rpc_client import RpcClient
from ledger.crypto import read_key_file
from ledger.types import RevokeReason
from scripts.harness.cluster import REPO, Cluster

__all__ = ["StaleRead", "http_get", "stale_read", "verify_cli"]


@dataclass
class StaleRead:
    victim: str
    via: str
    max_age_s: float
    before: dict[str, Any] = field(default_factory=dict)  # the victim, before the cut
    cut_off: dict[str, Any] = field(default_factory=dict)  # the victim, cut off: dvp verify
    cut_off_exit: int | None = None
    cut_off_rpc: dict[str, Any] = field(default_factory=dict)  # ... and verifyAttestation
    via_answer: dict[str, Any] = field(default_factory=dict)  # a connected node meanwhile
    via_exit: int | None = None
    readyz_cut_off: tuple[int, dict[str, Any]] = (0, {})
    livez_cut_off: int = 0
    readyz_rejoined: int = 0
    after: dict[str, Any] = field(default_factory=dict)  # the victim, rejoined
    rejoined_at: float = 0.0  # time.monotonic() when the rejoin began
    ready_again_s: float | None = None  # from then until /readyz answered 200 again

    def problems(self) -> list[str]:
        out = []
        if self.before.get("status") != "VALID":
            out.append(f"before the cut the victim said {self.before.get('status')}, not VALID")
        if self.cut_off_exit != 8 or self.cut_off.get("reason") != "state_too_old":
            out.append(
                f"cut off, dvp verify exited {self.cut_off_exit} with "
                f"{self.cut_off.get('status')} ({self.cut_off.get('reason')}), not 8 "
                "UNVERIFIABLE (state_too_old)"
            )
        if self.cut_off_rpc.get("reason") != "state_too_old":
            out.append(f"cut off, verifyAttestation answered {self.cut_off_rpc}")
        if self.via_exit != 5:
            out.append(f"{self.via} said {self.via_answer.get('status')}, not REVOKED")
        code, report = self.readyz_cut_off
        if code != 503 or "peers" not in report.get("failing", []):
            out.append(f"cut off, /readyz answered {code} {report.get('failing')}")
        if self.livez_cut_off != 200:
            out.append(f"cut off, /livez answered {self.livez_cut_off}")
        if self.readyz_rejoined != 200:
            out.append(f"after the rejoin /readyz answered {self.readyz_rejoined}")
        if self.after.get("status") != "REVOKED":
            out.append(f"after the rejoin the victim said {self.after.get('status')}")
        return out

    def summary(self) -> str:
        return (
            f"cut off {self.victim}: verify exit {self.cut_off_exit} "
            f"{self.cut_off.get('status')} (head {self.cut_off.get('head_age_ms')} ms old, "
            f"limit {self.max_age_s:g} s); {self.via}: {self.via_answer.get('status')}; "
            f"/readyz {self.readyz_cut_off[0]} {self.readyz_cut_off[1].get('failing')} -> "
            f"{self.readyz_rejoined} after the rejoin"
            + (f" ({self.ready_again_s:.1f} s)" if self.ready_again_s is not None else "")
        )


def http_get(url: str, path: str) -> tuple[int, dict[str, Any]]:
    """GET ``path`` on the node at RPC ``url``: (status, JSON body); (0, {}) if unreachable."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    except (OSError, ValueError):
        return 0, {}
    finally:
        conn.close()


def verify_cli(
    root: Path, url: str, path: Path, code: str, max_age_s: float | None = None
) -> tuple[int, dict[str, Any]]:
    """``dvp verify --json`` as a bank runs it: (exit status, the JSON it printed)."""
    argv = [sys.executable, "-m", "cli.main", "verify", str(path), "--code", code]
    argv += ["--genesis", str(root / "genesis.json"), "--rpc", url, "--json"]
    if max_age_s is not None:
        argv += ["--max-age", f"{max_age_s:g}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)
    try:
        doc: dict[str, Any] = json.loads(out.stdout)
    except ValueError:
        doc = {"stderr": out.stderr.strip()}
    return out.returncode, doc


def _until(what: str, fn: Any, timeout_s: float) -> float:
    """Poll ``fn`` until true; seconds it took, or ``AssertionError`` naming ``what``."""
    t0 = time.monotonic()
    while not fn():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.2)
    return time.monotonic() - t0


def stale_read(cl: Cluster, victim: str, via: str, max_age_s: float = 2.0) -> StaleRead:
    """Play the scenario of the module docstring; the cluster is whole again after."""
    root = cl.root
    seen = StaleRead(victim, via, max_age_s)
    issuer = read_key_file(root / "keys" / "szcredit.member.json")
    doc = root / f"statement-{secrets.token_hex(4)}.pdf"
    doc.write_bytes(b"%PDF-1.7\nBank statement " + secrets.token_bytes(16).hex().encode())
    url, via_url = cl.urls[victim], cl.urls[via]
    with RpcClient(via_url) as c:
        a = attest_file(c, issuer, doc, "bank-statement")
    assert a.height is not None, "attest_file waits for the commit"
    cl.wait_height(a.height, [victim], timeout_s=60)
    seen.before = verify_cli(root, url, doc, a.code)[1]
    cl.cut_off(victim)
    try:
        with RpcClient(via_url) as c:
            revoked_at = int(revoke(c, issuer, a.commitment, RevokeReason.DATA_CHANGED)["height"])
        _until(
            f"{victim}'s head older than {max_age_s:g} s",
            lambda: ((cl.status(victim) or {}).get("head_age_ms") or 0) > max_age_s * 1000,
            timeout_s=max_age_s + 60,
        )
        seen.cut_off_exit, seen.cut_off = verify_cli(root, url, doc, a.code, max_age_s)
        with cl.client(victim) as c:
            seen.cut_off_rpc = c.call(
                "verifyAttestation",
                commitment=a.commitment.hex(),
                max_age_ms=round(max_age_s * 1000),
            )
        seen.via_exit, seen.via_answer = verify_cli(root, via_url, doc, a.code)
        seen.readyz_cut_off = http_get(url, "/readyz")
        seen.livez_cut_off = http_get(url, "/livez")[0]
    finally:
        seen.rejoined_at = time.monotonic()
        cl.rejoin(victim)
    try:
        _until(
            f"{victim}'s /readyz 200 after the rejoin",
            lambda: http_get(url, "/readyz")[0] == 200,
            timeout_s=90,
        )
        seen.ready_again_s = time.monotonic() - seen.rejoined_at
    except AssertionError:
        pass
    seen.readyz_rejoined = http_get(url, "/readyz")[0]
    # ready = caught up to within the pipeline window: the revocation's block may be
    # among the last few it takes
    cl.wait_height(revoked_at, [victim], timeout_s=60)
    seen.after = verify_cli(root, url, doc, a.code)[1]
    return seen

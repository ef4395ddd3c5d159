#!/usr/bin/env python3
"""Flood a 4-validator devnet with never-includable transactions mixed with valid ones.

Starts its own devnet on 127.0.0.1 (stopped at the end), commits a few setup
transactions (attestations, revocations, a governance proposal, one left to expire),
then sends, shuffled and spread over all four nodes in submitTransactions batches over
plain JSON-RPC 2.0 (urllib):

- ``--bad`` transactions of each doomed kind, each of which must be refused at the door
  with its code: already_revoked, not_found, not_original_issuer, already_attested,
  already_voted, no_open_proposal (a vote on an expired proposal), unknown_member,
  unknown_doc_type, and conflicts_with_pending (a second attestation of a commitment
  whose first attestation was sent just before, to the same node: refused as
  conflicts_with_pending, or already_attested if the first committed in between);
- ``--valid`` fresh attestations, each of which must commit.

What it checks: every valid attestation commits, every bad one is refused with its
code, and no node changed view (the doomed transactions once stalled the chain with a
view change every 10-20 s: a replica accused each primary of censoring them).

Ends with one JSON line: valid_sent, valid_committed, bad_sent, bad_refused,
wrong_codes, view_changes, height_start, height_end, elapsed_s. Exit status 0 when
every check held, 1 when one failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli import devnet  # noqa: E402
from cli.devnet_files import NodeEntry, load_devnet  # noqa: E402
from ledger.crypto import KeyPair, read_key_file  # noqa: E402
from ledger.types import (  # noqa: E402
    Attest,
    GovAction,
    GovPropose,
    GovVote,
    Payload,
    Revoke,
    RevokeReason,
    Transaction,
)

CHAIN_ID = "dvp-demo"
BATCH = 200  # transactions per submitTransactions call
WAIT_BATCH = 100  # calls per JSON-RPC batch (the node's limit)


def rpc(url: str, calls: list[tuple[str, dict[str, Any]]], timeout_s: float = 120) -> list[Any]:
    """One JSON-RPC 2.0 batch over HTTP POST; the answers in request order."""
    body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        answers = json.loads(resp.read())
    if not isinstance(answers, list):
        raise RuntimeError(f"batch refused: {answers}")
    return sorted(answers, key=lambda a: a["id"])


def call(url: str, method: str, **params: Any) -> Any:
    answer = rpc(url, [(method, params)])[0]
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


class Load:
    def __init__(self, root: Path, seed: int) -> None:
        self.nodes: list[NodeEntry] = [e for e in load_devnet(root) if e.role == "validator"]
        self.keys = {
            m: read_key_file(root / "keys" / f"{m}.member.json")
            for m in ("cnix", "hkbank", "szcredit", "webank")
        }
        self.nonce = random.Random(seed).randrange(1 << 40)
        self.doc = 0
        self.seed = seed

    def status(self, e: NodeEntry) -> dict[str, Any]:
        result: dict[str, Any] = call(e.rpc_url, "status")
        return result

    def height(self) -> int:
        return min(int(self.status(e)["height"]) for e in self.nodes)

    def view_changes(self) -> int:
        return sum(int(self.status(e)["view_changes"]) for e in self.nodes)

    def tx(self, member: str, payload: Payload, expiry: int) -> Transaction:
        self.nonce += 1
        k: KeyPair = self.keys[member]
        return Transaction(CHAIN_ID, k.public_key, self.nonce, expiry, payload).signed(k)

    def commitment(self) -> bytes:
        self.doc += 1
        return hashlib.sha256(b"doomed-load %d %d" % (self.seed, self.doc)).digest()

    def attest(self, c: bytes, expiry: int, doc: str = "credit-report") -> Transaction:
        return self.tx("szcredit", Attest(doc, c, 1_760_000_000_000, 0, b""), expiry)

    def commit_all(self, txs: list[Transaction], timeout_s: int = 60) -> None:
        """Submit ``txs`` to the first node and wait until each committed."""
        url = self.nodes[0].rpc_url
        for i in range(0, len(txs), BATCH):
            chunk = txs[i : i + BATCH]
            res = call(url, "submitTransactions", txs=[t.encode().hex() for t in chunk])
            for r in res["results"]:  # the set-up must hold, or every figure is off
                if r["status"] == "rejected":
                    raise SystemExit(f"a set-up transaction was refused: {r.get('message')}")
        self.wait_committed(txs, timeout_s)

    def wait_committed(self, txs: list[Transaction], timeout_s: int) -> int:
        """How many of ``txs`` committed (a resubmission of a committed one says so)."""
        done = 0
        url = self.nodes[-1].rpc_url
        for i in range(0, len(txs), WAIT_BATCH):
            calls = [
                (
                    "submitTransaction",
                    {"tx": t.encode().hex(), "wait": True, "timeout_s": timeout_s},
                )
                for t in txs[i : i + WAIT_BATCH]
            ]
            for a in rpc(url, calls, timeout_s + 30):
                if "error" in a:
                    print(f"  not committed: {a['error']}", file=sys.stderr)
                done += "result" in a and a["result"]["status"] == "committed"
        return done


def run(root: Path, bad: int, valid: int, seed: int, watch_s: float = 30) -> dict[str, Any]:
    t0 = time.monotonic()
    ld = Load(root, seed)
    h = ld.height()
    exp = h + 900
    # Setup: attested-then-revoked, attested, an open proposal, one that will expire.
    revoked = [ld.commitment() for _ in range(bad)]
    attested = [ld.commitment() for _ in range(bad)]
    ld.commit_all([ld.attest(c, exp) for c in revoked + attested])
    ld.commit_all([ld.tx("szcredit", Revoke(c, RevokeReason.SUPERSEDED), exp) for c in revoked])
    open_prop = ld.tx(
        "cnix", GovPropose(GovAction.SET_PARAM, ("max_clock_drift_ms", 12_000), h + 5000), exp
    )
    soon = ld.height() + 3
    short_prop = ld.tx(
        "hkbank", GovPropose(GovAction.SET_PARAM, ("max_clock_drift_ms", 9000), soon), exp
    )
    ld.commit_all([open_prop, short_prop])
    deadline = time.monotonic() + 120
    while ld.height() <= soon + 1 and time.monotonic() < deadline:
        time.sleep(0.2)

    h0 = ld.height()
    exp = h0 + 900
    reason = RevokeReason.SUPERSEDED
    cases: list[tuple[Transaction, frozenset[str] | None]] = []

    def doomed(code: str, txs: list[Transaction], *also: str) -> None:
        cases.extend((t, frozenset({code, *also})) for t in txs)

    doomed("already_revoked", [ld.tx("szcredit", Revoke(c, reason), exp) for c in revoked])
    doomed(
        "not_found", [ld.tx("szcredit", Revoke(ld.commitment(), reason), exp) for _ in range(bad)]
    )
    doomed("not_original_issuer", [ld.tx("webank", Revoke(c, reason), exp) for c in attested])
    doomed("already_attested", [ld.attest(c, exp, "bank-statement") for c in attested])
    doomed(
        "already_voted", [ld.tx("cnix", GovVote(open_prop.tx_id, True), exp) for _ in range(bad)]
    )
    doomed(
        "no_open_proposal",
        [ld.tx("webank", GovVote(short_prop.tx_id, True), exp) for _ in range(bad)],
    )
    doomed(
        "unknown_member",
        [
            ld.tx("cnix", GovPropose(GovAction.REMOVE_MEMBER, (f"nobody{i}",), h0 + 500), exp)
            for i in range(bad)
        ],
    )
    doomed(
        "unknown_doc_type",
        [
            ld.tx(
                "cnix",
                GovPropose(GovAction.WITHDRAW_DOC_TYPE, ("szcredit", f"no-type-{i}"), h0 + 500),
                exp,
            )
            for i in range(bad)
        ],
    )
    cases.extend((ld.attest(ld.commitment(), exp), None) for _ in range(valid))
    rng = random.Random(seed)
    rng.shuffle(cases)
    # Conflicting pairs: the valid first attestation just before its doomed twin.
    pairs = []
    for _ in range(bad):
        c = ld.commitment()
        pairs.append(
            [
                (ld.attest(c, exp), None),
                (
                    ld.attest(c, exp, "bank-statement"),
                    frozenset({"conflicts_with_pending", "already_attested"}),
                ),
            ]
        )
    # A pair is never split between two requests: sent to two nodes within one gossip
    # flush, both twins are admitted -- two conflicting transactions at two nodes, which
    # is allowed (the builder leaves the second out and its node drops it at the commit)
    # but not what this load measures: the refusal at the door.
    groups: list[list[tuple[Transaction, frozenset[str] | None]]] = [[c] for c in cases]
    groups.extend(pairs)
    rng.shuffle(groups)
    batches: list[list[tuple[Transaction, frozenset[str] | None]]] = [[]]
    for g in groups:
        if len(batches[-1]) >= BATCH:
            batches.append([])
        batches[-1].extend(g)
    cases = [c for batch in batches for c in batch]

    vc0 = ld.view_changes()
    wrong: list[str] = []
    refused = 0
    for b, chunk in enumerate(batches):
        url = ld.nodes[b % len(ld.nodes)].rpc_url
        res = call(url, "submitTransactions", txs=[t.encode().hex() for t, _ in chunk])["results"]
        for (_tx, codes), r in zip(chunk, res, strict=True):
            if codes is None:
                if r["status"] != "pending":
                    wrong.append(f"valid refused: {r.get('code')}: {r.get('message')}")
            elif r["status"] == "rejected" and r.get("code") in codes:
                refused += 1
            else:
                wrong.append(f"expected {sorted(codes)}, got {r['status']} {r.get('code')}")
    valid_txs = [t for t, codes in cases if codes is None]
    committed = ld.wait_committed(valid_txs, 60)
    # Doomed transactions left in a mempool made a view change every 10-20 s: watch on.
    end = time.monotonic() + watch_s
    while time.monotonic() < end and ld.view_changes() == vc0:
        time.sleep(1)
    figures = {
        "valid_sent": len(valid_txs),
        "valid_committed": committed,
        "bad_sent": len(cases) - len(valid_txs),
        "bad_refused": refused,
        "wrong_codes": len(wrong),
        "view_changes": ld.view_changes() - vc0,
        "height_start": h0,
        "height_end": ld.height(),
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    for line in wrong[:10]:
        print("  " + line, file=sys.stderr)
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__[__doc__.index("What it checks") :]
        + "\nExample: python scripts/doomed_load.py --bad 100 --valid 500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--bad", type=int, default=1000, help="doomed transactions of each kind")
    ap.add_argument("--valid", type=int, default=1000, help="valid attestations mixed in")
    ap.add_argument("--seed", type=int, default=1, help="shuffle and document seed")
    ap.add_argument(
        "--watch-s", type=float, default=30, help="keep watching for view changes this long"
    )
    ap.add_argument("--dir", type=Path, help="devnet folder (default: a temporary one)")
    args = ap.parse_args(argv)
    if args.bad < 1 or args.valid < 1:
        ap.error("--bad and --valid must be at least 1")
    with tempfile.TemporaryDirectory(prefix="doomed_load_") as tmp:
        root = args.dir or Path(tmp) / "devnet"
        try:
            devnet.up(root, nodes=4, wait_s=90, params={"heartbeat_ms": 500})
            figures = run(root, args.bad, args.valid, args.seed, args.watch_s)
        finally:
            if (root / "devnet.json").exists():
                devnet.down(root, grace_s=5)
    print(json.dumps(figures))
    ok = (
        figures["valid_committed"] == figures["valid_sent"]
        and figures["bad_refused"] == figures["bad_sent"]
        and figures["view_changes"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

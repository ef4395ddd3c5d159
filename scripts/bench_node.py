#!/usr/bin/env python3
"""Throughput and latency of a real 4-validator devnet under an issuer's bulk load.

Starts a devnet (separate node processes over libp2p on 127.0.0.1), then a separate
load process that pre-signs ATTEST transactions and submits them in JSON-RPC
``submitTransactions`` batches (the way a data provider attests its day's documents) to
all validators round-robin at ``--rate`` tx/s, while a watcher follows committed blocks
(``getBlock``) and timestamps each transaction's commit. Prints sustained committed
tx/s over the measured window, submit-to-commit latency p50/p95/p99, CPU and RSS per
node, and the ratio to the signature-verification ceiling (2 cores x raw ed25519 verify
rate / 4 nodes: every node verifies every signature once). Ends with one JSON line:
committed_tx_per_s, latency_ms_p50, latency_ms_p95, latency_ms_p99, ed25519_verify_per_s,
ceiling_tx_per_s, ceiling_ratio, rss_mb_max, and four more: node_cpu_us_per_tx (CPU per
committed transaction, mean of the nodes: steadier than rates on a shared machine),
ed25519_verify_per_s_after (the raw verify rate measured again after the run: if it
moved by 5 % or more, other work shared the machine and the run is not comparable),
backlog_at_end_tx (transactions submitted but not yet committed when submission ended:
a block or two when the chain keeps up, seconds of load when the offered rate is past
saturation and latency grows through the run) and refused_tx (transactions the nodes
answered "busy": past saturation a node refuses its clients once it holds two pipelines'
worth pending, rather than queue them; the load process does not retry them).

``--consent-share S`` offers a mixed load (docs/CONSENT.md): a share S of the offered
transactions are ACCESS events (a verifying member, hkbank, records one use of a data
subject's grant, the way a bank's verification is recorded), the rest ATTESTs as above.
Before the timed window the load process binds one document per subject key (a bound
ATTEST), has each subject grant hkbank ``--grant-uses`` uses (default 100) for a year,
and waits for both to commit; during the window accesses go round-robin over those
grants, so with the default each grant record grows to 100 recorded uses, the largest a
grant gets (the worst case for the record's size; a grant of a few uses is cheaper).
The JSON line then also carries ``attest_tx_per_s`` and ``access_tx_per_s`` (committed
in the window).

``--compare-consent`` runs the plain load and then the mixed one (``--consent-share``,
default 0.5) on fresh devnets in one sitting, at the same ``--rate``, and ends with one
JSON line: ``plain_attest_tx_per_s``, ``mixed_attest_tx_per_s``,
``mixed_access_tx_per_s``, ``attest_throughput_ratio``, ``ed25519_verify_per_s`` (and
``..._after``, the latencies and the load average). What the ratio compares: the
committed transactions per second of the mixed load (attestations plus accesses) over
those of the plain load, both offered the same ``--rate`` *past saturation*, i.e. the
chain's capacity with access recording in the mix relative to its capacity for
attestations alone. Why that and not the attestations of the mixed load alone: below
saturation both loads commit what is offered, so the attestation rate only shows the
offered share, and past saturation the mixed load commits attestations at ratio x (1 - S)
of the plain figure whatever accesses cost, because the two kinds share the blocks in
arrival order. The capacity ratio is what access recording costs: 1.0 if an access
costs a node what an attestation does, 0.75 if accesses cut the attestations the same
machine could commit by a quarter at S = 0.5 (the issue's bar). Offer a ``--rate``
above the plain load's saturation (``backlog_at_end_tx`` large in both runs), else the
ratio only measures the offered rate. It is noisy on a shared machine: the load
average and the raw verify rate before and after are printed with it.

``--bound NAMES`` runs the same measurement on nodes in which the named parts cost
nothing (scripts/bounds/dvp_bounds.py): not the product, but an upper bound on what making
those parts faster could buy; the JSON line then also carries ``bound``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BOUNDS_DIR = ROOT / "scripts" / "bounds"
sys.path.insert(0, str(ROOT))

from cli import devnet  # noqa: E402
from cli.devnet_files import load_devnet  # noqa: E402
from cli.rpc_client import RpcCallError, RpcClient  # noqa: E402
from scripts.bench_proc import loadavg, proc_cpu_s  # noqa: E402


def ed25519_verify_rate(seconds: float = 2.0) -> float:
    import nacl.bindings

    pk, sk = nacl.bindings.crypto_sign_seed_keypair(b"\x01" * 32)
    sm = nacl.bindings.crypto_sign(b"x" * 200, sk)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(500):
            nacl.bindings.crypto_sign_open(sm, pk)
        n += 500
    return n / (time.perf_counter() - t0)


def host_check(verify: float, verify_after: float) -> str:
    """The raw verify rate before and after a run: more than 5 % apart, the host was
    busy with other work and the run is not comparable with others."""
    drift = verify_after / verify - 1
    return (
        f"host check: raw verify {verify:,.0f}/s before, {verify_after:,.0f}/s after "
        f"({drift:+.0%})"
        + ("" if abs(drift) < 0.05 else " -- the host was busy with other work: not comparable")
    )


def worker_argv(root: Path, args: Any, consent_share: float = 0.0) -> list[str]:
    """The load process's command line (``--worker``: pre-signed ATTEST batches to every
    validator of the devnet at ``root``, at ``args.rate`` for ``args.seconds``); with a
    ``consent_share`` that share of the load is ACCESS events (``args.grant_uses``)."""
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--dir",
        str(root),
        "--seconds",
        str(args.seconds),
        "--rate",
        str(args.rate),
        "--batch",
        str(args.batch),
        "--warmup",
        str(args.warmup),
        "--drain",
        str(args.drain),
    ]
    if consent_share:
        argv += ["--consent-share", str(consent_share), "--grant-uses", str(args.grant_uses)]
    return argv


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ----------------------------------------------------------------------------- load process


PURPOSE = "loan-application"


def _is_access(i: int, share: float) -> bool:
    """Whether transaction ``i`` of the load is an ACCESS: a share ``share`` of them, spread
    evenly."""
    return int((i + 1) * share) > int(i * share)


def _commit_all(entries: list[Any], txs: list[Any], what: str) -> None:
    """Submit ``txs`` to the first validator and wait until all are committed."""
    client = RpcClient(entries[0].rpc_url, timeout_s=30)
    h = client.call("status")["height"] + 1
    want = {tx.tx_id.hex() for tx in txs}
    for i in range(0, len(txs), 500):
        res = client.call("submitTransactions", txs=[tx.encode().hex() for tx in txs[i : i + 500]])
        bad = [r for r in res["results"] if r["status"] == "rejected"]
        if bad:
            raise SystemExit(f"load: setup ({what}) refused: {bad[0]}")
    deadline = time.monotonic() + 120
    while want and time.monotonic() < deadline:
        try:
            b = client.call("getBlock", height=h)
        except RpcCallError:
            time.sleep(0.1)
            continue
        want.difference_update(b["tx_ids"])
        h += 1
    client.close()
    if want:
        raise SystemExit(f"load: setup ({what}): {len(want)} transactions not committed in 120 s")


def consent_setup(
    root: Path, entries: list[Any], n_grants: int, uses: int
) -> list[tuple[bytes, bytes]]:
    """Bind one document to each of ``n_grants`` subject keys and have each grant hkbank
    ``uses`` uses for a year; returns (grant id, commitment) pairs, committed."""
    from ledger.crypto import KeyPair, read_key_file
    from ledger.transaction import ConsentGrant
    from ledger.types import Attest, Transaction

    issuer = read_key_file(root / "keys" / "szcredit.member.json")
    height = RpcClient(entries[0].rpc_url).call("status")["height"]
    now_ms = int(time.time() * 1000)
    attests, grants, pairs = [], [], []
    pid, year_ms = os.getpid(), 300 * 86_400_000
    for i in range(n_grants):
        subject = KeyPair.from_seed(hashlib.sha256(b"bench subject %d %d" % (pid, i)).digest())
        c = hashlib.sha256(b"bench consent %d %d" % (pid, i)).digest()
        p = Attest("credit-report", c, now_ms, 0, b"", subject.public_key)
        attest = Transaction("dvp-demo", issuer.public_key, 10**9 + i, height + 900, p)
        attests.append(attest.signed(issuer))
        g = ConsentGrant("hkbank", (c,), PURPOSE, now_ms - 86_400_000, now_ms + year_ms, uses)
        tx = Transaction("dvp-demo", subject.public_key, 0, height + 900, g).signed(subject)
        grants.append(tx)
        pairs.append((tx.tx_id, c))
    t0 = time.perf_counter()
    _commit_all(entries, attests, "bound attestations")
    _commit_all(entries, grants, "grants")
    print(
        f"load: {n_grants} bound attestations and grants committed in "
        f"{time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return pairs


def worker(args: argparse.Namespace) -> None:
    from ledger.crypto import read_key_file
    from ledger.transaction import Access
    from ledger.types import Attest, Transaction

    root = Path(args.dir)
    entries = [e for e in load_devnet(root) if e.role == "validator"]
    key = read_key_file(root / "keys" / "szcredit.member.json")
    bank = read_key_file(root / "keys" / "hkbank.member.json")
    total = int(args.rate * args.seconds)
    share = args.consent_share
    n_access = sum(1 for i in range(total) if _is_access(i, share))
    uses = args.grant_uses
    grants = consent_setup(root, entries, -(-n_access // uses), uses) if n_access else []
    start_height = RpcClient(entries[0].rpc_url).call("status")["height"]
    t0 = time.perf_counter()
    raw: list[tuple[str, str]] = []
    access_ids: set[str] = set()
    j = 0
    for i in range(total):
        if _is_access(i, share):
            grant_id, c = grants[j % len(grants)]
            j += 1
            a = Access(grant_id, c, PURPOSE)
            tx = Transaction("dvp-demo", bank.public_key, i, start_height + 900, a).signed(bank)
            access_ids.add(tx.tx_id.hex())
        else:
            c = hashlib.sha256(b"bench %d %d" % (os.getpid(), i)).digest()
            p = Attest("credit-report", c, 1_760_000_000_000 + i, 0, b"")
            tx = Transaction("dvp-demo", key.public_key, i, start_height + 900, p).signed(key)
        raw.append((tx.tx_id.hex(), tx.encode().hex()))
    print(
        f"load: signed {total:,} transactions in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
        flush=True,
    )

    submitted: dict[str, float] = {}
    committed: dict[str, float] = {}
    busy = [0]
    stop = threading.Event()
    lock = threading.Lock()
    batch = args.batch
    batches = [raw[i : i + batch] for i in range(0, len(raw), batch)]
    interval = batch / args.rate
    begin = time.monotonic() + 0.5

    def submitter(k: int) -> None:
        client = RpcClient(entries[k % len(entries)].rpc_url, timeout_s=30)
        for j in range(k, len(batches), len(entries)):
            due = begin + j * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            items = batches[j]
            now = time.monotonic()
            with lock:
                for tx_id, _ in items:
                    submitted[tx_id] = now
            try:
                res = client.call("submitTransactions", txs=[h for _, h in items])
            except RpcCallError as exc:
                busy[0] += len(items)
                print(f"load: submit failed: {exc}", file=sys.stderr)
                continue
            rejected = [r for r in res["results"] if r["status"] == "rejected"]
            busy[0] += len(rejected)
        client.close()

    def watcher() -> None:
        client = RpcClient(entries[0].rpc_url, timeout_s=30)
        h = start_height + 1
        while not stop.is_set():
            try:
                b = client.call("getBlock", height=h)
            except RpcCallError:
                # Not committed yet. Each miss costs the node an HTTP request (~0.4 ms
                # of a core): poll every 25 ms, which overstates latency by <= 25 ms.
                time.sleep(0.025)
                continue
            now = time.monotonic()
            with lock:
                for tx_id in b["tx_ids"]:
                    committed[tx_id] = now
            h += 1

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(len(entries))]
    wt = threading.Thread(target=watcher, daemon=True)
    wt.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end_submit = time.monotonic()
    with lock:
        # Submitted but not yet committed when submission ended: near one block's worth
        # when the chain keeps up; a backlog of seconds of load means it fell behind.
        backlog = len(submitted) - busy[0] - len(committed)
    deadline = end_submit + args.drain
    while time.monotonic() < deadline and len(committed) < len(submitted) - busy[0]:
        time.sleep(0.1)
    stop.set()
    # Measured window: from warm-up end to the end of submission.
    w0 = begin + args.warmup
    w1 = end_submit
    in_window = [t for t in committed.values() if w0 <= t <= w1]
    access_in_window = sum(1 for t, c in committed.items() if w0 <= c <= w1 and t in access_ids)
    lat = sorted(
        (committed[t] - submitted[t]) * 1000
        for t in committed
        if t in submitted and w0 <= submitted[t] <= w1
    )

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else float("nan")

    if args.timeline:
        print_timeline(submitted, committed, begin)
    print(
        json.dumps(
            {
                "submitted": len(submitted),
                "committed": len(committed),
                "refused": busy[0],
                "window_s": w1 - w0,
                "committed_tx_per_s": len(in_window) / max(w1 - w0, 1e-9),
                "attest_tx_per_s": (len(in_window) - access_in_window) / max(w1 - w0, 1e-9),
                "access_tx_per_s": access_in_window / max(w1 - w0, 1e-9),
                "latency_ms_p50": pct(50),
                "latency_ms_p95": pct(95),
                "latency_ms_p99": pct(99),
                "latency_ms_mean": statistics.fmean(lat) if lat else float("nan"),
                "backlog_at_end": backlog,
            }
        ),
        flush=True,
    )


def print_timeline(
    submitted: dict[str, float], committed: dict[str, float], begin: float, step_s: int = 5
) -> None:
    """Latency by submission time and the longest waits between commits (to stderr):
    where a latency tail comes from. A steady latency with a few stalls points at
    something periodic (compactions, collections); a latency growing through the run
    at saturation."""
    buckets: dict[int, list[float]] = {}
    for t, c in committed.items():
        if t in submitted:
            buckets.setdefault(int((submitted[t] - begin) // step_s), []).append(
                (c - submitted[t]) * 1000
            )
    print(f"latency by submission time ({step_s}-s buckets: count, p50 / max ms):", file=sys.stderr)
    for b in sorted(buckets):
        lat = sorted(buckets[b])
        print(
            f"  {b * step_s:4d}-{(b + 1) * step_s:<4d}s {len(lat):7,} "
            f"{lat[len(lat) // 2]:7.0f} / {lat[-1]:7.0f}",
            file=sys.stderr,
        )
    seen = sorted(set(committed.values()))
    gaps = sorted(((b - a, a - begin) for a, b in itertools.pairwise(seen)), reverse=True)[:5]
    print(
        "longest waits between commits seen by the watcher: "
        + ", ".join(f"{g * 1000:.0f} ms at {at:.1f} s" for g, at in gaps),
        file=sys.stderr,
    )


# ----------------------------------------------------------------------------- driver


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="submission time")
    ap.add_argument("--nodes", type=int, default=4, help="validators")
    ap.add_argument("--observers", type=int, default=0, help="observer nodes (follow, no vote)")
    ap.add_argument("--rate", type=float, default=4000.0, help="offered load, tx/s")
    ap.add_argument("--batch", type=int, default=500, help="transactions per RPC request")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--drain", type=float, default=15.0)
    ap.add_argument("--dir", help="devnet folder (default: a temporary one)")
    ap.add_argument(
        "--timeline",
        action="store_true",
        help="also print latency by submission time and the longest waits "
        "between commits (to find what makes the latency tail)",
    )
    ap.add_argument(
        "--bound",
        metavar="NAMES",
        help="a bound experiment, not a benchmark of the product: the nodes run "
        "with the named parts costing nothing, or the state tree's nodes "
        "not stored (comma-separated: free-state-tree, unstored-state-tree, "
        "free-tx-signatures; see scripts/bounds/dvp_bounds.py), to bound "
        "what speeding those parts up could buy",
    )
    ap.add_argument(
        "--consent-share",
        type=float,
        default=0.0,
        metavar="S",
        help="mixed load: this share of the offered transactions are ACCESS events "
        "under subjects' grants (0 to 1; default 0: attestations only)",
    )
    ap.add_argument(
        "--grant-uses",
        type=int,
        default=100,
        metavar="N",
        help="uses per grant in the mixed load (1 to 100, default 100: each grant record "
        "grows to 100 recorded accesses, the largest; fewer uses, more grants)",
    )
    ap.add_argument(
        "--compare-consent",
        action="store_true",
        help="run the plain load, then the mixed one (--consent-share, default 0.5), "
        "at the same --rate, and print both and their capacity ratio",
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not 0 <= args.consent_share < 1:
        ap.error("--consent-share must be at least 0 and below 1")
    if not 1 <= args.grant_uses <= 100:
        ap.error("--grant-uses must be from 1 to 100")
    if args.worker:
        worker(args)
        return 0
    if args.bound:
        sys.path.insert(0, str(BOUNDS_DIR))
        import dvp_bounds

        try:
            dvp_bounds.parse(args.bound)
        except ValueError as exc:
            ap.error(str(exc))
        # Only the nodes need it: they are started with this environment.
        os.environ["DVP_BOUND"] = args.bound
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(BOUNDS_DIR)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        )
        print(
            f"BOUND EXPERIMENT: {args.bound} in the nodes (scripts/bounds/dvp_bounds.py) "
            f"-- these are not the product's figures"
        )

    verify = ed25519_verify_rate()
    ceiling = 2 * verify / args.nodes
    print(
        f"ed25519 verify (raw libsodium): {verify:,.0f}/s -> ceiling {ceiling:,.0f} tx/s "
        f"(2 cores x verify rate / {args.nodes} nodes); load average {loadavg()}"
    )
    if args.compare_consent:
        share = args.consent_share or 0.5
        print(f"== plain load: attestations only, {args.rate:,.0f} tx/s offered")
        plain = run_load(args, 0.0)
        print_run(args, plain, verify)
        print(f"== mixed load: {share:.0%} accesses, {args.rate:,.0f} tx/s offered")
        mixed = run_load(args, share)
        print_run(args, mixed, verify)
        verify_after = ed25519_verify_rate()
        ratio = mixed["committed_tx_per_s"] / max(plain["committed_tx_per_s"], 1e-9)
        print(
            f"attestation throughput: plain {plain['attest_tx_per_s']:,.0f} tx/s; mixed "
            f"{mixed['attest_tx_per_s']:,.0f} attest + {mixed['access_tx_per_s']:,.0f} access "
            f"tx/s; capacity ratio mixed/plain {ratio:.2f} (bar: >= 0.75)"
        )
        print(host_check(verify, verify_after) + f"; load average {loadavg()}")
        print(
            json.dumps(
                {
                    "plain_attest_tx_per_s": round(plain["attest_tx_per_s"]),
                    "mixed_attest_tx_per_s": round(mixed["attest_tx_per_s"]),
                    "mixed_access_tx_per_s": round(mixed["access_tx_per_s"]),
                    "attest_throughput_ratio": round(ratio, 3),
                    "consent_share": share,
                    "offered_tx_per_s": args.rate,
                    "plain_latency_ms_p50": _ms(plain["latency_ms_p50"]),
                    "mixed_latency_ms_p50": _ms(mixed["latency_ms_p50"]),
                    "plain_node_cpu_us_per_tx": round(plain["cpu_us_per_tx"]),
                    "mixed_node_cpu_us_per_tx": round(mixed["cpu_us_per_tx"]),
                    "plain_backlog_at_end_tx": plain["backlog_at_end"],
                    "mixed_backlog_at_end_tx": mixed["backlog_at_end"],
                    "ed25519_verify_per_s": round(verify),
                    "ed25519_verify_per_s_after": round(verify_after),
                }
            )
        )
        return 0
    res = run_load(args, args.consent_share)
    # The machine is shared: a raw verify rate that moved during the run means something
    # else took CPU from the nodes, and the run is not comparable with quiet ones.
    verify_after = ed25519_verify_rate()
    ratio = print_run(args, res, verify)
    print(host_check(verify, verify_after))
    print(
        json.dumps(
            {
                "committed_tx_per_s": round(res["committed_tx_per_s"]),
                "latency_ms_p50": round(res["latency_ms_p50"]),
                "latency_ms_p95": round(res["latency_ms_p95"]),
                "latency_ms_p99": round(res["latency_ms_p99"]),
                "ed25519_verify_per_s": round(verify),
                "ceiling_tx_per_s": round(ceiling),
                "ceiling_ratio": round(ratio, 3),
                "rss_mb_max": round(max(res["rss"].values()), 1),
                "node_cpu_us_per_tx": round(res["cpu_us_per_tx"]),
                "ed25519_verify_per_s_after": round(verify_after),
                "backlog_at_end_tx": res["backlog_at_end"],
                "refused_tx": res["refused"],
                **(
                    {
                        "attest_tx_per_s": round(res["attest_tx_per_s"]),
                        "access_tx_per_s": round(res["access_tx_per_s"]),
                    }
                    if args.consent_share
                    else {}
                ),
                **({"bound": args.bound} if args.bound else {}),
            }
        )
    )
    return 0


def _ms(value: float) -> int | None:
    """A latency for the JSON line: None when nothing submitted in the window committed."""
    return None if value != value else round(value)


def run_load(args: argparse.Namespace, share: float) -> dict[str, Any]:
    """One measurement on a fresh devnet: the load process's results, plus the nodes'
    CPU (``cpu``, share of a core; ``cpu_us_per_tx``), RSS and final heights."""
    tmp = tempfile.TemporaryDirectory(prefix="bench_node_")
    root = Path(args.dir) if args.dir else Path(tmp.name) / "net"
    try:
        devnet.up(
            root,
            nodes=args.nodes,
            observers=args.observers,
            wait_s=90,
            params={
                "max_block_txs": 2000,
                "heartbeat_ms": 1000,
                "pipeline_window": 4,
                "view_timeout_ms": 4000,
                "tx_ttl_heights": 1000,
            },
        )
        nodes = [e for e in load_devnet(root) if e.role == "validator"]
        pids = {e.name: devnet.running_pid(root, e) for e in nodes}
        if args.bound:
            # A bound that failed to apply would pass for the product's figures.
            for e in nodes:
                if "BOUND EXPERIMENT" not in devnet.log_file(root, e).read_text():
                    raise SystemExit(
                        f"the bound is not active in node {e.name}: see {devnet.log_file(root, e)}"
                    )
        argv = worker_argv(root, args, share)
        cpu0 = {n: proc_cpu_s(p) for n, p in pids.items() if p}
        t0 = time.monotonic()
        out = subprocess.run(
            argv + (["--timeline"] if args.timeline else []),
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "DVP_BOUND"},
        )
        wall = time.monotonic() - t0
        sys.stderr.write(out.stderr)
        if out.returncode:
            raise SystemExit(f"the load process failed (exit {out.returncode}): see above")
        res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        cpu = {n: (proc_cpu_s(p) - cpu0[n]) / wall for n, p in pids.items() if p}
        res["rss"] = {n: proc_rss_mb(p) for n, p in pids.items() if p}
        res["heights"] = [devnet.node_status(e) for e in nodes]
    finally:
        if (root / "devnet.json").exists():
            devnet.down(root)
        tmp.cleanup()
    res["cpu"] = cpu
    # CPU per committed transaction and node: steadier than rates on a shared machine.
    res["cpu_us_per_tx"] = (
        sum(cpu.values()) * wall / max(len(cpu), 1) / max(res["committed"], 1) * 1e6
    )
    return res


def print_run(args: argparse.Namespace, res: dict[str, Any], verify: float) -> float:
    """Print one measurement; returns its ratio to the verification ceiling."""
    print(
        f"offered {args.rate:,.0f} tx/s for {args.seconds:.0f} s in batches of {args.batch}: "
        f"{res['submitted']:,} submitted, {res['committed']:,} committed, "
        f"{res['refused']:,} refused"
    )
    print(
        f"sustained: {res['committed_tx_per_s']:,.0f} committed tx/s over "
        f"{res['window_s']:.0f} s; latency p50 {res['latency_ms_p50']:.0f} ms, p95 "
        f"{res['latency_ms_p95']:.0f} ms, p99 {res['latency_ms_p99']:.0f} ms"
    )
    if res["access_tx_per_s"]:
        print(
            f"  of which {res['attest_tx_per_s']:,.0f} attest tx/s and "
            f"{res['access_tx_per_s']:,.0f} access tx/s"
        )
    behind = res["backlog_at_end"] / args.rate
    print(
        f"backlog when submission ended: {res['backlog_at_end']:,} transactions "
        f"({behind:.1f} s of the offered load)"
        + (" -- falling behind: this rate is past saturation" if behind > 2 else "")
    )
    for n, c in res["cpu"].items():
        print(f"  {n:10} CPU {c:5.0%} of a core, RSS max {res['rss'][n]:6.1f} MB")
    print(
        f"  node CPU per committed transaction: {res['cpu_us_per_tx']:.0f} us (mean of the "
        f"nodes; raw signature check {1e6 / verify:.0f} us)"
    )
    print(f"  final heights: {[h and h['height'] for h in res['heights']]}")
    ratio = float(res["committed_tx_per_s"]) / (2 * verify / args.nodes)
    print(f"ratio to the verification ceiling: {ratio:.0%}")
    return ratio


if __name__ == "__main__":
    sys.exit(main())

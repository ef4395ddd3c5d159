#!/usr/bin/env python3
"""Randomized faults against a real 4-validator consortium under load, with the verdict.

Starts four validator processes, each in its own Linux network namespace
(scripts/harness/netns.py; on 127.0.0.1 with ``--loopback`` or where namespaces are
forbidden, with process faults only), and a load generator submitting signed ATTEST
transactions to all of them. Then, until ``--minutes`` have passed, one fault at a
time (at most f = 1 faulty validator, except the deliberate no-quorum 2–2 split):

| kind | what |
| --- | --- |
| kill9 / kill9-primary | ``kill -9`` of a random validator / the primary; restart after |
| sigterm | SIGTERM (clean shutdown) of a random validator, restart after the hold |
| cut-off | a validator restarted alone (no peers; loopback too), a document revoked via |
|  | another; asked 2 s on: UNVERIFIABLE, never VALID, /readyz 503; then it rejoins |
| isolate / isolate-primary | a validator's data link down for the hold, then up |
| split | 2–2 split (no quorum on either side: commits stop) for the hold, then healed |
| flap | a validator's link down/up every 0.3–1 s for the hold |
| slow-link | the primary's link limited to 256–1024 kbit/s (tc tbf) for the hold |
| netem | delay 20–80 ms ± jitter and 1–10 % loss on a link (only where the kernel has netem) |

After each fault is healed it measures the recovery (a fresh transaction acknowledged
as committed and held by every node) and runs the verdict (nothing lost, never twice,
no fork, every certificate verifies, no committed chain shrank; after a cut-off, no
stale answer). At the end: the
auditor's full replay of one node's chain, a report, and one JSON line with
``minutes``, ``faults``, ``acked``, ``lost``, ``forks``, ``stall_s_max``,
``recovery_s_median`` (and the other verdict counters, and ``stale_answers``: what a
cut-off node answered wrongly). Exit status 1 if anything was lost, forked, failed
verification or was answered from stale state.

The longest stall is the longest time without any acknowledged commit, except while a
2–2 split was in force (no quorum: PBFT must not commit then); such a gap counts from
the heal.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.harness import Env, netns, open_env, recover  # noqa: E402
from scripts.harness.staleness import stale_read  # noqa: E402
from scripts.harness.verdict import Verdict  # noqa: E402

PROCESS_KINDS = ["kill9", "kill9-primary", "sigterm", "cut-off"]
#: The freshness limit the cut-off fault's bank uses (FAST_PARAMS beat every 500 ms).
CUT_OFF_MAX_AGE_S = 2.0
NET_KINDS = ["isolate", "isolate-primary", "split", "flap", "slow-link", "netem"]


def longest_stall(acks: list[float], no_quorum: list[tuple[float, float]], start: float) -> float:
    """Longest gap between acknowledgements, not counting time under a 2–2 split."""
    best = 0.0
    prev = start
    for t in acks:
        begin = prev
        for s, e in no_quorum:
            if s < t and e > begin:
                begin = max(begin, min(e, t))
        best = max(best, t - begin)
        prev = t
    return best


class Chaos:
    def __init__(self, env: Env, rng: random.Random, kinds: list[str]) -> None:
        self.env = env
        self.rng = rng
        self.kinds = kinds
        self.faults: Counter[str] = Counter()
        self.recoveries: list[float] = []
        self.no_quorum: list[tuple[float, float]] = []
        self.verdicts: list[Verdict] = []
        self.errors: list[str] = []
        self.stale_answers: list[str] = []  # what cut-off nodes answered wrongly

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def one(self) -> None:
        cl = self.env.cluster
        kind = self.rng.choice(self.kinds)
        hold = self.rng.uniform(3.0, 10.0)
        primary = cl.primary()
        victim = (
            primary
            if kind.endswith("primary") or kind == "slow-link"
            else self.rng.choice(cl.names)
        )
        self.faults[kind] += 1
        via = next(n for n in cl.names if n != victim)
        shown = f"{victim}*" if victim == primary else victim  # * = was the primary
        t0 = time.monotonic()
        if kind in ("kill9", "kill9-primary", "sigterm"):
            cl.kill(victim, signal.SIGTERM if kind == "sigterm" else signal.SIGKILL)
            time.sleep(hold)
            t_heal = time.monotonic()
            cl.start([victim], wait_s=90)
            via = victim
        elif kind == "cut-off":
            seen = stale_read(cl, victim, via, max_age_s=CUT_OFF_MAX_AGE_S)
            t_heal = seen.rejoined_at
            hold = t_heal - t0
            self.log(seen.summary())
            self.stale_answers += [f"{victim}: {p}" for p in seen.problems()]
        elif kind in ("isolate", "isolate-primary"):
            cl.isolate(victim)
            time.sleep(hold)
            t_heal = time.monotonic()
            cl.heal()
        elif kind == "split":
            a = [primary, self.rng.choice([n for n in cl.names if n != primary])]
            cl.split([a, [n for n in cl.names if n not in a]])
            shown = "+".join(f"{n}*" if n == primary else n for n in a)
            time.sleep(hold)
            t_heal = time.monotonic()
            cl.heal()
            self.no_quorum.append((t0, t_heal))
        elif kind == "flap":
            end = time.monotonic() + hold
            while time.monotonic() < end:
                cl.flap(
                    victim,
                    cycles=1,
                    down_s=self.rng.uniform(0.3, 1.0),
                    up_s=self.rng.uniform(0.3, 1.0),
                )
            t_heal = time.monotonic()
            cl.heal()
        elif kind == "slow-link":
            rate = self.rng.choice(["256kbit", "512kbit", "1mbit"])
            cl.shape(victim, ["tbf", "rate", rate, "burst", "16kbit", "latency", "400ms"])
            time.sleep(hold)
            t_heal = time.monotonic()
            cl.heal()
            kind = f"slow-link {rate}"
        elif kind == "netem":
            delay = self.rng.randint(20, 80)
            loss = self.rng.randint(1, 10)
            cl.shape(
                victim, ["netem", "delay", f"{delay}ms", f"{delay // 4}ms", "loss", f"{loss}%"]
            )
            time.sleep(hold)
            t_heal = time.monotonic()
            cl.heal()
        else:
            raise ValueError(kind)
        seconds = recover(self.env, t_heal, via, cl.names, timeout_s=120)
        self.recoveries.append(seconds)
        t_end = time.monotonic()
        window = [t for t in self.env.load.ack_times() if t0 <= t <= t_end] + [t_end]
        stall = longest_stall(window, self.no_quorum, t0)
        v = self.env.verdict(wait_s=120)
        self.verdicts.append(v)
        self.log(
            f"{kind:<16} {shown:<18} hold {hold:4.1f} s  stall {stall:4.1f} s  "
            f"recovered {seconds:5.1f} s  "
            f"verdict {'OK' if v.ok else 'FAILED'}  heights "
            f"{sorted(set(v.heights.values()))}  acked {v.acked}"
        )
        if not v.ok:
            self.log(v.summary())

    def cleanup_after_error(self) -> None:
        """Put the cluster back together after a fault that raised."""
        cl = self.env.cluster
        try:
            if cl.net is not None:
                cl.heal()
            down = [n for n in cl.names if not cl.running(n)]
            for name in down:
                self.errors.append(f"{name} was down; log tail:\n{cl.log_tail(name, 15)}")
            cl.start(down, wait_s=90)
        except Exception as exc:  # noqa: BLE001 - report and go on
            self.errors.append(f"cleanup failed: {exc}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument(
        "--loopback",
        action="store_true",
        help="processes on 127.0.0.1: process faults only, no network cuts",
    )
    ap.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="devnet folder (default: a fresh temporary folder, kept on failure)",
    )
    ap.add_argument(
        "--faults",
        default=None,
        help="comma-separated fault kinds to draw from (default: every one available), "
        "e.g. --faults cut-off",
    )
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    use_netns = not args.loopback
    kinds = list(PROCESS_KINDS)
    if use_netns:
        reason = netns.probe()
        if reason is not None:
            print(f"network namespaces unavailable ({reason}); process faults only", flush=True)
            use_netns = False
    if use_netns:
        kinds += NET_KINDS
        reason = netns.netem_supported()
        if reason is not None:
            kinds.remove("netem")
            print(
                f"netem delay/loss faults skipped: {reason}; slow-link (tbf) faults run", flush=True
            )
    if args.faults:
        wanted = [k.strip() for k in args.faults.split(",") if k.strip()]
        unknown = [k for k in wanted if k not in PROCESS_KINDS + NET_KINDS]
        if unknown:
            ap.error(f"--faults: unknown {unknown}; known: {PROCESS_KINDS + NET_KINDS}")
        unavailable = [k for k in wanted if k not in kinds]
        if unavailable:
            ap.error(f"--faults: {unavailable} not available here (network faults need netns)")
        kinds = wanted
    base = args.dir or Path(tempfile.mkdtemp(prefix="dvp-chaos-"))
    print(
        f"chaos: seed {seed}, {args.minutes} min, faults {kinds}, devnet {base / 'net'}", flush=True
    )

    t_start = time.monotonic()
    end = t_start + args.minutes * 60
    with open_env(base / "net", netns=use_netns) as env:
        chaos = Chaos(env, rng, kinds)
        t_load = time.monotonic()
        while time.monotonic() < end:
            try:
                chaos.one()
            except Exception:  # noqa: BLE001 - a harness or node failure is a finding
                chaos.errors.append(traceback.format_exc(limit=3))
                chaos.log(f"fault raised:\n{chaos.errors[-1]}")
                chaos.cleanup_after_error()
            time.sleep(rng.uniform(1.0, 3.0))
        env.load.stop()
        final = env.verdict(wait_s=120)
        chaos.verdicts.append(final)
        audit = env.checker.full_audit(env.cluster.names[0])
        acks = env.load.ack_times()
        stall = longest_stall(acks, chaos.no_quorum, t_load)
        minutes = (time.monotonic() - t_start) / 60

    lost = set().union(*(v.lost_ids for v in chaos.verdicts))
    forks = set().union(*(set(v.forks) for v in chaos.verdicts))
    other = {
        "duplicates": sum(len(v.duplicates) for v in chaos.verdicts),
        "bad_blocks": sum(len(v.bad_blocks) for v in chaos.verdicts),
        "regressions": sum(len(v.regressions) for v in chaos.verdicts),
        "stuck": sum(len(v.stuck) for v in chaos.verdicts),
        "errors": len(chaos.errors),
        "stale_answers": len(chaos.stale_answers),
        "audit_ok": audit.ok,
    }
    median = statistics.median(chaos.recoveries) if chaos.recoveries else None
    print("\n=== chaos report ===")
    print(f"seed {seed}; ran {minutes:.1f} min; {'namespaces' if use_netns else 'loopback'}")
    print(
        "faults injected: "
        + ", ".join(f"{k} {n}" for k, n in sorted(chaos.faults.items()))
        + f" (total {sum(chaos.faults.values())})"
    )
    print(
        f"transactions acknowledged as committed: {final.acked}; uncertain "
        f"(accepted, not confirmed in time): {len(env.load.uncertain)}; "
        f"rejected by node: {dict(env.load.rejected)}; unreachable-node submits: "
        f"{env.load.errors}"
    )
    print(
        f"lost: {len(lost)}   forks: {len(forks)}   duplicates {other['duplicates']}   bad "
        f"blocks {other['bad_blocks']}   regressions {other['regressions']}   stuck "
        f"{other['stuck']}   harness errors {other['errors']}"
    )
    print(
        f"final heights {final.heights}; full audit replay: "
        f"{'OK' if audit.ok else audit.failure} ({audit.blocks} blocks, "
        f"{audit.transactions} txs, {audit.elapsed_s:.1f} s)"
    )
    print(
        f"longest stall {stall:.1f} s (2–2 splits excluded); recovery after heal: "
        f"median {median if median is None else round(median, 2)} s, max "
        f"{max(chaos.recoveries, default=0):.1f} s over {len(chaos.recoveries)} faults"
    )
    for err in chaos.errors:
        print(f"ERROR: {err}")
    for wrong in chaos.stale_answers:
        print(f"STALE ANSWER: {wrong}")
    print(
        json.dumps(
            {
                "minutes": round(minutes, 2),
                "faults": sum(chaos.faults.values()),
                "acked": final.acked,
                "lost": len(lost),
                "forks": len(forks),
                "stall_s_max": round(stall, 2),
                "recovery_s_median": None if median is None else round(median, 2),
                "faults_by_kind": dict(chaos.faults),
                "seed": seed,
                **other,
            }
        )
    )
    failed = (
        lost
        or forks
        or any(
            other[k]
            for k in ("duplicates", "bad_blocks", "regressions", "stuck", "errors", "stale_answers")
        )
        or not audit.ok
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

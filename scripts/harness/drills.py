"""Governance changes rehearsed under load: the drills of docs/RELIABILITY.md ("Drills").

Used by tests/system/test_drills.py (scaled down) and scripts/drills.py (full size). A
drill is a function run mid-load on a ``scripts.harness`` cluster, like a chaos fault:
it changes the consortium with real governance transactions (``cli.gov.propose`` and
``vote``, signed with the members' keys of the devnet folder) and restarts node
processes where the change needs it. Each returns a ``Drill``: when the change began
and ended, and the numbers measured over the load's acknowledgements.

- ``rotate_issuer_key``: ROTATE_KEY of the issuer's (szcredit's) member key while the
  load attests with it; the load switches to the new key once the change commits.
  A document attested (``dvp attest``) before the rotation must still verify VALID
  (``dvp verify``), as must one attested with the new key.
- ``add_and_remove_validator``: a fifth organisation (gzfintech) runs an observer under
  its member key, is made a validator (ADD_VALIDATOR with a fresh node key) and is
  restarted as a validator with it; then another validator is removed
  (REMOVE_VALIDATOR) and its node stopped.
- ``rotate_node_key``: a validator's consensus key replaced: REMOVE_VALIDATOR, then
  ADD_VALIDATOR of the same member with a fresh node key, and its node restarted with
  the new key file (the ledger has no one-step action for it: ADD_VALIDATOR refuses a
  member that is still a validator). The set runs with three validators in between.
- ``rolling_upgrade`` and ``replace_node_identity``: in ``scripts.harness.drills_nodes``
  (``NodeDrills``, which has every drill).

The chain must commit throughout; ``Drill.longest_pause_s`` is the longest time with
no acknowledged commit while the change was under way. The verdict (nothing
acknowledged lost) runs after each drill, with the new validator sets ``learn``-ed
from ``getValidators`` (the full audit replay re-derives them from the transactions).
"""

from __future__ import annotations

import re
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.gov import propose, vote
from cli.network_index import NodeEntry, free_ports
from cli.rpc_client import RpcClient
from ledger.consortium import ValidatorSet
from ledger.crypto import KeyPair, read_key_file
from ledger.keyfile import write_seed
from ledger.types import GovAction
from scripts.harness import Env, poll_until, signs_again
from scripts.harness.ceremony import dvp

ISSUER = "szcredit"
NEW_VALIDATOR = "gzfintech"  # a member of the devnet template without roles


@dataclass
class Drill:
    name: str
    started: float  # time.monotonic()
    ended: float
    details: dict[str, Any] = field(default_factory=dict)
    acked: int = 0
    lost: int = 0
    longest_pause_s: float = 0.0
    tx_per_s: dict[str, float] = field(default_factory=dict)  # before, during, after

    def line(self) -> str:
        r = self.tx_per_s
        return (
            f"{self.name}: {self.ended - self.started:.1f} s; committed tx/s before "
            f"{r.get('before', 0):.1f}, during {r.get('during', 0):.1f}, after "
            f"{r.get('after', 0):.1f}; longest pause {self.longest_pause_s * 1000:.0f} ms; "
            f"acknowledged {self.acked}, lost {self.lost}"
        )


def longest_gap(times: list[float], start: float, end: float) -> float:
    """Longest interval within [start, end] with no time from ``times`` in it."""
    best, prev = 0.0, start
    for t in sorted(x for x in times if start <= x <= end):
        best, prev = max(best, t - prev), t
    return max(best, end - prev)


def rate(times: list[float], start: float, end: float) -> float:
    return sum(1 for t in times if start <= t < end) / max(end - start, 1e-9)


class Drills:
    """The drills on one started ``Env`` (a cluster made by ``open_env``)."""

    def __init__(self, env: Env, log: Any = print) -> None:
        self.env = env
        self.root = env.cluster.root
        self.log = log
        self.keys: dict[str, KeyPair] = {
            p.name.split(".")[0]: read_key_file(p)
            for p in (self.root / "keys").glob("*.member.json")
        }
        self.stopped: list[str] = []  # nodes taken out of the consortium
        # The environment of the "build" new nodes run (after a rolling upgrade, the
        # rehearsal's new build: DVP_PROTOCOL_MAX=2).
        self.build_env: dict[str, str] = {}

    # ------------------------------------------------------------------ helpers

    @property
    def live(self) -> list[str]:
        return [n for n in self.env.cluster.names if n not in self.stopped]

    def client(self, name: str | None = None) -> RpcClient:
        return RpcClient(self.env.cluster.urls[name or self.live[0]], timeout_s=30)

    def validators(self, height: int | None = None) -> ValidatorSet:
        c = self.client()
        try:
            doc = (
                c.call("getValidators")
                if height is None
                else c.call("getValidators", height=height)
            )
        finally:
            c.close()
        return ValidatorSet.decode(bytes.fromhex(doc["encoded"]))

    def height(self) -> int:
        c = self.client()
        try:
            return int(c.call("status")["height"])
        finally:
            c.close()

    def govern(self, action: GovAction, args: tuple[Any, ...], leaving: str = "") -> int:
        """Propose with a validator member's key, vote yes with the others until it is
        approved; the height at which it was decided. Who may vote is asked before
        each vote; ``leaving``, a member whose removal is decided but maybe not yet in
        force, does not vote (its vote would fail if the removal took effect first)."""
        c = self.client()
        try:
            voters = [v.member_id for v in self.validators().validators]
            proposer = next(m for m in voters if m != leaving)
            out = propose(c, self.keys[proposer], action, args, wait=True)
            pid, prop = out["proposal_id"], out.get("proposal") or {}
            voted = {proposer, leaving}
            while prop.get("status") == "open":
                member = next(
                    v.member_id for v in self.validators().validators if v.member_id not in voted
                )
                voted.add(member)
                prop = vote(c, self.keys[member], bytes.fromhex(pid), True, wait=True)["proposal"]
        finally:
            c.close()
        if prop.get("status") != "approved":
            raise AssertionError(f"{action.name} {args!r} not approved: {prop}")
        self.log(f"  {action.name.lower()} approved at block {prop['decided_height']}")
        return int(prop["decided_height"])

    def wait_effective(self, decided: int) -> int:
        """Wait until every live node is past the height a change decided at ``decided``
        takes effect at (ledger.rules._schedule); that height."""
        params = self.env.checker.genesis.params  # the drills change no parameter
        eff = decided + max(params.validator_change_delay, params.pipeline_window + 1)
        self.env.cluster.wait_height(eff + 1, self.live, timeout_s=120)
        return eff

    def learn_sets(self, lo: int, hi: int) -> None:
        """Teach the verdict the validator sets in force at heights ``lo..hi``."""
        c = self.client()
        try:
            seen: set[str] = set()
            for start in range(max(lo, 1), hi + 1, 25):
                calls = [
                    ("getValidators", {"height": h}) for h in range(start, min(start + 25, hi + 1))
                ]
                for doc in c.batch(calls):
                    if isinstance(doc, dict) and doc["hash"] not in seen:
                        seen.add(doc["hash"])
                        self.env.checker.learn(ValidatorSet.decode(bytes.fromhex(doc["encoded"])))
        finally:
            c.close()

    def new_key(self, path: Path) -> KeyPair:
        write_seed(path, secrets.token_bytes(32))
        return read_key_file(path)

    def set_node(self, name: str, *, role: str, key_file: str) -> None:
        """Rewrite ``[node] role`` and ``key_file`` of ``name``'s config."""
        cfg = self.env.cluster.entries[name].config
        text = re.sub(r'\nrole = "[a-z]+"', f'\nrole = "{role}"', cfg.read_text(), count=1)
        text = re.sub(r'\nkey_file = "[^"]*"', f'\nkey_file = "{key_file}"', text, count=1)
        cfg.write_text(text)

    def add_node(
        self,
        name: str,
        member: str,
        role: str,
        *,
        tell_peers: bool,
        tls: tuple[Path, Path] | None = None,
    ) -> NodeEntry:
        """A new node's config made from the first validator's (its own name, data
        directory and ports, every node as a peer), registered with the cluster, not
        started. ``tell_peers``: the other nodes add its address to their peers (read
        at their next start: a running node dials the peers it resolved when it started,
        and accepts the newcomer's connections once its key is allowed). ``tls``:
        (certificate, key) its RPC serves HTTPS with."""
        cl = self.env.cluster
        p2p, rpc = free_ports(2)
        template = cl.entries[cl.names[0]].config
        peers = "\n".join(f'{e.name} = "127.0.0.1:{e.p2p_port}"' for e in cl.entries.values())
        text = re.sub(r'\nname = "[^"]*"', f'\nname = "{name}"', template.read_text(), count=1)
        text = re.sub(r'\ndata_dir = "[^"]*"', f'\ndata_dir = "../data/{name}"', text)
        text = re.sub(r'(\[p2p\]\nlisten = )"[^"]*"', rf'\1"127.0.0.1:{p2p}"', text)
        text = re.sub(r'(\[rpc\]\nlisten = )"[^"]*"', rf'\1"127.0.0.1:{rpc}"', text)
        text = re.sub(r"(\[p2p\.peers\]\n)(?:[^\[]*?)(\n\[rpc\])", rf"\g<1>{peers}\n\2", text)
        config = template.with_name(f"{name}.toml")
        config.write_text(text)
        if tell_peers:
            for e in list(cl.entries.values()):
                cfg = e.config.read_text()
                cfg = cfg.replace("[p2p.peers]\n", f'[p2p.peers]\n{name} = "127.0.0.1:{p2p}"\n')
                e.config.write_text(cfg)
        entry = NodeEntry(name, member, role, config, p2p, rpc)
        cl.entries[name] = entry
        cl.urls[name] = entry.rpc_url
        cl.node_env[name] = dict(self.build_env)
        if tls is not None:
            self.set_tls(name, *tls)
        return entry

    def set_tls(self, name: str, cert: Path, key: Path) -> None:
        """Serve ``name``'s RPC over HTTPS with ``cert``/``key`` from its next start; the
        cluster's clients trust exactly that certificate (pinned as their CA file)."""
        cl = self.env.cluster
        cfg = cl.entries[name].config
        text = re.sub(r"\ntls_(cert|key) = [^\n]*", "", cfg.read_text())
        text = text.replace("[rpc]\n", f'[rpc]\ntls_cert = "{cert}"\ntls_key = "{key}"\n', 1)
        cfg.write_text(text)
        cl.urls[name] = cl.urls[name].replace("http://", "https://", 1)
        cl.cafiles[name] = cert

    def attest(self, tag: str) -> tuple[Path, str]:
        """``dvp attest`` of a fresh document with the issuer's current key file."""
        doc = self.root / f"drill-{tag}.pdf"
        doc.write_bytes(f"%PDF-1.4 a credit report of the drill {tag} {time.time_ns()}\n".encode())
        made = dvp(
            "attest", str(doc), "--doc-type", "credit-report", "--key",
            str(self.root / "keys" / f"{ISSUER}.member.json"),
            "--rpc", self.env.cluster.urls[self.live[0]], "--wait",
        )  # fmt: skip
        return doc, str(made["verification_code"])

    def verify(self, doc: Path, code: str) -> str:
        out = dvp(
            "verify", str(doc), "--code", code, "--genesis", str(self.root / "genesis.json"),
            "--rpc", self.env.cluster.urls[self.live[-1]],
        )  # fmt: skip
        return str(out["status"])

    def measure(self, d: Drill, window_s: float) -> Drill:
        """Figures of ``d`` over the load's acknowledgements, then the verdict."""
        after_end = time.monotonic() + window_s
        poll_until(lambda: time.monotonic() >= after_end, window_s + 5, "the after window")
        times = self.env.load.ack_times()
        d.tx_per_s = {
            "before": rate(times, d.started - window_s, d.started),
            "during": rate(times, d.started, d.ended),
            "after": rate(times, d.ended, after_end),
        }
        d.longest_pause_s = longest_gap(times, d.started, d.ended)
        self.learn_sets(1, self.height() + 8)
        v = self.env.verdict(honest=self.live, wait_s=120)
        d.acked, d.lost = v.acked, len(v.lost_ids)
        v.assert_ok()
        return d

    # ------------------------------------------------------------------ drills

    def rotate_issuer_key(self, window_s: float) -> Drill:
        """ROTATE_KEY of the issuer's member key while the load attests with it."""
        keys_dir = self.root / "keys"
        old_doc, old_code = self.attest("before-rotation")
        d = Drill("issuer_rotation", time.monotonic(), 0.0)
        fresh = self.new_key(keys_dir / f"{ISSUER}.member.new.json")
        self.govern(GovAction.ROTATE_KEY, (ISSUER, fresh.public_key))
        with self.env.load.lock:  # the issuer's clients switch to the new key
            self.env.load.key = fresh
        self.keys[ISSUER] = fresh
        # The operator's step: the new key file takes the old one's place.
        (keys_dir / f"{ISSUER}.member.json").replace(keys_dir / f"{ISSUER}.member.old.json")
        (keys_dir / f"{ISSUER}.member.new.json").replace(keys_dir / f"{ISSUER}.member.json")
        switched = time.monotonic()
        poll_until(
            lambda: (
                sum(1 for a in self.env.load.snapshot().values() if a.submitted > switched) >= 20
            ),
            60,
            "20 load transactions sent with the new issuer key acknowledged",
        )
        d.ended = time.monotonic()
        new_doc, new_code = self.attest("after-rotation")
        d.details = {
            "old_attestation": self.verify(old_doc, old_code),
            "new_attestation": self.verify(new_doc, new_code),
            "rejected_so_far": dict(self.env.load.rejected),  # by code, whole run
        }
        return self.measure(d, window_s)

    def add_and_remove_validator(self, window_s: float, remove: str = "webank") -> Drill:
        """A fifth validator joins (observer first), then ``remove`` leaves."""
        cl = self.env.cluster
        d = Drill("validator_add_remove", time.monotonic(), 0.0)
        # The new organisation's node follows the chain as an observer (member key).
        node_key = self.new_key(self.root / "keys" / f"{NEW_VALIDATOR}.node.json")
        self.add_node(NEW_VALIDATOR, NEW_VALIDATOR, "validator", tell_peers=True)
        entry = cl.entries[NEW_VALIDATOR]
        self.set_node(
            NEW_VALIDATOR, role="observer", key_file=f"../keys/{NEW_VALIDATOR}.member.json"
        )
        cl.start([NEW_VALIDATOR], wait_s=90)
        cl.wait_height(self.height(), [NEW_VALIDATOR], timeout_s=120)
        decided = self.govern(GovAction.ADD_VALIDATOR, (NEW_VALIDATOR, node_key.public_key))
        eff = self.wait_effective(decided)
        # Its operator restarts it as a validator with its node key.
        cl.kill(NEW_VALIDATOR, signal.SIGTERM)
        self.set_node(
            NEW_VALIDATOR, role="validator", key_file=f"../keys/{NEW_VALIDATOR}.node.json"
        )
        cl.start([NEW_VALIDATOR], wait_s=90)
        self.env.checker.add_node(NEW_VALIDATOR, entry.rpc_url)
        five = self.validators()
        # Then one of the first four leaves; its node is stopped once the change is in force.
        decided = self.govern(GovAction.REMOVE_VALIDATOR, (remove,), remove)
        self.stopped.append(remove)
        eff2 = self.wait_effective(decided)
        cl.kill(remove, signal.SIGTERM)
        d.ended = time.monotonic()
        # Does the new validator sign commits? (measured after the change)
        voting = self.signed_by(NEW_VALIDATOR, node_key.public_key)
        four = self.validators()
        d.details = {
            "added_at": eff,
            "removed_at": eff2,
            "validators_with_five": [v.member_id for v in five.validators],
            "validators_after": [v.member_id for v in four.validators],
            "new_validator_signed": voting,
        }
        return self.measure(d, window_s)

    def rotate_node_key(self, window_s: float, victim: str = "hkbank") -> Drill:
        """A validator's consensus key replaced: removed, re-added with a new node key,
        its node restarted with the new key file."""
        cl = self.env.cluster
        d = Drill("node_key_rotation", time.monotonic(), 0.0)
        old = next(v.node_key for v in self.validators().validators if v.member_id == victim)
        fresh = self.new_key(self.root / "keys" / f"{victim}.node.new.json")
        self.govern(GovAction.REMOVE_VALIDATOR, (victim,))
        self.stopped.append(victim)  # its old key is refused once the removal is in force
        decided = self.govern(GovAction.ADD_VALIDATOR, (victim, fresh.public_key), victim)
        eff = self.wait_effective(decided)
        cl.kill(victim, signal.SIGTERM)
        self.set_node(victim, role="validator", key_file=f"../keys/{victim}.node.new.json")
        cl.start([victim], wait_s=90)
        self.stopped.remove(victim)
        cl.wait_height(self.height(), [victim], timeout_s=120)  # it follows again
        d.ended = time.monotonic()
        voting = self.signed_by(victim, fresh.public_key)
        now = next(v.node_key for v in self.validators().validators if v.member_id == victim)
        d.details = {
            "effective_at": eff,
            "old_key": old.hex()[:16],
            "new_key": now.hex()[:16],
            "new_key_signed": voting,
        }
        assert now == fresh.public_key != old
        return self.measure(d, window_s)

    def signed_by(self, member: str, node_key: bytes, timeout_s: float = 60) -> bool:
        """Whether ``node_key`` signs a certificate within ``timeout_s`` (``signs_again``)."""
        return signs_again(self.env, member, node_key, timeout_s)

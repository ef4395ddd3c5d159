"""Drills that replace a node's software or identity under load: the second half of
``scripts.harness.drills`` (docs/RELIABILITY.md, "Governance drills").

``NodeDrills`` is ``Drills`` with two more:

- ``rolling_upgrade``: validators restarted one at a time onto the "new build" (the
  rehearsal knob ``DVP_PROTOCOL_MAX=2`` in their environment: protocol versions 1-2,
  version 2 with version 1's semantics), then ACTIVATE_VERSION 2 at a height about
  ``lead_s`` of blocks ahead. One validator stays on the old build: it must stop by
  itself with its one-line error (exit status 5) when the activation arrives, and be
  refused on the old build (it stops at start, or its peers refuse its hello); then its
  operator upgrades it and it rejoins. Blocks from the activation height carry version 2.
  A new observer on the old build (empty store) starts, and the validators refuse its
  hello (``refused a peer: it speaks protocol versions 1-1 ...``).
- ``replace_node_identity``: an observer's p2p identity and TLS certificate replaced. A
  validator's p2p identity is its node key (``rotate_node_key``); an observer's is its
  member key, replaced by ROTATE_KEY. The observer (of a member with no validator) serves
  its RPC over HTTPS with a self-signed certificate; after the rotation it is restarted
  with the new key and a new certificate, and a client pinning the new certificate
  reaches it while one pinning the old is refused (the RPC server, hypercorn, loads its
  certificate at start: replacing one is a restart).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from cli.devnet import status_of
from cli.rpc_client import RpcCallError, RpcClient
from ledger.protocol import REHEARSAL_ENV
from ledger.types import GovAction
from p2p import peer_id_of
from scripts.harness import poll_until
from scripts.harness.drills import ISSUER, Drill, Drills


class NodeDrills(Drills):
    """Every drill on one started ``Env``."""

    def rolling_upgrade(self, window_s: float, lead_s: float = 20.0) -> Drill:
        """Validators restarted one at a time onto the "new build" (protocol versions
        1-2, by the rehearsal knob ``DVP_PROTOCOL_MAX``), then ACTIVATE_VERSION 2 about
        ``lead_s`` of blocks ahead. One validator is left on the old build: it must stop
        by itself, with its one-line error, when the activation arrives, and refuse to
        start again on the old build; upgraded, it rejoins."""
        cl = self.env.cluster
        d = Drill("rolling_upgrade", time.monotonic(), 0.0)
        voters = {v.member_id for v in self.validators().validators}
        nodes = [n for n in self.live if cl.entries[n].member in voters]
        old = nodes[-1]  # left on the old build
        supported: dict[str, Any] = {}
        for name in nodes[:-1]:
            cl.kill(name, signal.SIGTERM)
            cl.node_env[name] = {REHEARSAL_ENV: "2"}
            cl.start([name], wait_s=90)
            cl.wait_height(self.height(), [name], timeout_s=120)
            supported[name] = (cl.status(name) or {}).get("protocol_versions_supported")
            self.log(f"  {name} runs the new build: versions {supported[name]}")
        h0, t0 = self.height(), time.monotonic()
        time.sleep(2.0)
        per_s = (self.height() - h0) / (time.monotonic() - t0)
        at = self.height() + max(40, round(per_s * lead_s))
        decided = self.govern(GovAction.ACTIVATE_VERSION, (2, at))
        self.log(f"  version 2 activates at block {at}")
        poll_until(lambda: not cl.running(old), 180, f"{old} (old build) to stop by itself")
        self.stopped.append(old)
        exit_status = cl.procs[old].returncode
        stop_line = _last_line_with(cl.log_tail(old, 60), "protocol version")
        cl.wait_height(at + 1, self.live, timeout_s=120)
        versions = {h: self.header_version(h) for h in (at - 1, at, self.height())}
        # Still on the old build, it is refused: it stops at start, or its peers refuse
        # its hello (when it stopped a few blocks before the activation height).
        refused = self.old_build_refused(old, nodes[:-1])
        newcomer = self.old_build_newcomer_refused(nodes[:-1])
        cl.node_env[old] = {REHEARSAL_ENV: "2"}  # its operator upgrades it
        self.build_env = {REHEARSAL_ENV: "2"}
        cl.start([old], wait_s=90)
        self.stopped.remove(old)
        cl.wait_height(self.height(), [old], timeout_s=120)
        d.ended = time.monotonic()
        d.details = {
            "decided_at": decided,
            "activation_height": at,
            "versions_by_height": versions,
            "upgraded_supported": supported,
            "old_build_node": old,
            "old_build_exit_status": exit_status,
            "old_build_stop_line": stop_line,
            "old_build_refused": refused,
            "old_build_newcomer_refused": newcomer,
            "protocol_version_now": (cl.status(old) or {}).get("protocol_version"),
        }
        return self.measure(d, window_s)

    def old_build_refused(self, old: str, peers: list[str]) -> str:
        """Start ``old`` on the old build again: how it was refused ("" if it was not)."""
        cl = self.env.cluster
        try:
            cl.start([old], wait_s=60)
        except RuntimeError as exc:
            return "stopped at start: " + _last_line_with(str(exc), "protocol version")

        poll_until(
            lambda: not cl.running(old) or bool(self.hello_refusal(peers)), 60, f"{old} refused"
        )
        if cl.running(old):
            cl.kill(old, signal.SIGTERM)
            return "refused by peers: " + self.hello_refusal(peers)
        return "stopped: " + _last_line_with(cl.log_tail(old, 60), "protocol version")

    def old_build_newcomer_refused(self, peers: list[str]) -> str:
        """A new observer on the old build (a spare member's key, an empty store) after
        the activation: it starts (its store knows no activation), and ``peers`` refuse
        its hello; the line one of them logged. It is stopped again."""
        cl = self.env.cluster
        member = self.spare_member()
        name = f"{member}-oldbuild"
        self.add_node(name, member, "observer", tell_peers=False)
        self.set_node(name, role="observer", key_file=f"../keys/{member}.member.json")
        cl.node_env[name] = {}  # the old build
        cl.start([name], wait_s=90)
        try:
            poll_until(lambda: bool(self.hello_refusal(peers)), 60, f"{name}'s hello refused")
            return self.hello_refusal(peers)
        finally:
            cl.kill(name, signal.SIGTERM)

    def hello_refusal(self, peers: list[str]) -> str:
        """The last p2p hello refusal one of ``peers`` logged ("" if none)."""
        for p in peers:
            line = _last_line_with(self.env.cluster.log_tail(p, 400), "speaks protocol versions")
            if line:
                return f"{p}: {line}"
        return ""

    def header_version(self, height: int) -> int:
        c = self.client()
        try:
            return int(c.call("getHeader", height=height)["header"]["version"])
        finally:
            c.close()

    def spare_member(self) -> str:
        """A member with no role in the load (not the issuer), not a validator, and with
        no node of its own running: whose member key an observer can use."""
        c = self.client()
        try:
            members = [m["member_id"] for m in c.call("getMembers")["members"]]
        finally:
            c.close()
        cl = self.env.cluster
        voters = {v.member_id for v in self.validators().validators}
        busy = {e.member for n, e in cl.entries.items() if cl.running(n)}
        free = [m for m in members if m not in voters | busy | {ISSUER}]
        if not free:
            raise AssertionError("no spare member for an observer")
        return free[0]

    def replace_node_identity(self, window_s: float) -> Drill:
        """An observer's p2p identity and its RPC's TLS certificate replaced. A validator's
        p2p identity is its node key (``rotate_node_key``); an observer's is its member
        key, which only governance can replace (ROTATE_KEY): the new key is approved,
        the observer restarted with it and with a new certificate, and clients that pin
        the new certificate reach it over HTTPS while the old one is refused."""
        from tests.support.tls import write_self_signed

        cl = self.env.cluster
        member = self.spare_member()
        name = f"{member}-observer"
        tls_dir = self.root / "tls"
        cert1, key1 = write_self_signed(tls_dir / f"{name}-1")
        self.add_node(name, member, "observer", tell_peers=False, tls=(cert1, key1))
        self.set_node(name, role="observer", key_file=f"../keys/{member}.member.json")
        cl.start([name], wait_s=90)
        self.wait_follows(name, timeout_s=900)
        keys_dir = self.root / "keys"
        d = Drill("node_identity_replacement", time.monotonic(), 0.0)
        old_key = self.keys[member].public_key
        fresh = self.new_key(keys_dir / f"{member}.member.new.json")
        self.govern(GovAction.ROTATE_KEY, (member, fresh.public_key))
        self.keys[member] = fresh
        (keys_dir / f"{member}.member.json").replace(keys_dir / f"{member}.member.old.json")
        (keys_dir / f"{member}.member.new.json").replace(keys_dir / f"{member}.member.json")
        cert2, key2 = write_self_signed(tls_dir / f"{name}-2")
        cl.kill(name, signal.SIGTERM)
        self.set_tls(name, cert2, key2)
        cl.start([name], wait_s=90)
        self.wait_follows(name)
        d.ended = time.monotonic()
        d.details = {
            "member": member,
            "old_peer_id": str(peer_id_of(old_key)),
            "new_peer_id": str(peer_id_of(fresh.public_key)),
            "https_new_certificate": self.https_height(name, cert2) is not None,
            "https_old_certificate_refused": _tls_refused(cl.urls[name], cert1),
            "peers": (cl.status(name) or {}).get("peers"),
        }
        return self.measure(d, window_s)

    def wait_follows(self, name: str, timeout_s: float = 120) -> None:
        """Wait until ``name`` (any node, HTTPS too) is at the chain's current height.
        A new node replays every block from genesis (~50 blocks/s here, against a chain
        of thousands in a full-size run): give it time."""
        target = self.height()
        poll_until(
            lambda: (self.https_height(name) or -1) >= target,
            timeout_s,
            f"{name} at height {target}",
        )

    def https_height(self, name: str, cafile: Path | None = None) -> int | None:
        """``name``'s height, its RPC trusted by ``cafile`` (default: the pinned one)."""
        cl = self.env.cluster
        ca = cafile or cl.cafiles.get(name)
        st = status_of(
            RpcClient(cl.urls[name], timeout_s=5, cafile=None if ca is None else str(ca))
        )
        return None if st is None else int(st["height"])


def _last_line_with(text: str, needle: str) -> str:
    return next((ln.strip() for ln in reversed(text.splitlines()) if needle in ln), "")


def _tls_refused(url: str, cafile: Path) -> bool:
    """Whether a client pinning ``cafile`` is refused by the server's certificate."""
    c = RpcClient(url, timeout_s=5, cafile=str(cafile))
    try:
        c.call("status")
    except RpcCallError as exc:  # "cannot reach <url>: [SSL: CERTIFICATE_VERIFY_FAILED] ..."
        return "CERTIFICATE_VERIFY_FAILED" in str(exc)
    finally:
        c.close()
    return False

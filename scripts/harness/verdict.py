"""The verdict after a fault: nothing lost, no fork, every certificate verifies, liveness.

``ChainChecker`` reads every honest node's chain over its RPC (``getBlock`` in
batches) and keeps what it has verified, so a verdict after each of many faults only
reads the new blocks (plus the previously verified tip, to notice a node whose
committed chain shrank or changed — a durability failure). For every block it checks,
with the ledger's own code: the header decodes and hashes to the block id the node
reports (``BlockHeader.block_id``), it links to the previous block, it is certified by
the validator set its header names (``CommitCertificate.verify`` — a quorum of valid
COMMIT signatures for exactly this block): the genesis set, or a set the caller has
``learn``-ed (governance drills change the set; the full audit replay re-derives every
set from the governance transactions).

- **Nothing lost**: every transaction a client was told was committed (``Load.acked``)
  is in every honest node's chain exactly once, at the height the client was told,
  and ``getTransaction`` on every honest node finds it there.
- **Never twice**: no transaction id appears twice in any node's chain (this covers
  the *uncertain* ones, which may or may not have committed).
- **No fork**: identical block ids at every height two honest nodes share.
- **Liveness**: the verdict first waits (bounded) until every honest node holds every
  acknowledged transaction; a node that does not get there in time is reported.

``full_audit`` runs the auditor's complete replay (``ledger.audit.replay`` over RPC:
re-execution of every transaction and root from genesis) on one node; identical block
ids on all nodes extend it to every node.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.rpc_client import RpcCallError, RpcClient
from ledger.consortium import ValidatorSet
from ledger.errors import LedgerError
from ledger.genesis import read_genesis
from ledger.types import BlockHeader, CommitCertificate
from scripts.harness.load import Ack

FETCH_BATCH = 25


@dataclass
class Verdict:
    honest: list[str]
    heights: dict[str, int] = field(default_factory=dict)
    acked: int = 0
    lost: list[str] = field(default_factory=list)  # "<node>: <tx id> ..." lines
    lost_ids: set[bytes] = field(default_factory=set)
    duplicates: list[str] = field(default_factory=list)
    forks: list[int] = field(default_factory=list)  # heights with > 1 block id
    bad_blocks: list[str] = field(default_factory=list)  # certificate/link/hash failures
    regressions: list[str] = field(default_factory=list)  # committed chain shrank/changed
    stuck: list[str] = field(default_factory=list)  # liveness within the bound
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicates
            or self.forks
            or self.bad_blocks
            or self.regressions
            or self.stuck
        )

    def summary(self) -> str:
        head = (
            f"verdict: {'OK' if self.ok else 'FAILED'} — {self.acked} acknowledged txs, "
            f"heights {self.heights}, lost {len(self.lost)}, duplicates "
            f"{len(self.duplicates)}, forks {len(self.forks)}, bad blocks "
            f"{len(self.bad_blocks)}, regressions {len(self.regressions)}, stuck "
            f"{len(self.stuck)} ({self.seconds:.1f} s)"
        )
        details = [
            *self.lost[:5],
            *self.duplicates[:5],
            *[f"fork at {h}" for h in self.forks[:5]],
            *self.bad_blocks[:5],
            *self.regressions[:5],
            *self.stuck[:5],
        ]
        return "\n  ".join([head, *details])

    def assert_ok(self) -> None:
        assert self.ok, self.summary()


@dataclass
class _NodeChain:
    ids: list[bytes] = field(default_factory=list)  # index = height
    tx_at: dict[bytes, list[int]] = field(default_factory=dict)
    checked_acks: set[bytes] = field(default_factory=set)


class ChainChecker:
    """Incremental verdicts over one cluster's nodes (``urls``: name -> RPC URL)."""

    def __init__(self, urls: dict[str, str], genesis_path: Path) -> None:
        self.urls = dict(urls)
        self.genesis = read_genesis(genesis_path)
        self.vset = self.genesis.validators
        self.vsets: dict[bytes, ValidatorSet] = {self.vset.hash: self.vset}
        self.chains: dict[str, _NodeChain] = {n: _NodeChain() for n in urls}

    def learn(self, vset: ValidatorSet) -> None:
        """Accept blocks certified by ``vset`` too (a set governance put in force)."""
        self.vsets[vset.hash] = vset

    def add_node(self, name: str, url: str) -> None:
        """Check a node that joined after the start (a validator added by governance)."""
        self.urls[name] = url
        self.chains.setdefault(name, _NodeChain())

    # ------------------------------------------------------------------ public

    def check(
        self, acked: dict[bytes, Ack], honest: list[str] | None = None, wait_s: float = 90.0
    ) -> Verdict:
        t0 = time.monotonic()
        honest = honest or list(self.urls)
        v = Verdict(honest=honest, acked=len(acked))
        need = max((a.height for a in acked.values()), default=0)
        clients = {n: RpcClient(self.urls[n], timeout_s=20) for n in honest}
        try:
            tops = self._wait_tops(clients, need, wait_s, v)
            for name in honest:
                self._extend(name, clients[name], tops.get(name), v)
            self._compare(honest, v)
            self._acks(acked, honest, clients, v)
        finally:
            for c in clients.values():
                c.close()
        v.heights = {n: len(self.chains[n].ids) - 1 for n in honest}
        v.seconds = time.monotonic() - t0
        return v

    def full_audit(self, name: str) -> Any:
        """The auditor's replay of ``name``'s whole chain from genesis over RPC."""
        from ledger.audit import RpcSource, replay

        client = RpcClient(self.urls[name], timeout_s=30)
        try:
            return replay(RpcSource(client), self.genesis)
        finally:
            client.close()

    # ------------------------------------------------------------------ steps

    def _wait_tops(
        self, clients: dict[str, RpcClient], need: int, wait_s: float, v: Verdict
    ) -> dict[str, int]:
        """Heights of the honest nodes once all hold ``need`` (or when time is up)."""
        deadline = time.monotonic() + wait_s
        tops: dict[str, int] = {}
        while True:
            for name, c in clients.items():
                try:
                    tops[name] = int(c.call("status")["height"])
                except (RpcCallError, OSError, ValueError):
                    c.close()
            if len(tops) == len(clients) and min(tops.values()) >= need:
                return tops
            if time.monotonic() > deadline:
                for name in clients:
                    if tops.get(name, -1) < need:
                        v.stuck.append(
                            f"{name}: at height {tops.get(name)} after "
                            f"{wait_s:.0f} s, needs {need} (acknowledged txs)"
                        )
                return tops
            time.sleep(0.25)

    def _fetch(self, c: RpcClient, heights: range) -> list[Any]:
        out: list[Any] = []
        for lo in range(heights.start, heights.stop, FETCH_BATCH):
            hi = min(lo + FETCH_BATCH, heights.stop)
            out.extend(c.batch([("getBlock", {"height": h}) for h in range(lo, hi)]))
        return out

    def _extend(self, name: str, c: RpcClient, top: int | None, v: Verdict) -> None:
        chain = self.chains[name]
        if top is None:
            return
        known = len(chain.ids) - 1
        if top < known:
            v.regressions.append(
                f"{name}: height {top} is below {known}, which it had committed before"
            )
            return
        start = max(known, 0)
        try:
            docs = self._fetch(c, range(start, top + 1))
        except (RpcCallError, OSError, ValueError) as exc:
            v.stuck.append(f"{name}: blocks unreadable: {exc}")
            return
        for h, doc in zip(range(start, top + 1), docs, strict=True):
            if isinstance(doc, Exception):
                v.bad_blocks.append(f"{name}@{h}: getBlock failed: {doc}")
                return
            block_id = bytes.fromhex(doc["block_id"])
            if h == known and known >= 0 and chain.ids:
                if block_id != chain.ids[h]:
                    v.regressions.append(
                        f"{name}@{h}: block id changed from "
                        f"{chain.ids[h].hex()[:16]} to {block_id.hex()[:16]}"
                    )
                    return
                continue
            problem = self.check_block(h, doc, block_id, chain.ids[h - 1] if h else None)
            if problem:
                v.bad_blocks.append(f"{name}@{h}: {problem}")
                return
            chain.ids.append(block_id)
            for tx in doc["tx_ids"]:
                chain.tx_at.setdefault(bytes.fromhex(tx), []).append(h)

    def check_block(
        self, h: int, doc: dict[str, Any], block_id: bytes, prev: bytes | None
    ) -> str | None:
        try:
            header = BlockHeader.decode(bytes.fromhex(doc["encoded"]))
        except (LedgerError, ValueError) as exc:
            return f"header does not decode: {exc}"
        if header.block_id != block_id or header.height != h:
            return "header does not hash to the reported block id / height"
        if h == 0:
            return None
        if header.prev_block_id != prev:
            return "header does not link to the previous block"
        vset = self.vsets.get(header.validator_set_hash)
        if vset is None:
            return "certified by a validator set this verdict does not know"
        if header.tx_count != len(doc["tx_ids"]):
            return "tx count differs from the listed tx ids"
        if not doc.get("certificate"):
            return "no commit certificate"
        try:
            cert = CommitCertificate.decode(bytes.fromhex(doc["certificate"]))
            if cert.height != h:
                return f"certificate is for height {cert.height}"
            cert.verify(self.genesis.chain_id, vset, block_id)
        except (LedgerError, ValueError) as exc:
            return f"certificate does not verify: {exc}"
        return None

    def _compare(self, honest: list[str], v: Verdict) -> None:
        longest = max((self.chains[n].ids for n in honest), key=len)
        for name in honest:
            ids = self.chains[name].ids
            for h, (a, b) in enumerate(zip(ids, longest, strict=False)):
                if a != b and h not in v.forks:
                    v.forks.append(h)
            for tx, hs in self.chains[name].tx_at.items():
                if len(hs) > 1:
                    v.duplicates.append(f"{name}: {tx.hex()[:16]} at heights {hs}")

    def _acks(
        self, acked: dict[bytes, Ack], honest: list[str], clients: dict[str, RpcClient], v: Verdict
    ) -> None:
        for name in honest:
            chain = self.chains[name]
            fresh = [tx for tx in acked if tx not in chain.checked_acks]
            for tx in fresh:
                hs = chain.tx_at.get(tx, [])
                if hs != [acked[tx].height]:
                    v.lost_ids.add(tx)
                    v.lost.append(
                        f"{name}: {tx.hex()[:16]} acknowledged by "
                        f"{acked[tx].node} at height {acked[tx].height}, "
                        f"in this chain at {hs}"
                    )
            # the index a bank's lookup uses must agree with the blocks
            for lo in range(0, len(fresh), 100):
                part = fresh[lo : lo + 100]
                try:
                    got = clients[name].batch(
                        [("getTransaction", {"tx_id": t.hex()}) for t in part]
                    )
                except (RpcCallError, OSError, ValueError) as exc:
                    v.stuck.append(f"{name}: getTransaction unreadable: {exc}")
                    break
                for tx, doc in zip(part, got, strict=True):
                    if isinstance(doc, Exception) or doc.get("height") != acked[tx].height:
                        v.lost_ids.add(tx)
                        v.lost.append(
                            f"{name}: getTransaction({tx.hex()[:16]}) -> "
                            f"{doc if isinstance(doc, Exception) else doc['height']},"
                            f" acknowledged at {acked[tx].height}"
                        )
                    else:
                        chain.checked_acks.add(tx)

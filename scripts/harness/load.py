"""A load generator that remembers exactly what each node told it was committed.

Worker threads sign fresh ATTEST transactions of the devnet's issuer (szcredit) in
small batches and submit them with ``submitTransactions(wait=true)``, one thread per
node by default, each to its own node (as each member's clients use their member's
node): a node that is down or cut off stalls only its own clients, so a gap in the
acknowledgements of all threads is a real stall of the consortium. A transaction is
*acknowledged* only when a node answered ``committed`` with a height: that is the
promise the verdict holds the cluster to (``acked``). Everything else a node accepted
but did not confirm in time is *uncertain*: it may commit later, or never, but never
twice (the verdict checks that too). A node that cannot be reached (killed,
restarting) is retried after a pause; a node cut off from the others simply times
out, as it would for a real client.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cli.rpc_client import RpcCallError, RpcClient
from ledger.crypto import read_key_file
from ledger.types import Attest, Transaction


@dataclass(frozen=True)
class Ack:
    node: str
    height: int
    submitted: float  # time.monotonic() of the request
    acked: float  # time.monotonic() of the answer


class Load:
    """Continuous signed load against ``urls`` (node name -> RPC URL)."""

    def __init__(
        self,
        root: Path,
        urls: dict[str, str],
        chain_id: str,
        *,
        batch: int = 5,
        threads: int | None = None,
        pause_s: float = 0.05,
        wait_s: int = 8,
        tag: str = "",
    ) -> None:
        self.key = read_key_file(root / "keys" / "szcredit.member.json")
        self.urls = dict(urls)
        self.chain_id = chain_id
        self.batch = batch
        self.threads = threads or len(urls)
        self.pause_s = pause_s
        self.wait_s = wait_s
        self.tag = tag or f"{time.time_ns()}"
        self.acked: dict[bytes, Ack] = {}
        self.uncertain: set[bytes] = set()
        self.rejected: dict[str, int] = {}
        self.errors = 0
        self.height_hint = 0
        self.lock = threading.Lock()
        self._nonces = itertools.count(1)
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._in_flight = 0  # workers inside a submit (under ``lock``)
        self._workers: list[threading.Thread] = []

    # ------------------------------------------------------------------ control

    def start(self) -> Load:
        for k in range(self.threads):
            t = threading.Thread(target=self._run, args=(k,), name=f"load-{k}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=self.wait_s + 20)
        self._workers.clear()

    def pause(self, timeout_s: float | None = None) -> None:
        """Stop submitting and wait until no worker has a request in flight (each
        answers within ``wait_s``), so that nothing the load sent is still on its way."""
        with self.lock:
            self._paused.set()
        deadline = time.monotonic() + (timeout_s or self.wait_s + 20)
        while True:
            with self.lock:
                busy = self._in_flight
            if not busy:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{busy} load requests still in flight after the pause")
            time.sleep(0.05)

    def resume(self) -> None:
        self._paused.clear()

    def snapshot(self) -> dict[bytes, Ack]:
        """The acknowledgements so far (a copy: the workers keep adding)."""
        with self.lock:
            return dict(self.acked)

    def ack_times(self) -> list[float]:
        with self.lock:
            return sorted(a.acked for a in self.acked.values())

    def acks_after(self, t: float) -> int:
        with self.lock:
            return sum(1 for a in self.acked.values() if a.acked > t)

    # ------------------------------------------------------------------ transactions

    def sign(self, count: int) -> list[Transaction]:
        out = []
        for _ in range(count):
            n = next(self._nonces)
            c = hashlib.sha256(f"chaos {self.tag} {n}".encode()).digest()
            p = Attest("credit-report", c, 1_760_000_000_000, 0, b"")
            out.append(
                Transaction(
                    self.chain_id, self.key.public_key, n, self.height_hint + 400, p
                ).signed(self.key)
            )
        return out

    def submit(
        self,
        name: str,
        txs: list[Transaction],
        wait_s: int | None = None,
        client: RpcClient | None = None,
    ) -> list[bytes]:
        """Submit and record the answers; returns the ids acknowledged as committed."""
        own = client is None
        c = client or RpcClient(self.urls[name], timeout_s=(wait_s or self.wait_s) + 15)
        t0 = time.monotonic()
        ids = [t.tx_id for t in txs]
        with self.lock:
            self.uncertain.update(ids)
        try:
            res = c.call(
                "submitTransactions",
                txs=[t.encode().hex() for t in txs],
                wait=True,
                timeout_s=wait_s or self.wait_s,
            )
        finally:
            if own:
                c.close()
        now = time.monotonic()
        done = []
        with self.lock:
            for r in res["results"]:
                tx_id = bytes.fromhex(r["tx_id"])
                if r["status"] == "committed":
                    self.acked[tx_id] = Ack(name, int(r["height"]), t0, now)
                    self.uncertain.discard(tx_id)
                    self.height_hint = max(self.height_hint, int(r["height"]))
                    done.append(tx_id)
                elif r["status"] == "rejected":
                    self.uncertain.discard(tx_id)
                    code = str(r.get("code"))
                    self.rejected[code] = self.rejected.get(code, 0) + 1
        return done

    def _run(self, k: int) -> None:
        name = list(self.urls)[k % len(self.urls)]  # thread k: node k
        clients = {name: RpcClient(self.urls[name], timeout_s=self.wait_s + 15)}
        try:
            if self.height_hint == 0:
                self._refresh_hint(clients)
            while not self._stop.is_set():
                with self.lock:
                    paused = self._paused.is_set()
                    if not paused:
                        self._in_flight += 1
                if paused:
                    time.sleep(0.05)  # polling the pause flag
                    continue
                try:
                    self.submit(name, self.sign(self.batch), client=clients[name])
                except (RpcCallError, OSError, ValueError, KeyError):
                    # down or restarting: counted; retried after a pause
                    with self.lock:
                        self.errors += 1
                    clients[name].close()
                    time.sleep(0.2)  # pacing the retries of a node that is down
                    continue
                finally:
                    with self.lock:
                        self._in_flight -= 1
                time.sleep(self.pause_s)  # pacing: the load's rate, not a wait
        finally:
            for c in clients.values():
                c.close()

    def _refresh_hint(self, clients: dict[str, RpcClient]) -> None:
        for c in clients.values():
            try:
                self.height_hint = max(self.height_hint, int(c.call("status")["height"]))
            except (RpcCallError, OSError, ValueError):
                continue

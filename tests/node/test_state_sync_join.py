"""``node.state_sync.join``: which peer it asks, what it does when none is ahead, and how it
starts again after a peer served a snapshot that does not verify."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from ledger.chain import Ledger
from ledger.codec import decode, encode
from ledger.errors import StoreError
from ledger.store import Store
from ledger.testchain import Consortium
from node import state_sync, sync

GOOD, BAD = b"\x01" * 32, b"\x02" * 32  # BAD has the higher key: it is asked first


class FakeTransport:
    """Peers answering from ``store``; ``BAD`` changes one leaf of every page."""

    def __init__(self, store: Store, heights: dict[bytes, int] | None = None) -> None:
        self.store = store
        self.heights = heights
        self.asked: list[bytes] = []

    def connected_peers(self) -> set[bytes]:
        return {GOOD, BAD}

    async def request(self, peer: bytes, payload: bytes, timeout_s: float) -> bytes:
        await trio.sleep(0)
        if self.heights is not None:
            return encode(["status", self.heights[peer], b""])
        self.asked.append(peer)
        answer = sync.serve(self.store, payload)
        obj = decode(answer, 1 << 24)
        if peer == BAD and obj[0] == "leaves" and obj[1]:
            key, value = obj[1][0]
            obj[1][0] = [key, value + b"\x00"]
            answer = encode(obj)
        return answer


def _chain(path: Path) -> tuple[Consortium, Ledger]:
    cons = Consortium.make()
    lg = Ledger.open(path, cons.genesis)
    for i in range(3):
        cons.commit(lg, [cons.attest(bytes([i + 1]) * 32)])
    return cons, lg


def test_a_bad_peer_is_left_for_a_good_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_sync, "RETRY_S", 0.01)
    cons, src = _chain(tmp_path / "src")
    with src:
        g = cons.genesis
        transport = FakeTransport(src.store)
        with Ledger.open(tmp_path / "joined", g) as fresh:
            report = trio.run(state_sync.join, transport, fresh.store, g)
            assert report is not None
            assert report.peer == GOOD and report.attempts == 2
            assert len(report.failures) == 1 and "certified state root" in report.failures[0]
            assert BAD in transport.asked
            assert fresh.store.height == src.height


def test_no_peer_above_genesis_means_no_state_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_sync, "WAIT_PEERS_S", 0.2)
    cons = Consortium.make()
    with Ledger.open(tmp_path / "joined", cons.genesis) as fresh:
        transport = FakeTransport(fresh.store, heights={GOOD: 0, BAD: 0})
        assert trio.run(state_sync.join, transport, fresh.store, cons.genesis) is None
        assert fresh.store.height == 0 and not fresh.store.importing


def test_an_unfinished_import_is_dropped_at_the_next_start(tmp_path: Path) -> None:
    cons, src = _chain(tmp_path / "src")
    g = cons.genesis
    path = tmp_path / "joined"
    with src, Ledger.open(path, g) as fresh:
        fresh.store.begin_import()  # then the node is killed
    with pytest.raises(StoreError, match="unfinished state-sync import"):
        Ledger.open(path, g, create=False)
    assert state_sync.reset_unfinished(path, g)
    assert not state_sync.reset_unfinished(path, g)
    with Ledger.open(path, g, create=False) as lg:
        assert lg.height == 0

"""The node core driven with plain events and ``now`` values: no trio, no network.

Each core runs on a real devnet's files (its ledger and consensus database on disk);
peers are played by the test, which answers ``AskHeights`` and reads the effects.
"""

from __future__ import annotations

import ast
import hashlib
import pathlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.devnet_files import create_devnet
from consensus.messages import PrePrepare, decode_message
from consensus.signer import Ed25519Crypto
from ledger.chain import Ledger
from ledger.codec import decode
from ledger.crypto import read_key_file
from ledger.genesis import read_genesis
from ledger.types import Attest, Block, Transaction
from node.config import load_config
from node.consensus_db import ConsensusDB
from node.core import (
    BURST_MAX_S,
    GOSSIP_FLUSH_S,
    Answer,
    AskHeights,
    BlocksFetched,
    Broadcast,
    ClientTxs,
    Committed,
    CoreConfig,
    Effect,
    Fetch,
    Log,
    Metric,
    NodeCore,
    PeerFrame,
    PeerHeights,
    Penalise,
    Tick,
)
from node.mempool import AddStatus, Mempool
from node.transport import CONSENSUS, TXS

WALL_MS = 1_760_000_000_000
PEERS = [bytes([i]) * 32 for i in (1, 2, 3)]


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[Callable[..., NodeCore]]:
    opened: list[NodeCore] = []

    def make(nodes: int = 4, index: int = 0, **params: int) -> NodeCore:
        root = tmp_path / "net"
        entries = create_devnet(root, nodes=nodes, params={"heartbeat_ms": 200, **params})
        cfg = load_config(entries[index].config)
        genesis = read_genesis(cfg.genesis)
        core = NodeCore(
            CoreConfig(is_validator=True, linger_ms=cfg.linger_ms),
            Ledger.open(cfg.data_dir / "ledger", genesis, create=True),
            ConsensusDB(cfg.data_dir / "consensus"),
            Mempool(genesis.chain_id),
            Ed25519Crypto(read_key_file(cfg.key_file)),
        )
        opened.append(core)
        return core

    yield make
    for core in opened:
        core.ledger.close()
        assert core.cdb is not None
        core.cdb.close()


def attest(i: int, root: Path) -> Transaction:
    key = read_key_file(root / "keys" / "szcredit.member.json")
    c = hashlib.sha256(b"doc %d" % i).digest()
    p = Attest("credit-report", c, 1_760_000_000_000, 0, b"")
    return Transaction("dvp-demo", key.public_key, i, 200, p).signed(key)


def step(core: NodeCore, event: object, now: float) -> list[Effect]:
    return core.step(event, now, WALL_MS + int(now * 1000))  # type: ignore[arg-type]


def start(core: NodeCore, peers: int = 3) -> float:
    """Catch-up with peers all at height 0: the replica starts at once (alone: after
    STANDALONE_S of finding no peer). Returns now."""
    now = 0.0
    while core.replica is None:
        assert now < 5, "the replica never started"
        assert any(type(e) is AskHeights for e in step(core, Tick(), now))
        now += 0.01
        step(core, PeerHeights({p: 0 for p in PEERS[:peers]}, peers), now)
        if core.replica is None:
            now = max(now, core.next_deadline())
    return now


def run_until(
    core: NodeCore, now: float, done: Callable[[list[Effect]], bool], limit_s: float = 30.0
) -> tuple[float, list[Effect]]:
    """Tick the core at each of its deadlines until ``done(effects)``; (now, effects)."""
    while now < limit_s:
        now = max(now, core.next_deadline())
        effects = step(core, Tick(), now)
        if done(effects):
            return now, effects
    raise AssertionError(f"nothing happened within {limit_s} s of core time")


def test_an_idle_primary_proposes_a_heartbeat_block_after_heartbeat_ms(devnet) -> None:  # type: ignore[no-untyped-def]
    core = devnet(4, heartbeat_ms=200)
    t0 = start(core)

    def proposed(effects: list[Effect]) -> bool:
        return any(
            type(e) is Broadcast
            and e.channel == CONSENSUS
            and isinstance(decode_message(e.payload), PrePrepare)
            for e in effects
        )

    now, effects = run_until(core, t0, proposed)
    assert now == pytest.approx(0.2)  # heartbeat_ms after the node started, not before
    pp = next(decode_message(e.payload) for e in effects if type(e) is Broadcast)
    assert isinstance(pp, PrePrepare) and pp.height == 1
    assert Block.decode(pp.payload).header.tx_count == 0


def test_a_client_transaction_is_answered_and_gossiped_in_the_next_flush(devnet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    core = devnet(4)
    now = start(core)
    tx = attest(1, tmp_path / "net")
    effects = step(core, ClientTxs(7, (tx,)), now)
    answer = [e for e in effects if type(e) is Answer]
    assert len(answer) == 1 and answer[0].request_id == 7
    assert [r.status for r in answer[0].results] == [AddStatus.ADDED]
    assert not any(type(e) is Broadcast and e.channel == TXS for e in effects)
    assert core.next_deadline() == pytest.approx(now + GOSSIP_FLUSH_S)
    effects = step(core, Tick(), now + GOSSIP_FLUSH_S)
    batches = [decode(e.payload) for e in effects if type(e) is Broadcast and e.channel == TXS]
    assert batches == [[tx.encoded]]
    assert core.replica is not None and tx.tx_id in core.replica.pending_txs


def _txs_gossiped(effects: list[Effect]) -> list[int]:
    return [len(decode(e.payload)) for e in effects if type(e) is Broadcast and e.channel == TXS]


def test_a_client_batch_admitted_in_chunks_is_gossiped_as_one(devnet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The RPC admits a large batch in chunks, yielding between them; flushed (or cut
    into a block) between two chunks, one batch became two half blocks and ~30 % more
    heights at the same load. Until the last chunk, nothing is flushed -- but a batch
    whose rest never comes (a cancelled call) is flushed after BURST_MAX_S."""
    core = devnet(4)
    now = start(core)
    root = tmp_path / "net"
    first = [attest(100 + i, root) for i in range(3)]
    second = [attest(200 + i, root) for i in range(2)]
    step(core, ClientTxs(1, tuple(first), more=True), now)
    late = now + 5 * GOSSIP_FLUSH_S  # the first chunk's admission took longer than a flush
    assert _txs_gossiped(step(core, Tick(), late)) == []
    step(core, ClientTxs(2, tuple(second)), late)  # the last chunk
    effects = step(core, Tick(), max(late, core.next_deadline()))
    assert _txs_gossiped(effects) == [5]

    orphan = [attest(300 + i, root) for i in range(2)]
    t = late + 1.0
    step(core, ClientTxs(3, tuple(orphan), more=True), t)
    assert _txs_gossiped(step(core, Tick(), t + BURST_MAX_S / 2)) == []
    assert _txs_gossiped(step(core, Tick(), t + BURST_MAX_S)) == [2]


def test_a_commit_reports_its_transactions_once(devnet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    core = devnet(1)
    now = start(core, peers=0)
    tx = attest(2, tmp_path / "net")
    step(core, ClientTxs(1, (tx,)), now)
    _now, effects = run_until(
        core, now, lambda es: any(type(e) is Committed and e.tx_ids for e in es)
    )
    committed = [e for e in effects if type(e) is Committed and e.tx_ids]
    assert len(committed) == 1 and committed[0].tx_ids == [tx.tx_id]
    assert core.ledger.store.tx_location(tx.tx_id) is not None
    assert tx.tx_id not in core.mempool


def test_a_peers_malformed_frames_are_penalised(devnet) -> None:  # type: ignore[no-untyped-def]
    core = devnet(4)
    now = start(core)
    bad = [
        (TXS, b"\xc1not msgpack", "malformed_tx_batch"),
        (TXS, b"\x91\xa3abc", "malformed_tx"),  # an array holding a string, not bytes
        (CONSENSUS, b"\x93\x01\x02\x03", "malformed_consensus"),
        ("chat", b"hello", "unknown_channel"),
    ]
    for channel, payload, reason in bad:
        effects = step(core, PeerFrame(PEERS[0], channel, payload), now)
        assert Penalise(PEERS[0], reason) in effects, reason


def test_a_silent_primary_on_an_idle_chain_is_replaced_and_the_view_change_reported(
    devnet,  # type: ignore[no-untyped-def]
) -> None:
    core = devnet(4, index=1, heartbeat_ms=200, view_timeout_ms=500)  # a backup
    now = start(core)
    _now, effects = run_until(core, now, lambda es: any(type(e) is Metric for e in es))
    assert Metric("view", 1) in effects
    assert any(type(e) is Log and e.message == "view change" for e in effects)
    assert core.status.view_changes == 1


FORBIDDEN = {"trio", "plyvel", "libp2p", "time", "random", "os", "socket", "asyncio"}


def test_the_node_core_does_no_io() -> None:
    """The sans-IO rule for the core modules, as for consensus/ (no clock either)."""
    paths = sorted(pathlib.Path("node").glob("core*.py")) + [pathlib.Path("node/builder.py")]
    assert {p.name for p in paths} >= {"core.py", "core_events.py", "core_catchup.py"}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path} imports {name}"


def test_one_peer_claiming_to_be_far_ahead_does_not_keep_the_replica_from_starting(
    devnet,  # type: ignore[no-untyped-def]
) -> None:
    """A Byzantine peer may answer a status request with any height and then serve
    forgeries: catch-up trusts the (f+1)-th highest claim (found by the whole-node
    simulator, docs/RELIABILITY.md §3.6; it used to fetch from the liar forever)."""
    core = devnet(4)
    liar, honest = PEERS[0], PEERS[1:]
    assert any(type(e) is AskHeights for e in step(core, Tick(), 0.0))
    effects = step(core, PeerHeights({liar: 50, **{p: 0 for p in honest}}, 3), 0.01)
    assert not [e for e in effects if type(e) is Fetch], "fetched on one peer's word"
    assert core.replica is not None


def test_a_peer_that_served_no_valid_block_is_not_asked_again_at_once(devnet) -> None:  # type: ignore[no-untyped-def]
    core = devnet(4)
    a, b = PEERS[0], PEERS[1]
    step(core, Tick(), 0.0)
    first = [e for e in step(core, PeerHeights({a: 5, b: 6}, 2), 0.01) if type(e) is Fetch]
    assert [(e.peer, e.lo, e.hi) for e in first] == [(a, 1, 5)]  # lowest claim >= target
    step(core, BlocksFetched(a, None), 0.02)  # it failed us
    now = max(0.03, core.next_deadline())
    assert any(type(e) is AskHeights for e in step(core, Tick(), now))
    again = [e for e in step(core, PeerHeights({a: 5, b: 6}, 2), now) if type(e) is Fetch]
    assert [(e.peer, e.lo, e.hi) for e in again] == [(b, 1, 6)]

"""Crash test of ledger/store.py: SIGKILL a writer process at random instants, reopen, check.

The writer (scripts/store_crash_writer.py) commits real blocks as fast as it can (signed
ATTEST transactions, state-tree updates whose root is the header's state root, signed
certificates) and prunes old state versions as it goes. Each round this test kills it
after a random delay, reopens the store and checks that it holds exactly a fully
committed chain: no acknowledged block lost, nothing half-written, every block, header,
certificate, index entry and app-metadata blob present and consistent, and the state
tree at the committed height whole, with the header's root. The next round's writer
resumes from the recovered height. The seed (fixed, or DVP_CRASH_SEED) is in every
failure message so a run can be replayed.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger import merkle
from ledger.smt import SparseMerkleTree
from ledger.store import Store
from scripts.store_crash_writer import RETAIN, VALIDATORS, decode_app_meta, open_store

REPO = Path(__file__).resolve().parents[2]
WRITER = REPO / "scripts" / "store_crash_writer.py"
SEED = int(os.environ.get("DVP_CRASH_SEED", "20240517"))
KILLS = 25
READY_TIMEOUT_S = 20.0

pytestmark = [pytest.mark.processes, pytest.mark.slow]


class Verified:
    """What earlier rounds established, so deep per-block checks run once per block."""

    def __init__(self) -> None:
        self.block_ids: list[bytes] = []  # ids of blocks deep-checked so far, by height


def check_store(store: Store, verified: Verified, ctx: str) -> None:
    """Assert ``store`` holds a whole, consistent chain 0..height (see module doc)."""
    height = store.height
    # Blocks a previous round checked deeply must still be there, byte for byte the same
    # block (a crash must never change committed history).
    assert height + 1 >= len(verified.block_ids), f"{ctx}: committed blocks disappeared"
    prev_id = b"\x00" * 32
    history = merkle.MerkleAccumulator()
    for block in store.iter_blocks(0, height):  # every block reads and decodes
        h = block.height
        header = block.header
        assert header.prev_block_id == prev_id, f"{ctx}: block {h} does not chain"
        assert header.history_root == history.root(), f"{ctx}: block {h} history root"
        assert store.height_of_block(block.block_id) == h, f"{ctx}: block-id index at {h}"
        assert store.app_meta(h) is not None, f"{ctx}: app meta missing at {h}"
        cert_bytes = store.get_certificate_bytes(h)
        assert (cert_bytes is None) == (h == 0), f"{ctx}: certificate presence at {h}"
        if h < len(verified.block_ids):
            assert block.block_id == verified.block_ids[h], f"{ctx}: block {h} changed"
        else:
            # Deep checks, once per block: certificate signatures, tx root, tx index.
            if h > 0:
                cert = store.get_certificate(h)
                assert cert is not None
                cert.verify(store.chain_id, VALIDATORS, block.block_id)
            assert header.tx_root == merkle.root(block.tx_ids), f"{ctx}: tx root at {h}"
            for pos, tx_id in enumerate(block.tx_ids):
                assert store.tx_location(tx_id) == (h, pos), f"{ctx}: tx index at {h}/{pos}"
            verified.block_ids.append(block.block_id)
        history.append(merkle.leaf_hash(block.block_id))
        prev_id = block.block_id
    if height < 0:
        return
    meta = store.app_meta(height)
    assert meta is not None
    _time_ms, acc = decode_app_meta(meta)
    assert acc.root() == history.root(), f"{ctx}: app meta frontier at {height}"
    tree = SparseMerkleTree(store)
    tip = store.get_header(height)
    assert tip is not None
    assert tree.root(height) == tip.state_root, f"{ctx}: state root at {height}"
    # The whole tree at the tip is readable (pruning never removed a live node), and so
    # are the roots of every retained version.
    assert sum(1 for _ in tree.items(height)) > 0
    for v in range(max(0, store.state_pruned_below, height - RETAIN), height + 1):
        h_v = store.get_header(v)
        assert h_v is not None and tree.root(v) == h_v.state_root, f"{ctx}: root at {v}"


def _read_line(proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """One line, read a byte at a time from the pipe itself: a buffered ``readline``
    could take the writer's next "committed" lines into a buffer that ``communicate``
    (which reads the file descriptors) never sees, and lose those acks."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], timeout_s)
        byte = os.read(fd, 1) if ready else b""
        if not byte:
            return b""
        line += byte
    return line


@pytest.mark.timeout(900)  # a hang bound, not a speed requirement
def test_sigkill_at_random_instants_never_leaves_a_half_written_block(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    db = tmp_path / "db"
    verified = Verified()
    last_acked = -1
    proc: subprocess.Popen[bytes] | None = None
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        for kill in range(KILLS):
            delay_s = rng.uniform(0.005, 0.300)
            # One kill in five is timed from the start, so some land during open/recovery.
            early = rng.random() < 0.2
            ctx = (
                f"seed={SEED} kill={kill} delay_ms={delay_s * 1000:.0f} early={early} "
                f"(replay: DVP_CRASH_SEED={SEED})"
            )
            proc = subprocess.Popen(
                [sys.executable, str(WRITER), str(db), str(SEED + kill)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=REPO,
            )
            if not early:
                line = _read_line(proc, READY_TIMEOUT_S)
                if not line.startswith(b"ready "):
                    proc.kill()
                    _, err = proc.communicate()
                    pytest.fail(f"{ctx}: writer did not start: {line!r} {err.decode()[-2000:]}")
                assert int(line.split()[1]) >= last_acked, f"{ctx}: reopened below an ack"
            time.sleep(delay_s)  # the scenario: the random instant of the kill
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"{ctx}: writer exited by itself: {err.decode()[-2000:]}")
            proc.send_signal(signal.SIGKILL)
            out, _err = proc.communicate(timeout=10)
            proc = None
            acks = [int(x.split()[1]) for x in out.splitlines() if x.startswith(b"committed ")]
            last_acked = max([last_acked, *acks])

            # Before the first ack the writer may have died while creating the store:
            # then reopen the way it would (create=True), otherwise never create.
            with open_store(db, create=last_acked == -1) as store:
                h = store.height
                # Durable: every commit that returned survives. Atomic: at most the one
                # commit in flight when the kill came is extra, and it is whole.
                assert last_acked <= h <= last_acked + 1, (
                    f"{ctx}: recovered height {h}, last acknowledged {last_acked}"
                )
                check_store(store, verified, ctx)
                last_acked = h
        assert last_acked > KILLS, f"seed={SEED}: the writer hardly committed anything"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()

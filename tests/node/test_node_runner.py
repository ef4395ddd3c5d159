"""Process-level tuning done by ``dvp node run`` (node/runner.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import plyvel

from node.runner import BACKGROUND_NICE, lower_background_threads


def _native_threads() -> set[int]:
    python = {t.native_id for t in threading.enumerate()}
    return {int(p.name) for p in Path("/proc/self/task").iterdir()} - python - {os.getpid()}


def test_leveldb_compaction_thread_runs_below_the_node(tmp_path: Path) -> None:
    """LevelDB's background thread (started by the first compaction) is found and given
    a lower CPU priority; the node's own threads keep theirs."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True, write_buffer_size=64 * 1024)
    try:
        deadline = time.monotonic() + 10
        i = 0
        while not _native_threads():  # write until a memtable flush starts the thread
            assert time.monotonic() < deadline, "LevelDB started no background thread"
            with db.write_batch() as wb:
                for _ in range(500):
                    wb.put(i.to_bytes(8, "big"), b"x" * 100)
                    i += 1
        own = os.getpriority(os.PRIO_PROCESS, 0)
        done: set[int] = set()
        lowered = lower_background_threads(done)
        native = _native_threads()
        assert native and set(lowered) == native == done
        for tid in native:
            assert os.getpriority(os.PRIO_PROCESS, tid) == min(own + BACKGROUND_NICE, 19)
        assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the calling (main) thread
        assert lower_background_threads(done) == []  # each thread is lowered once
    finally:
        db.close()

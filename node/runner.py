"""``dvp node run``: load the config, set up logging, run the node until a signal.

SIGTERM/SIGINT cancel the node's nursery (graceful: the RPC server drains, stores
close); a second signal exits at once.

Exit statuses: 0 stopped by a signal; 2 a config, key, genesis or store that cannot be
used (missing, foreign, locked), or a listen address (p2p, RPC, admin) it cannot bind;
4 the store is damaged (the start-up check of ``node.stores`` failed: nothing was
served; ``dvp store resync`` rebuilds it); 70 an internal error (a bug: its traceback
goes into the log as one JSON line). Each failure to start is one line on stderr, before
the node reports ready. Ports are tried before anything starts (``listen_problem``); one
taken in the moment between is caught when the listener fails (``_start_error``).
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import trio

from ledger.crypto import KeyFileError
from ledger.errors import ProtocolVersionError, StoreDamage, StoreError
from ledger.genesis import GenesisError
from node.config import ConfigError, NodeConfig, load_config
from node.logs import get_logger, setup_logging
from node.oneline import one_line
from p2p.config import P2PError

log = get_logger("runner")

#: ``dvp node run``'s exit status when the start-up check finds the store damaged.
EXIT_STORE_DAMAGED = 4
#: ... and when the consortium runs a protocol version this build does not speak (at
#: start, or when an activation arrives): upgrade the node's software.
EXIT_UPGRADE_REQUIRED = 5

#: gc.set_threshold values for a running node (see ``_tune_gc``).
GC_THRESHOLDS = (50_000, 20, 20)

#: Nice value for threads that native libraries start in the node (LevelDB's compaction
#: thread), relative to the node's own: see ``lower_background_threads``.
BACKGROUND_NICE = 10
#: How often the node looks for such threads (LevelDB starts its thread lazily, at the
#: first compaction, minutes into a run).
BACKGROUND_SCAN_S = 2.0


async def _serve(cfg: NodeConfig, passphrase_file: Path | None) -> None:
    from ledger.keyfile import Passphrase
    from node.node import Node
    from node.p2p_transport import libp2p_transport

    node = Node(cfg, libp2p_transport, passphrase=Passphrase.default(passphrase_file))
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            await nursery.start(node.run)
            nursery.start_soon(_lower_background_threads_forever)
            # Everything built so far (modules, genesis, caches) lives as long as the
            # process: take it out of the collector's walks.
            gc.freeze()
            async for sig in signals:
                log.info("shutting down", signal=signal.Signals(sig).name)
                nursery.cancel_scope.cancel()
                break


def lower_background_threads(done: set[int]) -> list[int]:
    """Lower the CPU priority of the threads that native code started in this process
    (not Python threads, not the main one) and that are not in ``done``; returns their
    thread ids and adds them to ``done``. Linux only (per-thread nice); elsewhere a no-op.

    The one such thread in a node is LevelDB's background compaction thread. Every
    ~11 s under a 2,000 tx/s load a node's 32 MiB memtable fills, and flushing and
    compacting it costs that thread ~0.3 s of CPU; on a devnet the four nodes write the
    same blocks and compact at the same moment, and no block committed for 0.7-1.1 s
    each time (``scripts/bench_node.py``: the latency tail). Compaction is deferrable
    maintenance — LevelDB slows, then stops, writes itself if it falls too far behind
    (8 and 12 level-0 files) — so it yields the CPU to consensus and admission, as
    RocksDB's low-priority compaction pool does.
    """
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return []
    python = {t.native_id for t in threading.enumerate()}
    lowered = []
    for entry in tasks.iterdir():
        tid = int(entry.name)
        if tid in done or tid in python or tid == os.getpid():
            continue
        done.add(tid)
        try:
            os.setpriority(
                os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, 0) + BACKGROUND_NICE
            )
        except OSError:  # the thread ended meanwhile
            continue
        lowered.append(tid)
    return lowered


async def _lower_background_threads_forever() -> None:
    done: set[int] = set()
    while True:
        for tid in lower_background_threads(done):
            log.info("background thread lowered", tid=tid, nice=BACKGROUND_NICE)
        await trio.sleep(BACKGROUND_SCAN_S)


def _tune_gc() -> None:
    """Keep CPython's cyclic garbage collector from stalling commits.

    With the default thresholds (700, 10, 10), a node under load ran a gen-2 collection
    every ~12 s over its whole heap (~240,000 tracked objects: modules, caches, pending
    transactions) and stopped its event loop for 150-550 ms — on all four devnet nodes
    at once, since they carry the same load: that was the latency tail of
    ``scripts/bench_node.py`` at 2,000 tx/s. What a node allocates per transaction is
    acyclic and freed by reference counting, so collections are made rare, not
    disabled: start-up objects are frozen out of the collector (``_serve``), a young
    collection runs per 50,000 net allocations instead of 700, gen 1 per 20 young and
    gen 2 is considered per 20 gen-1 ones (still only when a quarter of the old heap is
    new, CPython's rule), so garbage cycles are still reclaimed. Measured after: one
    gen-2 pause of 80-90 ms (40 ms of CPU) in a 40-s run, young ones ~15 ms of CPU.
    Pauses over 100 ms are logged as ``gc pause`` (wall and CPU time) so an operator
    can tie a latency spike to one.
    """
    gc.set_threshold(GC_THRESHOLDS[0], GC_THRESHOLDS[1], GC_THRESHOLDS[2])
    started = [0.0, 0.0]

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            started[1] = time.thread_time()
            return
        pause = time.perf_counter() - started[0]
        cpu = time.thread_time() - started[1]
        if pause > 0.1:
            log.warning(
                "gc pause",
                generation=info["generation"],
                ms=round(pause * 1000),
                cpu_ms=round(cpu * 1000),
                collected=info["collected"],
            )

    gc.callbacks.append(watch)


def listen_problem(cfg: NodeConfig) -> str | None:
    """Why the node could not listen on a configured address, or None. Binds each
    (with SO_REUSEADDR, as the listeners do) and lets go at once."""
    for where, addr in (
        ("[p2p] listen", cfg.p2p_listen),
        ("[rpc] listen", cfg.rpc_listen),
        ("[rpc] admin_listen", cfg.admin_listen),
    ):
        if addr is None or addr.port == 0:
            continue
        try:
            info = socket.getaddrinfo(
                addr.host, addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            with socket.socket(info[0], socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(info[4])
        except OSError as exc:
            return _cannot_listen(cfg, where, str(addr), exc)
    return None


def _cannot_listen(cfg: NodeConfig, where: str, addr: str, exc: OSError) -> str:
    why = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        why += " (another process holds it: stop it, or choose another port)"
    return f"{cfg.path}: {where}{' ' + addr if addr else ''}: cannot listen: {why}"


def _start_error(cfg: NodeConfig, exc: BaseException) -> tuple[str, int] | None:
    """One line and the exit status for a failure to start that is the operator's to
    fix (found anywhere in trio's exception groups), or None for a bug."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _start_error(cfg, inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, StoreDamage):
        return str(exc), EXIT_STORE_DAMAGED
    if isinstance(exc, ProtocolVersionError):
        return f"{cfg.path}: {exc}", EXIT_UPGRADE_REQUIRED
    if isinstance(exc, P2PError):
        return f"{cfg.path}: [p2p] {exc}", 2
    if isinstance(exc, KeyFileError | GenesisError | StoreError):
        return str(exc), 2
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}", 2
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
        where = "[rpc] listen" if cfg.admin_listen is None else "[rpc] listen or admin_listen"
        return _cannot_listen(cfg, where, "", exc), 2
    return None


def run_node(
    config_path: Path, passphrase_file: Path | None = None, *, state_sync: bool = False
) -> int:
    """``passphrase_file``: the node key's passphrase, if the key is protected (else
    $DVP_KEY_PASSPHRASE_FILE, $DVP_KEY_PASSPHRASE or a prompt on the terminal).
    ``state_sync``: as ``[node] state_sync = true`` (``dvp node run --state-sync``)."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"dvp node run: {one_line(str(exc))}", file=sys.stderr)
        return 2
    if state_sync:
        cfg = dataclasses.replace(cfg, state_sync=True)
    problem = listen_problem(cfg)
    if problem is not None:
        print(f"dvp node run: {one_line(problem)}", file=sys.stderr)
        return 2
    setup_logging(cfg.name, cfg.log_level)
    _tune_gc()
    profile_to = os.environ.get("DVP_CPROFILE")
    try:
        if profile_to:
            # Operators' and developers' profiler hook: deterministic call counts (which
            # sampling profilers cannot give), written at graceful shutdown (SIGTERM).
            import cProfile

            with cProfile.Profile() as prof:
                try:
                    trio.run(_serve, cfg, passphrase_file)
                finally:
                    prof.dump_stats(f"{profile_to}.{cfg.name}")
        else:
            trio.run(_serve, cfg, passphrase_file)
    except StoreDamage as exc:
        print(f"dvp node run: {exc}", file=sys.stderr)
        return EXIT_STORE_DAMAGED
    except ProtocolVersionError as exc:
        log.error("stopping: this build cannot follow the chain", error=str(exc))
        print(f"dvp node run: {cfg.path}: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_UPGRADE_REQUIRED
    except (KeyFileError, GenesisError, StoreError) as exc:
        print(f"dvp node run: {exc}", file=sys.stderr)
        return 2
    except (OSError, BaseExceptionGroup) as exc:
        found = _start_error(cfg, exc)
        if found is None:
            return _crashed()
        if found[1] == EXIT_UPGRADE_REQUIRED:
            log.error("stopping: this build cannot follow the chain", error=found[0])
        print(f"dvp node run: {one_line(found[0])}", file=sys.stderr)
        return found[1]
    except Exception:
        return _crashed()
    return 0


def _crashed() -> int:
    """A bug stopped the node: its traceback goes into the log as one JSON line (the
    ``exc`` field), and the exit status is 70 like the CLI's internal errors."""
    log.error("the node stopped on an internal error (a bug; please report this line)", exc=True)
    return 70

"""``dvp node run``: load the config, set up logging, run the node until a signal.

SIGTERM/SIGINT cancel the node's nursery (graceful: the RPC server drains, stores
close); a second signal exits at once.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import trio

from ledger.crypto import KeyFileError
from ledger.errors import StoreError
from ledger.genesis import GenesisError
from node.config import ConfigError, NodeConfig, load_config
from node.logs import get_logger, setup_logging

log = get_logger("runner")


async def _serve(cfg: NodeConfig) -> None:
    from node.node import Node
    from node.p2p_transport import libp2p_transport

    node = Node(cfg, libp2p_transport)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            await nursery.start(node.run)
            async for sig in signals:
                log.info("shutting down", signal=signal.Signals(sig).name)
                nursery.cancel_scope.cancel()
                break


def run_node(config_path: Path) -> int:
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"dvp node run: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.name, cfg.log_level)
    profile_to = os.environ.get("DVP_CPROFILE")
    try:
        if profile_to:
            # Operators' and developers' profiler hook: deterministic call counts (which
            # sampling profilers cannot give), written at graceful shutdown (SIGTERM).
            import cProfile

            with cProfile.Profile() as prof:
                try:
                    trio.run(_serve, cfg)
                finally:
                    prof.dump_stats(f"{profile_to}.{cfg.name}")
        else:
            trio.run(_serve, cfg)
    except (KeyFileError, GenesisError, StoreError) as exc:
        print(f"dvp node run: {exc}", file=sys.stderr)
        return 2
    return 0

"""``dvp store resync``: rebuild a node's ledger store from its peers, verifying all of it.

The node must be stopped. ``resync(config, transport_factory)`` (async):

1. checks the node's stores as its start would (``node.stores``): an intact ledger store
   is left alone (nothing to repair: a node catches up from its peers by itself) unless
   ``force``; a damaged, half-created or missing one is rebuilt;
2. moves the damaged ledger store aside to ``<data_dir>/ledger.damaged-<UTC time>``
   (``ledger.old-<time>`` if intact and ``force``; never deleted: it is the evidence,
   and the operator deletes it when satisfied);
3. runs the node itself with ``follow_only`` (``node.node.Node``: the same transport,
   block-sync protocol (``node.sync``) and catch-up (``node.core_catchup``) as a running
   node, but no vote and no RPC), from an empty store created from the genesis file.
   Every block it receives is committed through ``Ledger.commit``: its certificate is
   verified against the validator set in force at its height (from genesis, through
   every validator-set change) and the block is re-executed, so a peer can only
   withhold blocks, never make the node accept a wrong one;
4. stops once a heights poll answered by at least f + 1 peers (so at least one honest)
   names nothing above what it has committed, then runs the start-up check.

The consensus database holds this validator's signing record, which no peer has: it
cannot be rebuilt. If it is damaged, resync refuses unless ``new_signing_record``, which
moves it aside too; the node then starts with an empty record and could sign a vote that
conflicts with one it signed before the damage (an equivocation its peers would record
as evidence), so it is for an operator who accepts counting this validator among the f
faulty ones until the chain has moved past the heights it may have voted on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from consensus.quorum import weak_quorum
from ledger.errors import StoreDamage, StoreError
from ledger.genesis import read_genesis
from node.config import NodeConfig
from node.consensus_db import ConsensusDB
from node.node import Node, TransportFactory
from node.stores import open_ledger_checked

#: How often the resync looks at its progress (and reports it).
POLL_S = 0.2


class ResyncError(Exception):
    """Resync could not run or did not finish; ``unreachable``: its peers did not answer."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass
class ResyncResult:
    """What ``resync`` did (``rebuilt`` False: the store was intact and left alone)."""

    rebuilt: bool
    height: int
    why: str  # what was wrong with the store (or "intact")
    peers: int = 0  # peers whose answers said the store is caught up
    moved_to: Path | None = None
    signing_record_moved_to: Path | None = None
    elapsed_s: float = 0.0


def _aside(path: Path, stamp: str, why: str = "damaged") -> Path:
    target = path.with_name(f"{path.name}.{why}-{stamp}")
    path.rename(target)
    return target


def _ledger_state(config: NodeConfig) -> tuple[str | None, int]:
    """(why the ledger store needs rebuilding, or None if intact; its height or -1)."""
    path = config.data_dir / "ledger"
    if not path.exists():
        return "no ledger store (lost)", -1
    genesis = read_genesis(config.genesis)
    try:
        ledger, _report = open_ledger_checked(path, genesis, create=False)
    except StoreDamage as exc:
        return str(exc), -1
    except StoreError as exc:
        if "lock" in str(exc).lower():
            raise ResyncError(f"{exc} (stop the node before resyncing its store)") from None
        if not (path / "CURRENT").exists():
            return str(exc), -1  # an empty or half-created store: rebuilt
        raise ResyncError(str(exc)) from None
    height = ledger.height
    ledger.close()
    return None, height


def _signing_record_damage(config: NodeConfig) -> str | None:
    path = config.data_dir / "consensus"
    if not config.is_validator or not path.exists():
        return None
    try:
        cdb = ConsensusDB(path)
    except StoreDamage as exc:
        return str(exc)
    except StoreError as exc:
        raise ResyncError(f"{exc} (stop the node before resyncing its store)") from None
    try:
        cdb.check()
    except StoreDamage as exc:
        return str(exc)
    finally:
        cdb.close()
    return None


async def _follow(node: Node, timeout_s: float, progress: Callable[[int, int], None] | None) -> int:
    """Run ``node`` (follow-only) until caught up; returns how many peers answered."""
    with trio.move_on_after(timeout_s):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            core = node.core
            while True:
                await trio.sleep(POLL_S)
                height = node.ledger.height
                n = node.ledger.head.validators_at(height + 1).n
                if progress is not None:
                    progress(height, max(height, core.follow.best_peer_height))
                # f + 1 answers (one is honest), but never more than the others can
                # give, and at least one: a lone validator has nobody to resync from.
                if core.caught_up(max(1, min(weak_quorum(n), n - 1))):
                    answered = core.follow.answered
                    nursery.cancel_scope.cancel()
                    return answered
    f = node.core.follow
    raise ResyncError(
        f"not caught up within {timeout_s:g} s: at height {node.ledger.height}, "
        f"{f.answered} peer(s) answered the last poll (best height {f.best_peer_height}); "
        f"check that the peers in {node.config.path} are up and reachable, then run "
        f"resync again (what was fetched is kept)",
        unreachable=True,
    )


async def resync(
    config: NodeConfig,
    transport_factory: TransportFactory,
    *,
    timeout_s: float = 300.0,
    force: bool = False,
    new_signing_record: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ResyncResult:
    """Rebuild ``config``'s ledger store from its peers (see the module docstring); run
    it in trio (``trio.run``, or beside in-process peers in a test)."""
    t0 = time.perf_counter()
    why, height = _ledger_state(config)
    record_damage = _signing_record_damage(config)
    if record_damage is not None and not new_signing_record:
        raise ResyncError(
            f"{record_damage} -- it holds this validator's signing record, which no peer "
            f"has; --new-signing-record moves it aside and starts an empty one (read "
            f"`dvp store resync --help` first)"
        )
    if why is None and record_damage is None and not force:
        return ResyncResult(False, height, "intact", elapsed_s=time.perf_counter() - t0)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = ResyncResult(True, -1, why or record_damage or "rebuilt on request (--force)")
    ledger_dir = config.data_dir / "ledger"
    if ledger_dir.exists() and (why is not None or force):
        out.moved_to = _aside(ledger_dir, stamp, "damaged" if why is not None else "old")
    if record_damage is not None:
        out.signing_record_moved_to = _aside(config.data_dir / "consensus", stamp)
    node = Node(config, transport_factory, follow_only=True)
    try:
        out.peers = await _follow(node, timeout_s, progress)
    finally:
        node.close()
    # What the node will check at its next start, once more on the closed store.
    ledger, _report = open_ledger_checked(ledger_dir, node.genesis, create=False)
    out.height = ledger.height
    ledger.close()
    out.elapsed_s = time.perf_counter() - t0
    return out

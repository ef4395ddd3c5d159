"""In-process nodes: a transport factory over ``MemoryHub``, signed test attestations,
and ``wait_until`` (poll a condition with a deadline and say what never happened).

Shared by tests/node (in-process clusters, RPC over a real node) and tests/ledger (proof
bundles read from a running node).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import trio

from ledger.crypto import read_key_file
from ledger.types import Attest, Transaction
from node.node import Node
from node.transport import MemoryHub, MemoryTransport


def transport_factory(hub: MemoryHub) -> Callable[[Node, dict[bytes, str]], MemoryTransport]:
    """What ``Node(config, factory)`` calls for its transport: an endpoint of ``hub``."""

    def make(node: Node, peers: dict[bytes, str]) -> MemoryTransport:
        t = hub.transport(node.key.public_key)
        t.deliver = node.deliver
        t.handler = node.handle_request
        return t

    return make


def attest(
    root: Path, i: int, expiry: int = 200, *, chain_id: str = "dvp-demo", tag: bytes = b"doc"
) -> Transaction:
    """ATTEST number ``i`` of a credit report by the devnet at ``root``'s issuer."""
    key = read_key_file(root / "keys" / "szcredit.member.json")
    c = hashlib.sha256(tag + b" %d" % i).digest()
    p = Attest("credit-report", c, 1_760_000_000_000, 0, b"")
    return Transaction(chain_id, key.public_key, i, expiry, p).signed(key)


async def wait_until(
    condition: Callable[[], bool], what: str, *, timeout_s: float = 60.0, poll_s: float = 0.02
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s`` saying ``what`` never
    happened (the deadline is for a stuck run, never a measure of speed)."""
    with trio.move_on_after(timeout_s):
        while not condition():
            await trio.sleep(poll_s)
        return
    raise AssertionError(f"not within {timeout_s:g} s: {what}")

"""Types of the C extension built from ledger/_smt_fast.c (see there and ledger/smt.py)."""

from collections.abc import Callable
from typing import Any

def setup(leaf_tag: bytes, node_tag: bytes, same: object, /) -> None: ...
def one(
    cache: dict[bytes, bytes],
    get: Callable[[bytes], bytes | None],
    k: bytes,
    v: bytes | None,
    h: bytes,
    v8: bytes,
    depth: int,
    nv8: bytes,
    new_nodes: dict[bytes, bytes],
    stale: list[bytes],
    must_be_new: frozenset[bytes],
    existing: list[bytes],
    /,
) -> Any: ...

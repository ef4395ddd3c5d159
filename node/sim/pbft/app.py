"""The in-memory ledger the simulated replicas run against (``consensus.api.App``).

A block payload is the canonical encoding of
``[height, parent_id, proposer, nonce, [tx_id...], [validator index...], invalid]``
and its id is ``tagged_hash(BLOCK_ID, payload)``. ``invalid = True`` is the one
marker the App rejects (a Byzantine primary's bad block). A non-empty validator list
is a validator-set change decided by that block; it takes effect ``change_delay``
heights later, which is why ``validators_at`` answers None beyond
``applied + change_delay``: exactly the contract the replica is written against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus.api import BlockInfo
from ledger.codec import Domain, decode, encode, sha256, tagged_hash
from ledger.errors import DecodeError
from ledger.types import Validator, ValidatorSet

GENESIS_ID = tagged_hash(Domain.BLOCK_ID, b"sim-genesis")
MAX_TXS = 5000


@dataclass(frozen=True)
class Parsed:
    height: int
    parent_id: bytes
    proposer: int
    nonce: int
    tx_ids: tuple[bytes, ...]
    change: tuple[int, ...]
    invalid: bool
    block_id: bytes


def make_payload(
    height: int,
    parent_id: bytes,
    proposer: int,
    nonce: int,
    tx_ids: Sequence[bytes] = (),
    change: Sequence[int] = (),
    invalid: bool = False,
) -> bytes:
    return encode([height, parent_id, proposer, nonce, list(tx_ids), list(change), invalid])


_PARSED: dict[bytes, Parsed | None] = {}


def parse(payload: bytes) -> Parsed | None:
    """Parse (memoised: every replica parses the same payload bytes)."""
    hit = _PARSED.get(payload, False)
    if hit is not False:
        return hit  # type: ignore[return-value]
    try:
        f = decode(payload, 4 * 1024 * 1024)
        ok = (
            isinstance(f, list)
            and len(f) == 7
            and type(f[0]) is int
            and isinstance(f[1], bytes)
            and len(f[1]) == 32
            and type(f[2]) is int
            and type(f[3]) is int
            and isinstance(f[4], list)
            and isinstance(f[5], list)
            and type(f[6]) is bool
            and all(isinstance(t, bytes) for t in f[4])
            and all(type(i) is int for i in f[5])
        )
        result = (
            Parsed(
                f[0],
                f[1],
                f[2],
                f[3],
                tuple(f[4]),
                tuple(f[5]),
                f[6],
                tagged_hash(Domain.BLOCK_ID, payload),
            )
            if ok
            else None
        )
    except DecodeError:
        result = None
    if len(_PARSED) > 20_000:
        _PARSED.clear()
    _PARSED[payload] = result
    return result


def validator_set(keys: Sequence[bytes], indices: Sequence[int]) -> ValidatorSet:
    return ValidatorSet.of([Validator(f"v{i:03d}", keys[i]) for i in indices])


class MemApp:
    """One node's view of the ledger: the applied chain and the validator schedule."""

    def __init__(
        self, keys: Sequence[bytes], initial: Sequence[int], change_delay: int = 8
    ) -> None:
        assert change_delay >= 1
        self.keys = list(keys)
        self.change_delay = change_delay
        self.schedule: list[tuple[int, ValidatorSet]] = [(1, validator_set(keys, initial))]
        self.applied = 0
        self.last_id = GENESIS_ID
        self.root = sha256(b"sim-state")

    def clone_from_chain(self, payloads: Sequence[bytes]) -> MemApp:
        app = MemApp(self.keys, [0], self.change_delay)
        app.schedule = self.schedule[:1]
        for payload in payloads:
            app.apply(payload)
        return app

    # -- App protocol ----------------------------------------------------------------

    def _entry(self, height: int) -> tuple[int, ValidatorSet] | None:
        if height < 1 or height > self.applied + self.change_delay:
            return None
        for start, vs in reversed(self.schedule):
            if start <= height:
                return start, vs
        return None

    def validators_at(self, height: int) -> ValidatorSet | None:
        entry = self._entry(height)
        return None if entry is None else entry[1]

    def epoch_start(self, height: int) -> int | None:
        entry = self._entry(height)
        return None if entry is None else entry[0]

    def validate_proposal(
        self, height: int, payload: bytes, parent_block_id: bytes
    ) -> bytes | None:
        p = parse(payload)
        if p is None or p.invalid or p.height != height or p.parent_id != parent_block_id:
            return None
        if len(p.tx_ids) > MAX_TXS:
            return None
        if p.change and (
            list(p.change) != sorted(set(p.change))
            or not all(0 <= i < len(self.keys) for i in p.change)
        ):
            return None
        return p.block_id

    def block_info(self, payload: bytes) -> BlockInfo | None:
        p = parse(payload)
        return None if p is None else BlockInfo(p.block_id, p.parent_id, p.height)

    def tx_ids(self, payload: bytes) -> Sequence[bytes]:
        p = parse(payload)
        return () if p is None else p.tx_ids

    # -- applying ------------------------------------------------------------------------

    def apply(self, payload: bytes) -> bytes:
        """Apply the next committed block; returns the new state root."""
        p = parse(payload)
        assert p is not None and p.height == self.applied + 1, "apply out of order"
        self.applied = p.height
        self.last_id = p.block_id
        self.root = sha256(self.root + p.block_id)
        if p.change:
            start = p.height + self.change_delay
            new = validator_set(self.keys, p.change)
            if new != self.schedule[-1][1]:
                self.schedule.append((start, new))
        return self.root

"""Quorum arithmetic and vote tallying: the one place that counts votes.

PBFT (Castro & Liskov, OSDI'99 §4; TOCS'02 §4.1) needs two numbers for a set of n
validators of which at most f = floor((n - 1) / 3) are faulty:

- a *quorum* q = floor(2n/3) + 1 (``ledger.types.quorum_size``; 2f + 1 when
  n = 3f + 1). Any two quorums intersect in q + q - n >= f + 1 validators, so in at
  least one honest one: that is the whole safety argument of prepare, commit,
  view-change and checkpoint certificates.
- a *weak quorum* f + 1: any f + 1 distinct validators include an honest one, which
  is enough to believe a claim ("some honest replica moved to view v", "height h
  exists") but never enough to decide.

Rules: a validator is counted once however many times it votes (tallies are keyed
by validator index); votes for different contents never add up; a tally never
verifies signatures (the caller does, before adding).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

from ledger.types import ValidatorSet, max_faulty, quorum_size

__all__ = [
    "Tally",
    "kth_highest",
    "max_faulty",
    "primary_index",
    "primary_key",
    "quorum_size",
    "weak_quorum",
]

K = TypeVar("K", bound=Hashable)


def weak_quorum(n: int) -> int:
    """f + 1: the smallest number of validators that must include an honest one."""
    return max_faulty(n) + 1


def primary_index(view: int, n: int) -> int:
    """Index of the primary of ``view`` in a set of ``n`` (PBFT §4: p = v mod |R|)."""
    return view % n


def primary_key(validators: ValidatorSet, view: int) -> bytes:
    """Key of the primary of ``view`` among ``validators`` (the set in force at the height)."""
    return validators.keys[primary_index(view, validators.n)]


def kth_highest(values: Iterable[int], k: int) -> int | None:
    """The k-th largest of ``values`` (k >= 1), or None if there are fewer than k.

    With k = f + 1 over one claim per validator, at least one honest validator
    claimed a value >= the result.
    """
    ordered = sorted(values, reverse=True)
    return ordered[k - 1] if len(ordered) >= k else None


class Tally(Generic[K]):
    """Signatures per content key, at most one per validator index.

    ``add`` returns the number of distinct validators now backing ``key``.
    Callers bound the number of keys (one per height/view in the window).
    """

    __slots__ = ("_votes",)

    def __init__(self) -> None:
        self._votes: dict[K, dict[int, bytes]] = {}

    def add(self, key: K, index: int, signature: bytes) -> int:
        votes = self._votes.setdefault(key, {})
        votes.setdefault(index, signature)
        return len(votes)

    def count(self, key: K) -> int:
        return len(self._votes.get(key, ()))

    def signatures(self, key: K) -> tuple[tuple[int, bytes], ...]:
        """The ``(index, signature)`` pairs for ``key``, increasing by index."""
        return tuple(sorted(self._votes.get(key, {}).items()))

    def keys(self) -> list[K]:
        return list(self._votes)

    def discard(self, key: K) -> None:
        self._votes.pop(key, None)

    def __len__(self) -> int:
        return len(self._votes)

    def size(self) -> int:
        """Total stored signatures (for memory-bound tests)."""
        return sum(len(v) for v in self._votes.values())

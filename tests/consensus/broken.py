"""Deliberately broken replicas: the checker must catch them (a test of the tests).

Each subclass removes one thing PBFT's safety argument needs:

- ``QuorumMinusOneReplica`` accepts prepared and commit certificates one vote short
  of a quorum, so two "quorums" no longer need to share an honest replica;
- ``AmnesiacViewChangeReplica`` leaves its prepared/committed certificates out of its
  VIEW-CHANGE messages, so a NEW-VIEW can forget a committed block.
"""

from __future__ import annotations

from consensus.messages import Proof
from consensus.replica import Replica


class QuorumMinusOneReplica(Replica):
    """BROKEN ON PURPOSE: certificates with quorum - 1 votes."""

    def vote_quorum(self) -> int:
        return self.vset.quorum - 1


class AmnesiacViewChangeReplica(Replica):
    """BROKEN ON PURPOSE: VIEW-CHANGEs carry no proofs (PBFT's P set is dropped)."""

    def vc_proofs(self) -> tuple[Proof, ...]:
        return ()

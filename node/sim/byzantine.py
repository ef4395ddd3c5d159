"""What a Byzantine node does to the frames and blocks it sends (the simulator's attacker).

It runs the product's core like every node; the world (``cluster``) passes its outgoing
frames and its catch-up answers through here:

- ``equivocate``: as primary it sends two different signed PRE-PREPAREs (two valid
  blocks) to the two halves of the cluster, and conflicting PREPARE/COMMIT votes;
- ``forge``: when serving catch-up it answers with a tampered block under a forged
  commit certificate: one signer repeated up to a quorum, signers outside the set, or
  a key that is not the validator's at that index: once governance has retired this
  node (``REMOVE_VALIDATOR``, see ``cluster.World.retire``) that key is its own retired
  validator key, before that a key that never was a validator's.

Every forged certificate must be refused; an accepted one commits a block no honest
node agreed to, which checker (a) reports.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Protocol

from consensus.api import CertifiedPayload
from consensus.messages import Commit, Prepare, PrePrepare, decode_message
from ledger.codec import Domain
from ledger.crypto import KeyPair
from ledger.errors import LedgerError
from ledger.state import execute
from ledger.types import CommitCertificate, commit_vote_body
from node.core import Broadcast, NodeCore
from node.transport import CONSENSUS


class SimNode(Protocol):
    """What the Byzantine behaviours use of a simulated node (``node.sim.cluster.SimNode``),
    declared here so this module need not import the cluster that imports it."""

    core: NodeCore | None  # None while it is down
    key: KeyPair


#: Signs "as a validator" without ever having been one.
OUTSIDER = KeyPair.from_seed(b"\x01" * 32)


def equivocate(
    node: SimNode, eff: Broadcast, others: list[int], rng: random.Random
) -> dict[int, bytes] | None:
    """One signed message to half of ``others``, a conflicting one to the rest (None:
    send ``eff`` as it is)."""
    core = node.core
    assert core is not None  # only running nodes act
    if eff.channel != CONSENSUS or core is None:
        return None
    m = decode_message(eff.payload)
    if m.sender != node.key.public_key:
        return None
    alt: Any = None
    if isinstance(m, PrePrepare):
        parent = core.ledger.state_of_block(m.parent_id)
        block = core.app.block_of(m.payload)
        if parent is None or block is None:
            return None
        other = execute(
            parent,
            block.txs[:-1] if block.txs else [],
            time_ms=block.header.time_ms + 1 + rng.randrange(1000),
            proposer=node.key.public_key,
            strict=False,
        ).block
        alt = PrePrepare(m.height, m.view, other.block_id, m.parent_id, other.encode())
    elif isinstance(m, Prepare | Commit):
        alt = dataclasses.replace(m, block_id=rng.randbytes(32))
    if alt is None:
        return None
    alt_bytes = alt.signed_by(core.crypto, core.chain_id).encoded
    others = list(others)
    rng.shuffle(others)
    half = len(others) // 2
    return {i: (eff.payload if k < half else alt_bytes) for k, i in enumerate(others)}


def forge(
    node: SimNode, lo: int, blocks: list[CertifiedPayload], rng: random.Random, retired: bool
) -> tuple[list[CertifiedPayload], str]:
    """Asked for blocks from ``lo``: a tampered block ``lo`` under a forged certificate
    instead of ``blocks``, and how the certificate was forged ("" if nothing could be
    forged: ``blocks`` as they are). Only the block after our head can be forged (we
    hold its parent's state); the node claims to be ahead so that peers ask for it."""
    core = node.core
    assert core is not None  # only running nodes act
    head = core.ledger.head
    if lo != head.height + 1:
        return blocks, ""
    validators = head.validators_at(head.height + 1)
    try:
        fake = execute(
            head,
            [],
            time_ms=head.time_ms + 1 + rng.randrange(1000),
            proposer=validators.validators[0].node_key,  # claims an honest proposer
            strict=False,
        ).block
    except LedgerError:
        return blocks, ""
    body = commit_vote_body(core.chain_id, fake.height, 0, fake.block_id)
    quorum, n = validators.quorum, validators.n
    how = rng.randrange(3)
    if retired:
        # Our own key, retired by governance, in the place of current validators.
        mine = node.key.sign(Domain.COMMIT, body)
        sigs = tuple((i, mine) for i in range(quorum))
        kind = "retired_key"
    elif how == 0:  # one signer repeated up to a quorum
        own = validators.index_of(node.key.public_key)
        if own is None:
            return blocks, ""
        mine = node.key.sign(Domain.COMMIT, body)
        sigs = tuple((own, mine) for _ in range(quorum))
        kind = "repeated_signer"
    elif how == 1:  # signers outside the set
        stranger = OUTSIDER.sign(Domain.COMMIT, body)
        sigs = tuple((n + 3 + i, stranger) for i in range(quorum))
        kind = "outside_signer"
    else:  # a key that never was a validator's, at validators' indexes
        stranger = OUTSIDER.sign(Domain.COMMIT, body)
        sigs = tuple((i, stranger) for i in range(quorum))
        kind = "foreign_key"
    cert = CommitCertificate(fake.height, 0, fake.block_id, tuple(sorted(sigs)))
    return [CertifiedPayload(fake.encode(), cert)], kind

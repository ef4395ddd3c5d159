"""The replica's boundary: events in, actions out, and the two injected interfaces.

Owns every type that crosses ``Replica.step``: the ``Event`` and ``Action`` frozen
dataclasses, the ``App`` and ``Crypto`` protocols the caller supplies, and
``Config``. Nothing here does I/O; the replica never reads a clock (time is the
caller's ``TimerFired``) and never picks randomness.

Executing actions (like etcd raft's ``Ready``): the caller carries out the list
returned by one ``step`` *in order*, and:

1. ``Persist(record)`` and ``PersistBlock`` must be durable before any action after
   them is executed. The replica always emits them before the ``Send``/``Broadcast``
   of a message it has just signed, so "persist before send" holds by executing in
   order. A replica rebuilt from the last persisted record never signs a conflicting
   message. A caller may coalesce these writes (node/ does, per step): each
   ``Persist`` carries the whole record, so the newest supersedes the others, and
   payloads can share its write, provided every ``Send``, ``Broadcast``,
   ``CommitBlock`` and ``ReportEvidence`` after them waits until they are durable.
   Timers and ``RequestProposal`` are local and may go first.
2. ``CommitBlock`` actions arrive in strictly increasing height order, exactly once
   per height for the replica's lifetime. After executing one (applying the block to
   the ledger), the caller steps ``Applied(height, state_root)`` -- the analogue of
   raft's ``Advance``: checkpoints and heights whose validator set depends on that
   block wait for it.
3. ``Send``/``Broadcast`` may be executed asynchronously, dropped or reordered; the
   protocol tolerates loss. ``Broadcast`` goes to every validator the caller knows of
   (members of the sets in force near the current height), never back to itself.
4. ``SetTimer(kind, key, delay_ms)`` replaces a running timer with the same
   ``(kind, key)``; when it expires the caller steps ``TimerFired(kind, key)``.
   ``CancelTimer`` is best-effort: a late ``TimerFired`` is ignored.
5. ``RequestProposal`` asks the block builder for a block at ``height`` on top of
   ``parent_block_id``; answer with ``ProposalReady``, whenever suitable. Empty
   heartbeat blocks are the caller's policy: it may answer with an empty block after
   a linger, or wait for transactions.
6. ``RequestBlocks(peer, lo, hi)`` asks the caller to fetch certified blocks lo..hi
   (any subset, in order) from ``peer``; answer with ``BlocksReceived``. The replica
   verifies every certificate itself.
7. Outcomes are reported, never inferred from counters: ``ViewEntered(view)`` when the
   replica changes view, ``PeerMisbehaved(peer, reason)`` when the connection a message
   came from delivered a bad signature, ``CensorshipSuspected`` when the censorship
   timer replaces the primary. They are local and may be executed in any order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from consensus.evidence import Evidence
from consensus.messages import Message
from consensus.signer import Crypto as Crypto  # re-exported: part of the boundary

if TYPE_CHECKING:  # a runtime import would be circular: consensus.record imports this
    from consensus.record import SigningRecord
from ledger.types import CertifiedBlock, CommitCertificate, ValidatorSet

# ---------------------------------------------------------------------------
# Injected interfaces
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockInfo:
    """What ``App.block_info`` parses out of a payload without validating it."""

    block_id: bytes
    parent_id: bytes
    height: int


@runtime_checkable
class App(Protocol):
    """The ledger, as consensus sees it. Pure and deterministic given the applied chain.

    Answers may depend only on blocks the caller has applied (``Applied`` events), so
    a height whose answer depends on a block not yet applied returns None and the
    replica asks again later.
    """

    def validators_at(self, height: int) -> ValidatorSet | None:
        """The set that certifies ``height``; None if not yet determined."""
        ...

    def epoch_start(self, height: int) -> int | None:
        """First height of the run of heights that share ``height``'s validator set."""
        ...

    def validate_proposal(
        self, height: int, payload: bytes, parent_block_id: bytes
    ) -> bytes | None:
        """The block id of a valid block at ``height`` on ``parent_block_id``, else None.

        With pipelining the parent may not be applied yet; the App must decide from the
        payload, the parent id and applied state (e.g. speculative execution keyed by
        parent id), and must answer the same way on every honest replica.
        """
        ...

    def block_info(self, payload: bytes) -> BlockInfo | None:
        """Id, parent id and height of a payload (parsing only), or None if malformed."""
        ...

    def tx_ids(self, payload: bytes) -> Sequence[bytes]:
        """Ids of the transactions in a (validated) payload, for censorship detection."""
        ...


@dataclass(frozen=True)
class Config:
    """Protocol parameters. Units are in the names; all times are abstract milliseconds.

    - ``window``: W, heights the primary may have in flight above the last commit.
    - ``checkpoint_interval``: K, heights between checkpoints (PBFT §4.3).
    - ``log_size``: L, width of the watermark window (low, low + L]; default 2*max(K, W).
    - ``view_timeout_ms``: base of the view-change timers; doubles per consecutive
      failed view up to ``2**max_backoff_exp`` times, resets after a commit.
    - ``censor_timeout_ms``: a known pending transaction still uncommitted after this
      long counts as censorship by the primary (view change).
    - ``heartbeat_ms``: the caller's promise of an (empty) block at least this often
      while idle; with no commit for twice as long the replica expects one (it counts
      as pending work, so a silent primary is replaced). 0: no heartbeat.
    """

    chain_id: str
    genesis_block_id: bytes
    window: int = 4
    checkpoint_interval: int = 16
    log_size: int = 0
    view_timeout_ms: int = 2000
    max_backoff_exp: int = 6
    censor_timeout_ms: int = 10_000
    fetch_timeout_ms: int = 2000
    max_fetch_heights: int = 256
    max_pending_txs: int = 100_000
    max_views_ahead: int = 64
    heartbeat_ms: int = 0

    def __post_init__(self) -> None:
        if self.window < 1 or self.checkpoint_interval < 1:
            raise ValueError("window and checkpoint_interval must be >= 1")
        if self.log_size == 0:
            object.__setattr__(self, "log_size", 2 * max(self.checkpoint_interval, self.window))
        if self.log_size < self.window + self.checkpoint_interval:
            raise ValueError("log_size must be >= window + checkpoint_interval")
        if len(self.genesis_block_id) != 32:
            raise ValueError("genesis_block_id must be 32 bytes")


class TimerKind(IntEnum):
    PROGRESS = 1  # no commit while work is pending -> view change (PBFT §4.4)
    VIEW_CHANGE = 2  # a quorum moved to view v but no NEW-VIEW arrived -> v + 1
    RETRANSMIT = 3  # resend our VIEW-CHANGE / unstable CHECKPOINTs over a lossy network
    CENSOR = 4  # known transactions left out for too long -> view change
    FETCH = 5  # an outstanding RequestBlocks got no (useful) answer
    HEARTBEAT = 6  # no commit for 2 x heartbeat_ms: a block is due (pending work)


# ---------------------------------------------------------------------------
# Events (caller -> replica)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """First event after construction: arms timers, resends a restored VIEW-CHANGE."""


@dataclass(frozen=True)
class MessageReceived:
    """A message from the network.

    ``verified``: the caller already checked its signature. ``peer``: the validator key
    of the connection it came from, if the transport knows it (it differs from
    ``message.sender`` when a message is forwarded); it lets the replica answer only
    genuine retransmissions and not echo forwarded messages.
    """

    message: Message
    verified: bool = False
    peer: bytes | None = None


@dataclass(frozen=True)
class TimerFired:
    kind: TimerKind
    key: int


@dataclass(frozen=True)
class ProposalReady:
    """The block builder's answer to ``RequestProposal``."""

    height: int
    view: int
    payload: bytes


@dataclass(frozen=True)
class TxsPending:
    """Valid transactions the caller holds and expects to be committed."""

    tx_ids: tuple[bytes, ...]


@dataclass(frozen=True)
class TxsDropped:
    """Transactions the caller no longer expects (expired, invalidated)."""

    tx_ids: tuple[bytes, ...]


@dataclass(frozen=True)
class CertifiedPayload:
    """An opaque committed payload and its certificate (what catch-up transfers)."""

    payload: bytes
    certificate: CommitCertificate


@dataclass(frozen=True)
class BlocksReceived:
    """The answer to ``RequestBlocks``: certified blocks in increasing height order."""

    peer: bytes
    blocks: tuple[CertifiedPayload | CertifiedBlock, ...]


@dataclass(frozen=True)
class Applied:
    """The caller applied the block at ``height``; ``state_root`` is the state after it."""

    height: int
    state_root: bytes


Event = (
    Start
    | MessageReceived
    | TimerFired
    | ProposalReady
    | TxsPending
    | TxsDropped
    | BlocksReceived
    | Applied
)


# ---------------------------------------------------------------------------
# Actions (replica -> caller), executed in order
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Persist:
    """Make ``record`` durable before going on (``SigningRecord.encode()`` gives bytes)."""

    record: SigningRecord


@dataclass(frozen=True)
class PersistBlock:
    """Store ``payload`` durably (keyed by ``block_id``) before going on.

    Emitted once for every block this replica accepts, before it votes for it, so a
    block that a later view re-proposes survives a crash. Pass the stored payloads
    back to ``Replica(blocks=...)`` on restart; those at or below the record's
    stable checkpoint height may be deleted.
    """

    height: int
    block_id: bytes
    payload: bytes


@dataclass(frozen=True)
class Send:
    to: bytes
    message: Message


@dataclass(frozen=True)
class Broadcast:
    message: Message


@dataclass(frozen=True)
class SetTimer:
    kind: TimerKind
    key: int
    delay_ms: int


@dataclass(frozen=True)
class CancelTimer:
    kind: TimerKind
    key: int


@dataclass(frozen=True)
class RequestProposal:
    height: int
    view: int
    parent_block_id: bytes


@dataclass(frozen=True)
class CommitBlock:
    """Deliver a decided block; ``certificate`` is a quorum of COMMIT signatures."""

    height: int
    payload: bytes
    certificate: CommitCertificate


@dataclass(frozen=True)
class RequestBlocks:
    peer: bytes
    from_height: int
    to_height: int


@dataclass(frozen=True)
class ReportEvidence:
    """Two conflicting signed messages by one validator (``consensus.evidence``)."""

    evidence: Evidence


@dataclass(frozen=True)
class ViewEntered:
    """The replica moved to ``view`` (a view change started, or a NEW-VIEW installed)."""

    view: int


@dataclass(frozen=True)
class PeerMisbehaved:
    """The connection ``peer`` delivered something an honest node never sends (e.g. a
    message with a bad signature: honest peers forward only signatures they checked)."""

    peer: bytes
    reason: str


@dataclass(frozen=True)
class CensorshipSuspected:
    """Known pending transactions stayed out of blocks past ``censor_timeout_ms``; the
    replica is changing view. ``oldest``: up to three of them, oldest first."""

    view: int
    pending: int
    oldest: tuple[bytes, ...]


Action = (
    Persist
    | PersistBlock
    | Send
    | Broadcast
    | SetTimer
    | CancelTimer
    | RequestProposal
    | CommitBlock
    | RequestBlocks
    | ReportEvidence
    | ViewEntered
    | PeerMisbehaved
    | CensorshipSuspected
)

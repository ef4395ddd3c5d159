"""PBFT consensus for dvp as a pure state machine (no I/O, no clock, no randomness).

Castro & Liskov's Practical Byzantine Fault Tolerance (OSDI'99; TOCS'02) for
n = 3f + 1 validators, with pipelining, checkpoints, catch-up, validator-set epochs
and accountability. The caller (the node) owns all I/O:

    replica = Replica(config, app, crypto, committed_height=h, committed_block_id=b,
                      record=last_persisted_record, blocks=persisted_payloads)
    for action in replica.step(event):   # execute in order; see consensus.api
        ...

Modules: ``api`` (events, actions, App/Crypto protocols, Config), ``messages`` (wire
format), ``quorum`` (vote arithmetic), ``certs`` (certificate checks, new-view
selection), ``record`` (signing record for restart safety), ``evidence``
(equivocation proofs), ``state``/``replica``/``viewchange``/``recovery`` (the state
machine), ``signer`` (Ed25519 adapter). The protocol as implemented is described in
docs/CONSENSUS.md.
"""

from consensus.api import (
    Action,
    App,
    Applied,
    BlockInfo,
    BlocksReceived,
    Broadcast,
    CancelTimer,
    CensorshipSuspected,
    CertifiedPayload,
    CommitBlock,
    Config,
    Crypto,
    Event,
    MessageReceived,
    PeerMisbehaved,
    Persist,
    PersistBlock,
    ProposalReady,
    ReportEvidence,
    RequestBlocks,
    RequestProposal,
    Send,
    SetTimer,
    Start,
    TimerFired,
    TimerKind,
    TxsDropped,
    TxsPending,
    ViewEntered,
)
from consensus.evidence import Evidence, verify_evidence
from consensus.record import SigningRecord
from consensus.replica import Replica

__all__ = [
    "Action",
    "App",
    "Applied",
    "BlockInfo",
    "BlocksReceived",
    "Broadcast",
    "CancelTimer",
    "CensorshipSuspected",
    "CertifiedPayload",
    "CommitBlock",
    "Config",
    "Crypto",
    "Event",
    "Evidence",
    "MessageReceived",
    "PeerMisbehaved",
    "Persist",
    "PersistBlock",
    "ProposalReady",
    "Replica",
    "ReportEvidence",
    "RequestBlocks",
    "RequestProposal",
    "Send",
    "SetTimer",
    "SigningRecord",
    "Start",
    "TimerFired",
    "TimerKind",
    "TxsDropped",
    "TxsPending",
    "ViewEntered",
    "verify_evidence",
]

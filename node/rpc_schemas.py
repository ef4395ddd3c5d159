"""JSON Schemas of the node's RPC results, as the OpenRPC document (``rpc.discover``)
publishes them (docs/RPC.md describes the same shapes in prose).

Precise on purpose: every fixed-shape object lists its required fields and refuses
others (``additionalProperties: false``), and binary values are lowercase hex of the
right length, so ``tests/node/test_rpc_schemas.py`` fails when a method's answer
drifts from what is published here.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "BLOCK",
    "BLOCK_HEAD",
    "BOOL",
    "BUNDLE",
    "CERTIFIED_HEAD",
    "CONSENT_REQUIRED",
    "EVIDENCE",
    "HEADER",
    "HEX",
    "HEX32",
    "INT",
    "NAT",
    "PROPOSAL",
    "STATUS",
    "STR",
    "SUBJECT_LOG",
    "SUBMITTED",
    "VERDICT",
    "array",
    "nullable",
    "obj",
]

Schema = dict[str, Any]

HEX: Final[Schema] = {"type": "string", "pattern": "^(?:[0-9a-f]{2})*$"}
HEX32: Final[Schema] = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
INT: Final[Schema] = {"type": "integer"}
NAT: Final[Schema] = {"type": "integer", "minimum": 0}
STR: Final[Schema] = {"type": "string"}
BOOL: Final[Schema] = {"type": "boolean"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(optional: dict[str, Schema] | None = None, /, **required: Schema) -> Schema:
    """An object with exactly these fields: ``required`` always, ``optional`` may be absent."""
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": sorted(required),
        "additionalProperties": False,
    }


#: The fields of a block header (``node.rpc_json.header_json``).
HEADER: Final = obj(
    version=NAT,
    chain_id=STR,
    height=NAT,
    prev_block_id=HEX32,
    time_ms=NAT,
    proposer={"type": "string", "pattern": "^(?:[0-9a-f]{64})?$"},  # empty at height 0
    tx_count=NAT,
    tx_root=HEX32,
    state_root=HEX32,
    validator_set_hash=HEX32,
    next_validator_set_hash=HEX32,
    history_root=HEX32,
)

#: A certified head: a header and its commit certificate, canonical encodings (hex).
#: The one shape of every method that proves something against a head (the bundle's
#: ``head``, ``getTransaction``, ``getHistoryProof``, ``getConsistencyProof``).
CERTIFIED_HEAD: Final = obj(header=HEX, certificate=nullable(HEX))  # null: header 0 only

#: ``getHeader``; ``getBlock`` adds the transactions.
BLOCK_HEAD: Final = dict(
    height=NAT, block_id=HEX32, header=HEADER, encoded=HEX, certificate=nullable(HEX)
)
BLOCK: Final = obj({"txs": array(HEX)}, **BLOCK_HEAD, tx_ids=array(HEX32))

_SMT_PROOF: Final = obj(
    terminal={"enum": ["leaf", "empty", "other_leaf"]},
    levels=array(obj(bitmap=NAT, siblings=array(HEX32))),
    leaf_key=nullable(HEX32),
    leaf_value_hash=nullable(HEX32),
)
_INCLUDED_TX: Final = obj(
    tx=HEX, header=HEX, index=NAT, tx_proof=array(HEX32), history_proof=array(HEX32)
)

#: The proof bundle of docs/PROOFS.md section 11 (``ledger.bundle.ProofBundle.to_json``).
BUNDLE: Final = obj(
    version={"const": 3},
    chain_id=STR,
    commitment=HEX32,
    head=CERTIFIED_HEAD,
    valset_changes=array(obj(header=HEX, certificate=HEX, next_validators=HEX)),
    record=nullable(HEX),
    state_proof=_SMT_PROOF,
    attest=nullable(_INCLUDED_TX),
    revoke=nullable(_INCLUDED_TX),
    proposal=nullable(obj(id=HEX32, record=HEX, state_proof=_SMT_PROOF)),
    # a document bound to its data subject: the recorded access (docs/CONSENT.md §5)
    consent=nullable(
        obj(
            grant_id=HEX32,
            record=HEX,
            state_proof=_SMT_PROOF,
            grant_tx=_INCLUDED_TX,
            access=_INCLUDED_TX,
        )
    ),
)

#: ``getSubjectLog``: a data subject's proven log (``ledger.subject_log``).
SUBJECT_LOG: Final = obj(
    version={"const": 1},
    chain_id=STR,
    head=obj(header=HEX, certificate=HEX),
    valset_changes=array(obj(header=HEX, certificate=HEX, next_validators=HEX)),
    subjects=array(
        obj(
            key=HEX32,
            record=nullable(HEX),
            state_proof=_SMT_PROOF,
            grants=array(
                obj(
                    grant_id=HEX32,
                    record=HEX,
                    state_proof=_SMT_PROOF,
                    grant_tx=_INCLUDED_TX,
                    revoke_tx=nullable(_INCLUDED_TX),
                    accesses=array(_INCLUDED_TX),
                )
            ),
        )
    ),
)

#: The ``data`` of error -32007 (consent required, docs/CONSENT.md §4).
CONSENT_REQUIRED: Final = obj(
    reason=STR,
    grants=array(obj(grant_id=HEX32, grantee=STR, purpose=STR, uses_left=NAT, not_after_ms=NAT)),
)

_JUDGED_AT: Final = dict(
    height=NAT,
    block_time_ms=NAT,
    head_age_ms=INT,
    checked_at_ms=NAT,
    max_age_ms=nullable(NAT),
)

#: ``verifyAttestation``: a verdict, or UNVERIFIABLE / INVALID with its reason.
VERDICT: Final = {
    "type": "object",
    "oneOf": [
        obj(
            **_JUDGED_AT,
            status={"enum": ["VALID", "REVOKED", "EXPIRED", "NOT_FOUND"]},
            commitment=HEX32,
            issuer=nullable(STR),
            doc_type=nullable(STR),
            issued_at_ms=nullable(NAT),
            valid_until_ms=nullable(NAT),
            attested_height=nullable(NAT),
            attest_tx_id=nullable(HEX32),
            revoked_height=nullable(NAT),
            revoke_reason=nullable(NAT),
            revoked_by=nullable(STR),
            revoke_proposal=nullable(HEX32),
            access=nullable(
                obj(
                    grant_id=HEX32,
                    purpose=STR,
                    grantee=STR,
                    height=NAT,
                    time_ms=NAT,
                    member_key=HEX32,
                )
            ),
        ),
        obj(
            dict(_JUDGED_AT),  # the head, once its certificate verified
            status={"enum": ["UNVERIFIABLE", "INVALID"]},
            reason=STR,
            message=STR,
        ),
    ],
}

#: ``submitTransactions``: one outcome per transaction, in request order.
SUBMITTED: Final = obj(
    accepted=NAT,
    results=array(
        {
            "oneOf": [
                obj({"height": NAT}, tx_id=HEX32, status={"enum": ["pending", "committed"]}),
                obj(tx_id=nullable(HEX32), status={"const": "rejected"}, code=STR, message=STR),
            ]
        }
    ),
)

#: ``status`` (``node.rpc_json.node_status`` and ``node.health.status_fields``).
STATUS: Final = obj(
    chain_id=STR,
    node=STR,
    role={"enum": ["validator", "observer"]},
    height=NAT,
    block_id=HEX32,
    state_root=HEX32,
    block_time_ms=NAT,
    view=nullable(NAT),
    primary=nullable(STR),
    validators=array(STR),
    peers=NAT,
    mempool=NAT,
    last_commit_unix_ms=nullable(NAT),
    view_changes=NAT,
    evidence=NAT,
    store_error=nullable(STR),
    bodies_from=NAT,
    protocol_version=NAT,
    protocol_versions_supported=array(NAT),
    scheduled_versions=array(array(NAT)),
    head_age_ms=INT,
    ready=BOOL,
    failing=array({"enum": ["started", "synced", "peers", "head_age", "store"]}),
)

#: A governance proposal (``node.rpc_json.proposal_json``).
PROPOSAL: Final = obj(
    proposal_id=HEX32,
    action=STR,
    args=array({"type": ["string", "integer"]}),
    proposer=STR,
    deadline_height=NAT,
    yes=array(STR),
    no=array(STR),
    status={"enum": ["open", "approved", "rejected", "expired"]},
    decided_height=nullable(NAT),
    reason=STR,
)

#: One equivocation record of ``admin.evidence`` (or why it could not be decoded).
EVIDENCE: Final = {
    "type": "object",
    "oneOf": [
        obj(
            sender=HEX32,
            member_id=nullable(STR),
            kind=STR,
            slot=array({"type": ["string", "integer"]}),
            verified=nullable(BOOL),
            first=HEX,
            second=HEX,
        ),
        obj(error=STR, encoded=HEX),
    ],
}

"""Proof bundles to test against: a small chain with every verdict and a validator-set
change (``make_chain``), and the tampering helpers (``leaf_paths``, ``mutate``) that
tests/ledger/test_bundle.py and test_proofs_doc_independent.py use.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ledger.chain import Ledger
from ledger.prove import Prover
from ledger.testchain import GENESIS_TIME_MS, Consortium
from ledger.types import GovAction, GovPropose, GovVote, Revoke, RevokeReason

C = [bytes([i]) * 32 for i in range(1, 20)]

#: A verifier's clock for the test chains: a few seconds after their heads (one block a
#: second from GENESIS_TIME_MS), within ledger.verify.DEFAULT_MAX_AGE_MS of them.
NOW_MS = GENESIS_TIME_MS + 20_000


def commit_block(lg: Ledger, cons: Consortium, txs: list[Any]) -> None:
    ex = lg.build(txs, time_ms=lg.tip.time_ms + 1000, proposer=cons.proposer)
    assert not ex.rejected, ex.rejected
    lg.commit(ex.block, cons.certify(ex.block, validators=lg.validators_at(ex.height)))


def make_chain(path: Any) -> tuple[Consortium, Ledger, dict[str, Any]]:
    """A chain with VALID, REVOKED, EXPIRED and absent commitments and one validator-set
    change, and their bundles in JSON form ."""
    cons = Consortium.make()
    lg = Ledger.open(path, cons.genesis)
    commit_block(
        lg,
        cons,
        [
            cons.attest(C[0]),
            cons.attest(C[1], "bank-statement"),
            cons.attest(C[2], valid_until_ms=GENESIS_TIME_MS + 1500),
        ],
    )
    # a validator-set change (webank leaves) so bundles must carry the chain of sets
    prop = cons.tx("cnix", GovPropose(GovAction.REMOVE_VALIDATOR, ("webank",), 100))
    commit_block(lg, cons, [prop])
    commit_block(lg, cons, [cons.tx(v, GovVote(prop.tx_id, True)) for v in ("hkbank", "szcredit")])
    for _ in range(8):
        commit_block(lg, cons, [])
    commit_block(lg, cons, [cons.tx("szcredit", Revoke(C[1], RevokeReason.DATA_CHANGED))])
    prover = Prover(lg)
    bundles = {
        name: json.loads(json.dumps(prover.bundle(c).to_json()))
        for name, c in [("valid", C[0]), ("revoked", C[1]), ("expired", C[2]), ("absent", C[9])]
    }
    return cons, lg, bundles


def leaf_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every leaf of a JSON document (hex strings and integers)."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += leaf_paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += leaf_paths(v, (*prefix, i))
    elif doc is not None:
        out.append(prefix)
    return out


def mutate(doc: Any, path: tuple[Any, ...]) -> Any:
    d = copy.deepcopy(doc)
    parent = d
    for k in path[:-1]:
        parent = parent[k]
    v = parent[path[-1]]
    if isinstance(v, bool):
        parent[path[-1]] = not v
    elif isinstance(v, int):
        parent[path[-1]] = v + 1
    elif isinstance(v, str) and v and all(c in "0123456789abcdef" for c in v):
        i = len(v) // 2
        parent[path[-1]] = v[:i] + ("0" if v[i] != "0" else "1") + v[i + 1 :]
    else:
        parent[path[-1]] = v + "x"
    return d

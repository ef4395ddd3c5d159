"""Proof bundles end to end: build from a real ledger, verify offline, and refuse tampering."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ledger.bundle import ProofBundle
from ledger.prove import Prover
from ledger.records import Status
from ledger.testchain import Consortium
from ledger.types import RevokeReason
from ledger.verify import Reason, TrustAnchor, VerificationError, verify_bundle_json
from tests.support.bundles import NOW_MS, C, leaf_paths, make_chain, mutate


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cons, lg, bundles = make_chain(tmp_path_factory.mktemp("b") / "db")
    yield cons, lg, bundles
    lg.close()


def test_verdicts(chain: Any) -> None:
    cons, lg, bundles = chain
    anchor = TrustAnchor.from_genesis(cons.genesis)
    assert len(bundles["valid"]["valset_changes"]) == 1
    v = verify_bundle_json(bundles["valid"], anchor, now_ms=NOW_MS)
    assert (v.status, v.issuer, v.doc_type, v.attested_height) == (
        Status.VALID,
        "szcredit",
        "credit-report",
        1,
    )
    assert v.height == lg.height
    r = verify_bundle_json(bundles["revoked"], anchor, now_ms=NOW_MS)
    assert r.status == Status.REVOKED and r.revoke_reason == RevokeReason.DATA_CHANGED
    assert verify_bundle_json(bundles["expired"], anchor, now_ms=NOW_MS).status == Status.EXPIRED
    assert verify_bundle_json(bundles["absent"], anchor, now_ms=NOW_MS).status == Status.NOT_FOUND


def test_freshness(chain: Any) -> None:
    cons, lg, bundles = chain
    anchor = TrustAnchor.from_genesis(cons.genesis)
    t = lg.head.time_ms
    verify_bundle_json(bundles["valid"], anchor, now_ms=t + 1000, max_age_ms=5000)
    with pytest.raises(VerificationError) as e:
        verify_bundle_json(bundles["valid"], anchor, now_ms=t + 60_000, max_age_ms=5000)
    assert e.value.reason == Reason.STATE_TOO_OLD


def test_wrong_anchor(chain: Any) -> None:
    cons, _, bundles = chain
    other = Consortium.make(n_validators=5)
    with pytest.raises(VerificationError) as e:
        verify_bundle_json(bundles["valid"], TrustAnchor.from_genesis(other.genesis), now_ms=NOW_MS)
    assert e.value.reason == Reason.VALIDATOR_CHAIN_BROKEN
    anchor = TrustAnchor("another-chain", cons.genesis.validators)
    with pytest.raises(VerificationError) as e:
        verify_bundle_json(bundles["valid"], anchor, now_ms=NOW_MS)
    assert e.value.reason == Reason.WRONG_CHAIN


EXPECTED_REASONS = {
    # where the altered field sits -> the refusals that are right for it
    "head": {
        Reason.BAD_SIGNATURE,
        Reason.INSUFFICIENT_QUORUM,
        Reason.MALFORMED,
        Reason.VALIDATOR_CHAIN_BROKEN,
        Reason.WRONG_CHAIN,
    },
    "valset_changes": {
        Reason.BAD_SIGNATURE,
        Reason.INSUFFICIENT_QUORUM,
        Reason.MALFORMED,
        Reason.VALIDATOR_CHAIN_BROKEN,
        Reason.WRONG_CHAIN,
    },
    "record": {Reason.STATE_ROOT_MISMATCH, Reason.MALFORMED},
    "state_proof": {Reason.STATE_ROOT_MISMATCH, Reason.MALFORMED},
    "commitment": {Reason.STATE_ROOT_MISMATCH},
    "attest": {
        Reason.BAD_SIGNATURE,
        Reason.MALFORMED,
        Reason.TX_ROOT_MISMATCH,
        Reason.HISTORY_ROOT_MISMATCH,
        Reason.RECORD_MISMATCH,
        Reason.WRONG_CHAIN,
    },
    "revoke": {
        Reason.BAD_SIGNATURE,
        Reason.MALFORMED,
        Reason.TX_ROOT_MISMATCH,
        Reason.HISTORY_ROOT_MISMATCH,
        Reason.RECORD_MISMATCH,
        Reason.WRONG_CHAIN,
    },
    "chain_id": {Reason.WRONG_CHAIN},
    "version": {Reason.MALFORMED},
}


_INCLUDED_EXACT = {
    ("tx_proof", "*"): {Reason.TX_ROOT_MISMATCH},
    ("history_proof", "*"): {Reason.HISTORY_ROOT_MISMATCH},
    ("index",): {Reason.RECORD_MISMATCH},
}
# Fields whose alteration has exactly one right refusal (indexes as "*"); the rest fall
# back to EXPECTED_REASONS by top-level field.
EXACT_REASONS = {
    ("commitment",): {Reason.STATE_ROOT_MISMATCH},
    ("chain_id",): {Reason.WRONG_CHAIN},
    ("version",): {Reason.MALFORMED},
    ("record",): {Reason.STATE_ROOT_MISMATCH},
    ("state_proof", "levels", "*", "siblings", "*"): {Reason.STATE_ROOT_MISMATCH},
    ("state_proof", "leaf_key"): {Reason.STATE_ROOT_MISMATCH},
    ("state_proof", "leaf_value_hash"): {Reason.STATE_ROOT_MISMATCH},
    ("state_proof", "terminal"): {Reason.MALFORMED},
    ("head", "certificate"): {Reason.BAD_SIGNATURE, Reason.INSUFFICIENT_QUORUM, Reason.MALFORMED},
    ("valset_changes", "*", "next_validators"): {Reason.VALIDATOR_CHAIN_BROKEN, Reason.MALFORMED},
    **{(part, *k): v for part in ("attest", "revoke") for k, v in _INCLUDED_EXACT.items()},
}


def _expected(path: tuple[Any, ...]) -> set[Reason]:
    shape = tuple("*" if isinstance(k, int) else k for k in path)
    return EXACT_REASONS.get(shape, EXPECTED_REASONS[path[0]])


@pytest.mark.parametrize("name", ["valid", "revoked", "expired", "absent"])
def test_every_altered_field_fails_with_the_right_reason(chain: Any, name: str) -> None:
    cons, _, bundles = chain
    anchor = TrustAnchor.from_genesis(cons.genesis)
    doc = bundles[name]
    paths = leaf_paths(doc)
    assert len(paths) > 10
    covered = {p[0] for p in paths}
    assert covered == {k for k, v in doc.items() if v is not None and v != []}
    for path in paths:
        with pytest.raises(VerificationError) as e:
            verify_bundle_json(mutate(doc, path), anchor, now_ms=NOW_MS)
        assert e.value.reason in _expected(path), (path, e.value)


def _structural(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[str, Any]]:
    """Every way to change the bundle's shape rather than a value: drop or add a field,
    drop, duplicate or swap list items, a null, a wrong type, non-lowercase or odd hex."""
    out: list[tuple[str, Any]] = []

    def at(path: tuple[Any, ...], change: Any) -> Any:
        d = copy.deepcopy(doc_root)
        parent = d
        for k in path[:-1]:
            parent = parent[k]
        change(parent, path[-1])
        return d

    def walk(v: Any, path: tuple[Any, ...]) -> None:
        if isinstance(v, dict):
            for k in v:
                out.append((f"drop {path + (k,)}", at(path + (k,), lambda p, k: p.pop(k))))
                walk(v[k], path + (k,))
            if path:
                out.append(
                    (
                        f"extra field in {path}",
                        at(path + (next(iter(v)),), lambda p, k: p.update(extra=1)),
                    )
                )
        elif isinstance(v, list):
            for i, item in enumerate(v):
                walk(item, path + (i,))
            if v:
                out.append(
                    (f"drop last of {path}", at(path + (len(v) - 1,), lambda p, k: p.pop(k)))
                )
                out.append(
                    (
                        f"repeat first of {path}",
                        at(path + (0,), lambda p, k: p.append(copy.deepcopy(p[k]))),
                    )
                )
            if len(v) >= 2 and v[0] != v[1]:
                out.append((f"swap in {path}", at(path + (0,), lambda p, k: p.reverse())))
        elif path and v is not None:
            out.append((f"null at {path}", at(path, lambda p, k: p.__setitem__(k, None))))
            if isinstance(v, int):
                for bad in (True, str(v), -1, float(v)):
                    out.append(
                        (f"{bad!r} at {path}", at(path, lambda p, k, b=bad: p.__setitem__(k, b)))
                    )
            elif isinstance(v, str) and v and all(c in "0123456789abcdef" for c in v):
                out.append(
                    (f"odd hex at {path}", at(path, lambda p, k: p.__setitem__(k, p[k][:-1])))
                )
                out.append(
                    (f"short hex at {path}", at(path, lambda p, k: p.__setitem__(k, p[k][:-2])))
                )
                if any(c in "abcdef" for c in v):
                    out.append(
                        (
                            f"uppercase hex at {path}",
                            at(path, lambda p, k: p.__setitem__(k, p[k].upper())),
                        )
                    )

    doc_root = doc
    walk(doc, prefix)
    return out


@pytest.mark.parametrize("name", ["valid", "revoked", "absent"])
def test_every_structural_change_is_refused(chain: Any, name: str) -> None:
    """Shape changes (see ``_structural``) are refused too: as MALFORMED, or by the
    check the changed part feeds (e.g. a dropped proof hash fails its root)."""
    cons, _, bundles = chain
    anchor = TrustAnchor.from_genesis(cons.genesis)
    changes = _structural(bundles[name])
    assert len(changes) > 30
    for what, doc in changes:
        with pytest.raises(VerificationError) as e:
            verify_bundle_json(doc, anchor, now_ms=NOW_MS)
        path = what.split("(", 1)[1] if "(" in what else ""
        top = path.split(",")[0].strip("'") if path else ""
        allowed = EXPECTED_REASONS.get(top, set()) | {Reason.MALFORMED}
        assert e.value.reason in allowed, (what, e.value)


def test_filled_in_nulls_are_refused(chain: Any) -> None:
    """A NOT_FOUND bundle carrying transactions, a VALID one carrying a REVOKE, or an
    absent commitment given another's record: refused, not silently ignored."""
    cons, _, bundles = chain
    anchor = TrustAnchor.from_genesis(cons.genesis)
    for target, field, source, reason in [
        ("absent", "attest", "valid", Reason.MALFORMED),
        ("absent", "revoke", "revoked", Reason.MALFORMED),
        ("valid", "revoke", "revoked", Reason.MALFORMED),
        ("absent", "record", "valid", Reason.STATE_ROOT_MISMATCH),
    ]:
        doc = copy.deepcopy(bundles[target])
        assert doc[field] is None
        doc[field] = copy.deepcopy(bundles[source][field])
        with pytest.raises(VerificationError) as e:
            verify_bundle_json(doc, anchor, now_ms=NOW_MS)
        assert e.value.reason == reason, (target, field, e.value)


def test_dropping_parts_is_refused(chain: Any) -> None:
    cons, _, bundles = chain
    anchor = TrustAnchor.from_genesis(cons.genesis)
    doc = copy.deepcopy(bundles["valid"])
    doc["valset_changes"] = []
    with pytest.raises(VerificationError) as e:
        verify_bundle_json(doc, anchor, now_ms=NOW_MS)
    assert e.value.reason == Reason.VALIDATOR_CHAIN_BROKEN
    doc = copy.deepcopy(bundles["valid"])
    doc["record"] = None
    with pytest.raises(VerificationError):
        verify_bundle_json(doc, anchor, now_ms=NOW_MS)
    doc = copy.deepcopy(bundles["valid"])
    del doc["attest"]
    with pytest.raises(VerificationError) as e:
        verify_bundle_json(doc, anchor, now_ms=NOW_MS)
    assert e.value.reason == Reason.MALFORMED
    # swapping a valid bundle's record for another commitment's is caught
    doc = copy.deepcopy(bundles["valid"])
    doc["commitment"] = bundles["expired"]["commitment"]
    with pytest.raises(VerificationError):
        verify_bundle_json(doc, anchor, now_ms=NOW_MS)


def test_round_trip_json(chain: Any) -> None:
    _, _, bundles = chain
    b = ProofBundle.from_json(bundles["revoked"])
    assert b.to_json() == bundles["revoked"]


def test_prover_serves_the_stored_bytes(chain: Any) -> None:
    """The prover's cached, split blocks give exactly what decoded blocks give: the
    canonical transaction and header bytes and the same RFC 6962 proofs — with a cache
    so small that every block is evicted and re-split (docs/PROOFS.md §11)."""
    from ledger import merkle

    _, lg, _ = chain
    cached, tiny = Prover(lg), Prover(lg, block_cache_bytes=1)
    head = cached.refresh()
    tiny.refresh()
    for h in range(1, lg.height + 1):
        block = lg.store.get_block(h)
        tree = merkle.MerkleTree.from_leaves(block.tx_ids)
        for pos, tx in enumerate(block.txs):
            for prover in (cached, tiny):
                inc = prover.included(h, pos, head)
                assert inc.tx == tx.encode() and inc.header == block.header.encoded
                assert list(inc.tx_proof) == tree.inclusion_proof(pos)
                expected = cached.history.inclusion_proof(h, head) if h < head else []
                assert list(inc.history_proof) == expected
    for c in C[:10]:
        assert cached.bundle(c) == tiny.bundle(c) == Prover(lg).bundle(c)

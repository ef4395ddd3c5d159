"""The genesis file: the human-readable JSON form of ``types.Genesis`` and its template.

An operator edits a *template* (``configs/genesis.template.toml``: members, roles,
document types, parameters — no keys); ``dvp genesis new`` / ``dvp devnet up`` fill in
the keys and write ``genesis.json``. The chain's trust anchor is ``Genesis.hash``,
computed over the canonical encoding (docs/PROOFS.md §5), never over this JSON text,
so whitespace or key order in the file cannot change it.

JSON layout (binary values lowercase hex)::

    {"chain_id": "...", "genesis_time_ms": N,
     "members": [{"id", "name", "key", "roles": ["validator", ...], "doc_types": [...]}],
     "validators": [{"member_id", "node_key"}],
     "doc_types": [...], "params": {"max_block_txs": N, ...},
     "purposes": [...],           # consent purposes (docs/CONSENT.md §3); a default if absent
     "genesis_hash": "..."}       # informative; checked when present
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from ledger.consortium import DEFAULT_PURPOSES
from ledger.errors import DecodeError, ValidationError
from ledger.types import ChainParams, Genesis, Member, Role, Validator, ValidatorSet

ROLE_NAMES = {r.name.lower(): int(r) for r in Role}


class GenesisError(ValueError):
    """A genesis file or template that cannot be used; the message says what to fix."""


def _hex(value: Any, what: str, size: int) -> bytes:
    if not isinstance(value, str):
        raise GenesisError(f"{what}: expected a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise GenesisError(f"{what}: not hex") from None
    if len(raw) != size:
        raise GenesisError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


def genesis_to_json(g: Genesis) -> dict[str, Any]:
    names = {v: k for k, v in ROLE_NAMES.items()}
    return {
        "chain_id": g.chain_id,
        "genesis_time_ms": g.genesis_time_ms,
        "members": [
            {
                "id": m.member_id,
                "name": m.name,
                "key": m.key.hex(),
                "roles": [names[r] for r in m.roles],
                "doc_types": list(m.doc_types),
            }
            for m in g.members
        ],
        "validators": [
            {"member_id": v.member_id, "node_key": v.node_key.hex()}
            for v in g.validators.validators
        ],
        "doc_types": list(g.doc_types),
        "params": {n: getattr(g.params, n) for n in ChainParams.NAMES},
        "purposes": list(g.purposes),
        "genesis_hash": g.hash.hex(),
    }


def genesis_from_json(doc: Any) -> Genesis:
    """Build and check a ``Genesis`` from its JSON form; ``GenesisError`` says what is wrong."""
    if not isinstance(doc, dict):
        raise GenesisError("a genesis file is a JSON object")
    known = {
        "chain_id",
        "genesis_time_ms",
        "members",
        "validators",
        "doc_types",
        "params",
        "purposes",
        "genesis_hash",
    }
    unknown = set(doc) - known
    if unknown:
        raise GenesisError(f"unknown genesis fields: {sorted(unknown)}")
    try:
        members = []
        for i, m in enumerate(doc["members"]):
            roles = []
            for r in m.get("roles", []):
                if r not in ROLE_NAMES:
                    raise GenesisError(
                        f"members[{i}]: unknown role {r!r} (one of {sorted(ROLE_NAMES)})"
                    )
                roles.append(ROLE_NAMES[r])
            docs = tuple(sorted(set(m.get("doc_types", []))))
            members.append(
                Member(
                    m["id"],
                    m["name"],
                    _hex(m["key"], f"members[{i}].key", 32),
                    tuple(sorted(set(roles))),
                    docs,
                )
            )
        validators = ValidatorSet.of(
            [
                Validator(v["member_id"], _hex(v["node_key"], f"validators[{i}].node_key", 32))
                for i, v in enumerate(doc["validators"])
            ]
        )
        params = ChainParams(**doc.get("params", {}))
        g = Genesis(
            doc["chain_id"],
            int(doc["genesis_time_ms"]),
            tuple(sorted(members, key=lambda m: m.member_id)),
            validators,
            tuple(sorted(set(doc["doc_types"]))),
            params,
            tuple(sorted(set(doc.get("purposes", DEFAULT_PURPOSES)))),
        )
        Genesis.decode(g.encode())  # every field through the strict decoder's checks
    except GenesisError:
        raise
    except KeyError as exc:
        raise GenesisError(f"missing genesis field {exc}") from None
    except (TypeError, ValueError, DecodeError, ValidationError) as exc:
        raise GenesisError(f"invalid genesis: {exc}") from None
    expected = doc.get("genesis_hash")
    if expected is not None and expected != g.hash.hex():
        raise GenesisError(
            f"genesis_hash {expected} does not match the contents "
            f"({g.hash.hex()}): the file was edited after it was made"
        )
    from ledger.errors import RuleError
    from ledger.state import check_genesis

    try:
        check_genesis(g)
    except RuleError as exc:
        raise GenesisError(exc.message) from None
    return g


def write_genesis(path: Path, g: Genesis) -> None:
    Path(path).write_text(json.dumps(genesis_to_json(g), indent=2) + "\n")


def read_genesis(path: Path | str) -> Genesis:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise GenesisError(f"genesis file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise GenesisError(f"genesis file {path} is not readable JSON: {exc}") from None
    try:
        return genesis_from_json(doc)
    except GenesisError as exc:
        raise GenesisError(f"{path}: {exc}") from None


def read_template(path: Path | str) -> dict[str, Any]:
    """A genesis template (TOML): like the JSON form, without keys or validators' node keys.

    ``[[members]]`` entries carry ``id``, ``name``, ``roles``, ``doc_types``; members with
    the ``validator`` role become validators once their node keys are known.
    """
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise GenesisError(f"genesis template {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise GenesisError(f"genesis template {path}: {exc}") from None
    for field in ("chain_id", "members"):
        if field not in doc:
            raise GenesisError(f"genesis template {path}: missing {field!r}")
    return doc


def genesis_from_template(
    template: dict[str, Any],
    member_keys: dict[str, bytes],
    node_keys: dict[str, bytes],
    genesis_time_ms: int,
) -> Genesis:
    """Fill a template with keys. Validators are the members holding the validator role."""
    members = []
    validators = []
    for m in template["members"]:
        mid = m["id"]
        if mid not in member_keys:
            raise GenesisError(f"no key for member {mid!r}")
        members.append(
            {
                "id": mid,
                "name": m.get("name", mid),
                "key": member_keys[mid].hex(),
                "roles": m.get("roles", []),
                "doc_types": m.get("doc_types", []),
            }
        )
        if "validator" in m.get("roles", []):
            if mid not in node_keys:
                raise GenesisError(f"no node key for validator {mid!r}")
            validators.append({"member_id": mid, "node_key": node_keys[mid].hex()})
    doc_types = sorted(
        {d for m in template["members"] for d in m.get("doc_types", [])}
        | set(template.get("doc_types", []))
    )
    return genesis_from_json(
        {
            "chain_id": template["chain_id"],
            "genesis_time_ms": genesis_time_ms,
            "members": members,
            "validators": validators,
            "doc_types": doc_types,
            "params": template.get("params", {}),
            "purposes": template.get("purposes", list(DEFAULT_PURPOSES)),
        }
    )

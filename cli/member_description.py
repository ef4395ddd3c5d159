"""The public member description an organisation exports in the key ceremony, and the
genesis a coordinator makes from several of them (docs/OPERATIONS.md).

``dvp org init`` writes ``<id>.member-description.json`` beside the organisation's
private keys; ``dvp genesis new --member-descriptions ...`` combines the files. A
description holds public material only (format version 1)::

    {"type": "dvp-member-description", "version": 1,
     "id": "cnix", "name": "China Internet Exchange (Qianhai)",
     "member_key": "<64 hex>",                    # signs the organisation's transactions
     "roles": ["auditor", "validator"],           # validator, issuer, verifier, auditor
     "doc_types": [],                             # what it may attest (issuers)
     "node_key": "<64 hex>",                      # validators only: consensus + p2p identity
     "p2p_address": "203.0.113.7:26656"}          # validators only; null until known

Rules:
- Strict like the key files (ledger/keyfile.py): ``type`` and ``version`` are checked
  first, then the schema refuses unknown fields, wrong types, malformed hex, unknown
  roles; ``node_key`` is present exactly when ``validator`` is among the roles, and a
  ``p2p_address`` only with it.
- Combining refuses, naming both files: the same member id twice, a key (member or node)
  used twice, and document types the chain parameters do not list.
- The genesis hash is the trust anchor: every organisation compares it out of band
  (``dvp genesis show``), so nothing here needs to be signed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic import ValidationError as SchemaError

from ledger.genesis import ROLE_NAMES, GenesisError, genesis_from_json
from ledger.types import Genesis
from node.config_schema import split_address

DESCRIPTION_TYPE: Final = "dvp-member-description"
FORMAT_VERSION: Final = 1
SUFFIX: Final = ".member-description.json"
_MAX_FILE_BYTES = 64 * 1024
_MEMBER_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_DOC_TYPE = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class DescriptionError(ValueError):
    """A description that cannot be used, or descriptions that conflict; one line."""


def _hex32(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value
    raise ValueError("expected 64 lowercase hex characters")


def _roles(value: list[str]) -> list[str]:
    unknown = [r for r in value if r not in ROLE_NAMES]
    if unknown:
        raise ValueError(f"unknown role {unknown[0]!r} (one of {', '.join(sorted(ROLE_NAMES))})")
    if len(set(value)) != len(value):
        raise ValueError("a role is listed twice")
    return value


def _address(value: str) -> str:
    split_address(value, ip_only=True, min_port=1)
    return value


Hex32 = Annotated[str, BeforeValidator(_hex32)]


class MemberDescription(BaseModel):
    """Version 1 of ``<id>.member-description.json`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: Literal["dvp-member-description"] = DESCRIPTION_TYPE
    version: Literal[1] = FORMAT_VERSION
    id: Annotated[str, Field(pattern=_MEMBER_ID)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    member_key: Hex32
    roles: Annotated[list[str], AfterValidator(_roles)] = Field(default_factory=list)
    doc_types: list[Annotated[str, Field(pattern=_DOC_TYPE)]] = Field(default_factory=list)
    node_key: Hex32 | None = None
    p2p_address: Annotated[str, AfterValidator(_address)] | None = None

    @model_validator(mode="after")
    def _validator_fields(self) -> MemberDescription:
        validator = "validator" in self.roles
        if validator and self.node_key is None:
            raise ValueError("a validator's description needs its node_key")
        if not validator and self.node_key is not None:
            raise ValueError("node_key is only for members with the validator role")
        if not validator and self.p2p_address is not None:
            raise ValueError("p2p_address is only for members with the validator role")
        return self

    @property
    def is_validator(self) -> bool:
        return "validator" in self.roles


def description_from_json(doc: Any, where: str) -> MemberDescription:
    """Check ``doc`` (a parsed JSON value) as a description; ``where`` names it in errors."""
    if not isinstance(doc, dict) or doc.get("type") != DESCRIPTION_TYPE:
        raise DescriptionError(f"{where} is not a member description (type {DESCRIPTION_TYPE!r})")
    if doc.get("version") != FORMAT_VERSION:
        raise DescriptionError(
            f"{where} has format version {doc.get('version')!r}; this dvp reads version "
            f"{FORMAT_VERSION} (a newer dvp wrote it?)"
        )
    try:
        return MemberDescription.model_validate(doc)
    except SchemaError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        what = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            what = "unknown field (docs/OPERATIONS.md lists the fields of version 1)"
        raise DescriptionError(f"{where}: {loc + ': ' if loc else ''}{what}") from None


def read_description(path: Path) -> MemberDescription:
    try:
        raw = Path(path).read_bytes()[: _MAX_FILE_BYTES + 1]
    except FileNotFoundError:
        raise DescriptionError(f"member description {path} does not exist") from None
    except OSError as exc:
        raise DescriptionError(f"member description {path}: {exc.strerror}") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise DescriptionError(f"{path} is too large to be a member description")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DescriptionError(f"{path} is not JSON: {exc}") from None
    return description_from_json(doc, str(path))


def write_description(path: Path, d: MemberDescription) -> None:
    """Write ``d`` (public: the ordinary mode, readable by others)."""
    Path(path).write_text(json.dumps(d.model_dump(), indent=2) + "\n")


def description_files(paths: Sequence[Path]) -> list[Path]:
    """The files named, a folder standing for its ``*.member-description.json``."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob(f"*{SUFFIX}"))
            if not found:
                raise DescriptionError(f"{p} holds no *{SUFFIX} file")
            out += found
        else:
            out.append(p)
    return out


@dataclass(frozen=True)
class ChainSettings:
    """What the coordinator adds to the descriptions: from a genesis template's
    ``chain_id``, ``doc_types``, ``[params]`` and consent ``purposes`` (its
    ``[[members]]`` are not used; no ``purposes``: the default, docs/CONSENT.md §3)."""

    chain_id: str
    genesis_time_ms: int
    doc_types: tuple[str, ...] = ()
    params: tuple[tuple[str, int], ...] = ()
    purposes: tuple[str, ...] | None = None

    @classmethod
    def from_template(cls, template: dict[str, Any], genesis_time_ms: int) -> ChainSettings:
        purposes = template.get("purposes")
        return cls(
            str(template["chain_id"]),
            genesis_time_ms,
            tuple(template.get("doc_types", [])),
            tuple(sorted(template.get("params", {}).items())),
            None if purposes is None else tuple(purposes),
        )


def genesis_from_descriptions(
    descriptions: Sequence[tuple[str, MemberDescription]], chain: ChainSettings
) -> Genesis:
    """The genesis of ``descriptions`` (each with where it came from, for errors)."""
    if not descriptions:
        raise DescriptionError("no member descriptions given")
    by_id: dict[str, str] = {}
    by_key: dict[str, str] = {}
    for where, d in descriptions:
        if d.id in by_id:
            raise DescriptionError(f"member {d.id!r} is described twice: {by_id[d.id]} and {where}")
        by_id[d.id] = where
        for what, key in (("member key", d.member_key), ("node key", d.node_key)):
            if key is None:
                continue
            if key in by_key:
                raise DescriptionError(
                    f"{where}: its {what} {key[:16]}... is also in {by_key[key]}; every "
                    "organisation makes its own keys (`dvp org init`)"
                )
            by_key[key] = f"{where} ({what})"
        unknown = sorted(set(d.doc_types) - set(chain.doc_types))
        if unknown:
            raise DescriptionError(
                f"{where}: document types {unknown} are not among the chain's "
                f"{sorted(chain.doc_types)} (add them to the template's doc_types)"
            )
    if not any(d.is_validator for _, d in descriptions):
        raise DescriptionError("no description has the validator role: a chain needs one")
    doc = {
        "chain_id": chain.chain_id,
        "genesis_time_ms": chain.genesis_time_ms,
        "members": [
            {
                "id": d.id,
                "name": d.name,
                "key": d.member_key,
                "roles": d.roles,
                "doc_types": d.doc_types,
            }
            for _, d in descriptions
        ],
        "validators": [
            {"member_id": d.id, "node_key": d.node_key} for _, d in descriptions if d.is_validator
        ],
        "doc_types": list(chain.doc_types),
        "params": dict(chain.params),
    }
    if chain.purposes is not None:
        doc["purposes"] = list(chain.purposes)
    try:
        return genesis_from_json(doc)
    except GenesisError as exc:
        raise DescriptionError(str(exc)) from None

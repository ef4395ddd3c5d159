"""The genesis file and template (ledger/genesis.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger.crypto import KeyPair
from ledger.genesis import (
    GenesisError,
    genesis_from_json,
    genesis_from_template,
    genesis_to_json,
    read_genesis,
    read_template,
    write_genesis,
)
from ledger.types import Role

TEMPLATE = Path(__file__).parents[2] / "configs" / "genesis.template.toml"


def _genesis() -> tuple[dict[str, object], object]:
    t = read_template(TEMPLATE)
    ids = [m["id"] for m in t["members"]]
    mk = {i: KeyPair.from_seed(bytes([n + 1]) * 32).public_key for n, i in enumerate(ids)}
    nk = {i: KeyPair.from_seed(bytes([n + 101]) * 32).public_key for n, i in enumerate(ids)}
    return t, genesis_from_template(t, mk, nk, 1_760_000_000_000)


def test_demo_template_makes_the_demo_consortium(tmp_path: Path) -> None:
    _, g = _genesis()
    assert [v.member_id for v in g.validators.validators] == [
        "cnix",
        "hkbank",
        "szcredit",  # type: ignore[attr-defined]
        "webank",
    ]
    members = {m.member_id: m for m in g.members}  # type: ignore[attr-defined]
    assert members["szcredit"].has_role(Role.ISSUER)
    assert members["szcredit"].doc_types == ("bank-statement", "credit-report")
    assert not members["gzfintech"].roles
    write_genesis(tmp_path / "genesis.json", g)  # type: ignore[arg-type]
    assert read_genesis(tmp_path / "genesis.json") == g


def test_edited_genesis_is_refused(tmp_path: Path) -> None:
    _, g = _genesis()
    doc = genesis_to_json(g)  # type: ignore[arg-type]
    doc["members"][0]["name"] = "Someone else"
    with pytest.raises(GenesisError, match="edited after it was made"):
        genesis_from_json(doc)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.update(extra=1), "unknown genesis fields"),
        (lambda d: d["members"][0].update(roles=["king"]), "unknown role"),
        (lambda d: d["members"][0].update(key="zz"), "not hex"),
        (lambda d: d.pop("chain_id"), "missing genesis field"),
        (lambda d: d.update(chain_id="Bad Chain"), "invalid genesis"),
        (
            lambda d: d["validators"].append({"member_id": "ghost", "node_key": "11" * 32}),
            "not a member",
        ),
    ],
)
def test_bad_genesis_says_what_is_wrong(mutate: object, message: str) -> None:
    _, g = _genesis()
    doc = genesis_to_json(g)  # type: ignore[arg-type]
    doc.pop("genesis_hash")
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(GenesisError, match=message):
        genesis_from_json(json.loads(json.dumps(doc)))


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(GenesisError, match="does not exist"):
        read_genesis(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(GenesisError, match="not readable JSON"):
        read_genesis(tmp_path / "bad.json")

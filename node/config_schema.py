"""The node config file's schema (pydantic v2) and its errors as one line each.

Owns the typed model of a node's TOML file (``ConfigFile`` and one model per table) and
``explain``, which turns pydantic's first ``ValidationError`` entry into one line naming
the table, the key, what was expected and what was found, e.g.::

    [rpc] open: expected true or false, got the string "false"
    [rpc] unknown key "opne" (did you mean "open"?)

Rules:
- Strict: no coercion. A string is never a boolean or a number (``open = "false"`` once
  switched a node into open mode), an integer field refuses ``2.0`` and ``true``, a
  float refuses NaN and the infinities.
- Unknown keys and tables are refused, with the nearest known name suggested (difflib).
- Peer and listen addresses are ``host:port`` (``[v6]:port``); p2p hosts must be IP
  literals (the transport dials no names), ports 0-65535 for listeners, 1-65535 for
  peers. ``admin_listen`` must be loopback.
- Bounds come from what the node can use, not from taste: e.g. ``ban_s`` at most a week.
- Pure: no I/O. ``node.config`` reads the file, resolves paths and builds ``NodeConfig``.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic import ValidationError as ValidationError
from pydantic_core import ErrorDetails

from ledger.verify import DEFAULT_MAX_AGE_MS
from node.oneline import one_line

__all__ = ["ConfigFile", "ValidationError", "explain", "first_error", "split_address"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
_MEMBER_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_ROLE = r"^[a-z][a-z0-9_-]{0,31}$"
_SHA256_HEX = r"^[0-9a-f]{64}$"
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")


def split_address(value: str, *, ip_only: bool, min_port: int) -> tuple[str, int]:
    """``"host:port"`` / ``"[v6]:port"`` -> (host without brackets, port); ValueError."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError('expected "host:port"')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    if not min_port <= port <= 65535:
        raise ValueError(f"port {port} is outside {min_port}-65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if ip_only:
            raise ValueError(f"{host!r} is not an IP address (p2p dials no names)") from None
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{host!r} is not a host name or IP address") from None
    return host, port


def _p2p_listen(value: str) -> str:
    split_address(value, ip_only=True, min_port=0)
    return value


def _peer(value: str) -> str:
    split_address(value, ip_only=True, min_port=1)
    return value


def _rpc_listen(value: str) -> str:
    split_address(value, ip_only=False, min_port=0)
    return value


def _loopback(value: str) -> str:
    host, _ = split_address(value, ip_only=False, min_port=0)
    if host not in LOOPBACK:
        raise ValueError(f"{host!r} is not a loopback address (admin methods stay local)")
    return value


def _path(value: str) -> str:
    if not value.strip():
        raise ValueError("expected a path, got an empty string")
    if "\x00" in value:
        raise ValueError("a path cannot contain a NUL character")
    return value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


P2PListen = Annotated[str, AfterValidator(_p2p_listen)]
PeerAddress = Annotated[str, AfterValidator(_peer)]
RpcListen = Annotated[str, AfterValidator(_rpc_listen)]
LoopbackListen = Annotated[str, AfterValidator(_loopback)]
FilePath = Annotated[str, AfterValidator(_path)]
MemberId = Annotated[str, Field(pattern=_MEMBER_ID)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class NodeTable(_Table):
    name: MemberId
    role: Literal["validator", "observer"] = "validator"
    key_file: FilePath
    genesis: FilePath
    data_dir: FilePath
    # /readyz fails while the newest block is older than this (node.health); the
    # verifiers' default limit is 30 s (ledger.verify.DEFAULT_MAX_AGE_MS).
    max_head_age_s: float = Field(DEFAULT_MAX_AGE_MS / 1000, gt=0, le=86_400)
    # An empty store joins from a peer's certified state snapshot (node.state_sync)
    # instead of replaying every block.
    state_sync: bool = False


class P2PTable(_Table):
    listen: P2PListen = "127.0.0.1:0"
    peers: dict[MemberId, PeerAddress] = Field(default_factory=dict)
    penalty_strikes: int = Field(20, ge=1, le=1_000_000)
    ban_s: float = Field(30.0, ge=0, le=7 * 86400)


class Credential(_Table):
    roles: list[Annotated[str, Field(pattern=_ROLE)]] = Field(min_length=1)
    key_sha256: Annotated[str, Field(pattern=_SHA256_HEX)]


class RpcTable(_Table):
    listen: RpcListen = "127.0.0.1:0"
    admin_listen: LoopbackListen | None = None
    open: bool = False
    # GET /metrics needs an API key with the operator role, like the admin methods.
    metrics_auth: bool = False
    tls_cert: FilePath | None = None
    tls_key: FilePath | None = None
    credentials: dict[MemberId, Credential] = Field(default_factory=dict)


class BlockTable(_Table):
    linger_ms: int = Field(50, ge=0, le=10_000)


class MempoolTable(_Table):
    max_txs: int = Field(100_000, ge=1, le=10_000_000)
    client_max_txs: int | None = Field(None, ge=1, le=10_000_000)


class LedgerTable(_Table):
    # 0: an archive node (every block body kept). N: keep the newest N bodies; a peer
    # further behind than N fetches the older blocks from another (archive) peer.
    retain_blocks: int = Field(0, ge=0, le=2**62)


class LogTable(_Table):
    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_lower)
    ] = "info"


class ConfigFile(_Table):
    node: NodeTable
    p2p: P2PTable = Field(default_factory=P2PTable)  # type: ignore[arg-type]
    rpc: RpcTable = Field(default_factory=RpcTable)  # type: ignore[arg-type]
    block: BlockTable = Field(default_factory=BlockTable)  # type: ignore[arg-type]
    mempool: MempoolTable = Field(default_factory=MempoolTable)  # type: ignore[arg-type]
    ledger: LedgerTable = Field(default_factory=LedgerTable)  # type: ignore[arg-type]
    log: LogTable = Field(default_factory=LogTable)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- errors

_EXPECTED = {
    "bool_type": "true or false",
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "list_type": "a list",
    "finite_number": "a finite number",
    "missing": "a value (required)",
}


def _describe(value: Any) -> str:
    """A value as the TOML reader sees it, in a few words."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return "the string " + _quote(shown)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return f"a {type(value).__name__}"


def _quote(text: str) -> str:
    return '"' + one_line(text).replace('"', '\\"') + '"'


def _where(loc: tuple[int | str, ...]) -> str:
    """``("rpc", "credentials", "hkbank", "roles", 0)`` -> ``[rpc.credentials.hkbank] roles[0]``."""
    names = [str(p) for p in loc if isinstance(p, str)]
    if not names:
        return "(top level)"
    key = names[-1] + "".join(f"[{p}]" for p in loc[len(loc) - _trailing_ints(loc) :])
    table = ".".join(names[:-1])
    return f"[{table}] {key}" if table else key


def _trailing_ints(loc: tuple[int | str, ...]) -> int:
    n = 0
    for p in reversed(loc):
        if not isinstance(p, int):
            break
        n += 1
    return n


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The table model that holds the last element of ``loc`` (None: not a model)."""
    model: type[BaseModel] = ConfigFile
    i = 0
    while i < len(loc) - 1:
        field = model.model_fields.get(str(loc[i]))
        if field is None:
            return None
        ann = field.annotation
        for arg in get_args(ann) if get_origin(ann) is not dict else ():
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                ann = arg  # X | None
        if get_origin(ann) is dict:
            ann = get_args(ann)[1]
            i += 1  # skip the table's own key (a member id)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
        i += 1
    return model


def first_error(exc: ValidationError) -> ErrorDetails:
    """The error to show: an unknown key first (a misspelt key also makes the right one
    "missing"), else pydantic's first."""
    errors = exc.errors()
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def _all_keys() -> list[tuple[str, str]]:
    """(table, key) for every key of the schema, for suggestions across tables."""
    out = []
    for table, field in ConfigFile.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            out += [(table, key) for key in model.model_fields]
    return out


def _unknown(loc: tuple[int | str, ...]) -> str:
    name = str(loc[-1])
    model = _model_at(loc)
    known = sorted(model.model_fields) if model else []
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if len(loc) == 1:  # a table
        if close:
            return f"unknown table [{name}] (did you mean [{close[0]}]?)"
        elsewhere = [f"{k} in [{t}]" for t, k in _all_keys() if k.startswith(name.lower() + "_")]
        hint = f"did you mean {' or '.join(elsewhere)}?" if elsewhere else f"known: {known}"
        return f"unknown table [{name}] ({hint})"
    hint = f'did you mean "{close[0]}"?' if close else f"known: {', '.join(known)}"
    return f"[{'.'.join(str(p) for p in loc[:-1])}] unknown key {_quote(name)} ({hint})"


def explain(err: ErrorDetails) -> str:
    """One line for one pydantic error of ``ConfigFile``: where, what was expected, what
    was found (and the nearest known key for an unknown one)."""
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        return one_line(_unknown(loc))
    if loc and loc[-1] == "[key]":  # a table's own key, e.g. a member id in [p2p.peers]
        loc = loc[:-1]
        table = ".".join(str(p) for p in loc[:-1])
        where = f"[{table}] key {_quote(str(loc[-1]))}"
    else:
        where = _where(loc)
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return one_line(f"{where} is required")
    if kind == "value_error":
        return one_line(f"{where}: {ctx.get('error', err['msg'])}, got {_describe(err['input'])}")
    if kind == "literal_error":
        expected = f"one of {ctx.get('expected', '')}"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        expected = f"a value {err['msg'].removeprefix('Input should be ')}"
    elif kind == "string_pattern_mismatch":
        expected = _PATTERN_MEANING.get(str(ctx.get("pattern")), "a different form")
    elif kind == "too_short":
        expected = "at least one entry"
    else:
        expected = _EXPECTED.get(kind, err["msg"].removeprefix("Input should be ").lower())
    return one_line(f"{where}: expected {expected}, got {_describe(err['input'])}")


_PATTERN_MEANING = {
    _MEMBER_ID: "a member id (letters, digits, _ . : -; at most 64)",
    _ROLE: "a lowercase role name (verifier, auditor, operator, member, ...)",
    _SHA256_HEX: "64 lowercase hex characters (from `dvp keys api`)",
}

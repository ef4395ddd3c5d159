"""Node configuration: one TOML file per node, validated into a frozen ``NodeConfig``.

The file is checked against a typed schema (``node.config_schema``, pydantic v2,
strict): unknown keys are refused with the nearest known one suggested, a string is
never a boolean or a number, ports, addresses, log levels and bounds are checked.
Relative paths in the file are relative to the file's own directory, so a config and
its keys/genesis can be moved together. Every problem is reported as one
``ConfigError`` line naming the file, the key and what was expected
(``dvp config check FILE`` prints it without starting anything).

Example (configs/cnix.toml)::

    [node]
    name = "cnix"                    # member id this node belongs to
    role = "validator"               # or "observer" (follows the chain, does not vote)
    key_file = "keys/cnix.node.json" # node key: consensus signatures + libp2p identity
    genesis = "genesis.json"
    data_dir = "data/cnix"
    max_head_age_s = 30              # /readyz fails while the newest block is older
    state_sync = false               # true: an empty store joins from a peer's certified
                                     # state snapshot instead of replaying every block

    [p2p]
    listen = "127.0.0.1:26601"
    [p2p.peers]                      # member id -> address of its node
    szcredit = "127.0.0.1:26602"

    [rpc]
    listen = "127.0.0.1:26701"
    admin_listen = "127.0.0.1:26801" # localhost only
    open = true                      # devnet only: no credentials (logged loudly)
    metrics_auth = true              # GET /metrics needs an operator's API key
    tls_cert = "tls/cert.pem"        # optional: serve HTTPS (both or neither)
    tls_key = "tls/key.pem"
    [rpc.credentials.hkbank]         # API key of a member organisation, stored hashed
    roles = ["verifier"]             # verifier | auditor | operator | member ...
    key_sha256 = "..."               # from `dvp keys api --member hkbank`

    [block]
    linger_ms = 50                   # wait this long for more transactions before cutting
    [mempool]
    max_txs = 100000                 # hard bound (client and gossiped transactions)
    client_max_txs = 16000           # refuse clients (busy) from this many pending;
                                     # default 2 x pipeline_window x max_block_txs
    [ledger]
    retain_blocks = 0                # 0: archive, keep every block body; N: keep the
                                     # newest N (headers, certificates, state stay)
    [log]
    level = "info"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.verify import DEFAULT_MAX_AGE_MS
from node.config_schema import ConfigFile, ValidationError, explain, first_error, split_address
from node.rpc.auth import CredentialStore


class ConfigError(ValueError):
    """A node config that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Address:
    host: str  # an IPv6 literal without brackets
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    name: str
    role: str
    key_file: Path
    genesis: Path
    data_dir: Path
    p2p_listen: Address
    peers: dict[str, Address]
    rpc_listen: Address
    admin_listen: Address | None
    rpc_open: bool
    credentials: dict[str, Any] = field(default_factory=dict)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    linger_ms: int = 50
    mempool_max_txs: int = 100_000
    # None: derived from the chain's block parameters (Node.client_limit).
    mempool_client_max_txs: int | None = None
    log_level: str = "info"
    metrics: bool = True
    # [rpc] metrics_auth: /metrics asks for an API key with the operator role.
    metrics_auth: bool = False
    # [p2p] penalty_strikes / ban_s: offences (undecodable frames, invalid signatures)
    # that ban a peer, and for how long (docs/p2p.md, "Penalties").
    p2p_penalty_strikes: int = 20
    p2p_ban_s: float = 30.0
    # [node] max_head_age_s: /readyz fails while the newest block is older.
    max_head_age_ms: int = DEFAULT_MAX_AGE_MS
    # [ledger] retain_blocks: 0 keeps every block body (an archive node); N > 0 prunes
    # the bodies of blocks more than N below the head (ledger.chain.Ledger.prune_bodies).
    retain_blocks: int = 0
    # [node] state_sync: an empty store joins from a certified snapshot (node.state_sync).
    state_sync: bool = False

    @property
    def is_validator(self) -> bool:
        return self.role == "validator"


def _address(value: str) -> Address:
    # Already validated by the schema; this only splits it.
    host, port = split_address(value, ip_only=False, min_port=0)
    return Address(host, port)


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed file, or one ConfigError line (missing, a directory, unreadable,
    not UTF-8, not TOML)."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_config(path: Path | str) -> NodeConfig:
    path = Path(path).resolve()
    doc = read_toml(path)
    try:
        cf = ConfigFile.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {explain(first_error(exc))}") from None
    base = path.parent
    rpc = cf.rpc
    creds = {m: c.model_dump() for m, c in rpc.credentials.items()}
    try:  # the schema checked each entry; this refuses two members sharing one key
        CredentialStore.from_config(creds)
    except ValueError as exc:
        raise ConfigError(
            f"{path}: [rpc.credentials] {exc} (mint one with `dvp keys api`)"
        ) from None
    if (rpc.tls_cert is None) != (rpc.tls_key is None):
        raise ConfigError(f"{path}: [rpc] TLS needs both tls_cert and tls_key (PEM files)")
    for key, value in (("tls_cert", rpc.tls_cert), ("tls_key", rpc.tls_key)):
        if value is not None and not (base / value).is_file():
            raise ConfigError(f"{path}: [rpc] {key}: {value!r} is not a readable file")

    listens = [("[p2p] listen", cf.p2p.listen), ("[rpc] listen", rpc.listen)]
    listens += [("[rpc] admin_listen", rpc.admin_listen)] if rpc.admin_listen else []
    ports: dict[int, str] = {}
    for where, value in listens:
        port = _address(value).port
        if port and port in ports:
            raise ConfigError(f"{path}: {where} {value}: port {port} is also {ports[port]}'s")
        ports[port] = where

    def rel(value: str) -> Path:
        return (base / value).resolve()

    return NodeConfig(
        path=path,
        name=cf.node.name,
        role=cf.node.role,
        key_file=rel(cf.node.key_file),
        genesis=rel(cf.node.genesis),
        data_dir=rel(cf.node.data_dir),
        p2p_listen=_address(cf.p2p.listen),
        peers={k: _address(v) for k, v in cf.p2p.peers.items()},
        rpc_listen=_address(rpc.listen),
        admin_listen=None if rpc.admin_listen is None else _address(rpc.admin_listen),
        rpc_open=rpc.open,
        credentials=creds,
        tls_cert=None if rpc.tls_cert is None else rel(rpc.tls_cert),
        tls_key=None if rpc.tls_key is None else rel(rpc.tls_key),
        linger_ms=cf.block.linger_ms,
        mempool_max_txs=cf.mempool.max_txs,
        mempool_client_max_txs=cf.mempool.client_max_txs,
        log_level=cf.log.level,
        metrics_auth=rpc.metrics_auth,
        p2p_penalty_strikes=cf.p2p.penalty_strikes,
        p2p_ban_s=cf.p2p.ban_s,
        max_head_age_ms=round(cf.node.max_head_age_s * 1000),
        retain_blocks=cf.ledger.retain_blocks,
        state_sync=cf.node.state_sync,
    )

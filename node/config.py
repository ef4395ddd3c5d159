"""Node configuration: one TOML file per node, validated into a frozen ``NodeConfig``.

Relative paths in the file are relative to the file's own directory, so a config and
its keys/genesis can be moved together. Every problem is reported as one
``ConfigError`` line naming the file, the key and what to do.

Example (configs/cnix.toml)::

    [node]
    name = "cnix"                    # member id this node belongs to
    role = "validator"               # or "observer" (follows the chain, does not vote)
    key_file = "keys/cnix.node.json" # node key: consensus signatures + libp2p identity
    genesis = "genesis.json"
    data_dir = "data/cnix"

    [p2p]
    listen = "127.0.0.1:26601"
    [p2p.peers]                      # member id -> address of its node
    szcredit = "127.0.0.1:26602"

    [rpc]
    listen = "127.0.0.1:26701"
    admin_listen = "127.0.0.1:26801" # localhost only
    open = true                      # devnet only: no credentials (logged loudly)
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
    [log]
    level = "info"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.rpc.auth import CredentialStore

ROLES = ("validator", "observer")


class ConfigError(ValueError):
    """A node config that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


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
    # [p2p] penalty_strikes / ban_s: offences (undecodable frames, invalid signatures)
    # that ban a peer, and for how long (docs/p2p.md, "Penalties").
    p2p_penalty_strikes: int = 20
    p2p_ban_s: float = 30.0

    @property
    def is_validator(self) -> bool:
        return self.role == "validator"


def parse_address(value: Any, where: str) -> Address:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f'{where}: expected "host:port", got {value!r}')
    host, _, port = value.rpartition(":")
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"{where}: port {port!r} is not a number") from None
    if not 0 <= p <= 65535 or not host:
        raise ConfigError(f"{where}: {value!r} is not a valid host:port")
    return Address(host, p)


def load_config(path: Path | str) -> NodeConfig:
    path = Path(path).resolve()
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    base = path.parent

    def section(name: str) -> dict[str, Any]:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        return value

    known = {"node", "p2p", "rpc", "block", "mempool", "log"}
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(f"{path}: unknown sections {sorted(unknown)} (known: {sorted(known)})")
    node, p2p, rpc = section("node"), section("p2p"), section("rpc")
    for key in ("name", "key_file", "genesis", "data_dir"):
        if not isinstance(node.get(key), str):
            raise ConfigError(f"{path}: [node] {key} is required (a string)")
    role = node.get("role", "validator")
    if role not in ROLES:
        raise ConfigError(f"{path}: [node] role must be one of {ROLES}, got {role!r}")
    peers_raw = p2p.get("peers", {})
    if not isinstance(peers_raw, dict):
        raise ConfigError(f'{path}: [p2p.peers] must be a table of member id = "host:port"')
    peers = {k: parse_address(v, f"{path}: [p2p.peers] {k}") for k, v in peers_raw.items()}
    admin = rpc.get("admin_listen")
    admin_addr = parse_address(admin, f"{path}: [rpc] admin_listen") if admin else None
    if admin_addr is not None and admin_addr.host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"{path}: [rpc] admin_listen must be a loopback address")
    creds = rpc.get("credentials", {})
    if not isinstance(creds, dict):
        raise ConfigError(f"{path}: [rpc.credentials] must be a table")
    try:  # refuse a bad entry now, not when the RPC server starts
        CredentialStore.from_config(creds)
    except ValueError as exc:
        raise ConfigError(
            f"{path}: [rpc.credentials] {exc} (mint one with `dvp keys api`)"
        ) from None
    if ("tls_cert" in rpc) != ("tls_key" in rpc):
        raise ConfigError(f"{path}: [rpc] TLS needs both tls_cert and tls_key (PEM files)")

    def rel(value: str | None) -> Path | None:
        return None if value is None else (base / value).resolve()

    for key in ("tls_cert", "tls_key"):
        if key in rpc and not (isinstance(rpc[key], str) and (base / rpc[key]).is_file()):
            raise ConfigError(f"{path}: [rpc] {key}: {rpc[key]!r} is not a readable file")
    client_max = section("mempool").get("client_max_txs")
    if client_max is not None and (
        not isinstance(client_max, int) or isinstance(client_max, bool) or client_max < 1
    ):
        raise ConfigError(f"{path}: [mempool] client_max_txs must be a positive integer")
    try:
        return NodeConfig(
            path=path,
            name=node["name"],
            role=role,
            key_file=rel(node["key_file"]),  # type: ignore[arg-type]
            genesis=rel(node["genesis"]),  # type: ignore[arg-type]
            data_dir=rel(node["data_dir"]),  # type: ignore[arg-type]
            p2p_listen=parse_address(p2p.get("listen", "127.0.0.1:0"), f"{path}: [p2p] listen"),
            peers=peers,
            rpc_listen=parse_address(rpc.get("listen", "127.0.0.1:0"), f"{path}: [rpc] listen"),
            admin_listen=admin_addr,
            rpc_open=bool(rpc.get("open", False)),
            credentials=creds,
            tls_cert=rel(rpc.get("tls_cert")),
            tls_key=rel(rpc.get("tls_key")),
            linger_ms=int(section("block").get("linger_ms", 50)),
            mempool_max_txs=int(section("mempool").get("max_txs", 100_000)),
            mempool_client_max_txs=None if client_max is None else int(client_max),
            log_level=str(section("log").get("level", "info")),
            p2p_penalty_strikes=int(p2p.get("penalty_strikes", 20)),
            p2p_ban_s=float(p2p.get("ban_s", 30.0)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None

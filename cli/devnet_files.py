"""Creates a devnet's files: the key ceremony of docs/OPERATIONS.md played by one
operator for every organisation, with all their files in one folder.

Layout of DIR::

    genesis.json
    <member>.member-description.json  what each organisation exported (public)
    keys/<member>.member.json     member (organisation) keys: sign transactions
    keys/<member>.node.json       node keys: consensus signatures + p2p identity
    nodes/<name>.toml             node configs (paths relative to the config)
    data/<name>/                  ledger and consensus databases, node.log, node.pid
    devnet.json                   what `dvp devnet status` reads: nodes, ports

The steps are ``cli.testnet.create_network``'s, the same as ``dvp testnet`` (which
gives each organisation its own folder instead). Validators are the template's
members with the validator role (the first ``nodes`` of them); observers are extra
nodes named ``observer-N`` that follow the chain under the key of the member
``observer_member`` (a member key may run observers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cli.network_index import DevnetError, NodeEntry, free_ports, load_devnet
from cli.testnet import DEFAULT_TEMPLATE, create_network

__all__ = [
    "DEFAULT_TEMPLATE",
    "DevnetError",
    "NodeEntry",
    "create_devnet",
    "free_ports",
    "load_devnet",
]


def create_devnet(
    root: Path,
    *,
    nodes: int = 4,
    observers: int = 0,
    template: Path = DEFAULT_TEMPLATE,
    params: dict[str, Any] | None = None,
    observer_member: str = "hkbank",
) -> list[NodeEntry]:
    """Write a fresh devnet into ``root`` (which must not hold one yet)."""
    return create_network(
        root,
        validators=nodes,
        observers=observers,
        template=template,
        params=params,
        observer_member=observer_member,
        per_org=False,
    )

"""Test harness: devnet nodes in one trio run (in-memory transport), real RPC over HTTP.

``run_nodes(root, client, nodes=1, rpc=...)`` writes a devnet with ``create_devnet``,
rewrites each node's ``[rpc]`` section (credentials, admin listener, TLS, open mode),
starts the nodes, waits for the first commit, then runs ``client(nodes)`` in a worker
thread, where it talks to ``node.rpc_ports`` over real sockets with any HTTP client.
Code in the thread that must touch a node uses ``trio.from_thread.run_sync``.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from cli.devnet_files import create_devnet, free_ports
from node.config import load_config
from node.node import Node
from node.transport import MemoryHub
from tests.support.cluster import transport_factory, wait_until

JSON = {"Content-Type": "application/json"}


def rpc_section(
    *,
    open_mode: bool,
    credentials: dict[str, tuple[list[str], str]] | None = None,
    admin: bool = False,
    tls: tuple[Path, Path] | None = None,
) -> str:
    """The lines to put after ``listen`` in ``[rpc]``: credentials are (roles, key_sha256)."""
    lines = [f"open = {'true' if open_mode else 'false'}"]
    if admin:
        lines.append(f'admin_listen = "127.0.0.1:{free_ports(1)[0]}"')
    if tls is not None:
        lines += [f'tls_cert = "{tls[0]}"', f'tls_key = "{tls[1]}"']
    for member, (roles, digest) in (credentials or {}).items():
        lines += [
            "",
            f"[rpc.credentials.{member}]",
            f"roles = {json.dumps(roles)}",
            f'key_sha256 = "{digest}"',
        ]
    return "\n".join(lines) + "\n"


def run_nodes(
    root: Path,
    client: Callable[[list[Node]], Any],
    *,
    nodes: int = 1,
    rpc: str | None = None,
    timeout_s: float = 90.0,
) -> Any:
    """Run ``client(nodes)`` in a thread against freshly started nodes; return its result."""
    entries = create_devnet(root, nodes=nodes, params={"heartbeat_ms": 200})
    if rpc is not None:
        for e in entries:
            text = e.config.read_text()
            text, n = re.subn(r"^open = true.*$", rpc.rstrip("\n"), text, flags=re.M)
            assert n == 1, "create_devnet's [rpc] section changed; update this harness"
            e.config.write_text(text)
    result: list[Any] = []

    async def main() -> None:
        hub = MemoryHub()
        ns = [Node(load_config(e.config), transport_factory(hub)) for e in entries]
        async with trio.open_nursery() as nursery:
            for n in ns:
                await nursery.start(n.run)
            with trio.fail_after(timeout_s):
                await wait_until(
                    lambda: min(n.ledger.height for n in ns) >= 1,
                    "the first commit",
                    timeout_s=timeout_s,
                )
                result.append(await trio.to_thread.run_sync(client, ns))
            nursery.cancel_scope.cancel()

    trio.run(main)
    return result[0]


def call(
    port: int,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    key: str | None = None,
    tls: Any = None,
) -> dict[str, Any]:
    """One JSON-RPC call over a fresh ``http.client`` connection; the response object."""
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=20, context=tls)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    headers = dict(JSON)
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    try:
        conn.request("POST", "/", json.dumps(body), headers)
        response = conn.getresponse()
        assert response.status == 200, response.status
        doc: dict[str, Any] = json.loads(response.read())
        return doc
    finally:
        conn.close()


def error_code(doc: dict[str, Any]) -> int | None:
    return doc["error"]["code"] if "error" in doc else None

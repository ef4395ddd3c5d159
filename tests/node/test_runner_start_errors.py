"""`dvp node run` refuses to start in one line when it cannot listen (node/runner.py):
the ports are tried before anything starts, and a listener that fails later (a port
taken in between) is found inside trio's exception groups."""

from __future__ import annotations

import dataclasses
import errno
import socket
from pathlib import Path

from cli.devnet_files import create_devnet
from ledger.errors import StoreDamage
from node.config import Address, NodeConfig, load_config
from node.runner import EXIT_STORE_DAMAGED, _start_error, listen_problem
from p2p.config import P2PError


def _config(tmp_path: Path) -> NodeConfig:
    return load_config(create_devnet(tmp_path / "net", nodes=1)[0].config)


def test_listen_problem_names_the_taken_address(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert listen_problem(cfg) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for field, where in (
            ("p2p_listen", "[p2p] listen"),
            ("rpc_listen", "[rpc] listen"),
            ("admin_listen", "[rpc] admin_listen"),
        ):
            bad = dataclasses.replace(cfg, **{field: Address("127.0.0.1", port)})
            problem = listen_problem(bad)
            assert problem == (
                f"{cfg.path}: {where} 127.0.0.1:{port}: cannot listen: Address already in "
                "use (another process holds it: stop it, or choose another port)"
            )
    assert listen_problem(dataclasses.replace(cfg, rpc_listen=Address("127.0.0.1", 0))) is None


def test_start_errors_are_found_inside_exception_groups(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    in_use = OSError(errno.EADDRINUSE, "Address already in use")
    nested = BaseExceptionGroup("node", [ExceptionGroup("hypercorn", [in_use])])
    assert _start_error(cfg, nested) == (
        f"{cfg.path}: [rpc] listen: cannot listen: Address already in use "
        "(another process holds it: stop it, or choose another port)",
        2,
    )
    p2p = ExceptionGroup("node", [P2PError("cannot listen on 127.0.0.1:5 (address in use)")])
    assert _start_error(cfg, p2p) == (
        f"{cfg.path}: [p2p] cannot listen on 127.0.0.1:5 (address in use)",
        2,
    )
    denied = PermissionError(errno.EACCES, "Permission denied", "/data/x")
    assert _start_error(cfg, ExceptionGroup("node", [denied])) == ("/data/x: Permission denied", 2)
    damage = ExceptionGroup("node", [StoreDamage("ledger: block 3 is corrupt")])
    assert _start_error(cfg, damage) == ("ledger: block 3 is corrupt", EXIT_STORE_DAMAGED)
    assert _start_error(cfg, ExceptionGroup("node", [ValueError("a bug")])) is None

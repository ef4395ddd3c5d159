"""/metrics: the standard process_* series, an API key like the RPC's when configured
(``[rpc] metrics_auth``), and the open-mode warning as a JSON log line."""

from __future__ import annotations

import http.client
import io
import json
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from node.admin import ADMIN_ROLES
from node.config import load_config
from node.logs import JsonFormatter
from node.metrics import NodeMetrics
from node.rpc.auth import CredentialStore, generate_api_key
from node.rpc.http import make_app
from tests.node.http_support import in_thread, make_registry, with_server

OPERATOR, VERIFIER = generate_api_key(), generate_api_key()
CREDENTIALS = {
    "cnix": {"roles": ["operator"], "key_sha256": OPERATOR.key_sha256},
    "hkbank": {"roles": ["verifier"], "key_sha256": VERIFIER.key_sha256},
}


def test_node_metrics_have_the_process_series() -> None:
    text = generate_latest(NodeMetrics().registry).decode()
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ):
        assert f"\n{name} " in text, name


def _get(port: int, key: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        conn.request("GET", "/metrics", headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_metrics_can_require_an_operator_key() -> None:
    metrics = CollectorRegistry()
    app = make_app(
        make_registry(),
        CredentialStore.from_config(CREDENTIALS),
        metrics,
        metrics_roles=ADMIN_ROLES,
    )

    async def client(port: int) -> None:
        def talk() -> None:
            status, body = _get(port, None)
            assert status == 401
            assert "metrics require an API key with role operator" in json.loads(body)["error"]
            status, body = _get(port, VERIFIER.key)
            assert status == 403
            assert json.loads(body)["error"] == "metrics require role operator; hkbank has verifier"
            status, body = _get(port, "dvp_not-a-key")
            assert status == 401 and json.loads(body)["error"] == "unknown API key"
            status, body = _get(port, OPERATOR.key)
            assert status == 200 and b"dvp_http_requests_total" in body

        await in_thread(talk)

    with_server(client, app)
    counted = {"path": "/metrics", "status": "401"}
    assert metrics.get_sample_value("dvp_http_requests_total", counted) == 2


def test_metrics_stay_public_unless_configured_and_open_mode_lets_everyone_in() -> None:
    for app in (
        make_app(make_registry(), CredentialStore.from_config(CREDENTIALS), CollectorRegistry()),
        make_app(
            make_registry(),
            CredentialStore.open_mode(),
            CollectorRegistry(),
            metrics_roles=ADMIN_ROLES,
        ),
    ):

        async def client(port: int) -> None:
            assert (await in_thread(lambda: _get(port, None)))[0] == 200

        with_server(client, app)


def test_metrics_auth_is_a_config_key(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    base = '[node]\nname = "cnix"\nkey_file = "k"\ngenesis = "g"\ndata_dir = "d"\n[rpc]\n'
    path.write_text(base + "metrics_auth = true\n")
    assert load_config(path).metrics_auth is True
    path.write_text(base)
    assert load_config(path).metrics_auth is False


def test_the_open_mode_warning_is_a_json_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("dvp.http")
    logger.addHandler(handler)
    try:
        app = make_app(make_registry(), CredentialStore.open_mode(), CollectorRegistry())

        async def client(port: int) -> None:
            pass

        with_server(client, app)
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    warning = next(d for d in lines if "OPEN MODE" in d["msg"])
    assert warning["level"] == "warning" and warning["logger"] == "dvp.http"
    assert warning["listen"].startswith("127.0.0.1:")

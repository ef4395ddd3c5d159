"""The deployment files of configs/deploy/ refer only to what exists (docs/DEPLOYMENT.md).

They cannot run here (no systemd as PID 1, no container engine, no Prometheus or
Grafana), so this checks what they name against the code: the ``dvp`` command lines
parse with the real argument parser; the example node config validates with the schema;
ports, the data directory and the config path agree across the files; the unit's
no-restart exit statuses are the ones ``dvp node run`` returns; every metric (and label)
in the alerting rules and the dashboard is one a running node serves, read from a real
scrape of an in-process node; the image's health check command, run as written, passes
against a ready node and fails against an unready one; and the unit's
MemoryDenyWriteExecute=yes holds for a real node under the kernel's equivalent.
"""

from __future__ import annotations

import http.client
import json
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from setuptools import find_packages

from cli.devnet_files import create_devnet
from cli.main import build_parser, cmd_node_run
from ledger.keyfile import ENV_PASSPHRASE_FILE
from node.config import load_config
from node.config_schema import ConfigFile
from node.rpc.auth import CredentialStore
from node.rpc.http import _GET_ROUTES, make_app
from node.runner import EXIT_STORE_DAMAGED, EXIT_UPGRADE_REQUIRED, run_node
from tests.node.http_support import in_thread, make_registry, with_server
from tests.support.rpc_node import call, run_nodes

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "configs" / "deploy"
UNIT = DEPLOY / "dvp-node.service"
CONTAINERFILE = DEPLOY / "Containerfile"
NODE_TOML = DEPLOY / "node.toml"
PROMETHEUS = DEPLOY / "prometheus.yml"
ALERTS = DEPLOY / "dvp-alerts.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
#: Where the unit and the image expect configs/deploy/node.toml to be installed.
CONFIG_PATH = "/etc/dvp/node.toml"
#: Series Prometheus itself adds to every target.
PROMETHEUS_SERIES = {"up"}


# ------------------------------------------------------------------ the example config


@dataclass(frozen=True)
class Deployed:
    name: str
    peers: dict[str, str]
    p2p_port: int
    rpc_port: int
    data_dir: str
    metrics_auth: bool
    max_head_age_s: float


def deployed() -> Deployed:
    doc = tomllib.loads(NODE_TOML.read_text())
    cfg = ConfigFile.model_validate(doc)  # the schema, strictly (a ValidationError fails)
    return Deployed(
        name=cfg.node.name,
        peers=dict(cfg.p2p.peers),
        p2p_port=int(cfg.p2p.listen.rpartition(":")[2]),
        rpc_port=int(cfg.rpc.listen.rpartition(":")[2]),
        data_dir=cfg.node.data_dir,
        metrics_auth=cfg.rpc.metrics_auth,
        max_head_age_s=cfg.node.max_head_age_s,
    )


def test_the_example_node_config_loads_and_uses_cnix_ports() -> None:
    cfg = load_config(NODE_TOML)  # the node's own loader: schema, paths, port clashes
    d = deployed()
    assert str(cfg.data_dir) == d.data_dir == "/var/lib/dvp"
    assert cfg.is_validator
    # The same member's ports as in the shipped four-node configs (configs/README.md).
    shipped = ConfigFile.model_validate(tomllib.loads((ROOT / "configs" / "cnix.toml").read_text()))
    assert d.name == shipped.node.name
    assert d.p2p_port == int(shipped.p2p.listen.rpartition(":")[2])
    assert d.rpc_port == int(shipped.rpc.listen.rpartition(":")[2])
    assert set(d.peers) == set(shipped.p2p.peers)


# ------------------------------------------------------------------ dvp command lines


def parse_dvp(argv: list[str]) -> Any:
    """``argv`` (without the program) through the real parser; a usage error fails."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"dvp {' '.join(argv)}: refused by the argument parser (exit {exc.code})")


def test_parse_dvp_refuses_a_misspelt_flag() -> None:
    with pytest.raises(pytest.fail.Exception):
        parse_dvp(["node", "run", "--conifg", CONFIG_PATH])


def node_run_config(argv: list[str]) -> str:
    args = parse_dvp(argv)
    assert args.fn is cmd_node_run, argv
    return str(args.config)


# ------------------------------------------------------------------ the systemd unit


def read_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]}: repeated keys kept in order, line
    continuations joined, comments dropped (what configparser cannot do)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    text = re.sub(r"\\\n", " ", path.read_text())
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}:{n}: not a key=value line: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def one(section: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in section if k == key]
    assert len(values) == 1, f"{key}: expected once, found {values}"
    return values[0]


def test_the_unit_runs_the_node_with_the_deployed_config() -> None:
    unit = read_unit(UNIT)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    argv = shlex.split(one(service, "ExecStart"))
    assert Path(argv[0]).name in _scripts()
    assert node_run_config(argv[1:]) == CONFIG_PATH
    state = one(service, "StateDirectory")
    assert f"/var/lib/{state}" == deployed().data_dir
    assert one(service, "ConfigurationDirectory") == Path(CONFIG_PATH).parent.name


def test_the_unit_restarts_only_when_a_restart_can_help(tmp_path: Path) -> None:
    service = read_unit(UNIT)["Service"]
    assert one(service, "Restart") == "on-failure"
    assert int(one(service, "RestartSec")) >= 1
    unit = read_unit(UNIT)["Unit"]
    assert int(one(unit, "StartLimitBurst")) >= 1
    prevent = {int(s) for s in one(service, "RestartPreventExitStatus").split()}
    # 2 is what `dvp node run` returns for a config it cannot use: see it do so.
    bad = tmp_path / "node.toml"
    bad.write_text('[node]\nname = "cnix"\nkey_file = "k"\ngenesis = "g"\ndata_dir = "d"\nx = 1\n')
    assert run_node(bad) == 2
    assert prevent == {2, EXIT_STORE_DAMAGED, EXIT_UPGRADE_REQUIRED}
    assert int(one(service, "LimitNOFILE")) >= 4096


def test_the_unit_passes_the_key_passphrase_as_a_credential() -> None:
    service = read_unit(UNIT)["Service"]
    credential, _, source = one(service, "LoadCredential").partition(":")
    assert source.startswith("/etc/dvp/")
    env = dict(shlex.split(v)[0].split("=", 1) for k, v in service if k == "Environment")
    assert env == {ENV_PASSPHRASE_FILE: f"%d/{credential}"}


SANDBOX = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
}


def test_the_unit_is_sandboxed() -> None:
    service = read_unit(UNIT)["Service"]
    for key, value in SANDBOX.items():
        assert one(service, key) == value, key
    assert one(service, "User") not in ("root", "0")
    families = set(one(service, "RestrictAddressFamilies").split())
    assert {"AF_INET", "AF_INET6"} <= families and "AF_PACKET" not in families
    filters = [v for k, v in service if k == "SystemCallFilter"]
    assert filters[0] == "@system-service"
    # The node lowers its LevelDB thread's priority (setpriority, in @resources).
    assert not any("@resources" in f for f in filters[1:])


# ------------------------------------------------------------------ the Containerfile


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [arg for ins, arg in self.instructions if ins == name]


def read_containerfile() -> list[Stage]:
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        ins, _, arg = line.partition(" ")
        if ins.upper() == "FROM":
            stages.append(Stage(arg.split()[0]))
        else:
            assert stages, "an instruction before FROM"
            stages[-1].instructions.append((ins.upper(), arg.strip()))
    return stages


def _scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def test_the_image_builds_from_files_that_exist() -> None:
    build, run = read_containerfile()
    assert build.base == run.base == "python:3.11-slim"
    copied: set[str] = set()
    for arg in build.all("COPY"):
        *sources, _dest = arg.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            copied.add(src)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    packages = set(find_packages(str(ROOT), include=find["include"]))
    assert {p.split(".")[0] for p in packages} <= copied
    # Every package directory ends up in the wheel (a plain list once left node.rpc out).
    on_disk = {
        str(init.parent.relative_to(ROOT)).replace("/", ".")
        for top in {p.split(".")[0] for p in packages}
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk == packages


def test_the_image_runs_dvp_as_a_fixed_non_root_user() -> None:
    _, run = read_containerfile()
    (user,) = run.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid == uid
    assert any(f"--uid {uid}" in r and f"--gid {gid}" in r for r in run.all("RUN"))
    assert json.loads(run.all("VOLUME")[0]) == [deployed().data_dir]
    d = deployed()
    assert {int(p) for e in run.all("EXPOSE") for p in e.split()} == {d.p2p_port, d.rpc_port}
    (entry,) = run.all("ENTRYPOINT")
    (cmd,) = run.all("CMD")
    argv = json.loads(entry) + json.loads(cmd)
    assert argv[0] in _scripts()
    assert node_run_config(argv[1:]) == CONFIG_PATH


def healthcheck_argv() -> list[str]:
    _, run = read_containerfile()
    (check,) = run.all("HEALTHCHECK")
    assert "CMD [" in check, "exec form: no shell needed in the image"
    argv: list[str] = json.loads(check[check.index("CMD") + 3 :])
    assert argv[0] == "python"
    return argv


def test_the_health_check_asks_readyz_on_the_rpc_port() -> None:
    code = healthcheck_argv()[-1]
    (url,) = re.findall(r"'(https?://[^']+)'", code)
    parts = urllib.parse.urlsplit(url)
    assert parts.port == deployed().rpc_port
    assert parts.path == "/readyz" and parts.path in _GET_ROUTES


def run_healthcheck(port: int) -> int:
    """The image's health check command as written, pointed at ``port``."""
    argv = healthcheck_argv()
    code = argv[-1].replace(f":{deployed().rpc_port}/", f":{port}/")
    assert code != argv[-1]
    done = subprocess.run([sys.executable, *argv[1:-1], code], capture_output=True, timeout=30)
    return done.returncode


@pytest.mark.processes
def test_the_health_check_fails_on_an_unready_node() -> None:
    app = make_app(
        make_registry(),
        CredentialStore.open_mode(),
        CollectorRegistry(),
        health=lambda: {"status": "unready", "failing": ["peers"]},
    )
    codes: list[int] = []

    async def client(port: int) -> None:
        codes.append(await in_thread(lambda: run_healthcheck(port)))

    with_server(client, app)
    assert codes[0] != 0


# ------------------------------------------------------------------ metrics of a real node


@dataclass(frozen=True)
class Scrape:
    series: dict[str, set[str]]  # every series name a node serves -> its label names
    health_check_status: int


SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def exported_series(text: str) -> dict[str, set[str]]:
    """Series names of a Prometheus text scrape, including those of families without
    samples (a labelled counter nothing has incremented yet), with their label names
    (only known where samples exist)."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES.get(family.type, ("",)):
            series.setdefault(family.name + suffix, set())
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Scrape:
    def client(nodes: list[Any]) -> Scrape:
        port = nodes[0].rpc_ports["rpc"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            conn.request("GET", "/readyz")
            ready = conn.getresponse()
            ready.read()
            assert ready.status == 200
            assert "result" in call(port, "status")  # so the RPC series have samples
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        return Scrape(exported_series(text), run_healthcheck(port))

    result: Scrape = run_nodes(tmp_path_factory.mktemp("node"), client)
    return result


@pytest.mark.processes
def test_the_health_check_passes_on_a_ready_node(scrape: Scrape) -> None:
    assert scrape.health_check_status == 0


KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"


def series_in(expr: str) -> dict[str, set[str]]:
    """The series a PromQL expression selects, with the label names its matchers use,
    and under "" the label names it groups by."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors ([5m], [$__rate_interval])
    found: dict[str, set[str]] = {"": set()}
    for labels in re.findall(GROUPING, expr):
        found[""].update(x.strip() for x in labels.split(",") if x.strip())
    expr = re.sub(GROUPING, " ", expr)
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", expr):
        name, matchers, call_ = m.groups()
        if call_ and not matchers or name.lower() in KEYWORDS:
            continue  # a function (or an aggregation) or an operator
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers or ""))
        found.setdefault(name, set()).update(labels)
    return found


def problems(expr: str, exported: dict[str, set[str]], target_labels: set[str]) -> list[str]:
    """What in ``expr`` a node does not serve: unknown series, unknown label names."""
    out = []
    used = series_in(expr)
    grouped = used.pop("")
    known_labels = set(target_labels) | {"le"}
    for name, labels in used.items():
        if name in PROMETHEUS_SERIES:
            continue
        if name not in exported:
            out.append(f"unknown metric {name}")
            continue
        known_labels |= exported[name]
        if exported[name]:  # label names are known only where the scrape had samples
            out += [f"{name} has no label {x}" for x in labels - exported[name] - target_labels]
    if all(exported.get(n) for n in used if n not in PROMETHEUS_SERIES):
        out += [f"no label {x} to group by" for x in grouped - known_labels]
    return out


def test_the_metric_check_can_fail(scrape: Scrape) -> None:
    labels = {"job", "instance", "member"}
    assert problems("rate(dvp_comitted_txs_total[5m])", scrape.series, labels) == [
        "unknown metric dvp_comitted_txs_total"
    ]
    assert problems("dvp_view_changes > 3", scrape.series, labels) == [
        "unknown metric dvp_view_changes"  # a counter is served as ..._total
    ]
    assert problems('sum by (metod) (dvp_rpc_calls_total{outcome="ok"})', scrape.series, labels)
    assert problems('sum by (method) (dvp_rpc_calls_total{outcom="ok"})', scrape.series, labels)
    assert not problems(
        "histogram_quantile(0.99, sum by (le, method) (rate(dvp_rpc_call_duration_seconds_bucket"
        '{job="$job"}[$__rate_interval]))) > bool 1 and on (instance) up == 1',
        scrape.series,
        labels,
    )


# ------------------------------------------------------------------ Prometheus


def prometheus_job() -> dict[str, Any]:
    doc = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = doc["scrape_configs"]
    assert isinstance(job, dict)
    return job


def target_labels() -> set[str]:
    job = prometheus_job()
    return {"job", "instance"} | {k for sc in job["static_configs"] for k in sc.get("labels", {})}


def test_prometheus_scrapes_the_four_validators() -> None:
    doc = yaml.safe_load(PROMETHEUS.read_text())
    for rules in doc["rule_files"]:
        assert (DEPLOY / rules).is_file(), rules
    job = prometheus_job()
    assert job["metrics_path"] == "/metrics" and job["metrics_path"] in _GET_ROUTES
    d = deployed()
    members, ports = set(), set()
    for sc in job["static_configs"]:
        (target,) = sc["targets"]
        ports.add(int(target.rpartition(":")[2]))
        members.add(sc["labels"]["member"])
    assert ports == {d.rpc_port}
    assert members == {d.name, *d.peers}
    # An API key is sent exactly when the node wants one for /metrics.
    auth = job.get("authorization")
    assert (auth is not None) == d.metrics_auth
    if auth is not None:
        assert auth["type"] == "Bearer" and auth["credentials_file"].startswith("/")


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_the_alerts_use_only_metrics_the_node_serves(scrape: Scrape) -> None:
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    job = prometheus_job()["job_name"]
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert problems(rule["expr"], scrape.series, target_labels()) == [], rule["alert"]
        for value in re.findall(r'\bjob="([^"]*)"', rule["expr"]):
            assert value == job, rule["alert"]
    # The head-age alert fires where /readyz starts failing.
    (head_age,) = [r for r in rules if "dvp_head_age_seconds" in r["expr"]]
    assert float(head_age["expr"].split(">")[1]) == deployed().max_head_age_s


# ------------------------------------------------------------------ Grafana


def dashboard_queries(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            (inner,) = re.findall(r"^label_values\((.*),\s*\w+\)$", var["definition"])
            yield f"${var['name']}", inner


def test_the_dashboard_is_a_grafana_model_over_served_metrics(scrape: Scrape) -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and isinstance(doc["schemaVersion"], int)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in doc["templating"]["list"]}
    for panel in doc["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("timeseries", "stat"), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
    queries = list(dashboard_queries(doc))
    wanted = {"dvp_committed_txs_total", "dvp_head_age_seconds", "dvp_view_changes_total",
              "dvp_mempool_txs", "dvp_peers", "dvp_rpc_call_duration_seconds_bucket",
              "process_cpu_seconds_total", "process_resident_memory_bytes"}  # fmt: skip
    assert wanted <= {n for _, q in queries for n in series_in(q) if n}
    for where, query in queries:
        for var in re.findall(r"\$(\w+)", query):
            assert var in variables or var.startswith("__"), f"{where}: ${var}"
        assert problems(query, scrape.series, target_labels()) == [], where


# ------------------------------------------------------------------ docs


def test_deployment_doc_covers_every_file() -> None:
    doc = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    for path in DEPLOY.iterdir():
        assert f"configs/deploy/{path.name}" in doc, path.name


# ------------------------------------------------------------------ MemoryDenyWriteExecute

#: prctl(PR_SET_MDWE = 65, PR_MDWE_REFUSE_EXEC_GAIN = 1): kept across fork and exec.
SET_MDWE = "ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0)"
UNDER_MDWE = f"""
import ctypes, os, sys
if {SET_MDWE} != 0:
    sys.exit(99)
os.execv(sys.executable, [sys.executable, "-m", "cli.main", *sys.argv[1:]])
"""


@pytest.mark.processes
def test_a_node_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """The kernel's PR_SET_MDWE refuses writable+executable memory, like the unit's
    MemoryDenyWriteExecute=yes (a seccomp filter): the node must start, report ready
    and stop cleanly under it."""
    probe = f"import ctypes, sys; sys.exit({SET_MDWE} != 0)"
    if subprocess.run([sys.executable, "-c", probe], timeout=30).returncode != 0:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3)")
    (entry,) = create_devnet(tmp_path, nodes=1, params={"heartbeat_ms": 200})
    port = load_config(entry.config).rpc_listen.port
    log = tmp_path / "node.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", UNDER_MDWE, "node", "run", "--config", str(entry.config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and proc.poll() is None and status != 200:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/readyz")
                status = conn.getresponse().status
                conn.close()
            except OSError:
                pass
            if status != 200:
                time.sleep(0.2)
        assert status == 200, f"exit {proc.poll()}: {log.read_text()[-2000:]}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

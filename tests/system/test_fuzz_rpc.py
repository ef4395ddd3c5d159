"""Bad input on the RPC door of a live node (issue 6, part 4a).

One single-validator devnet node (a real ``dvp node run`` process committing heartbeat
blocks). Hypothesis throws malformed JSON-RPC at it over HTTP -- wrong types for every
method's params, numbers beyond 2^64 and beyond float range, deep nesting, bodies in
the wrong encoding or not UTF-8 at all, junk batches (also over the 100-call limit) --
and the node must answer each with a JSON-RPC error (or a 4xx for a transport-level
problem), never a 5xx and never an "internal error" caused by the input. Then bodies
over the 1 MiB cap (413 before they are read), clients that trickle bytes or stall
(408, while other clients are served), and memory: the process's RSS must level off
under repeated maximal junk. After all of it the node still answers ``status`` and
keeps committing.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import devnet
from cli.devnet_files import NodeEntry
from cli.rpc_client import RpcClient
from scripts.harness.realnet import entries, rss_bytes, status, wait_height

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]

MAX_BODY = 1 << 20  # docs/RPC.md: batches up to 100 calls and 1 MiB per body
RPC_ERRORS = {-32700, -32600, -32601, -32602, -32001, -32002, -32003, -32004, -32005}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, NodeEntry]]:
    root = tmp_path_factory.mktemp("rpcfuzz")
    try:
        devnet.up(root, nodes=1, wait_s=60, params={"heartbeat_ms": 300})
        yield root, entries(root)["cnix"]
    finally:
        if (root / "devnet.json").exists():
            devnet.down(root, grace_s=5)


def post(
    e: NodeEntry, body: bytes, content_type: str = "application/json", timeout_s: float = 30
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", e.rpc_port, timeout=timeout_s)
    try:
        conn.request("POST", "/", body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def check_answer(status_code: int, body: bytes, sent: bytes) -> None:
    """What a client may get for junk: a JSON-RPC error (or a result), or a 4xx."""
    assert status_code < 500, (status_code, body[:300], sent[:200])
    if status_code == 204:  # notifications only: no answer, by the spec
        return
    doc = json.loads(body)
    if status_code != 200:
        assert 400 <= status_code < 500 and "error" in doc, (status_code, doc)
        return
    for answer in doc if isinstance(doc, list) else [doc]:
        assert answer.get("jsonrpc") == "2.0", answer
        if "error" in answer:
            assert answer["error"]["code"] in RPC_ERRORS, (answer, sent[:300])
        else:
            assert "result" in answer, answer


# --- strategies ------------------------------------------------------------------

METHODS = [
    "submitTransaction",
    "submitTransactions",
    "getAttestationProof",
    "getHeader",
    "getBlock",
    "getTransaction",
    "getValidators",
    "getMembers",
    "getHistoryProof",
    "getConsistencyProof",
    "status",
    "rpc.discover",
]
PARAM_NAMES = [
    "tx",
    "txs",
    "wait",
    "timeout_s",
    "commitment",
    "height",
    "include_txs",
    "tx_id",
    "old_height",
    "new_height",
    "x",
]

huge_ints = st.integers(min_value=-(10**40), max_value=10**40) | st.sampled_from(
    [2**63, 2**64, 2**64 + 1, -(2**63) - 1, 10**400]
)
json_leaf = (
    st.none()
    | st.booleans()
    | huge_ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["00" * 32, "zz", "0x00", "f" * 9000])
)
json_value = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids, max_size=5)
    ),
    max_leaves=20,
)
# Params: right names, wrong (or occasionally right) types; or not an object at all.
params = st.dictionaries(st.sampled_from(PARAM_NAMES), json_value, max_size=4) | json_value
request = st.fixed_dictionaries(
    {
        "jsonrpc": st.sampled_from(["2.0", "2.0", "1.0", 2]),
        "method": st.sampled_from(METHODS) | json_value,
        "params": params,
    },
    optional={"id": json_value, "extra": json_value},
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    kind = draw(
        st.sampled_from(["call", "batch", "deep", "encoding", "bytes", "numbers", "dupkeys"])
    )
    ctype = "application/json"
    if kind == "call":
        body = _dumps(draw(request))
    elif kind == "batch":
        body = _dumps(draw(st.lists(request | json_value, max_size=130)))
    elif kind == "deep":
        depth = draw(st.sampled_from([33, 200, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = opener * depth + "1" + closer * depth
        body = ('{"jsonrpc":"2.0","id":1,"method":"status","params":{"p":' + inner + "}}").encode()
    elif kind == "encoding":
        text = json.dumps(draw(request), ensure_ascii=False) + "é漢"
        codec = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "utf-8-sig"]))
        body = text.encode(codec, errors="replace")
        ctype = draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/json; charset=utf-8",
                    "application/json; charset=utf-16",
                    "text/plain",
                ]
            )
        )
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
        if draw(st.booleans()):  # valid JSON around invalid UTF-8
            body = b'{"jsonrpc":"2.0","id":"' + body + b'","method":"status"}'
    elif kind == "numbers":
        lit = draw(
            st.sampled_from(
                [
                    "1e400",
                    "-1e400",
                    "1" * 5000,
                    "NaN",
                    "Infinity",
                    "-0",
                    "1.5",
                    "2e-400",
                    "18446744073709551617",
                ]
            )
        )
        key = draw(st.sampled_from(["height", "timeout_s", "old_height"]))
        method = draw(
            st.sampled_from(["getHeader", "getBlock", "getConsistencyProof", "submitTransaction"])
        )
        body = (
            '{"jsonrpc":"2.0","id":'
            + lit
            + ',"method":"'
            + method
            + '","params":{"'
            + key
            + '":'
            + lit
            + "}}"
        ).encode()
    else:
        body = b'{"jsonrpc":"2.0","id":1,"id":2,"method":"status","method":"getHeader"}'
    return body, ctype


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=bodies())
def test_malformed_json_rpc_gets_clear_errors(
    node: tuple[Path, NodeEntry], case: tuple[bytes, str]
) -> None:
    _, e = node
    body, ctype = case
    code, answer = post(e, body, ctype)
    check_answer(code, answer, body)


def _read_to_close(s: socket.socket, limit: int = 65536) -> bytes:
    """The whole answer: headers and body may arrive in separate segments."""
    reply = b""
    while len(reply) < limit:
        try:
            chunk = s.recv(4096)
        except OSError:  # reset after the answer: what arrived is the answer
            break
        if not chunk:
            break
        reply += chunk
    return reply


def test_giant_bodies_are_refused_before_they_are_read(node: tuple[Path, NodeEntry]) -> None:
    _, e = node
    over = b'{"jsonrpc":"2.0","id":1,"method":"status","params":{"p":"' + b"a" * MAX_BODY + b'"}}'
    with socket.create_connection(("127.0.0.1", e.rpc_port), timeout=10) as s:
        s.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(over)
        )
        try:
            s.sendall(over)
        except OSError:
            pass  # answered and closed before the body was read, as it should be
        reply = _read_to_close(s)
    assert reply.startswith(b"HTTP/1.1 413") and b"larger than" in reply, reply[:200]
    # A declared 1 GiB body: answered from the header alone, no gigabyte needed.
    with socket.create_connection(("127.0.0.1", e.rpc_port), timeout=10) as s:
        s.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1073741824\r\n\r\n" + b"[" * 1000
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 413")
    # Chunked, no length declared: cut off once it crosses the cap.
    with socket.create_connection(("127.0.0.1", e.rpc_port), timeout=10) as s:
        s.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(40):
                s.sendall(b"10000\r\n" + b"1" * 0x10000 + b"\r\n")
        except OSError:
            pass  # the server closed on us, as it should
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:100]


def test_slow_clients_time_out_without_holding_up_others(node: tuple[Path, NodeEntry]) -> None:
    """30 clients trickle a body a byte a second (and 10 stall mid-headers); meanwhile
    an ordinary client is served while every one of them still holds its connection,
    and each trickler gets 408 from the 10 s body deadline instead of holding a
    connection for ever (a trickler gives up after 25 s without an answer)."""
    _, e = node
    results: list[bytes] = []
    trickling = [0]  # tricklers connected with their headers sent
    lock = threading.Lock()

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", e.rpc_port), timeout=30) as s:
            s.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 500\r\n\r\n"
            )
            with lock:
                trickling[0] += 1
            reply = b""
            s.settimeout(1.0)  # pacing: a byte a second (the scenario)
            for _ in range(25):
                try:
                    s.sendall(b"[")
                    reply = s.recv(4096)
                    if reply:
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
            with lock:
                results.append(reply)

    stallers = [socket.create_connection(("127.0.0.1", e.rpc_port), timeout=30) for _ in range(10)]
    for s in stallers:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-")
    threads = [threading.Thread(target=trickle) for _ in range(30)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while trickling[0] < 30:
            assert time.monotonic() < deadline, f"only {trickling[0]} of 30 tricklers connected"
            time.sleep(0.05)
        c = RpcClient(e.rpc_url, timeout_s=30)
        try:
            assert c.call("status")["node"] == "cnix"
        finally:
            c.close()
        # Served while all 40 slow connections were still held: no trickler had its
        # answer yet (a server that served them in turn would answer status only after
        # their 408s).
        with lock:
            assert results == [], f"status answered after {len(results)} tricklers ended"
        for t in threads:
            t.join(timeout=40)
    finally:
        for s in stallers:
            s.close()
    assert len(results) == 30
    assert all(r.startswith(b"HTTP/1.1 408") for r in results), {r[:40] for r in results}


def _big_junk(i: int) -> bytes:
    """Near-limit bodies that cost the parser most: deep-ish arrays of many numbers,
    long strings, a batch of 100 calls with big params."""
    if i % 3 == 0:
        return b"[" + b",".join(b"[1,2,3,4,5,6,7,8]" for _ in range(MAX_BODY // 18 - 10)) + b"]"
    if i % 3 == 1:
        return _dumps(
            {
                "jsonrpc": "2.0",
                "id": i,
                "method": "submitTransaction",
                "params": {"tx": "ab" * (MAX_BODY // 2 - 200)},
            }
        )
    return _dumps(
        [
            {
                "jsonrpc": "2.0",
                "id": k,
                "method": "submitTransactions",
                "params": {"txs": ["zz" * 40] * 120},
            }
            for k in range(100)
        ]
    )


def test_memory_levels_off_and_the_node_still_commits(node: tuple[Path, NodeEntry]) -> None:
    """RSS after three rounds of 15 maximal junk bodies: the first round may grow the
    heap (Python keeps freed arenas; a 1 MiB JSON array of small arrays is ~60 MB of
    objects while parsed, one request at a time), but rounds two and three must not
    add more than 16 MiB (each round parses ~15 MiB of bodies): growth that continues
    round after round is a leak."""
    root, e = node
    pid = devnet.running_pid(root, e)
    assert pid is not None
    start = rss_bytes(pid)
    after = []
    for _round in range(3):
        for i in range(15):
            code, answer = post(e, _big_junk(i))
            check_answer(code, answer, b"big junk")
        after.append(rss_bytes(pid))
    mib = 1024 * 1024
    print(
        f"\nnode RSS: start {start / mib:.0f} MiB, after rounds "
        f"{[round(a / mib) for a in after]} MiB"
    )
    assert after[0] - start < 256 * mib
    assert after[2] - after[0] < 16 * mib, after
    st_ = status(e)
    assert st_ is not None
    wait_height([e], st_["height"] + 3, 20)

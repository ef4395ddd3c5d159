"""Benchmark the RPC server: requests/s and latency of a no-op method over real HTTP.

Owns one measurement run. The server is a separate process (hypercorn-trio via
``serve_http``, pinned to one CPU when the machine has two or more); this process is
the client: trio, raw keep-alive sockets, several concurrent connections, one request
in flight per connection (HTTP/1.1 without pipelining, like real clients).

Phases, each on a fresh server process:
1. ``bare``: a trivial ASGI app on the same ``serve_http`` (the floor hypercorn sets);
2. ``noop``: ``{"method": "noop"}`` through the full RPC app (dispatch, metrics);
3. ``batch``: batches of 20 no-op calls (calls/s = 20 x requests/s).
Then, in-process: the bare and the RPC ASGI app called directly (µs per request), and
the dispatcher alone (µs per call), optionally under cProfile.

Last line of output is one JSON object: noop_requests_per_s, noop_batched_calls_per_s,
latency_ms_p50, latency_ms_p99 (noop phase), plus bare_requests_per_s, overhead_ratio
(bare req/s over noop req/s: 1.0 = no cost), the server's CPU time per request in each
phase and its ratio (cpu_overhead_ratio), app_us_bare / app_us_rpc (the two ASGI apps
called directly) and dispatch_us_per_call. Phases are interleaved over ``--rounds`` and
the median round is reported, so that other load on the machine hits every phase
alike; on a busy machine the in-process figures are the steadiest.

    python scripts/bench_http.py [--seconds 4] [--rounds 3] [--connections 8] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio  # noqa: E402

BATCH = 20
NOOP_BODY = b'{"jsonrpc":"2.0","method":"noop","id":1}'
BATCH_BODY = (
    b"[" + b",".join(b'{"jsonrpc":"2.0","method":"noop","id":%d}' % i for i in range(BATCH)) + b"]"
)


def http_request(body: bytes) -> bytes:
    return (
        b"POST /rpc HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


# --- server process -------------------------------------------------------------------


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: read the body, answer a fixed JSON-RPC result."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].replace("lifespan.", "")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    body = b'{"jsonrpc":"2.0","result":null,"id":1}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def rpc_app() -> Any:
    from prometheus_client import CollectorRegistry

    from node.rpc import CallContext, CredentialStore, MethodRegistry, generate_api_key, make_app

    rpc = MethodRegistry()

    @rpc.method("noop")
    async def noop(ctx: CallContext) -> None:
        return None

    key = generate_api_key()
    credentials = CredentialStore.from_config(
        {"bench": {"roles": ["verifier"], "key_sha256": key.key_sha256}}
    )
    return make_app(rpc, credentials, CollectorRegistry())


def serve(kind: str, cpu: int | None) -> None:
    from node.rpc import serve_http

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    app = bare_app if kind == "bare" else rpc_app()

    async def main() -> None:
        async def until_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    return

        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: serve_http(
                    app, "127.0.0.1", 0, task_status=task_status, shutdown_trigger=until_signal
                )
            )
            print(port, flush=True)

    trio.run(main)


# --- client ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def read_response(stream: trio.SocketStream, buf: bytes) -> tuple[bytes, bytes, bytes]:
    """One HTTP/1.1 response (with Content-Length): its lower-cased head, its body and
    what was read beyond it (``buf`` is what was read beyond the previous one).
    scripts/bench_rpc.py reads its responses with this too."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].lower()
            i = head.index(b"content-length:") + 15
            length = int(head[i:].split(b"\r\n", 1)[0])
            if len(buf) >= end + 4 + length:
                return head, buf[end + 4 : end + 4 + length], buf[end + 4 + length :]
        data = await stream.receive_some(1 << 18)
        if not data:
            raise RuntimeError("server closed the connection mid-response")
        buf += data


async def run_client(
    port: int, server_pid: int, body: bytes, connections: int, seconds: float
) -> dict[str, Any]:
    """Closed-loop load: each connection sends, waits for the reply, sends again.

    Besides the rate, reports the server's CPU time per request over the measured
    window: unlike the rate, it barely moves when other work shares the machine.
    """
    request = http_request(body)
    warmup_s = min(1.0, seconds / 4)
    start = trio.current_time()
    measure_from = start + warmup_s
    stop_at = measure_from + seconds
    latencies: list[float] = []
    errors = 0

    async def connection() -> None:
        nonlocal errors
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        buf = b""
        while trio.current_time() < stop_at:
            sent = time.perf_counter()
            await stream.send_all(request)
            head, _, buf = await read_response(stream, buf)
            done = time.perf_counter()
            if not head.startswith(b"http/1.1 200"):
                errors += 1
            if trio.current_time() >= measure_from:
                latencies.append(done - sent)
            if b"connection: close" in head:  # keep_alive_max_requests reached
                await stream.aclose()
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                buf = b""
        await stream.aclose()

    cpu: list[float] = []

    async def sample_cpu() -> None:
        await trio.sleep_until(measure_from)
        cpu.append(cpu_seconds(server_pid))
        await trio.sleep_until(stop_at)
        cpu.append(cpu_seconds(server_pid))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_cpu)
        for _ in range(connections):
            nursery.start_soon(connection)
    latencies.sort()
    n = len(latencies)
    return {
        "requests_per_s": n / seconds,
        "server_cpu_us_per_request": 1e6 * (cpu[1] - cpu[0]) / max(n, 1),
        "latency_ms_p50": 1000 * latencies[n // 2],
        "latency_ms_p99": 1000 * latencies[min(n - 1, int(n * 0.99))],
        "errors": errors,
    }


def measure(kind: str, body: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """One phase: a fresh server process of ``kind``, load from this process."""
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0] if len(cpus) >= 2 else None
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind]
        + ([] if server_cpu is None else ["--cpu", str(server_cpu)]),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        if server_cpu is not None:  # keep the client off the server's core
            os.sched_setaffinity(0, set(cpus[1:]))
        result = trio.run(run_client, port, server.pid, body, args.connections, args.seconds)
    finally:
        os.sched_setaffinity(0, set(cpus))
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    return result


# --- in-process costs -------------------------------------------------------------------


def dispatch_cost(profile: bool) -> float:
    """µs per no-op call through Dispatcher.dispatch with metrics, no HTTP."""
    from node.rpc.http import RpcApp

    app: RpcApp = rpc_app()
    dispatcher = app.dispatcher
    calls = 20_000

    async def loop() -> None:
        for _ in range(calls):
            await dispatcher.dispatch(NOOP_BODY)

    trio.run(loop)  # warm up
    started = time.perf_counter()
    trio.run(loop)
    elapsed = time.perf_counter() - started
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(trio.run, loop)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    return 1e6 * elapsed / calls


def asgi_cost() -> tuple[float, float]:
    """µs per request of the bare and the RPC ASGI app, called directly (no sockets).

    ``receive`` is a trio memory channel's, as hypercorn-trio passes it.
    """
    scope = {
        "type": "http", "method": "POST", "path": "/rpc", "client": ("127.0.0.1", 40000),
        "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(NOOP_BODY))],
    }  # fmt: skip
    # What hypercorn-trio queues for a small request: the data, then the end of it.
    data = {"type": "http.request", "body": NOOP_BODY, "more_body": True}
    end = {"type": "http.request", "body": b"", "more_body": False}
    calls = 20_000
    costs = []

    async def send(event: dict[str, Any]) -> None:
        pass

    async def loop(app: Any) -> None:
        tx, rx = trio.open_memory_channel[dict[str, Any]](2)
        for _ in range(calls):
            tx.send_nowait(data)
            tx.send_nowait(end)
            await app(scope, rx.receive, send)

    for app in (bare_app, rpc_app()):
        trio.run(loop, app)  # warm up
        started = time.perf_counter()
        trio.run(loop, app)
        costs.append(1e6 * (time.perf_counter() - started) / calls)
    return costs[0], costs[1]


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (keeps its latencies consistent with its rate)."""
    return sorted(runs, key=lambda r: r["requests_per_s"])[len(runs) // 2]


def median_cpu_us(runs: list[dict[str, Any]]) -> float:
    return float(statistics.median(r["server_cpu_us_per_request"] for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per phase")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent keep-alive conns")
    parser.add_argument("--profile", action="store_true", help="cProfile the dispatch path")
    parser.add_argument("--serve", choices=["bare", "rpc"], help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.cpu)
        return

    # Interleave the phases so that load from elsewhere on the machine hits all alike.
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "noop": [], "batch": []}
    for i in range(args.rounds):
        runs["bare"].append(measure("bare", NOOP_BODY, args))
        runs["noop"].append(measure("rpc", NOOP_BODY, args))
        runs["batch"].append(measure("rpc", BATCH_BODY, args))
        line = [
            f"{k} {v[-1]['requests_per_s']:.0f} req/s "
            f"({v[-1]['server_cpu_us_per_request']:.0f} us cpu/req)"
            for k, v in runs.items()
        ]
        print(f"round {i + 1}: " + "  ".join(line))  # fmt: skip
    bare, noop, batch = median_of(runs["bare"]), median_of(runs["noop"]), median_of(runs["batch"])
    print(f"bare ASGI app:   {bare['requests_per_s']:8.0f} req/s  p50 "
          f"{bare['latency_ms_p50']:.2f} ms  p99 {bare['latency_ms_p99']:.2f} ms")  # fmt: skip
    print(f"rpc noop:        {noop['requests_per_s']:8.0f} req/s  p50 "
          f"{noop['latency_ms_p50']:.2f} ms  p99 {noop['latency_ms_p99']:.2f} ms")  # fmt: skip
    print(f"rpc batch of {BATCH}: {batch['requests_per_s']:8.0f} req/s = "
          f"{BATCH * batch['requests_per_s']:.0f} calls/s")  # fmt: skip
    cpu_bare, cpu_noop, cpu_batch = (median_cpu_us(runs[k]) for k in ("bare", "noop", "batch"))
    print(f"server CPU per request: bare {cpu_bare:.0f} us, noop {cpu_noop:.0f} us, "
          f"batch of {BATCH} {cpu_batch:.0f} us -> one dedicated core would do "
          f"{1e6 / cpu_bare:.0f} / {1e6 / cpu_noop:.0f} req/s, "
          f"{BATCH * 1e6 / cpu_batch:.0f} batched calls/s")  # fmt: skip
    bare_us, app_us = asgi_cost()
    print(f"ASGI app alone:  bare {bare_us:.1f} us, rpc {app_us:.1f} us per no-op request")
    dispatch_us = dispatch_cost(args.profile)
    print(f"dispatch alone:  {dispatch_us:.1f} us per no-op call (all of it but HTTP)")
    errors = sum(r["errors"] for v in runs.values() for r in v)
    if errors:
        print(f"WARNING: {errors} non-200 responses", file=sys.stderr)
    summary = {
        "noop_requests_per_s": round(noop["requests_per_s"]),
        "noop_batched_calls_per_s": round(BATCH * batch["requests_per_s"]),
        "latency_ms_p50": round(noop["latency_ms_p50"], 3),
        "latency_ms_p99": round(noop["latency_ms_p99"], 3),
        "bare_requests_per_s": round(bare["requests_per_s"]),
        "overhead_ratio": round(bare["requests_per_s"] / noop["requests_per_s"], 3),
        "server_cpu_us_per_request_bare": round(cpu_bare, 1),
        "server_cpu_us_per_request_noop": round(cpu_noop, 1),
        "server_cpu_us_per_batch": round(cpu_batch, 1),
        "cpu_overhead_ratio": round(cpu_noop / cpu_bare, 3),
        "app_us_bare": round(bare_us, 1),
        "app_us_rpc": round(app_us, 1),
        "dispatch_us_per_call": round(dispatch_us, 1),
        "connections": args.connections,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""Distance in user space: delaying TCP relays between validators on 127.0.0.1.

This kernel has no ``netem`` qdisc (``netns.netem_supported`` says why), so wide-area
latency is added by relays instead: ``Relays`` listens on one loopback port per link and
forwards each connection to the link's target, holding every chunk it reads for the
link's one-way ``Delay`` (uniform between ``lo_ms`` and ``hi_ms``, drawn per chunk from a
seeded generator, so a seed replays the same draws). A chunk is never sent before the one
read ahead of it — its due time is ``max(read time + draw, previous chunk's due time)`` —
so the byte order of each direction holds, as TCP's does. Each direction of a connection
is delayed separately, so a request and its answer cost a round trip.

``route`` puts a devnet behind relays by a ``Topology``: every node dials each of its
``[p2p.peers]`` through its own relay whose delay is that pair's one-way latency. Nodes,
their RPC and the load stay on 127.0.0.1; only the p2p links are slowed.

Limits, honestly: the TCP handshake itself is not delayed (the relay accepts at once and
dials the target at once; only data waits), so a fresh connection costs no round trip
before its first byte, while libp2p's own handshakes (multistream, noise, yamux) do pay
theirs. Bandwidth is not limited (``tbf`` works on this kernel, in the namespace
harness, if a narrow pipe is wanted), nothing is lost or reordered, and under steady
traffic the order rule makes a chunk wait for the slowest draw ahead of it, so a busy
link's delay leans toward ``hi_ms``. The relays run in one trio thread of the process
that starts them; its CPU is the caller's to report.
"""

from __future__ import annotations

import math
import random
import re
import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType

import trio

from cli.network_index import NodeEntry

CHUNK = 65536
BUFFERED_CHUNKS = 64  # per direction: backpressure to the sender past ~4 MB in flight


@dataclass(frozen=True)
class Delay:
    """One-way latency of a link: uniform between ``lo_ms`` and ``hi_ms`` per chunk."""

    lo_ms: float
    hi_ms: float

    def __post_init__(self) -> None:
        if not 0 <= self.lo_ms <= self.hi_ms:
            raise ValueError(f"a delay needs 0 <= lo <= hi (got {self.lo_ms}, {self.hi_ms})")

    def draw_s(self, rng: random.Random) -> float:
        return rng.uniform(self.lo_ms, self.hi_ms) / 1000.0

    def __str__(self) -> str:
        return f"{self.lo_ms:g}-{self.hi_ms:g} ms"


@dataclass
class Link:
    """One relay: ``listen_port`` on 127.0.0.1 forwards to ``target_port`` after ``delay``."""

    name: str
    target_port: int
    delay: Delay
    listen_port: int = 0
    bytes_forwarded: int = 0  # both directions
    connections: int = 0
    _sock: socket.socket | None = field(default=None, repr=False)


class Relays:
    """Delaying relays served by one trio thread; a context manager (``start``/``stop``).

    Links are added before ``start``; each gets its listening port at once (bound here,
    so the port is known and held before any node is written a config naming it)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.links: list[Link] = []
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def add(self, name: str, target_port: int, delay: Delay) -> Link:
        if self._thread is not None:
            raise RuntimeError("relays are added before start()")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        link = Link(name, target_port, delay, sock.getsockname()[1], _sock=sock)
        self.links.append(link)
        return link

    @property
    def bytes_forwarded(self) -> int:
        return sum(link.bytes_forwarded for link in self.links)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Relays:
        self._thread = threading.Thread(target=self._run, name="delay-relays", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=20):
            raise RuntimeError("the delay relays did not start within 20 s")
        if self._error is not None:
            raise RuntimeError(f"the delay relays failed to start: {self._error}")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._token is not None and self._scope is not None:
            try:
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(timeout=20)
        for link in self.links:
            if link._sock is not None:
                link._sock.close()
        self._thread = None

    def __enter__(self) -> Relays:
        return self.start()

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as nursery:
                for k, link in enumerate(self.links):
                    assert link._sock is not None
                    listener = trio.SocketListener(trio.socket.from_stdlib_socket(link._sock))
                    link._sock = None  # the listener owns (and closes) it now
                    nursery.start_soon(self._serve, nursery, listener, link, k)
                self._ready.set()

    # ------------------------------------------------------------------ forwarding

    async def _serve(
        self, nursery: trio.Nursery, listener: trio.SocketListener, link: Link, k: int
    ) -> None:
        async with listener:
            while True:
                client = await listener.accept()
                link.connections += 1
                # Every connection and direction draws from its own generator: the
                # draws replay for a seed whatever the other links' traffic was.
                base = (self.seed * 1_000_003 + k) * 1_000_003 + link.connections
                nursery.start_soon(self._connection, client, link, base)

    async def _connection(self, client: trio.SocketStream, link: Link, base: int) -> None:
        async with client:
            try:
                with trio.fail_after(10):
                    upstream = await trio.open_tcp_stream("127.0.0.1", link.target_port)
            except (OSError, trio.TooSlowError):
                return  # the target is down: the dialler sees its connection close
            async with upstream, trio.open_nursery() as nursery:

                async def pipe(
                    src: trio.SocketStream, dst: trio.SocketStream, rng: random.Random
                ) -> None:
                    if not await _delayed_copy(src, dst, link, rng):
                        nursery.cancel_scope.cancel()  # a reset: drop the whole connection

                nursery.start_soon(pipe, client, upstream, random.Random(2 * base))
                nursery.start_soon(pipe, upstream, client, random.Random(2 * base + 1))


async def _delayed_copy(
    src: trio.SocketStream, dst: trio.SocketStream, link: Link, rng: random.Random
) -> bool:
    """Copy ``src`` to ``dst``, each chunk after its delay, in order; half-close ``dst``
    at ``src``'s end. False if either side broke (reset) rather than ended."""
    send, recv = trio.open_memory_channel[tuple[float, bytes]](BUFFERED_CHUNKS)
    broken = [False]

    async def reader() -> None:
        last_due = -math.inf
        async with send:
            while True:
                try:
                    data = await src.receive_some(CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    broken[0] = True
                    return
                if not data:
                    return
                due = max(trio.current_time() + link.delay.draw_s(rng), last_due)
                last_due = due
                await send.send((due, data))

    async def writer() -> None:
        async with recv:
            async for due, data in recv:
                await trio.sleep_until(due)
                try:
                    await dst.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    broken[0] = True
                    return
                link.bytes_forwarded += len(data)
        if not broken[0]:
            try:
                await dst.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                broken[0] = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await writer()
        nursery.cancel_scope.cancel()  # the writer gave up: stop reading too
    return not broken[0]


# ----------------------------------------------------------------------------- topologies


@dataclass(frozen=True)
class Topology:
    """Where each node is (``sites``: node name -> site; observers are at
    ``observer_site``) and the one-way delay between two sites (or within one)."""

    name: str
    sites: dict[str, str]
    observer_site: str
    delays: dict[frozenset[str], Delay]

    def site(self, e: NodeEntry) -> str:
        if e.role == "observer":
            return self.observer_site
        if e.name not in self.sites:
            raise ValueError(f"topology {self.name} places no validator named {e.name}")
        return self.sites[e.name]

    def delay(self, a: str, b: str) -> Delay:
        return self.delays[frozenset({a, b})]

    def describe(self) -> str:
        where: dict[str, list[str]] = {}
        for name, s in self.sites.items():
            where.setdefault(s, []).append(name)
        lines = [f"{s}: {', '.join(names)}" for s, names in where.items()]
        lines.append(f"{self.observer_site}: observers")
        lines += [f"{' <-> '.join(sorted(k))}: {d} one way" for k, d in self.delays.items()]
        return "; ".join(lines)


LOCAL = Delay(0.5, 1.5)  # within a city: about a millisecond
# Issue 19 item 5: Hong Kong <-> Shenzhen 5-20 ms with jitter, read as one-way latency
# between the cities (so a round trip is 10-40 ms), and an observer on another continent
# 150 ms one way from everyone (with a few ms of jitter). The devnet's validators sit
# where their members are: hkbank and cnix in Hong Kong, szcredit and webank in Shenzhen.
HK_SZ = Topology(
    name="hk-sz",
    sites={"hkbank": "hk", "cnix": "hk", "szcredit": "sz", "webank": "sz"},
    observer_site="far",
    delays={
        frozenset({"hk"}): LOCAL,
        frozenset({"sz"}): LOCAL,
        frozenset({"hk", "sz"}): Delay(5.0, 20.0),
        frozenset({"far", "hk"}): Delay(148.0, 152.0),
        frozenset({"far", "sz"}): Delay(148.0, 152.0),
    },
)
TOPOLOGIES = {HK_SZ.name: HK_SZ}

_PEER_LINE = re.compile(r'^(\s*)([\w.-]+)(\s*=\s*")127\.0\.0\.1:(\d+)(".*)$')


def route(entries: list[NodeEntry], topology: Topology, relays: Relays) -> dict[str, Delay]:
    """Rewrite every node config so that each ``[p2p.peers]`` address is a relay (added
    to ``relays``, not yet started) delaying that pair's link; returns the delay of each
    link by name ``"dialler->peer"``."""
    by_name = {e.name: e for e in entries if e.role == "validator"}
    out: dict[str, Delay] = {}
    for e in entries:
        lines = e.config.read_text().splitlines()
        section = ""
        for i, line in enumerate(lines):
            if line.startswith("["):
                section = line.strip()
                continue
            m = _PEER_LINE.match(line)
            if section != "[p2p.peers]" or m is None:
                continue
            peer = by_name.get(m[2])
            if peer is None or peer.p2p_port != int(m[4]):
                raise ValueError(f"{e.config}: peer {m[2]} is not a validator of this devnet")
            delay = topology.delay(topology.site(e), topology.site(peer))
            link = relays.add(f"{e.name}->{peer.name}", peer.p2p_port, delay)
            lines[i] = f"{m[1]}{m[2]}{m[3]}127.0.0.1:{link.listen_port}{m[5]}"
            out[link.name] = delay
        e.config.write_text("\n".join(lines) + "\n")
    return out

"""A tiny HTTP server that is not a dvp node, for the CLI's bad-endpoint cases.

``BadServer()`` (a context manager) serves on 127.0.0.1, a free port, from a thread
(stdlib ``http.server``). What it answers depends on the request path, so one server
covers every case: ``url("html")`` an HTML page, ``url("text")`` plain text,
``url("500")`` an HTTP 500, ``url("nothing")`` a connection closed without a
response, ``url("notrpc")`` JSON that is not JSON-RPC, ``url("binary")`` bytes that
are not UTF-8.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BEHAVIOURS = ("html", "text", "500", "nothing", "notrpc", "binary")

_BODIES: dict[str, tuple[int, str, bytes]] = {
    "html": (200, "text/html", b"<!doctype html>\n<html><body><h1>Welcome</h1></body></html>"),
    "text": (200, "text/plain", b"hello, this is not JSON\n"),
    "500": (500, "text/html", b"<html>Internal Server Error</html>"),
    "notrpc": (200, "application/json", b'[1, "two", {"three": 3}]'),
    "binary": (200, "application/json", b"\xff\xfe\x00garbage\x80"),
}


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        name = self.path.strip("/")
        if name not in _BODIES:  # "nothing": hang up without a word
            self.close_connection = True
            return
        status, ctype, body = _BODIES[name]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the tests read the client's side


class BadServer:
    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.port}/{behaviour}"

    def __enter__(self) -> BadServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

"""A minimal JSON-RPC 2.0 client over the standard library's HTTP client (for the CLI).

``RpcClient(url, api_key=..., cafile=...)``: the key goes in ``Authorization: Bearer``;
an ``https://`` URL is checked against ``cafile`` (a PEM CA or self-signed certificate)
or the system's CAs. The CLI reads defaults for both from ``DVP_API_KEY`` and
``DVP_CACERT``; this class never reads the environment itself.
"""

from __future__ import annotations

import http.client
import itertools
import json
import ssl
from typing import Any, Final
from urllib.parse import urlsplit

from node.oneline import one_line

ENV_API_KEY: Final = "DVP_API_KEY"
ENV_CACERT: Final = "DVP_CACERT"


class RpcCallError(Exception):
    """The node answered with a JSON-RPC error (``code``, ``data``) or could not be reached."""

    def __init__(self, message: str, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class RpcClient:
    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        cafile: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        try:
            parts.port  # noqa: B018 (urlsplit checks the port only when it is read)
        except ValueError as exc:
            raise ValueError(f"not an http(s) URL: {url!r} ({exc})") from None
        if cafile and parts.scheme != "https":
            raise ValueError(f"a CA certificate was given but {url!r} is not https://")
        self.url = url
        self.parts = parts
        self._host: str = parts.hostname
        self.api_key = api_key
        self.timeout_s = timeout_s
        # Built once: loading the CA file per connection would cost a file read each time.
        self._tls = ssl.create_default_context(cafile=cafile) if parts.scheme == "https" else None
        self._ids = itertools.count(1)
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._tls is not None:
                self._conn = http.client.HTTPSConnection(
                    self._host, self.parts.port, timeout=self.timeout_s, context=self._tls
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self.parts.port, timeout=self.timeout_s
                )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, body: bytes) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(2):  # one retry on a keep-alive connection the server closed
            conn = self._connection()
            try:
                conn.request("POST", self.parts.path or "/", body, headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self.close()
                if attempt:
                    raise RpcCallError(f"cannot reach {self.url}: {exc}") from None
        if resp.status != 200:
            raise self._not_rpc(f"answered HTTP {resp.status}", data)
        try:
            return json.loads(data)
        except ValueError:  # not JSON, or not UTF-8
            raise self._not_rpc("did not answer JSON", data) from None

    def _not_rpc(self, what: str, data: bytes) -> RpcCallError:
        """Something answered, but not a dvp node's JSON-RPC (an HTML page, a proxy's
        error): no ``code``, so the CLI reports it like an unreachable node."""
        text = " ".join(data[:80].decode("utf-8", "replace").split())
        shown = f" ({one_line(text)}{'...' if len(data) > 80 else ''})" if text else ""
        return RpcCallError(f"{self.url} {what}{shown}; is this a dvp node's RPC URL?")

    def _answer(self, doc: Any) -> Any:
        """The result of one JSON-RPC response object; RpcCallError for an error."""
        if not isinstance(doc, dict) or not ("result" in doc or "error" in doc):
            raise self._not_rpc("answered JSON that is not JSON-RPC", json.dumps(doc).encode())
        err = doc.get("error")
        if err is not None:
            if not isinstance(err, dict):
                raise self._not_rpc("answered a malformed JSON-RPC error", json.dumps(err).encode())
            code = err.get("code")
            message = one_line(str(err.get("message", "error")))
            raise RpcCallError(message, code if isinstance(code, int) else None, err.get("data"))
        return doc["result"]

    def call(self, method: str, **params: Any) -> Any:
        doc = self._post(
            json.dumps(
                {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
            ).encode()
        )
        return self._answer(doc)

    def batch(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Results (or RpcCallError instances) in the order of ``calls``."""
        ids = [next(self._ids) for _ in calls]
        body = json.dumps(
            [
                {"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                for i, (m, p) in zip(ids, calls, strict=True)
            ]
        ).encode()
        answers = self._post(body)
        if not isinstance(answers, list) or not all(isinstance(d, dict) for d in answers):
            raise self._not_rpc("answered a batch with no list of answers", b"")
        by_id = {d.get("id"): d for d in answers}
        out: list[Any] = []
        for i in ids:
            try:
                out.append(self._answer(by_id.get(i, {"error": {"message": "no answer"}})))
            except RpcCallError as exc:
                out.append(exc)
        return out

"""The verification page's files: what ``GET /verify`` and ``/verify/...`` may serve.

Owns ``StaticSite``: a fixed map from URL path to bytes, built once when the app is made
from the files shipped in ``node/web`` (the page, its script and style, the JavaScript
verifier, the vendored msgpack) plus the node's own genesis file. A request is a dict
look-up, never a path joined onto the disk, so no traversal (``..``, ``%2e``, ``//``)
can reach another file: anything not in the map is 404. Every answer carries the page's
security headers: a strict Content-Security-Policy (nothing from outside the node, no
inline script or style), ``nosniff``, no referrer, no framing. Files are revalidated on
each load (``no-cache`` + ``ETag``) so a node upgrade never leaves an old verifier in a
browser's cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["PAGE_PATH", "SECURITY_HEADERS", "StaticFile", "StaticSite"]

PAGE_PATH: Final = "/verify"
WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web"

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
_MIME: Final = {
    ".html": b"text/html; charset=utf-8",
    ".mjs": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".json": b"application/json",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: bytes
    etag: bytes


def _file(body: bytes, suffix: str) -> StaticFile:
    etag = b'"%s"' % hashlib.sha256(body).hexdigest()[:32].encode()
    return StaticFile(body, _MIME[suffix], etag)


class StaticSite:
    """The page's files by URL path. ``genesis_json``: the node's genesis file bytes,
    served as ``/verify/genesis.json`` (the page pins it by its hash)."""

    def __init__(self, genesis_json: bytes | None, web_dir: Path = WEB_DIR) -> None:
        files: dict[str, StaticFile] = {}
        page = web_dir / "verify.html"
        files[PAGE_PATH] = _file(page.read_bytes(), ".html")
        # The page's own modules and style, the verifier and its vendored library; never
        # the tests (*.test.mjs) nor anything that is not a script or a style.
        for path in sorted(web_dir.rglob("*")):
            if path.suffix in (".mjs", ".css") and not path.name.endswith(".test.mjs"):
                url = f"{PAGE_PATH}/{path.relative_to(web_dir).as_posix()}"
                files[url] = _file(path.read_bytes(), path.suffix)
        if genesis_json is not None:
            files[f"{PAGE_PATH}/genesis.json"] = _file(genesis_json, ".json")
        self.files: Final = files

    @staticmethod
    def owns(path: str) -> bool:
        """Whether ``path`` is the page's (served here, or 404 here)."""
        return path == PAGE_PATH or path.startswith(PAGE_PATH + "/")

    def get(self, path: str) -> StaticFile | None:
        return self.files.get(path)

"""The verification page (GET /verify, node/rpc/static.py and node/web/): every file it
serves, with the right type and the page's security headers; nothing else (no traversal,
no tests, no docs); only same-origin relative URLs; the node's own genesis; receipts
built by the page's JavaScript (pagelib.mjs) that ledger.receipt decodes and re-verifies;
and the page's flow without the DOM (file + code -> commitment -> a real node's bundle ->
verdict -> receipt). The page in a real browser is for the Chromium tests.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ledger import receipt as rc
from ledger.commitment import commitment_of_bytes, encode_code, new_salt
from ledger.genesis import genesis_from_json
from node.node import Node
from node.rpc.static import CSP, WEB_DIR, StaticSite
from tests.node.http_support import get, in_thread, new_app, with_server
from tests.support.rpc_node import call, run_nodes

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
GENESIS = b'{"chain_id": "page-test"}\n'
OWN_FILES = ("verify.html", "page.css", "page.mjs", "pagelib.mjs", "verify.mjs")
MIME = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
}


def served_paths() -> list[str]:
    return sorted(StaticSite(GENESIS).files)


def fetch_all(paths: list[str], headers: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def client(port: int) -> None:
        def run() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                for path in paths:
                    conn.request("GET", path, headers=headers or {})
                    r = conn.getresponse()
                    out[path] = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
            finally:
                conn.close()

        await in_thread(run)

    with_server(client, new_app(page=StaticSite(GENESIS)))
    return out


def test_the_page_and_every_file_it_uses_with_type_and_security_headers() -> None:
    paths = served_paths()
    expected = {"/verify", "/verify/page.mjs", "/verify/pagelib.mjs", "/verify/verify.mjs",
                "/verify/page.css", "/verify/genesis.json",
                "/verify/vendor/msgpack/index.mjs"}  # fmt: skip
    assert expected <= set(paths)
    answers = fetch_all(paths)
    for path in paths:
        status, headers, body = answers[path]
        assert status == 200, path
        suffix = ".html" if path == "/verify" else Path(path).suffix
        assert headers["content-type"] == MIME[suffix], path
        assert headers["content-security-policy"] == CSP, path
        assert "default-src 'none'" in CSP and "frame-ancestors 'none'" in CSP
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["cache-control"] == "no-cache", path
        assert headers["etag"], path
        name = "verify.html" if path == "/verify" else path.removeprefix("/verify/")
        if name != "genesis.json":
            assert body == (WEB_DIR / name).read_bytes(), path
    assert answers["/verify/genesis.json"][2] == GENESIS


def test_unchanged_file_is_revalidated_not_resent() -> None:
    first = fetch_all(["/verify/verify.mjs"])["/verify/verify.mjs"]
    again = fetch_all(["/verify/verify.mjs"], {"If-None-Match": first[1]["etag"]})
    status, headers, body = again["/verify/verify.mjs"]
    assert (status, body) == (304, b"")
    assert headers.get("content-length") in (None, str(len((WEB_DIR / "verify.mjs").read_bytes())))
    assert headers["content-security-policy"] == CSP


@pytest.mark.parametrize(
    "path",
    [
        "/verify/",
        "/verify/../pyproject.toml",
        "/verify/%2e%2e/rpc/static.py",
        "/verify/..%2fverify.mjs",
        "/verify//etc/passwd",
        "/verify/verify.test.mjs",
        "/verify/pagelib.test.mjs",
        "/verify/vendor/VENDOR.md",
        "/verify/vendor/msgpack/LICENSE",
        "/verify/verify.html",
        "/verify/nope.mjs",
        "/verify/VERIFY.MJS",
        "/verifyx",
    ],
)
def test_anything_not_on_the_list_is_not_found(path: str) -> None:
    status, headers, body = fetch_all([path])[path]
    assert status == 404, path
    assert json.loads(body) == {"error": "not found"}


def test_only_get() -> None:
    async def client(port: int) -> None:
        def run() -> tuple[int, dict[str, str], bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("POST", "/verify", body=b"{}", headers={"Content-Type": "text/plain"})
                r = conn.getresponse()
                return r.status, dict(r.getheaders()), r.read()
            finally:
                conn.close()

        status, headers, _ = await in_thread(run)
        assert (status, headers["allow"]) == (405, "GET")

    with_server(client, new_app(page=StaticSite(GENESIS)))


def test_no_page_without_a_site() -> None:
    async def client(port: int) -> None:
        def run() -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                return get(conn, "/verify")[0]
            finally:
                conn.close()

        assert await in_thread(run) == 404

    with_server(client, new_app())


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline: list[str] = []
        self.inputs: list[str] = []
        self.labels: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href", "action") and v]
        if tag == "input":
            self.inputs.append(a.get("id") or "")
        if tag == "label":
            self.labels.append(a.get("for") or "")
        if tag == "script" and "src" not in a:
            self.inline.append("script")
        if "style" in a or any(k.startswith("on") for k in a):
            self.inline.append(f"{tag} attribute")

    def handle_data(self, data: str) -> None:
        if self.lasttag == "style" and data.strip():
            self.inline.append("style")


def test_only_same_origin_relative_urls_and_no_inline_code() -> None:
    html = (WEB_DIR / "verify.html").read_text()
    parser = _Refs()
    parser.feed(html)
    assert not parser.inline, parser.inline
    # Accessible: every input has its label; the answer is announced (aria-live).
    assert parser.inputs and sorted(parser.inputs) == sorted(parser.labels)
    assert 'aria-live="polite"' in html and 'lang="en"' in html
    served = set(served_paths())
    for ref in parser.refs:
        if ref.startswith("data:"):
            continue  # the empty favicon (img-src data:), so the browser asks for nothing
        assert not re.match(r"^[a-z]+:|^//|^/", ref), ref
        assert f"/{ref}" in served, ref  # relative to /verify: resolves to /verify/...
    for name in OWN_FILES:
        text = (WEB_DIR / name).read_text()
        assert "http://" not in text and "https://" not in text, name
        for spec in re.findall(r'from "([^"]+)"', text):
            assert spec.startswith("./"), (name, spec)
    # The vendored library names URLs only in comments; it fetches nothing.
    for path in (WEB_DIR / "vendor").rglob("*.mjs"):
        for line in path.read_text().splitlines():
            if "http://" in line or "https://" in line:
                assert line.lstrip().startswith(("//", "*", "/*")), (path, line)
    assert "fetch(" not in "".join(p.read_text() for p in (WEB_DIR / "vendor").rglob("*.mjs"))


# The page's flow (page.mjs) without the DOM: the commitment from the file and code, the
# bundle from the node's RPC, the verdict, the receipt; argv: genesis, bundle, file, code.
PAGE_FLOW = """
import { readFileSync } from "node:fs";
import * as lib from "./node/web/pagelib.mjs";
import * as v from "./node/web/verify.mjs";
const [genesisPath, bundleJson, filePath, code] = process.argv.slice(1);
const anchor = await v.anchorFromGenesisJson(JSON.parse(readFileSync(genesisPath, "utf8")));
const c = v.hex(await v.commitmentOf(new Uint8Array(readFileSync(filePath)), code));
const bundle = lib.bundleFromResponse({ result: JSON.parse(bundleJson) });
const at = { nowMs: Date.now(), maxAgeMs: null };
const verdict = await v.verifyBundle(bundle, anchor, at);
process.stdout.write(lib.encodeReceipt(lib.buildReceipt({ bundle, verdict,
  genesisHash: anchor.genesisHash, commitmentHex: c, checkedAtMs: at.nowMs, maxAgeMs: null })));
"""


def run_js(script: str, *args: str) -> str:
    node = shutil.which("node")
    assert node is not None, "node (>= 20) is required for the verification page's tests"
    done = subprocess.run(
        [node, "--input-type=module", "-e", script, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_node_serves_its_own_genesis_and_the_page(tmp_path: Path) -> None:
    document = tmp_path / "statement.pdf"
    document.write_bytes(b"%PDF-1.7 a statement never attested")
    salt = new_salt()
    commitment = commitment_of_bytes(document.read_bytes(), salt)

    def client(nodes: list[Node]) -> None:
        node = nodes[0]
        port = node.rpc_ports["rpc"]
        bundle = call(port, "getAttestationProof", {"commitment": commitment.hex()})["result"]
        text = run_js(
            PAGE_FLOW, str(node.config.genesis), json.dumps(bundle), str(document),
            encode_code(salt),
        )  # fmt: skip
        receipt = rc.decode(text.encode())
        assert receipt.verdict["status"] == "NOT_FOUND"
        assert rc.reverify(receipt, node.genesis, commitment).to_json() == receipt.verdict
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            status, headers, body = get(conn, "/verify/genesis.json")
            assert status == 200
            assert body == node.config.genesis.read_bytes()
            assert json.loads(body)["genesis_hash"] == node.genesis.hash.hex()
            status, headers, body = get(conn, "/verify")
            assert status == 200 and b'src="verify/page.mjs"' in body
            assert headers["content-security-policy"] == CSP
        finally:
            conn.close()

    run_nodes(tmp_path, client)


def test_receipts_built_by_the_page_are_accepted_by_ledger_receipt() -> None:
    script = """
import { readFileSync } from "node:fs";
import * as lib from "./node/web/pagelib.mjs";
import * as v from "./node/web/verify.mjs";
const f = JSON.parse(readFileSync("tests/js/fixtures/bundles.json", "utf8"));
const anchor = await v.anchorFromGenesisJson(f.genesis);
const out = [];
for (const c of f.cases) {
  const at = { nowMs: f.now_ms, maxAgeMs: f.max_age_ms };
  const verdict = await v.verifyBundle(c.bundle, anchor, at);
  out.push(lib.encodeReceipt(lib.buildReceipt({
    bundle: c.bundle, verdict, genesisHash: anchor.genesisHash,
    commitmentHex: c.bundle.commitment, checkedAtMs: f.now_ms, maxAgeMs: f.max_age_ms,
  })));
}
console.log(JSON.stringify(out));
"""
    out = run_js(script)
    fixture = json.loads((ROOT / "tests/js/fixtures/bundles.json").read_text())
    genesis = genesis_from_json(fixture["genesis"])
    texts = json.loads(out)
    statuses = set()
    assert len(texts) == len(fixture["cases"]) >= 4
    for text in texts:
        data = text.encode()
        receipt = rc.decode(data)
        assert rc.encode(receipt) == data  # byte for byte what `dvp verify --receipt` writes
        result = rc.reverify(receipt, genesis, bytes.fromhex(receipt.commitment))
        statuses.add(result.to_json()["status"])
    assert statuses == {"VALID", "REVOKED", "EXPIRED", "NOT_FOUND"}

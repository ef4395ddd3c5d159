"""The verification page (GET /verify) in Debian's Chromium, driven by Playwright, against
a real devnet: shared by tests/system/test_verify_page_browser.py, scripts/bench_page.py
and scripts/page_screenshots.py.

Owns: launching the system Chromium (``/usr/bin/chromium``; Playwright's own browser
downloads are not used), a 4-node devnet with one document per verdict (``documents``),
one check as an officer does it in the page (``check_in_page``: choose the file, type the
code, press Verify, read the answer), a bundle tampered with on its way to the page
(``tamper_route``), the record of every request the page made (``Request``, with
``leaks`` saying whether one of them carried the file), the receipt the page offers
(``download_receipt``), a page cut off from the node's JSON-RPC (``block_rpc``) and a
file dropped on the page's drop zone (``drop_file``).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Page, Playwright, Route, sync_playwright

from cli import devnet
from cli.documents import attest_file, revoke, verify_file
from cli.rpc_client import RpcClient
from ledger.crypto import read_key_file
from ledger.records import Status
from ledger.types import RevokeReason

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "scripts/install_browser"
# Without the background-networking flags Chromium keeps calling Google's services,
# which on a closed network means a flood of failing connections.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: The node's JSON-RPC endpoint, as the page calls it (POST /).
RPC = re.compile(r"^http://127\.0\.0\.1:\d+/$")
CASES = ("valid", "invalid", "revoked", "expired", "tampered")
#: The verdict each case must show: a one-byte change is on no ledger (NOT_FOUND); a
#: bundle changed on its way is refused (INVALID).
EXPECTED = {
    "valid": "VALID",
    "invalid": "NOT_FOUND",
    "revoked": "REVOKED",
    "expired": "EXPIRED",
    "tampered": "INVALID",
}


def chromium_path() -> str:
    """The system Chromium, or a one-line error saying how to install it."""
    if not CHROMIUM.exists():
        raise RuntimeError(
            f"the browser tests need Debian's Chromium at {CHROMIUM}: install it with "
            f"`{INSTALL}` (the README's test command runs it)"
        )
    return str(CHROMIUM)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium with a fresh profile (Playwright makes one per launch)."""
    path = chromium_path()
    with sync_playwright() as p:
        browser = launch(p, path)
        try:
            yield browser
        finally:
            browser.close()


def launch(p: Playwright, path: str) -> Browser:
    return p.chromium.launch(executable_path=path, args=FLAGS, timeout=60_000)


@dataclass(frozen=True)
class Document:
    path: Path
    code: str


@dataclass(frozen=True)
class Devnet:
    root: Path
    url: str  # the bank's node: http://127.0.0.1:<port>/
    docs: dict[str, Document]  # by case; "tampered" is the valid document


def _distinctive(tag: str) -> bytes:
    """A file whose bytes are found nowhere else: a PDF-like head and random bytes."""
    import secrets

    return b"%PDF-1.7\n" + tag.encode() + b"\n" + secrets.token_bytes(2048) + b"\n%%EOF\n"


@contextmanager
def devnet_with_documents(root: Path) -> Iterator[Devnet]:
    """Four validator processes and one document per verdict; stopped on exit."""
    try:
        entries = devnet.up(root, nodes=4, wait_s=90, params={"heartbeat_ms": 1000})
        yield _documents(root, {e.name: e.rpc_url for e in entries})
    finally:
        if (root / "devnet.json").exists():
            devnet.down(root, grace_s=5)


def _documents(root: Path, urls: dict[str, str]) -> Devnet:
    issuer = read_key_file(root / "keys" / "szcredit.member.json")
    szc, bank = RpcClient(urls["szcredit"], timeout_s=20), RpcClient(urls["hkbank"], timeout_s=20)
    genesis = root / "genesis.json"
    folder = root / "documents"
    folder.mkdir(exist_ok=True)
    files = {}
    for case in ("valid", "revoked", "expired"):
        files[case] = folder / f"{case}.pdf"
        files[case].write_bytes(_distinctive(case))
    try:
        valid = attest_file(szc, issuer, files["valid"], "credit-report")
        revoked = attest_file(szc, issuer, files["revoked"], "bank-statement")
        expires = int(time.time() * 1000) + 3000
        expired = attest_file(
            szc, issuer, files["expired"], "bank-statement", valid_until_ms=expires
        )
        revoke(szc, issuer, revoked.commitment, RevokeReason.DATA_CHANGED)
        changed = bytearray(files["valid"].read_bytes())
        changed[-20] ^= 0x01  # one byte of the random part
        files["invalid"] = folder / "valid-one-byte-changed.pdf"
        files["invalid"].write_bytes(bytes(changed))
        codes = {"valid": valid.code, "invalid": valid.code, "revoked": revoked.code}
        codes["expired"] = expired.code
        # The bank's node has every block, and the short-lived document is past its time.
        deadline = time.monotonic() + 60
        want = {"valid": Status.VALID, "revoked": Status.REVOKED, "expired": Status.EXPIRED}
        for case, status in want.items():
            while verify_file(bank, genesis, files[case], codes[case]).status != status:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {case} document did not become {status}")
                time.sleep(0.3)
    finally:
        szc.close()
        bank.close()
    docs = {case: Document(files[case], codes[case]) for case in codes}
    docs["tampered"] = docs["valid"]
    return Devnet(root, urls["hkbank"], docs)


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    body: bytes


@dataclass
class PageResult:
    verdict: str
    text: str
    rows: dict[str, str]
    checks: list[str]
    receipt_offered: bool
    page_verify_ms: float | None
    requests: list[Request] = field(default_factory=list)


def record_requests(page: Page) -> list[Request]:
    """Every request the page makes from now on (URL, method, body)."""
    seen: list[Request] = []
    page.on(
        "request",
        lambda r: seen.append(Request(r.method, r.url, r.post_data_buffer or b"")),
    )
    return seen


def tamper_route(page: Page) -> None:
    """Answer the page's JSON-RPC calls with the node's real answer, one byte of the
    bundle changed: the last hex digit of the head's commit certificate (a signature)."""

    def handle(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        answer = route.fetch()
        doc = json.loads(answer.body())
        cert = doc["result"]["head"]["certificate"]
        last = "0" if cert[-1] != "0" else "1"
        doc["result"]["head"]["certificate"] = cert[:-1] + last
        route.fulfill(response=answer, body=json.dumps(doc))

    page.route(RPC, handle)


def block_rpc(page: Page) -> list[str]:
    """Refuse every POST the page tries (its only JSON-RPC call is a POST to the node's
    root): the request is aborted, never reaches the node, and is listed here."""
    tried: list[str] = []

    def handle(route: Route) -> None:
        if route.request.method == "POST":
            tried.append(f"POST {route.request.url}")
            route.abort()
        else:
            route.continue_()

    page.route("**/*", handle)
    return tried


def download_receipt(page: Page) -> tuple[str, bytes]:
    """Press "Download the receipt": the file name the page gives it and its bytes."""
    with page.expect_download() as info:
        page.click("#receipt")
    download = info.value
    path = download.path()
    return download.suggested_filename, Path(path).read_bytes()


def drop_file(page: Page, name: str, data: bytes, target: str = "#drop-hint") -> None:
    """Drop a file on the drop zone as a person does: a DataTransfer holding a File made
    in the page, and dragenter, dragover and drop on ``target`` (bubbling to the zone)."""
    transfer = page.evaluate_handle(
        """([bytes, name]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], name, { type: "application/pdf" }));
        return dt;
        }""",
        [list(data), name],
    )
    try:
        for kind in ("dragenter", "dragover", "drop"):
            page.dispatch_event(target, kind, {"dataTransfer": transfer})
    finally:
        transfer.dispose()


def open_page(page: Page, url: str) -> None:
    """Load the page and wait for it to show the node's genesis hash."""
    page.goto(f"{url}verify")
    page.wait_for_function(
        "() => /^[0-9a-f]{64}$/.test(document.getElementById('genesis-hash').textContent)"
    )


def wait_verdict(page: Page, timeout_ms: float = 30_000) -> None:
    page.wait_for_function(
        "() => document.getElementById('result').getAttribute('aria-busy') === 'false'",
        timeout=timeout_ms,
    )


def read_result(page: Page) -> PageResult:
    doc = page.evaluate(
        """() => {
        const $ = (id) => document.getElementById(id);
        const rows = {};
        for (const dt of $('rows').querySelectorAll('dt')) rows[dt.textContent] =
            dt.nextElementSibling.textContent;
        return { verdict: $('verdict').textContent, text: $('verdict-text').textContent, rows,
            checks: [...$('checks').children].map((li) => li.textContent),
            receipt: !$('receipt').hidden, ms: $('result').dataset.verifyMs ?? null };
        }"""
    )
    ms = doc["ms"]
    return PageResult(
        doc["verdict"],
        doc["text"],
        doc["rows"],
        doc["checks"],
        doc["receipt"],
        float(ms) if ms is not None else None,
    )


def check_in_page(page: Page, url: str, doc: Document, *, tamper: bool = False) -> PageResult:
    """An officer's check: open the page, choose the file, type the code, press Verify."""
    seen = record_requests(page)
    if tamper:
        tamper_route(page)
    open_page(page, url)
    page.set_input_files("#file", str(doc.path))
    page.fill("#code", doc.code)
    page.click("#verify")
    wait_verdict(page)
    result = read_result(page)
    result.requests = list(seen)
    return result


def leaks(requests: list[Request], data: bytes) -> list[str]:
    """The requests that carry the file: a 32-byte piece of its random part, raw, as hex
    (either case) or as base64 (each alignment); in the URL or the body."""
    piece = data[len(data) // 2 : len(data) // 2 + 32]
    forms = [piece, piece.hex().encode(), piece.hex().upper().encode()]
    forms += [base64.b64encode(data[i : i + 300])[8:48] for i in range(3)]
    forms += [base64.urlsafe_b64encode(data[i : i + 300])[8:48] for i in range(3)]
    return [
        f"{r.method} {r.url}"
        for r in requests
        if any(f in r.body or f in r.url.encode() for f in forms)
    ]


def foreign(requests: list[Request], url: str) -> list[str]:
    """The requests to anywhere but the node's own origin."""
    own = urlsplit(url)
    return [
        f"{r.method} {r.url}"
        for r in requests
        if (urlsplit(r.url).scheme, urlsplit(r.url).netloc) != (own.scheme, own.netloc)
    ]

"""The verification page (GET /verify) in Debian's Chromium against a real 4-node devnet.

An officer's check, as in the page: choose the file, type the code, press Verify. Each
verdict shows: VALID, a one-byte change (NOT_FOUND: on no ledger), REVOKED, EXPIRED, and
a bundle changed by one byte on its way from the node (INVALID). Every request the page
makes is recorded: none carries the file's bytes (raw, hex or base64) and all go to the
node's own origin. The page works at phone width (no sideways scroll, the answer in view)
and from the keyboard (every input has its label), its text has WCAG AA contrast, and
the time the page took to check the bundle is reported (``page_verify_ms``; measured,
not asserted: speed is for scripts/bench_page.py). The receipt the page offers after a
VALID or REVOKED check downloads, decodes and re-verifies with ledger.receipt, and the
page re-checks it with every POST blocked (no node), refusing it for a file one byte
different; a file dropped on the drop zone is checked as a chosen one, its bytes kept in.

Needs /usr/bin/chromium (Debian's ``chromium`` package; ``.ci/run`` installs it): the
tests fail, never skip, without it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from cli.documents import commitment_of
from ledger import receipt as rc
from ledger.genesis import read_genesis
from tests.support.browser import (
    CASES,
    EXPECTED,
    Devnet,
    Request,
    block_rpc,
    check_in_page,
    chromium,
    devnet_with_documents,
    download_receipt,
    drop_file,
    foreign,
    leaks,
    open_page,
    read_result,
    record_requests,
    wait_verdict,
)

pytestmark = [pytest.mark.processes, pytest.mark.timeout(240)]

# The contrast of a text against the background it is drawn on (WCAG 2 relative luminance).
CONTRAST = """(el) => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  let bg = el;
  while (bg && rgb(getComputedStyle(bg).backgroundColor)[3] === 0) bg = bg.parentElement;
  const [a, b] = [lum(rgb(getComputedStyle(el).color)),
    lum(rgb(bg ? getComputedStyle(bg).backgroundColor : 'rgb(255,255,255)'))];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet_with_documents(tmp_path_factory.mktemp("devnet")) as d:
        yield d


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def test_the_leak_check_finds_the_file_in_any_form() -> None:
    data = bytes(range(256)) * 8
    for body in (data, data.hex().encode(), base64.b64encode(data[1:])):
        assert leaks([Request("POST", "http://127.0.0.1:1/", body)], data)
    assert leaks([Request("GET", f"http://127.0.0.1:1/?q={data.hex()}", b"")], data)
    assert not leaks([Request("POST", "http://127.0.0.1:1/", b"{}")], data)
    assert foreign([Request("GET", "http://127.0.0.1:2/", b"")], "http://127.0.0.1:1/")


@pytest.mark.parametrize("case", CASES)
def test_each_verdict_and_no_file_byte_leaves_the_page(
    net: Devnet, browser: Browser, case: str, record_property: pytest.RecordProperty
) -> None:
    doc = net.docs[case]
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    try:
        result = check_in_page(page, net.url, doc, tamper=case == "tampered")
        assert result.verdict == EXPECTED[case], (result.text, result.rows)
        assert page.locator("#verdict").evaluate(CONTRAST) >= 4.5
        assert page.locator("#verdict-text").evaluate(CONTRAST) >= 4.5
    finally:
        page.close()
    rows, checks = result.rows, result.checks
    if case == "tampered":
        assert rows["Reason"] == "bad_signature" and not result.receipt_offered
        assert len(checks) == 3  # the ones before the certificate's signatures
    else:
        assert float(rows["Head age"].split()[0]) >= 0 and rows["Head height"].isdigit()
        # every check of docs/CONFORMANCE.md: the consent one passes for an unbound document
        assert result.receipt_offered and len(checks) == 11
    if case in ("valid", "revoked", "expired"):
        assert rows["Issuer"] == "szcredit" and rows["Attested at"].endswith("Z")
    if case == "revoked":
        assert rows["Revocation reason"] == "data changed" and rows["Revoked in block"].isdigit()
        assert rows["Revoked by"] == "its issuer, szcredit"
    if case == "expired":
        assert rows["Valid until"].endswith("Z")
    # What went out: the page's own files, its genesis, one JSON-RPC call with the
    # commitment, all to the node, and none of the file's bytes in any form.
    sent = result.requests
    data = doc.path.read_bytes()
    assert not leaks(sent, data), leaks(sent, data)
    assert not foreign(sent, net.url), foreign(sent, net.url)
    posts = [r for r in sent if r.method == "POST"]
    assert len(posts) == 1 and commitment_of(doc.path, doc.code).hex().encode() in posts[0].body
    assert all(r.method in ("GET", "POST") for r in sent)
    assert result.page_verify_ms is not None and result.page_verify_ms > 0
    record_property("page_verify_ms", result.page_verify_ms)
    print(f"page_verify_ms {case}: {result.page_verify_ms:.1f}")


def test_phone_width_no_sideways_scroll_and_the_answer_in_view(
    net: Devnet, browser: Browser
) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        doc = net.docs["valid"]
        open_page(page, net.url)
        page.set_input_files("#file", str(doc.path))
        page.fill("#code", doc.code)
        # Tapped where a thumb finds it: the button at the bottom edge of the screen.
        page.locator("#verify").evaluate("(b) => b.scrollIntoView({ block: 'end' })")
        page.locator("#verify").tap()
        wait_verdict(page)
        assert read_result(page).verdict == "VALID"
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], f"sideways scroll at 390 px: {widths}"
        # The answer is below the form: the page brings it, and its words, into view.
        expect(page.locator("#verdict")).to_be_in_viewport(ratio=1)
        expect(page.locator("#verdict-text")).to_be_in_viewport(ratio=1)
        for sel in ("#verify", "#receipt", "#code", "#pin", "#genesis-hash"):
            box = page.locator(sel).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, sel
    finally:
        page.close()


LABELS = {
    "File": "file",
    "Verification code": "code",
    "Saved receipt (optional)": "saved",
    "API key (if this node asks for one)": "apikey",
    "Pin a genesis hash (optional)": "pin",
}


def test_labels_and_keyboard_only(net: Devnet, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    # A file-chooser listener from the start: Playwright turns on the browser's dialog
    # interception when the first one is added, asynchronously; added only around the
    # key press (expect_file_chooser), a loaded machine could deliver the press first.
    page.on("filechooser", lambda _: None)
    try:
        open_page(page, net.url)
        for label, id_ in LABELS.items():
            assert page.get_by_label(label).get_attribute("id") == id_, label
        for sel in ("label[for=code]", ".hint", ".lead", "#verify", "#genesis-hash"):
            assert page.locator(sel).first.evaluate(CONTRAST) >= 4.5, sel
        # Tab to the file input, open it with the keyboard, choose the file.
        for _ in range(5):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "file":
                break
        assert page.evaluate("document.activeElement.id") == "file"
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", "no visible focus on the file input"
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Space")
        chooser.value.set_files(str(net.docs["valid"].path))
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "code"
        page.keyboard.type(net.docs["valid"].code)
        page.keyboard.press("Enter")  # submits the form
        wait_verdict(page)
        assert page.locator("#verdict").text_content() == "VALID"
        expect(page.locator("#receipt")).to_be_visible()
    finally:
        page.close()


def test_without_chromium_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.support.browser as b

    monkeypatch.setattr(b, "CHROMIUM", Path("/nonexistent/chromium"))
    with pytest.raises(RuntimeError, match="scripts/install_browser"):
        b.chromium_path()


def _recheck_offline(
    browser: Browser, net: Devnet, file: Path, code: str, saved: Path
) -> tuple[str, str, list[Request], list[str]]:
    """A fresh page with every POST refused: the file, the code and the saved receipt,
    Verify; the verdict and its words, every request made, and the POSTs it tried."""
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    try:
        seen = record_requests(page)
        tried = block_rpc(page)
        open_page(page, net.url)
        page.set_input_files("#file", str(file))
        page.fill("#code", code)
        page.set_input_files("#saved", str(saved))
        page.click("#verify")
        wait_verdict(page)
        result = read_result(page)
        assert page.locator("#receipt").is_hidden()  # a re-check offers no new receipt
        return result.verdict, result.text, list(seen), tried
    finally:
        page.close()


@pytest.mark.parametrize("case", ["valid", "revoked"])
def test_the_receipt_downloads_and_is_rechecked_with_no_node(
    net: Devnet, browser: Browser, case: str, tmp_path: Path
) -> None:
    doc = net.docs[case]
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    try:
        result = check_in_page(page, net.url, doc)
        assert result.verdict == EXPECTED[case] and result.receipt_offered
        name, data = download_receipt(page)
    finally:
        page.close()
    commitment = commitment_of(doc.path, doc.code)
    assert name == f"dvp-receipt-{case}-{commitment.hex()[:16]}.json"
    # The page's receipt is ledger.receipt's: it decodes, and re-verifies with no node
    # against the devnet's genesis to the answer the page showed.
    receipt = rc.decode(data)
    assert receipt.verdict["status"] == EXPECTED[case]
    again = rc.reverify(receipt, read_genesis(net.root / "genesis.json"), commitment)
    assert again.status == EXPECTED[case]
    saved = tmp_path / name
    saved.write_bytes(data)

    verdict, text, seen, tried = _recheck_offline(browser, net, doc.path, doc.code, saved)
    assert verdict == EXPECTED[case], text
    assert text.startswith("Receipt re-checked with no node: its answer holds as of "), text
    assert not tried and not [r for r in seen if r.method != "GET"], (tried, seen)
    assert not leaks(seen, doc.path.read_bytes())

    # The same receipt with a file one byte different: refused, saying why, still no node.
    changed = bytearray(doc.path.read_bytes())
    changed[-20] ^= 0x01
    other = tmp_path / f"{case}-one-byte-changed.pdf"
    other.write_bytes(bytes(changed))
    verdict, text, seen, tried = _recheck_offline(browser, net, other, doc.code, saved)
    assert verdict == "Not checked", text
    assert "it is for another document" in text and "another commitment" in text, text
    assert not tried and not [r for r in seen if r.method != "GET"], (tried, seen)


def test_a_dropped_file_is_checked_and_stays_in_the_page(net: Devnet, browser: Browser) -> None:
    doc = net.docs["valid"]
    data = doc.path.read_bytes()
    name = "dropped-credit-report.pdf"
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    try:
        seen = record_requests(page)
        open_page(page, net.url)
        drop_file(page, name, data)
        expect(page.locator("#file-name")).to_have_text(f"{name} ({len(data)} bytes)")
        assert "over" not in (page.locator("#drop").get_attribute("class") or "")
        page.fill("#code", doc.code)
        page.click("#verify")
        wait_verdict(page)
        result = read_result(page)
    finally:
        page.close()
    assert result.verdict == "VALID", (result.text, result.rows)
    assert result.receipt_offered and len(result.checks) == 11
    assert not leaks(seen, data), leaks(seen, data)
    assert not foreign(seen, net.url), foreign(seen, net.url)
    posts = [r for r in seen if r.method == "POST"]
    assert len(posts) == 1 and commitment_of(doc.path, doc.code).hex().encode() in posts[0].body

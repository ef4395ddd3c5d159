#!/usr/bin/env python3
"""Screenshots of the verification page (GET /verify), one per verdict, for the README.

Starts a 4-node devnet with one document per verdict (tests/support/browser.py, the
harness of the Chromium tests), checks each in Debian's Chromium as an officer does
(file, code, Verify) and saves the page's content as ``docs/img/verify-<case>.png``:
valid, invalid (one byte changed: NOT_FOUND), revoked, expired and tampered (one byte of
the node's answer changed on its way: INVALID). Needs /usr/bin/chromium.

Ends with one JSON line: the files written and each verdict shown.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.browser import (  # noqa: E402
    CASES,
    EXPECTED,
    check_in_page,
    chromium,
    devnet_with_documents,
)


def shot(page: Page, path: Path) -> None:
    """The page from the document form to the end of the answer (not the genesis card)."""
    form, result = (
        page.locator("#verify-form").bounding_box(),
        page.locator("#result").bounding_box(),
    )
    assert form is not None and result is not None
    scroll = page.evaluate("window.scrollY")
    top = form["y"] + scroll - 8
    clip = {"x": form["x"] - 8, "y": top, "width": form["width"] + 16,
            "height": result["y"] + scroll + result["height"] + 8 - top}  # fmt: skip
    page.screenshot(path=path, clip=clip, full_page=True, scale="css")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shown: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="page_screenshots_") as d:
        with devnet_with_documents(Path(d) / "devnet") as net, chromium() as browser:
            for case in CASES:
                page = browser.new_page(viewport={"width": 640, "height": 900})
                try:
                    result = check_in_page(page, net.url, net.docs[case], tamper=case == "tampered")
                    if result.verdict != EXPECTED[case]:
                        raise SystemExit(
                            f"{case}: the page shows {result.verdict}, not {EXPECTED[case]}"
                        )
                    # The document form and the answer: what an officer sees after Verify.
                    shot(page, args.out / f"verify-{case}.png")
                    shown[case] = result.verdict
                finally:
                    page.close()
                print(f"{case:9} {result.verdict:10} -> {args.out / f'verify-{case}.png'}")
    print(json.dumps({"screenshots": [f"verify-{c}.png" for c in CASES], "verdicts": shown}))


if __name__ == "__main__":
    main()

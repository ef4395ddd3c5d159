"""``dvp demo``: the cross-border loan story of docs/../BRIEF on a local consortium.

Shenzhen Credit Service attests a Hong Kong applicant's credit report and bank statement;
the applicant hands the files and verification codes to a bank; the bank verifies them
(VALID) and saves a receipt for the loan file (``RECEIPT_PATH``, re-verified offline at
once), a tampered copy is not found on the ledger (NOT_FOUND), the issuer revokes the
statement (REVOKED), a document whose validity ran out is EXPIRED, an organisation that
is not an admitted issuer is refused. Then the applicant's chapter (docs/CONSENT.md): the
issuer binds a credit report to the applicant's key, the applicant grants the bank consent
for a loan application, the bank verifies (VALID, access recorded), WeBank without
consent is refused by its node (-32007) and by the ledger (wrong_grantee), the applicant
lists who verified (proven), revokes, and the bank's next verification is refused. An
auditor replays the chain. The demo starts
its own devnet in a temporary folder (or uses ``--dir``) and stops what it started.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from cli import devnet
from cli.devnet_files import load_devnet
from cli.documents import (
    ConsentNeeded,
    attest_file,
    check_file,
    describe,
    record_access,
    revoke,
    verify_file,
)
from cli.network_index import NodeEntry
from cli.rpc_client import RpcCallError, RpcClient
from cli.subject import SubjectFile, subject_log
from cli.subject import grant as grant_consent
from cli.subject import revoke as revoke_consent
from ledger.crypto import KeyPair, read_key_file
from ledger.genesis import read_genesis
from ledger.receipt import encode as encode_receipt
from ledger.receipt import reverify
from ledger.records import Status
from ledger.types import RevokeReason
from ledger.verify import Verdict, VerificationError

#: Where the demo saves the bank's receipt for the genuine credit report.
RECEIPT_PATH = Path(tempfile.gettempdir()) / "dvp-demo-receipt.json"

console = Console(highlight=False, soft_wrap=True)


def wait_height(client: RpcClient, height: int | None, timeout_s: float = 30.0) -> None:
    """Let the bank's own node catch up with a block another node just committed."""
    deadline = time.time() + timeout_s
    while height is not None and client.call("status")["height"] < height:
        if time.time() > deadline:
            raise TimeoutError(f"the bank's node did not reach block {height}")
        time.sleep(0.1)


def say(step: str, text: str) -> None:
    console.print(f"\n[bold cyan]{step}[/bold cyan] {text}")


#: The consent chapter's outcomes when every rule holds (docs/CONSENT.md).
CONSENT_EXPECTED = [
    "VALID (access recorded)",
    "REFUSED (-32007 consent required; ledger: wrong_grantee)",
    "1 access by hkbank, proven",
    "REFUSED (-32007 grant_revoked; ledger: grant_revoked)",
]


def _ledger_code(exc: RpcCallError) -> str:
    return str(exc.data.get("code")) if isinstance(exc.data, dict) else str(exc.code)


def consent_story(
    root: Path, nodes: dict[str, NodeEntry], genesis: Path, issuer: KeyPair
) -> list[tuple[str, str]]:
    """The applicant's chapter (docs/CONSENT.md): bind, grant, verify with consent, a
    bank without consent, the applicant's proven log, revocation."""
    out: list[tuple[str, str]] = []
    szc = RpcClient(nodes["szcredit"].rpc_url)
    bank = RpcClient(nodes["hkbank"].rpc_url)
    other = RpcClient(nodes["webank"].rpc_url)
    applicant_node = RpcClient(nodes["cnix"].rpc_url)
    bank_key = read_key_file(root / "keys" / "hkbank.member.json")
    other_key = read_key_file(root / "keys" / "webank.member.json")
    docs = root / "documents"
    say(
        "7.",
        "The applicant makes a key for the credit report on its own computer (dvp subject "
        "new, dvp subject key) and asks Shenzhen Credit Service for a report bound to it: "
        "from now on, every use of that report needs the applicant's consent.",
    )
    keyfile = docs / "applicant.subject.json"
    keyfile.unlink(missing_ok=True)
    subject = SubjectFile.create(keyfile).new_key("credit-report")
    report = docs / "credit-report-for-hkbank.pdf"
    report.write_bytes(
        b"%PDF-1.7\nPersonal credit report: CHAN Tai Man, HKID A123456(7)\n"
        b"Credit score 742; for the applicant's loan application\n"
    )
    a = attest_file(szc, issuer, report, "credit-report", subject=subject.public_key)
    console.print(
        f"   bound to key {subject.public_key.hex()[:16]}... (the applicant's; nothing "
        f"else about the applicant goes on chain), committed at block {a.height}"
    )
    wait_height(applicant_node, a.height)
    g = grant_consent(
        applicant_node,
        subject,
        "hkbank",
        "loan-application",
        [a.commitment],
        not_after_ms=int(time.time() * 1000) + 30 * 86_400_000,
        max_uses=2,
    )
    gid = bytes.fromhex(g["grant_id"])
    console.print(
        f"   the applicant grants hkbank consent for a loan application, 2 uses, 30 days: "
        f"grant {g['grant_id'][:16]}... at block {g['height']}"
    )

    say("8.", "The Hong Kong bank verifies it: it records an access under the grant first.")
    wait_height(bank, g["height"])
    checked = check_file(bank, genesis, report, a.code, member_key=bank_key)
    result = checked.result
    if isinstance(result, VerificationError):
        raise result
    console.print(f"   access {str(checked.access)[:16]}... recorded; {describe(result)}")
    out.append(("bank with consent", f"{result.status} (access recorded)"))

    say("9.", "WeBank, which holds no consent, tries the same document.")
    wait_height(other, g["height"])
    try:
        check_file(other, genesis, report, a.code)
        node_says = "SERVED (wrong!)"
    except ConsentNeeded as exc:
        node_says = "-32007 consent required"
        console.print(f"   its node refuses the proof: {exc.reason}: {exc}")
    try:
        record_access(other, other_key, gid, a.commitment, "loan-application")
        ledger_says = "ACCEPTED (wrong!)"
    except RpcCallError as exc:
        ledger_says = _ledger_code(exc)
        console.print(f"   its access under hkbank's grant is refused by the ledger: {exc}")
    out.append(("bank without consent", f"REFUSED ({node_says}; ledger: {ledger_says})"))

    say("10.", "The applicant asks who verified the report, then withdraws the consent.")
    log = subject_log(applicant_node, genesis, [subject])
    accesses = [e for e in log.entries if e.event == "access"]
    for e in accesses:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(e.time_ms / 1000))
        console.print(
            f"   {when}: {e.member} verified the credit report for {e.purpose} (grant "
            f"{e.grant_id.hex()[:16]}..., block {e.height}), proven against the genesis"
        )
    who = sorted({e.member for e in accesses})
    out.append(("applicant's log", f"{len(accesses)} access by {', '.join(who)}, proven"))
    r = revoke_consent(applicant_node, subject, gid)
    console.print(f"   grant revoked at block {r['height']}")
    wait_height(bank, r["height"])
    try:
        check_file(bank, genesis, report, a.code, member_key=bank_key)
        node_says = "SERVED (wrong!)"
    except ConsentNeeded as exc:
        node_says = f"-32007 {exc.reason}"
        console.print(f"   the bank's next verification is refused: {exc.reason}: {exc}")
    try:
        record_access(bank, bank_key, gid, a.commitment, "loan-application")
        ledger_says = "ACCEPTED (wrong!)"
    except RpcCallError as exc:
        ledger_says = _ledger_code(exc)
    out.append(("bank after revocation", f"REFUSED ({node_says}; ledger: {ledger_says})"))
    for c in (szc, bank, other, applicant_node):
        c.close()
    return out


def run_demo(root: Path | None = None, keep: bool = False, as_json: bool = False) -> int:
    """Play the story; exit 0 if every outcome and the audit came out as expected.

    ``as_json``: the narration goes to stderr and stdout gets one JSON document,
    ``{"ok": bool, "outcomes": [{"step", "result"}...]}``, for scripts.
    """
    if as_json:
        console.file = sys.stderr
    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="dvp-demo-")
        root = Path(tmp.name) / "devnet"
    started = not (root / "devnet.json").exists() or any(
        devnet.running_pid(root, e) is None for e in load_devnet(root)
    )
    outcomes: list[tuple[str, str]] = []
    try:
        say(
            "0.",
            f"Starting the consortium (CNIX, Shenzhen Credit Service, WeBank, a Hong "
            f"Kong bank) as four validator processes in {root} ...",
        )
        entries = devnet.up(root, nodes=4, wait_s=90, params={"heartbeat_ms": 1000})
        nodes = {e.name: e for e in entries}
        for e in entries:
            console.print(f"   {e.name:9} {e.rpc_url}")
        issuer = read_key_file(root / "keys" / "szcredit.member.json")
        outsider = read_key_file(root / "keys" / "gzfintech.member.json")
        genesis = root / "genesis.json"
        szc = RpcClient(nodes["szcredit"].rpc_url)
        bank = RpcClient(nodes["hkbank"].rpc_url)
        docs = root / "documents"
        docs.mkdir(exist_ok=True)
        report = docs / "credit-report-chan-tai-man.pdf"
        report.write_bytes(
            b"%PDF-1.7\nPersonal credit report: CHAN Tai Man, HKID A123456(7)\n"
            b"Credit score 742; no defaults; issued by Shenzhen Credit Service\n"
        )
        statement = docs / "bank-statement-2026-10.pdf"
        statement.write_bytes(
            b"%PDF-1.7\nBank statement October 2026: CHAN Tai Man\n"
            b"Salary credited HKD 48,000; closing balance HKD 210,554\n"
        )
        quote = docs / "income-certificate.pdf"
        quote.write_bytes(b"%PDF-1.7\nIncome certificate, valid for a few seconds only\n")

        say(
            "1.",
            "Shenzhen Credit Service attests the applicant's credit report and bank "
            "statement. Only a salted hash goes on chain; the files stay with their owner.",
        )
        a_report = attest_file(szc, issuer, report, "credit-report")
        a_statement = attest_file(szc, issuer, statement, "bank-statement")
        a_short = attest_file(
            szc, issuer, quote, "bank-statement", valid_until_ms=int(time.time() * 1000) + 3000
        )
        for name, a in (
            ("credit report", a_report),
            ("bank statement", a_statement),
            ("short-lived certificate", a_short),
        ):
            console.print(
                f"   {name}: committed at block {a.height}; verification code "
                f"printed on the document: [bold]{a.code}[/bold]"
            )

        say(
            "2.",
            "The applicant hands the credit report and its code to a Hong Kong bank, "
            "which hashes the file locally and checks the proof against the genesis.",
        )
        wait_height(bank, a_short.height)
        checked = check_file(bank, genesis, report, a_report.code)
        if isinstance(checked.result, VerificationError):
            raise checked.result
        v = checked.result
        console.print(f"   {describe(v)}")
        outcomes.append(("genuine credit report", v.status))
        # The bank files a receipt with the loan (docs/PROOFS.md §12). It is saved outside
        # the demo's folder so it outlives the demo, and it re-verifies with no node.
        receipt = checked.receipt()
        RECEIPT_PATH.write_bytes(encode_receipt(receipt))
        again = reverify(receipt, checked.genesis, checked.commitment)
        console.print(
            f"   receipt saved to {RECEIPT_PATH}; re-verified offline, as of its time: "
            f"{again.status if isinstance(again, Verdict) else again}"
        )

        say("3.", "Someone edits the credit score in a copy and presents it with the same code.")
        forged = docs / "credit-report-edited.pdf"
        forged.write_bytes(report.read_bytes().replace(b"742", b"842"))
        v = verify_file(bank, genesis, forged, a_report.code)
        console.print(f"   {describe(v)}")
        outcomes.append(("tampered copy", v.status))

        say("4.", "Shenzhen Credit Service withdraws the bank statement (the data changed).")
        r = revoke(szc, issuer, a_statement.commitment, RevokeReason.DATA_CHANGED)
        console.print(f"   revocation committed at block {r['height']}")
        wait_height(bank, r["height"])
        v = verify_file(bank, genesis, statement, a_statement.code)
        console.print(f"   {describe(v)}")
        outcomes.append(("revoked bank statement", v.status))

        say("5.", "The short-lived income certificate's validity runs out.")
        deadline = time.time() + 30
        while True:
            v = verify_file(bank, genesis, quote, a_short.code)
            if v.status != Status.VALID or time.time() > deadline:
                break
            time.sleep(0.5)
        console.print(f"   {describe(v)}")
        outcomes.append(("certificate past its validity", v.status))

        say(
            "6.",
            "An organisation that is a member but not an admitted issuer tries to "
            "attest a document.",
        )
        try:
            attest_file(szc, outsider, report, "credit-report")
            outcomes.append(("attestation by a non-issuer", "ACCEPTED (wrong!)"))
        except RpcCallError as exc:
            code = (exc.data or {}).get("code") if isinstance(exc.data, dict) else None
            console.print(f"   refused by the ledger rules: {code}: {exc}")
            outcomes.append(("attestation by a non-issuer", f"REFUSED ({code})"))

        outcomes += consent_story(root, nodes, genesis, issuer)

        say("11.", "An auditor replays the whole chain from genesis.")
        from ledger.audit import RpcSource, replay

        auditor = RpcClient(nodes["cnix"].rpc_url)
        audit = replay(RpcSource(auditor), read_genesis(genesis))
        auditor.close()
        if audit.ok:
            console.print(
                f"   every block verified: {audit.blocks} blocks, "
                f"{audit.transactions} transactions, certificates, signatures, "
                f"tx roots, state roots and history consistency checked"
            )
            outcomes.append(("audit replay", "OK"))
        else:
            console.print(
                f"   FAILED at height {audit.failure.height}: "  # type: ignore[union-attr]
                f"{audit.failure}"
            )
            outcomes.append(("audit replay", "FAILED"))

        say("Summary", "")
        for what, result in outcomes:
            console.print(f"   {what:32} {result}")
        # The same check with nothing installed: the bank's node serves the page.
        page = f"{nodes['hkbank'].rpc_url}verify"
        up = "" if keep or not started else " (stopped with the demo; dvp demo --keep leaves it up)"
        console.print(f"\n   verification page: {page}{up}")
        console.print(f"   the bank's receipt: {RECEIPT_PATH}")
        for c in (szc, bank):
            c.close()
        expected = ["VALID", "NOT_FOUND", "REVOKED", "EXPIRED"]
        ok = (
            [str(r) for _, r in outcomes[:4]] == expected
            and outcomes[4][1].startswith("REFUSED")
            and [str(r) for _, r in outcomes[5:9]] == CONSENT_EXPECTED
            and outcomes[9][1] == "OK"
        )
        if as_json:
            print(
                json.dumps(
                    {
                        "ok": ok,
                        "verify_page": page,
                        "receipt": str(RECEIPT_PATH),
                        "outcomes": [
                            {"step": what, "result": str(result)} for what, result in outcomes
                        ],
                    },
                    indent=2,
                )
            )
        return 0 if ok else 1
    finally:
        if started and not keep and (root / "devnet.json").exists():
            console.print("\nStopping the consortium this demo started.")
            devnet.down(root)
        if tmp is not None:
            tmp.cleanup()

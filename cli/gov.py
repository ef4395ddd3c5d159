"""``dvp gov propose|vote|list|show``: consortium governance from the command line.

A validator member proposes a change (``GovPropose``: add or remove a member, grant or
withdraw a role or document type, rotate a key, change the validator set or a chain
parameter, revoke an attestation, add or withdraw a consent purpose) by signing it with
its member key; the proposal's id is that transaction's id and the proposer's own vote
counts as yes. Other validator members vote with ``dvp gov vote ID --yes|--no``; the
change takes effect in the block where the yes votes reach the quorum of the validator
set (``ledger.state``).
``dvp gov list`` shows open proposals (``dvp gov show ID...`` the given ones, whatever
their status) with their votes and the node's reason for where each stands ("rejected at
block 57: 2 of 4 voted no; cannot reach 3 yes"), from ``getProposals`` (an API key of any
member).

A proposal that could never pass is refused when it is submitted, by the ledger's rules
(an unknown member, a document type to withdraw that does not exist, a change that would
change nothing: docs/RPC.md lists the codes), with the nearest known name suggested; the
CLI itself refuses a role it does not know and, without ``--new-doc-type``, a document
type the chain does not have (granting one would add it: a typo would add a new type).

The functions ``propose``, ``vote`` and ``proposals`` return data (for tests and
scripts); ``add_gov_commands`` wires them into ``cli.main``'s parser.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.common import (
    EXIT_OK,
    EXPIRY_BLOCKS,
    CliError,
    add_key_options,
    add_rpc_options,
    client,
    emit,
    hex32,
    read_key,
    rpc_errors,
)
from cli.rpc_client import RpcCallError, RpcClient
from ledger.crypto import KeyFileError, KeyPair
from ledger.errors import DecodeError, did_you_mean
from ledger.types import GOV_ARGS, GovAction, GovPropose, GovVote, RevokeReason, Role, Transaction

__all__ = ["ACTIONS", "add_gov_commands", "build_proposal", "proposals", "propose", "vote"]

DEFAULT_DEADLINE_BLOCKS = 1000  # voting stays open this many blocks


@dataclass(frozen=True)
class ActionSpec:
    """One ``dvp gov propose <action>``: the ledger action and its positional args."""

    action: GovAction
    help: str
    args: tuple[tuple[str, str], ...]  # (metavar, help), in GOV_ARGS order
    example: str


def _name(e: Role | RevokeReason) -> str:
    return e.name.lower().replace("_", "-")


ROLE_NAMES = [_name(r) for r in Role if r != Role.VALIDATOR]  # validators: own actions
REASON_NAMES = [_name(r) for r in RevokeReason]
KEY_HELP = "64 hex characters, or a key file (its public key is used)"

ACTIONS: dict[str, ActionSpec] = {
    "add-member": ActionSpec(
        GovAction.ADD_MEMBER,
        "admit a new member organisation",
        (
            ("MEMBER_ID", "the new member's id"),
            ("NAME", "its display name"),
            ("KEY", f"its member public key: {KEY_HELP}"),
        ),
        'dvp gov propose add-member bocsz "Bank of China (Shenzhen)" keys/bocsz.member.json',
    ),
    "remove-member": ActionSpec(
        GovAction.REMOVE_MEMBER,
        "remove a member (remove its validator first)",
        (("MEMBER_ID", "the member"),),
        "dvp gov propose remove-member gzfintech",
    ),
    "grant-role": ActionSpec(
        GovAction.GRANT_ROLE,
        "grant a member a role",
        (("MEMBER_ID", "the member"), ("ROLE", " | ".join(ROLE_NAMES))),
        "dvp gov propose grant-role gzfintech issuer",
    ),
    "withdraw-role": ActionSpec(
        GovAction.WITHDRAW_ROLE,
        "withdraw a role from a member",
        (("MEMBER_ID", "the member"), ("ROLE", " | ".join(ROLE_NAMES))),
        "dvp gov propose withdraw-role gzfintech issuer",
    ),
    "grant-doc-type": ActionSpec(
        GovAction.GRANT_DOC_TYPE,
        "admit an issuer for a document type (a new type, added to the chain's list, "
        "needs --new-doc-type)",
        (("MEMBER_ID", "the issuer"), ("DOC_TYPE", "e.g. payslip")),
        "dvp gov propose grant-doc-type szcredit payslip --new-doc-type",
    ),
    "withdraw-doc-type": ActionSpec(
        GovAction.WITHDRAW_DOC_TYPE,
        "stop an issuer attesting a document type",
        (("MEMBER_ID", "the issuer"), ("DOC_TYPE", "the document type")),
        "dvp gov propose withdraw-doc-type szcredit payslip",
    ),
    "rotate-key": ActionSpec(
        GovAction.ROTATE_KEY,
        "replace a member's transaction-signing key",
        (("MEMBER_ID", "the member"), ("KEY", f"the new member key: {KEY_HELP}")),
        "dvp gov propose rotate-key hkbank keys/hkbank.member.new.json",
    ),
    "add-validator": ActionSpec(
        GovAction.ADD_VALIDATOR,
        "make a member's node a validator (from a later height)",
        (("MEMBER_ID", "the member"), ("NODE_KEY", f"its node key: {KEY_HELP}")),
        "dvp gov propose add-validator gzfintech keys/gzfintech.node.json",
    ),
    "remove-validator": ActionSpec(
        GovAction.REMOVE_VALIDATOR,
        "take a member's node out of the validator set",
        (("MEMBER_ID", "the member"),),
        "dvp gov propose remove-validator webank",
    ),
    "set-param": ActionSpec(
        GovAction.SET_PARAM,
        "change a chain parameter (e.g. max_block_txs, heartbeat_ms)",
        (("NAME", "the parameter"), ("VALUE", "a positive integer")),
        "dvp gov propose set-param max_block_txs 4000",
    ),
    "revoke-attestation": ActionSpec(
        GovAction.REVOKE_ATTESTATION,
        "revoke an attestation by consortium decision",
        (("COMMITMENT", "64 hex characters"), ("REASON", " | ".join(REASON_NAMES))),
        "dvp gov propose revoke-attestation 3f9a... fraud-suspected",
    ),
    "add-purpose": ActionSpec(
        GovAction.ADD_PURPOSE,
        "admit a purpose data subjects may grant consent for (docs/CONSENT.md §3)",
        (("PURPOSE", "an identifier, e.g. credit-card-application"),),
        "dvp gov propose add-purpose credit-card-application",
    ),
    "remove-purpose": ActionSpec(
        GovAction.REMOVE_PURPOSE,
        "withdraw a consent purpose (grants made for it stay in force)",
        (("PURPOSE", "the purpose"),),
        "dvp gov propose remove-purpose account-opening",
    ),
    "activate-version": ActionSpec(
        GovAction.ACTIVATE_VERSION,
        "move the consortium to a higher protocol version from a block height on (the "
        "last step of a rolling upgrade: every node must run a build that supports it)",
        (("VERSION", "the protocol version"), ("HEIGHT", "the first block to carry it")),
        "dvp gov propose activate-version 2 12000",
    ),
}
assert {s.action for s in ACTIONS.values()} == set(GovAction), "every ledger action has a CLI"


def _key_arg(text: str, what: str) -> bytes:
    from ledger.keyfile import read_public_key

    if Path(text).is_file():
        try:
            return read_public_key(Path(text))
        except KeyFileError as exc:
            raise CliError(f"{what}: {exc}") from None
    return _hex32(text, what)


def _hex32(text: str, what: str) -> bytes:
    return hex32(text, what, " (or a key file)")


def _enum_arg(enum: Any, text: str, what: str, allowed: list[str]) -> int:
    try:
        return int(enum[text.upper().replace("-", "_")])
    except KeyError:
        hint = did_you_mean(text.lower(), allowed)
        raise CliError(f"{what}: {text!r} is not one of {', '.join(allowed)}{hint}") from None


def parse_args_of(spec: ActionSpec, values: list[str]) -> tuple[Any, ...]:
    """The ledger arguments of ``spec`` from the command-line strings (CliError if bad)."""
    out: list[Any] = []
    for kind, value, (metavar, _) in zip(GOV_ARGS[spec.action], values, spec.args, strict=True):
        if kind == "key":
            out.append(_key_arg(value, metavar))
        elif kind == "hash":
            out.append(_hex32(value, metavar))
        elif kind == "role":
            role = _enum_arg(Role, value, metavar, ROLE_NAMES)
            out.append(role)
        elif kind == "reason":
            out.append(_enum_arg(RevokeReason, value, metavar, REASON_NAMES))
        elif kind == "int":
            try:
                out.append(int(value))
            except ValueError:
                raise CliError(f"{metavar}: {value!r} is not an integer") from None
        else:  # "id", "name": text the ledger checks when the transaction is decoded
            out.append(value)
    return tuple(out)


def _chain(c: RpcClient) -> tuple[str, int]:
    st = c.call("status")
    return str(st["chain_id"]), int(st["height"])


def _checked(tx: Transaction) -> Transaction:
    """Round-trip through the strict decoder: bad ids or names fail here, not at the node."""
    try:
        return Transaction.decode(tx.encode())
    except DecodeError as exc:
        raise CliError(f"not a valid proposal: {exc}") from None


def build_proposal(
    c: RpcClient,
    key: KeyPair,
    action: GovAction,
    args: tuple[Any, ...],
    *,
    deadline_blocks: int = DEFAULT_DEADLINE_BLOCKS,
) -> Transaction:
    chain_id, height = _chain(c)
    payload = GovPropose(action, args, height + deadline_blocks)
    return _checked(
        Transaction(
            chain_id, key.public_key, secrets.randbits(63), height + EXPIRY_BLOCKS, payload
        ).signed(key)
    )


def _proposal_after(c: RpcClient, pid: str) -> dict[str, Any] | None:
    """The proposal's state, or None if this caller may not read it (no member key)."""
    try:
        found = c.call("getProposals", ids=[pid])
    except RpcCallError as exc:
        if exc.code == -32002:
            return None
        raise
    proposal: dict[str, Any] = found["proposals"][0]
    proposal["quorum"] = found["quorum"]
    return proposal


def _submit(c: RpcClient, tx: Transaction, wait: bool) -> dict[str, Any]:
    res: dict[str, Any] = c.call("submitTransaction", tx=tx.encode().hex(), wait=wait)
    return res


def propose(
    c: RpcClient,
    key: KeyPair,
    action: GovAction,
    args: tuple[Any, ...],
    *,
    deadline_blocks: int = DEFAULT_DEADLINE_BLOCKS,
    wait: bool = False,
) -> dict[str, Any]:
    """Sign and submit a proposal. ``proposal_id`` is its transaction id."""
    tx = build_proposal(c, key, action, args, deadline_blocks=deadline_blocks)
    assert isinstance(tx.payload, GovPropose)  # build_proposal makes nothing else
    res = _submit(c, tx, wait)
    out = {
        "proposal_id": res["tx_id"],
        "status": res["status"],
        "height": res.get("height"),
        "deadline_height": tx.payload.deadline_height,
    }
    if res["status"] == "committed":
        out["proposal"] = _proposal_after(c, res["tx_id"])
    return out


def vote(
    c: RpcClient, key: KeyPair, proposal_id: bytes, approve: bool, *, wait: bool = False
) -> dict[str, Any]:
    """Sign and submit a vote on an open proposal."""
    chain_id, height = _chain(c)
    tx = _checked(
        Transaction(
            chain_id,
            key.public_key,
            secrets.randbits(63),
            height + EXPIRY_BLOCKS,
            GovVote(proposal_id, approve),
        ).signed(key)
    )
    res = _submit(c, tx, wait)
    out = {
        "proposal_id": proposal_id.hex(),
        "vote": "yes" if approve else "no",
        "tx_id": res["tx_id"],
        "status": res["status"],
        "height": res.get("height"),
    }
    if res["status"] == "committed":
        out["proposal"] = _proposal_after(c, proposal_id.hex())
    return out


def proposals(c: RpcClient, ids: list[str] | None = None) -> dict[str, Any]:
    """``getProposals``: open proposals, or these ids whatever their status."""
    result: dict[str, Any] = c.call("getProposals", **({"ids": ids} if ids else {}))
    return result


# ------------------------------------------------------------------------- output


def _describe(p: dict[str, Any]) -> str:
    return f"{p['action']} {' '.join(str(a) for a in p['args'])}"


def _state_line(p: dict[str, Any]) -> str:
    """``REJECTED at block 57: 2 of 4 voted no; cannot reach 3 yes (yes: cnix; no: ...)``:
    the node's reason (``ledger.rules.proposal_outcome``) and who voted how."""
    status, _, why = p["reason"].partition(" ")
    return (
        f"{status.upper()} {why} (yes: {', '.join(p['yes']) or '-'}; "
        f"no: {', '.join(p['no']) or '-'})"
    )


def _submitted_line(what: str, r: dict[str, Any]) -> str:
    where = f" at block {r['height']}" if r.get("height") else " (pending; --wait to wait)"
    return f"{what}: {r['status']}{where}"


def _known_doc_type(c: RpcClient, doc: str) -> None:
    """Granting a document type the chain does not have adds it: a typo would add a new
    type, so that takes ``--new-doc-type`` (skipped if this key may not list members)."""
    try:
        known = c.call("getMembers")["doc_types"]
    except RpcCallError as exc:
        if exc.code == -32002:
            return
        raise
    if doc not in known:
        raise CliError(
            f"DOC_TYPE: {doc!r} is not a document type of this chain"
            f"{did_you_mean(doc, known)}; to add it as a new type, pass --new-doc-type"
        )


def cmd_propose(args: argparse.Namespace) -> int:
    spec = ACTIONS[args.action]
    values = parse_args_of(spec, [getattr(args, m.lower()) for m, _ in spec.args])
    if not 1 <= args.deadline_blocks <= 100_000:
        raise CliError("--deadline-blocks must be between 1 and 100000")

    def run() -> int:
        with client(args) as c:
            if spec.action == GovAction.GRANT_DOC_TYPE and not args.new_doc_type:
                _known_doc_type(c, values[1])
            r = propose(
                c,
                read_key(args.key, args.passphrase_file),
                spec.action,
                values,
                deadline_blocks=args.deadline_blocks,
                wait=args.wait,
            )

        def human() -> None:
            print(f"proposal {r['proposal_id']}")
            print(f"  {args.action} {' '.join(getattr(args, m.lower()) for m, _ in spec.args)}")
            print("  " + _submitted_line("transaction", r))
            p = r.get("proposal")
            if p is not None:
                print("  " + _state_line(p))
            print(
                f"other validator members vote with: dvp gov vote {r['proposal_id']} --yes "
                f"--key KEYFILE --rpc {args.rpc}"
            )

        emit(args, r, human)
        return EXIT_OK

    return rpc_errors(run)


def cmd_vote(args: argparse.Namespace) -> int:
    pid = _hex32(args.proposal_id, "PROPOSAL_ID")

    def run() -> int:
        with client(args) as c:
            r = vote(c, read_key(args.key, args.passphrase_file), pid, args.yes, wait=args.wait)

        def human() -> None:
            print(_submitted_line(f"vote {r['vote']} on {r['proposal_id'][:16]}", r))
            p = r.get("proposal")
            if p is not None:
                print(f"{_describe(p)}: {_state_line(p)}")

        emit(args, r, human)
        return EXIT_OK

    return rpc_errors(run)


def cmd_list(args: argparse.Namespace) -> int:
    ids = [_hex32(i, "PROPOSAL_ID").hex() for i in args.ids]

    def run() -> int:
        with client(args) as c:
            doc = proposals(c, ids or None)
        emit(args, doc, lambda: _table(doc, bool(ids)))
        return EXIT_OK

    return rpc_errors(run)


def _table(doc: dict[str, Any], by_id: bool) -> None:
    """One block per proposal: plain lines read well at any terminal width."""
    rows = doc["proposals"]
    if not rows:
        print(f"no open proposals at height {doc['height']}")
        return
    print(
        f"{'proposals' if by_id else 'open proposals'} at height {doc['height']} "
        f"(quorum {doc['quorum']} of {len(doc['voters'])} validators: "
        f"{', '.join(doc['voters'])})"
    )
    for p in rows:
        print(
            f"\n{p['proposal_id']}\n  {_describe(p)}, proposed by {p['proposer']}\n  "
            f"{_state_line(p)}"
        )


# ------------------------------------------------------------------------- parser


def add_gov_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``dvp gov propose|vote|list|show`` to the top-level subparsers (``cli.main``)."""
    gov = sub.add_parser("gov", help="propose, vote on and list consortium changes").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True
    )

    def signer_options(p: argparse.ArgumentParser) -> None:
        add_key_options(p, "your member key file (a validator member's)")
        add_rpc_options(p)
        p.add_argument(
            "--wait",
            action="store_true",
            help="return once committed, with the proposal's new state",
        )

    prop = gov.add_parser(
        "propose",
        help="propose a change to the consortium (validator members)",
        description="propose a change; the proposal id is printed. Actions:\n  "
        + "\n  ".join(f"{n:<19} {s.help}" for n, s in ACTIONS.items())
        + "\n\nexample:\n  dvp gov propose grant-doc-type szcredit payslip --new-doc-type "
        "--key keys/cnix.member.json --rpc http://127.0.0.1:26701/ --wait",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, spec in ACTIONS.items():
        p = add(
            prop,
            name,
            spec.help,
            f"{spec.example} --key keys/cnix.member.json --rpc http://127.0.0.1:26701/ --wait",
            cmd_propose,
        )
        for metavar, help_ in spec.args:
            p.add_argument(metavar.lower(), metavar=metavar, help=help_)
        signer_options(p)
        if spec.action == GovAction.GRANT_DOC_TYPE:
            p.add_argument(
                "--new-doc-type",
                action="store_true",
                help="DOC_TYPE is new: add it to the chain's document types (without "
                "this flag a type the chain does not know is refused as a likely typo)",
            )
        p.add_argument(
            "--deadline-blocks",
            type=int,
            default=DEFAULT_DEADLINE_BLOCKS,
            help=f"voting closes this many blocks from now (default {DEFAULT_DEADLINE_BLOCKS})",
        )

    p = add(
        gov,
        "vote",
        "vote on an open proposal (validator members)",
        "dvp gov vote 3f9a...e1 --yes --key keys/webank.member.json "
        "--rpc http://127.0.0.1:26703/ --wait",
        cmd_vote,
    )
    p.add_argument("proposal_id", metavar="PROPOSAL_ID", help="64 hex characters")
    choice = p.add_mutually_exclusive_group(required=True)
    choice.add_argument("--yes", dest="yes", action="store_true", help="approve")
    choice.add_argument("--no", dest="yes", action="store_false", help="reject")
    signer_options(p)

    p = add(
        gov,
        "list",
        "open proposals with their votes (or the given ids, any status)",
        "dvp gov list --rpc http://127.0.0.1:26701/ --api-key $DVP_API_KEY",
        cmd_list,
    )
    p.add_argument(
        "ids", nargs="*", metavar="PROPOSAL_ID", help="show these, whatever their status"
    )
    add_rpc_options(p)
    p = add(
        gov,
        "show",
        "proposals by id, whatever their status, with their votes and why they "
        "were approved, rejected or expired",
        "dvp gov show 3f9a...e1 --rpc http://127.0.0.1:26701/",
        cmd_list,
    )
    p.add_argument("ids", nargs="+", metavar="PROPOSAL_ID", help="64 hex characters each")
    add_rpc_options(p)

"""JSON-RPC error codes: the one place that says what each code means to a client.

Owns the ``RpcError`` hierarchy. A handler signals an expected failure by raising
one of these; the dispatcher turns it into a JSON-RPC error object. Anything else a
handler raises is a bug on our side: the dispatcher logs it with its traceback and the
caller only sees ``-32603`` with an incident id, never a stack trace.

Codes (JSON-RPC 2.0 reserves -32768..-32000; -32099..-32000 are ours):

==========  ===================  ===========================================================
code        class                meaning
==========  ===================  ===========================================================
-32700      ``ParseError``       body is not UTF-8 JSON, or breaks a parser limit
                                 (nesting depth, duplicate keys, NaN/Infinity)
-32600      ``InvalidRequest``   JSON, but not a valid request object / batch
-32601      ``MethodNotFound``   no such method (or a notification to it: no reply)
-32602      ``InvalidParams``    params missing, unknown, mistyped, out of range, or
                                 positional; ``data = {"param": name, "reason": ...}``
-32603      ``InternalError``    our bug; ``data = {"incident": id}`` matches the server log
-32001      ``NotFound``         the thing asked for does not exist (block, commitment...)
-32002      ``Unauthorised``     no, unknown, or insufficient credentials for the method
-32003      ``Busy``             the node is temporarily unable to take it (mempool full);
                                 retrying later may succeed
-32004      ``Rejected``         refused by ledger rules; ``data = {"code": <stable code>}``
                                 is the ledger's ``RuleError.code``, stable across releases
-32005      ``Timeout``          the call did not finish within its deadline
-32006      ``Pruned``           the answer needs a block body this node pruned
                                 (``[ledger] retain_blocks``); an archive node has it;
                                 ``data = {"height": h, "bodies_from": f}``
-32007      ``ConsentRequired``  the document is bound to a data subject and the call
                                 names no committed access of the caller's
                                 (docs/CONSENT.md §4); ``data = {"reason": code,
                                 "grants": [...]}`` (the caller's live grants, if any)
==========  ===================  ===========================================================

Rules:
- Messages are for humans and may change; clients branch on ``code`` and ``data.code``.
- ``data`` is always JSON-able and never contains anything the caller did not send or
  is not entitled to see.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "APPLICATION_ERRORS",
    "Busy",
    "ConsentRequired",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "MethodNotFound",
    "NotFound",
    "ParseError",
    "Pruned",
    "Rejected",
    "RpcError",
    "Timeout",
    "Unauthorised",
]

# A JSON value as produced by json.loads; kept as Any because mypy cannot express the
# recursive type without a lot of casts on the hot path.
JsonValue = Any


class RpcError(Exception):
    """Base of every error that becomes a JSON-RPC error object.

    ``code`` is a class attribute so the OpenRPC document can list a method's errors
    from their classes alone; ``title`` is the short default message.
    """

    code: ClassVar[int] = -32603
    title: ClassVar[str] = "internal error"
    # Label used in metrics (bounded set: one per class).
    outcome: ClassVar[str] = "internal_error"

    def __init__(self, message: str | None = None, data: JsonValue = None) -> None:
        self.message = message if message is not None else self.title
        self.data = data
        super().__init__(self.message)

    def to_json(self) -> dict[str, JsonValue]:
        """The ``error`` member of a response."""
        error: dict[str, JsonValue] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ParseError(RpcError):
    code = -32700
    title = "parse error"
    outcome = "parse_error"


class InvalidRequest(RpcError):
    code = -32600
    title = "invalid request"
    outcome = "invalid_request"


class MethodNotFound(RpcError):
    code = -32601
    title = "method not found"
    outcome = "method_not_found"


class InvalidParams(RpcError):
    """A parameter is wrong; the message names it and says what is wrong."""

    code = -32602
    title = "invalid params"
    outcome = "invalid_params"

    def __init__(self, message: str, *, param: str | None = None, reason: str | None = None):
        data = None
        if param is not None:
            data = {"param": param, "reason": reason if reason is not None else message}
        super().__init__(message, data)


class InternalError(RpcError):
    code = -32603
    title = "internal error"
    outcome = "internal_error"


class NotFound(RpcError):
    code = -32001
    title = "not found"
    outcome = "not_found"


class Unauthorised(RpcError):
    code = -32002
    title = "unauthorised"
    outcome = "unauthorised"


class Busy(RpcError):
    code = -32003
    title = "busy, retry later"
    outcome = "busy"


class Rejected(RpcError):
    """Refused by the ledger's rules; ``rule_code`` is the stable machine-readable reason."""

    code = -32004
    title = "rejected by ledger rules"
    outcome = "rejected"

    def __init__(self, rule_code: str, message: str | None = None) -> None:
        self.rule_code = rule_code
        super().__init__(message if message is not None else rule_code, {"code": rule_code})


class Timeout(RpcError):
    code = -32005
    title = "timed out"
    outcome = "timeout"


class Pruned(RpcError):
    """The answer needs a block body this node pruned (``ledger.errors.BodyPruned``)."""

    code = -32006
    title = "pruned on this node"
    outcome = "pruned"

    def __init__(self, message: str, height: int, bodies_from: int) -> None:
        super().__init__(message, {"height": height, "bodies_from": bodies_from})


class ConsentRequired(RpcError):
    """A document bound to a data subject is served only for a recorded access
    (docs/CONSENT.md §4): ``reason`` is a stable code (``no_grant``, ``grant_revoked``,
    ``grant_expired``, ``grant_used_up``, ``grant_not_yet_valid``, ``no_access``,
    ``access_not_found``, ``access_mismatch``, ``wrong_grantee``), ``grants`` the
    caller's live grants for the document (how to record an access)."""

    code = -32007
    title = "consent required"
    outcome = "consent_required"

    def __init__(self, message: str, reason: str, grants: list[dict[str, Any]]) -> None:
        self.reason = reason
        super().__init__(message, {"reason": reason, "grants": grants})


# The application codes a method may declare in ``errors=``; listed in OpenRPC.
APPLICATION_ERRORS: tuple[type[RpcError], ...] = (
    NotFound,
    Unauthorised,
    Busy,
    Rejected,
    Timeout,
    Pruned,
    ConsentRequired,
)

"""The ledger's error types: the one place callers look to tell bad input from our own bugs.

Rules:
- ``DecodeError`` is the single documented error for bytes that are not a canonical
  encoding of the expected type (wrong types, unknown or missing fields, trailing
  bytes, non-canonical forms, oversize input). Decoders raise nothing else.
- ``ValidationError`` is a well-formed object that breaks a stateless rule
  (bad signature, wrong chain id, out-of-range field).
- ``KeyFileError`` is a key file that cannot be used (missing, too open, malformed, a
  wrong passphrase); its message says what to do.
- ``ProtocolVersionError`` is this build not speaking the consortium's protocol
  version: the process stops (not a ``LedgerError``).
- ``RuleError`` is a well-formed, validly signed transaction or block that the
  state machine refuses (not an issuer for that document type, already attested...).
  It carries a stable machine-readable ``code``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LedgerError(Exception):
    """Base class of every error the ledger raises on purpose."""


class DecodeError(LedgerError, ValueError):
    """Input bytes are not the canonical encoding of the expected object."""


class ValidationError(LedgerError, ValueError):
    """A decoded object breaks a stateless rule (signature, chain id, ranges)."""


class RuleError(LedgerError):
    """The state machine refuses a transaction or block; ``code`` is stable for clients.
    ``tx_id``: the refused transaction, when strict block execution refused a block for
    one (an auditor names it)."""

    def __init__(self, code: str, message: str, tx_id: bytes = b"") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.tx_id = tx_id


class StoreError(LedgerError):
    """The on-disk store is missing, corrupt, foreign, or failed to write."""


class StoreDamage(StoreError):
    """The store's contents are damaged: a checksum, a missing or undecodable record, a
    broken chain link or index (not a foreign store, a lock or a failed write). The
    message names the database and where; the fix is to rebuild it (``dvp store resync``)
    or restore it."""


class BodyPruned(StoreError):
    """A block body (its transactions) was pruned from this store on purpose: its header,
    certificate and the state stay, an archive node (``[ledger] retain_blocks = 0``)
    keeps every body. ``height`` is the block asked for, ``bodies_from`` the lowest
    height whose body this store still keeps. Not damage."""

    def __init__(self, height: int, bodies_from: int, retain: int = 0) -> None:
        kept = f"the newest {retain} block bodies, " if retain else ""
        super().__init__(
            f"block {height}'s body is pruned on this node (it keeps {kept}from height "
            f"{bodies_from} on); ask an archive node (one with [ledger] retain_blocks = "
            f"0), which keeps every block"
        )
        self.height = height
        self.bodies_from = bodies_from


class ProtocolVersionError(Exception):
    """This build cannot speak the protocol version the consortium runs (or was told a
    bad rehearsal override). Deliberately not a ``LedgerError``: the callers that treat a
    ``LedgerError`` as a peer's bad block must let it through, and the node stops with
    this one line (a node that guessed would fork)."""


class KeyFileError(LedgerError, ValueError):
    """A key file is missing, unreadable, too open, malformed or cannot be decrypted."""


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest of ``known`` to a mistyped ``word``, or ""."""
    near = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""

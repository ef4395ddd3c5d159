"""``one_line``: a message made safe to print as one line of a terminal or log.

Error messages quote what users and peers gave (file names, config keys, argument
values); those may hold newlines, control characters or undecodable bytes (a non-UTF-8
argument arrives as lone surrogates). Escaping them keeps "one error, one line" true
and keeps a printed message from failing to encode.
"""

from __future__ import annotations


def one_line(text: str) -> str:
    """``text`` with every non-printable character (newlines, surrogates) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)

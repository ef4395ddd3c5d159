"""Structured logs: one JSON object a line on stderr, with height, view and peer fields.

``log = get_logger("node")``; ``log.info("committed", height=5, txs=120)``. Fields are
passed as keyword arguments and land as top-level JSON keys beside ``ts``, ``level``,
``logger``, ``msg`` and the node ``name``. Binary values are shown as short hex.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_NODE_NAME = ""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": _NODE_NAME,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            for k, v in fields.items():
                doc[k] = v.hex()[:16] if isinstance(v, (bytes, bytearray)) else v
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class Logger:
    """A thin wrapper so call sites read ``log.info("msg", height=h)``."""

    def __init__(self, name: str) -> None:
        self._log = logging.getLogger(name)

    def _emit(self, level: int, msg: str, fields: dict[str, Any], exc: bool = False) -> None:
        if self._log.isEnabledFor(level):
            self._log.log(level, msg, extra={"fields": fields}, exc_info=exc)

    def debug(self, msg: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, msg, fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._emit(logging.INFO, msg, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._emit(logging.WARNING, msg, fields)

    def error(self, msg: str, exc: bool = False, **fields: Any) -> None:
        self._emit(logging.ERROR, msg, fields, exc)


def get_logger(name: str) -> Logger:
    return Logger(f"dvp.{name}")


def setup_logging(node_name: str, level: str = "info") -> None:
    """Send dvp.* logs as JSON lines to stderr (idempotent)."""
    global _NODE_NAME
    _NODE_NAME = node_name
    root = logging.getLogger("dvp")
    root.setLevel(level.upper())
    if not any(getattr(h, "_dvp", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._dvp = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.propagate = False
    logging.Formatter.converter = time.gmtime

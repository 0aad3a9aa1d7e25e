"""Log output: JSON lines or plain text on stdout, and the one-line-per-request access log.

JSON lines use the standard library's spaced separators on purpose: with ``duration_ms`` as the last
field, the guide's ``grep "duration" | awk '{print $NF}' | sort -n`` sorts requests by duration
(``sort -n`` reads the number before the closing brace). Text lines end with the bare duration for
the same reason. Levels print as DEBUG/INFO/WARNING/ERROR so ``grep -E "(ERROR|WARN)"`` finds problems.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ACCESS_LOGGER = "omendb.access"

# Our level names (the guide's, plus Rust's "trace") mapped onto Python logging's.
LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is printed as a field.
# uvicorn adds color_message (the message with terminal colour codes): never wanted in a log file.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName",
                                                                       "color_message"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname, "logger": record.name,
                               "msg": record.getMessage()}
        fields = _fields(record)
        duration = fields.pop("duration_ms", None)
        out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if duration is not None:
            out["duration_ms"] = duration
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        duration = fields.pop("duration_ms", None)
        parts = [_timestamp(record), record.levelname, record.name, record.getMessage()]
        parts += [f"{k}={v}" for k, v in fields.items()]
        if duration is not None:
            parts += ["duration_ms", str(duration)]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str, fmt: str) -> None:
    """Route our loggers and uvicorn's through one stdout handler in the configured format."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's loggers keep their own handlers otherwise; ours print the access line instead.
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True

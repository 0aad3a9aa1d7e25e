"""Log output: JSON lines or plain text on stdout, and the one-line-per-request access log.

JSON lines use the standard library's spaced separators on purpose: with ``duration_ms`` as the last
field, the guide's ``grep "duration" | awk '{print $NF}' | sort -n`` sorts requests by duration
(``sort -n`` reads the number before the closing brace). Text lines end with the bare duration for
the same reason. Levels print as DEBUG/INFO/WARNING/ERROR so ``grep -E "(ERROR|WARN)"`` finds problems.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
import weakref
from typing import Any

import orjson
from pythonjsonlogger.core import BaseJsonFormatter

from omendb.loglevels import OFF, TRACE

ACCESS_LOGGER = "omendb.access"

# Our level names (the guide's, plus env_logger's "trace" and "off") mapped onto Python logging's.
LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR, "off": OFF}

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is printed as a field.
# uvicorn adds color_message (the message with terminal colour codes): never wanted in a log file.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName",
                                                                       "color_message"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(BaseJsonFormatter):
    """python-json-logger's formatter with our field names (ts, level, logger, msg, the ``extra=`` fields,
    exc), our timestamp, orjson's compact output and ``duration_ms`` last (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__(["asctime", "levelname", "name", "message"], reserved_attrs=sorted(_STANDARD),
                         rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg",
                                        "exc_info": "exc"})

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _timestamp(record)

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict):
            # A dict is a message like any other (python-json-logger would spread its keys into the fields).
            record = logging.makeLogRecord({**vars(record), "msg": record.getMessage(), "args": None})
        return super().format(record)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        log_data.pop("stack_info", None)  # never printed (python-json-logger would add it)
        if "exc" in log_data:
            log_data["exc"] = log_data.pop("exc")  # after the fields, as it always was
        return log_data

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        duration = log_data.pop("duration_ms", None)
        try:
            line = orjson.dumps(log_data, default=str).decode()
        except TypeError:  # e.g. an integer beyond 64 bits in a field
            line = json.dumps(log_data, default=str, separators=(",", ":"))
        if duration is None:
            return line
        # The duration goes last, after a space, for the guide's awk '{print $NF}'.
        return f'{line[:-1]}, "duration_ms": {duration}}}'


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
    """Route our loggers and uvicorn's through one stdout handler in the configured format.

    The level applies to OmenDB's own loggers (``omendb.*``), as RUST_LOG's ``omendb=debug`` directive
    would: debug and trace add recovery, merge, checkpoint, WAL and replication lines. Libraries (uvicorn,
    httpx, numba) stay at info, whose debug output is noise for an operator; ``off`` silences everything."""
    handler = _Handler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(LEVELS[level], logging.INFO))
    logging.getLogger("omendb").setLevel(LEVELS[level])
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's loggers keep their own handlers otherwise; ours print the access line instead.
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True


# Access logs whose pending lines go out before any other log line of their thread (_Handler).
_ACCESS_LOGS: weakref.WeakSet[AccessLog] = weakref.WeakSet()


class _Handler(logging.StreamHandler):
    """The stdout handler: first writes the access lines its thread still holds (AccessLog), so a
    request's lines and the access line after them keep their order."""

    def emit(self, record: logging.LogRecord) -> None:
        for access in tuple(_ACCESS_LOGS):
            access.flush_own()
        super().emit(record)

    def flush(self) -> None:  # logging.shutdown(), e.g. on a second shutdown signal
        for access in tuple(_ACCESS_LOGS):
            access.flush_own()
        super().flush()


_DURATION_TEXTS: dict[int, str] = {}  # whole microseconds -> duration_text (durations under 10 ms)


def duration_text(elapsed: float) -> str:
    """`elapsed` seconds as an access line's duration_ms: milliseconds rounded to the microsecond, written
    as ``round(ms, 3)`` is. Formatting a float costs a point read about a microsecond, rounding it another
    third, so the texts of durations under 10 ms (at most 10,000 short strings) are made once."""
    us = int(elapsed * 1_000_000 + 0.5)
    text = _DURATION_TEXTS.get(us)
    if text is None:
        text = repr(us / 1000)
        if us < 10_000:
            _DURATION_TEXTS[us] = text
    return text


class AccessLog:
    """The per-request access line, written straight to the log stream in the configured format.

    It is the one log line on every request's path, so it skips the logging module's record, lock and
    per-line flush (a third of a point read's cost): lines are formatted exactly as the formatters above
    would and collected here, then written to stdout together at least every ``FLUSH_SECONDS``, at
    shutdown, and before any other log line from the same thread (so a request's own lines come before
    its access line). Collected here rather than in stdout's buffer: with ``PYTHONUNBUFFERED=1`` (set
    in the engine's image) stdout has none, and every line was a write system call. The ``omendb.access``
    logger's level still decides whether lines are written.

    One thread writes the lines and flushes them: the one that made the AccessLog (the event loop's).
    """

    FLUSH_SECONDS = 0.25
    FLUSH_MS = 250

    def __init__(self, fmt: str, stream: Any = None) -> None:
        self.json = fmt == "json"
        self.stream = stream if stream is not None else sys.stdout
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self._last_flush = time.monotonic()
        self._second = -1  # the wall-clock second whose formatted timestamp is in _stamp (strftime once a second)
        self._stamp = ""
        self._quoted: dict[str, str] = {}  # user name -> its JSON string (write_plain)
        self._last_flush_ms = int(time.time() * 1000)
        self._start_ms = -1  # the millisecond whose line start (timestamp to method) is in _start (write_plain)
        self._start = ""
        self._pending: list[str] = []  # lines not yet written to the stream
        self._owner = threading.get_ident()
        _ACCESS_LOGS.add(self)

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def write(self, method: str, path: str, status: int, user: str, remote: str, request_id: str,
              duration_ms: float) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        ts = f"{self._stamp}.{int(now * 1000) % 1000:03d}Z"
        if self.json:
            head = orjson.dumps({"ts": ts, "level": "INFO", "logger": ACCESS_LOGGER, "msg": "request",
                                 "method": method, "path": path, "status": status, "user": user, "remote": remote,
                                 "request_id": request_id}).decode()
            line = f'{head[:-1]}, "duration_ms": {duration_ms}}}\n'
        else:
            line = (f"{ts} INFO {ACCESS_LOGGER} request method={method} path={path} status={status} user={user} "
                    f"remote={remote} request_id={request_id} duration_ms {duration_ms}\n")
        self._pending.append(line)
        if time.monotonic() - self._last_flush >= self.FLUSH_SECONDS:
            self.flush()

    def write_plain(self, method: str, path: str, status: int, user: str, remote: str, request_id: str,
                    elapsed: float) -> None:
        """``write`` for a caller whose method, path, remote address and request id need no JSON escaping
        (the single-key reads of fastpath.py: a path of digits, an IP address, a request id of
        ``[A-Za-z0-9._:-]``), given the request's `elapsed` seconds: the same line (duration_ms rounded
        to the microsecond, duration_text), formatted without building and serializing a dict. Per request
        only the fields after the method are formatted: the line's start, with its timestamp, is made
        once per millisecond, and the user name's JSON form once per name. tests/server/test_units.py
        checks that both give the same lines."""
        if not self.json:
            self.write(method, path, status, user, remote, request_id, round(elapsed * 1000, 3))
            return
        now_ms = int(time.time() * 1000)
        if now_ms != self._start_ms:
            second = now_ms // 1000
            if second != self._second:
                self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._start_ms = now_ms
            self._start = (f'{{"ts":"{self._stamp}.{now_ms % 1000:03d}Z","level":"INFO","logger":'
                           f'"{ACCESS_LOGGER}","msg":"request","method":"')
        quoted = self._quoted.get(user)
        if quoted is None:
            quoted = orjson.dumps(user).decode()
            if len(self._quoted) < 10_000:  # users of the htpasswd file: bounded, but bound it anyway
                self._quoted[user] = quoted
        self._pending.append(f'{self._start}{method}","path":"{path}","status":{status},"user":{quoted},"remote":'
                             f'"{remote}","request_id":"{request_id}", "duration_ms": {duration_text(elapsed)}}}\n')
        if now_ms - self._last_flush_ms >= self.FLUSH_MS:
            self.flush()

    def flush(self) -> None:
        """Write the collected lines and flush the stream; from the owning thread (see the class)."""
        self._last_flush_ms = int(time.time() * 1000)
        self._last_flush = time.monotonic()
        pending = self._pending
        with contextlib.suppress(OSError, ValueError):
            if pending:
                text = "".join(pending)
                pending.clear()
                self.stream.write(text)
            self.stream.flush()

    def flush_own(self) -> None:
        """``flush`` if there are lines and this is the owning thread (other threads' log lines are not
        ordered with requests anyway)."""
        if self._pending and threading.get_ident() == self._owner:
            self.flush()

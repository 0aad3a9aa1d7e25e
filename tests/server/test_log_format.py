"""The JSON log line, byte for byte (issue 18, item 8: python-json-logger replaced the hand-written formatter;
every expected line below is what the hand-written one printed, so the switch changed no byte)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from omendb.server.logs import JsonFormatter

HEAD = '{"ts":"2025-12-04T12:00:00.250Z","level":"INFO","logger":"omendb.server",'


def _record(msg: Any = "request", args: tuple[Any, ...] = (), exc: bool = False, stack: str | None = None,
            **extra: Any) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("omendb.server", logging.INFO, "/src/app.py", 7, msg, args, exc_info, sinfo=stack)
    record.created, record.msecs = 1764849600.25, 250.0
    for key, value in extra.items():
        setattr(record, key, value)
    return record


@pytest.mark.parametrize(("record", "expected"), [
    (_record("opened %s with %d records", ("db", 3)), '"msg":"opened db with 3 records"}'),
    (_record(method="GET", status=200, user="ü", remote="127.0.0.1"),
     '"msg":"request","method":"GET","status":200,"user":"ü","remote":"127.0.0.1"}'),
    # duration_ms last, after a space: the guide's grep "duration" | awk '{print $NF}' | sort -n.
    (_record(method="GET", status=200, duration_ms=1.5), '"msg":"request","method":"GET","status":200, '
                                                         '"duration_ms": 1.5}'),
    (_record('caf\u00e9 \u2603 "q" \\ \n'), '"msg":"café ☃ \\"q\\" \\\\ \\n"}'),
    (_record(path=Path("/var/lib/omendb"), tags={"a"}), '"msg":"request","path":"/var/lib/omendb","tags":"{\'a\'}"}'),
    # Beyond orjson's 64 bits: the standard library's encoder, same compact layout.
    (_record(lsn=2**70, duration_ms=3), '"msg":"request","lsn":1180591620717411303424, "duration_ms": 3}'),
    # uvicorn's color_message and asyncio's taskName are never printed.
    (_record(color_message="\x1b[1mhi\x1b[0m", taskName="Task-1"), '"msg":"request"}'),
    (_record({"a": 1}), '"msg":"{\'a\': 1}"}'),
    (_record(stack="Stack (most recent call last):\n  frame"), '"msg":"request"}'),
], ids=["args", "extras", "duration", "escapes", "not-json", "big-int", "uvicorn", "dict-message", "stack"])
def test_json_lines_are_unchanged(record: logging.LogRecord, expected: str) -> None:
    assert JsonFormatter().format(record) == HEAD + expected


def test_the_exception_follows_the_fields_and_precedes_the_duration() -> None:
    line = JsonFormatter().format(_record("failed", exc=True, phase="merge", duration_ms=2))
    assert line.startswith(HEAD + '"msg":"failed","phase":"merge","exc":"Traceback (most recent call last):\\n')
    assert line.endswith('ValueError: boom", "duration_ms": 2}')
    assert list(json.loads(line)) == ["ts", "level", "logger", "msg", "phase", "exc", "duration_ms"]

"""Timestamps as Kubernetes writes them (RFC 3339, UTC, whole seconds), and back."""

from __future__ import annotations

import datetime as dt
from typing import Any


def timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> dt.datetime | None:
    """A timestamp from the API (a string, or a datetime from the client's models); None when unset."""
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))

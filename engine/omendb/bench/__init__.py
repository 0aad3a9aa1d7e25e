"""Benchmarks: each module measures against a baseline in the same run (`make bench`)."""

from __future__ import annotations

import re
from pathlib import Path


def record_section(heading: str, section: str, path: Path) -> None:
    """Put `section` (which starts with `## {heading}`) into the benchmarks document, replacing that heading's
    previous section or appending it; other sections are left as they are."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\b.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(text)
    text = pattern.sub(lambda _: section + "\n", text) if found else text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")

"""Small tmpfs file systems for disk-full tests: mounted for real (the tests run as root), so the engine
meets ENOSPC from the kernel, for bytes and for inodes. Mounting must work: a test that cannot mount fails
loudly instead of skipping, so a disk-full test never silently stops running."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str, inodes: int = 1024) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes={inodes}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs on {path} (disk-full tests need root and mount): "
                    f"{result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill_bytes(path: Path) -> Path:
    """Write `path` until its volume has no byte left; returns it (delete it to free the space)."""
    chunk = b"\xff" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[:len(chunk) // 2]
    finally:
        os.close(fd)
    return path


def fill_inodes(directory: Path) -> list[Path]:
    """Create empty files in `directory` until its volume has no inode left; returns them."""
    made = []
    while True:
        path = directory / f"filler-{len(made)}"
        try:
            path.touch()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return made
        made.append(path)

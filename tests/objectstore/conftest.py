"""A real SeaweedFS S3 server for the session, started through e2e.objectstore in its own state dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import objectstore


@pytest.fixture(scope="session")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The `python -m e2e.objectstore env` values of a store that serves 127.0.0.1 only."""
    # Never skipped: a missing binary fails with the command that builds it.
    objectstore.weed_binary()
    store = objectstore.Store(Path(tmp_path_factory.mktemp("objectstore")) / "state")
    objectstore.up(store, pods=False)
    try:
        yield dict(line.removeprefix("export ").split("=", 1) for line in objectstore.env_lines(store))
    finally:
        objectstore.down(store)

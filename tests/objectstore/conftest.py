"""A real SeaweedFS S3 server for the session, started through e2e.objectstore in its own state dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import objectstore


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[objectstore.Store]:
    """A store that serves 127.0.0.1 only (never the local cluster's pods), removed at the end."""
    # Never skipped: a missing binary fails with the command that builds it.
    objectstore.weed_binary()
    store = objectstore.Store(Path(tmp_path_factory.mktemp("objectstore")) / "state")
    objectstore.up(store, pods=False)
    try:
        yield store
    finally:
        objectstore.down(store)


@pytest.fixture(scope="session")
def s3_env(s3_store: objectstore.Store) -> dict[str, str]:
    """The values `python -m e2e.objectstore env` prints for that store."""
    return dict(line.removeprefix("export ").split("=", 1) for line in objectstore.env_lines(s3_store))

"""Shared helpers for backup_tool tests: a real engine writing real files, the real console script, and a
reference model of the database state at every LSN to compare restores against."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from omendb import Config, Database
from omendb.backup.cli import main
from omendb.backup.layout import Layout

BIN = Path(sys.executable).parent
BACKUP_TOOL = BIN / "backup_tool"


def tool(*args: str, check: int | None = 0, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed backup_tool console script; assert its exit code unless check is None."""
    assert BACKUP_TOOL.exists(), f"{BACKUP_TOOL} is missing: run `make venv` (pip install -e .)"
    proc = subprocess.run([str(BACKUP_TOOL), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check is not None:
        assert proc.returncode == check, (f"backup_tool {' '.join(args)} exited {proc.returncode}, expected "
                                          f"{check}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def engine_config(root: Path, name: str = "omendb_production", **sections: dict) -> Config:
    """The guide's layout: root/data and root/wal."""
    config = Config().replace("database", data_dir=str(root / "data"), name=name, max_memory_mb=1024)
    config = config.replace("limits", memory_limit_mb=1024)
    for section, values in sections.items():
        config = config.replace(section, **values)
    return config


@dataclass
class Model:
    """The expected database: every batch applied in order, with the state remembered at chosen LSNs."""

    data: dict[int, float] = field(default_factory=dict)
    lsn: int = 0
    at: dict[int, dict[int, float]] = field(default_factory=dict)
    times: dict[int, int] = field(default_factory=dict)  # LSN -> a time (µs) right after its commit

    def put(self, lsn: int, keys: np.ndarray, values: np.ndarray) -> None:
        self.data.update(zip(keys.tolist(), values.tolist(), strict=True))
        self.lsn = lsn

    def delete(self, lsn: int, keys: np.ndarray) -> None:
        for k in keys.tolist():
            self.data.pop(k, None)
        self.lsn = lsn

    def remember(self) -> int:
        self.at[self.lsn] = dict(self.data)
        return self.lsn


def write_batches(db: Database, model: Model, rng: np.random.Generator, batches: int, size: int = 200,
                  key_space: int = 50_000, delete_every: int = 4) -> None:
    for i in range(batches):
        if delete_every and i % delete_every == delete_every - 1 and model.data:
            keys = rng.choice(np.fromiter(model.data.keys(), np.int64), size=min(size // 4, len(model.data)),
                              replace=False)
            model.delete(db.delete_many(keys), keys)
        else:
            keys = rng.integers(0, key_space, size, dtype=np.int64)
            values = rng.random(size)
            model.put(db.put_many(keys, values), keys, values)


def read_state(layout: Layout) -> tuple[dict[int, float], int]:
    """Open a data directory with the engine and return (all records, LSN)."""
    config = Config().replace("database", data_dir=str(layout.data_dir)).replace("wal",
                                                                                 dir=str(layout.wal_dir))
    with Database.open(config) as db:
        keys, values = db.range(-(2**63))
        return dict(zip(keys.tolist(), values.tolist(), strict=True)), db.lsn()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261127)


def run(*args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    """backup_tool's main() in this process (same code as the console script, without the ~1 s interpreter
    and numba start-up per call); returns what tool() returns."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    proc = subprocess.CompletedProcess(["backup_tool", *args], code, out.getvalue(), err.getvalue())
    if check is not None:
        assert code == check, (f"backup_tool {' '.join(args)} exited {code}, expected {check}\nstdout:\n"
                               f"{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def http_write(client: httpx.Client, model: Model, rng: np.random.Generator, batches: int, size: int = 100,
               key_space: int = 20_000) -> None:
    """Upserts and deletes through the HTTP API, applied to the model with the LSNs the server returns."""
    for i in range(batches):
        if i % 3 == 2 and model.data:
            keys = rng.choice(np.fromiter(model.data.keys(), np.int64), size=min(size // 4, len(model.data)),
                              replace=False)
            r = client.post("/v1/records/delete", json={"keys": keys.tolist()})
            r.raise_for_status()
            model.delete(r.json()["lsn"], keys)
        else:
            keys = rng.integers(0, key_space, size, dtype=np.int64)
            values = np.round(rng.random(size), 6)
            r = client.post("/v1/records", json={"records": [{"key": int(k), "value": float(v)}
                                                             for k, v in zip(keys, values, strict=True)]})
            r.raise_for_status()
            model.put(r.json()["lsn"], keys, values)


def http_all_records(client: httpx.Client) -> dict[int, float]:
    out: dict[int, float] = {}
    cursor = None
    while True:
        params: dict[str, object] = {"start": -(2**63), "limit": 10_000}
        if cursor:
            params["cursor"] = cursor
        r = client.get("/v1/records", params=params)
        r.raise_for_status()
        body = r.json()
        out.update({rec["key"]: rec["value"] for rec in body["records"]})
        cursor = body.get("next_cursor")
        if not cursor:
            return out

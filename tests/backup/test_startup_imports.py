"""backup_tool's backup, restore, list, verify and cleanup never import numba, nor the engine, the server or
the configuration loader.

Importing numba costs 0.4-0.8 s of a process's start on this project's machines, as much as a whole restore
of 10M records, and none of these commands calls a compiled kernel (docs/benchmarks.md, "Backups"). Each
command runs as the installed console script on a real database under ``python -X importtime``, which lists
every module the process imports, whenever it imports it (inside a function too). ``verify --deep`` opens
the restored state with the engine, so it does import numba: that is the check that the listing sees it.
"""

from __future__ import annotations

import os
import subprocess
import sys

from omendb import Database
from omendb.backup.layout import resolve
from tests.backup.conftest import BACKUP_TOOL, Model, engine_config, read_state, write_batches

# Top-level packages, and omendb modules, that these commands have no use for.
HEAVY_PACKAGES = {"numba", "llvmlite", "uvicorn", "starlette", "httpx"}
HEAVY_OMENDB = ("omendb.rmi", "omendb.runs_kernels", "omendb.database", "omendb.server",
                "omendb.config")  # tomllib, difflib and a dozen dataclasses: 20-40 ms


def imported_by(*args: str) -> set[str]:
    """The modules the backup_tool console script imports to run `args` (it must exit 0)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", str(BACKUP_TOOL), *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, (f"backup_tool {' '.join(args)} exited {proc.returncode}\nstdout:\n"
                                  f"{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}")
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:") and not line.endswith("imported package")}
    assert "omendb.backup.cli" in modules, f"no import listing from `python -X importtime`:\n{proc.stderr}"
    return modules


def heavy(modules: set[str]) -> list[str]:
    """The heavy packages and omendb modules among `modules`, by their top name."""
    hits = {m.split(".")[0] for m in modules if m.split(".")[0] in HEAVY_PACKAGES}
    hits |= {h for h in HEAVY_OMENDB for m in modules if m == h or m.startswith(h + ".")}
    return sorted(hits)


def test_backup_restore_list_verify_cleanup_do_not_import_numba(tmp_path, rng):
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 8, size=2_000)
        db.checkpoint()  # a format-2 checkpoint, which the backup stores packed and a restore puts back
        write_batches(db, model, rng, 4, size=2_000)  # a WAL tail after it
    source = ["--data-dir", str(root), "--backup-dir", str(backups)]
    found = {"full-backup": imported_by(*source, "full-backup", "--database", "production")}
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 3, size=500)
    restored, earlier = tmp_path / "restored", tmp_path / "earlier"
    commands = {
        "incremental-backup": [*source, "incremental-backup", "--database", "production"],
        "list": ["--backup-dir", str(backups), "list"],
        "restore": ["--data-dir", str(restored), "--backup-dir", str(backups), "restore", "--backup-id", "latest"],
        "verify": ["--backup-dir", str(backups), "verify", "--backup-id", "latest"],
        "verify of a data directory": ["--data-dir", str(restored), "--backup-dir", str(backups), "verify",
                                       "--backup-id", "latest"],
        "point-in-time restore": ["--data-dir", str(earlier), "--backup-dir", str(backups), "restore",
                                  "--backup-id", "latest", "--to-lsn", str(model.lsn - 2)],
        "cleanup": ["--backup-dir", str(backups), "cleanup", "--retention-days", "30"],
    }
    found.update((name, imported_by(*args)) for name, args in commands.items())
    assert {name: heavy(modules) for name, modules in found.items() if heavy(modules)} == {}

    # The restores are real: the engine (in this process) opens them with every record.
    assert read_state(resolve(restored)) == (model.data, model.lsn)
    assert read_state(resolve(earlier))[1] == model.lsn - 2

    deep = imported_by("--backup-dir", str(backups), "verify", "--backup-id", "latest", "--deep")
    assert "numba" in deep and "omendb.database" in deep, "the import listing does not show the engine's imports"


def test_the_console_script_keeps_numpy_to_one_openblas_thread(tmp_path):
    """numpy starts an OpenBLAS thread per core when imported, which spins on the cores a restore's threads
    need; backup_tool's entry point asks for one (omendb.backup.entry) unless the environment says otherwise.
    The process's threads are counted once the command ran (`list`: no thread pools of its own)."""
    script = ("import os, sys\n"
              f"sys.argv = ['backup_tool', '-q', 'list', '--backup-dir', {str(tmp_path)!r}]\n"
              "from omendb.backup import entry\n"
              "code = entry.main()\n"
              "print(code, os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')))\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    bare = subprocess.run([sys.executable, "-c", "import os, numpy; print(len(os.listdir('/proc/self/task')))"],
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-3:] == ["0", "1", "1"], (proc.stdout, proc.stderr)
    if (os.cpu_count() or 1) > 1:  # the check means something: plain numpy here does start more threads
        assert int(bare.stdout) > 1, bare.stdout
    chosen = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**env, "OPENBLAS_NUM_THREADS": "2"})
    assert chosen.stdout.split()[-2] == "2", (chosen.stdout, chosen.stderr)  # the environment's choice wins

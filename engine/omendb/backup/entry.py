"""The ``backup_tool`` console script: the process settings that must come before numpy is imported, then
the command line (omendb.backup.cli)."""

from __future__ import annotations

import os
import sys


def main() -> int:
    # numpy starts one OpenBLAS thread per core as it is imported, and those threads spin for about 0.1 s
    # of CPU waiting for work that backup_tool never gives them (no linear algebra on its hot paths), on the
    # cores a restore's unpacking and hashing threads need: a tenth of a 10M-record restore's wall time
    # (docs/benchmarks.md, "Backups"). A value set in the environment wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from omendb.backup.cli import main as run

    return run(sys.argv[1:])

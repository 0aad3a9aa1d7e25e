"""Run the kstatus checker (e2e/go/kstatus: sigs.k8s.io/cli-utils' kstatus, the library behind Flux,
Helm 4 --wait and kpt) on Kubernetes objects and return what it computes for each.

Used by tests/operator/test_kstatus.py (statuses made by the operator's pure builders) and
e2e/tests/test_kstatus.py (live objects). The binary is built by `python -m e2e.binaries build`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from e2e import binaries


def checker() -> Path:
    """The checker binary; a clear error naming the build command when it is missing."""
    path = binaries.kstatus_bin_dir() / "kstatus"
    if not path.is_file():
        raise FileNotFoundError(f"the kstatus checker {path} is not built: run `python -m e2e.binaries build` "
                                f"(it builds only what is missing; the checker alone takes under a minute)")
    return path


def compute(*objects: dict[str, Any]) -> list[dict[str, Any]]:
    """kstatus' status.Compute of each object, in order: {kind, name, status, message, conditions}."""
    proc = subprocess.run([str(checker())], input="\n".join(json.dumps(o) for o in objects),
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"kstatus checker failed ({proc.returncode}): {proc.stderr.strip()}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def status_of(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) kstatus computes for one object."""
    (result,) = compute(obj)
    return str(result["status"]), str(result["message"])

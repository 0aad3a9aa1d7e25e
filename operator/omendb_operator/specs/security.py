"""The restricted Pod Security Standard, applied to every pod the operator makes (database and Jobs)."""

from __future__ import annotations

from typing import Any

# A fixed non-root UID/GID: runAsNonRoot can only be verified against a numeric user, and the same
# group owning every volume (fsGroup) lets backup Jobs read what the database wrote.
RUN_AS_USER = 10001
RUN_AS_GROUP = 10001


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "fsGroup": RUN_AS_GROUP,
        # Only chown a volume when its root has the wrong owner: large data volumes start fast.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def writable_env() -> list[dict[str, str]]:
    """Environment for Python processes on a read-only root filesystem: numba's JIT cache and anything
    that writes under $HOME go to the /tmp emptyDir, and no bytecode is written next to the code."""
    return [
        {"name": "HOME", "value": "/tmp"},
        {"name": "NUMBA_CACHE_DIR", "value": "/tmp/numba-cache"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]

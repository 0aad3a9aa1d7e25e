"""The harness's own client for the API server (admin certificate), and the Node facts it reads."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from e2e.layout import Layout


def admin_client(lay: Layout, timeout: float = 5.0) -> httpx.Client:
    """An HTTP client authenticated as the cluster admin (client certificate in system:masters)."""
    p = lay.pki
    ctx = ssl.create_default_context(cafile=str(p / "ca.crt"))
    ctx.load_cert_chain(str(p / "admin.crt"), str(p / "admin.key"))
    return httpx.Client(base_url=lay.apiserver_url, verify=ctx, timeout=timeout)


def get_node(api: httpx.Client, name: str) -> dict[str, Any] | None:
    r = api.get(f"/api/v1/nodes/{name}")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    node: dict[str, Any] = r.json()
    return node


def ready(node: dict[str, Any] | None) -> bool:
    if node is None:
        return False
    conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
    return conds.get("Ready") == "True"

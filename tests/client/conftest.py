"""Servers for the client tests: real ``omendb serve`` processes on loopback, from the server tests'
harness. ``auth_server`` (imported, so pytest registers it here) has authentication on, admin/alice/bob
users, [limits] max_insert_batch_size = 1000, session_timeout_seconds = 2 and prefetch_size = 50."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.certs import CertificateAuthority
from tests.server.conftest import PASSWORDS, auth_server
from tests.server.harness import Server, htpasswd_apr1, htpasswd_bcrypt

__all__ = ["PASSWORDS", "auth_server", "metric", "tls_server", "shedding_server"]


def metric(server: Server, name: str, **labels: str) -> float:
    """The current value of one sample on the server's /metrics (0 if absent)."""
    text = httpx.get(server.metrics_url, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """HTTPS with a throwaway CA and authentication on; yields the server and a directory laid out like
    the mounted NAME-ca Secret (ca.crt)."""
    workdir = tmp_path_factory.mktemp("tls-server")
    ca = CertificateAuthority.create()
    ca_dir = workdir / "ca-secret"
    ca_dir.mkdir()
    ca.write_ca(ca_dir / "ca.crt")
    cert, key = workdir / "tls.crt", workdir / "tls.key"
    ca.issue(cert, key)
    users = workdir / "users.htpasswd"
    users.write_text("\n".join([htpasswd_bcrypt("admin", PASSWORDS["admin"]),
                                htpasswd_apr1("alice", PASSWORDS["alice"])]) + "\n")
    server = Server(workdir / "srv", {
        "security": {"tls_enabled": True, "tls_cert_file": str(cert), "tls_key_file": str(key),
                     "auth_enabled": True, "htpasswd_file": str(users), "admin_users": ["admin"]},
    })
    with server:
        server.start(verify=ssl.create_default_context(cafile=str(ca_dir / "ca.crt")))
        yield server, ca_dir


@pytest.fixture(scope="module")
def shedding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that sheds load by its own limit: one request at a time, the rest get 503 + Retry-After."""
    server = Server(tmp_path_factory.mktemp("shedding"), {"http": {"max_concurrent_requests": 1}})
    with server:
        server.start()
        yield server

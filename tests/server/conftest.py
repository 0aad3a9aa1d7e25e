from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.harness import Server, htpasswd_apr1, htpasswd_bcrypt

PASSWORDS = {"admin": "admin-secret-1", "alice": "alice-apr1-pw", "bob": "bob-bcrypt-pw"}


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with authentication on: admin (bcrypt, admin role), alice (apr1), bob (bcrypt)."""
    workdir: Path = tmp_path_factory.mktemp("auth-server")
    users = workdir / "users.htpasswd"
    users.write_text("\n".join([htpasswd_bcrypt("admin", PASSWORDS["admin"]),
                                htpasswd_apr1("alice", PASSWORDS["alice"]),
                                htpasswd_bcrypt("bob", PASSWORDS["bob"])]) + "\n")
    server = Server(workdir, {
        "security": {"auth_enabled": True, "htpasswd_file": str(users), "admin_users": ["admin"],
                     "session_timeout_seconds": 2},
        "limits": {"max_insert_batch_size": 1000},
        "http": {"max_body_mb": 1},
        "performance": {"prefetch_size": 50},
    })
    with server:
        server.start()
        yield server

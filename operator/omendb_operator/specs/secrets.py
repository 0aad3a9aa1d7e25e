"""NAME-users: the generated admin user (password, bcrypt htpasswd entry) that clients and backup Jobs mount.

The Secret holds ``username`` and ``password`` for clients, and ``users.htpasswd`` for the engine: the
generated admin entry followed by the users of ``spec.auth.htpasswdSecretName``, if any. A password, once
generated, is kept for the life of the Secret: the builder takes the existing Secret's data and reuses it
whenever its bcrypt hash still verifies, so a reconcile never rotates credentials behind a client's back.
"""

from __future__ import annotations

import base64
import secrets as pysecrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bcrypt

from omendb_operator import labels as L
from omendb_operator.spec import OmenDBSpec

HTPASSWD_KEY = "users.htpasswd"
USERNAME_KEY = "username"
PASSWORD_KEY = "password"
# "user:password" in one line: the replicas' credentials_file (they stream from the primary as this user).
CREDENTIALS_KEY = "credentials"
BCRYPT_ROUNDS = 12
# The schemes the engine accepts in its htpasswd file (it refuses the whole file over any other line).
ACCEPTED_HASH_PREFIXES = ("$2y$", "$2b$", "$2a$", "$apr1$")


def generate_password() -> str:
    return pysecrets.token_urlsafe(24)


def decode_secret_data(secret: dict[str, Any] | None) -> dict[str, str]:
    """A Secret's ``data`` as text (empty when the Secret does not exist)."""
    if not secret:
        return {}
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def encode_data(data: dict[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())}


def _admin_entry(existing: dict[str, str], user: str) -> tuple[str, str] | None:
    """The existing (password, hash) for ``user`` if the stored hash still verifies the stored password."""
    password = existing.get(PASSWORD_KEY)
    if not password or existing.get(USERNAME_KEY) != user:
        return None
    for line in existing.get(HTPASSWD_KEY, "").splitlines():
        name, _, hashed = line.partition(":")
        if name == user and hashed.startswith("$2"):
            try:
                if bcrypt.checkpw(password.encode(), hashed.encode()):
                    return password, hashed
            except ValueError:
                return None
    return None


@dataclass(frozen=True)
class UsersResult:
    manifest: dict[str, Any]
    generated: bool  # a new password was made (an event says so)
    warnings: tuple[str, ...]  # e.g. a user in the referenced Secret shadowed by the admin user


def merge_user_entries(user_htpasswd: str | None, admin_user: str) -> tuple[list[str], list[str]]:
    """The referenced htpasswd's entries, minus the admin user's (the operator's entry must win so backups
    keep working); returns (lines, warnings)."""
    lines: list[str] = []
    warnings: list[str] = []
    for raw_line in (user_htpasswd or "").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not name or not hashed:
            warnings.append(f"ignored a line that is not 'user:hash' in the htpasswd Secret ({name!r})")
            continue
        if not hashed.startswith(ACCEPTED_HASH_PREFIXES):
            warnings.append(f"ignored user {name!r} in the htpasswd Secret: its hash is neither bcrypt nor "
                            "apr1, which the engine refuses; re-create it with `htpasswd -B`")
            continue
        if name == admin_user:
            warnings.append(f"user {admin_user!r} in the htpasswd Secret is replaced by the operator's "
                            f"generated admin user; rename it or set spec.auth.adminUser")
            continue
        lines.append(line)
    return lines, warnings


def build_users_secret(owner: dict[str, Any], spec: OmenDBSpec, existing: dict[str, str],
                       user_htpasswd: str | None = None,
                       make_password: Callable[[], str] = generate_password) -> UsersResult:
    names = L.Names(owner["metadata"]["name"])
    user = spec.auth.admin_user
    kept = _admin_entry(existing, user)
    if kept:
        password, hashed = kept
    else:
        password = make_password()
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()
    extra, warnings = merge_user_entries(user_htpasswd, user)
    htpasswd = "\n".join([f"{user}:{hashed}", *extra]) + "\n"
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": L.metadata(owner, names.users, "credentials"),
        "data": encode_data({USERNAME_KEY: user, PASSWORD_KEY: password, HTPASSWD_KEY: htpasswd,
                             CREDENTIALS_KEY: f"{user}:{password}\n"}),
    }
    return UsersResult(manifest=manifest, generated=kept is None, warnings=tuple(warnings))

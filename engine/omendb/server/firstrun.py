"""First run with authentication on and no users file: an admin user instead of an exit.

The operations guide starts the image with ``docker run ... -e OMENDB_AUTH_DISABLED=false`` and mounts no
htpasswd file. Rather than refusing to start, the server then creates the first admin user (the first of
``[security] admin_users``), the way many databases do on first start:

- the password is ``OMENDB_ADMIN_PASSWORD`` when set, else random; a random one is logged once (a
  WARNING line) and kept in ``<data_dir>/initial-admin-password`` (mode 0600) for
  ``docker exec omendb cat /var/lib/omendb/data/initial-admin-password``;
- the user is written, bcrypt-hashed, to ``<data_dir>/users.htpasswd``, on the data volume, so later
  starts reuse it (no new password) until a real file is mounted at ``[security] htpasswd_file``, which
  then wins.

An htpasswd file that exists but cannot be read or parsed is still an error: only a missing file means
"first run".
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import bcrypt

from omendb.config import Config
from omendb.files import tmp_path

log = logging.getLogger("omendb.auth")

USERS_FILE = "users.htpasswd"
PASSWORD_FILE = "initial-admin-password"
PASSWORD_ENV = "OMENDB_ADMIN_PASSWORD"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by this user only, atomically (a crash leaves the old file or none)."""
    tmp = tmp_path(path)  # a leftover in the data directory is removed when the database opens
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def users_file(config: Config, environ: dict[str, str] | None = None) -> Path:
    """The htpasswd file to serve: ``[security] htpasswd_file`` when it exists, else the first-run file in
    the data directory (created, with its admin user, when there is none yet)."""
    configured = Path(config.security.htpasswd_file)
    if configured.exists():
        return configured
    env = os.environ if environ is None else environ
    data_dir = Path(config.database.data_dir)
    generated = data_dir / USERS_FILE
    if generated.exists():
        log.warning("authentication uses the users file created at first run",
                    extra={"users_file": str(generated), "htpasswd_file": str(configured),
                           "hint": f"mount an htpasswd file at {configured} to replace it"})
        return generated
    if not config.security.admin_users:
        # Nobody could call /admin; the original error (no users file) is the clearer message.
        return configured
    user = config.security.admin_users[0]
    password = env.get(PASSWORD_ENV) or secrets.token_urlsafe(18)
    data_dir.mkdir(parents=True, exist_ok=True)
    # `htpasswd -B` writes $2y$; bcrypt's hash is the same after the prefix.
    hashed = "$2y$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=12)).decode()[4:]
    if env.get(PASSWORD_ENV):
        log.warning("first run: no htpasswd file; created the admin user with the password from "
                    f"{PASSWORD_ENV}", extra={"user": user, "users_file": str(generated),
                                             "htpasswd_file": str(configured)})
    else:
        _write_private(data_dir / PASSWORD_FILE, password + "\n")
        log.warning(f"first run: no htpasswd file; created the admin user {user!r} with password {password} "
                    f"(shown once; also in {data_dir / PASSWORD_FILE}, readable by this user only). Set "
                    f"{PASSWORD_ENV} to choose it, or mount an htpasswd file at {configured} "
                    f"(htpasswd -B -c users.htpasswd USER)",
                    extra={"user": user, "users_file": str(generated), "htpasswd_file": str(configured)})
    _write_private(generated, f"{user}:{hashed}\n")
    return generated

"""Users from an htpasswd file, as Apache's ``htpasswd`` writes it: bcrypt (``-B``) and apr1 (the
default MD5) entries. Any other scheme (crypt, SHA1, plain text) is refused with the line that uses it,
because those hashes are too weak to keep. The file is re-read when it changes on disk (Kubernetes
updates mounted ConfigMaps and Secrets by swapping a symlink), so no restart is needed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt
from passlib.hash import apr_md5_crypt

from omendb.errors import ConfigError

log = logging.getLogger("omendb.auth")

_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
_APR1_PREFIX = "$apr1$"
# Compared against when the user does not exist, so an unknown name costs as much as a wrong password.
_DUMMY_HASH = bcrypt.hashpw(b"omendb-dummy", bcrypt.gensalt(rounds=10)).decode()


def _scheme(hash_: str) -> str | None:
    if hash_.startswith(_BCRYPT_PREFIXES):
        return "bcrypt"
    if hash_.startswith(_APR1_PREFIX):
        return "apr1"
    return None


def _describe(hash_: str) -> str:
    if hash_.startswith("{SHA}"):
        return "SHA-1"
    if hash_.startswith("$1$"):
        return "MD5-crypt"
    if hash_.startswith(("$5$", "$6$")):
        return "SHA-crypt"
    if len(hash_) == 13:
        return "DES crypt"
    return "plain text or unknown"


def parse_htpasswd(text: str, source: str) -> dict[str, str]:
    """``user:hash`` lines to a mapping; raises ConfigError naming the first bad line."""
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hash_ = line.partition(":")
        if not sep or not user or not hash_:
            raise ConfigError(f"{source} line {number}: expected 'user:hash' as written by htpasswd")
        if _scheme(hash_) is None:
            raise ConfigError(f"{source} line {number}: user '{user}' has a {_describe(hash_)} password "
                              "hash, which OmenDB refuses; recreate it with `htpasswd -B` (bcrypt) or "
                              "`htpasswd -m` (apr1)")
        if user in users:
            raise ConfigError(f"{source} line {number}: user '{user}' appears twice")
        users[user] = hash_
    return users


def verify_hash(password: str, hash_: str) -> bool:
    scheme = _scheme(hash_)
    if scheme == "bcrypt":
        # bcrypt only reads the first 72 bytes; the library refuses longer input instead of truncating.
        secret = password.encode()[:72]
        # htpasswd writes $2y$, which is the same algorithm as $2b$.
        return bcrypt.checkpw(secret, ("$2b$" + hash_[4:]).encode())
    if scheme == "apr1":
        return bool(apr_md5_crypt.verify(password, hash_))
    return False


@dataclass(frozen=True)
class _Stamp:
    inode: int
    size: int
    mtime_ns: int


def _stamp(path: Path) -> _Stamp:
    st = path.stat()
    return _Stamp(st.st_ino, st.st_size, st.st_mtime_ns)


class UserFile:
    """The users of an htpasswd file, reloaded when the file changes (checked at most once a second).

    Verified passwords are remembered as an HMAC under a per-process key, so HTTP Basic does not pay
    for bcrypt on every request; the memo is tied to the hash, so a changed password invalidates it.
    """

    CHECK_INTERVAL = 1.0

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._memo_key = secrets.token_bytes(32)
        self._memo: dict[tuple[str, str], bytes] = {}
        try:
            self._stamp = _stamp(self.path)
            self._users = parse_htpasswd(self.path.read_text(), str(self.path))
        except OSError as exc:
            raise ConfigError(f"[security] htpasswd_file = {str(self.path)!r} cannot be read: "
                              f"{exc.strerror}; create it with `htpasswd -B -c {self.path} USER` or set "
                              "[security] auth_enabled = false") from None
        self._checked = time.monotonic()

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.CHECK_INTERVAL:
            return
        with self._lock:
            if now - self._checked < self.CHECK_INTERVAL:
                return
            self._checked = now
            try:
                stamp = _stamp(self.path)
                if stamp == self._stamp:
                    return
                users = parse_htpasswd(self.path.read_text(), str(self.path))
            except (OSError, ConfigError) as exc:
                # Keep serving the users we have: a half-written or broken file must not lock everyone out.
                log.error("auth: could not reload the htpasswd file, keeping the previous users",
                          extra={"file": str(self.path), "error": str(exc)})
                return
            self._users, self._stamp, self._memo = users, stamp, {}
            log.info("auth: reloaded the htpasswd file", extra={"file": str(self.path), "users": len(users)})

    def exists(self, user: str) -> bool:
        self._maybe_reload()
        return user in self._users

    def verify_remembered(self, user: str, password: str) -> bool:
        """True if this password was verified before for the user's current hash (cheap: no bcrypt)."""
        self._maybe_reload()
        hash_ = self._users.get(user)
        if hash_ is None:
            return False
        remembered = self._memo.get((user, hash_))
        digest = hmac.new(self._memo_key, password.encode(), hashlib.sha256).digest()
        return remembered is not None and hmac.compare_digest(remembered, digest)

    def verify(self, user: str, password: str) -> bool:
        """True if the password is right. Blocking (bcrypt): call it off the event loop."""
        if self.verify_remembered(user, password):
            return True
        hash_ = self._users.get(user)
        digest = hmac.new(self._memo_key, password.encode(), hashlib.sha256).digest()
        ok = verify_hash(password, hash_ if hash_ is not None else _DUMMY_HASH) and hash_ is not None
        if ok and hash_ is not None:
            self._memo[(user, hash_)] = digest
        return ok

    def __len__(self) -> int:
        return len(self._users)


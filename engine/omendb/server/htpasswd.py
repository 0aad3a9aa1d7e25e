"""Users from an htpasswd file, as Apache's ``htpasswd`` writes it: bcrypt (``-B``) and apr1 (the
default MD5) entries. Any other scheme (crypt, SHA1, plain text) is refused with the line that uses it,
because those hashes are too weak to keep. The file is re-read when it changes on disk (Kubernetes
updates mounted ConfigMaps and Secrets by swapping a symlink), so no restart is needed.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
from passlib.hash import apr_md5_crypt

from omendb.errors import ConfigError

# Not passlib's HtpasswdFile (libpass, the maintained fork this module already uses for apr1): it accepts
# the weak schemes refused below ({SHA}, crypt, plain text) without a word, keeps a duplicate user with a
# warning instead of naming the line, and with bcrypt >= 5 raises ValueError on a password longer than 72
# bytes where Apache compares the first 72 (verify_hash). Its reload (load_if_changed, by mtime) would
# still need the symlink-swap check and keep-the-old-users-on-a-bad-file rule of UserFile.

log = logging.getLogger("omendb.auth")

_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
_APR1_PREFIX = "$apr1$"


def _scheme(hash_: str) -> str | None:
    if hash_.startswith(_BCRYPT_PREFIXES):
        return "bcrypt"
    if hash_.startswith(_APR1_PREFIX):
        return "apr1"
    return None


def profile(hash_: str) -> tuple[str, int]:
    """The scheme and cost of a hash: ("bcrypt", rounds) or ("apr1", 0) (apr1 has a fixed cost)."""
    if _scheme(hash_) == "bcrypt":
        try:
            return "bcrypt", int(hash_[4:6])
        except ValueError:
            return "bcrypt", 10
    return "apr1", 0


@functools.lru_cache(maxsize=16)
def dummy_hash(scheme: str, cost: int) -> str:
    """A hash of a random password with the given scheme and cost, compared against when the user does not
    exist, so that an unknown name takes as long to refuse as a wrong password (a fixed bcrypt cost would
    not: htpasswd -B writes cost 5, and a cost-10 dummy made unknown names 20 times slower)."""
    if scheme == "bcrypt":
        return bcrypt.hashpw(b"omendb-dummy", bcrypt.gensalt(rounds=min(max(cost, 4), 31))).decode()
    return str(apr_md5_crypt.hash("omendb-dummy"))


def typical_profile(users: dict[str, str]) -> tuple[str, int]:
    """The most common scheme and cost among the users (ties: the costlier): what unknown names pay."""
    if not users:
        return "bcrypt", 10
    counts = collections.Counter(profile(h) for h in users.values())
    return max(counts, key=lambda p: (counts[p], p[0] == "bcrypt", p[1]))


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


@dataclass(frozen=True)
class Users:
    """One version of the file's users. Swapped whole on reload, so a check sees one consistent version."""

    entries: dict[str, str]
    generation: int  # bumped on every reload: what was verified under an older generation is forgotten
    dummy: tuple[str, int] = field(default=("bcrypt", 10))


class UserFile:
    """The users of an htpasswd file, reloaded when the file changes (checked at most once a second).

    Verification is blocking (bcrypt): ``verify`` runs on the auth thread pool (see auth.py); the cache of
    verified passwords lives in credentials.py and is dropped when ``generation`` changes.
    """

    CHECK_INTERVAL = 1.0

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._stamp = _stamp(self.path)
            entries = parse_htpasswd(self.path.read_text(), str(self.path))
        except OSError as exc:
            raise ConfigError(f"[security] htpasswd_file = {str(self.path)!r} cannot be read: "
                              f"{exc.strerror}; create it with `htpasswd -B -c {self.path} USER` or set "
                              "[security] auth_enabled = false") from None
        self._users = Users(entries, 0, typical_profile(entries))
        dummy_hash(*self._users.dummy)  # made now (at startup) rather than by the first unknown name
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
                entries = parse_htpasswd(self.path.read_text(), str(self.path))
            except (OSError, ConfigError) as exc:
                # Keep serving the users we have: a half-written or broken file must not lock everyone out.
                log.error("auth: could not reload the htpasswd file, keeping the previous users",
                          extra={"file": str(self.path), "error": str(exc)})
                return
            self._users = Users(entries, self._users.generation + 1, typical_profile(entries))
            self._stamp = stamp
            log.info("auth: reloaded the htpasswd file", extra={"file": str(self.path), "users": len(entries)})

    def current(self) -> Users:
        """The users now (re-reading the file if it changed): cheap, called on every request (the interval
        is checked here too, so a request between two checks makes no further call)."""
        if time.monotonic() - self._checked >= self.CHECK_INTERVAL:
            self._maybe_reload()
        return self._users

    def exists(self, user: str) -> bool:
        return user in self.current().entries

    def hash_of(self, user: str) -> str | None:
        return self.current().entries.get(user)

    def verify(self, user: str, password: str) -> tuple[str | None, int]:
        """The user's hash if the password is right (else None), and the generation it was checked in.

        Blocking (bcrypt or apr1): call it off the event loop. An unknown user is checked against a dummy
        of the file's usual scheme and cost, so it takes as long as a wrong password.
        """
        users = self.current()
        hash_ = users.entries.get(user)
        ok = verify_hash(password, hash_ if hash_ is not None else dummy_hash(*users.dummy))
        return (hash_ if ok and hash_ is not None else None), users.generation

    def __len__(self) -> int:
        return len(self._users.entries)

"""Client settings, from explicit arguments or from the environment of a pod (``Client.from_env()``).

- ``OMENDB_URL``: the primary Service, for writes (and reads without OMENDB_READ_URL), e.g.
  ``https://prod.<namespace>.svc:3000``;
- ``OMENDB_READ_URL`` (optional): the ``NAME-ro`` Service, for reads;
- ``OMENDB_USER`` and ``OMENDB_PASSWORD``: credentials (``secretKeyRef`` to the NAME-users Secret), or
- ``OMENDB_CREDENTIALS_FILE``: the mounted NAME-users Secret (a directory with ``username`` and
  ``password`` files), or a file holding one ``user:password`` line;
- ``OMENDB_CA_FILE``: the CA certificate (PEM) that signed the server's: ``ca.crt`` of the mounted
  NAME-ca Secret, or the directory holding it;
- ``OMENDB_AUTH``: ``session`` (default when credentials are given), ``basic`` or ``none``;
- ``OMENDB_TIMEOUT``: seconds per request (default 30);
- ``OMENDB_RETRIES``: tries per call, the first included (default 5; 1 disables retries).

TLS is always verified: against OMENDB_CA_FILE if set, else the system's trusted CAs. There is no
environment switch to turn verification off.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from omendb.client.retry import RetryPolicy

log = logging.getLogger("omendb.client")

AuthScheme = Literal["session", "basic", "none"]
DEFAULT_MAX_BATCH = 50_000  # the server's default [limits] max_insert_batch_size; lowered on a 413
DEFAULT_PAGE_SIZE = 10_000  # records per range page (the server allows up to 100000)


class SettingsError(ValueError):
    """A client setting is missing or wrong; the message names it and says how to fix it."""


@dataclass(frozen=True)
class Credentials:
    """Where the user name and password come from. Read at each login, so a rotated Secret (the kubelet
    updates mounted files in place) is picked up at the next session renewal."""

    username: str | None = None
    password: str | None = None
    file: str | None = None

    def __call__(self) -> tuple[str, str]:
        if self.file is None:
            if self.username is None or self.password is None:
                raise SettingsError("a user name and a password are both needed")
            return self.username, self.password
        path = Path(self.file)
        try:
            if path.is_dir():
                user = (path / "username").read_text().strip()
                password = (path / "password").read_text().rstrip("\r\n")
            else:
                user, sep, password = path.read_text().strip("\r\n").partition(":")
                if not sep:
                    raise SettingsError(f"credentials file {path} must hold one 'user:password' line, or be "
                                        "the mounted NAME-users Secret directory (files 'username' and "
                                        "'password')")
        except OSError as exc:
            raise SettingsError(f"cannot read credentials from {path}: {exc.strerror or exc}; mount the "
                                "NAME-users Secret there or set OMENDB_USER and OMENDB_PASSWORD") from None
        if not user:
            raise SettingsError(f"credentials at {path} have an empty user name")
        return user, password

    @property
    def given(self) -> bool:
        return self.file is not None or self.username is not None


@dataclass(frozen=True)
class Settings:
    url: str
    read_url: str | None = None
    credentials: Credentials = field(default_factory=Credentials)
    auth: AuthScheme = "session"
    ca_file: str | None = None
    verify: bool | ssl.SSLContext = True
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_batch_size: int = DEFAULT_MAX_BATCH
    page_size: int = DEFAULT_PAGE_SIZE

    def __post_init__(self) -> None:
        for name in ("url", "read_url"):
            value = getattr(self, name)
            if value is not None and not value.startswith(("http://", "https://")):
                raise SettingsError(f"{name} must start with http:// or https://, got {value!r} (for the "
                                    "Service of OmenDB 'prod': https://prod.<namespace>.svc:3000)")
        if self.auth not in ("session", "basic", "none"):
            raise SettingsError(f"auth must be 'session', 'basic' or 'none', got {self.auth!r}")
        if self.auth != "none" and not self.credentials.given:
            raise SettingsError(f"auth = {self.auth!r} needs credentials: pass username and password (or "
                                "OMENDB_USER/OMENDB_PASSWORD, OMENDB_CREDENTIALS_FILE), or auth='none'")
        if self.timeout <= 0:
            raise SettingsError(f"timeout must be a positive number of seconds, got {self.timeout}")
        if self.max_batch_size < 1 or not 1 <= self.page_size <= 100_000:
            raise SettingsError("max_batch_size must be at least 1 and page_size within 1..100000")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise SettingsError(f"CA file {self.ca_file} does not exist; mount the NAME-ca Secret and point "
                                "ca_file (OMENDB_CA_FILE) at its ca.crt")

    def ssl_verify(self) -> bool | ssl.SSLContext:
        """What httpx verifies the server with: the CA file if given, else ``verify`` (True = system CAs)."""
        if self.ca_file is not None:
            return ssl.create_default_context(cafile=self.ca_file)
        if self.verify is False:
            log.warning("TLS certificate verification is OFF for %s: anyone on the path can read and change "
                        "the traffic; pass ca_file instead", self.url)
        return self.verify


def _ca_path(value: str) -> str:
    path = Path(value)
    return str(path / "ca.crt") if path.is_dir() else value


def _number(environ: Mapping[str, str], name: str, kind: type[float] | type[int]) -> float | int | None:
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        what = "number" if kind is float else "whole number"
        raise SettingsError(f"{name}={raw!r} is not a {what}") from None


def settings_from_env(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from OMENDB_* variables (see the module doc); keyword arguments override them."""
    env = os.environ if environ is None else environ
    url = env.get("OMENDB_URL")
    if not url and "url" not in overrides:
        raise SettingsError("OMENDB_URL is not set: set it to the OmenDB primary Service, e.g. "
                            "https://prod.<namespace>.svc:3000 (writes go there; OMENDB_READ_URL may name "
                            "the prod-ro Service for reads)")
    credentials = Credentials(username=env.get("OMENDB_USER") or None, password=env.get("OMENDB_PASSWORD"),
                              file=env.get("OMENDB_CREDENTIALS_FILE") or None)
    if credentials.file is None and credentials.username is not None and credentials.password is None:
        raise SettingsError("OMENDB_USER is set but OMENDB_PASSWORD is not; set both, or "
                            "OMENDB_CREDENTIALS_FILE")
    read_url = env.get("OMENDB_READ_URL") or None
    values: dict[str, object] = {"url": url.rstrip("/") if url else url,
                                 "read_url": read_url.rstrip("/") if read_url else None,
                                 "credentials": credentials,
                                 "auth": env.get("OMENDB_AUTH")
                                 or ("session" if credentials.given else "none")}
    if env.get("OMENDB_CA_FILE"):
        values["ca_file"] = _ca_path(env["OMENDB_CA_FILE"])
    timeout = _number(env, "OMENDB_TIMEOUT", float)
    if timeout is not None:
        values["timeout"] = timeout
    retries = _number(env, "OMENDB_RETRIES", int)
    if retries is not None:
        values["retry"] = RetryPolicy(attempts=int(retries))
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def settings_from_args(url: str, *, read_url: str | None = None, username: str | None = None,
                       password: str | None = None, credentials_file: str | None = None,
                       auth: AuthScheme | None = None, ca_file: str | None = None,
                       verify: bool | ssl.SSLContext = True, timeout: float = 30.0,
                       retry: RetryPolicy | None = None, max_batch_size: int = DEFAULT_MAX_BATCH,
                       page_size: int = DEFAULT_PAGE_SIZE) -> Settings:
    credentials = Credentials(username, password, credentials_file)
    return Settings(url=url.rstrip("/"), read_url=read_url.rstrip("/") if read_url else None,
                    credentials=credentials, auth=auth or ("session" if credentials.given else "none"),
                    ca_file=_ca_path(ca_file) if ca_file else None, verify=verify, timeout=timeout,
                    retry=retry or RetryPolicy(), max_batch_size=max_batch_size, page_size=page_size)

"""S3-compatible object storage for backups and WAL archives: ``s3://bucket/prefix`` through obstore.

Configuration follows the AWS conventions, read from ``env`` (the process environment by default):

- credentials: ``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``), else the
  profile ``AWS_PROFILE`` (default ``default``) of ``AWS_SHARED_CREDENTIALS_FILE`` (default
  ``~/.aws/credentials``), the form a Kubernetes Secret mounted as a file takes; else web identity
  (``AWS_WEB_IDENTITY_TOKEN_FILE`` + ``AWS_ROLE_ARN``, EKS) or the container credentials endpoint
  (``AWS_CONTAINER_CREDENTIALS_*``), which obstore handles itself;
- endpoint: ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL`` (MinIO, SeaweedFS, Ceph...; path-style
  requests), else AWS itself;
- region: ``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else the profile's ``region``, else us-east-1;
- TLS: ``AWS_CA_BUNDLE`` names a PEM file of CA certificates trusted in addition to the system's.

Every request is retried with exponential backoff and jitter (obstore's RetryConfig):
``OMENDB_S3_MAX_RETRIES`` (default 8) attempts within ``OMENDB_S3_RETRY_TIMEOUT`` seconds (default 180).
Failures raise ObjectStoreError with a message that says what is wrong and how to fix it.

Keys are relative to the URL's prefix; ``put`` is atomic (a reader sees the old object or the new one),
``put_stream`` uploads in parts of ``part_size`` (default 8 MiB, ``OMENDB_S3_PART_SIZE``) with at most
``OMENDB_S3_CONCURRENCY`` (default 2) parts in flight, so memory stays bounded whatever the size, and the
object only appears when the upload completes.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import AlreadyExistsError, PermissionDeniedError, PreconditionError
from obstore.store import S3Store

SCHEMES = ("s3://",)
DEFAULT_PART_SIZE = 8 << 20  # S3's minimum part is 5 MiB
DEFAULT_CONCURRENCY = 2


class ObjectStoreError(Exception):
    """A request to the object store failed; the message says what is wrong and how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ObjectStoreError):
    """The object (or the bucket) does not exist."""


class BucketNotFound(NotFound):
    """The bucket itself does not exist."""


class AlreadyExists(ObjectStoreError):
    """A put-if-absent found the object there."""


class Precondition(ObjectStoreError):
    """A conditional put found another version of the object than the one named."""


def is_object_url(path: str | os.PathLike[str]) -> bool:
    return isinstance(path, str) and path.startswith(SCHEMES)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    e_tag: str | None = None
    last_modified: float | None = None  # epoch seconds


@dataclass(frozen=True)
class Settings:
    """What from_url resolved from the environment (secrets left out of repr)."""

    bucket: str
    prefix: str
    endpoint: str | None
    region: str
    access_key_id: str | None
    secret_access_key: str | None = field(repr=False)
    session_token: str | None = field(repr=False)
    ca_bundle: str | None
    credentials_from: str
    max_retries: int
    retry_timeout: float
    part_size: int
    concurrency: int


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ObjectStoreError(f"{name}={raw!r} is not a number; set it to a number or unset it") from None


def _profile(env: Mapping[str, str]) -> tuple[dict[str, str], str] | None:
    """The profile's section of the shared credentials file, and the file's name (None: no file)."""
    explicit = env.get("AWS_SHARED_CREDENTIALS_FILE")
    path = Path(explicit) if explicit else Path(env.get("HOME", str(Path.home()))) / ".aws" / "credentials"
    profile = env.get("AWS_PROFILE") or "default"
    if not path.is_file():
        if explicit:
            raise ObjectStoreError(f"AWS_SHARED_CREDENTIALS_FILE={explicit} does not exist or is not a file; "
                                   "mount the credentials Secret there or fix the variable")
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(), source=str(path))
    except (OSError, configparser.Error) as exc:
        raise ObjectStoreError(f"cannot read the AWS credentials file {path}: {exc}; it must be an INI file "
                               "with [profile] sections holding aws_access_key_id and "
                               "aws_secret_access_key") from None
    if not parser.has_section(profile):
        raise ObjectStoreError(f"the AWS credentials file {path} has no [{profile}] section (AWS_PROFILE="
                               f"{profile}); sections there: {', '.join(parser.sections()) or 'none'}")
    return dict(parser.items(profile)), str(path)


def resolve(url: str, env: Mapping[str, str]) -> Settings:
    """The bucket, prefix, endpoint, region and credentials for `url` under the AWS conventions."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ObjectStoreError(f"{url!r} is not an object store URL; write s3://BUCKET/PREFIX")
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
        raise ObjectStoreError(f"{bucket!r} in {url} is not a valid bucket name (3-63 lowercase letters, "
                               "digits, dots and hyphens)")
    key_id = env.get("AWS_ACCESS_KEY_ID") or None
    secret = env.get("AWS_SECRET_ACCESS_KEY") or None
    token = env.get("AWS_SESSION_TOKEN") or None
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    source = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if bool(key_id) != bool(secret):
        missing = "AWS_SECRET_ACCESS_KEY" if key_id else "AWS_ACCESS_KEY_ID"
        raise ObjectStoreError(f"{missing} is not set while its partner is; set both (or neither, and use "
                               "AWS_SHARED_CREDENTIALS_FILE)")
    if not key_id:
        found = _profile(env)
        if found is not None:
            section, path = found
            key_id = section.get("aws_access_key_id") or None
            secret = section.get("aws_secret_access_key") or None
            token = section.get("aws_session_token") or None
            region = region or section.get("region") or None
            source = f"{path} [{env.get('AWS_PROFILE') or 'default'}]"
            if not key_id or not secret:
                raise ObjectStoreError(f"the profile in {path} lacks aws_access_key_id or "
                                       "aws_secret_access_key; add both")
    if not key_id and not (env.get("AWS_WEB_IDENTITY_TOKEN_FILE") or
                           env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") or
                           env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")):
        raise ObjectStoreError(f"no credentials for {url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                               "or AWS_SHARED_CREDENTIALS_FILE (an INI file, e.g. a mounted Secret) with "
                               "AWS_PROFILE")
    if not key_id:
        source = "web identity / container credentials"
    ca = env.get("AWS_CA_BUNDLE") or None
    if ca and not Path(ca).is_file():
        raise ObjectStoreError(f"AWS_CA_BUNDLE={ca} does not exist or is not a file; point it at the PEM file "
                               "of the CA that signed the endpoint's certificate")
    part = int(_number(env, "OMENDB_S3_PART_SIZE", DEFAULT_PART_SIZE))
    if part < 5 << 20:
        raise ObjectStoreError(f"OMENDB_S3_PART_SIZE={part} is below S3's minimum part size of 5 MiB "
                               f"({5 << 20})")
    return Settings(
        bucket=bucket, prefix=prefix,
        endpoint=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
        region=region or "us-east-1", access_key_id=key_id, secret_access_key=secret, session_token=token,
        ca_bundle=ca, credentials_from=source,
        max_retries=int(_number(env, "OMENDB_S3_MAX_RETRIES", 8)),
        retry_timeout=_number(env, "OMENDB_S3_RETRY_TIMEOUT", 180),
        part_size=part, concurrency=max(1, int(_number(env, "OMENDB_S3_CONCURRENCY", DEFAULT_CONCURRENCY))),
    )


class ObjectStore:
    """One bucket and prefix; every method raises ObjectStoreError (NotFound for a missing object)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = f"s3://{settings.bucket}/{settings.prefix}".rstrip("/")
        config: Any = {"region": settings.region}
        if settings.endpoint:
            config["endpoint"] = settings.endpoint
        if settings.access_key_id:
            config["access_key_id"] = settings.access_key_id
            config["secret_access_key"] = settings.secret_access_key
            if settings.session_token:
                config["session_token"] = settings.session_token
        client: Any = {"connect_timeout": timedelta(seconds=10)}
        if settings.endpoint and settings.endpoint.startswith("http://"):
            client["allow_http"] = True
        if settings.ca_bundle:
            client["root_certificate"] = Path(settings.ca_bundle).read_bytes()
        retry: Any = {
            "max_retries": settings.max_retries,
            "retry_timeout": timedelta(seconds=settings.retry_timeout),
            "backoff": {"init_backoff": timedelta(milliseconds=200), "max_backoff": timedelta(seconds=15),
                        "base": 2},
        }
        try:
            self._store = S3Store(settings.bucket, prefix=settings.prefix or None, config=config,
                                  client_options=client, retry_config=retry)
        except Exception as exc:  # obstore's configuration errors
            raise ObjectStoreError(f"cannot configure the object store for {self.url}: {exc}") from None

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] = os.environ) -> ObjectStore:
        return cls(resolve(url, env))

    def __repr__(self) -> str:
        return f"ObjectStore({self.url})"

    # ---- errors ---------------------------------------------------------------------------------------------

    def _error(self, exc: BaseException, what: str, key: str | None = None) -> ObjectStoreError:
        """Our error for an obstore failure, saying which setting to fix."""
        text = str(exc)
        where = f"{self.url}/{key}" if key is not None else self.url
        endpoint = self.settings.endpoint or "AWS S3"
        if isinstance(exc, FileNotFoundError) or "NoSuchKey" in text:
            if "NoSuchBucket" in text:
                return BucketNotFound(self._no_bucket())
            return NotFound(f"{where} does not exist")
        if isinstance(exc, AlreadyExistsError):
            return AlreadyExists(f"{where} already exists")
        if isinstance(exc, PreconditionError):
            return Precondition(f"{where} was changed by someone else")
        if "NoSuchBucket" in text:
            return BucketNotFound(self._no_bucket())
        if "SignatureDoesNotMatch" in text:
            return ObjectStoreError(f"{what} {where} refused: the secret key does not match the access key "
                                    f"{self.settings.access_key_id} (from {self.settings.credentials_from}); "
                                    "fix AWS_SECRET_ACCESS_KEY or the credentials file")
        if "InvalidAccessKeyId" in text:
            return ObjectStoreError(f"{what} {where} refused: the endpoint {endpoint} does not know the access "
                                    f"key {self.settings.access_key_id} (from {self.settings.credentials_from});"
                                    " fix AWS_ACCESS_KEY_ID or the credentials file")
        if "AccessDenied" in text or "403 Forbidden" in text or isinstance(exc, PermissionDeniedError):
            return ObjectStoreError(f"{what} {where} refused (access denied) for access key "
                                    f"{self.settings.access_key_id}: grant it s3:GetObject, s3:PutObject, "
                                    "s3:DeleteObject and s3:ListBucket on the bucket, or fix the credentials")
        low = text.lower()
        if "certificate" in low or "unknownissuer" in low or "tls" in low and "handshake" in low:
            hint = (f"AWS_CA_BUNDLE={self.settings.ca_bundle} does not hold the CA that signed it"
                    if self.settings.ca_bundle else
                    "set AWS_CA_BUNDLE to the PEM file of the CA that signed it")
            return ObjectStoreError(f"{what} {where}: the TLS certificate of {endpoint} could not be verified; "
                                    f"{hint} ({_tail(text)})")
        if any(s in low for s in ("connection refused", "error sending request", "dns error", "timed out",
                                  "connect", "unreachable", "retry")):
            return ObjectStoreError(f"{what} {where}: cannot reach the endpoint {endpoint} ({_tail(text)}); "
                                    "check AWS_ENDPOINT_URL (scheme, host, port) and that the store is up")
        return ObjectStoreError(f"{what} {where} failed: {_tail(text)}")

    def _no_bucket(self) -> str:
        return (f"the bucket {self.settings.bucket!r} does not exist at "
                f"{self.settings.endpoint or 'AWS S3'}; create it (e.g. `aws s3 mb s3://{self.settings.bucket}`) "
                "or fix the bucket in the URL")

    # ---- objects ----------------------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, mode: Any = None) -> str | None:
        """Write a whole object atomically; returns its e_tag. `mode` "create" writes only if absent
        (AlreadyExists otherwise); {"e_tag": ...} only over that version (Precondition otherwise)."""
        try:
            result = obstore.put(self._store, key, data, mode=mode, use_multipart=False)
        except Exception as exc:
            raise self._error(exc, "writing", key) from None
        return result.get("e_tag")

    def put_if_absent(self, key: str, data: bytes) -> str | None:
        """Create `key` only if nobody has; returns its e_tag (AlreadyExists when it is there)."""
        return self.put(key, data, mode="create")

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Upload `chunks` as one object in multipart parts (bounded memory); the object appears only once
        every part is in. Returns the bytes written."""
        total = 0
        failed: list[BaseException] = []  # what the caller's iterable raised (obstore may wrap it)

        def counted() -> Iterator[bytes]:
            nonlocal total
            try:
                for chunk in chunks:
                    total += len(chunk)
                    yield chunk
            except BaseException as exc:
                failed.append(exc)
                raise

        try:
            obstore.put(self._store, key, counted(), chunk_size=self.settings.part_size,
                        max_concurrency=self.settings.concurrency)
        except Exception as exc:
            if failed:
                raise failed[0] from None
            raise self._error(exc, "uploading", key) from None
        return total

    def put_file(self, key: str, path: str | Path) -> int:
        """Upload a local file (multipart when larger than a part)."""
        with open(path, "rb") as f:
            return self.put_stream(key, iter(lambda: f.read(self.settings.part_size), b""))

    def get(self, key: str) -> bytes:
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except Exception as exc:
            raise self._error(exc, "reading", key) from None

    def get_stream(self, key: str, chunk_size: int = 8 << 20) -> Iterator[bytes]:
        """The object in pieces of about `chunk_size` bytes, fetched as they are consumed."""
        try:
            stream = obstore.get(self._store, key).stream(min_chunk_size=chunk_size)
        except Exception as exc:
            raise self._error(exc, "reading", key) from None
        while True:
            try:
                piece = next(stream)
            except StopIteration:
                return
            except Exception as exc:
                raise self._error(exc, "reading", key) from None
            yield bytes(piece)

    def get_file(self, key: str, path: str | Path, chunk_size: int = 8 << 20) -> int:
        """Stream an object into a local file (created or truncated); returns its size."""
        size = 0
        with open(path, "wb") as f:
            for piece in self.get_stream(key, chunk_size):
                f.write(piece)
                size += len(piece)
        return size

    def head(self, key: str) -> ObjectInfo:
        try:
            meta = obstore.head(self._store, key)
        except Exception as exc:
            raise self._error(exc, "reading", key) from None
        return _info(meta)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under `prefix` (relative to the URL's prefix), sorted by key."""
        try:
            found = [_info(meta) for batch in obstore.list(self._store, prefix=prefix or None) for meta in batch]
        except Exception as exc:
            raise self._error(exc, "listing", prefix) from None
        return sorted(found, key=lambda o: o.key)

    def delete(self, keys: Iterable[str]) -> None:
        """Delete objects (absent ones are fine)."""
        batch = list(keys)
        for start in range(0, len(batch), 1000):  # S3's DeleteObjects limit
            try:
                obstore.delete(self._store, batch[start:start + 1000])
            except FileNotFoundError:
                pass
            except Exception as exc:
                raise self._error(exc, "deleting", batch[start]) from None

    def check(self) -> None:
        """One cheap request that fails with a clear error when the store cannot be used."""
        self.list(".omendb-check/")


def _info(meta: Any) -> ObjectInfo:
    modified = meta.get("last_modified")
    return ObjectInfo(key=str(meta["path"]), size=int(meta["size"]), e_tag=meta.get("e_tag"),
                      last_modified=modified.timestamp() if modified is not None else None)


def _tail(text: str, limit: int = 400) -> str:
    text = " ".join(text.split("Debug source:")[0].split())  # obstore appends a Rust debug dump
    return text if len(text) <= limit else text[:limit] + "..."

"""OmenDB over HTTP(S): ``Client`` and ``AsyncClient`` with the methods of the embedded ``omendb.Database``.

    from omendb.client import Client
    with Client.from_env() as db:          # OMENDB_URL, credentials and CA from the pod's Secrets
        lsn = db.put_many(keys, values)
        values, found = db.get_many(keys)

See docs/client.md.
"""

from omendb.client.async_ import AsyncClient
from omendb.client.config import Settings, SettingsError
from omendb.client.errors import (
    ClientError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InsufficientStorage,
    InvalidInput,
    NotFound,
    PartialWrite,
    RateLimited,
    ReadOnly,
    ServerError,
    StorageFull,
    Timeout,
    TLSError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from omendb.client.retry import RetryPolicy
from omendb.client.sync import Client

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "InsufficientStorage",
    "InvalidInput",
    "NotFound",
    "PartialWrite",
    "RateLimited",
    "ReadOnly",
    "RetryPolicy",
    "ServerError",
    "Settings",
    "SettingsError",
    "StorageFull",
    "Timeout",
    "TLSError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]

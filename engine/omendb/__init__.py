"""OmenDB: a durable int64 -> float64 store with a learned index and a write-ahead log."""

from typing import TYPE_CHECKING, Any

from omendb.config import Config, load_config
from omendb.errors import (
    ConfigError,
    CorruptionError,
    DatabaseClosed,
    DatabaseLocked,
    InvalidInput,
    MemoryLimitExceeded,
    OmenDBError,
    ReadOnly,
    StorageFull,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from omendb.database import Database


def __getattr__(name: str) -> Any:
    # Database pulls in numba (about a second to import); the HTTP client and the CLI tools that do not need
    # the engine should not pay for it.
    if name == "Database":
        from omendb.database import Database

        return Database
    raise AttributeError(f"module 'omendb' has no attribute {name!r}")

__all__ = [
    "Config",
    "Database",
    "ConfigError",
    "CorruptionError",
    "DatabaseClosed",
    "DatabaseLocked",
    "InvalidInput",
    "MemoryLimitExceeded",
    "StorageFull",
    "OmenDBError",
    "ReadOnly",
    "load_config",
]

"""OmenDB: a durable int64 -> float64 store with a learned index and a write-ahead log."""

from typing import TYPE_CHECKING, Any

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
    from omendb.config import Config, load_config
    from omendb.database import Database


def __getattr__(name: str) -> Any:
    # Imported when first asked for: Database pulls in numba (about a second to import), the configuration
    # tomllib, difflib and a dozen dataclasses (20-40 ms); the HTTP client and the CLI tools that need
    # neither (backup_tool) should not pay for them.
    if name == "Database":
        from omendb.database import Database

        return Database
    if name in ("Config", "load_config"):
        from omendb import config

        return getattr(config, name)
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

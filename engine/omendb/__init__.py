"""OmenDB: a durable int64 -> float64 store with a learned index and a write-ahead log."""

from omendb.config import Config, load_config
from omendb.database import Database
from omendb.errors import (
    ConfigError,
    CorruptionError,
    DatabaseClosed,
    DatabaseLocked,
    InvalidInput,
    MemoryLimitExceeded,
    OmenDBError,
    ReadOnly,
)

__version__ = "0.1.0"

__all__ = [
    "Config",
    "Database",
    "ConfigError",
    "CorruptionError",
    "DatabaseClosed",
    "DatabaseLocked",
    "InvalidInput",
    "MemoryLimitExceeded",
    "OmenDBError",
    "ReadOnly",
    "load_config",
]

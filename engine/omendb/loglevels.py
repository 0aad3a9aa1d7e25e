"""Log levels beyond Python's: env_logger's ``trace`` (below debug: one line per WAL fsync, per empty
replication poll) and ``off`` (above every level). Engine modules log at TRACE with ``log.log(TRACE, ...)``;
the server's logs.py maps level names onto these."""

from __future__ import annotations

import logging

TRACE = 5
OFF = logging.CRITICAL + 10
logging.addLevelName(TRACE, "TRACE")

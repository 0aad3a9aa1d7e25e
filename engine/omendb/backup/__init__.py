"""``backup_tool``: full and incremental backups of an OmenDB database, point-in-time restore, verify and
retention, from a data directory (offline, no lock needed) or a running server (``--source URL``).

A backup is a directory published atomically in the backup directory: ``manifest.json`` plus zstandard
payload (a snapshot at one LSN and the WAL frames after it). See docs/backup.md for the format."""

FORMAT_VERSION = 1

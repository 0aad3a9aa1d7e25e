"""``backup_tool``: full and incremental backups of an OmenDB database, point-in-time restore, verify and
retention, from a data directory (offline, no lock needed) or a running server (``--source URL``).

A backup is a directory published atomically in the backup directory: ``manifest.json`` plus zstandard
payload (a snapshot at one LSN and the WAL frames after it). See docs/backup.md for the format."""

# 2: a format-2 checkpoint is stored with its key and LSN columns packed (snapshot.odb.cols, columns.py).
# Backups of format 1 (the checkpoint as is, or zstandard-compressed) are still read, verified and restored.
FORMAT_VERSION = 2
READS_FORMATS = (1, 2)

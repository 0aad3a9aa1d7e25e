"""Files as the previous release wrote them, made from this release's (for upgrade tests)."""

import json
import struct
from pathlib import Path

from omendb.files import MANIFEST, WAL_HEAD, list_segments
from omendb.wal import SEGMENT_HEADER, SEGMENT_MAGIC


def downgrade_to_previous_release(data: Path, wal: Path) -> None:
    """Rewrite files as the previous release wrote them: MANIFEST v1, 16-byte segment headers, no WAL_HEAD."""
    raw = json.loads((data / MANIFEST).read_text())
    for key in ("database_id", "wal_dir", "checksum", "identity_from_upgrade", "previous_database_id"):
        raw.pop(key, None)
    raw["format_version"] = 1
    (data / MANIFEST).write_text(json.dumps(raw))
    (data / WAL_HEAD).unlink(missing_ok=True)
    for _, path in list_segments(wal):
        body = path.read_bytes()[SEGMENT_HEADER.size:]
        path.write_bytes(struct.pack("<8sII", SEGMENT_MAGIC, 1, 0) + body)

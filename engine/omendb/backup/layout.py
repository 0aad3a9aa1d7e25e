"""Where the backup tool finds a database's files, given ``--data-dir`` (the names themselves are
``omendb.files``').

The guide passes the parent of ``data/`` and ``wal/`` (``/var/lib/omendb``) and sometimes the data directory
itself; both are accepted. A directory holding ``MANIFEST`` or ``base-*`` files (or an OmenDB ``LOCK``) is
the data directory and its WAL is where the engine finds it (``wal_chain.locate_wal_dir``: the location the
MANIFEST records, else the default ``[wal] dir``); otherwise it is the
parent and the database lives in ``D/data`` and ``D/wal``. A missing or empty directory therefore means the
guide's layout, which is what a restore onto a fresh volume creates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omendb.errors import CorruptionError
from omendb.files import MANIFEST, guide_layout, is_base_name, list_segments, looks_like_data_dir, read_manifest
from omendb.wal_chain import locate_wal_dir


@dataclass(frozen=True)
class Layout:
    data_dir: Path
    wal_dir: Path

    def holds_database(self) -> bool:
        """True when there is anything a restore would overwrite (a checkpoint or WAL segments)."""
        if (self.data_dir / MANIFEST).exists() or any(is_base_name(p.name) for p in self.data_dir.glob("*")):
            return True
        return self.wal_dir.is_dir() and bool(list_segments(self.wal_dir))


def resolve(data_dir: str | Path, wal_dir: str | Path | None = None) -> Layout:
    d = Path(data_dir).absolute()
    is_data = d.is_dir() and looks_like_data_dir(d)
    if is_data:
        try:
            manifest = read_manifest(d)
        except CorruptionError:
            manifest = None  # reported by whatever reads the database next
        layout = Layout(d, locate_wal_dir(d, "", manifest, True))
    else:
        layout = Layout(*guide_layout(d))
    if wal_dir:
        layout = Layout(layout.data_dir, Path(wal_dir).absolute())
    return layout

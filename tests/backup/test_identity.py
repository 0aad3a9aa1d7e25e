"""backup_tool and database identity: a source whose WAL does not continue its checkpoint is refused, and a
restored database keeps the backed-up database's identity on a new term."""

from __future__ import annotations

import json

from omendb import Database
from omendb.backup.errors import EXIT_CORRUPT
from omendb.files import MANIFEST
from tests.backup.conftest import Model, engine_config, run, write_batches


def test_backup_refuses_a_source_whose_wal_was_lost_after_its_checkpoint(tmp_path, rng):
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 4, delete_every=0)
        db.checkpoint()
        write_batches(db, model, rng, 4, delete_every=0)
        db.close(checkpoint=False)  # writes 5..8 are only in the WAL, as after a kill -9
    (root / "wal").rename(tmp_path / "wal-aside")
    proc = run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production",
               check=EXIT_CORRUPT)
    assert "WAL and checkpoint disagree" in proc.stderr and "LSN 5" in proc.stderr
    assert not backups.exists() or not any(backups.rglob("manifest.json"))


def test_a_restored_database_keeps_its_identity_on_a_new_term(tmp_path, rng):
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 3)
        source_id, term = db.database_id, db.term
    run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
    copy = tmp_path / "copy"
    run("--data-dir", str(copy), "--backup-dir", str(backups), "restore", "--backup-id", "latest")
    with Database.open(engine_config(copy)) as db:
        assert db.database_id == source_id and db.lsn() == model.lsn
        assert db.term == term + 1 and db.term_history[-1] == (term + 1, model.lsn + 1)
        assert db.put_many([1], [1.0]) == model.lsn + 1  # the same LSN the source would give, on another term
    assert json.loads((copy / "data" / MANIFEST).read_text())["database_id"] == source_id

"""The guide's backup_schedule.sh, disaster_recovery.sh, WAL-corruption diagnosis/resolution and the
upgrade's backup step, run as printed against a real `omendb serve`, with only the paths substituted
(/var/lib/omendb, /var/backups/omendb, /var/backups, /tmp, /usr/local/bin/backup_tool) and the kubectl
steps done here directly (stop/start the server) — the Kubernetes side belongs to the operator issues.
`date +%u` is answered by a `date` shim on PATH so both branches of the schedule run as written."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx

from omendb.backup.layout import resolve
from omendb.files import list_segments
from tests.backup.conftest import BACKUP_TOOL, BIN, Model, http_all_records, http_write, read_state, tool
from tests.server.harness import Server

# Verbatim from the guide ("Automated Backup Strategy"); paths are substituted below.
BACKUP_SCHEDULE = r"""#!/bin/bash
# backup_schedule.sh

set -euo pipefail

BACKUP_DIR="/var/backups/omendb"
DATA_DIR="/var/lib/omendb"
RETENTION_DAYS=30

# Full backup on Sundays
if [ "$(date +%u)" -eq 7 ]; then
    /usr/local/bin/backup_tool \
        --data-dir "$DATA_DIR" \
        --backup-dir "$BACKUP_DIR" \
        full-backup --database production
else
    # Incremental backup on other days
    /usr/local/bin/backup_tool \
        --data-dir "$DATA_DIR" \
        --backup-dir "$BACKUP_DIR" \
        incremental-backup --database production
fi

# Cleanup old backups
/usr/local/bin/backup_tool \
    --data-dir "$DATA_DIR" \
    --backup-dir "$BACKUP_DIR" \
    cleanup --retention-days "$RETENTION_DAYS"

echo "✅ Backup completed successfully"
"""

# The guide's disaster_recovery.sh, steps 2 and 3 as printed; steps 1, 4 and 5 (kubectl) are done by the test.
DISASTER_RECOVERY = r"""#!/bin/bash
# disaster_recovery.sh

# 2. Find latest backup
LATEST_BACKUP=$(backup_tool --data-dir /tmp --backup-dir "$BACKUP_DIR" \
    list --database production | head -n1 | awk '{print $1}')

# 3. Restore from backup
backup_tool --data-dir "$DATA_DIR" --backup-dir "$BACKUP_DIR" \
    restore --backup-id "$LATEST_BACKUP" --force

echo "✅ Disaster recovery completed"
"""

# "WAL Corruption": diagnosis and resolution as printed (get_latest_backup_id is the guide's list | head).
WAL_CORRUPTION = r"""#!/bin/bash
get_latest_backup_id() {
    backup_tool --data-dir /var/lib/omendb --backup-dir /var/backups/omendb list --database production \
        | head -n1 | awk '{print $1}'
}

# Check WAL integrity
backup_tool --data-dir /var/lib/omendb --backup-dir /tmp \
    verify --backup-id latest
echo "verify-exit=$?"

# Examine WAL files
ls -la /var/lib/omendb/wal/

# Restore from latest backup
backup_tool --data-dir /var/lib/omendb --backup-dir /var/backups/omendb \
    restore --backup-id $(get_latest_backup_id) --force
"""

# Step 1 of upgrade_omendb.sh.
UPGRADE_BACKUP = r"""#!/bin/bash
# 1. Create backup
backup_tool --data-dir /var/lib/omendb --backup-dir /var/backups \
    full-backup --database production
"""


def substitute(script: str, paths: dict[str, Path]) -> str:
    paths = {"/usr/local/bin/backup_tool": BACKUP_TOOL, **paths}
    originals = sorted(paths, key=len, reverse=True)  # longest first: /var/backups/omendb before /var/backups
    # Via placeholders, so substituted paths (which may themselves contain /tmp) are never rewritten.
    for i, original in enumerate(originals):
        script = script.replace(original, f"@@{i}@@")
    for i, original in enumerate(originals):
        script = script.replace(f"@@{i}@@", str(paths[original]))
    return script


def run_script(tmp: Path, name: str, script: str, dow: int = 1, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    shim = tmp / "shim"
    shim.mkdir(exist_ok=True)
    date = shim / "date"
    date.write_text('#!/bin/sh\nif [ "$1" = "+%u" ]; then echo "$FAKE_DOW"; else exec /bin/date "$@"; fi\n')
    date.chmod(0o755)
    path = tmp / name
    path.write_text(script)
    path.chmod(0o755)
    environ = {**os.environ, "PATH": f"{shim}:{BIN}:{os.environ['PATH']}", "FAKE_DOW": str(dow),
               **(env or {})}
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, env=environ, timeout=300)


def test_guide_backup_schedule_disaster_recovery_wal_corruption_and_upgrade(tmp_path, rng):
    lib, backups = tmp_path / "var-lib-omendb", tmp_path / "backups-omendb"
    upgrade_backups = tmp_path / "backups"
    empty_tmp = tmp_path / "tmp"
    empty_tmp.mkdir()
    paths = {"/var/lib/omendb": lib, "/var/backups/omendb": backups, "/var/backups": upgrade_backups,
             "/tmp": empty_tmp}
    schedule = substitute(BACKUP_SCHEDULE, paths)
    model = Model()
    server = Server(lib, {"database": {"name": "omendb_production"}})
    with server:
        server.start()
        client = httpx.Client(base_url=server.url, timeout=30)
        http_write(client, model, rng, 12)
        # Sunday: the full branch, while the server is serving.
        proc = run_script(tmp_path, "backup_schedule.sh", schedule, dow=7)
        assert proc.returncode == 0, proc.stderr
        assert "full backup of production" in proc.stdout and "Backup completed successfully" in proc.stdout
        sunday_lsn = model.remember()
        # Monday and Tuesday: the incremental branch.
        for _ in range(2):
            http_write(client, model, rng, 9)
            client.post("/admin/checkpoint").raise_for_status()
            http_write(client, model, rng, 3)
            proc = run_script(tmp_path, "backup_schedule.sh", schedule, dow=1)
            assert proc.returncode == 0, proc.stderr
            assert "incremental backup of production" in proc.stdout, proc.stdout
            assert "kept" in proc.stdout  # cleanup reports what it kept (everything is younger than 30 days)
        tuesday_lsn = model.remember()
        # The upgrade procedure's backup step, to another backup directory, with the server running.
        proc = run_script(tmp_path, "upgrade.sh", substitute(UPGRADE_BACKUP, paths))
        assert proc.returncode == 0 and "full backup of production" in proc.stdout, proc.stderr
        listing = tool("--backup-dir", str(backups), "list", "--database", "production").stdout.splitlines()
        assert [line.split("\t")[1] for line in listing] == ["incremental", "incremental", "full"]
        # The disaster: writes after the last backup, then the server dies and the data volume is damaged.
        http_write(client, model, rng, 4)
        server.stop(signal.SIGKILL)
    (lib / "data" / "MANIFEST").write_text("garbage")

    # disaster_recovery.sh steps 2-3 (step 1, scaling to zero, is the server being stopped above).
    proc = run_script(tmp_path, "disaster_recovery.sh", DISASTER_RECOVERY,
                      env={"BACKUP_DIR": str(backups), "DATA_DIR": str(lib)})
    assert proc.returncode == 0, proc.stderr
    assert "Disaster recovery completed" in proc.stdout
    # Steps 4-5: start the server and wait for readiness; it serves Tuesday's backup.
    with server:
        server.start()
        client = httpx.Client(base_url=server.url, timeout=30)
        assert http_all_records(client) == model.at[tuesday_lsn]
        assert client.get("/v1/stats").json()["lsn"] == tuesday_lsn
        model.data, model.lsn = dict(model.at[tuesday_lsn]), tuesday_lsn
        http_write(client, model, rng, 6)  # the restored database keeps going from the restored LSN
        after_restore = model.remember()
        server.stop(signal.SIGKILL)  # a crash: the next start must replay the WAL, which we now damage

    segments = list_segments(lib / "wal")
    assert segments, "the server left no WAL to replay"
    _first, segment = segments[-1]
    data = bytearray(segment.read_bytes())
    data[40] ^= 0xFF  # inside the first frame, with intact frames after it: corruption, not a torn tail
    segment.write_bytes(bytes(data))
    proc = run_script(tmp_path, "wal_corruption.sh", substitute(WAL_CORRUPTION, paths))
    assert "verify-exit=3" in proc.stdout, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout and str(segment) in proc.stdout and "offset" in proc.stdout
    assert proc.returncode == 0, proc.stderr  # the restore at the end succeeded
    assert read_state(resolve(lib)) == (model.at[tuesday_lsn], tuesday_lsn)
    assert after_restore > tuesday_lsn and sunday_lsn < tuesday_lsn

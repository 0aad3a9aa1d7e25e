"""omendb.files, the one owner of a database's on-disk layout: its names, and the atomic MANIFEST replace
surviving a process killed at every step (a real child process, SIGKILLed between the steps)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from omendb import Database, files
from tests.engine.conftest import make_config


def test_default_wal_dir_is_a_function_of_the_data_directory_name(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert files.default_wal_dir(tmp_path / "data") == tmp_path / "wal"  # the guide's layout
    assert files.default_wal_dir(tmp_path / "orders") == tmp_path / "orders-wal"
    assert files.default_wal_dir(tmp_path / "a" / "data") != files.default_wal_dir(tmp_path / "b" / "data")
    monkeypatch.chdir(tmp_path)  # a relative data directory gets an absolute WAL directory
    assert files.default_wal_dir(Path("x")) == tmp_path / "x-wal"
    assert files.guide_layout(tmp_path) == (tmp_path / "data", tmp_path / "wal")


def test_checkpoint_and_segment_names(tmp_path: Path) -> None:
    assert files.base_name(42) == "base-00000000000000000042.odb"
    assert files.is_base_name(files.base_name(7)) and not files.is_base_name("MANIFEST")
    assert files.segment_name(1) == "00000000000000000001.wal"
    assert files.segment_lsn(files.segment_name(123456)) == 123456
    for name in ("notes.wal", "12.log", files.ARCHIVED, files.LOCK, "gap-20260101T000000Z"):
        assert files.segment_lsn(name) is None, name
    for name in (files.segment_name(30), files.segment_name(4), "stray.wal", files.ARCHIVED):
        (tmp_path / name).write_bytes(b"")
    assert files.list_segments(tmp_path) == [(4, tmp_path / files.segment_name(4)),
                                             (30, tmp_path / files.segment_name(30))]
    assert files.list_segments(tmp_path / "missing") == []


def test_leftovers_are_temporary_files_and_unnamed_checkpoints() -> None:
    current = files.base_name(10)
    assert files.is_leftover(files.base_name(5), current)
    assert files.is_leftover("MANIFEST.tmp", current)
    assert files.is_leftover(current + ".tmp", current)
    assert not files.is_leftover(current, current)
    assert not files.is_leftover(files.MANIFEST, current)
    assert not files.is_leftover(files.WAL_HEAD, current)
    assert files.tmp_path(Path("/d/MANIFEST")) == Path("/d/MANIFEST.tmp")
    assert files.gap_dir(Path("/w"), at=0).name == "gap-19700101T000000Z"


def test_archived_and_wal_head_round_trip(tmp_path: Path) -> None:
    assert files.read_archived(tmp_path) is None
    files.write_archived(tmp_path, 17)
    assert files.read_archived(tmp_path) == 17
    assert files.read_head(tmp_path) is None
    files.write_head(tmp_path, "db-id", 9)
    assert files.read_head(tmp_path) == ("db-id", 9)
    files.drop_head(tmp_path)
    assert files.read_head(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [files.ARCHIVED]  # no temporary file left


HOLD_LOCK = """
import sys, time
from pathlib import Path
from omendb.files import lock_directory
lock_directory(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(60)
"""


def test_a_directory_lock_held_by_another_process_names_it(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(files.HeldBy) as caught:
            files.lock_directory(tmp_path)
        assert caught.value.holder == str(child.pid)
    finally:
        child.kill()
        child.wait()
    fd = files.lock_directory(tmp_path)  # the lock went with the process
    os.close(fd)


# The child replaces the MANIFEST with files.write_manifest and SIGKILLs itself right before the n-th call
# of one system call (a profile hook sees each C call): a real process dying between two steps.
KILL_BETWEEN_STEPS = textwrap.dedent("""
    import dataclasses, os, signal, sys
    from pathlib import Path
    from omendb.files import read_manifest, write_manifest

    data_dir, call, nth, created_at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    seen = 0

    def die_before(frame, event, arg):
        global seen
        if event == "c_call" and getattr(arg, "__module__", None) == "posix" and arg.__name__ == call:
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    new = dataclasses.replace(read_manifest(data_dir), created_at=created_at)
    sys.setprofile(die_before)
    write_manifest(data_dir, new)
    sys.setprofile(None)
""")


# (system call, which call of it): where atomic_write is when the process dies, and what survives.
STEPS = [
    (("fsync", 1), "old"),  # the temporary file written, not yet fsynced
    (("replace", 1), "old"),  # fsynced, not yet renamed over the MANIFEST
    (("fsync", 2), "new"),  # renamed, the directory not yet fsynced
    (("never", 1), "new"),  # completed
]


@pytest.mark.parametrize(("step", "survivor"), STEPS, ids=[f"before-{c}-{n}" for (c, n), _ in STEPS])
def test_manifest_replace_survives_a_kill_between_any_two_steps(tmp_path: Path, step: tuple[str, int],
                                                                survivor: str) -> None:
    config = make_config(tmp_path)
    with Database.open(config) as db:
        db.put_many([1, 2, 3], [1.0, 2.0, 3.0])
    data_dir = Path(config.database.data_dir)
    old = files.read_manifest(data_dir)
    assert old is not None
    new_created_at = old.created_at + 1000
    call, nth = step
    child = subprocess.run([sys.executable, "-c", KILL_BETWEEN_STEPS, str(data_dir), call, str(nth),
                            repr(new_created_at)], capture_output=True, text=True, timeout=60)
    if call == "never":
        assert child.returncode == 0, child.stderr
    else:
        assert child.returncode == -signal.SIGKILL, child.stderr
    after = files.read_manifest(data_dir)  # never torn: the checksum would refuse a mix
    expected = old if survivor == "old" else dataclasses.replace(old, created_at=new_created_at)
    assert after == expected
    leftovers = [p.name for p in data_dir.iterdir() if files.is_leftover(p.name, old.base_file)]
    assert leftovers == (["MANIFEST.tmp"] if survivor == "old" else [])
    with Database.open(config) as db:  # the engine opens either, and clears what the crash left
        assert db.get_many([1, 2, 3])[0].tolist() == [1.0, 2.0, 3.0]
    assert not (data_dir / "MANIFEST.tmp").exists()


def test_atomic_write_leaves_no_temporary_file_when_the_replace_fails(tmp_path: Path) -> None:
    target = tmp_path / "MANIFEST"
    (target / "occupied").mkdir(parents=True)  # a non-empty directory: the rename over it fails
    with pytest.raises(OSError):
        files.atomic_write(target, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MANIFEST"]


def test_start_writeback_begins_the_write_back_of_a_range_and_never_fails(tmp_path: Path) -> None:
    """start_writeback is only a head start for a later fsync (a restore calls it after each piece it
    writes): on Linux it must find sync_file_range, or restores silently lose that head start; on a file it
    leaves the bytes as they are, and an error from the kernel (a closed descriptor) is not raised."""
    path = tmp_path / "big"
    data = os.urandom(4 << 20)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        files.start_writeback(fd, 0, len(data))
        files.start_writeback(fd, 0, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    files.start_writeback(fd, 0, 4096)  # closed: ignored, as the fsync that follows reports real errors
    assert path.read_bytes() == data
    if sys.platform == "linux":
        assert files._WRITEBACK[0] is not None, "sync_file_range not found in the C library"

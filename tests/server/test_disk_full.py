"""A real `omendb serve` whose WAL and data volumes fill up (real tmpfs mounts): writes get 507
`insufficient_storage`, /ready turns 503 with the reason while /health stays 200, a checkpoint gets 507 and
leaves no temporary file, and once space is freed everything resumes without a restart; every acknowledged
write survives a restart."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.server.harness import Server
from tests.tmpfs import fill_bytes, mounted_tmpfs

BATCH = 1000


def _records(i: int) -> dict[str, list[dict[str, float]]]:
    return {"records": [{"key": k, "value": k + 0.5} for k in range(i * BATCH, (i + 1) * BATCH)]}


def _wait_ready_status(client: httpx.Client, status: int, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get("/ready")
        if r.status_code == status or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_full_volumes_over_http_refuse_then_resume_without_restart(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "walfs", "2m") as walfs, mounted_tmpfs(tmp_path / "datafs", "1m") as datafs:
        wal_dir, data_dir = walfs / "wal", datafs / "data"
        server = Server(tmp_path / "srv", {"wal": {"dir": str(wal_dir)}, "database": {"data_dir": str(data_dir)}})
        acknowledged = []
        with server:
            server.start()
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for i in range(3):
                    assert client.post("/v1/records", json=_records(i)).status_code == 200
                    acknowledged.append(i)

                wal_filler = fill_bytes(walfs / "filler")
                r = client.post("/v1/records", json=_records(3))
                assert r.status_code == 507, r.text
                error = r.json()["error"]
                assert error["code"] == "insufficient_storage"
                assert str(wal_dir) in error["message"] and "free space" in error["message"]
                ready = _wait_ready_status(client, 503)
                assert ready.status_code == 503 and ready.json()["error"]["code"] == "insufficient_storage"
                assert str(wal_dir) in ready.json()["error"]["message"]
                assert client.get("/health").status_code == 200  # alive: a restart frees no space
                assert client.get(f"/v1/records/{BATCH}").json()["value"] == BATCH + 0.5  # reads still work
                assert "omendb_wal_storage_full 1.0" in httpx.get(server.metrics_url).text
                r = client.post("/admin/wal/archived", json={"lsn": 1})  # <wal>/ARCHIVED cannot be written
                assert r.status_code == 507, r.text
                assert r.json()["error"]["code"] == "insufficient_storage" and not list(wal_dir.glob("*.tmp"))
                assert str(wal_dir / "ARCHIVED") in r.json()["error"]["message"]

                data_filler = fill_bytes(datafs / "filler")
                r = client.post("/admin/checkpoint")
                assert r.status_code == 507, r.text
                assert r.json()["error"]["code"] == "insufficient_storage"
                assert str(data_dir) in r.json()["error"]["message"]
                assert not list(data_dir.glob("*.tmp"))

                wal_filler.unlink()
                data_filler.unlink()
                assert _wait_ready_status(client, 200).status_code == 200  # by itself, no write needed
                assert "omendb_wal_storage_full 0.0" in httpx.get(server.metrics_url).text
                for i in range(3, 6):
                    assert client.post("/v1/records", json=_records(i)).status_code == 200
                    acknowledged.append(i)
                assert client.post("/admin/checkpoint").status_code == 200
                assert client.post("/v1/records", json=_records(6)).status_code == 200
                acknowledged.append(6)
            assert server.stop() == 0
        log = server.log_text()
        assert "Traceback" not in log
        assert any(rec.get("code") == "insufficient_storage" for rec in server.log_records())

        restarted = Server(tmp_path / "srv2", {"wal": {"dir": str(wal_dir)}, "database": {"data_dir": str(data_dir)}})
        with restarted:
            restarted.start()
            with httpx.Client(base_url=restarted.url, timeout=30) as client:
                keys = [k for i in acknowledged for k in range(i * BATCH, (i + 1) * BATCH)]
                got = client.post("/v1/records/lookup", json={"keys": keys}).json()["records"]
                assert [rec["value"] for rec in got] == [k + 0.5 for k in keys]
            restarted.stop()

"""The issue's repro over HTTP: a server killed with SIGKILL whose WAL is then lost must not come back at an
older LSN and hand the same LSNs out again."""

import signal
from pathlib import Path

import httpx

from .harness import Server


def _write(client: httpx.Client, first: int, last: int) -> int:
    lsn = 0
    for key in range(first, last + 1):
        r = client.post("/v1/records", json={"records": [{"key": key, "value": float(key)}]})
        assert r.status_code == 200, r.text
        lsn = r.json()["lsn"]
    return int(lsn)


def test_a_lost_wal_refuses_startup_instead_of_reusing_lsns(tmp_path: Path) -> None:
    server = Server(tmp_path / "node")
    with server:
        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert _write(client, 1, 100) == 100
            assert client.post("/admin/checkpoint").status_code == 200
            assert _write(client, 101, 200) == 200
        server.stop(signal.SIGKILL)
    wal = server.config.wal_dir
    wal.rename(tmp_path / "wal-aside")

    with server:
        server.start(wait_ready=False)
        assert server.proc is not None and server.proc.wait(60) != 0
    log = server.log_text()
    assert "holds no segment" in log and "LSN 101" in log and "accept_gap" in log

    # The explicit override starts, says so at ERROR, and continues on a new term.
    override = Server(tmp_path / "node", {"wal": {"accept_gap": True}})
    with override:
        override.start()
        with httpx.Client(base_url=override.url, timeout=30) as client:
            info = client.get("/admin/replication/info").json()
            assert info["lsn"] == 100 and info["term"] == 2
            assert _write(client, 101, 101) == 101
        assert any(r.get("level") == "ERROR" and "accept_gap" in r.get("msg", "")
                   for r in override.log_records())

"""The object store the backup tests build on: real SeaweedFS, TLS, signature v4, via obstore."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import obstore
import pytest
from obstore.store import S3Store

from e2e import objectstore, procs


def _store(env: dict[str, str], secret: str | None = None) -> S3Store:
    return S3Store(
        env["OMENDB_TEST_BUCKET"],
        endpoint=env["AWS_ENDPOINT_URL"],
        access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=secret or env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_REGION"],
        client_options={"root_certificate": Path(env["AWS_CA_BUNDLE"]).read_text()},
        retry_config={"max_retries": 1, "retry_timeout": __import__("datetime").timedelta(seconds=5)},
    )


def test_put_get_list_delete(s3_env: dict[str, str]) -> None:
    store = _store(s3_env)
    obstore.put(store, "basic/a.txt", b"hello")
    obstore.put(store, "basic/b.txt", b"world")
    assert bytes(obstore.get(store, "basic/a.txt").bytes()) == b"hello"
    listed = sorted(m["path"] for batch in obstore.list(store, prefix="basic/") for m in batch)
    assert listed == ["basic/a.txt", "basic/b.txt"]
    obstore.delete(store, "basic/a.txt")
    with pytest.raises(FileNotFoundError):
        obstore.get(store, "basic/a.txt")


# Run in a child so its peak RSS measures the upload alone, not this test session.
_UPLOAD = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tests.objectstore.test_s3 import _store
import obstore
env = json.loads(sys.argv[1])
store = _store(env)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open(sys.argv[2], "rb") as f:
    obstore.put(store, "multipart/big.bin", f, chunk_size=5 * 1024 * 1024, max_concurrency=2)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "after_kib": after}))
"""


def test_multipart_upload_streams_with_bounded_memory(s3_env: dict[str, str], tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for i in range(size // (1024 * 1024)):
            f.write(bytes([i % 251]) * (1024 * 1024))
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", _UPLOAD, json.dumps(s3_env), str(big), str(root)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rss = json.loads(res.stdout)
    store = _store(s3_env)
    head = obstore.head(store, "multipart/big.bin")
    assert head["size"] == size
    # An S3 multipart object's ETag is "<md5 of part md5s>-<part count>".
    assert str(head["e_tag"]).strip('"').endswith(f"-{size // (5 * 1024 * 1024) + 1}"), head
    got = obstore.get(store, "multipart/big.bin", options={"range": (size - 3, size)}).bytes()
    assert bytes(got) == bytes([(size // (1024 * 1024) - 1) % 251]) * 3
    # Streaming: the peak grows by far less than the 64 MiB file (parts of 5 MiB, 2 in flight).
    assert rss["after_kib"] - rss["before_kib"] < 40 * 1024, rss


def test_anonymous_request_refused(s3_env: dict[str, str]) -> None:
    ctx = ssl.create_default_context(cafile=s3_env["AWS_CA_BUNDLE"])
    store = _store(s3_env)
    obstore.put(store, "anon/secret.txt", b"private")
    for url in (f"{s3_env['AWS_ENDPOINT_URL']}/{s3_env['OMENDB_TEST_BUCKET']}/anon/secret.txt",
                f"{s3_env['AWS_ENDPOINT_URL']}/{s3_env['OMENDB_TEST_BUCKET']}?list-type=2",
                f"{s3_env['AWS_ENDPOINT_URL']}/"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, context=ctx, timeout=10)
        assert err.value.code == 403, url
    put = urllib.request.Request(f"{s3_env['AWS_ENDPOINT_URL']}/{s3_env['OMENDB_TEST_BUCKET']}/anon/x",
                                 data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(put, context=ctx, timeout=10)
    assert err.value.code == 403


def test_wrong_secret_refused(s3_env: dict[str, str]) -> None:
    bad = _store(s3_env, secret="not-the-" + s3_env["AWS_SECRET_ACCESS_KEY"])
    with pytest.raises(Exception) as err:
        obstore.put(bad, "wrong/secret.txt", b"x")
    assert "403" in str(err.value) or "SignatureDoesNotMatch" in str(err.value), err.value
    with pytest.raises(FileNotFoundError):
        obstore.head(_store(s3_env), "wrong/secret.txt")


def test_plain_http_is_not_served(s3_env: dict[str, str]) -> None:
    plain = s3_env["AWS_ENDPOINT_URL"].replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(plain + "/", timeout=10)


def test_env_prints_the_contract(s3_env: dict[str, str]) -> None:
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CA_BUNDLE",
                "OMENDB_TEST_BUCKET"):
        assert s3_env[key], key
    assert s3_env["AWS_ENDPOINT_URL"].startswith("https://127.0.0.1:")
    assert os.path.isfile(s3_env["AWS_CA_BUNDLE"])


def test_listens_on_loopback_only(s3_store: objectstore.Store) -> None:
    pid = procs.alive("weed-server", s3_store.pids)
    assert pid is not None
    listening = subprocess.run(["ss", "-tlnpH"], capture_output=True, text=True, check=True).stdout
    ours = [line.split()[3] for line in listening.splitlines() if f"pid={pid}," in line]
    # master, volume, filer and S3, each with its gRPC port
    assert len(ours) >= 8, ours
    assert all(addr.startswith("127.0.0.1:") for addr in ours), ours

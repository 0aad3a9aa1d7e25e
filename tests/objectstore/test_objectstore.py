"""omendb.objectstore against the real SeaweedFS (TLS, signature v4): objects, streams, conditional puts,
the AWS configuration conventions and the errors a user sees when one of them is wrong."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from e2e import objectstore as seaweed
from e2e import pki
from omendb.objectlock import LockBusy, LockLost, ObjectLock, locked
from omendb.objectstore import (
    AlreadyExists,
    NotFound,
    ObjectStore,
    ObjectStoreError,
    Precondition,
    is_object_url,
    resolve,
)


def _url(env: dict[str, str], prefix: str | None = None) -> str:
    return f"s3://{env['OMENDB_TEST_BUCKET']}/{prefix or 'os-' + uuid.uuid4().hex[:8]}"


def _fast(env: dict[str, str], **extra: str) -> dict[str, str]:
    """The test store's environment with retries cut short, so failures surface in seconds."""
    return {**env, "OMENDB_S3_MAX_RETRIES": "1", "OMENDB_S3_RETRY_TIMEOUT": "5", **extra}


def test_objects_under_a_prefix(s3_env: dict[str, str]) -> None:
    store = ObjectStore.from_url(_url(s3_env), s3_env)
    store.put("a/one", b"1")
    store.put("a/two", b"22")
    store.put("b", b"333")
    assert [(o.key, o.size) for o in store.list()] == [("a/one", 1), ("a/two", 2), ("b", 3)]
    assert [o.key for o in store.list("a/")] == ["a/one", "a/two"]
    assert store.get("a/two") == b"22"
    assert b"".join(store.get_stream("b", chunk_size=1)) == b"333"
    store.delete(["a/one", "b", "never-there"])
    assert [o.key for o in store.list()] == ["a/two"]
    with pytest.raises(NotFound, match="does not exist"):
        store.get("a/one")
    with pytest.raises(NotFound):
        list(store.get_stream("b"))
    # Another prefix of the same bucket sees none of it.
    assert ObjectStore.from_url(_url(s3_env), s3_env).list() == []


def test_put_if_absent_and_compare_and_swap(s3_env: dict[str, str]) -> None:
    """The lock object's primitives: SeaweedFS honours If-None-Match: * and If-Match."""
    store = ObjectStore.from_url(_url(s3_env), s3_env)
    tag = store.put_if_absent("lock", b"first")
    assert tag
    with pytest.raises(AlreadyExists):
        store.put_if_absent("lock", b"second")
    assert store.get("lock") == b"first"
    store.put("lock", b"third", mode={"e_tag": tag})
    assert store.get("lock") == b"third"
    with pytest.raises(Precondition):
        store.put("lock", b"fourth", mode={"e_tag": tag})  # stale version: refused
    assert store.get("lock") == b"third"


# Run in a child so that its peak RSS measures the upload and download alone.
_STREAM = """
import hashlib, json, os, resource, sys
from omendb.objectstore import ObjectStore
env, url, size = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
store = ObjectStore.from_url(url, env)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
block = os.urandom(1 << 20)
sha = hashlib.sha256()
def chunks():
    for i in range(size >> 20):
        piece = block[i % 7:] + block[:i % 7]  # every MiB different
        sha.update(piece)
        yield piece
written = store.put_stream("big", chunks())
up = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
back = hashlib.sha256()
for piece in store.get_stream("big"):
    back.update(piece)
down = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"written": written, "sent": sha.hexdigest(), "got": back.hexdigest(),
                  "before_kib": before, "after_upload_kib": up, "after_download_kib": down}))
"""


def test_streams_a_large_object_with_bounded_memory(s3_env: dict[str, str]) -> None:
    size = 96 << 20
    url = _url(s3_env)
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", _STREAM, json.dumps(s3_env), url, str(size)],
                         capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(root / "engine")})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["written"] == size and out["sent"] == out["got"], out
    store = ObjectStore.from_url(url, s3_env)
    assert store.head("big").size == size
    # Multipart: the ETag of a multipart object is "<md5 of the parts' md5s>-<number of parts>".
    assert str(store.head("big").e_tag).strip('"').endswith(f"-{size // (8 << 20)}")
    # 8 MiB parts, 2 in flight: the peak grows by a few parts, not by the 96 MiB object.
    assert out["after_upload_kib"] - out["before_kib"] < 64 << 10, out
    assert out["after_download_kib"] - out["before_kib"] < 64 << 10, out
    store.delete(["big"])


def test_an_interrupted_stream_leaves_no_object(s3_env: dict[str, str]) -> None:
    store = ObjectStore.from_url(_url(s3_env), s3_env)

    def chunks():  # type: ignore[no-untyped-def]
        yield b"x" * (9 << 20)
        raise OSError("disk read failed")

    with pytest.raises(OSError, match="disk read failed"):
        store.put_stream("partial", chunks())
    assert store.list() == []


def test_shared_credentials_file_and_profile(s3_env: dict[str, str], tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n"
                     f"[backup]\naws_access_key_id = {s3_env['AWS_ACCESS_KEY_ID']}\n"
                     f"aws_secret_access_key = {s3_env['AWS_SECRET_ACCESS_KEY']}\nregion = us-east-1\n")
    env = {k: v for k, v in s3_env.items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET"))}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(creds), AWS_PROFILE="backup")
    store = ObjectStore.from_url(_url(s3_env), env)
    store.put("k", b"v")
    assert store.get("k") == b"v"
    assert str(creds) in store.settings.credentials_from
    with pytest.raises(ObjectStoreError, match=r"no \[other\] section.*backup"):
        ObjectStore.from_url(_url(s3_env), {**env, "AWS_PROFILE": "other"})
    with pytest.raises(ObjectStoreError, match="does not exist"):
        ObjectStore.from_url(_url(s3_env), {**env, "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")})


def test_endpoint_and_region_conventions(s3_env: dict[str, str]) -> None:
    env = {**s3_env, "AWS_ENDPOINT_URL": "https://127.0.0.1:1", "AWS_ENDPOINT_URL_S3": s3_env["AWS_ENDPOINT_URL"]}
    env.pop("AWS_REGION")
    settings = resolve(_url(s3_env, "x/y/"), env)
    assert settings.endpoint == s3_env["AWS_ENDPOINT_URL"]  # the service-specific variable wins
    assert settings.region == s3_env["AWS_DEFAULT_REGION"] and settings.prefix == "x/y"
    store = ObjectStore.from_url(_url(s3_env), env)
    store.put("k", b"v")
    assert "secret" not in repr(settings).lower() or s3_env["AWS_SECRET_ACCESS_KEY"] not in repr(settings)
    assert is_object_url("s3://b/p") and not is_object_url("/var/backups") and not is_object_url("s3:/b")


def test_clear_errors(s3_env: dict[str, str], tmp_path: Path) -> None:
    url = _url(s3_env)
    no_creds = {k: v for k, v in s3_env.items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET"))}
    no_creds["HOME"] = str(tmp_path)  # no ~/.aws/credentials either
    with pytest.raises(ObjectStoreError, match="no credentials.*AWS_ACCESS_KEY_ID.*AWS_SHARED_CREDENTIALS_FILE"):
        ObjectStore.from_url(url, no_creds)

    wrong = ObjectStore.from_url(url, _fast(s3_env, AWS_SECRET_ACCESS_KEY="wrong-secret"))
    with pytest.raises(ObjectStoreError, match="secret key does not match.*AWS_SECRET_ACCESS_KEY"):
        wrong.put("k", b"v")
    unknown = ObjectStore.from_url(url, _fast(s3_env, AWS_ACCESS_KEY_ID="AKIAUNKNOWN"))
    with pytest.raises(ObjectStoreError, match="does not know the access key AKIAUNKNOWN.*AWS_ACCESS_KEY_ID"):
        unknown.list()

    missing = ObjectStore.from_url(f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/p", _fast(s3_env))
    with pytest.raises(NotFound, match="bucket .* does not exist.*create it"):
        missing.list()
    # (A PUT is not tried: SeaweedFS creates a missing bucket on PUT for an identity with Admin rights.)

    other_ca, _ = pki.make_ca("not-the-store-ca")
    bad_ca = tmp_path / "other-ca.pem"
    bad_ca.write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ObjectStoreError, match=f"certificate .* could not be verified.*AWS_CA_BUNDLE={bad_ca}"):
        ObjectStore.from_url(url, _fast(s3_env, AWS_CA_BUNDLE=str(bad_ca))).list()
    no_ca = _fast({k: v for k, v in s3_env.items() if k != "AWS_CA_BUNDLE"})
    with pytest.raises(ObjectStoreError, match="could not be verified.*set AWS_CA_BUNDLE"):
        ObjectStore.from_url(url, no_ca).list()
    with pytest.raises(ObjectStoreError, match="AWS_CA_BUNDLE=.* does not exist"):
        ObjectStore.from_url(url, {**s3_env, "AWS_CA_BUNDLE": str(tmp_path / "none.pem")})

    port = seaweed.free_ports(1)[0]
    down = ObjectStore.from_url(url, _fast(s3_env, AWS_ENDPOINT_URL=f"https://127.0.0.1:{port}"))
    with pytest.raises(ObjectStoreError, match=f"cannot reach the endpoint https://127.0.0.1:{port}.*AWS_ENDPOINT_URL"):
        down.list()

    with pytest.raises(ObjectStoreError, match="not an object store URL"):
        ObjectStore.from_url("s3:///nobucket", s3_env)
    with pytest.raises(ObjectStoreError, match="not a valid bucket name"):
        ObjectStore.from_url("s3://Bad_Bucket/x", s3_env)


def test_digest_of_streamed_object_matches(s3_env: dict[str, str]) -> None:
    store = ObjectStore.from_url(_url(s3_env), s3_env)
    data = bytes(range(256)) * 40000
    assert store.put_stream("d", [data[i:i + 100000] for i in range(0, len(data), 100000)]) == len(data)
    got = hashlib.sha256()
    for piece in store.get_stream("d", chunk_size=1 << 16):
        got.update(piece)
    assert got.hexdigest() == hashlib.sha256(data).hexdigest()


def test_lock_object_excludes_a_second_writer_and_expires(s3_env: dict[str, str]) -> None:
    store = ObjectStore.from_url(_url(s3_env), s3_env)
    first = ObjectLock(store, ttl=4.0)
    first.acquire()
    second = ObjectLock(store, ttl=4.0)
    with pytest.raises(LockBusy, match="in use by another backup_tool run.*--lock-timeout"):
        second.acquire(timeout=6.0)  # longer than the ttl: the holder keeps renewing it
    first.release()
    assert [o.key for o in store.list()] == []
    with locked(store, timeout=1.0) as lock:
        assert lock.holder() is not None
    # A holder that stops renewing (crashed, or stalled) loses the lock to the next writer once it
    # expired, and learns it at its next renewal, before it commits anything.
    stalled = ObjectLock(store, ttl=4.0)
    stalled.acquire()
    stalled._stop.set()
    assert stalled._thread is not None
    stalled._thread.join()
    time.sleep(5.0)  # past its ttl
    newcomer = ObjectLock(store, ttl=4.0)
    newcomer.acquire()
    stalled._stop = threading.Event()
    renew = threading.Thread(target=stalled._renew)
    renew.start()
    renew.join(timeout=5)
    assert stalled.lost
    with pytest.raises(LockLost, match="took it over"):
        stalled.check()
    stalled._stop.set()
    stalled.release()  # no longer ours: left alone
    assert newcomer.holder() is not None and newcomer.holder()[0]["owner"] == newcomer.owner  # type: ignore[index]
    newcomer.release()
    assert store.list() == []


class FlakyProxy:
    """A TCP proxy in front of the store that first refuses connections (not listening yet), then drops
    the first `drop` connections it accepts, then forwards bytes both ways (TLS passes through)."""

    def __init__(self, target: tuple[str, int], refuse_for: float, drop: int) -> None:
        self.target, self.drop, self.accepted = target, drop, 0
        self.port = seaweed.free_ports(1)[0]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(refuse_for,), daemon=True)
        self.thread.start()

    def _serve(self, refuse_for: float) -> None:
        time.sleep(refuse_for)
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.2)
        with listener:
            while not self.stopped.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                self.accepted += 1
                if self.accepted <= self.drop:
                    conn.close()
                    continue
                upstream = socket.create_connection(self.target)
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_requests_are_retried_with_backoff(s3_env: dict[str, str]) -> None:
    """Connections refused for a second and a half, then the first two dropped: every call still succeeds,
    after retries spaced by the backoff."""
    host, port = s3_env["AWS_ENDPOINT_URL"].removeprefix("https://").rsplit(":", 1)
    proxy = FlakyProxy((host, int(port)), refuse_for=1.5, drop=2)
    try:
        env = {**s3_env, "AWS_ENDPOINT_URL": f"https://127.0.0.1:{proxy.port}"}
        store = ObjectStore.from_url(_url(s3_env), env)
        started = time.monotonic()
        store.put("retried", b"made it")
        assert time.monotonic() - started >= 1.4  # it waited for the proxy to listen, retrying
        assert proxy.accepted >= 3  # the two dropped connections, then the one that worked
        assert store.get("retried") == b"made it"
        assert store.put_stream("big", [b"x" * (6 << 20)] * 3) == 18 << 20
    finally:
        proxy.stopped.set()
    # Without retries the same outage is an error that names the endpoint.
    proxy = FlakyProxy((host, int(port)), refuse_for=60, drop=0)
    try:
        env = _fast(s3_env, AWS_ENDPOINT_URL=f"https://127.0.0.1:{proxy.port}", OMENDB_S3_MAX_RETRIES="0")
        with pytest.raises(ObjectStoreError, match="cannot reach the endpoint"):
            ObjectStore.from_url(_url(s3_env), env).get("x")
    finally:
        proxy.stopped.set()


_HOLD = """
import json, sys, time
from omendb.objectstore import ObjectStore
from omendb.objectlock import ObjectLock
ObjectLock(ObjectStore.from_url(sys.argv[2], json.loads(sys.argv[1])), ttl=600).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_holder_on_this_machine_is_known_dead_at_once(s3_env: dict[str, str]) -> None:
    url = _url(s3_env)
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", _HOLD, json.dumps(s3_env), url], stdout=subprocess.PIPE,
                             text=True, env={"PYTHONPATH": str(root / "engine")})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        store = ObjectStore.from_url(url, s3_env)
        with pytest.raises(LockBusy, match=f"pid {child.pid}"):
            ObjectLock(store).acquire()  # alive: its 600 s lock holds
    finally:
        child.kill()
        child.wait()
    started = time.monotonic()
    with locked(store) as lock:  # dead, here: no need to wait 600 s
        assert lock.holder()[0]["owner"] == lock.owner  # type: ignore[index]
    assert time.monotonic() - started < 30

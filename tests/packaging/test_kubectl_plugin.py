"""kubectl-omendb: argument parsing, and every command run against the bare kube-apiserver with objects the
operator's own builders make (read back from the server, not hand-fed), plus `get` through a real TLS
engine server."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from omendb.client import Client
from omendb_operator import labels as L
from omendb_operator.plugin import builders, render
from omendb_operator.plugin.cli import main, parser
from tests.client.conftest import tls_server  # noqa: F401 - a fixture: a real engine with TLS and auth
from tests.server.conftest import PASSWORDS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "manifests" / "samples" / "omendb-development.yaml"


# ---- parsing (no cluster)


def test_commands_parse_and_keys_are_integers():
    ap = parser()
    args = ap.parse_args(["-n", "prod", "restore", "db", "--backup-id", "20261127-full"])
    assert (args.command, args.name, args.namespace, args.backup_id) == ("restore", "db", "prod", "20261127-full")
    assert ap.parse_args(["get", "db", "0x2a"]).key == 42
    assert ap.parse_args(["logs", "db", "--pod", "db-0", "--tail", "5"]).tail == 5


@pytest.mark.parametrize("argv, message", [
    (["restore", "db", "--to-lsn", "5", "--to-time", "2026-11-27T08:00:00Z"], "not allowed with"),
    (["backup", "db", "--type", "differential"], "invalid choice"),
    (["get", "db", "forty-two"], "KEY must be an integer"),
    (["status"], "NAME"),
    (["frobnicate", "db"], "invalid choice"),
])
def test_bad_arguments_say_what_is_wrong(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_restore_help_says_what_the_operator_does(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["restore", "--help"])
    out = capsys.readouterr().out
    assert "kept aside" in out and "--to-lsn" in out and "backup-and-restore.md" in out
    assert parser().parse_args(["restore", "db"]).backup_id == "latest"


def test_console_script_is_installed():
    out = subprocess.run([str(Path(sys.executable).parent / "kubectl-omendb"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "status" in out.stdout and "backup" in out.stdout, out.stderr


def test_restore_refuses_an_empty_backup_id():
    with pytest.raises(ValueError, match="--backup-id is empty"):
        builders.restore_resource("db", "ns", "  ", dt.datetime.now(dt.UTC))


# ---- against the bare API server


def create(apiserver, path: str, body: dict[str, Any]) -> dict[str, Any]:
    with apiserver.client() as http:
        if body["kind"] == "Pod":  # no controller makes the default ServiceAccount here; admission wants it
            ns = path.split("/")[4]
            r = http.post(f"/api/v1/namespaces/{ns}/serviceaccounts",
                          json={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
            assert r.status_code in (201, 409), r.text
        r = http.post(path, json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())


def patch_status(apiserver, path: str, status: dict[str, Any]) -> None:
    with apiserver.client() as http:
        r = http.patch(path + "/status", json={"status": status},
                       headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text


def run(apiserver, namespace: str, *argv: str, capsys) -> tuple[int, str, str]:
    code = main(["--kubeconfig", str(apiserver.kubeconfig), "-n", namespace, *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def dev(apiserver, namespace) -> dict[str, Any]:
    """The development sample OmenDB, as the API server stored it."""
    body = yaml.safe_load(SAMPLE.read_text())
    return create(apiserver, f"/apis/omendb.io/v1alpha1/namespaces/{namespace}/omendbs", body)


def omendb_path(namespace: str, name: str) -> str:
    return f"/apis/omendb.io/v1alpha1/namespaces/{namespace}/omendbs/{name}"


def test_status_shows_phase_pods_backup_conditions_and_events(apiserver, namespace, dev, capsys):
    name = dev["metadata"]["name"]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stamp = (now - dt.timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    patch_status(apiserver, omendb_path(namespace, name), {
        "observedGeneration": dev["metadata"]["generation"], "phase": "Ready", "replicas": 1,
        "readyReplicas": 1, "primaryPod": f"{name}-0", "currentVersion": "0.1.0",
        "credentialsSecret": f"{name}-users", "lastBackup": {"full": stamp},
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllPodsReady", "message": "1/1 ready",
                        "lastTransitionTime": stamp, "observedGeneration": 1}],
    })
    pod = create(apiserver, f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-0", "labels": L.selector_labels(name)},
        "spec": {"containers": [{"name": "omendb", "image": "omendb/omendb:0.1.0"}]}})
    patch_status(apiserver, f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}", {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    create(apiserver, f"/api/v1/namespaces/{namespace}/events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"}, "type": "Normal", "reason": "Created",
        "message": "created StatefulSet", "lastTimestamp": stamp,
        "involvedObject": {"kind": "OmenDB", "name": name, "namespace": namespace}})
    create(apiserver, f"/api/v1/namespaces/{namespace}/events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e2"}, "type": "Normal", "reason": "Other",
        "message": "about another database", "lastTimestamp": stamp,
        "involvedObject": {"kind": "OmenDB", "name": "devx", "namespace": namespace}})

    code, out, err = run(apiserver, namespace, "status", name, capsys=capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"OmenDB {namespace}/{name}"
    assert "  Phase:      Ready" in lines
    assert "  Version:    0.1.0 (wanted 0.1.0)" in lines
    assert f"  Last backup: full {stamp} (2h ago)" in lines
    pod_line = next(line for line in lines if line.strip().startswith(f"{name}-0"))
    assert pod_line.split() == [f"{name}-0", "primary", "yes", "Running", "0", "-", "-"]
    assert any(line.split()[:3] == ["Ready", "True", "AllPodsReady"] for line in lines)
    assert "created StatefulSet" in out and "about another database" not in out


def test_status_of_a_missing_omendb_says_how_to_find_it(apiserver, namespace, capsys):
    code, _, err = run(apiserver, namespace, "status", "nope", capsys=capsys)
    assert code == 1 and "not found" in err and "kubectl get omendb -A" in err


def test_backup_creates_an_omendbbackup(apiserver, namespace, dev, capsys):
    name = dev["metadata"]["name"]
    code, out, err = run(apiserver, namespace, "backup", name, "--type", "incremental", capsys=capsys)
    assert code == 0, err
    assert out.startswith("omendbbackup.omendb.io/") and "get omendbbackup" in out
    with apiserver.client() as http:
        items = http.get(f"/apis/omendb.io/v1alpha1/namespaces/{namespace}/omendbbackups").json()["items"]
    assert [i["spec"] for i in items] == [{"cluster": {"name": name}, "type": "incremental"}]


def test_backup_wait_follows_the_status_until_it_fails(apiserver, namespace, dev, capsys, monkeypatch):
    """--wait polls the resource; here the status is written as the operator would (no operator runs)."""
    from omendb_operator.plugin import cli

    name = dev["metadata"]["name"]
    monkeypatch.setattr(cli, "POLL_SECONDS", 0.1)
    created: list[str] = []
    real_follow = cli._follow

    def follow(kube, kind, obj_name, ns, timeout):
        created.append(obj_name)
        patch_status(apiserver, f"/apis/omendb.io/v1alpha1/namespaces/{ns}/omendbbackups/{obj_name}",
                     {"phase": "Failed", "error": "backup_tool: error: --source unusable"})
        return real_follow(kube, kind, obj_name, ns, timeout)

    monkeypatch.setattr(cli, "_follow", follow)
    code, out, err = run(apiserver, namespace, "backup", name, "--wait", "--timeout", "30", capsys=capsys)
    assert code == 1 and "failed: backup_tool: error: --source unusable" in err, (out, err)
    assert "Failed: backup_tool: error: --source unusable" in out and created


def test_restore_creates_an_omendbrestore(apiserver, namespace, dev, capsys):
    name = dev["metadata"]["name"]
    code, out, err = run(apiserver, namespace, "restore", name, "--to-lsn", "42", capsys=capsys)
    assert code == 0, err
    assert "from latest to LSN 42" in out
    with apiserver.client() as http:
        items = http.get(f"/apis/omendb.io/v1alpha1/namespaces/{namespace}/omendbrestores").json()["items"]
    assert [i["spec"] for i in items] == [{"cluster": {"name": name}, "backupId": "latest",
                                           "pointInTime": {"lsn": 42}}]
    code, out, err = run(apiserver, namespace, "status", name, capsys=capsys)
    assert code == 0 and "Backups and restores:" in out and "OmenDBRestore" in out, err


def test_logs_of_an_unknown_pod_lists_the_real_ones(apiserver, namespace, dev, capsys):
    name = dev["metadata"]["name"]
    code, _, err = run(apiserver, namespace, "logs", name, capsys=capsys)
    assert code == 1 and "has no pods yet" in err
    create(apiserver, f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-0", "labels": L.selector_labels(name)},
        "spec": {"containers": [{"name": "omendb", "image": "omendb/omendb:0.1.0"}]}})
    code, _, err = run(apiserver, namespace, "logs", name, "--pod", f"{name}-7", capsys=capsys)
    assert code == 1 and f"['{name}-0']" in err


def test_get_reads_through_the_client_with_the_secrets_credentials(apiserver, namespace, dev,
                                                                   tls_server, capsys):  # noqa: F811
    server, ca_dir = tls_server
    name = dev["metadata"]["name"]
    with Client(server.url, username="admin", password=PASSWORDS["admin"],
                ca_file=str(ca_dir / "ca.crt")) as db:
        db.put(4242, 3.5)
    def secret(secret_name: str, data: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    create(apiserver, f"/api/v1/namespaces/{namespace}/secrets",
           secret(f"{name}-users", {"username": "admin", "password": PASSWORDS["admin"]}))
    create(apiserver, f"/api/v1/namespaces/{namespace}/secrets",
           secret(f"{name}-ca", {"ca.crt": (ca_dir / "ca.crt").read_text()}))
    patch_status(apiserver, omendb_path(namespace, name), {
        "endpoints": {"primary": f"https://{name}.{namespace}.svc:3000"}, "credentialsSecret": f"{name}-users"})
    code, out, err = run(apiserver, namespace, "get", name, "4242", "--url", server.url, capsys=capsys)
    assert (code, out) == (0, "3.5\n"), err
    code, out, err = run(apiserver, namespace, "get", name, "4243", "--url", server.url, capsys=capsys)
    assert (code, out) == (0, "(not found)\n"), err


def test_get_trusts_the_ca_of_the_served_secret_without_name_ca(apiserver, namespace, dev,
                                                                  tls_server, capsys):  # noqa: F811
    """spec.tls.issuerRef (or secretName): no NAME-ca exists; ca.crt of the Secret in status.tls.secretName
    (cert-manager's NAME-tls) is the CA to trust."""
    server, ca_dir = tls_server
    name = dev["metadata"]["name"]
    with Client(server.url, username="admin", password=PASSWORDS["admin"],
                ca_file=str(ca_dir / "ca.crt")) as db:
        db.put(4244, 1.5)
    for secret_name, data in ((f"{name}-users", {"username": "admin", "password": PASSWORDS["admin"]}),
                              (f"{name}-tls", {"ca.crt": (ca_dir / "ca.crt").read_text()})):
        create(apiserver, f"/api/v1/namespaces/{namespace}/secrets", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})
    patch_status(apiserver, omendb_path(namespace, name), {
        "endpoints": {"primary": f"https://{name}.{namespace}.svc:3000"}, "credentialsSecret": f"{name}-users",
        "tls": {"secretName": f"{name}-tls", "certificate": name}})
    code, out, err = run(apiserver, namespace, "get", name, "4244", "--url", server.url, capsys=capsys)
    assert (code, out) == (0, "1.5\n"), err


def test_render_table_aligns_columns():
    assert render.table([["A", "BB"], ["CCC", "D"]]) == ["A    BB", "CCC  D"]

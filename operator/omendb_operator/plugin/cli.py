"""``kubectl-omendb`` (``kubectl omendb``): status, backup, restore, logs, switchover and a quick read of one
OmenDB.

Credentials come from the kubeconfig ($KUBECONFIG, ~/.kube/config) or the pod's service account, like
kubectl's. ``--namespace`` defaults to the kubeconfig context's namespace, else ``default``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omendb_operator import labels as L
from omendb_operator.plugin import builders, render

RESTORE_HELP = """\
Create an OmenDBRestore: the operator stops NAME's pods, restores backup --backup-id (default `latest`),
optionally to --to-lsn or --to-time, starts the pods again and verifies the restored LSN and record count.
The previous data is kept aside until then; a failed restore puts it back. With --wait, follow it until it
finishes. See docs/operations/backup-and-restore.md."""

BACKUP_HELP = """\
Create an OmenDBBackup: the operator runs a backup Job (the scheduled backups' Job) against NAME's primary
and reports the backup id and size in the resource's status. With --wait, follow it until it finishes."""
POLL_SECONDS = 2.0


class PluginError(Exception):
    """A problem the user can fix; the message says how."""


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="kubectl omendb",
        description="Inspect and operate OmenDB databases run by the OmenDB operator.")
    ap.add_argument("-n", "--namespace", help="the OmenDB's namespace (default: the kubeconfig context's)")
    ap.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("status", help="phase, version, pods, last backup, conditions and recent events")
    p.add_argument("name", metavar="NAME")

    p = sub.add_parser("backup", help="take a backup now (an OmenDBBackup); see `backup --help`",
                       description=BACKUP_HELP)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--type", choices=("full", "incremental"), default="full", help="default full")
    p.add_argument("--wait", action="store_true", help="wait until the backup succeeded or failed")
    p.add_argument("--timeout", type=float, default=1800, help="seconds --wait waits (default 1800)")

    p = sub.add_parser("restore", help="restore a backup (an OmenDBRestore); see `restore --help`",
                       description=RESTORE_HELP)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--backup-id", default="latest", help="the backup to restore (default `latest`)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--to-lsn", type=int, help="restore the state right after this LSN")
    target.add_argument("--to-time", help="restore the state as of this time (RFC 3339, e.g. "
                                          "2026-11-27T08:00:00Z)")
    p.add_argument("--wait", action="store_true", help="wait until the restore succeeded or failed")
    p.add_argument("--timeout", type=float, default=1800, help="seconds --wait waits (default 1800)")

    p = sub.add_parser("logs", help="the logs of NAME's pods (every pod, or --pod)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--pod", help="only this pod (e.g. NAME-0)")
    p.add_argument("--tail", type=int, default=100, help="lines per pod (default 100; -1 for all)")

    p = sub.add_parser("switchover", help="move the primary to another pod without losing a write (annotation "
                                          "omendb.io/switchover-to, carried out by the operator)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--to", metavar="POD", help="the pod to promote (default: the most advanced ready replica)")

    p = sub.add_parser("get", help="read one key through the API (a port-forward to the NAME Service, or "
                                   "--url from inside the cluster)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("key", metavar="KEY", type=_key, help="an integer key")
    p.add_argument("--url", help="the OmenDB's URL when reachable directly, e.g. https://NAME.NS.svc:3000 "
                                 "in a pod; default: port-forward to the primary Service with kubectl")
    # kubectl users put -n anywhere (`kubectl omendb status NAME -n NS`, as the chart's NOTES.txt says): every
    # command accepts it after its name too; SUPPRESS keeps a -n given before the command when none follows.
    for command in sub.choices.values():
        command.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return ap


def _key(raw: str) -> int:
    try:
        return int(raw, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"KEY must be an integer (e.g. 42 or 0x2a), got {raw!r}") from None


# ---- the shell around the API


def _kube(args: argparse.Namespace) -> tuple[Any, str]:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    from omendb_operator.controller.kube import Kube

    # Explicit configurations, never the kubernetes package's global default (callers may hold their own).
    namespace = args.namespace
    try:
        cfg = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=cfg)
        api = k8s.ApiClient(cfg)
        if namespace is None:
            ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            namespace = ns_file.read_text().strip() if ns_file.exists() else None
    except k8s_config.ConfigException:
        try:
            api = k8s_config.new_client_from_config(config_file=args.kubeconfig)
        except (k8s_config.ConfigException, OSError) as exc:
            raise PluginError(f"cannot load a kubeconfig ({exc}); set KUBECONFIG or pass --kubeconfig") from None
        if namespace is None:
            _, context = k8s_config.list_kube_config_contexts(config_file=args.kubeconfig)
            namespace = (context or {}).get("context", {}).get("namespace")
    return Kube(api), namespace or "default"


def _omendb(kube: Any, name: str, namespace: str) -> dict[str, Any]:
    obj = kube.get(L.API_VERSION, L.KIND, name, namespace)
    if obj is None:
        raise PluginError(f"OmenDB {name!r} not found in namespace {namespace!r} (list them with "
                          "`kubectl get omendb -A`, choose the namespace with -n)")
    return dict(obj)


def _events(kube: Any, name: str, namespace: str) -> list[dict[str, Any]]:
    """Events about the OmenDB and its children (all named NAME or NAME-...)."""
    events = kube.list("v1", "Event", namespace=namespace)
    pattern = re.compile(rf"^{re.escape(name)}(-.*)?$")
    return [e for e in events if pattern.match((e.get("involvedObject") or {}).get("name", ""))]


def _operations(kube: Any, name: str, namespace: str) -> list[dict[str, Any]]:
    """The OmenDBBackups and OmenDBRestores naming OmenDB ``name``."""
    out = []
    for kind in (builders.BACKUP_KIND, builders.RESTORE_KIND):
        for item in kube.list(L.API_VERSION, kind, namespace=namespace):
            if ((item.get("spec") or {}).get("cluster") or {}).get("name") == name:
                item.setdefault("kind", kind)
                out.append(item)
    return out


def cmd_status(kube: Any, args: argparse.Namespace, namespace: str) -> str:
    omendb = _omendb(kube, args.name, namespace)
    pods = kube.list("v1", "Pod", namespace=namespace, label_selector=L.selector_string(args.name))
    return render.status_text(omendb, pods, _events(kube, args.name, namespace), dt.datetime.now(dt.UTC),
                              _operations(kube, args.name, namespace))


def _follow(kube: Any, kind: str, name: str, namespace: str, timeout: float) -> tuple[str, dict[str, Any]]:
    """Poll an OmenDBBackup/OmenDBRestore until it succeeded or failed; (lines seen, last status)."""
    import time

    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        obj = kube.get(L.API_VERSION, kind, name, namespace) or {}
        status = obj.get("status") or {}
        line = render.operation_line(kind, status)
        if not seen or seen[-1] != line:
            seen.append(line)
            sys.stdout.write(f"  {line}\n")
            sys.stdout.flush()
        if status.get("phase") in ("Succeeded", "Failed"):
            return "", status
        if time.monotonic() > deadline:
            raise PluginError(f"{kind} {name} did not finish within {timeout:.0f}s (still {line}); follow it "
                              f"with `kubectl -n {namespace} get {kind.lower()} {name} -w`")
        time.sleep(POLL_SECONDS)


def _created(kube: Any, args: argparse.Namespace, namespace: str, obj: dict[str, Any], what: str) -> str:
    kind, name = obj["kind"], obj["metadata"]["name"]
    kube.resource(L.API_VERSION, kind).create(body=obj, namespace=namespace)
    head = f"{kind.lower()}.omendb.io/{name} created ({what})\n"
    if not args.wait:
        return head + f"  follow it: kubectl -n {namespace} get {kind.lower()} {name} -w\n"
    sys.stdout.write(head)
    _, status = _follow(kube, kind, name, namespace, args.timeout)
    if status.get("phase") == "Failed":
        raise PluginError(f"{kind} {name} failed: {status.get('error')}")
    return f"{kind} {name} succeeded\n"


def cmd_backup(kube: Any, args: argparse.Namespace, namespace: str) -> str:
    _omendb(kube, args.name, namespace)
    backup = builders.backup_resource(args.name, namespace, args.type, dt.datetime.now(dt.UTC))
    return _created(kube, args, namespace, backup, f"a {args.type} backup of {args.name}")


def cmd_restore(kube: Any, args: argparse.Namespace, namespace: str) -> str:
    _omendb(kube, args.name, namespace)
    try:
        restore = builders.restore_resource(args.name, namespace, args.backup_id, dt.datetime.now(dt.UTC),
                                            args.to_lsn, args.to_time)
    except ValueError as exc:
        raise PluginError(str(exc)) from None
    target = f" to LSN {args.to_lsn}" if args.to_lsn is not None else (f" to {args.to_time}" if args.to_time else "")
    return _created(kube, args, namespace, restore, f"restore {args.name} from {args.backup_id}{target}")


def cmd_logs(kube: Any, args: argparse.Namespace, namespace: str) -> str:
    from kubernetes import client as k8s

    _omendb(kube, args.name, namespace)
    pods = [p["metadata"]["name"] for p in
            kube.list("v1", "Pod", namespace=namespace, label_selector=L.selector_string(args.name))]
    if args.pod:
        if args.pod not in pods:
            raise PluginError(f"pod {args.pod} is not one of {args.name}'s pods: {sorted(pods) or 'none'}")
        pods = [args.pod]
    if not pods:
        raise PluginError(f"OmenDB {args.name} has no pods yet (see `kubectl omendb status {args.name}`)")
    core = k8s.CoreV1Api(kube.api_client)
    out = []
    for pod in sorted(pods):
        kwargs = {} if args.tail < 0 else {"tail_lines": args.tail}
        text = core.read_namespaced_pod_log(pod, namespace, **kwargs)
        out += [f"[{pod}] {line}" for line in text.splitlines()]
    return "\n".join(out) + "\n"


def _secret_value(kube: Any, name: str, namespace: str, key: str) -> str:
    import base64

    secret = kube.get("v1", "Secret", name, namespace)
    if secret is None or key not in (secret.get("data") or {}):
        raise PluginError(f"Secret {namespace}/{name} (key {key}) not found; has the operator made it? "
                          "(`kubectl omendb status`)")
    return base64.b64decode(secret["data"][key]).decode()


@contextmanager
def _port_forward(service: str, namespace: str, port: int, kubeconfig: str | None) -> Iterator[int]:
    """``kubectl port-forward svc/SERVICE :PORT`` on 127.0.0.1; yields the local port."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise PluginError("kubectl not on PATH: it is needed for the port-forward (or pass --url)")
    argv = [kubectl, "port-forward", "--address=127.0.0.1", "-n", namespace, f"svc/{service}", f":{port}"]
    if kubeconfig:
        argv.insert(1, f"--kubeconfig={kubeconfig}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not match:
            err = proc.stderr.read() if proc.stderr else ""
            raise PluginError(f"kubectl port-forward to svc/{service} failed: {line}{err}".strip())
        yield int(match.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def client_options(omendb: dict[str, Any], kube: Any, namespace: str, tmp: Path) -> dict[str, Any]:
    """omendb.client options for this OmenDB: the admin credentials (NAME-users) and, with TLS, the CA
    (ca.crt of NAME-ca, or of the served Secret when the operator does not generate TLS) written to ``tmp``."""
    name = omendb["metadata"]["name"]
    names = L.Names(name)
    status = omendb.get("status") or {}
    users = status.get("credentialsSecret") or names.users
    options: dict[str, Any] = {"username": _secret_value(kube, users, namespace, "username"),
                               "password": _secret_value(kube, users, namespace, "password")}
    primary = (status.get("endpoints") or {}).get("primary", "")
    if primary.startswith("https://"):
        # NAME-ca when the operator generates TLS; else the Secret served (the user's, or cert-manager's
        # NAME-tls with spec.tls.issuerRef), whose ca.crt is the issuer's CA.
        tls = status.get("tls") or {}
        ca_secret = tls.get("caSecretName") or tls.get("secretName") or names.ca
        ca = tmp / "ca.crt"
        ca.write_text(_secret_value(kube, ca_secret, namespace, "ca.crt"))
        options["ca_file"] = str(ca)
    return options


def cmd_get(kube: Any, args: argparse.Namespace, namespace: str) -> str:
    from omendb.client import Client

    omendb = _omendb(kube, args.name, namespace)
    with tempfile.TemporaryDirectory(prefix="kubectl-omendb-") as tmp:
        options = client_options(omendb, kube, namespace, Path(tmp))
        scheme = "https" if "ca_file" in options else "http"
        if args.url:
            with Client(args.url, **options) as db:
                value = db.get(args.key)
        else:
            with _port_forward(L.Names(args.name).primary_service, namespace, L.API_PORT,
                               args.kubeconfig) as port:
                if "ca_file" in options:
                    # Through the tunnel the server's name is not 127.0.0.1: verify the chain against the
                    # database's own CA (only the operator holds its key) but not the host name.
                    ctx = ssl.create_default_context(cafile=options.pop("ca_file"))
                    ctx.check_hostname = False
                    options["verify"] = ctx
                with Client(f"{scheme}://127.0.0.1:{port}", **options) as db:
                    value = db.get(args.key)
    return ("(not found)" if value is None else repr(value)) + "\n"


def cmd_switchover(kube: Any, args: argparse.Namespace, namespace: str) -> str:
    from omendb_operator.plans.failover import SWITCHOVER_ANNOTATION

    omendb = _omendb(kube, args.name, namespace)
    primary = (omendb.get("status") or {}).get("primaryPod")
    if args.to and args.to == primary:
        return f"{args.to} is already the primary of {args.name}; nothing to do\n"
    if args.to and not args.to.startswith(f"{args.name}-"):
        raise PluginError(f"--to {args.to}: not a pod of {args.name} (they are named {args.name}-0, "
                          f"{args.name}-1, ...)")
    kube.patch(L.API_VERSION, L.KIND, args.name, namespace,
               {"metadata": {"annotations": {SWITCHOVER_ANNOTATION: args.to or ""}}})
    return (f"switchover of {args.name} requested (from {primary or '?'} to {args.to or 'the most advanced replica'})"
            f"\n  follow it: kubectl -n {namespace} get omendb {args.name} -w   (column PRIMARY), or "
            f"kubectl omendb -n {namespace} status {args.name}\n")


COMMANDS = {"status": cmd_status, "backup": cmd_backup, "restore": cmd_restore, "logs": cmd_logs,
            "switchover": cmd_switchover, "get": cmd_get}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        kube, namespace = _kube(args)
        sys.stdout.write(COMMANDS[args.command](kube, args, namespace))
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

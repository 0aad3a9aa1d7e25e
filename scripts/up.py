"""`make up` / `make down`: the first run, from a fresh clone to a Ready OmenDB and a working curl.

up:   start the local cluster (`python -m e2e.cluster up`: builds the pinned Kubernetes binaries and this
      project's images when missing, imports the images), install the operator with the Helm chart using
      those images, create the development sample OmenDB, wait until it is Ready, then port-forward its
      Service and print the exports and a one-line curl with the generated credentials (checked first).
down: stop the port-forward and the cluster.

Progress is printed at every step; each step says what failed and where to look. Needs root (the
cluster uses network and mount namespaces, cgroups and containerd).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".omendb-up"  # the port-forward's pid and the CA certificate curl needs
NAMESPACE_OPERATOR = "omendb-system"
NAMESPACE_DB = "omendb-dev"
SAMPLE = ROOT / "manifests" / "samples" / "omendb-development.yaml"
LOCAL_PORT = 3000
READY_TIMEOUT = "600s"

sys.path.insert(0, str(ROOT))


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def run(argv: list[str], env: dict[str, str], check: bool = True, capture: bool = False,
        what: str = "") -> subprocess.CompletedProcess[str]:
    print("    $ " + shlex.join(argv), flush=True)
    out = subprocess.run(argv, env=env, text=True, capture_output=capture)
    if check and out.returncode != 0:
        detail = (out.stderr or "") if capture else ""
        raise SystemExit(f"make up: {what or argv[0]} failed (exit {out.returncode}). {detail}\n"
                         "Cluster logs: python -m e2e.cluster logs; stop everything: make down")
    return out


def cluster_env() -> dict[str, str]:
    from e2e import cluster

    lay = cluster.Layout(cluster.L.default_state_dir().resolve())
    env = dict(os.environ)
    env["KUBECONFIG"] = str(lay.admin_kubeconfig)
    env["PATH"] = f"{cluster.bin_dir_of(lay)}:{env['PATH']}"
    return env


def stop_port_forward() -> None:
    pid_file = STATE / "port-forward.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            print(f"    stopped the port-forward (pid {pid})")
        except ProcessLookupError:
            pass
        pid_file.unlink()


def secret_value(env: dict[str, str], name: str, key: str) -> str:
    out = run(["kubectl", "-n", NAMESPACE_DB, "get", "secret", name, "-o", "json"], env, capture=True,
              what=f"reading Secret {name}")
    return base64.b64decode(json.loads(out.stdout)["data"][key]).decode()


def up() -> int:
    if os.geteuid() != 0:
        raise SystemExit("make up needs root: the local cluster uses network and mount namespaces, cgroups "
                         "and containerd. Run `sudo make up`.")
    step("starting the local Kubernetes cluster (first run builds the binaries and images: minutes)")
    run([sys.executable, "-m", "e2e.cluster", "up"], dict(os.environ), what="python -m e2e.cluster up")
    env = cluster_env()
    name = "dev"

    step("installing the operator with the Helm chart (charts/omendb-operator, local images)")
    run(["helm", "upgrade", "--install", "omendb-operator", str(ROOT / "charts" / "omendb-operator"),
         "--namespace", NAMESPACE_OPERATOR, "--create-namespace", "--set", "image.pullPolicy=Never",
         "--wait", "--timeout", "5m"], env, what="helm install of the operator")

    step(f"creating the development OmenDB {NAMESPACE_DB}/{name} (manifests/samples/omendb-development.yaml)")
    namespaces = run(["kubectl", "get", "namespace", "-o", "name"], env, capture=True).stdout.split()
    if f"namespace/{NAMESPACE_DB}" not in namespaces:
        run(["kubectl", "create", "namespace", NAMESPACE_DB], env)
    run(["kubectl", "-n", NAMESPACE_DB, "apply", "-f", str(SAMPLE)], env)

    step(f"waiting until omendb/{name} is Ready (up to {READY_TIMEOUT})")
    waited = run(["kubectl", "-n", NAMESPACE_DB, "wait", f"omendb/{name}", "--for=condition=Ready",
                  f"--timeout={READY_TIMEOUT}"], env, check=False)
    if waited.returncode != 0:
        run(["kubectl", "-n", NAMESPACE_DB, "get", "omendb,pods", "-o", "wide"], env, check=False)
        run([sys.executable, "-m", "omendb_operator.plugin.cli", "-n", NAMESPACE_DB, "status", name], env,
            check=False)
        raise SystemExit(f"make up: omendb/{name} did not become Ready. See above, and the operator's log: "
                         f"kubectl -n {NAMESPACE_OPERATOR} logs deploy/omendb-operator")

    step(f"port-forwarding svc/{name} to 127.0.0.1:{LOCAL_PORT}")
    STATE.mkdir(exist_ok=True)
    stop_port_forward()
    ca = STATE / "ca.crt"
    ca.write_text(secret_value(env, f"{name}-ca", "ca.crt"))
    user = secret_value(env, f"{name}-users", "username")
    log = open(STATE / "port-forward.log", "w")  # noqa: SIM115 - the child keeps it
    forward = subprocess.Popen(["kubectl", "-n", NAMESPACE_DB, "port-forward", "--address=127.0.0.1",
                                f"svc/{name}", f"{LOCAL_PORT}:3000"], env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    (STATE / "port-forward.pid").write_text(str(forward.pid))
    host = f"{name}.{NAMESPACE_DB}.svc"  # a name in the certificate; --resolve sends it to the tunnel
    password_cmd = (f"kubectl -n {NAMESPACE_DB} get secret {name}-users "
                    "-o jsonpath='{.data.password}' | base64 -d")
    curl = (f"curl -sS --fail-with-body --cacert {ca} --resolve {host}:{LOCAL_PORT}:127.0.0.1 "
            f'-u "{user}:$({password_cmd})" https://{host}:{LOCAL_PORT}/v1/stats')
    for _ in range(30):
        check = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, text=True)
        if check.returncode == 0 and check.stdout.startswith("{"):
            break
        time.sleep(1)
    else:
        raise SystemExit(f"make up: the curl through the port-forward failed: {check.stdout}{check.stderr} "
                         f"(port-forward log: {STATE / 'port-forward.log'})")
    print(f"    {check.stdout.strip()[:300]}")

    step(f"the same database through the kubectl plugin (kubectl-omendb status/get {name})")
    plugin = [str(Path(sys.executable).parent / "kubectl-omendb"), "-n", NAMESPACE_DB]
    run([*plugin, "status", name], env, what="kubectl-omendb status")
    run([*plugin, "get", name, "1"], env, what="kubectl-omendb get (through a port-forward)")
    print(f"""
OmenDB {NAMESPACE_DB}/{name} is Ready.

  export KUBECONFIG={env['KUBECONFIG']}
  export PATH={env['PATH'].split(':', 1)[0]}:$PATH
  kubectl get omendb -A

  {curl}

  kubectl-omendb -n {NAMESPACE_DB} status {name}     # (.venv/bin/kubectl-omendb)
  make down                                           # stops the port-forward and the cluster
""")
    return 0


def down() -> int:
    step("stopping the port-forward")
    stop_port_forward()
    step("stopping the local cluster")
    return subprocess.run([sys.executable, "-m", "e2e.cluster", "down"]).returncode


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in ("up", "down"):
        raise SystemExit("usage: python scripts/up.py up|down")
    sys.exit(up() if command == "up" else down())

"""Smoke tests of the local cluster: what the operator's e2e journeys rely on, checked directly.

Pods run the project's engine image: the real server (`omendb serve`, the image's default command)
where the engine is what is being reached, and `python3 -m http.server` from the same image where
a plain web server with a known log format is all a test needs.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from e2e.kube import Kube

WEB_PORT = 3000


def _container(name: str, image: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, "imagePullPolicy": "Never", "command": command, **extra}


def _web_deployment(name: str, image: str) -> list[dict[str, Any]]:
    labels = {"app": name}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [_container(
                      "web", image, ["python3", "-m", "http.server", str(WEB_PORT), "--directory", "/etc"],
                      ports=[{"containerPort": WEB_PORT}],
                      readinessProbe={"httpGet": {"path": "/hostname", "port": WEB_PORT}, "periodSeconds": 1},
                  )]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
         "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": WEB_PORT}]}},
    ]


def _job(name: str, image: str, command: list[str], **pod_extra: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "containers": [_container("main", image, command)], **pod_extra}}}}


def test_engine_deployment_ready_and_reachable_by_service_dns(kube: Kube, namespace: str,
                                                               engine_image: str) -> None:
    labels = {"app": "engine"}
    kube.apply(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "engine"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{
                # The image's own entry point and command: omendb serve --config /etc/omendb/omendb.toml.
                "name": "omendb", "image": engine_image, "imagePullPolicy": "Never",
                "env": [{"name": "OMENDB_AUTH_DISABLED", "value": "true"}],
                "ports": [{"containerPort": 3000, "name": "http"}, {"containerPort": 9090, "name": "metrics"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 3000}, "periodSeconds": 1},
            }]}}}}, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "engine"},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 3000, "targetPort": 3000}]},
    })
    kube.wait_condition(namespace, "deployment", "engine", "Available")
    url = f"http://engine.{namespace}.svc.cluster.local:3000/health"
    kube.apply(namespace, _job("client", engine_image, [
        "python3", "-c",
        f"import urllib.request; body = urllib.request.urlopen({url!r}, timeout=10).read(); "
        "print(body.decode().strip())",
    ]))
    assert kube.job_outcome(namespace, "client") == "Complete", kube.dump(namespace)
    health = json.loads(kube.kubectl("-n", namespace, "logs", "job/client").stdout)
    assert health["status"] == "ok", health


def test_job_completes_and_failing_job_fails(kube: Kube, namespace: str, engine_image: str) -> None:
    kube.apply(namespace, _job("ok", engine_image, ["python3", "-c", "print('done')"]),
               _job("bad", engine_image, ["python3", "-c", "raise SystemExit(3)"]))
    assert kube.job_outcome(namespace, "ok") == "Complete"
    assert kube.job_outcome(namespace, "bad") == "Failed"
    pods = json.loads(kube.kubectl("-n", namespace, "get", "pods", "-l", "job-name=bad", "-o", "json").stdout)
    terminated = pods["items"][0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3


def test_cronjob_triggered_by_hand_completes(kube: Kube, namespace: str, engine_image: str) -> None:
    kube.apply(namespace, {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 1 1 *", "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [_container("main", engine_image, ["python3", "-c", "print('cron ran')"])],
        }}}}},
    })
    kube.kubectl("-n", namespace, "create", "job", "--from=cronjob/nightly", "nightly-manual")
    assert kube.job_outcome(namespace, "nightly-manual") == "Complete"
    assert "cron ran" in kube.kubectl("-n", namespace, "logs", "job/nightly-manual").stdout


def test_pvc_data_survives_pod_deletion(kube: Kube, namespace: str, engine_image: str) -> None:
    kube.apply(namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
    })
    kube.wait_until("PVC bound", lambda: kube.get(namespace, "pvc", "data")["status"].get("phase") == "Bound")

    def pod(name: str, script: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 10001, "runAsGroup": 10001},
            "containers": [_container("main", engine_image, ["python3", "-c", script],
                                      volumeMounts=[{"name": "data", "mountPath": "/var/lib/omendb/data"}])],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        }}

    kube.apply(namespace, pod("writer", "open('/var/lib/omendb/data/marker', 'w').write('kept')"))
    kube.wait_until("writer done", lambda: _phase(kube, namespace, "writer") == "Succeeded")
    kube.kubectl("-n", namespace, "delete", "pod", "writer")
    kube.apply(namespace, pod("reader", "print(open('/var/lib/omendb/data/marker').read())"))
    kube.wait_until("reader done", lambda: _phase(kube, namespace, "reader") == "Succeeded")
    assert kube.kubectl("-n", namespace, "logs", "reader").stdout.strip() == "kept"


def _phase(kube: Kube, namespace: str, pod: str) -> str:
    phase: str = kube.get(namespace, "pod", pod)["status"].get("phase", "")
    if phase == "Failed":
        raise AssertionError(f"pod {pod} failed: {kube.kubectl('-n', namespace, 'logs', pod).stdout}")
    return phase


def test_service_account_without_permission_gets_403(kube: Kube, namespace: str, engine_image: str) -> None:
    kube.apply(namespace, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody"}})
    script = (
        "import ssl, urllib.request, urllib.error\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "token = open(sa + '/token').read()\n"
        "ns = open(sa + '/namespace').read()\n"
        "ctx = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
        "req = urllib.request.Request(f'https://kubernetes.default.svc/api/v1/namespaces/{ns}/secrets',\n"
        "                             headers={'Authorization': 'Bearer ' + token})\n"
        "try:\n"
        "    urllib.request.urlopen(req, context=ctx, timeout=10)\n"
        "    print('status 200')\n"
        "except urllib.error.HTTPError as e:\n"
        "    print('status', e.code)\n"
    )
    kube.apply(namespace, _job("probe", engine_image, ["python3", "-c", script], serviceAccountName="nobody"))
    assert kube.job_outcome(namespace, "probe") == "Complete"
    assert kube.kubectl("-n", namespace, "logs", "job/probe").stdout.strip() == "status 403"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_logs_exec_and_port_forward(kube: Kube, namespace: str, engine_image: str) -> None:
    kube.apply(namespace, *_web_deployment("web", engine_image))
    kube.wait_condition(namespace, "deployment", "web", "Available")
    pod = kube.kubectl("-n", namespace, "get", "pods", "-l", "app=web", "-o", "name").stdout.split()[0]

    out = kube.kubectl("-n", namespace, "exec", pod, "--", "python3", "-c", "import os; print(os.getuid())")
    assert out.stdout.strip() == "10001"  # the image's non-root user

    port = _free_port()
    pf = subprocess.Popen(
        [str(kube.bin_dir / "kubectl"), "-n", namespace, "port-forward", pod, f"{port}:{WEB_PORT}",
         "--address=127.0.0.1"], env=kube.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        body = kube.wait_until("port-forward", lambda: _get(f"http://127.0.0.1:{port}/hostname"), 30)
        assert body.strip() == pod.split("/", 1)[1]
    finally:
        pf.terminate()
        pf.wait(10)
    # http.server logs each request to stderr, which the kubelet serves as the container's log.
    logs = kube.wait_until("request in the logs", lambda: (
        out := kube.kubectl("-n", namespace, "logs", pod).stdout) and "GET /hostname" in out and out, 30)
    assert "GET /hostname" in logs


def _get(url: str) -> str | None:
    try:
        r = httpx.get(url, timeout=3)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None


def test_helm_install_of_a_trivial_chart(kube: Kube, namespace: str, tmp_path: Path) -> None:
    chart = tmp_path / "hello"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: hello\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hi\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    res = subprocess.run(
        [str(kube.bin_dir / "helm"), "install", "demo", str(chart), "-n", namespace,
         "--set", "greeting=hello", "--wait", "--timeout", "60s"],
        env=kube.env, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    cm = kube.get(namespace, "configmap", "demo-greeting")
    assert cm["data"]["greeting"] == "hello"
    listed = subprocess.run([str(kube.bin_dir / "helm"), "list", "-n", namespace, "-o", "json"],
                            env=kube.env, capture_output=True, text=True, check=True)
    assert [r["status"] for r in json.loads(listed.stdout)] == ["deployed"]


def test_prometheus_operator_crds_accept_objects(kube: Kube, namespace: str) -> None:
    kube.apply(namespace, {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "rules"},
        "spec": {"groups": [{"name": "g", "rules": [{"alert": "Down", "expr": "up == 0", "for": "1m"}]}]},
    }, {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "sm"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "endpoints": [{"port": "metrics"}]},
    }, {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "pm"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "podMetricsEndpoints": [{"port": "metrics"}]},
    })
    assert kube.get(namespace, "prometheusrule", "rules")["spec"]["groups"][0]["rules"][0]["alert"] == "Down"
    # A malformed object is refused by the CRD's schema, proving the real CRD is installed.
    res = kube.kubectl("-n", namespace, "apply", "-f", "-", check=False, stdin=json.dumps({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "bad"},
        "spec": {"endpoints": "not-a-list"}}))
    assert res.returncode != 0 and "endpoints" in res.stderr


def test_token_request_api_gives_a_bound_token(kube: Kube, namespace: str) -> None:
    kube.apply(namespace, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bound"}})
    token = kube.kubectl("-n", namespace, "create", "token", "bound", "--duration=10m").stdout.strip()
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["sub"] == f"system:serviceaccount:{namespace}:bound"
    assert payload["exp"] > time.time()


def test_cluster_networking_stays_inside_its_namespace(kube: Kube) -> None:
    """kube-proxy's rules and the pod bridge live in the cluster's network namespace, not the host's."""
    from e2e import layout as L

    host_rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert "KUBE-SERVICES" not in host_rules
    assert not Path(f"/sys/class/net/{L.POD_BRIDGE}").exists()
    inside = subprocess.run(["nsenter", f"--net=/run/netns/{L.NETNS}", "--", "iptables-save"],
                            capture_output=True, text=True, check=True).stdout
    assert "KUBE-SERVICES" in inside
    routes = subprocess.run(["ip", "-n", L.NETNS, "route", "show", "default"], capture_output=True,
                            text=True, check=True).stdout
    assert routes.strip() == ""  # no default route: nothing in the cluster reaches off the machine

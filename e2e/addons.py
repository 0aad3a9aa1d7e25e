"""The cluster's add-ons: CoreDNS, the default StorageClass and third-party CRDs.

Manifests are built here as Python data (pure) and applied with the cluster's own kubectl.
CoreDNS serves only the cluster domain: it has no `forward` plugin, so no query ever leaves the
machine. The StorageClass names the harness's local-directory provisioner (e2e.provisioner).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from e2e import images
from e2e import layout as L
from e2e.layout import Layout

COREFILE = f""".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {L.CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loop
    reload
    loadbalance
}}
"""

PROMETHEUS_OPERATOR_CRDS = ("prometheusrules", "servicemonitors", "podmonitors")


def coredns_manifests() -> list[dict[str, Any]]:
    labels = {"k8s-app": "kube-dns"}
    ns = "kube-system"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"},
         "rules": [
             {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": ns},
         "data": {"Corefile": COREFILE}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
         "spec": {
             "replicas": 1,
             "selector": {"matchLabels": labels},
             "template": {
                 "metadata": {"labels": labels},
                 "spec": {
                     "serviceAccountName": "coredns",
                     "priorityClassName": "system-cluster-critical",
                     "dnsPolicy": "Default",
                     "containers": [{
                         "name": "coredns",
                         "image": images.COREDNS_IMAGE,
                         "imagePullPolicy": "Never",
                         "args": ["-conf", "/etc/coredns/Corefile"],
                         "ports": [{"containerPort": 53, "name": "dns", "protocol": "UDP"},
                                   {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"}],
                         "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                         "livenessProbe": {"httpGet": {"path": "/health", "port": 8080},
                                           "periodSeconds": 10, "failureThreshold": 5},
                         "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                         "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                     }],
                     "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                 },
             },
         }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
         "spec": {"selector": labels, "clusterIP": L.DNS_SERVICE_IP,
                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
    ]


def storage_manifests() -> list[dict[str, Any]]:
    return [{
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": L.STORAGE_CLASS,
                     "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": L.PROVISIONER_NAME,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }]


def crd_files() -> list[Path]:
    """prometheus-operator's CRDs, read from its module in the Go module cache (pinned in e2e/go/crds)."""
    from e2e import binaries

    mod = binaries.GO_DIR / "crds" / "go.mod"
    version = next(line.split()[-1] for line in mod.read_text().splitlines()
                   if "prometheus-operator/prometheus-operator " in line)
    root = binaries.module_dir("github.com/prometheus-operator/prometheus-operator", version, mod.parent)
    return [root / "example/prometheus-operator-crd" / f"monitoring.coreos.com_{n}.yaml"
            for n in PROMETHEUS_OPERATOR_CRDS]


def kubectl(lay: Layout, bin_dir: Path, *args: str, stdin: str | None = None) -> str:
    res = subprocess.run(
        [str(bin_dir / "kubectl"), f"--kubeconfig={lay.admin_kubeconfig}", *args],
        input=stdin, capture_output=True, text=True,
    )
    if res.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout


def apply(lay: Layout, bin_dir: Path) -> None:
    docs = coredns_manifests() + storage_manifests()
    kubectl(lay, bin_dir, "apply", "--server-side", "--field-manager=omendb-e2e", "-f", "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    for f in crd_files():
        kubectl(lay, bin_dir, "apply", "--server-side", "--field-manager=omendb-e2e", "-f", str(f))


def wait_ready(lay: Layout, bin_dir: Path, timeout: float) -> None:
    kubectl(lay, bin_dir, "-n", "kube-system", "rollout", "status", "deployment/coredns",
            f"--timeout={int(timeout)}s")
    for name in PROMETHEUS_OPERATOR_CRDS:
        kubectl(lay, bin_dir, "wait", "--for=condition=Established", f"crd/{name}.monitoring.coreos.com",
                f"--timeout={int(timeout)}s")
    # The default service account of `default` appears shortly after the controller-manager starts;
    # tests create pods right away, so wait for it here.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kubectl(lay, bin_dir, "-n", "default", "get", "serviceaccount", "default")
            return
        except RuntimeError:
            time.sleep(0.5)
    raise RuntimeError("the default ServiceAccount never appeared (is the controller-manager running?)")

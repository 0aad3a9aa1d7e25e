"""The operator running IN the local cluster from its image, as the e2e journeys install it: crds/,
manifests/rbac.yaml, manifests/peering.yaml and e2e/manifests/operator.yaml (shared by every journey
through the ``operator`` fixture in e2e/tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

from e2e.kube import Kube

ROOT = Path(__file__).resolve().parents[1]
OPERATOR_NS = "omendb-system"
OPERATOR_LABEL = "app.kubernetes.io/name=omendb-operator"
CRDS = ("omendbs.omendb.io", "omendbbackups.omendb.io", "omendbrestores.omendb.io", "clusterkopfpeerings.kopf.dev")


def operator_pods(kube: Kube) -> list[str]:
    pods = json.loads(kube.kubectl("-n", OPERATOR_NS, "get", "pods", "-l", OPERATOR_LABEL,
                                   "--field-selector=status.phase=Running", "-o", "json").stdout)["items"]
    return [str(p["metadata"]["name"]) for p in pods if not p["metadata"].get("deletionTimestamp")]


def operator_pod(kube: Kube) -> str:
    pods = operator_pods(kube)
    assert len(pods) == 1, f"expected one running operator pod, found {pods}"
    return pods[0]


def established(kube: Kube, crd: str) -> bool:
    obj = json.loads(kube.kubectl("get", "crd", crd, "-o", "json").stdout)
    return any(c["type"] == "Established" and c["status"] == "True"
               for c in obj.get("status", {}).get("conditions") or [])


def install(kube: Kube) -> None:
    """Install the CRDs, RBAC and peering, and run the operator's image as a Deployment."""
    # Server-side: the OmenDB CRD is too large for client-side apply's last-applied annotation.
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for crd in CRDS:
        # Not `kubectl wait`: it errors on a CRD created a moment ago, whose status has no conditions yet.
        kube.wait_until(f"CRD {crd} established", lambda crd=crd: established(kube, crd), 60)  # type: ignore[misc]
    kube.kubectl("create", "namespace", OPERATOR_NS, check=False)
    existed = kube.get_or_none(OPERATOR_NS, "deployment", "omendb-operator") is not None
    for manifest in ("manifests/rbac.yaml", "manifests/peering.yaml", "e2e/manifests/operator.yaml"):
        kube.kubectl("apply", "-f", str(ROOT / manifest))
    if existed:  # a reused cluster runs an operator from older images: restart it on the ones just loaded
        kube.kubectl("-n", OPERATOR_NS, "rollout", "restart", "deployment/omendb-operator")
    kube.kubectl("-n", OPERATOR_NS, "rollout", "status", "deployment/omendb-operator", "--timeout=180s",
                 timeout=200)
    kube.wait_until("one running operator pod", lambda: len(operator_pods(kube)) == 1, 90)


def logs(kube: Kube) -> str:
    out = kube.kubectl("-n", OPERATOR_NS, "logs", "-l", OPERATOR_LABEL, "--tail=300", check=False)
    return out.stdout + out.stderr


def uninstall(kube: Kube) -> None:
    kube.kubectl("-n", OPERATOR_NS, "delete", "deployment", "omendb-operator", "--wait=true", check=False)

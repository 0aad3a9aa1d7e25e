"""The chart's aggregated ClusterRoles in a real cluster: the controller-manager's clusterrole-aggregation
controller folds omendb-view into view/edit/admin and omendb-edit into edit/admin (a bare API server, as in
tests/packaging, has no controller to do it)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from e2e.kube import Kube

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "omendb-operator"


def _can(kube: Kube, namespace: str, user: str, verb: str, resource: str) -> bool:
    res = kube.kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={user}", check=False)
    return res.stdout.strip() == "yes"


def test_builtin_roles_cover_omendb_resources(kube: Kube, namespace: str) -> None:
    # `kubectl auth can-i` answers "no" for a resource the server does not serve: the CRDs first (as the
    # operator journeys install them).
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    rendered = subprocess.run(
        [str(kube.bin_dir / "helm"), "template", "omendb-operator", str(CHART), "--kube-version", "1.33.0",
         "--show-only", "templates/aggregate-roles.yaml"],
        env=kube.env, capture_output=True, text=True, timeout=120, check=True).stdout
    kube.kubectl("apply", "-f", "-", stdin=rendered)
    try:
        for user, role in (("alice", "view"), ("bob", "edit"), ("carol", "admin")):
            kube.kubectl("-n", namespace, "create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}",
                         f"--user={user}")
        deadline = time.monotonic() + 60
        # Aggregation is asynchronous: wait until the built-in roles carry the new rules.
        while not (_can(kube, namespace, "alice", "list", "omendbs.omendb.io")
                   and _can(kube, namespace, "carol", "delete", "omendbrestores.omendb.io")):
            assert time.monotonic() < deadline, "view/admin never aggregated the omendb roles"
            time.sleep(1)
        assert _can(kube, namespace, "alice", "watch", "omendbbackups.omendb.io")
        assert not _can(kube, namespace, "alice", "create", "omendbs.omendb.io")
        assert not _can(kube, namespace, "alice", "patch", "omendbs.omendb.io")
        assert _can(kube, namespace, "bob", "create", "omendbs.omendb.io")
        assert _can(kube, namespace, "bob", "delete", "omendbbackups.omendb.io")
        assert _can(kube, namespace, "bob", "patch", "omendbs.omendb.io/scale")
        assert not _can(kube, "default", "bob", "create", "omendbs.omendb.io")  # bound in one namespace only
    finally:
        kube.kubectl("delete", "clusterrole", "omendb-view", "omendb-edit", "--ignore-not-found")

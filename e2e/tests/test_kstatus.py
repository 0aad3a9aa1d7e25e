"""kstatus (issue 18, item 1) on live objects: the real sigs.k8s.io/cli-utils kstatus library (the
e2e/go/kstatus checker, built by `python -m e2e.binaries build`; e2e/kstatus.py runs it) on what
`kubectl get -o json` returns, as Flux, Helm 4 --wait and kpt would read it. An OmenDB is InProgress while
it is created and Current once Ready; one whose image does not exist is Failed, naming the pod and the
reason, within 5 minutes; a succeeded backup is Current and a backup of a missing OmenDB Failed.
tests/operator/test_kstatus.py covers each status the builders make."""

from __future__ import annotations

import time
from typing import Any

from e2e import kstatus
from e2e.kube import Kube
from e2e.tests.test_backup_restore import _omendb, _wait_phase, _wait_ready

NAME = "ks"
BAD = "ks-bad"
STUCK_WITHIN = 300  # seconds: the "within minutes" bound, measured from the OmenDB's creation


def _kstatus(kube: Kube, ns: str, kind: str, name: str) -> tuple[str, str, dict[str, Any]]:
    obj = kube.get(ns, kind, name)
    status, message = kstatus.status_of(obj)
    return status, message, obj


def test_an_omendb_is_in_progress_while_created_and_current_once_ready(kube: Kube, operator: str,
                                                                       journey_namespace: str) -> None:
    kstatus.checker()  # fails at once, naming the build command, when the checker is missing
    ns = journey_namespace
    kube.apply(ns, _omendb(NAME))
    seen: list[str] = []

    def current() -> bool:
        status, _, obj = _kstatus(kube, ns, "omendb", NAME)
        if (obj.get("status") or {}).get("observedGeneration"):  # before its first status kstatus can't tell
            seen.append(status)
        return status == "Current" and bool(seen)
    kube.wait_until("kstatus Current", current, 300, interval=1)
    assert seen[0] == "InProgress" and "Failed" not in seen, seen
    _wait_ready(kube, ns, NAME)
    status, message, _ = _kstatus(kube, ns, "omendb", NAME)
    assert (status, message) == ("Current", "Resource is Ready")

    kube.apply(ns, {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDBBackup", "metadata": {"name": "ks-full"},
                    "spec": {"cluster": {"name": NAME}, "type": "full"}})
    backup = _wait_phase(kube, ns, "omendbbackup", "ks-full", ("Succeeded", "Failed"))
    assert backup["status"]["phase"] == "Succeeded", backup["status"]
    assert _kstatus(kube, ns, "omendbbackup", "ks-full")[0] == "Current"


def test_an_image_that_does_not_exist_is_failed_with_the_pod_and_reason(kube: Kube, operator: str,
                                                                         journey_namespace: str) -> None:
    ns = journey_namespace
    start = time.monotonic()
    kube.apply(ns, _omendb(BAD, image="omendb/omendb:does-not-exist"))

    def failed() -> tuple[str, str] | None:
        status, message, _ = _kstatus(kube, ns, "omendb", BAD)
        return (status, message) if status == "Failed" else None
    status, message = kube.wait_until("kstatus Failed", failed, STUCK_WITHIN, interval=3)
    assert f"pod {BAD}-0" in message and ("ImagePullBackOff" in message or "ErrImagePull" in message), message
    conditions = {c["type"]: c for c in kube.get(ns, "omendb", BAD)["status"]["conditions"]}
    assert conditions["Degraded"]["status"] == "True" and f"pod {BAD}-0" in conditions["Degraded"]["message"]
    print(f"kstatus Failed {time.monotonic() - start:.0f}s after the OmenDB was created: {message}")


def test_a_backup_of_a_missing_omendb_is_failed(kube: Kube, operator: str, journey_namespace: str) -> None:
    ns = journey_namespace
    kube.apply(ns, {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDBBackup", "metadata": {"name": "ks-orphan"},
                    "spec": {"cluster": {"name": "nowhere"}, "type": "full"}})
    _wait_phase(kube, ns, "omendbbackup", "ks-orphan", ("Failed",), timeout=120)
    status, message, _ = _kstatus(kube, ns, "omendbbackup", "ks-orphan")
    assert status == "Failed" and "does not exist" in message, (status, message)


def test_a_version_typo_is_reported_and_setting_it_back_cancels_the_upgrade(kube: Kube, operator: str,
                                                                            journey_namespace: str) -> None:
    """The guide's upgrade with a typo in spec.version: the pre-upgrade backup runs the version that runs
    (so it succeeds), the replaced pod cannot pull the typo's image, which is reported (kstatus Failed,
    Degraded naming the pod) within minutes; setting spec.version back aborts the upgrade and brings the
    pod back on the version it ran."""
    ns, name = journey_namespace, "ks-typo"
    kube.apply(ns, _omendb(name))
    _wait_ready(kube, ns, name)
    start = time.monotonic()
    kube.apply(ns, _omendb(name, version="0.1.9"))  # no such image anywhere

    def failed() -> tuple[str, str] | None:
        status, message, _ = _kstatus(kube, ns, "omendb", name)
        return (status, message) if status == "Failed" else None
    status, message = kube.wait_until("kstatus Failed on the typo", failed, STUCK_WITHIN, interval=3)
    assert f"pod {name}-0" in message and ("ImagePullBackOff" in message or "ErrImagePull" in message), message
    obj = kube.get(ns, "omendb", name)
    backup = kube.get(ns, "omendbbackup", obj["status"]["upgrade"]["backupName"])
    assert backup["status"]["phase"] == "Succeeded", backup["status"]  # it ran 0.1.0, the version running
    print(f"typo reported {time.monotonic() - start:.0f}s after spec.version changed: {message}")

    kube.apply(ns, _omendb(name))  # spec.version back to 0.1.0

    def aborted() -> dict[str, Any] | None:
        st = kube.get(ns, "omendb", name).get("status") or {}
        return st if (st.get("upgrade") or {}).get("phase") == "Aborted" else None
    st = kube.wait_until("upgrade aborted", aborted, 300, interval=3)
    _wait_ready(kube, ns, name)
    pod = kube.get(ns, "pod", f"{name}-0")
    assert [c["image"] for c in pod["spec"]["containers"]] == ["omendb/omendb:0.1.0"]
    assert st["currentVersion"] == "0.1.0", st
    assert _kstatus(kube, ns, "omendb", name)[0] == "Current"

"""checkov and kube-score, the real pinned binaries (`make scanners`), over what OmenDB ships: install.yaml,
the chart in its other RBAC modes and the children the operator makes for the three samples, backup, restore
and cleanup Jobs and CronJobs included. Every failed check is in scanners/exceptions.yaml with its reason; no
exception is stale. Missing scanners fail the test (never a skip): run `make scanners`."""

from __future__ import annotations

from pathlib import Path

import pytest
import scan_tools as sc  # scripts/scan_tools.py (conftest puts scripts/ on sys.path)
import yaml


@pytest.fixture(scope="module")
def installed() -> None:
    if problems := sc.missing():
        pytest.fail(f"the scanners are not installed ({', '.join(problems)}): run `make scanners`")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("scanned")
    return out, sc.render(out)


@pytest.fixture(scope="module")
def findings(installed: None, rendered: tuple[Path, list[Path]]) -> list[sc.Finding]:
    directory, files = rendered
    return sc.run_checkov(directory) + sc.run_kube_score(files)


def test_what_is_scanned_covers_the_chart_modes_and_every_job_the_operator_makes(rendered):
    directory, files = rendered
    assert {f.stem for f in files} == {"install", "chart-no-rbac", "chart-namespaced", "children-dev",
                                       "children-staging", "children-prod-omendb"}
    objects = [(f.stem, d["kind"], d["metadata"]["name"]) for f in files for d in yaml.safe_load_all(f.read_text())
               if d]
    for sample in ("dev", "staging", "prod-omendb"):
        names = {name for stem, kind, name in objects if stem == f"children-{sample}" and kind in ("Job", "CronJob")}
        assert names == {f"{sample}-backup-full", f"{sample}-backup-incremental", f"{sample}-backup-cleanup",
                         f"{sample}-manual-backup", *(f"{sample}-restore-{a}-0"
                                                      for a in ("restore", "set-aside", "put-back", "discard"))}
        assert (f"children-{sample}", "StatefulSet", sample) in objects
    kinds = {(stem, kind) for stem, kind, _ in objects}
    assert ("install", "ClusterRole") in kinds and ("chart-namespaced", "Role") in kinds
    assert not {kind for stem, kind in kinds if stem == "chart-no-rbac"} & {"Role", "ClusterRole", "RoleBinding",
                                                                             "ClusterRoleBinding"}


def test_every_failed_check_is_an_exception_with_a_reason_and_none_is_stale(findings):
    unexpected, stale = sc.compare(findings, sc.load_exceptions())
    assert not unexpected and not stale, sc.report(unexpected, stale)
    # Both scanners ran and found what the exceptions describe (a scanner that checked nothing would
    # make every exception stale, which the line above reports).
    assert {f.tool for f in findings} == {"checkov", "kube-score"}


def test_a_new_failure_and_a_stale_exception_are_reported(installed, rendered, tmp_path):
    """The comparison bites: a Job without resources and its credentials in an environment variable (what
    the operator made before issue 18) fails; an exception for a check that passes is stale."""
    directory, _ = rendered
    source = directory / "children-dev.yaml"
    docs = [d for d in yaml.safe_load_all(source.read_text()) if d]
    job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "dev-manual-backup")
    container = job["spec"]["template"]["spec"]["containers"][0]
    del container["resources"]
    container["env"].append({"name": "OMENDB_PASSWORD",
                             "valueFrom": {"secretKeyRef": {"name": "dev-users", "key": "password"}}})
    bad = tmp_path / "children-dev.yaml"
    bad.write_text(yaml.safe_dump_all(docs))
    found = sc.run_checkov(tmp_path) + sc.run_kube_score([bad])
    extra = sc.Exception_("checkov", "CKV_K8S_20", ("children-dev:Job/dev-manual-backup",),
                          "privilege escalation is allowed (it is not: this entry must be stale)")
    unexpected, stale = sc.compare(found, [*sc.load_exceptions(), extra])
    got = {(f.tool, f.check, f.obj) for f in unexpected}
    job_id = "children-dev:Job/dev-manual-backup"
    for check in ("CKV_K8S_10", "CKV_K8S_12", "CKV_K8S_13", "CKV_K8S_35"):  # requests, limit, secret in env
        assert ("checkov", check, job_id) in got, sc.report(unexpected, stale)
    assert ("kube-score", "container-resources", job_id) in got
    assert "checkov CKV_K8S_20 children-dev:Job/dev-manual-backup" in stale
    assert "make scanners" not in sc.report(unexpected, stale)  # the message says what to change instead
    assert "add an exception with its reason" in sc.report(unexpected, stale)


def test_exceptions_need_a_reason_and_a_known_tool(tmp_path):
    bad = tmp_path / "exceptions.yaml"
    bad.write_text("exceptions:\n- tool: checkov\n  check: CKV_K8S_11\n  objects: ['*']\n  reason: because\n")
    with pytest.raises(ValueError, match="give a reason"):
        sc.load_exceptions(bad)
    bad.write_text("exceptions:\n- tool: trivy\n  check: X\n  objects: ['*']\n  reason: " + "x" * 30 + "\n")
    with pytest.raises(ValueError, match="checkov or kube-score"):
        sc.load_exceptions(bad)
    bad.write_text("exceptions:\n- tool: checkov\n  check: X\n  reason: " + "x" * 30 + "\n")
    with pytest.raises(ValueError, match="objects"):
        sc.load_exceptions(bad)


def test_missing_scanners_say_make_scanners(tmp_path, monkeypatch):
    monkeypatch.setattr(sc, "CACHE", tmp_path / "empty-cache")
    assert len(sc.missing()) == 2
    with pytest.raises(sc.ScannerError, match="make scanners"):
        sc.run_checkov(tmp_path)
    with pytest.raises(sc.ScannerError, match="make scanners"):
        sc.run_kube_score([tmp_path / "x.yaml"])


def test_changed_pins_make_checkov_missing_again(tmp_path, monkeypatch):
    """The virtualenv is keyed by the pins: after a change to scanners/checkov-requirements.txt, `make scanners`
    rebuilds it (and the test says to run it) instead of scanning with the old tree."""
    monkeypatch.setattr(sc, "CACHE", tmp_path)
    sc.checkov_bin().parent.mkdir(parents=True)
    sc.checkov_bin().write_text("#!/bin/sh\n")
    marker = sc.checkov_dir() / ".installed"
    marker.write_text("0123456789abcdef\n")  # installed from other pins
    assert any(m.startswith("checkov") for m in sc.missing())
    marker.write_text(sc._requirements_hash() + "\n")
    assert not any(m.startswith("checkov") for m in sc.missing())

from __future__ import annotations

import datetime as dt

from conftest import make_owner

from omendb_operator.plans.status import Observation, build_status, status_changed
from omendb_operator.spec import parse_spec

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=5)


def _sts(ready, replicas=3, updated=None, revision_done=True, generation=1, observed=1):
    return {
        "metadata": {"generation": generation},
        "status": {
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas if updated is None else updated,
            "observedGeneration": observed,
            "currentRevision": "r1",
            "updateRevision": "r1" if revision_done else "r2",
        },
    }


def _conds(status):
    return {c["type"]: c for c in status["conditions"]}


def test_ready_when_every_pod_is_ready():
    owner, spec = make_owner(), parse_spec({"replicas": 3, "version": "0.1.0"})
    status = build_status(owner, spec, Observation(statefulset=_sts(3), tls_not_after=NOW), None, NOW)
    c = _conds(status)
    assert status["phase"] == "Ready"
    assert (c["Ready"]["status"], c["Progressing"]["status"], c["Degraded"]["status"]) == (
        "True",
        "False",
        "False",
    )
    assert status["readyReplicas"] == 3 and status["replicas"] == 3
    assert status["currentVersion"] == "0.1.0"
    assert status["observedGeneration"] == 1
    assert status["selector"] == "app=omendb,app.kubernetes.io/name=omendb,app.kubernetes.io/instance=prod"
    assert status["endpoints"]["primary"] == "https://prod.omendb-prod.svc:3000"
    assert status["credentialsSecret"] == "prod-users"
    assert c["TLSReady"]["status"] == "True"
    assert all(cond["observedGeneration"] == 1 for cond in status["conditions"])


def test_creating_then_ready_then_degraded():
    owner, spec = make_owner(), parse_spec({"replicas": 3})
    creating = build_status(owner, spec, Observation(statefulset=_sts(1)), None, NOW)
    assert creating["phase"] == "Creating"
    assert _conds(creating)["Progressing"]["reason"] == "Creating"
    assert "currentVersion" not in creating
    ready = build_status(owner, spec, Observation(statefulset=_sts(3)), creating, LATER)
    assert ready["phase"] == "Ready"
    assert _conds(ready)["Ready"]["lastTransitionTime"] == "2026-01-01T12:05:00Z"
    lost_one = build_status(owner, spec, Observation(statefulset=_sts(2)), ready, LATER)
    assert lost_one["phase"] == "Updating"
    assert _conds(lost_one)["Degraded"]["status"] == "True"
    assert "1 of 3 pods are not ready" in _conds(lost_one)["Degraded"]["message"]
    assert lost_one["currentVersion"] == "0.1.0"  # kept from the completed rollout


def test_rollout_in_progress_is_progressing():
    owner, spec = make_owner(), parse_spec({"replicas": 3})
    ready = build_status(owner, spec, Observation(statefulset=_sts(3)), None, NOW)
    rolling = build_status(
        owner, spec, Observation(statefulset=_sts(3, revision_done=False, updated=1)), ready, LATER
    )
    c = _conds(rolling)
    assert c["Progressing"]["status"] == "True" and c["Progressing"]["reason"] == "RollingOut"
    assert c["Ready"]["status"] == "False"


def test_unchanged_world_gives_an_equal_status_so_nothing_is_written():
    owner, spec = make_owner(), parse_spec({})
    obs = Observation(statefulset=_sts(1, replicas=1), tls_not_after=NOW)
    first = build_status(owner, spec, obs, None, NOW)
    second = build_status(owner, spec, obs, first, LATER)
    assert second == first
    assert not status_changed(first, second)
    assert status_changed(first, {**second, "readyReplicas": 0})


def test_invalid_spec_fails_with_the_message():
    status = build_status(
        make_owner(), None, Observation(spec_error="spec.version 'x' is not a version"), None, NOW
    )
    assert status["phase"] == "Failed"
    c = _conds(status)
    assert c["Degraded"]["status"] == "True" and c["Degraded"]["reason"] == "InvalidSpec"
    assert "spec.version" in c["Ready"]["message"]


def test_apply_errors_degrade():
    owner, spec = make_owner(), parse_spec({})
    status = build_status(
        owner,
        spec,
        Observation(
            statefulset=_sts(1, replicas=1), apply_errors=["CronJob prod-backup-full: invalid schedule"]
        ),
        None,
        NOW,
    )
    assert status["phase"] == "Degraded"
    assert "invalid schedule" in _conds(status)["Degraded"]["message"]


def _cron(scheduled=None, succeeded=None, active=False):
    st = {}
    if scheduled:
        st["lastScheduleTime"] = scheduled
    if succeeded:
        st["lastSuccessfulTime"] = succeeded
    if active:
        st["active"] = [{"name": "job"}]
    return {"status": st}


def test_backup_health_and_last_backup():
    owner, spec = make_owner(), parse_spec({})

    def backup(cronjobs):
        status = build_status(
            owner, spec, Observation(statefulset=_sts(1, replicas=1), cronjobs=cronjobs), None, NOW
        )
        return _conds(status)["BackupHealthy"], status.get("lastBackup")

    cond, last = backup({"full": _cron(), "incremental": _cron()})
    assert (cond["status"], cond["reason"], last) == ("Unknown", "NoBackupYet", None)
    cond, last = backup(
        {"full": _cron("2026-01-01T01:00:00Z", "2026-01-01T01:04:00Z"), "incremental": _cron()}
    )
    assert cond["status"] == "True" and last == {"full": "2026-01-01T01:04:00Z"}
    cond, _ = backup({"full": _cron("2026-01-01T01:00:00Z", "2025-12-25T01:04:00Z"), "incremental": _cron()})
    assert cond["status"] == "False" and cond["reason"] == "BackupFailed"
    cond, _ = backup(
        {
            "full": _cron("2026-01-01T01:00:00Z", "2025-12-25T01:04:00Z", active=True),
            "incremental": _cron("2025-12-31T01:00:00Z", "2025-12-31T01:01:00Z"),
        }
    )
    assert cond["status"] == "True"  # the running backup has not failed
    disabled = build_status(owner, parse_spec({"backup": {"enabled": False}}), Observation(), None, NOW)
    assert _conds(disabled)["BackupHealthy"]["reason"] == "BackupsDisabled"


def test_tls_and_monitoring_conditions():
    owner = make_owner()
    off = build_status(
        owner, parse_spec({"tls": {"enabled": False}}), Observation(monitoring_missing=True), None, NOW
    )
    # Off by choice is as the spec asks: True (issue 18), not a False that reads as a broken certificate.
    assert (_conds(off)["TLSReady"]["status"], _conds(off)["TLSReady"]["reason"]) == ("True", "TLSDisabled")
    assert _conds(off)["MonitoringReady"]["status"] == "False"
    assert "tls" not in off and off["endpoints"]["primary"].startswith("http://")
    broken = build_status(
        owner,
        parse_spec({"tls": {"generate": False, "secretName": "mine"}}),
        Observation(tls_error="Secret mine does not exist"),
        None,
        NOW,
    )
    assert _conds(broken)["TLSReady"]["status"] == "False"
    # The user's TLS Secret is missing: only a human can fix it (kstatus: Failed).
    assert (_conds(broken)["Stalled"]["status"], _conds(broken)["Stalled"]["reason"]) == ("True", "TLSSecretUnusable")
    assert broken["tls"]["secretName"] == "mine"


def test_keys_no_longer_reported_are_removed_by_the_patch():
    from omendb_operator.plans.status import status_patch

    owner = make_owner()
    with_tls = build_status(owner, parse_spec({}), Observation(tls_not_after=NOW), None, NOW)
    without = build_status(owner, parse_spec({"tls": {"enabled": False}}), Observation(), with_tls, LATER)
    patch = status_patch(with_tls, without)
    assert patch["tls"] is None
    assert status_changed(with_tls, without)
    assert status_patch({"notOurs": {"step": 2}}, without).get("notOurs", "untouched") == "untouched"


def test_user_tls_secret_problems_degrade_and_name_warnings_are_reported():
    owner = make_owner()
    spec = parse_spec({"tls": {"generate": False, "secretName": "omendb-tls"}})
    missing_ca = "Secret omendb-tls (spec.tls.secretName) has no key ca.crt"
    missing_names = "the certificate in Secret omendb-tls does not name 12 of the Service names: prod.ns.svc"
    status = build_status(owner, spec, Observation(tls_not_after=NOW, tls_problems=[missing_ca],
                                                   tls_warnings=[missing_names]), None, NOW)
    conds = _conds(status)
    assert status["phase"] == "Degraded"
    assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == ("True", "TLSSecretIncomplete")
    assert "no key ca.crt" in conds["Degraded"]["message"]
    assert conds["TLSReady"]["reason"] == "CertificateIncomplete"
    assert "prod.ns.svc" in conds["TLSReady"]["message"]
    # Names alone are a warning: not Degraded.
    warned = build_status(owner, spec, Observation(tls_not_after=NOW, tls_warnings=[missing_names]), None, NOW)
    conds = _conds(warned)
    assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == ("False", "AsExpectedWithWarnings")
    assert "prod.ns.svc" in conds["Degraded"]["message"]
    assert (conds["TLSReady"]["status"], conds["TLSReady"]["reason"]) == ("True", "CertificateNamesMissing")


def test_continuous_archiving_condition_follows_the_primarys_archiver():
    owner = make_owner()
    spec = parse_spec({"replicas": 3, "backup": {"objectStore": {"bucket": "b1b"}}})

    def condition(archive):
        obs = Observation(statefulset=_sts(3), tls_not_after=NOW, wal_archive=archive)
        return _conds(build_status(owner, spec, obs, None, NOW))["ContinuousArchiving"]

    assert (condition(None)["status"], condition(None)["reason"]) == ("Unknown", "PrimaryNotRead")
    ok = condition({"url": "s3://b1b/omendb-prod/prod", "active": True, "shipped_lsn": 42, "lag_seconds": 0.4,
                    "failing": False, "error": ""})
    assert ok["status"] == "True" and ok["reason"] == "ArchivingWAL" and "through LSN 42" in ok["message"]
    bad = condition({"url": "s3://b1b/omendb-prod/prod", "active": True, "shipped_lsn": 42, "lag_seconds": 400,
                     "failing": True, "error": "Access Denied"})
    assert bad["status"] == "False" and bad["reason"] == "ArchiveFailing" and "Access Denied" in bad["message"]
    # Without an object store, or with archiveWal false, there is no such condition.
    for raw in ({"replicas": 3}, {"replicas": 3, "backup": {"objectStore": {"bucket": "b1b", "archiveWal": False}}}):
        status = build_status(owner, parse_spec(raw), Observation(statefulset=_sts(3), tls_not_after=NOW), None, NOW)
        assert "ContinuousArchiving" not in _conds(status)

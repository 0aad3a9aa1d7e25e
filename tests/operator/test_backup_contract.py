"""Every backup_tool command the operator's Jobs run is a contract request, and backup_tool's real parser
reads each back into the same request (an option renamed on one side fails here, not in a cluster)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import make_owner

from omendb.backup import cli, restore_job
from omendb.backup.contract import (
    BackupRequest,
    CleanupRequest,
    Request,
    RestoreJobRequest,
    RestoreRequest,
    request_from_args,
)
from omendb_operator.plans import bootstrap, restores
from omendb_operator.spec import parse_spec
from omendb_operator.specs import cronjobs, jobs
from omendb_operator.specs.backup_store import volume_location


def _command(obj: dict[str, Any]) -> list[str]:
    """The container command of a Job or of a CronJob's Job."""
    job_spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    return list(job_spec["template"]["spec"]["containers"][0]["command"])


def _round_trip(request: Request) -> None:
    argv = request.argv()
    assert argv[0] == "backup_tool"
    assert request_from_args(cli.parser().parse_args(argv[1:])) == request, argv


def _operator_requests() -> list[tuple[list[str], Request]]:
    """(the command in a Job the operator builds, the request it was built from), for every kind of Job."""
    out: list[tuple[list[str], Request]] = []
    for raw in ({}, {"tls": {"enabled": False}, "backup": {"retentionDays": 7}},
                {"config": {"database": {"name": "production"}}}):
        owner = make_owner(spec=raw)
        spec = parse_spec(raw)
        cron = {c["metadata"]["name"]: c for c in cronjobs.build_cronjobs(owner, spec)}
        out.append((_command(cron["prod-backup-full"]), cronjobs.backup_request("prod", "omendb-prod", spec, "full")))
        out.append((_command(cron["prod-backup-incremental"]),
                    cronjobs.backup_request("prod", "omendb-prod", spec, "incremental")))
        out.append((_command(cron["prod-backup-cleanup"]), cronjobs.cleanup_request("prod", "omendb-prod", spec)))
        for kind in ("full", "incremental"):  # OmenDBBackups; a pre-upgrade backup is an OmenDBBackup (full)
            backup = {"kind": "OmenDBBackup", "apiVersion": "omendb.io/v1alpha1",
                      "metadata": {"name": f"b-{kind}", "uid": "u"}, "spec": {"type": kind}}
            out.append((_command(jobs.backup_job(owner, spec, backup)),
                        cronjobs.backup_request("prod", "omendb-prod", spec, kind)))
        for restore_spec in ({}, {"backupId": "b1", "pointInTime": {"lsn": 40}},
                             {"pointInTime": {"time": "2026-11-27T07:00:00Z"}, "allowUnkeyed": True}):
            restore = {"kind": "OmenDBRestore", "metadata": {"name": "r1", "uid": "u"}, "spec": restore_spec}
            for action in jobs.RESTORE_ACTIONS:
                target = restores.target_of(restore)
                job = jobs.restore_job(owner, spec, restore, "r1", action, 1, target, {})
                request = RestoreJobRequest(action, "/var/lib/omendb/data", "/var/lib/omendb/wal",
                                            target.request() if action == "restore" else None)
                assert _command(job) == request.argv()
                if request.restore is not None:
                    out.append((_command(job)[_command(job).index("--") + 1:], request.restore))
    boot = make_owner(name="copy", spec={"bootstrap": {"fromBackup": {"cluster": {"name": "prod"},
                                                                      "pointInTime": {"lsn": 5}}}})
    command = _command(bootstrap.bootstrap_job(boot, parse_spec(boot["spec"])))
    out.append((command[command.index("--") + 1:],
                jobs.RestoreTarget("latest", 5, None, volume_location("prod-backups"), "prod-backup-key").request()))
    return out


def test_every_job_command_is_a_request_backup_tool_parses_back():
    pairs = _operator_requests()
    assert {type(r) for _, r in pairs} == {BackupRequest, CleanupRequest, RestoreRequest}
    for command, request in pairs:
        assert command == request.argv()
        _round_trip(request)


def test_requests_beyond_the_operators_round_trip_too():
    for request in (
        BackupRequest("full", "db", "/b", data_dir="/var/lib/omendb"),
        BackupRequest("incremental", "db", "/b", source="http://h:3000", result_file="/r"),
        RestoreRequest("/d", "/b"),
        RestoreRequest("/d", "/b", "omendb-x-full", "/w", time="2026-01-01T00:00:00Z", lock_timeout=2.5),
        CleanupRequest("/b", 0.5),
        CleanupRequest("/b", 30, result_file="/r"),
    ):
        _round_trip(request)


def test_restore_job_requests_are_what_the_programs_parser_reads():
    for action in jobs.RESTORE_ACTIONS:
        argv = RestoreJobRequest(action, "/d", "/w",
                                 RestoreRequest("/d", "/b") if action == "restore" else None).argv()
        args = restore_job.parser().parse_args(argv[3:argv.index("--")] if "--" in argv else argv[3:])
        assert (args.action, str(args.data_dir), str(args.wal_dir)) == (action, "/d", "/w")
    with pytest.raises(ValueError, match="unknown restore action 'explode'"):
        RestoreJobRequest("explode", "/d", "/w")
    with pytest.raises(ValueError, match="only that one"):
        RestoreJobRequest("restore", "/d", "/w")
    with pytest.raises(ValueError, match="only that one"):
        RestoreJobRequest("discard", "/d", "/w", RestoreRequest("/d", "/b"))
    with pytest.raises(ValueError, match="backup type 'differential'"):
        BackupRequest("differential", "db", "/b")

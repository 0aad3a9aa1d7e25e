"""One reconcile's plan for one OmenDB, from one observation: the planners in the order their decisions
depend on one another.

1. operations (bootstrap, restores, backups: operations.py) decide whether the pods are held at zero and
   the backup CronJobs suspended;
2. day-2 operations before the build (upgrade, volumes, hibernation: day2.py) decide the image, and whether
   the StatefulSet may be applied now;
3. failover decides where the primary is; while it moves on, only its part is planned (plans/failover.py);
4. the children are built (children.py) and compared with the live ones;
5. the rollout (rollout.py, upgrade.py) picks the pod to replace, after a switchover for the primary;
6. the status (status.py) says what all of that means, last.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from omendb_operator import labels as L
from omendb_operator.plans import day2, failover, lost_pods, upgrade
from omendb_operator.plans import operations as ops
from omendb_operator.plans.changes import will_change
from omendb_operator.plans.children import Observed, build_children, stale_children
from omendb_operator.plans.plan import Apply, Delete, EventOn, Plan, StatusWrite
from omendb_operator.plans.podcount import decide_pod_count
from omendb_operator.plans.status import Observation, build_status, status_changed, status_patch
from omendb_operator.plans.stuck import find_stuck, recheck_after
from omendb_operator.plans.world import World
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs import cert_manager, certificates
from omendb_operator.specs.secrets import HTPASSWD_KEY
from omendb_operator.specs.statefulset import claim_template_drift


def owner_of(omendb: dict[str, Any]) -> dict[str, Any]:
    """What children point at (owner references) and events are recorded on."""
    meta = omendb["metadata"]
    return {"apiVersion": L.API_VERSION, "kind": L.KIND,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                         "generation": meta.get("generation", 0)}}


def users_source_error(secret: str, namespace: str, ref: dict[str, Any] | None,
                       configmap: dict[str, Any] | None) -> str:
    """Why spec.auth.htpasswdSecretName cannot be used, with the command that fixes it.

    The guide keeps its htpasswd file in a ConfigMap (`kubectl create configmap omendb-users
    --from-file=...`). That is refused: password hashes are credentials, and ConfigMaps are readable by
    every role that may read configuration (and are printed by `kubectl describe`); the message says how
    to move the same file into a Secret."""
    create = f"`kubectl create secret generic {secret} --from-file={HTPASSWD_KEY}=PATH`"
    if ref is None and configmap is not None:
        keys = sorted((configmap.get("data") or {}).keys())
        source = keys[0] if len(keys) == 1 else HTPASSWD_KEY
        jsonpath = "{.data." + source.replace(".", "\\.") + "}"  # kubectl jsonpath escapes dots in keys
        return (f"spec.auth.htpasswdSecretName names {secret}, which is a ConfigMap, not a Secret (the guide's "
                f"`kubectl create configmap`): users are read from Secrets only, because password hashes are "
                f"credentials and ConfigMaps are readable more widely. Move the file into a Secret: "
                f"`kubectl get configmap {secret} -n {namespace} -o jsonpath='{jsonpath}' > {HTPASSWD_KEY}`, "
                f"`kubectl create secret generic {secret} -n {namespace} --from-file={HTPASSWD_KEY}={HTPASSWD_KEY}`, "
                f"then `kubectl delete configmap {secret} -n {namespace}`")
    problem = "does not exist" if ref is None else f"has no key {HTPASSWD_KEY}"
    return f"Secret {secret} (spec.auth.htpasswdSecretName) {problem}; create it with {create}"


def check_user_tls(world: World, spec: OmenDBSpec, now: dt.datetime, cluster_domain: str,
                   obs: Observation) -> None:
    """The user's own TLS Secret (spec.tls.secretName): present, readable, unexpired, and naming the
    Services (certificates.review_user_tls_secret)."""
    name = str(spec.tls.secret_name)
    secret = world.secrets.get(name)
    data = world.secret_data(name)
    cert = certificates.load_cert(data.get("tls.crt"))
    if secret is None:
        obs.tls_error = f"Secret {name} (spec.tls.secretName) does not exist"
    elif cert is None or not data.get("tls.key"):
        obs.tls_error = f"Secret {name} has no readable tls.crt and tls.key"
    elif cert.not_valid_after_utc <= now:
        obs.tls_error = f"the certificate in {name} expired at {cert.not_valid_after_utc}"
    else:
        obs.tls_not_after = cert.not_valid_after_utc
        problems, warnings = certificates.review_user_tls_secret(name, data, world.name, world.namespace,
                                                                 cluster_domain)
        obs.tls_problems += problems
        obs.tls_warnings += warnings


def check_cert_manager_tls(world: World, now: dt.datetime, obs: Observation) -> None:
    """spec.tls.issuerRef: TLSReady follows the Certificate's Ready condition, and the notAfter of what
    cert-manager wrote into NAME-tls. Without cert-manager's CRDs nothing can issue: that is Degraded."""
    if not world.cert_manager_api:
        error = (f"spec.tls.issuerRef is set but the {cert_manager.CERTIFICATE_KIND} kind "
                 f"({cert_manager.CERT_MANAGER_API}) is not installed in this cluster: install cert-manager "
                 "or remove spec.tls.issuerRef")
        obs.tls_error = error
        obs.apply_errors.append(error)
        return
    name = world.name
    ready = next((c for c in ((world.child(cert_manager.CERTIFICATE_KIND, name) or {}).get("status") or {})
                  .get("conditions") or [] if c.get("type") == "Ready"), None)
    secret = world.names.tls
    cert = certificates.load_cert(world.secret_data(secret).get("tls.crt"))
    if ready is None or ready.get("status") != "True":
        why = f"{ready.get('reason')}: {ready.get('message')}" if ready else "cert-manager has not reported yet"
        obs.tls_error = f"Certificate {name} is not Ready ({why})"
    elif cert is None:
        obs.tls_error = f"Certificate {name} is Ready but Secret {secret} has no readable tls.crt"
    elif cert.not_valid_after_utc <= now:
        obs.tls_error = f"the certificate in {secret} expired at {cert.not_valid_after_utc}"
    if cert is not None and cert.not_valid_after_utc > now:
        obs.tls_not_after = cert.not_valid_after_utc


def plan_status(plan: Plan, world: World, owner: dict[str, Any], spec: OmenDBSpec | None, obs: Observation,
                now: dt.datetime) -> None:
    """The OmenDB's status write (when it changes) and the event of a phase change."""
    previous = world.status
    new = build_status(owner, spec, obs, previous, now)
    if not status_changed(previous, new):
        return
    plan.status = StatusWrite(L.API_VERSION, L.KIND, world.name, world.namespace, status_patch(previous, new))
    old_phase = previous.get("phase")
    if old_phase != new["phase"]:
        kind = "Warning" if new["phase"] in ("Degraded", "Failed") else "Normal"
        plan.status_events.append(EventOn(owner, kind, f"Phase{new['phase']}",
                                          f"phase {old_phase or '(none)'} -> {new['phase']}"))


def plan_gone(world: World, now: dt.datetime) -> Plan:
    """The OmenDB does not exist: its unfinished OmenDBBackups and OmenDBRestores fail."""
    plan = Plan(result="gone")
    ops.plan_orphans(plan, world, now)
    return plan


def plan_omendb(world: World, now: dt.datetime, cluster_domain: str = "cluster.local", *, final: bool = False,
                engines_failed: bool = False, apply_errors: list[str] | None = None) -> Plan:
    """The plan of one pass. ``final``: plan everything even while the failover moves on (the last pass
    of a reconcile); ``engines_failed``: an engine action of the previous pass failed, so this pass plans
    the rest without acting on the engines; ``apply_errors``: the applies of the previous pass that failed
    (only the status is planned then)."""
    assert world.omendb is not None
    owner = owner_of(world.omendb)
    spec, error = world.parsed_spec()
    if spec is None:
        plan = Plan(result="invalid")
        plan_status(plan, world, owner, None, Observation(spec_error=error), now)
        if plan.status is not None:
            plan.status_events.append(EventOn(owner, "Warning", "InvalidSpec", str(error)))
        return plan

    rest = Plan()
    # 1. Backups, restores and bootstrap: they decide the pod count and CronJob suspension below.
    outcome = ops.plan_operations(rest, world, spec, owner, now)
    obs = Observation(last_backup=outcome.last_backup, backup_failure=outcome.backup_failure,
                      restore=outcome.restore_marker, bootstrap=outcome.bootstrap)
    rest.requeue_within(outcome.requeue_after)

    # 2. Day-2 operations decide the image, the pod count and whether the StatefulSet may be applied now.
    before = day2.plan_before(rest, world, spec, owner, now)

    # 3. Failover: no failover while the pods are held at zero on purpose (restore, bootstrap, hibernation).
    plan = Plan()
    requested = failover.requested_switchover(world)
    repl = failover.decide(world, spec, now, switchover_to=requested,
                           paused=0 in (outcome.replicas_override, before.replicas_override))
    if engines_failed:
        repl.decision.actions, repl.decision.again, repl.quiet = [], False, True
        repl.decision.requeue_after = min(repl.decision.requeue_after or 2.0, 2.0)
    failover.record(plan, world, owner, repl)
    plan.heartbeat = repl.primary_pod if spec.replicas >= 2 and spec.failover.enabled else None
    if requested is not None and repl.decision.switchover_finished:
        failover.consume_annotation(plan, world, owner, requested, repl.decision.switchover_finished)
    if not repl.quiet and not final:
        return plan  # observe again once the engines acted; the rest is planned from where it ends
    plan.again = False
    failover.label_pods(plan, world, repl.primary_pod)
    lost_pods.plan_lost_pods(plan, world, owner, now)
    plan.requeue_within(lost_pods.recheck_after(world, now))
    _merge(plan, rest)

    # 4. The children.
    pods = decide_pod_count(spec.replicas, world.live_replicas, restore_hold=outcome.replicas_override,
                            hibernation_hold=before.replicas_override, switchover_hold=repl.replicas_hold,
                            backup_jobs=before.active_backup_jobs)
    skip = set(before.skip)
    user_htpasswd = None
    users_live = world.secrets.get(world.names.users)
    if spec.auth.htpasswd_secret_name:
        ref_name = spec.auth.htpasswd_secret_name
        data = world.secret_data(ref_name)
        if HTPASSWD_KEY not in data:
            obs.apply_errors.append(users_source_error(ref_name, world.namespace, world.secrets.get(ref_name),
                                                       world.configmaps.get(ref_name)))
            if users_live is not None:
                skip.add(("Secret", world.names.users))  # keep today's users rather than drop them
        else:
            user_htpasswd = data[HTPASSWD_KEY]
    generated_tls = spec.tls.enabled and spec.tls.generate
    observed = Observed(
        users_secret=world.secret_data(world.names.users),
        backup_key_secret=world.secret_data(world.names.backup_key),
        user_htpasswd=user_htpasswd,
        ca_secret=world.secret_data(world.names.ca) if generated_tls else {},
        tls_secret=world.secret_data(world.names.tls) if generated_tls else {},
        monitoring_api=world.monitoring_api,
        primary_pod=repl.primary_pod,
        replicas_override=pods.override,
        suspend_backups=outcome.suspend_backups,
        user_tls_ca=bool(spec.tls.enabled and not spec.tls.generate and
                         world.secret_data(spec.tls.secret(world.name)).get("ca.crt")),
        cert_manager_api=world.cert_manager_api,
        operator_namespace=world.operator_namespace,
    )
    desired = build_children(owner, before.spec, observed, now, cluster_domain)
    obs.warnings += desired.warnings
    wants_monitoring = spec.monitoring.prometheus_rule or spec.monitoring.service_monitor
    obs.monitoring_missing = desired.skipped_monitoring and wants_monitoring
    obs.tls_not_after = desired.cert_not_after
    if spec.tls.cert_manager:
        check_cert_manager_tls(world, now, obs)
    elif spec.tls.enabled and not spec.tls.generate:
        check_user_tls(world, spec, now, cluster_domain, obs)
    sts_manifest = next(m for m in desired.manifests if m["kind"] == "StatefulSet")
    obs.warnings += claim_template_drift(sts_manifest, world.statefulset)

    for manifest in desired.manifests:
        kind, child = manifest["kind"], manifest["metadata"]["name"]
        if (kind, child) not in skip:
            plan.applies.append(Apply(manifest, _live(world, kind, child)))
    for api_version, kind, suffix in stale_children(spec, observed):
        live = _live(world, kind, f"{world.name}{suffix}")
        if live and (live["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == L.MANAGED_BY:
            plan.deletes.append(Delete(api_version, kind, live["metadata"]["name"], world.namespace))
    if any(d.kind == cert_manager.CERTIFICATE_KIND for d in plan.deletes):
        # Act deletes after it applies: NAME-tls written while cert-manager's Certificate still exists is
        # re-issued by cert-manager over the operator's. Write it on the next pass, once the Certificate is gone.
        plan.applies = [a for a in plan.applies if (a.manifest["kind"], a.manifest["metadata"]["name"]) !=
                        ("Secret", world.names.tls)]
        plan.requeue_within(1.0)
    plan.report_changes_on = owner
    for reason, message in desired.actions:
        plan.event(owner, "Normal", reason, message)
    if obs.monitoring_missing:
        plan.if_changed.append(("Warning", "MonitoringCRDsMissing",
                                "PrometheusRule/ServiceMonitor CRDs are not installed; alerts and scraping "
                                "are not configured"))
    plan.if_changed += [("Warning", "SpecWarning", w) for w in desired.warnings]

    # 5. The rollout, from the StatefulSet as it will be once this plan is applied.
    statefulset_changes = ("StatefulSet", world.names.statefulset) not in skip and \
        will_change(sts_manifest, world.statefulset)
    sts_after = day2.statefulset_after(world.statefulset, statefulset_changes)
    after = day2.plan_after(plan, world, spec, owner, before, None if before.skip_statefulset else sts_after,
                            repl, requested, now)

    # 6. The status, last.
    plan.requeue_within(after.requeue)
    obs.upgrade, obs.storage = after.upgrade_state, before.volumes.status
    obs.upgrade_condition = upgrade.upgrade_condition(after.upgrade_state) if after.upgrade_state else None
    obs.storage_condition = before.volumes.condition
    obs.operation_waiting, obs.hibernation = after.waiting or pods.waiting, after.hibernation
    obs.warnings += before.volumes.warnings
    drain = failover.drain_warning(world, spec.replicas)
    if drain and spec.replicas >= 2:
        obs.warnings.append(drain)
    if before.upgrade.version != (spec.image or spec.version):
        obs.running_version = before.upgrade.version
    obs.statefulset = sts_after
    if spec.backup.enabled:
        obs.cronjobs = {"full": world.child("CronJob", world.names.backup_full),
                        "incremental": world.child("CronJob", world.names.backup_incremental)}
    obs.replication = after.replication or repl.status  # an upgrade's switchover moved the primary
    primary = world.pods.get(str((obs.replication or {}).get("primaryPod") or ""))
    obs.wal_archive = primary.engine.wal_archive if primary is not None and primary.engine is not None else None
    obs.apply_errors += apply_errors or []
    obs.stuck = find_stuck(world.items("Pod"), world.items("Job"), now)
    plan.requeue_within(recheck_after(world.items("Pod"), world.items("Job"), now))
    plan_status(plan, world, owner, spec, obs, now)
    if apply_errors is not None:  # the applies already ran: this pass only says how they went
        return Plan(status=plan.status, status_events=plan.status_events)
    return plan


def _live(world: World, kind: str, name: str) -> dict[str, Any] | None:
    if kind == "Secret":
        return world.secrets.get(name)
    return world.child(kind, name)


def _merge(plan: Plan, rest: Plan) -> None:
    plan.creates += rest.creates
    plan.patches += rest.patches
    plan.deletes += rest.deletes
    plan.statuses += rest.statuses
    plan.events += rest.events
    plan.requeue_within(rest.requeue)


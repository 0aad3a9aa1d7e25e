"""Every command in the fenced shell blocks of README.md and docs/**/*.md works as far as can be checked
without a cluster (see doc_commands.py for what is checked per command): the real CLIs' parsers, the real
kubectl and helm binaries, the API server's discovery for resource types, the Makefile and the repository's
paths. A typo fails the test with the file and line."""

from __future__ import annotations

from pathlib import Path

import doc_commands as dc
import pytest
from operator_apiserver import find_bin_dir


@pytest.fixture(scope="module")
def ctx(apiserver) -> dc.Context:
    bin_dir = find_bin_dir(("kubectl", "helm"))
    with apiserver.client() as http:
        names = dc.discovery_names(lambda path: http.get(path).raise_for_status().json())
    return dc.Context(kubectl=bin_dir / "kubectl", helm=bin_dir / "helm", resource_names=names)


def problems_of(tmp_path: Path, ctx: dc.Context, body: str) -> list[str]:
    doc = tmp_path / "page.md"
    doc.write_text(body)
    _, problems = dc.problems_in([doc], ctx)
    return [str(p) for p in problems]


def test_every_command_in_the_docs_works(ctx):
    files = dc.doc_files()
    assert Path(dc.ROOT / "docs" / "operations" / "README.md") in files
    count, problems = dc.problems_in(files, ctx)
    assert not problems, f"{len(problems)} doc command(s) do not work:\n" + "\n".join(map(str, problems))
    assert count >= 100, f"only {count} commands found in the docs: is the extraction broken?"


def test_discovery_knows_core_kinds_and_our_crds(ctx):
    for name in ("pods", "pod", "po", "statefulset", "sts", "cronjobs", "secret", "omendb", "omendbs", "odb",
                 "omendb-all", "omendbbackup", "omendbrestores", "prometheusrule", "servicemonitors"):
        assert name in ctx.resource_names, name


BAD = {
    "make tset": "no target 'tset' in the Makefile",
    "kubectl get omendbz -A": "no resource type 'omendbz'",
    "kubectl get odb --namespce x": "unknown flag: --namespce",
    "kubectl scale omendb/dev --replicas=three": "invalid argument",
    "kubectl frobnicate odb": 'unknown command "frobnicate"',
    "kubectl logs statefulsett/dev": "no resource type 'statefulsett'",
    "kubectl omendb stauts dev": "invalid choice: 'stauts'",
    "kubectl-omendb get dev notanumber": "KEY must be an integer",
    "backup_tool --backup-dir /b ful-backup --database x": "invalid choice: 'ful-backup'",
    "backup_tool --backup-dir /b restore": "the following arguments are required: --backup-id",
    "omendb serv --config x.toml": "invalid choice: 'serv'",
    "kubectl apply -f manifests/instal.yaml": "-f manifests/instal.yaml: no such file",
    "helm install x charts/omendb-operatr": "chart charts/omendb-operatr does not exist",
    "helm install x charts/omendb-operator --set nosuchkey=1": "nosuchkey",
    "helm instal x charts/omendb-operator": 'unknown command "instal"',
    "python -m omendb.nosuch": "module omendb.nosuch cannot be imported",
    ".venv/bin/pytest tests/nosuch_test.py": "pytest path tests/nosuch_test.py does not exist",
    "frobnicate --now": "unknown command 'frobnicate'",
    "sudo nice -n 19 make tset": "no target 'tset'",
    "flock /work/cluster.lock sh -c 'make venv && make tset'": "no target 'tset'",
    "X=$(kubectl get odbz -o name)": "no resource type 'odbz'",
    "scripts/nosuch.sh": "scripts/nosuch.sh does not exist",
    "kubectl exec -n x db-0 -- backup_tool --backup-dir /b lst": "invalid choice: 'lst'",
}


@pytest.mark.parametrize("command, message", list(BAD.items()), ids=list(BAD))
def test_a_broken_command_is_reported_with_file_and_line(tmp_path, ctx, command, message):
    problems = problems_of(tmp_path, ctx, f"# Page\n\ntext\n\n```bash\necho fine\n{command}\n```\n")
    assert len(problems) == 1, problems
    assert problems[0].startswith("page.md:7: ") or problems[0].startswith(f"{tmp_path}/page.md:7: "), problems[0]
    assert message in problems[0], problems[0]


def test_working_commands_pass(tmp_path, ctx):
    body = """
```bash
NS=omendb-dev; NAME=dev
kubectl get secret -n $NS $NAME-users -o jsonpath='{.data.password}' | base64 -d   # a comment
sudo make up
eval "$(.venv/bin/python -m e2e.cluster env)"
kubectl logs -n omendb-prod -l app=omendb --since=1h | \\
    grep -E "(ERROR|WARN)" | sort | uniq -c | sort -nr
kubectl omendb status $NAME -n $NS
kubectl wait -n $NS omendb/$NAME --for=condition=Ready --timeout=10m
kubectl create job -n $NS --from=cronjob/$NAME-backup-full $NAME-manual
kubectl rollout status statefulset/dev -n omendb-dev
helm upgrade --install omendb-operator charts/omendb-operator -n omendb-system --set grafanaDashboard.enabled=true
cat > /tmp/x.yaml <<'EOF'
this: is not a command
EOF
backup_tool --data-dir /var/lib/omendb --backup-dir /var/backups/omendb restore --backup-id "$ID" --force
kubectl exec -n $NS $NAME-0 -- backup_tool --help
```

```console
$ make test
output line that is not a command
```

```
not a shell block: anything goes
```
"""
    assert problems_of(tmp_path, ctx, body) == []


def test_unbalanced_quotes_are_reported(tmp_path, ctx):
    [problem] = problems_of(tmp_path, ctx, "```bash\nkubectl get odb -o jsonpath='{.items}\n```\n")
    assert "cannot parse the line" in problem and ":2:" in problem


def _dry_run(apiserver, kubectl: Path, obj: dict) -> str:
    """'' when the API server accepts OBJ (server-side dry run) with no Pod Security warning, else why not."""
    import subprocess

    import yaml

    namespace = (obj.get("metadata") or {}).get("namespace") or "default"
    with apiserver.client() as http:
        r = http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
        assert r.status_code in (201, 409), r.text
        # No controller-manager runs here to make the namespace's default ServiceAccount that pods need.
        r = http.post(f"/api/v1/namespaces/{namespace}/serviceaccounts", json={
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
        assert r.status_code in (201, 409), r.text
    out = subprocess.run([str(kubectl), f"--kubeconfig={apiserver.kubeconfig}", "apply", "--server-side",
                          "--dry-run=server", "--field-manager=doc-check", "-n", namespace, "-f", "-"],
                         input=yaml.safe_dump(obj), capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        return out.stderr.strip()
    if "PodSecurity" in out.stderr:
        return out.stderr.strip()
    return ""


def test_every_manifest_in_the_docs_is_accepted_by_the_api_server(apiserver, ctx):
    """Every Kubernetes object written out in a yaml block (a Pod, a Role, a NetworkPolicy, an OmenDB, ...)
    passes a server-side dry run against the real API server with this project's CRDs, in a namespace that
    enforces the restricted Pod Security Standard."""
    checked, problems = 0, []
    for path in dc.doc_files():
        rel = path.relative_to(dc.ROOT)
        for line, obj in dc.manifests(path):
            if "__error__" in obj:
                problems.append(f"{rel}:{line}: {obj['__error__']}")
                continue
            checked += 1
            error = _dry_run(apiserver, ctx.kubectl, obj)
            if error:
                problems.append(f"{rel}:{line}: {obj['kind']} {obj.get('metadata', {}).get('name')}: {error}")
    assert not problems, "manifests in the docs the API server refuses:\n" + "\n".join(problems)
    assert checked >= 4, f"only {checked} manifests found in the docs"


def test_a_broken_manifest_is_reported(tmp_path, apiserver, ctx):
    doc = tmp_path / "page.md"
    doc.write_text("```yaml\napiVersion: omendb.io/v1alpha1\nkind: OmenDB\nmetadata:\n  name: x\n"
                   "spec:\n  replicas: 0\n```\n")
    [(line, obj)] = list(dc.manifests(doc))
    assert line == 2
    assert "spec.replicas must be at least 1" in _dry_run(apiserver, ctx.kubectl, obj)


def test_every_relative_link_in_the_docs_resolves():
    """Relative links (files, directories, `#anchors` of Markdown headings) in README.md and docs/ point at
    something that exists."""
    problems, checked = [], 0
    for path in dc.doc_files():
        for line, target in dc.relative_links(path):
            checked += 1
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            rel = path.relative_to(dc.ROOT)
            try:
                dest_rel = str(dest.relative_to(dc.ROOT))
            except ValueError:
                problems.append(f"{rel}:{line}: {target} points outside the repository")
                continue
            if not dest.exists():
                problems.append(f"{rel}:{line}: {target}: {dest_rel} does not exist")
                continue
            if anchor and dest.suffix == ".md" and anchor not in dc.heading_anchors(dest):
                problems.append(f"{rel}:{line}: {target}: no heading with anchor #{anchor} in {dest_rel} "
                                f"(anchors: {', '.join(sorted(dc.heading_anchors(dest))[:12])} ...)")
    assert not problems, "broken links in the docs:\n" + "\n".join(problems)
    assert checked >= 50, f"only {checked} relative links found: is the extraction broken?"


def test_heading_anchors_follow_github():
    assert dc.slug("Metrics (`:9090/metrics`)") == "metrics-9090metrics"
    assert dc.slug("2. WAL corruption") == "2-wal-corruption"
    assert dc.slug("Sizing (the guide's system requirements and capacity planning)") == \
        "sizing-the-guides-system-requirements-and-capacity-planning"
    assert dc.slug("### `spec.config`".lstrip("# ")) == "specconfig"

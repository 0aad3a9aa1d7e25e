"""The security and best-practice scanners platform teams run: `python scripts/scan_tools.py install|check|render`.

- ``install``: build the pinned scanners into ~/.cache/omendb-scanners (or $OMENDB_SCANNERS_CACHE), once:
  checkov (PyPI) in its own virtualenv from scanners/checkov-requirements.txt (exact pins: checkov's many
  dependencies would fight the project's lock), and kube-score (a Go module) with `go install` from the module
  proxy. `make scanners` runs it; `make test` depends on it.
- ``render DIR``: write what is scanned to DIR: manifests/install.yaml, the chart in its other RBAC modes, and
  the children the operator makes for each sample (scripts/render_children.py).
- ``check``: render to a temporary directory, run both scanners (offline), and compare every failed check with
  scanners/exceptions.yaml. Exit 1 on a failed check the file does not list, and on an exception that no longer
  matches anything (stale). tests/packaging/test_scanners.py runs the same.

docs/operations/scanners.md explains the exceptions file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCANNERS_DIR = ROOT / "scanners"
REQUIREMENTS = SCANNERS_DIR / "checkov-requirements.txt"
EXCEPTIONS = SCANNERS_DIR / "exceptions.yaml"
CACHE = Path(os.environ.get("OMENDB_SCANNERS_CACHE", Path.home() / ".cache" / "omendb-scanners"))

CHECKOV_VERSION = "3.3.30"  # also pinned in REQUIREMENTS (with its whole dependency tree)
KUBE_SCORE_MODULE = "github.com/zegl/kube-score"
KUBE_SCORE_VERSION = "v1.20.0"
# The Kubernetes version kube-score judges API versions against: the e2e cluster's (e2e/binaries.py).
KUBERNETES_VERSION = "v1.33"

# What is scanned besides manifests/install.yaml (the chart's defaults: cluster-wide, rbac.create and the
# aggregated roles on): the chart with `helm template` and these values.
CHART_VARIANTS: dict[str, tuple[str, ...]] = {
    # RBAC provided by the cluster's admins: no (Cluster)Roles or bindings, no aggregated roles.
    "chart-no-rbac": ("--set", "rbac.create=false", "--set", "rbac.aggregateToDefaultRoles=false"),
    # Namespaced mode: a Role per watched namespace; also the optional dashboard and ServiceMonitor.
    "chart-namespaced": ("--set", "watchNamespaces={omendb-a,omendb-b}", "--set", "grafanaDashboard.enabled=true",
                         "--set", "serviceMonitor.enabled=true"),
}


class ScannerError(RuntimeError):
    """A scanner is missing or could not run; the message says how to fix it."""


# ---- installation ------------------------------------------------------------------------------------------


def _requirements_hash() -> str:
    """The pins (comments left out): the virtualenv is rebuilt when they change."""
    pins = [ln.strip() for ln in REQUIREMENTS.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return hashlib.sha256("\n".join(pins).encode()).hexdigest()[:16]


def checkov_dir() -> Path:
    return CACHE / f"checkov-{CHECKOV_VERSION}"


def checkov_bin() -> Path:
    return checkov_dir() / "bin" / "checkov"


def kube_score_bin() -> Path:
    return CACHE / f"kube-score-{KUBE_SCORE_VERSION}" / "kube-score"


def _checkov_current() -> bool:
    marker = checkov_dir() / ".installed"
    return checkov_bin().is_file() and marker.is_file() and marker.read_text().strip() == _requirements_hash()


def install_checkov() -> None:
    if _checkov_current():
        return
    target = checkov_dir()
    # Made in place (a virtualenv's scripts name its interpreter by absolute path); the marker written last
    # says it is complete, so an interrupted install is redone.
    shutil.rmtree(target, ignore_errors=True)
    print(f"scanners: installing checkov {CHECKOV_VERSION} into {target}", flush=True)
    start = time.monotonic()
    # The base interpreter, not this virtualenv's: the scanners' virtualenv must not see the project's packages.
    python = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([python, "-m", "venv", str(target)], check=True)
    # --no-deps: the file is the whole tree, pinned; nothing is resolved again on another machine.
    subprocess.run([str(target / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                    "--no-deps", "-r", str(REQUIREMENTS)], check=True)
    subprocess.run([str(checkov_bin()), "--version"], check=True, capture_output=True, timeout=300)
    (target / ".installed").write_text(_requirements_hash() + "\n")
    print(f"scanners: checkov installed in {time.monotonic() - start:.0f}s", flush=True)


def install_kube_score() -> None:
    binary = kube_score_bin()
    if binary.is_file():
        return
    go = shutil.which("go")
    if go is None:
        raise ScannerError("`go` is not on PATH: kube-score is built from its Go module (Go >= 1.24)")
    tmp = binary.parent.with_name(binary.parent.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"scanners: building kube-score {KUBE_SCORE_VERSION} from the Go module proxy", flush=True)
    start = time.monotonic()
    env = {**os.environ, "GOBIN": str(tmp), "GOTOOLCHAIN": "local", "CGO_ENABLED": "0",
           "GOFLAGS": "-buildvcs=false"}
    ldflags = f"-s -w -X main.version={KUBE_SCORE_VERSION}"
    # nice: the machine running the tests is usually busy with them.
    subprocess.run(["nice", "-n", "19", go, "install", "-trimpath", "-ldflags", ldflags,
                    f"{KUBE_SCORE_MODULE}/cmd/kube-score@{KUBE_SCORE_VERSION}"], env=env, check=True)
    binary.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp / "kube-score", binary)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"scanners: kube-score built in {time.monotonic() - start:.0f}s", flush=True)


def missing() -> list[str]:
    """What `make scanners` has not installed yet (empty when both scanners are ready)."""
    out = []
    if not _checkov_current():
        out.append(f"checkov {CHECKOV_VERSION} ({checkov_dir()})")
    if not kube_score_bin().is_file():
        out.append(f"kube-score {KUBE_SCORE_VERSION} ({kube_score_bin()})")
    return out


# ---- what is scanned ---------------------------------------------------------------------------------------


def render(out_dir: Path) -> list[Path]:
    """Write every scanned manifest file to ``out_dir``; returns the files."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import chart_tools
    import render_children

    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "install.yaml"]
    shutil.copyfile(chart_tools.INSTALL, files[0])
    for name, args in CHART_VARIANTS.items():
        path = out_dir / f"{name}.yaml"
        path.write_text(chart_tools.template(*args))
        files.append(path)
    files += render_children.write(out_dir, sorted(render_children.SAMPLES.glob("*.yaml")))
    return files


# ---- running the scanners ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One failed check: ``obj`` is ``FILE:Kind/name`` (FILE the scanned file's name without .yaml)."""

    tool: str
    check: str
    obj: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.tool} {self.check} {self.obj}" + (f" ({self.detail})" if self.detail else "")


def _checkov_object(result: dict[str, Any]) -> str:
    # resource is Kind.namespace.name; for the pods of a workload (graph checks) the pod's labels follow
    # the name after a dot. The operator's and the chart's names contain no dots.
    kind, _namespace, rest = (result["resource"].split(".", 2) + ["", ""])[:3]
    return f"{Path(result['file_path']).stem}:{kind}/{rest.split('.')[0]}"


def run_checkov(directory: Path) -> list[Finding]:
    binary = checkov_bin()
    if not binary.is_file():
        raise ScannerError(f"checkov is not installed at {binary}: run `make scanners`")
    # --skip-download: no policy download and no platform calls; the checks are the pinned version's own.
    proc = subprocess.run([str(binary), "--directory", str(directory), "--framework", "kubernetes",
                           "--skip-download", "--output", "json"],
                          capture_output=True, text=True, timeout=600, cwd=directory)
    if proc.returncode not in (0, 1):
        raise ScannerError(f"checkov exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise ScannerError(f"checkov printed no JSON report:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}") from None
    reports = report if isinstance(report, list) else [report]
    findings = []
    for rep in reports:
        if rep.get("summary", {}).get("parsing_errors"):
            raise ScannerError(f"checkov could not parse: {rep['results'].get('parsing_errors')}")
        results = rep.get("results") or {}
        # Inline suppressions (checkov.io/skip annotations) count as failures: every exception lives in
        # scanners/exceptions.yaml, with its reason.
        for result in [*results.get("failed_checks", []), *results.get("skipped_checks", [])]:
            findings.append(Finding("checkov", result["check_id"], _checkov_object(result),
                                    result.get("check_name", "")))
    if not any(rep.get("summary", {}).get("resource_count") for rep in reports):
        raise ScannerError(f"checkov scanned no Kubernetes resources in {directory}")
    return findings


# kube-score grades: 1 critical, 5 warning, 7 almost OK, 10 OK. Warnings count as failures too.
KUBE_SCORE_FAILED = 5


def run_kube_score(files: list[Path]) -> list[Finding]:
    binary = kube_score_bin()
    if not binary.is_file():
        raise ScannerError(f"kube-score is not installed at {binary}: run `make scanners`")
    findings = []
    # One file per run: kube-score names a helm-rendered object's file after its `# Source:` template, and
    # the findings name the scanned file (as checkov's do).
    for path in files:
        # --disable-ignore-checks-annotations: a kube-score/ignore annotation never hides a check;
        # exceptions live in scanners/exceptions.yaml only.
        proc = subprocess.run([str(binary), "score", "--output-format", "json", "--kubernetes-version",
                               KUBERNETES_VERSION, "--disable-ignore-checks-annotations", str(path)],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode not in (0, 1):
            raise ScannerError(f"kube-score exited {proc.returncode} on {path.name}:\n{proc.stderr[-4000:]}")
        try:
            objects = json.loads(proc.stdout)
        except ValueError:
            raise ScannerError(f"kube-score printed no JSON report for {path.name}:\n{proc.stderr[-4000:]}") from None
        if not objects:
            raise ScannerError(f"kube-score scored no objects in {path.name}")
        for obj in objects:
            ident = f"{path.stem}:{obj['type_meta']['kind']}/{obj['object_meta']['name']}"
            for check in obj["checks"]:
                if check["skipped"] or check["grade"] > KUBE_SCORE_FAILED:
                    continue
                for comment in check.get("comments") or [{}]:
                    detail = ": ".join(x for x in (comment.get("path"), comment.get("summary")) if x)
                    findings.append(Finding("kube-score", check["check"]["id"], ident, detail))
    return findings


# ---- exceptions --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exception_:
    tool: str
    check: str
    objects: tuple[str, ...]  # globs over Finding.obj
    reason: str
    detail: str = ""  # when set, a substring the finding's detail must contain

    def matches(self, finding: Finding, pattern: str) -> bool:
        return (finding.tool == self.tool and finding.check == self.check
                and fnmatch.fnmatchcase(finding.obj, pattern) and self.detail in finding.detail)


def load_exceptions(path: Path = EXCEPTIONS) -> list[Exception_]:
    """scanners/exceptions.yaml; raises ValueError naming the entry that is malformed."""
    raw = yaml.safe_load(path.read_text()) or {}
    out = []
    for i, entry in enumerate(raw.get("exceptions") or []):
        where = f"{path.name} exception #{i + 1}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping with tool, check, objects and reason")
        unknown = set(entry) - {"tool", "check", "objects", "reason", "detail"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        if entry.get("tool") not in ("checkov", "kube-score"):
            raise ValueError(f"{where}: tool must be checkov or kube-score, got {entry.get('tool')!r}")
        objects = entry.get("objects")
        if not entry.get("check") or not isinstance(objects, list) or not objects:
            raise ValueError(f"{where}: check and a non-empty list of objects (FILE:Kind/name globs) are required")
        reason = str(entry.get("reason") or "").strip()
        if len(reason) < 20:
            raise ValueError(f"{where} ({entry['check']}): give a reason: why the check does not apply or what "
                             "would break")
        out.append(Exception_(entry["tool"], str(entry["check"]), tuple(map(str, objects)), reason,
                              str(entry.get("detail") or "")))
    return out


def compare(findings: list[Finding], exceptions: list[Exception_]) -> tuple[list[Finding], list[str]]:
    """(findings no exception covers, exception patterns that match no finding: stale)."""
    unexpected = [f for f in findings if not any(e.matches(f, p) for e in exceptions for p in e.objects)]
    stale = [f"{e.tool} {e.check} {p}" + (f" (detail {e.detail!r})" if e.detail else "")
             for e in exceptions for p in e.objects if not any(e.matches(f, p) for f in findings)]
    return unexpected, stale


def check(out_dir: Path | None = None) -> tuple[list[Finding], list[Finding], list[str]]:
    """Render, scan, compare: (all findings, unexpected, stale)."""
    if problems := missing():
        raise ScannerError(f"missing: {', '.join(problems)}; run `make scanners`")
    with tempfile.TemporaryDirectory(prefix="omendb-scan-") as tmp:
        directory = out_dir or Path(tmp)
        files = render(directory)
        findings = run_checkov(directory) + run_kube_score(files)
    unexpected, stale = compare(findings, load_exceptions())
    return findings, unexpected, stale


def report(unexpected: list[Finding], stale: list[str]) -> str:
    lines = []
    if unexpected:
        lines.append(f"{len(unexpected)} failed check(s) not in {EXCEPTIONS.relative_to(ROOT)}: fix the manifests "
                     "(the chart, or the operator's builders), or add an exception with its reason:")
        lines += [f"  {f}" for f in sorted(unexpected, key=str)]
    if stale:
        lines.append(f"{len(stale)} exception(s) in {EXCEPTIONS.relative_to(ROOT)} match nothing any more: "
                     "remove them:")
        lines += [f"  {s}" for s in stale]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else ""
    try:
        if cmd == "install":
            install_checkov()
            install_kube_score()
            print(f"scanners: checkov {checkov_bin()}, kube-score {kube_score_bin()}")
        elif cmd == "render" and len(argv) == 2:
            for path in render(Path(argv[1])):
                print(f"wrote {path}")
        elif cmd == "check":
            findings, unexpected, stale = check(Path(argv[1]) if len(argv) > 1 else None)
            if unexpected or stale:
                print(report(unexpected, stale), file=sys.stderr)
                return 1
            print(f"scanners: 0 failed checks outside {EXCEPTIONS.relative_to(ROOT)} ({len(findings)} findings, "
                  "each covered by an exception with its reason)")
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except ScannerError as exc:
        print(f"scanners: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

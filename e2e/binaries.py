"""Build the cluster's binaries from pinned Go modules into a cache keyed by the pins.

Each directory under e2e/go/ is a small wrapper module (committed go.mod and go.sum) whose `tool`
lines name the main packages to build. The cache directory's name is a hash of every wrapper's
go.mod and go.sum, the Go version and the build flags, so binaries are rebuilt only when a pin
changes. Builds run under `nice -n 19` (the machine is shared) with GOTOOLCHAIN=local (no toolchain
download) and print progress.

    python -m e2e.binaries build     # build what is missing, print the bin directory
    python -m e2e.binaries path      # print the bin directory (no build)
    python -m e2e.binaries objectstore-path   # print the object store's bin directory (no build)
    python -m e2e.binaries kstatus-path       # print the kstatus checker's bin directory (no build)
    python -m e2e.binaries cert-manager       # build cert-manager's controller, print its bin directory
    python -m e2e.binaries cert-manager-path  # print cert-manager's bin directory (no build)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent
GO_DIR = E2E_DIR / "go"
CACHE_ROOT = Path(os.environ.get("OMENDB_E2E_CACHE", Path.home() / ".cache" / "omendb-e2e"))

KUBERNETES_VERSION = "v1.33.13"
ETCD_VERSION = "v3.5.21"
COREDNS_VERSION = "v1.12.0"
HELM_VERSION = "v3.17.3"
PROMETHEUS_VERSION = "v0.303.1"  # Prometheus v3.3.1
# Bumped when this file changes how binaries are built, so old caches are not reused.
RECIPE = "2"


def _version_ldflags() -> str:
    """The version variables upstream's hack/lib/version.sh sets; helm and kubectl read them."""
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}", f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitCommit=0000000000000000000000000000000000000000",
            f"-X {pkg}.gitTreeState=clean", f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


@dataclass(frozen=True)
class Component:
    """One wrapper module under e2e/go/ and the binaries it produces."""

    module_dir: str
    packages: tuple[str, ...]
    ldflags: str = ""

    def binaries(self) -> list[str]:
        return [_binary_name(p) for p in self.packages]


def _binary_name(package: str) -> str:
    # `go build -o dir/` names a binary after the last path element that is not a major version.
    parts = [p for p in package.split("/") if not (p.startswith("v") and p[1:].isdigit())]
    return parts[-1]


COMPONENTS: tuple[Component, ...] = (
    Component(
        "kubernetes",
        tuple(f"k8s.io/kubernetes/cmd/{c}" for c in (
            "kube-apiserver", "kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl",
        )),
        _version_ldflags(),
    ),
    Component("etcd", ("go.etcd.io/etcd/server/v3",)),
    Component("coredns", ("omendb.dev/e2e/coredns",)),
    Component("helm", ("helm.sh/helm/v3/cmd/helm",),
              f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"),
    Component("promtool", ("github.com/prometheus/prometheus/cmd/promtool",),
              "-X github.com/prometheus/common/version.Version=3.3.1"),
)

# The object store for the backup tests (docs/e2e.md "The object store"). Kept apart from
# COMPONENTS, in its own cache directory keyed by its own pins, so that adding or bumping it never
# rebuilds Kubernetes (and the reverse).
OBJECTSTORE = Component("seaweedfs", ("github.com/seaweedfs/seaweedfs/weed",))

# The kstatus checker (e2e/go/kstatus: sigs.k8s.io/cli-utils' kstatus, the library behind Flux, Helm 4
# --wait and kpt) for tests/operator/test_kstatus.py and e2e/tests/test_kstatus.py: small, and kept
# apart like the object store so that bumping cli-utils rebuilds only it.
KSTATUS = Component("kstatus", ("omendb.dev/e2e/kstatus",))
# cert-manager's controller, for the issuerRef tests (docs/operations/tls.md), in its own cache
# directory keyed by its pins, like the object store. Its main package lives in a nested module
# (github.com/cert-manager/cert-manager/controller-binary, directory cmd/controller) that is never
# tagged on the module proxy: e2e/go/certmanager holds that module's four source files and go.mod
# copied from the pinned tag, with the main module taken from the proxy instead of `../../`.
CERT_MANAGER_VERSION = "v1.20.3"
CERT_MANAGER = Component(
    "certmanager", ("github.com/cert-manager/cert-manager/controller-binary",),
    f"-X github.com/cert-manager/cert-manager/pkg/util.AppVersion={CERT_MANAGER_VERSION}",
)

# `go build` names etcd's binary after its module path ("server"); it is renamed to etcd.
RENAMES = {"server": "etcd", "controller-binary": "cert-manager-controller"}


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false")
    return env


def _go_version() -> str:
    go = shutil.which("go")
    if go is None:
        raise SystemExit("`go` is not on PATH: the e2e harness builds Kubernetes from Go modules "
                         "(Go >= 1.24)")
    return subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout.strip()


def cache_key(components: tuple[Component, ...] = COMPONENTS) -> str:
    h = hashlib.sha256()
    h.update(RECIPE.encode())
    h.update(_go_version().encode())
    for comp in components:
        h.update(repr(comp).encode())
        for name in ("go.mod", "go.sum"):
            h.update((GO_DIR / comp.module_dir / name).read_bytes())
    return h.hexdigest()[:16]


def bin_dir() -> Path:
    return CACHE_ROOT / cache_key() / "bin"


def objectstore_bin_dir() -> Path:
    return CACHE_ROOT / f"objectstore-{cache_key((OBJECTSTORE,))}" / "bin"


def kstatus_bin_dir() -> Path:
    return CACHE_ROOT / f"kstatus-{cache_key((KSTATUS,))}" / "bin"


def cert_manager_bin_dir() -> Path:
    return CACHE_ROOT / f"cert-manager-{cache_key((CERT_MANAGER,))}" / "bin"


def cert_manager_crds_dir() -> Path:
    """cert-manager's own CRDs (deploy/crds/) from the pinned module's zip: nothing to keep in sync."""
    return module_dir("github.com/cert-manager/cert-manager", CERT_MANAGER_VERSION,
                      GO_DIR / CERT_MANAGER.module_dir) / "deploy" / "crds"


def build_cert_manager() -> Path:
    out = cert_manager_bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    _build_component(CERT_MANAGER, out)
    return out


def _final_name(name: str) -> str:
    return RENAMES.get(name, name)


def _build_component(comp: Component, out: Path) -> None:
    missing = [p for p in comp.packages if not (out / _final_name(_binary_name(p))).exists()]
    if not missing:
        return
    tmp = out.parent / f"tmp-{comp.module_dir}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        "nice", "-n", "19", "go", "build", "-v", "-trimpath",
        "-ldflags", f"-s -w {comp.ldflags}".strip(), "-o", f"{tmp}/", *missing,
    ]
    print(f"e2e.binaries: building {', '.join(_binary_name(p) for p in missing)} "
          f"from e2e/go/{comp.module_dir} (cold: tens of minutes on 2 cores)", flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=GO_DIR / comp.module_dir, env=go_env(), stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    tail: list[str] = []
    last = start
    for count, line in enumerate(proc.stderr, 1):
        tail = (tail + [line.rstrip()])[-40:]
        now = time.monotonic()
        if now - last > 30:
            print(f"e2e.binaries:   {comp.module_dir}: {count} packages compiled, {now - start:.0f}s",
                  flush=True)
            last = now
    if proc.wait() != 0:
        raise SystemExit(
            f"e2e.binaries: `go build` failed in e2e/go/{comp.module_dir}:\n" + "\n".join(tail)
        )
    for p in missing:
        name = _binary_name(p)
        os.replace(tmp / name, out / _final_name(name))
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"e2e.binaries: {comp.module_dir} built in {time.monotonic() - start:.0f}s", flush=True)


def _build_pause(out: Path) -> None:
    """The pause binary from the pinned Kubernetes module's own C source, linked statically."""
    if (out / "pause").exists():
        return
    k8s = module_dir("k8s.io/kubernetes", KUBERNETES_VERSION, GO_DIR / "kubernetes")
    src = k8s / "build/pause/linux/pause.c"
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("e2e.binaries: no C compiler to build the pause binary "
                         "(apt-get install gcc libc6-dev)")
    tmp = out / "pause.tmp"
    subprocess.run(
        [cc, "-Os", "-static", "-o", str(tmp), f"-DVERSION={KUBERNETES_VERSION}", str(src)], check=True
    )
    os.replace(tmp, out / "pause")


def module_dir(module: str, version: str, cwd: Path) -> Path:
    """Where the Go module cache holds `module@version` (downloading it if needed)."""
    res = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=cwd, env=go_env(), capture_output=True, text=True,
    )
    import json

    info = json.loads(res.stdout or "{}")
    if res.returncode != 0 or "Dir" not in info:
        raise SystemExit(f"e2e.binaries: cannot download {module}@{version}: {info.get('Error', res.stderr)}")
    return Path(info["Dir"])


def build() -> Path:
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    for comp in COMPONENTS:
        _build_component(comp, out)
    _build_pause(out)
    store_out = objectstore_bin_dir()
    store_out.mkdir(parents=True, exist_ok=True)
    _build_component(OBJECTSTORE, store_out)
    kstatus_out = kstatus_bin_dir()
    kstatus_out.mkdir(parents=True, exist_ok=True)
    _build_component(KSTATUS, kstatus_out)
    build_cert_manager()
    elapsed = time.monotonic() - start
    if elapsed > 1:
        print(f"e2e.binaries: all binaries ready in {elapsed:.0f}s", flush=True)
    return out


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "build"
    if cmd == "build":
        print(build())
    elif cmd == "path":
        print(bin_dir())
    elif cmd == "objectstore-path":
        print(objectstore_bin_dir())
    elif cmd == "kstatus-path":
        print(kstatus_bin_dir())
    elif cmd == "cert-manager":
        print(build_cert_manager())
    elif cmd == "cert-manager-path":
        print(cert_manager_bin_dir())
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

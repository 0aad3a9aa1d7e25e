"""Build this project's container images without Docker: `python -m e2e.images build`.

The engine image (`omendb/omendb:0.1.0`) and the operator image (`omendb/omendb-operator:0.1.0`)
are three layers each, each cached by a hash of its inputs:

1. base  — a minimal Debian bookworm root filesystem from `debootstrap --variant=minbase` with
           python3, plus the non-root user `omendb` (uid/gid 10001) and the engine's directories
           (shared by both images);
2. deps  — a virtualenv at /opt/omendb with runtime dependencies at the versions pinned in
           requirements.lock (installed offline from a wheelhouse): for the engine, the base
           dependencies and the `server` and `operator` extras; for the operator, only the
           `operator` extra (no numpy, numba or llvmlite: the operator never imports the engine's
           database, and tests/packaging/test_operator_image.py keeps it so);
3. app   — the project's wheel (`pip wheel --no-deps .`), keyed by a hash of the source tree, so a
           code change rebuilds only this small layer.

Layers 2 and 3 are made by running pip in a chroot over an overlayfs mount of the layers below, so
each layer tar is exactly the overlay's upper directory. The cluster's own images (the pause image
built from Kubernetes' pause.c and CoreDNS) are single-file layers. Every image is written as an OCI
image-layout tarball under the cache and, when the cluster is up, imported into containerd's
`k8s.io` namespace. images/engine/Dockerfile and images/operator/Dockerfile describe the same images
for real clusters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e import binaries, host, oci, procs
from e2e import layout as L

REPO = Path(__file__).resolve().parent.parent
IMAGES_CACHE = binaries.CACHE_ROOT / "images"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "tzdata")
UID = 10001
VENV = "/opt/omendb"
ENGINE_IMAGE = "omendb/omendb:0.1.0"
OPERATOR_IMAGE = "omendb/omendb-operator:0.1.0"
# The same engine under a second release tag, so an upgrade journey changes spec.version for real
# (e2e/tests/test_upgrade.py): same layers, only the image name and version label differ.
ENGINE_NEXT_IMAGE = "omendb/omendb:0.1.1"
COREDNS_IMAGE = f"omendb-e2e/coredns:{binaries.COREDNS_VERSION}"
# Bumped when the recipe of a layer changes.
RECIPE = "1"

# Shared with images/engine/Dockerfile, so both builds ship the same default configuration.
DEFAULT_ENGINE_CONFIG = (REPO / "images" / "engine" / "omendb.toml").read_bytes()


def _h(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _log(msg: str) -> None:
    print(f"e2e.images: {msg}", flush=True)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (debootstrap fetches from the same one)."""
    candidates: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:"):
                candidates += line.split()[1:]
    sl = Path("/etc/apt/sources.list")
    if sl.exists():
        for line in sl.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb":
                candidates.append(next(p for p in parts[1:] if not p.startswith("[")))
    for uri in candidates:
        if "security" not in uri:
            return uri.rstrip("/")
    raise SystemExit("e2e.images: no Debian mirror found in /etc/apt/sources.list(.d); debootstrap needs one")


# ---------------------------------------------------------------- overlay helper


class Overlay:
    """An overlayfs mount of `lowers` (top first) with a fresh upper dir, for a chroot step."""

    def __init__(self, lowers: list[Path], work_root: Path) -> None:
        self.lowers = lowers
        self.root = work_root
        self.upper = work_root / "upper"
        self.work = work_root / "work"
        self.merged = work_root / "merged"

    def __enter__(self) -> Overlay:
        shutil.rmtree(self.root, ignore_errors=True)
        for d in (self.upper, self.work, self.merged):
            d.mkdir(parents=True)
        opts = f"lowerdir={':'.join(str(p) for p in self.lowers)},upperdir={self.upper},workdir={self.work}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(self.merged)], check=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", str(self.merged)], check=False)
        shutil.rmtree(self.work, ignore_errors=True)


def _chroot(root: Path, *argv: str) -> None:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    res = subprocess.run([shutil.which("chroot") or "/usr/sbin/chroot", str(root), *argv], env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"e2e.images: `{' '.join(argv)}` in the image failed:\n"
                         f"{res.stdout[-3000:]}{res.stderr[-3000:]}")


# ---------------------------------------------------------------- layers


@dataclass(frozen=True)
class BuiltLayer:
    layer: oci.Layer
    tree: Path  # the directory the layer was made from (a lower dir for the next step)


def _layer_cached(key: str, tree: Path) -> BuiltLayer | None:
    tar = IMAGES_CACHE / "layers" / f"{key}.tar"
    meta = IMAGES_CACHE / "layers" / f"{key}.json"
    if tar.exists() and meta.exists() and tree.exists():
        m = json.loads(meta.read_text())
        return BuiltLayer(oci.Layer(tar, m["digest"], m["size"]), tree)
    return None


def _store_layer(key: str, tree: Path, excludes: tuple[str, ...] = ()) -> BuiltLayer:
    d = IMAGES_CACHE / "layers"
    d.mkdir(parents=True, exist_ok=True)
    layer = oci.layer_from_dir(tree, d / f"{key}.tar", excludes)
    (d / f"{key}.json").write_text(json.dumps({"digest": layer.digest, "size": layer.size}))
    return BuiltLayer(layer, tree)


def base_layer() -> BuiltLayer:
    key = "base-" + _h(RECIPE, SUITE, *BASE_PACKAGES, str(UID), DEFAULT_ENGINE_CONFIG)
    tree = IMAGES_CACHE / "trees" / key
    cached = _layer_cached(key, tree)
    if cached:
        return cached
    _log(f"debootstrap {SUITE} (minbase + {', '.join(BASE_PACKAGES)}); about a minute")
    t0 = time.monotonic()
    tmp = tree.with_name(tree.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(tmp),
         debian_mirror()],
        capture_output=True, text=True,
    )
    if res.returncode != 0:
        raise SystemExit(f"e2e.images: debootstrap failed:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
    # Trim what a container never uses; the resolver config comes from the kubelet at run time.
    for rel in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                "usr/share/info", "usr/share/locale", "var/log"):
        p = tmp / rel
        if p.is_dir():
            for child in p.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    (tmp / "etc/resolv.conf").write_text("")
    (tmp / "etc/hostname").write_text("omendb\n")
    with open(tmp / "etc/passwd", "a") as f:
        f.write(f"omendb:x:{UID}:{UID}:OmenDB:/var/lib/omendb:/usr/sbin/nologin\n")
    with open(tmp / "etc/group", "a") as f:
        f.write(f"omendb:x:{UID}:\n")
    for d in ("var/lib/omendb/data", "var/lib/omendb/wal", "etc/omendb", "var/lib/omendb/backups"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    for d in ("var/lib/omendb", "var/lib/omendb/data", "var/lib/omendb/wal", "var/lib/omendb/backups"):
        os.chown(tmp / d, UID, UID)
    (tmp / "etc/omendb/omendb.toml").write_bytes(DEFAULT_ENGINE_CONFIG)
    shutil.rmtree(tree, ignore_errors=True)
    tmp.rename(tree)
    built = _store_layer(key, tree)
    _log(f"base layer {built.layer.size >> 20} MiB in {time.monotonic() - t0:.0f}s")
    return built


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project


def runtime_requirements() -> list[str]:
    """Direct runtime dependencies of the engine image (base + server + operator extras). A package
    listed in two extras is listed once, so the engine's deps layer key does not depend on that."""
    project = _project()
    reqs = list(project["dependencies"])
    for extra in ("server", "operator"):
        reqs += [r for r in project["optional-dependencies"][extra] if r not in reqs]
    return reqs


def operator_requirements() -> list[str]:
    """Direct runtime dependencies of the operator image: the `operator` extra, which lists every
    third-party package `omendb_operator.main` imports (and nothing of the engine's numpy/numba)."""
    return list(_project()["optional-dependencies"]["operator"])


def deps_layer(base: BuiltLayer, reqs: list[str], prefix: str = "deps-") -> BuiltLayer:
    lock = (REPO / "requirements.lock").read_bytes()
    key = prefix + _h(RECIPE, base.layer.digest, lock, *reqs)
    tree = IMAGES_CACHE / "trees" / key
    cached = _layer_cached(key, tree)
    if cached:
        return cached
    t0 = time.monotonic()
    wheels = IMAGES_CACHE / "wheelhouse"
    wheels.mkdir(parents=True, exist_ok=True)
    _log("downloading pinned runtime wheels (requirements.lock)")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux2014_x86_64",
         "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
         "-c", str(REPO / "requirements.lock"), "-d", str(wheels), *reqs],
        check=True,
    )
    work = IMAGES_CACHE / "work" / key
    with Overlay([base.tree], work) as ov:
        (ov.merged / "tmp/wheels").mkdir(parents=True)
        for whl in wheels.glob("*.whl"):
            shutil.copy2(whl, ov.merged / "tmp/wheels")
        shutil.copy2(REPO / "requirements.lock", ov.merged / "tmp/wheels/constraints.txt")
        _log("installing runtime dependencies into the image's virtualenv")
        _chroot(ov.merged, "/usr/bin/python3", "-m", "venv", VENV)
        _chroot(ov.merged, f"{VENV}/bin/pip", "install", "--quiet", "--no-index", "--no-cache-dir",
                "--find-links", "/tmp/wheels", "-c", "/tmp/wheels/constraints.txt", *reqs)
        shutil.rmtree(ov.merged / "tmp/wheels")
    shutil.rmtree(tree, ignore_errors=True)
    ov.upper.rename(tree)
    shutil.rmtree(work, ignore_errors=True)
    built = _store_layer(key, tree, excludes=("tmp", "root/.cache"))
    _log(f"deps layer {built.layer.size >> 20} MiB in {time.monotonic() - t0:.0f}s")
    return built


def source_hash() -> str:
    """A hash of everything that goes into the project's wheel."""
    h = hashlib.sha256()
    h.update((REPO / "pyproject.toml").read_bytes())
    for top in ("engine", "operator"):
        for path in sorted((REPO / top).rglob("*")):
            if "__pycache__" in path.parts or not path.is_file() or path.suffix == ".pyc":
                continue
            h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def app_layer(base: BuiltLayer, deps: BuiltLayer, prefix: str = "app-") -> BuiltLayer:
    key = prefix + _h(RECIPE, deps.layer.digest, source_hash())
    tree = IMAGES_CACHE / "trees" / key
    cached = _layer_cached(key, tree)
    if cached:
        return cached
    t0 = time.monotonic()
    wheel_dir = IMAGES_CACHE / "work" / f"wheel-{key}"
    shutil.rmtree(wheel_dir, ignore_errors=True)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "-w", str(wheel_dir), str(REPO)],
        capture_output=True, text=True,
    )
    if res.returncode != 0:
        raise SystemExit(f"e2e.images: building the project's wheel failed:\n{res.stderr[-3000:]}")
    wheel = next(wheel_dir.glob("*.whl"))
    work = IMAGES_CACHE / "work" / key
    with Overlay([deps.tree, base.tree], work) as ov:
        (ov.merged / "tmp/app").mkdir(parents=True)
        shutil.copy2(wheel, ov.merged / "tmp/app")
        _chroot(ov.merged, f"{VENV}/bin/pip", "install", "--quiet", "--no-index", "--no-deps",
                "--no-cache-dir", f"/tmp/app/{wheel.name}")
        shutil.rmtree(ov.merged / "tmp/app")
    # Old app layers are never reused once the source changed: keep the cache small (the other
    # image's app layer has another prefix and stays).
    for old in (IMAGES_CACHE / "trees").glob(f"{prefix}*"):
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tree, ignore_errors=True)
    ov.upper.rename(tree)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(wheel_dir, ignore_errors=True)
    built = _store_layer(key, tree, excludes=("tmp", "root/.cache"))
    _log(f"app layer ({wheel.name}) {built.layer.size >> 10} KiB in {time.monotonic() - t0:.1f}s")
    return built


# ---------------------------------------------------------------- images


def _out(name: str) -> Path:
    d = IMAGES_CACHE / "out"
    d.mkdir(parents=True, exist_ok=True)
    return d / (name.replace("/", "_").replace(":", "_") + ".tar")


def _venv_env() -> list[str]:
    return [f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"VIRTUAL_ENV={VENV}", "PYTHONUNBUFFERED=1", "LANG=C.UTF-8"]


def project_images() -> list[Path]:
    base = base_layer()
    deps = deps_layer(base, runtime_requirements())
    app = app_layer(base, deps)
    layers = [base.layer, deps.layer, app.layer]
    engines = []
    for ref in (ENGINE_IMAGE, ENGINE_NEXT_IMAGE):
        engine = _out(ref)
        oci.write_image(engine, ref, layers, oci.ImageConfig(
            entrypoint=[f"{VENV}/bin/omendb"], cmd=["serve", "--config", "/etc/omendb/omendb.toml"],
            env=_venv_env(), user=f"{UID}:{UID}", workdir="/var/lib/omendb",
            exposed_ports=["3000/tcp", "9090/tcp"], volumes=["/var/lib/omendb/data", "/var/lib/omendb/wal"],
            labels={"org.opencontainers.image.title": "omendb",
                    "org.opencontainers.image.version": ref.rsplit(":", 1)[1]},
        ))
        engines.append(engine)
    return [engines[0], operator_image(base), engines[1]]


def operator_image(base: BuiltLayer) -> Path:
    """The operator's image: the shared base, then its own slim deps and app layers."""
    deps = deps_layer(base, operator_requirements(), prefix="operator-deps-")
    app = app_layer(base, deps, prefix="operator-app-")
    operator = _out(OPERATOR_IMAGE)
    oci.write_image(operator, OPERATOR_IMAGE, [base.layer, deps.layer, app.layer], oci.ImageConfig(
        entrypoint=[f"{VENV}/bin/omendb-operator"], env=_venv_env(), user=f"{UID}:{UID}",
        labels={"org.opencontainers.image.title": "omendb-operator",
                "org.opencontainers.image.version": "0.1.0"},
    ))
    return operator


def _single_binary_image(ref: str, binary: Path, name: str, config: oci.ImageConfig) -> Path:
    out = _out(ref)
    key = _h(RECIPE, ref, oci.sha256_file(binary))
    stamp = out.with_suffix(".key")
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return out
    layers_dir = IMAGES_CACHE / "layers"
    layers_dir.mkdir(parents=True, exist_ok=True)
    layer = oci.layer_from_files({name: (binary.read_bytes(), 0o755)}, layers_dir / f"{name}-{key}.tar")
    oci.write_image(out, ref, [layer], config)
    stamp.write_text(key)
    return out


def cluster_images(bin_dir: Path) -> list[Path]:
    """The images the cluster itself needs: the pause (sandbox) image and CoreDNS."""
    pause = _single_binary_image(L.SANDBOX_IMAGE, bin_dir / "pause", "pause",
                                 oci.ImageConfig(entrypoint=["/pause"], user="65535:65535"))
    images = [pause]
    if (bin_dir / "coredns").exists():
        images.append(_single_binary_image(COREDNS_IMAGE, bin_dir / "coredns", "coredns",
                                           oci.ImageConfig(entrypoint=["/coredns"])))
    return images


def load(tarballs: list[Path], state_dir: Path) -> None:
    """Import image tarballs into the running cluster's containerd (namespace k8s.io)."""
    from e2e.containerd import ctr, import_image
    from e2e.layout import Layout

    lay = Layout(state_dir)
    if not lay.containerd_socket.exists():
        raise SystemExit(f"e2e.images: the cluster is not up (no {lay.containerd_socket}); "
                         "run `python -m e2e.cluster up` first, or build without --load")
    # Every node's containerd: a pod may land on any node. A stopped node gets them when it is up again.
    for node in lay.nodes():
        if procs.alive(node.component("containerd"), lay.pids) is None:
            _log(f"{node.name}: containerd not running, images not loaded there")
            continue
        listed = subprocess.run(ctr(node, "images", "ls"), capture_output=True, text=True, check=True).stdout
        present = {tuple(line.split()[:3:2]) for line in listed.splitlines()[1:] if line.strip()}
        for t in tarballs:
            stamp = t.with_suffix(".digest")
            if stamp.exists() and tuple(stamp.read_text().split()) in present:
                continue  # containerd already has this exact image under this name
            t0 = time.monotonic()
            import_image(node, t)
            _log(f"loaded {t.name} into {node.name}'s containerd in {time.monotonic() - t0:.1f}s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m e2e.images", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["build"])
    ap.add_argument("--no-load", action="store_true", help="only write the tarballs")
    ap.add_argument("--state-dir", type=Path, default=L.default_state_dir())
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("e2e.images: building images needs root (debootstrap, chroot, overlay mounts)")
    # A fresh machine has no debootstrap: `make test` builds the images before any cluster starts.
    host.ensure_packages()
    t0 = time.monotonic()
    tarballs = project_images()
    for t in tarballs:
        _log(f"wrote {t} ({t.stat().st_size >> 20} MiB)")
    _log(f"images ready in {time.monotonic() - t0:.1f}s")
    if not args.no_load:
        from e2e.layout import Layout

        if Layout(args.state_dir).containerd_socket.exists():
            load(tarballs, args.state_dir)
        else:
            _log("cluster not up: images not loaded (`python -m e2e.cluster up` loads them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

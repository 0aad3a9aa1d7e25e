"""Write OCI image-layout tarballs from layer tars and an image config (no Docker, no registry).

A layer is an uncompressed tar (media type `application/vnd.oci.image.layer.v1.tar`): the images
are only ever loaded into a local containerd, so compression would cost time and save nothing.
Layer tars are made with GNU tar (sorted names, numeric owners, real mtimes so the byte-compiled
Python files stay valid); each layer is cached by a hash of its inputs, not by its bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

LAYER_MEDIA = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class Layer:
    path: Path
    digest: str  # "sha256:..." of the uncompressed tar (also its diff_id)
    size: int


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def layer_from_dir(src: Path, out: Path, excludes: tuple[str, ...] = ()) -> Layer:
    """Tar the contents of `src` (paths relative to it) reproducibly into `out`."""
    tmp = out.with_suffix(".partial")
    cmd = ["tar", "--create", "--file", str(tmp), "--directory", str(src), "--sort=name",
           "--numeric-owner"]
    for ex in excludes:
        cmd.append(f"--exclude=./{ex}")
    cmd.append(".")
    subprocess.run(cmd, check=True)
    tmp.replace(out)
    return Layer(out, sha256_file(out), out.stat().st_size)


def layer_from_files(files: dict[str, tuple[bytes, int]], out: Path) -> Layer:
    """A small layer from in-memory files: {path: (content, mode)}; parent dirs are added."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for name in sorted(files):
            parts = name.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            data, mode = files[name]
            info = tarfile.TarInfo(name.strip("/"))
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    out.write_bytes(buf.getvalue())
    return Layer(out, sha256_file(out), out.stat().st_size)


@dataclass
class ImageConfig:
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)
    user: str = ""
    workdir: str = ""
    exposed_ports: list[str] = field(default_factory=list)  # e.g. "3000/tcp"
    volumes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self, layers: list[Layer]) -> bytes:
        default_path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        cfg: dict[str, object] = {"Env": self.env or [default_path]}
        if self.entrypoint is not None:
            cfg["Entrypoint"] = self.entrypoint
        if self.cmd is not None:
            cfg["Cmd"] = self.cmd
        if self.user:
            cfg["User"] = self.user
        if self.workdir:
            cfg["WorkingDir"] = self.workdir
        if self.exposed_ports:
            cfg["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.volumes:
            cfg["Volumes"] = {v: {} for v in self.volumes}
        if self.labels:
            cfg["Labels"] = self.labels
        doc = {
            "created": "1970-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"e2e.images layer {i}"}
                        for i in range(len(layers))],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def normalize_ref(name: str) -> str:
    """What containerd's CRI calls an image: `omendb/omendb:0.1.0` is `docker.io/omendb/omendb:0.1.0`."""
    first = name.split("/", 1)[0]
    if "/" not in name:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def write_image(out: Path, ref: str, layers: list[Layer], config: ImageConfig) -> str:
    """Write an OCI image-layout tarball holding one image named `ref`; return the manifest digest."""
    cfg = config.to_json(layers)
    cfg_digest = "sha256:" + hashlib.sha256(cfg).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA,
        "config": {"mediaType": CONFIG_MEDIA, "digest": cfg_digest, "size": len(cfg)},
        "layers": [{"mediaType": LAYER_MEDIA, "digest": layer.digest, "size": layer.size}
                   for layer in layers],
    }, sort_keys=True, separators=(",", ":")).encode()
    man_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    full = normalize_ref(ref)
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA, "digest": man_digest, "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                # containerd names the imported image from this annotation.
                "io.containerd.image.name": full,
                "org.opencontainers.image.ref.name": full.rsplit(":", 1)[1],
            },
        }],
    }, sort_keys=True, separators=(",", ":")).encode()
    # The tarball is rewritten only when its content (named by the manifest digest) changed.
    stamp = out.with_suffix(".digest")
    if out.exists() and stamp.exists() and stamp.read_text() == f"{full} {man_digest}":
        return man_digest
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        def add_bytes(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))

        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", index)
        add_bytes(f"blobs/sha256/{cfg_digest.split(':')[1]}", cfg)
        add_bytes(f"blobs/sha256/{man_digest.split(':')[1]}", manifest)
        seen = set()
        for layer in layers:
            if layer.digest in seen:
                continue
            seen.add(layer.digest)
            tar.add(str(layer.path), arcname=f"blobs/sha256/{layer.digest.split(':')[1]}")
    tmp.replace(out)
    stamp.write_text(f"{full} {man_digest}")
    return man_digest

"""The local cluster's containerd, through its `ctr` client: the one place both the cluster (which starts
it and loads the images it needs) and the image builder (which loads rebuilt images) talk to it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from e2e.layout import Layout, Node


def ctr(lay: Layout | Node, *args: str) -> list[str]:
    """`ctr` against node 1's containerd (a Layout) or a given node's."""
    return ["ctr", f"--address={lay.containerd_socket}", "--namespace=k8s.io", *args]


def import_image(lay: Layout | Node, tarball: Path) -> None:
    res = subprocess.run(ctr(lay, "images", "import", "--no-unpack", str(tarball)), capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise RuntimeError(f"`ctr images import {tarball}` failed ({res.returncode}): {res.stderr.strip()}")

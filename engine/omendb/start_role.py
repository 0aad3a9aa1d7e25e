"""A server's replication role at start, from a file naming the primary (how the operator runs pods).

Every pod of an OmenDB shares one omendb.toml; which pod is the primary lives in a separate one-line file
(a key of the projected ConfigMap, rewritten by the operator after a failover). At start, a server whose
name is in that file runs as the primary; every other one runs as a replica of the named pod, at the URL
``--primary-url-template`` makes of its name. Moving the primary therefore changes a file, never the pod
template, so a failover restarts no pod.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from omendb.config import Config
from omendb.errors import ConfigError

POD_PLACEHOLDER = "{pod}"
# A pod name is a DNS label (RFC 1123); anything else in the file is refused rather than put in a URL.
_POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def read_primary_pod(path: str | Path) -> str:
    """The pod name in ``path`` (one line), checked to be a DNS label."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--primary-pod-file {path}: cannot read it ({exc.strerror})") from None
    if not _POD_NAME.match(text):
        raise ConfigError(f"--primary-pod-file {path} must hold one pod name (a DNS label such as "
                          f"omendb-0), found {text[:100]!r}")
    return text


def own_name(explicit: str | None = None) -> str:
    """This server's pod name: --pod-name, else $POD_NAME, else the host name (a pod's host name)."""
    return explicit or os.environ.get("POD_NAME") or socket.gethostname()


def resolve(config: Config, primary_pod: str, pod_name: str, url_template: str) -> Config:
    """The configuration this server starts with: the primary if it is ``primary_pod``, else a replica of
    ``url_template`` with ``{pod}`` replaced by ``primary_pod``; a replica names itself ``pod_name``
    unless [replication] replica_id is set."""
    if pod_name == primary_pod:
        config = config.replace("replication", role="primary", primary_url="")
    else:
        if POD_PLACEHOLDER not in url_template:
            raise ConfigError(f"--primary-url-template {url_template!r} must contain {POD_PLACEHOLDER}, e.g. "
                              f"https://{POD_PLACEHOLDER}.omendb-headless.default.svc:3000")
        changes = {"role": "replica", "primary_url": url_template.replace(POD_PLACEHOLDER, primary_pod)}
        if not config.replication.replica_id:
            changes["replica_id"] = pod_name
        config = config.replace("replication", **changes)
    config.check_consistency("configuration after --primary-pod-file")
    return config

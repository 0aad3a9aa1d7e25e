"""``GET /health`` of one database pod, straight to its pod IP: the rollout moves on only when the pod
just replaced is Ready (its readiness probe, seen by the kubelet) and answers the guide's health check
here too. No credentials are sent (/health needs none); with TLS the server certificate is checked
against the cluster's CA, not its name (the certificate names DNS names, the probe dials an IP)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any

import httpx

from omendb_operator import labels as L
from omendb_operator.controller.kube import Kube
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs.secrets import decode_secret_data
from omendb_operator.specs.statefulset import tls_secret_name

log = logging.getLogger(__name__)


class PodHealth:
    """``port``: the API port of every pod, or a function of the pod's name giving it (tests run one engine
    per pod on loopback, all at the same IP, so each is told apart by its port)."""

    def __init__(self, kube: Kube, port: int | Callable[[str], int] = L.API_PORT, timeout: float = 3.0) -> None:
        self.kube = kube
        self.port = port
        self.timeout = timeout

    def _port(self, pod: str) -> int:
        return self.port(pod) if callable(self.port) else self.port

    def _verify(self, name: str, namespace: str, spec: OmenDBSpec) -> ssl.SSLContext | bool:
        if not spec.tls.enabled:
            return False
        secret = L.Names(name).ca if spec.tls.generate else tls_secret_name(name, spec)
        ca = decode_secret_data(self.kube.get("v1", "Secret", secret, namespace)).get("ca.crt")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        if ca:
            ctx.load_verify_locations(cadata=ca)
        else:  # a user certificate without ca.crt: nothing to check it against; /health carries no secret
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def __call__(self, pod: dict[str, Any], name: str, spec: OmenDBSpec) -> bool | None:
        """True when /health answers 200, False when the pod answers otherwise (or fails TLS), None when
        nothing answers at the pod's IP at all (no route from where the operator runs)."""
        ip = (pod.get("status") or {}).get("podIP")
        namespace = pod["metadata"]["namespace"]
        if not ip:
            return False
        host = f"[{ip}]" if ":" in ip else ip
        scheme = "https" if spec.tls.enabled else "http"
        try:
            verify = self._verify(name, namespace, spec)
            port = self._port(pod["metadata"]["name"])
            r = httpx.get(f"{scheme}://{host}:{port}/health", verify=verify, timeout=self.timeout)
        except (httpx.ConnectTimeout, httpx.ConnectError) as exc:
            if "refused" in str(exc).lower():  # the pod answered: nothing listens, it is not healthy
                log.info("health check of pod %s/%s refused: %s", namespace, pod["metadata"]["name"], exc)
                return False
            log.warning("pod %s/%s is not reachable at %s: %s", namespace, pod["metadata"]["name"], ip, exc)
            return None
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            log.info("health check of pod %s/%s failed: %s", namespace, pod["metadata"]["name"], exc)
            return False
        return r.status_code == 200

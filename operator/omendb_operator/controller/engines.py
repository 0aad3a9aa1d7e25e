"""The operator's HTTP clients of the engines: GET /v1/stats, POST /admin/promote and /admin/follow as the
generated admin user (Engines), GET /health of one pod at its IP (PodHealth), and the primary's stats
through its Service (fetch_stats). controller/observe.py asks, controller/act.py acts; nothing else calls
the engines.

PodHealth: the rollout moves on only when the pod just replaced is Ready (its readiness probe, seen by the
kubelet) and answers the guide's health check here too. No credentials are sent (/health needs none);
with TLS the server certificate is checked against the cluster's CA, not its name (the certificate names
DNS names, the probe dials an IP).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from omendb_operator import labels as L
from omendb_operator.plans import topology as T
from omendb_operator.plans.failover import peer_url
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs.secrets import PASSWORD_KEY, USERNAME_KEY, decode_secret_data
from omendb_operator.specs.statefulset import tls_secret_name

log = logging.getLogger(__name__)

STATS_TIMEOUT = 3.0
HEARTBEAT_TIMEOUT = 1.0
CONNECT_TIMEOUT = 1.5
ACTION_TIMEOUT = 60.0  # promote/follow stop a follower first (one long poll at most)


class Reader(Protocol):
    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None: ...


def _ca_secret(name: str, spec: OmenDBSpec) -> str:
    return L.Names(name).ca if spec.tls.generate else tls_secret_name(name, spec)


def admin_auth(reader: Reader, name: str, namespace: str, spec: OmenDBSpec) -> tuple[str, str] | None:
    """NAME-users' admin user and password, when auth is on."""
    if not spec.auth.enabled:
        return None
    users = decode_secret_data(reader.get("v1", "Secret", L.Names(name).users, namespace))
    return (users[USERNAME_KEY], users.get(PASSWORD_KEY, "")) if users.get(USERNAME_KEY) else None


def ca_context(reader: Reader, name: str, namespace: str, spec: OmenDBSpec) -> ssl.SSLContext | None:
    """Trust for the pods' certificates: NAME-ca (or the user's ca.crt); None without TLS or a CA."""
    if not spec.tls.enabled:
        return None
    ca = decode_secret_data(reader.get("v1", "Secret", _ca_secret(name, spec), namespace)).get("ca.crt")
    return ssl.create_default_context(cadata=ca) if ca else None


class Engines:
    """HTTP access to the engines of one OmenDB, as its admin user. ``url_for`` is where the operator
    reaches a pod (its DNS name in the cluster; a loopback address in tests); ``peer_url_for`` is what
    pods are told to follow."""

    def __init__(self, url_for: Callable[[str], str], peer_url_for: Callable[[str], str],
                 auth: tuple[str, str] | None, verify: Any = True) -> None:
        self.url_for, self.peer_url_for = url_for, peer_url_for
        self.auth, self.verify = auth, verify

    def _client(self, pod: str, timeout: float) -> httpx.Client:
        # A short connect timeout: a pod on a cut-off node drops the SYN, and every pass of a failover asks
        # every pod (a connect within the cluster takes milliseconds; the first SYN retry comes at 1 s).
        return httpx.Client(base_url=self.url_for(pod), auth=self.auth, verify=self.verify,
                            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)))

    def stats(self, pod: str) -> T.Engine:
        with self._client(pod, STATS_TIMEOUT) as client:
            r = client.get("/v1/stats")
            r.raise_for_status()
            body = r.json()
        rep = body.get("replication") or {}
        return T.Engine(role=str(body.get("role", T.PRIMARY)), lsn=int(body.get("lsn") or 0),
                        term=int(body.get("term") or 0), primary=body.get("primary"),
                        lag_seconds=rep.get("lag_seconds"), lag_lsn=rep.get("lag_lsn"),
                        wal_archive=body.get("wal_archive"),
                        primary_contact_age=rep.get("primary_contact_age_seconds"),
                        primary_silent=rep.get("primary_silent_seconds"))

    def heartbeat(self, pod: str) -> dict[str, Any]:
        """The heartbeat the pod held for the primary gets every second (controller/heartbeat.py); it keeps
        that pod from fencing itself while the operator reaches it (the engine's server/fencing.py)."""
        with self._client(pod, HEARTBEAT_TIMEOUT) as client:
            r = client.get("/admin/replication/heartbeat")
            r.raise_for_status()
            result: dict[str, Any] = r.json()
            return result

    def _post(self, pod: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._client(pod, ACTION_TIMEOUT) as client:
            r = client.post(path, json=body)
            if r.status_code >= 400:
                raise RuntimeError(f"POST {path} on {pod}: {r.status_code} {r.text[:300]}")
            result: dict[str, Any] = r.json()
            return result

    def promote(self, pod: str) -> dict[str, Any]:
        return self._post(pod, "/admin/promote")

    def follow(self, pod: str, primary: str) -> dict[str, Any]:
        return self._post(pod, "/admin/follow", {"primary_url": self.peer_url_for(primary)})


def cluster_engines(reader: Reader, name: str, namespace: str, spec: OmenDBSpec) -> Engines:
    """Engines reached in the cluster: pod DNS names, NAME-users' admin, the CA the pods are told to trust."""
    def url(pod: str) -> str:
        return peer_url(name, namespace, spec.tls.enabled, pod)

    return Engines(url, url, admin_auth(reader, name, namespace, spec),
                   ca_context(reader, name, namespace, spec) or True)


EnginesFactory = Callable[[Reader, str, str, OmenDBSpec], Engines]


def fetch_stats(reader: Reader, name: str, namespace: str, spec: OmenDBSpec) -> dict[str, Any]:
    """GET /v1/stats of the primary through its Service, as the generated admin user, trusting NAME-ca (or
    the user's CA)."""
    scheme = "https" if spec.tls.enabled else "http"
    url = f"{scheme}://{L.Names(name).primary_service}.{namespace}.svc:{L.API_PORT}/v1/stats"
    verify: ssl.SSLContext | bool = True
    if spec.tls.enabled:
        verify = ca_context(reader, name, namespace, spec) or ssl.create_default_context()
    response = httpx.get(url, auth=admin_auth(reader, name, namespace, spec), verify=verify, timeout=10.0)
    response.raise_for_status()
    value = response.json()
    if not isinstance(value, dict):
        raise ValueError(f"{url} answered {value!r}")
    return value


class PodHealth:
    """``port``: the API port of every pod, or a function of the pod's name giving it (tests run one engine
    per pod on loopback, all at the same IP, so each is told apart by its port)."""

    def __init__(self, port: int | Callable[[str], int] = L.API_PORT, timeout: float = 3.0) -> None:
        self.port = port
        self.timeout = timeout

    def _port(self, pod: str) -> int:
        return self.port(pod) if callable(self.port) else self.port

    def _verify(self, reader: Reader, name: str, namespace: str, spec: OmenDBSpec) -> ssl.SSLContext | bool:
        if not spec.tls.enabled:
            return False
        ca = decode_secret_data(reader.get("v1", "Secret", _ca_secret(name, spec), namespace)).get("ca.crt")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        if ca:
            ctx.load_verify_locations(cadata=ca)
        else:  # a user certificate without ca.crt: nothing to check it against; /health carries no secret
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def __call__(self, reader: Reader, pod: dict[str, Any], name: str, spec: OmenDBSpec) -> bool | None:
        """True when /health answers 200, False when the pod answers otherwise (or fails TLS), None when
        nothing answers at the pod's IP at all (no route from where the operator runs)."""
        ip = (pod.get("status") or {}).get("podIP")
        namespace = pod["metadata"]["namespace"]
        if not ip:
            return False
        host = f"[{ip}]" if ":" in ip else ip
        scheme = "https" if spec.tls.enabled else "http"
        try:
            verify = self._verify(reader, name, namespace, spec)
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

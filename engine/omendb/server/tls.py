"""HTTPS with certificates that can change under a running server.

Kubernetes rotates a mounted TLS Secret in place (cert-manager renewals, ``kubectl create secret tls``
updates). The listening socket keeps one SSLContext whose SNI callback runs on every handshake: when the
certificate or key file changed since the last look (checked at most once a second), it loads them into a
fresh context and switches the connection to it. Established connections keep their session; new ones
get the new certificate. A half-written or mismatched pair is logged and the previous one kept.

Each loaded certificate's expiry is exported as ``omendb_tls_cert_expiry_seconds`` (seconds until its
notAfter, negative once expired, computed at scrape time) and logged at WARNING when the certificate is
expired or expires within ``EXPIRY_WARNING_SECONDS``: on every (re)load, and again once a day while it
stays so.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from omendb.errors import ConfigError

log = logging.getLogger("omendb.tls")
# cert-manager renews at 2/3 of the lifetime (30 days before the end of a 90-day certificate): a
# certificate this close to its end means renewal is not happening.
EXPIRY_WARNING_SECONDS = 7 * 86400
REWARN_SECONDS = 86400


def not_after(cert_file: str) -> float:
    """The notAfter (Unix time) of the first certificate in a PEM file: the server's own, by convention."""
    from cryptography import x509  # only with TLS on: not on every server's start-up

    with open(cert_file, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).not_valid_after_utc.timestamp()


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _load(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert_file, key_file)
    return context


class ReloadingTLS:
    CHECK_INTERVAL = 1.0

    def __init__(self, cert_file: str, key_file: str, registry: CollectorRegistry | None = None) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        try:
            self._stamps = (_stamp(cert_file), _stamp(key_file))
            self._current = _load(cert_file, key_file)
            self.not_after = not_after(cert_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"[security] tls_enabled = true but the certificate pair cannot be loaded "
                              f"(tls_cert_file = {cert_file!r}, tls_key_file = {key_file!r}): {exc}; "
                              "point both keys at a PEM certificate chain and its private key") from None
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self.reloads = 0
        # The listening context: it only dispatches to the current one.
        self.context = _load(cert_file, key_file)
        self.context.sni_callback = self._on_hello
        self._warned = 0.0
        self._check_expiry(time.time())
        if registry is not None:
            registry.register(_ExpiryCollector(self))

    def _on_hello(self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                  _context: ssl.SSLContext) -> None:
        self._maybe_reload()
        conn.context = self._current
        return None

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.CHECK_INTERVAL:
            return
        with self._lock:
            self._checked = now
            try:
                stamps = (_stamp(self.cert_file), _stamp(self.key_file))
                if stamps == self._stamps:
                    if time.time() - self._warned >= REWARN_SECONDS:
                        self._check_expiry(time.time(), reloaded=False)
                    return
                current, expiry = _load(self.cert_file, self.key_file), not_after(self.cert_file)
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.error("tls: new certificate files could not be loaded, keeping the previous ones",
                          extra={"cert_file": self.cert_file, "key_file": self.key_file, "error": str(exc)})
                return
            self._current, self.not_after, self._stamps = current, expiry, stamps
            self.reloads += 1
            log.info("tls: certificate reloaded", extra={"cert_file": self.cert_file,
                                                         "expires_in_seconds": round(expiry - time.time())})
            self._warned = 0.0
            self._check_expiry(time.time())

    def _check_expiry(self, now: float, reloaded: bool = True) -> None:
        left = self.not_after - now
        if left > EXPIRY_WARNING_SECONDS:
            return
        self._warned = now
        extra = {"cert_file": self.cert_file, "expires_in_seconds": round(left),
                 "not_after": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.not_after))}
        if left <= 0:
            log.warning("tls: the certificate has expired; clients will refuse it until it is renewed "
                        "(replace tls_cert_file and tls_key_file; they are reloaded without a restart)",
                        extra=extra)
        else:
            log.warning(f"tls: the certificate expires in {left / 86400:.1f} days; renew it (replace "
                        "tls_cert_file and tls_key_file; they are reloaded without a restart)", extra=extra)


class _ExpiryCollector(Collector):
    """``omendb_tls_cert_expiry_seconds``, computed when scraped so it counts down between reloads."""

    def __init__(self, tls: ReloadingTLS) -> None:
        self.tls = tls

    def collect(self) -> Iterable[Any]:
        yield GaugeMetricFamily("omendb_tls_cert_expiry_seconds", "Seconds until the served TLS certificate's "
                                "notAfter (negative once expired).", value=self.tls.not_after - time.time())

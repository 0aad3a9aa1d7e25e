"""HTTPS with certificates that can change under a running server.

Kubernetes rotates a mounted TLS Secret in place (cert-manager renewals, ``kubectl create secret tls``
updates). The listening socket keeps one SSLContext whose SNI callback runs on every handshake: when the
certificate or key file changed since the last look (checked at most once a second), it loads them into a
fresh context and switches the connection to it. Established connections keep their session; new ones
get the new certificate. A half-written or mismatched pair is logged and the previous one kept.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time

from omendb.errors import ConfigError

log = logging.getLogger("omendb.tls")


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

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        try:
            self._stamps = (_stamp(cert_file), _stamp(key_file))
            self._current = _load(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"[security] tls_enabled = true but the certificate pair cannot be loaded "
                              f"(tls_cert_file = {cert_file!r}, tls_key_file = {key_file!r}): {exc}; "
                              "point both keys at a PEM certificate chain and its private key") from None
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self.reloads = 0
        # The listening context: it only dispatches to the current one.
        self.context = _load(cert_file, key_file)
        self.context.sni_callback = self._on_hello

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
                    return
                self._current = _load(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                log.error("tls: new certificate files could not be loaded, keeping the previous ones",
                          extra={"cert_file": self.cert_file, "key_file": self.key_file, "error": str(exc)})
                return
            self._stamps = stamps
            self.reloads += 1
            log.info("tls: certificate reloaded", extra={"cert_file": self.cert_file})

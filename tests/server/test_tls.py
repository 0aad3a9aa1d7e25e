"""HTTPS with a test CA, and certificate rotation on disk picked up without a restart."""

from __future__ import annotations

import datetime
import socket
import ssl
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from omendb.config import Config
from omendb.errors import ConfigError
from omendb.server.lifecycle import build_server
from tests.server.certs import CertificateAuthority
from tests.server.harness import HOST, Server


def served_serial(port: int, context: ssl.SSLContext) -> int:
    with socket.create_connection((HOST, port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_https_with_a_test_ca_and_hot_reload(tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    ca_file = ca.write_ca(tmp_path / "ca.crt")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    first = ca.issue(cert, key)
    server = Server(tmp_path / "srv", {"security": {"tls_enabled": True, "tls_cert_file": str(cert),
                                                    "tls_key_file": str(key)}})
    context = ssl.create_default_context(cafile=str(ca_file))
    with server:
        server.start(verify=context)
        assert server.url.startswith("https://")
        with httpx.Client(base_url=server.url, verify=context) as client:
            assert client.post("/v1/records", json={"records": [{"key": 1, "value": 2.0}]}).status_code == 200
            assert client.get("/v1/records/1").json()["value"] == 2.0
            # Plain HTTP on the TLS port does not get data.
            try:
                plain = httpx.get(f"http://{HOST}:{server.port}/v1/records/1", timeout=5)
                assert plain.status_code != 200
            except httpx.HTTPError:
                pass
            # An untrusted client refuses the server.
            try:
                httpx.get(f"{server.url}/health", timeout=5)
                raise AssertionError("a client without the test CA must not trust the server")
            except httpx.ConnectError:
                pass
            assert served_serial(server.port, context) == first

            time.sleep(1.1)  # the files are looked at no more than once a second
            second = ca.issue(cert, key, common_name="rotated")
            deadline = time.monotonic() + 10
            while served_serial(server.port, context) != second:
                assert time.monotonic() < deadline, "the new certificate was not served"
                time.sleep(0.2)
            # The connection opened before the rotation keeps working.
            assert client.get("/v1/records/1").status_code == 200
        with httpx.Client(base_url=server.url, verify=context) as fresh:
            assert fresh.get("/v1/records/1").json()["value"] == 2.0

        # A broken rotation (garbage certificate) keeps the last good pair.
        time.sleep(1.1)
        cert.write_text("not a certificate")
        time.sleep(1.2)
        assert served_serial(server.port, context) == second
        server.wait_for_log(lambda r: "could not be loaded" in r.get("msg", ""))
        assert server.stop() == 0


def test_unreadable_certificate_is_refused_at_startup(tmp_path: Path) -> None:
    config = Config().replace("security", auth_enabled=False, tls_enabled=True, tls_cert_file=str(tmp_path / "no.crt"),
                              tls_key_file=str(tmp_path / "no.key"))
    with pytest.raises(ConfigError, match="tls_cert_file"):
        build_server(config)


def _expiry_metric(server: Server) -> float:
    for line in httpx.get(server.metrics_url).text.splitlines():
        if line.startswith("omendb_tls_cert_expiry_seconds "):
            return float(line.split()[1])
    raise AssertionError("omendb_tls_cert_expiry_seconds is not exported")


def test_certificate_expiry_is_a_metric_and_a_warning(tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    ca.issue(cert, key, not_after=datetime.timedelta(hours=-1))  # expired an hour ago
    server = Server(tmp_path / "srv", {"security": {"tls_enabled": True, "tls_cert_file": str(cert),
                                                    "tls_key_file": str(key)}})
    trusting = ssl.create_default_context(cafile=str(ca.write_ca(tmp_path / "ca.crt")))
    unverified = ssl.create_default_context()
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
    with server:
        server.start(verify=False)
        expired = server.wait_for_log(lambda r: r.get("level") == "WARNING" and "has expired" in r.get("msg", ""))
        assert -3700 < expired["expires_in_seconds"] < -3500
        assert -3700 < _expiry_metric(server) < -3500

        time.sleep(1.1)  # rotated to one that expires in two days: the reload warns again
        soon = ca.issue(cert, key, not_after=datetime.timedelta(days=2))
        while served_serial(server.port, unverified) != soon:
            time.sleep(0.2)
        warning = server.wait_for_log(lambda r: r.get("level") == "WARNING" and "expires in 2.0 days" in
                                      r.get("msg", ""))
        assert 2 * 86400 - 120 < warning["expires_in_seconds"] <= 2 * 86400
        assert 2 * 86400 - 120 < _expiry_metric(server) <= 2 * 86400

        time.sleep(1.1)  # a healthy 90-day certificate: the gauge follows, no warning
        healthy = ca.issue(cert, key, not_after=datetime.timedelta(days=90))
        while served_serial(server.port, unverified) != healthy:
            time.sleep(0.2)
        assert 90 * 86400 - 120 < _expiry_metric(server) <= 90 * 86400
        warnings = [r for r in server.log_records() if r.get("logger") == "omendb.tls" and r["level"] == "WARNING"]
        assert len(warnings) == 2, warnings
        with httpx.Client(base_url=server.url, verify=trusting) as client:
            assert client.get("/health").status_code == 200
        assert server.stop() == 0


def test_plain_http_on_the_tls_port(tmp_path: Path) -> None:
    """Plain HTTP on the TLS port: the probes answer (the guide's health_check.sh), the API says to use
    https://; with plain_http_probes = false nothing is answered in clear text."""
    ca = CertificateAuthority.create()
    context = ssl.create_default_context(cafile=str(ca.write_ca(tmp_path / "ca.crt")))
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    ca.issue(cert, key)
    for probes in (True, False):
        server = Server(tmp_path / f"srv-{probes}", {"security": {
            "tls_enabled": True, "tls_cert_file": str(cert), "tls_key_file": str(key), "plain_http_probes": probes}})
        with server:
            server.start(verify=context)
            plain = f"http://{HOST}:{server.port}"
            health = httpx.get(f"{plain}/health", timeout=10)
            assert (health.status_code, health.json().get("status")) == ((200, "ok") if probes else (400, None))
            refused = httpx.post(f"{plain}/v1/records", json={"records": [{"key": 1, "value": 1.0}]}, timeout=10)
            assert refused.status_code == 400
            assert refused.json()["error"]["code"] == "https_required"
            assert f"https://{HOST}:{server.port}/v1/records" in refused.json()["error"]["message"]
            # HTTPS on the same port, on a kept-alive connection, is unaffected.
            with httpx.Client(base_url=server.url, verify=context) as client:
                for key_ in range(3):
                    body = {"records": [{"key": key_, "value": 1.0}]}
                    assert client.post("/v1/records", json=body).status_code == 200
                assert client.get("/v1/stats").json()["records"] == 3
            assert server.stop() == 0

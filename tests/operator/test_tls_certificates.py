from __future__ import annotations

import datetime as dt
import socket
import ssl
import tempfile
import threading
from pathlib import Path

import pytest

from omendb_operator.specs.certificates import (
    ca_bundle,
    ca_renewal_reason,
    cert_dns_names,
    cert_renewal_reason,
    load_cert,
    load_certs,
    plan_certificates,
    server_dns_names,
)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def _plan(ca=None, tls=None, now=NOW, duration=90 * DAY, renew=30 * DAY):
    return plan_certificates("prod", "omendb-prod", ca or {}, tls or {}, now, duration, renew)


def test_sans_cover_every_service_and_pod_name():
    names = server_dns_names("prod", "omendb-prod")
    for service in ("prod", "prod-ro", "prod-headless"):
        for form in (
            service,
            f"{service}.omendb-prod",
            f"{service}.omendb-prod.svc",
            f"{service}.omendb-prod.svc.cluster.local",
        ):
            assert form in names
    assert "*.prod-headless.omendb-prod.svc.cluster.local" in names
    assert "*.prod-headless.omendb-prod.svc" in names
    assert "localhost" in names
    cert = load_cert(_plan().tls_data["tls.crt"])
    assert sorted(cert_dns_names(cert)) == sorted(names)


def _handshake(plan, server_name: str) -> str:
    """A real TLS handshake on loopback: the server presents the plan's certificate, the client trusts
    only the plan's CA bundle and checks the host name. Returns the negotiated version."""
    with tempfile.TemporaryDirectory() as tmp:
        crt, key, ca = Path(tmp, "tls.crt"), Path(tmp, "tls.key"), Path(tmp, "ca.crt")
        crt.write_text(plan.tls_data["tls.crt"])
        key.write_text(plan.tls_data["tls.key"])
        ca.write_text(plan.tls_data["ca.crt"])
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(crt, key)
        client_ctx = ssl.create_default_context(cafile=str(ca))
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        errors: list[Exception] = []

        def serve():
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError) as exc:
                errors.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_name) as tls,
            ):
                version = tls.version() or ""
                tls.send(b"x")
        finally:
            thread.join(5)
            listener.close()
        return version


@pytest.mark.parametrize(
    "host",
    [
        "prod.omendb-prod.svc",
        "prod-ro.omendb-prod.svc.cluster.local",
        "prod-2.prod-headless.omendb-prod.svc",
        "prod-17.prod-headless.omendb-prod",
        "localhost",
    ],
)
def test_clients_verify_the_server_certificate_for_every_name(host):
    plan = _plan(now=dt.datetime.now(dt.UTC))
    assert _handshake(plan, host).startswith("TLSv1.")


def test_a_foreign_name_fails_verification():
    plan = _plan(now=dt.datetime.now(dt.UTC))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(plan, "prod.other-namespace.svc")


def test_good_certificates_are_kept_unchanged():
    first = _plan()
    again = _plan(first.ca_data, first.tls_data, now=NOW + 10 * DAY)
    assert again.actions == []
    assert again.ca_data == first.ca_data and again.tls_data == first.tls_data


def test_renewal_decisions():
    plan = _plan()
    names = server_dns_names("prod", "omendb-prod")
    ca_pem = plan.ca_data["tls.crt"]
    assert cert_renewal_reason(plan.tls_data, ca_pem, names, NOW + 59 * DAY, 30 * DAY) is None
    assert "expires" in cert_renewal_reason(plan.tls_data, ca_pem, names, NOW + 61 * DAY, 30 * DAY)
    assert "DNS names changed" in cert_renewal_reason(plan.tls_data, ca_pem, names[:-1], NOW, 30 * DAY)
    other_ca = _plan().ca_data["tls.crt"]
    assert "current CA" in cert_renewal_reason(plan.tls_data, other_ca, names, NOW, 30 * DAY)
    swapped = {**plan.tls_data, "tls.key": _plan().tls_data["tls.key"]}
    assert "does not match" in cert_renewal_reason(swapped, ca_pem, names, NOW, 30 * DAY)
    assert cert_renewal_reason({}, ca_pem, names, NOW, 30 * DAY) == "no certificate yet"
    assert "unreadable" in cert_renewal_reason({"tls.crt": "junk"}, ca_pem, names, NOW, 30 * DAY)


def test_renewal_happens_well_before_expiry():
    plan = _plan()
    later = _plan(plan.ca_data, plan.tls_data, now=NOW + 61 * DAY)
    assert any("new server certificate" in a and "expires" in a for a in later.actions)
    assert later.ca_data == plan.ca_data  # the CA is still good
    assert later.not_after > plan.not_after


def test_ca_rotation_keeps_the_old_ca_trusted_while_it_is_valid():
    plan = _plan()
    ca_cert = load_cert(plan.ca_data["tls.crt"])
    assert ca_renewal_reason(plan.ca_data, NOW) is None
    near_end = ca_cert.not_valid_after_utc - 100 * DAY
    assert "CA expires" in ca_renewal_reason(plan.ca_data, near_end)
    rotated = _plan(plan.ca_data, plan.tls_data, now=near_end)
    assert any("new CA" in a for a in rotated.actions)
    assert any("current CA" in a for a in rotated.actions)  # the old server cert is re-issued
    bundle = load_certs(rotated.ca_data["ca.crt"])
    assert [c.subject for c in bundle][0] == load_cert(rotated.ca_data["tls.crt"]).subject
    assert len(bundle) == 2  # new CA first, old CA still trusted
    assert rotated.tls_data["ca.crt"] == rotated.ca_data["ca.crt"]
    # An expired old CA is dropped from the bundle.
    assert (
        len(
            load_certs(
                ca_bundle(
                    rotated.ca_data["tls.crt"], rotated.ca_data["ca.crt"], ca_cert.not_valid_after_utc + DAY
                )
            )
        )
        == 1
    )


def test_longest_names_still_get_certificates():
    name, namespace = "a" * 52, "n" * 63  # the longest an OmenDB and its namespace can be
    plan = plan_certificates(name, namespace, {}, {}, NOW, 90 * DAY, 30 * DAY)
    cert = load_cert(plan.tls_data["tls.crt"])
    assert f"{name}.{namespace}.svc" in cert_dns_names(cert)


# The operations guide's certificate command (Security Operations), prompts answered with Enter.
GUIDE_OPENSSL = "yes '' | openssl req -new -x509 -keyout server.key -out server.pem -days 365 -nodes"


def _guide_secret_data(tmp_path: Path) -> dict[str, str]:
    """What `kubectl create secret tls omendb-tls --cert=server.pem --key=server.key` stores: no ca.crt."""
    import subprocess

    subprocess.run(["bash", "-c", GUIDE_OPENSSL], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    return {"tls.crt": (tmp_path / "server.pem").read_text(), "tls.key": (tmp_path / "server.key").read_text()}


def test_the_guides_tls_secret_is_degraded_for_ca_crt_and_warned_for_names(tmp_path):
    from omendb_operator.specs.certificates import review_user_tls_secret

    problems, warnings = review_user_tls_secret("omendb-tls", _guide_secret_data(tmp_path), "prod", "omendb-prod")
    assert len(problems) == 1
    assert "Secret omendb-tls (spec.tls.secretName) has no key ca.crt" in problems[0]
    # Self-signed: the fix is to add tls.crt itself as ca.crt, with the exact command.
    assert "tls.crt itself" in problems[0] and "--from-file=ca.crt=CERT" in problems[0]
    assert len(warnings) == 1
    for missing in ("prod.omendb-prod.svc", "prod-ro.omendb-prod.svc", "*.prod-headless.omendb-prod.svc"):
        assert missing in warnings[0]
    assert "localhost" not in warnings[0]


def test_a_complete_user_secret_has_no_findings_and_partial_names_are_listed():
    from omendb_operator.specs.certificates import review_user_tls_secret

    plan = _plan()  # the generated certificate: every Service name, with ca.crt
    assert review_user_tls_secret("mine", plan.tls_data, "prod", "omendb-prod") == ([], [])
    # The same certificate for another OmenDB name: every name is missing; a CA-issued one without
    # ca.crt is told to add its CA (not itself).
    data = {k: plan.tls_data[k] for k in ("tls.crt", "tls.key")}
    problems, warnings = review_user_tls_secret("mine", data, "other", "omendb-prod")
    assert "the CA that signed it" in problems[0] and "--from-file=ca.crt=CA" in problems[0]
    assert "other.omendb-prod.svc" in warnings[0] and "prod.omendb-prod.svc" not in warnings[0].split(": ", 1)[1]


def test_wildcard_names_cover_one_label_only():
    from omendb_operator.specs.certificates import _covers

    assert _covers("*.prod-headless.ns.svc", "prod-0.prod-headless.ns.svc")
    assert not _covers("*.ns.svc", "prod-0.prod-headless.ns.svc")
    assert _covers("*.prod-headless.ns.svc", "*.prod-headless.ns.svc")
    assert not _covers("prod-0.prod-headless.ns.svc", "*.prod-headless.ns.svc")
    assert _covers("PROD.ns.svc.", "prod.ns.svc")

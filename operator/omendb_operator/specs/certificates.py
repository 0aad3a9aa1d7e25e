"""NAME-ca and NAME-tls: an operator-made CA and the server certificate it signs, renewed well before expiry.

Pure functions of (existing Secret data, wanted names, now): they decide whether a new CA or certificate
is needed, and say why. The server certificate's SANs cover every Service name (short, namespaced, .svc
and the cluster domain) and every pod of the headless Service (by wildcard, so scaling needs no new
certificate), plus localhost for probes and exec sessions inside the pod.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from omendb_operator import labels as L
from omendb_operator.specs.secrets import encode_data

CA_DURATION = dt.timedelta(days=3650)
CA_RENEW_BEFORE = dt.timedelta(days=365)
# Backdate notBefore a little: a node whose clock is slightly behind must still accept a fresh cert.
CLOCK_SKEW = dt.timedelta(minutes=5)


def server_dns_names(name: str, namespace: str, cluster_domain: str = "cluster.local") -> list[str]:
    names = L.Names(name)
    out: list[str] = []
    for service in (names.primary_service, names.read_service, names.headless_service):
        out += [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
                f"{service}.{namespace}.svc.{cluster_domain}"]
    headless = names.headless_service
    # Pods are NAME-<i>.NAME-headless...; one wildcard level matches exactly one label, i.e. any ordinal.
    out += [f"*.{headless}", f"*.{headless}.{namespace}", f"*.{headless}.{namespace}.svc",
            f"*.{headless}.{namespace}.svc.{cluster_domain}", "localhost"]
    return out


SERVER_IPS = ("127.0.0.1", "::1")


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def load_cert(pem: str | None) -> x509.Certificate | None:
    if not pem:
        return None
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return None


def load_certs(pem: str | None) -> list[x509.Certificate]:
    if not pem:
        return []
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        return []


def load_key(pem: str | None) -> ec.EllipticCurvePrivateKey | None:
    if not pem:
        return None
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _same_public_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def cert_dns_names(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(x509.DNSName)


def issue_ca(common_name: str, now: dt.datetime) -> tuple[str, str]:
    """A new self-signed CA: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "omendb-operator"),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + CA_DURATION)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem_cert(cert), _pem_key(key)


def issue_server_cert(ca_cert_pem: str, ca_key_pem: str, dns_names: list[str], now: dt.datetime,
                      duration: dt.timedelta) -> tuple[str, str]:
    """A server certificate for ``dns_names`` signed by the CA: (certificate PEM, key PEM)."""
    ca_cert = load_cert(ca_cert_pem)
    ca_key = load_key(ca_key_pem)
    if ca_cert is None or ca_key is None:
        raise ValueError("the CA certificate or key is unreadable")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0][:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + duration)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _pem_cert(cert), _pem_key(key)


def ca_renewal_reason(ca: dict[str, str], now: dt.datetime) -> str | None:
    """Why the CA in NAME-ca's data must be replaced, or None when it is good."""
    cert, key = load_cert(ca.get("tls.crt")), load_key(ca.get("tls.key"))
    if cert is None or key is None:
        return "no CA yet" if not ca else "the CA certificate or key is unreadable"
    if not _same_public_key(cert, key):
        return "the CA key does not match its certificate"
    if cert.not_valid_after_utc - now < CA_RENEW_BEFORE:
        return f"the CA expires at {cert.not_valid_after_utc.isoformat()}"
    return None


def cert_renewal_reason(tls: dict[str, str], ca_cert_pem: str, dns_names: list[str], now: dt.datetime,
                        renew_before: dt.timedelta) -> str | None:
    """Why the server certificate in NAME-tls's data must be re-issued, or None when it is good."""
    cert, key = load_cert(tls.get("tls.crt")), load_key(tls.get("tls.key"))
    ca_cert = load_cert(ca_cert_pem)
    if cert is None or key is None:
        return "no certificate yet" if not tls else "the certificate or key is unreadable"
    if not _same_public_key(cert, key):
        return "the key does not match the certificate"
    if ca_cert is None or cert.issuer != ca_cert.subject:
        return "the certificate was not issued by the current CA"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return "the certificate's signature does not verify against the current CA"
    if sorted(cert_dns_names(cert)) != sorted(dns_names):
        return "the DNS names changed"
    if cert.not_valid_after_utc - now < renew_before:
        return f"the certificate expires at {cert.not_valid_after_utc.isoformat()}"
    return None


def ca_bundle(new_ca_pem: str, previous_bundle: str | None, now: dt.datetime) -> str:
    """The trust bundle: the current CA first, then earlier CAs that are still valid, so clients holding
    the old bundle and servers presenting old certificates keep working through a CA rotation."""
    out = [new_ca_pem]
    seen = {load_cert(new_ca_pem).fingerprint(hashes.SHA256())}  # type: ignore[union-attr]
    for cert in load_certs(previous_bundle):
        fp = cert.fingerprint(hashes.SHA256())
        if fp not in seen and cert.not_valid_after_utc > now:
            seen.add(fp)
            out.append(_pem_cert(cert))
    return "".join(out)


@dataclass
class CertificatePlan:
    ca_data: dict[str, str]
    tls_data: dict[str, str]
    actions: list[str] = field(default_factory=list)  # what changed and why, for events

    @property
    def not_after(self) -> dt.datetime:
        cert = load_cert(self.tls_data["tls.crt"])
        assert cert is not None
        return cert.not_valid_after_utc


def plan_certificates(name: str, namespace: str, existing_ca: dict[str, str], existing_tls: dict[str, str],
                      now: dt.datetime, duration: dt.timedelta, renew_before: dt.timedelta,
                      cluster_domain: str = "cluster.local") -> CertificatePlan:
    """Decide the CA and server certificate Secrets' data, keeping what is still good."""
    ca = dict(existing_ca)
    actions: list[str] = []
    reason = ca_renewal_reason(ca, now)
    if reason:
        # X.509 limits a common name to 64 characters; names and namespaces may each have 63.
        cert_pem, key_pem = issue_ca(f"OmenDB CA {name}.{namespace}"[:64], now)
        ca = {"tls.crt": cert_pem, "tls.key": key_pem,
              "ca.crt": ca_bundle(cert_pem, existing_ca.get("ca.crt"), now)}
        actions.append(f"issued a new CA ({reason})")
    elif "ca.crt" not in ca:
        ca["ca.crt"] = ca["tls.crt"]
    dns_names = server_dns_names(name, namespace, cluster_domain)
    tls: dict[str, str] = {k: existing_tls[k] for k in ("tls.crt", "tls.key") if k in existing_tls}
    reason = cert_renewal_reason(tls, ca["tls.crt"], dns_names, now, renew_before)
    if reason:
        cert_pem, key_pem = issue_server_cert(ca["tls.crt"], ca["tls.key"], dns_names, now, duration)
        tls = {"tls.crt": cert_pem, "tls.key": key_pem}
        actions.append(f"issued a new server certificate ({reason})")
    tls["ca.crt"] = ca["ca.crt"]
    return CertificatePlan(ca_data=ca, tls_data=tls, actions=actions)


def build_ca_secret(owner: dict[str, Any], data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": L.metadata(owner, L.Names(owner["metadata"]["name"]).ca, "tls"),
        "data": encode_data(data),
    }


def build_tls_secret(owner: dict[str, Any], data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": L.metadata(owner, L.Names(owner["metadata"]["name"]).tls, "tls"),
        "data": encode_data(data),
    }


def _covers(san: str, wanted: str) -> bool:
    """Whether the certificate name ``san`` covers ``wanted`` the way TLS clients check host names (one
    wildcard label, leftmost only; a wanted wildcard is covered only by the same wildcard)."""
    san, wanted = san.lower().rstrip("."), wanted.lower().rstrip(".")
    if san == wanted:
        return True
    if san.startswith("*.") and not wanted.startswith("*."):
        head, _, rest = wanted.partition(".")
        return bool(head) and rest == san[2:]
    return False


def missing_service_names(cert: x509.Certificate, name: str, namespace: str,
                          cluster_domain: str = "cluster.local") -> list[str]:
    """The Service and pod names (as the generated certificate carries them) that ``cert`` does not cover.
    The common name does not count: clients check the subjectAltName extension only."""
    sans = cert_dns_names(cert)
    wanted = [n for n in server_dns_names(name, namespace, cluster_domain) if n != "localhost"]
    return [n for n in wanted if not any(_covers(san, n) for san in sans)]


def review_user_tls_secret(secret: str, data: dict[str, str], name: str, namespace: str,
                           cluster_domain: str = "cluster.local") -> tuple[list[str], list[str]]:
    """What is wrong with the user's TLS Secret (spec.tls.secretName) beyond being unreadable or expired:
    (problems, warnings). A problem breaks backups, restores and upgrades (Degraded); a warning breaks
    clients that check host names."""
    problems: list[str] = []
    warnings: list[str] = []
    cert = load_cert(data.get("tls.crt"))
    if cert is None:
        return problems, warnings
    if not data.get("ca.crt"):
        self_signed = cert.issuer == cert.subject
        anchor = "tls.crt itself (the certificate is self-signed)" if self_signed else \
            f"the CA that signed it ({cert.issuer.rfc4514_string()})"
        problems.append(
            f"Secret {secret} (spec.tls.secretName) has no key ca.crt (`kubectl create secret tls` writes only "
            f"tls.crt and tls.key): backup, restore and upgrade Jobs verify the server against ca.crt and "
            f"fail without it (replicas fall back to the system's CAs). Add {anchor} as ca.crt: "
            f"`kubectl create secret generic {secret} --type=kubernetes.io/tls --from-file=tls.crt=CERT "
            f"--from-file=tls.key=KEY "
            f"--from-file=ca.crt={'CERT' if self_signed else 'CA'} -n {namespace} --dry-run=client -o yaml | "
            f"kubectl apply -f -`")
    missing = missing_service_names(cert, name, namespace, cluster_domain)
    if missing:
        warnings.append(
            f"the certificate in Secret {secret} does not name {len(missing)} of the Service names "
            f"(subjectAltName): {', '.join(missing)}; clients that check host names (backup, restore and "
            f"upgrade Jobs, replicas, applications) refuse it. Issue it with those names, e.g. openssl req "
            f"-addext \"subjectAltName=DNS:{missing[0]},...\"")
    return problems, warnings

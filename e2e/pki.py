"""Certificates and keys for the local cluster, made with `cryptography`.

One self-signed CA signs every certificate: the API server's serving certificate, client
certificates whose subject names the Kubernetes user and groups (CN = user, O = groups, as the API
server's x509 authenticator reads them), and the kubelet's serving certificate. The service-account
key pair signs and verifies service-account tokens. EC P-256 keys keep generation fast.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class CertSpec:
    """What one certificate says: its file stem, subject and how it may be used."""

    name: str
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = False
    client: bool = False


@dataclass
class Issued:
    cert_pem: bytes
    key_pem: bytes
    extra: dict[str, bytes] = field(default_factory=dict)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def make_ca(common_name: str = "omendb-e2e-ca") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(spec: CertSpec, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> Issued:
    """Sign one leaf certificate described by `spec` with the CA."""
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    usages = []
    if spec.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if spec.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if not usages:
        raise ValueError(f"certificate {spec.name!r} must be a server or a client certificate (or both)")
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(spec.common_name, spec.organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def cluster_specs(node_name: str, node_ip: str, service_ip: str) -> list[CertSpec]:
    """Every certificate the cluster's components need (pure: names and usages only)."""
    apiserver_dns = (
        "kubernetes", "kubernetes.default", "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local", "localhost", node_name,
    )
    return [
        CertSpec("apiserver", "kube-apiserver", dns_names=apiserver_dns,
                 ip_addresses=("127.0.0.1", node_ip, service_ip), server=True),
        CertSpec("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",),
                 client=True),
        CertSpec("admin", "kubernetes-admin", ("system:masters",), client=True),
        CertSpec("controller-manager", "system:kube-controller-manager", client=True),
        CertSpec("scheduler", "system:kube-scheduler", client=True),
        CertSpec("kube-proxy", "system:kube-proxy", client=True),
        *node_specs(node_name, node_ip),
    ]


def node_specs(node_name: str, node_ip: str, suffix: str = "") -> list[CertSpec]:
    """A kubelet's two certificates. The client one says `system:node:NAME` in `system:nodes`, so the
    Node authorizer and NodeRestriction confine each kubelet to its own Node and its own pods."""
    return [
        CertSpec(f"kubelet-client{suffix}", f"system:node:{node_name}", ("system:nodes",), client=True),
        CertSpec(f"kubelet-server{suffix}", node_name, dns_names=(node_name, "localhost"),
                 ip_addresses=(node_ip, "127.0.0.1"), server=True),
    ]


def write_node_certs(directory: Path, node_name: str, node_ip: str, suffix: str) -> None:
    """Sign a further node's kubelet certificates with the cluster's CA (written by `write_pki`)."""
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{directory / 'ca.key'} is not the EC key write_pki makes")
    for spec in node_specs(node_name, node_ip, suffix):
        issued = issue(spec, ca_cert, ca_key)
        (directory / f"{spec.name}.crt").write_bytes(issued.cert_pem)
        _write_private(directory / f"{spec.name}.key", issued.key_pem)


def write_pki(directory: Path, node_name: str, node_ip: str, service_ip: str) -> None:
    """Create the CA, every leaf certificate and the service-account keys under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = make_ca()
    (directory / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(directory / "ca.key", _key_pem(ca_key))
    for spec in cluster_specs(node_name, node_ip, service_ip):
        issued = issue(spec, ca_cert, ca_key)
        (directory / f"{spec.name}.crt").write_bytes(issued.cert_pem)
        _write_private(directory / f"{spec.name}.key", issued.key_pem)
    sa_key = _key()
    _write_private(directory / "sa.key", _key_pem(sa_key))
    (directory / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)

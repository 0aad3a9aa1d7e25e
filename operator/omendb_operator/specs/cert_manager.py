"""The cert-manager Certificate NAME for spec.tls.issuerRef: cert-manager issues NAME-tls and renews it.

The Certificate asks for what the operator's own generated certificate holds (specs/certificates.py): the
same DNS names and loopback addresses, an ECDSA P-256 key, the same key usages, durationDays and
renewBeforeDays. cert-manager writes tls.crt, tls.key and ca.crt into NAME-tls, which the pods mount as
they mount a generated one; the Secret carries the OmenDB's labels (secretTemplate) so that a spec which
stops using cert-manager can delete it like any other stale child.
"""

from __future__ import annotations

from typing import Any

from omendb_operator import labels as L
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs.certificates import SERVER_IPS, server_dns_names

CERT_MANAGER_API = "cert-manager.io/v1"
CERTIFICATE_KIND = "Certificate"


def _hours(days: int) -> str:
    # cert-manager takes Go durations; hours is the largest unit Go accepts.
    return f"{days * 24}h"


def build_certificate(owner: dict[str, Any], spec: OmenDBSpec,
                      cluster_domain: str = "cluster.local") -> dict[str, Any]:
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    ref = spec.tls.issuer_ref
    assert ref is not None, "build_certificate needs spec.tls.issuerRef"
    dns_names = server_dns_names(name, namespace, cluster_domain)
    return {
        "apiVersion": CERT_MANAGER_API,
        "kind": CERTIFICATE_KIND,
        "metadata": L.metadata(owner, name, "tls"),
        "spec": {
            "secretName": L.Names(name).tls,
            "secretTemplate": {"labels": L.labels(name, "tls")},
            "issuerRef": {"name": ref.name, "kind": ref.kind, "group": ref.group},
            # The generated certificate's subject is its first DNS name (at most 64 characters).
            "commonName": dns_names[0][:64],
            "dnsNames": dns_names,
            "ipAddresses": list(SERVER_IPS),
            "duration": _hours(spec.tls.duration_days),
            "renewBefore": _hours(spec.tls.renew_before_days),
            # A new key on every renewal, like the operator's own renewals.
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["digital signature", "key encipherment", "server auth"],
        },
    }

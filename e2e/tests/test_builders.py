"""The harness's pure builders: certificates, OCI layouts, component configuration, PV specs.

These need no cluster; they pin down what the cluster is built from.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from e2e import configs, oci, pki, provisioner
from e2e import layout as L
from e2e.layout import Layout


def test_pki_signs_every_component_certificate_with_the_ca(tmp_path: Path) -> None:
    pki.write_pki(tmp_path, L.NODE_NAME, L.NODE_IP, L.KUBERNETES_SERVICE_IP)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    for spec in pki.cluster_specs(L.NODE_NAME, L.NODE_IP, L.KUBERNETES_SERVICE_IP):
        cert = x509.load_pem_x509_certificate((tmp_path / f"{spec.name}.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == spec.common_name
        orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        assert orgs == list(spec.organizations)
        assert ((tmp_path / f"{spec.name}.key").stat().st_mode & 0o777) == 0o600
    api = x509.load_pem_x509_certificate((tmp_path / "apiserver.crt").read_bytes())
    san = api.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc.cluster.local" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} >= {L.NODE_IP, L.KUBERNETES_SERVICE_IP}
    kubelet = x509.load_pem_x509_certificate((tmp_path / "kubelet-client.crt").read_bytes())
    eku = kubelet.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_oci_layout_names_the_image_for_containerd(tmp_path: Path) -> None:
    layer = oci.layer_from_files({"bin/hello": (b"#!/bin/sh\necho hi\n", 0o755)}, tmp_path / "l.tar")
    out = tmp_path / "img.tar"
    digest = oci.write_image(out, "omendb/omendb:0.1.0", [layer], oci.ImageConfig(entrypoint=["/bin/hello"]))
    with tarfile.open(out) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        desc = index["manifests"][0]
        assert desc["digest"] == digest
        assert desc["annotations"]["io.containerd.image.name"] == "docker.io/omendb/omendb:0.1.0"
        manifest = json.load(tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}"))  # type: ignore[arg-type]
        cfg_name = f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"
        cfg = json.load(tar.extractfile(cfg_name))  # type: ignore[arg-type]
        assert cfg["rootfs"]["diff_ids"] == [layer.digest]
        assert cfg["config"]["Entrypoint"] == ["/bin/hello"]
        blob = tar.extractfile(f"blobs/sha256/{layer.digest.split(':')[1]}")
        assert blob is not None and oci.sha256_file(layer.path) == layer.digest


def test_normalize_ref_matches_containerd_cri_names() -> None:
    assert oci.normalize_ref("omendb/omendb:0.1.0") == "docker.io/omendb/omendb:0.1.0"
    assert oci.normalize_ref("registry.k8s.io/pause:3.10") == "registry.k8s.io/pause:3.10"
    assert oci.normalize_ref("busybox:1") == "docker.io/library/busybox:1"


def test_kubelet_config_targets_the_harness_runtime_and_cgroup_root(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    doc = yaml.safe_load(configs.kubelet_config(lay))
    assert doc["cgroupDriver"] == "cgroupfs"
    assert doc["cgroupRoot"] == "/" + L.CGROUP_ROOT
    assert doc["containerRuntimeEndpoint"] == f"unix://{lay.containerd_socket}"
    assert doc["clusterDNS"] == [L.DNS_SERVICE_IP]
    assert doc["authentication"]["anonymous"]["enabled"] is False
    cni = json.loads(configs.cni_config())
    assert cni["plugins"][0]["ipMasq"] is False  # pods never reach past the node


def test_pv_for_claim_is_prebound_to_the_claim(tmp_path: Path) -> None:
    pvc = {"metadata": {"name": "data", "namespace": "ns", "uid": "u-1"},
           "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": L.STORAGE_CLASS,
                    "resources": {"requests": {"storage": "1Gi"}}},
           "status": {"phase": "Pending"}}
    assert provisioner.wants_volume(pvc, {L.STORAGE_CLASS})
    assert not provisioner.wants_volume(pvc, {"other"})
    pv = provisioner.pv_for_claim(pvc, tmp_path / "pvc-u-1")
    assert pv["metadata"]["name"] == "pvc-u-1"
    assert pv["spec"]["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                      "namespace": "ns", "name": "data", "uid": "u-1"}
    assert pv["spec"]["capacity"] == {"storage": "1Gi"}
    assert pv["spec"]["hostPath"]["path"] == str(tmp_path / "pvc-u-1")


def test_a_further_node_has_its_own_runtime_cgroup_root_identity_and_zone(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    node = lay.node(3, "zone-c")
    assert (node.name, node.netns, node.ip, node.cgroup_root) == (
        "omendb-e2e-node-3", "omendb-e2e-n3", "10.200.3.2", "omendb-e2e-n3")
    assert node.containerd_socket != lay.containerd_socket and node.mount_ns != lay.mount_ns
    doc = yaml.safe_load(configs.kubelet_config(lay, node))
    assert doc["cgroupRoot"] == "/omendb-e2e-n3"
    assert doc["containerRuntimeEndpoint"] == f"unix://{node.containerd_socket}"
    assert doc["address"] == doc["healthzBindAddress"] == node.ip
    assert doc["tlsCertFile"].endswith("kubelet-server-omendb-e2e-node-3.crt")
    argv = configs.kubelet_argv(lay, Path("/bin"), node)
    assert f"--node-labels={L.ZONE_LABEL}=zone-c" in argv and "--hostname-override=omendb-e2e-node-3" in argv
    # Node 1 of a one-node cluster given no zone stays as it always was: no zone label.
    assert not any(a.startswith("--node-labels") for a in configs.kubelet_argv(lay, Path("/bin")))
    assert json.loads(configs.cni_config("10.244.2.0/24"))["plugins"][0]["ipam"]["ranges"] == [
        [{"subnet": "10.244.2.0/24"}]]
    proxy = yaml.safe_load(configs.kube_proxy_config(lay, node))
    assert (proxy["hostnameOverride"], proxy["clusterCIDR"]) == (node.name, L.CLUSTER_CIDR)


def test_each_node_kubelet_gets_its_own_node_identity(tmp_path: Path) -> None:
    pki.write_pki(tmp_path, L.NODE_NAME, L.NODE_IP, L.KUBERNETES_SERVICE_IP)
    pki.write_node_certs(tmp_path, "omendb-e2e-node-2", "10.200.2.2", "-omendb-e2e-node-2")
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    client = x509.load_pem_x509_certificate((tmp_path / "kubelet-client-omendb-e2e-node-2.crt").read_bytes())
    client.verify_directly_issued_by(ca)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:omendb-e2e-node-2"
    assert [a.value for a in client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:nodes"]
    server = x509.load_pem_x509_certificate((tmp_path / "kubelet-server-omendb-e2e-node-2.crt").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.200.2.2" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def test_zones_go_round_robin_and_one_node_has_none_by_default() -> None:
    from e2e import cluster

    assert cluster.zones_for(1, None) == [None]
    assert cluster.zones_for(3, None) == list(L.DEFAULT_ZONES)
    assert cluster.zones_for(4, ["a", "b"]) == ["a", "b", "a", "b"]

"""A pod of the local cluster reaches the test object store (e2e.objectstore) over TLS with sigv4.

The pod runs the engine image's python3 with the standard library only: it signs a GET with AWS
signature v4 by hand (so the test does not depend on an S3 client being in the image) and checks
the server's certificate against the object store's CA, mounted from a ConfigMap.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import obstore
import pytest
from obstore.store import S3Store

from e2e import objectstore
from e2e.kube import Kube

# Prints the object's body fetched with a signed GET, then the status of the same GET unsigned.
POD_CLIENT = r"""
import datetime, hashlib, hmac, os, ssl, urllib.error, urllib.parse, urllib.request
ep, ak, sk = os.environ["AWS_ENDPOINT_URL"], os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
path = "/" + os.environ["OMENDB_TEST_BUCKET"] + "/" + os.environ["OBJECT_KEY"]
host = urllib.parse.urlsplit(ep).netloc
now = datetime.datetime.now(datetime.timezone.utc)
amz, day, region = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d"), "us-east-1"
payload = hashlib.sha256(b"").hexdigest()
signed = "host;x-amz-content-sha256;x-amz-date"
canonical = "\n".join(["GET", path, "", "host:" + host, "x-amz-content-sha256:" + payload,
                       "x-amz-date:" + amz, "", signed, payload])
scope = day + "/" + region + "/s3/aws4_request"
to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
k = ("AWS4" + sk).encode()
for part in (day, region, "s3", "aws4_request"):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
auth = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (ak, scope, signed, sig)
ctx = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"])
req = urllib.request.Request(ep + path, headers={"x-amz-date": amz, "x-amz-content-sha256": payload,
                                                 "Authorization": auth})
print(urllib.request.urlopen(req, context=ctx, timeout=20).read().decode())
try:
    urllib.request.urlopen(ep + path, context=ctx, timeout=20)
    print("anonymous: 200")
except urllib.error.HTTPError as e:
    print("anonymous: %d" % e.code)
"""


@pytest.fixture(scope="module")
def pod_s3(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An object store of its own, serving the cluster's pods too (the cluster is up: kube)."""
    store = objectstore.Store(Path(tmp_path_factory.mktemp("objectstore")) / "state")
    objectstore.up(store, pods=True)
    try:
        yield dict(line.removeprefix("export ").split("=", 1) for line in objectstore.env_lines(store))
    finally:
        objectstore.down(store)


def test_pod_reaches_object_store_over_tls_with_sigv4(kube: Kube, namespace: str, engine_image: str,
                                                      pod_s3: dict[str, str]) -> None:
    key, body = f"from-host/{secrets.token_hex(4)}.txt", f"written on the host {secrets.token_hex(8)}"
    host_store = S3Store(pod_s3["OMENDB_TEST_BUCKET"], endpoint=pod_s3["AWS_ENDPOINT_URL"],
                         access_key_id=pod_s3["AWS_ACCESS_KEY_ID"],
                         secret_access_key=pod_s3["AWS_SECRET_ACCESS_KEY"], region=pod_s3["AWS_REGION"],
                         client_options={"root_certificate": Path(pod_s3["AWS_CA_BUNDLE"]).read_text()})
    obstore.put(host_store, key, body.encode())
    env: list[dict[str, Any]] = [
        {"name": "AWS_ENDPOINT_URL", "value": pod_s3["OMENDB_TEST_POD_ENDPOINT_URL"]},
        {"name": "AWS_ACCESS_KEY_ID", "value": pod_s3["AWS_ACCESS_KEY_ID"]},
        {"name": "AWS_SECRET_ACCESS_KEY", "value": pod_s3["AWS_SECRET_ACCESS_KEY"]},
        {"name": "AWS_CA_BUNDLE", "value": "/etc/objectstore/ca.crt"},
        {"name": "OMENDB_TEST_BUCKET", "value": pod_s3["OMENDB_TEST_BUCKET"]},
        {"name": "OBJECT_KEY", "value": key},
    ]
    kube.apply(namespace, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "objectstore-ca"},
        "data": {"ca.crt": Path(pod_s3["AWS_CA_BUNDLE"]).read_text()},
    }, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "s3-client"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": engine_image, "imagePullPolicy": "Never",
                "command": ["python3", "-c", POD_CLIENT], "env": env,
                "volumeMounts": [{"name": "ca", "mountPath": "/etc/objectstore", "readOnly": True}],
            }],
            "volumes": [{"name": "ca", "configMap": {"name": "objectstore-ca"}}],
        }}},
    })
    outcome = kube.job_outcome(namespace, "s3-client")
    logs = kube.kubectl("-n", namespace, "logs", "job/s3-client", check=False).stdout
    assert outcome == "Complete", json.dumps({"logs": logs, "dump": kube.dump(namespace)})
    assert logs.splitlines() == [body, "anonymous: 403"], logs

"""The registry stores what is pushed and serves it back by digest, over TLS only."""

from __future__ import annotations

import json

import pytest

REGISTRY = "https://172.28.96.10:5000"

# Runs on the registry host: pushes a one-layer OCI image through the distribution API (blob
# uploads, then the manifest under a tag), then pulls the manifest and every blob by digest and
# checks that what comes back hashes to the digest asked for. TLS is checked against the host's
# trust store, where ca_trust put the test CA.
PUSH_AND_PULL = r"""
import hashlib, io, json, ssl, sys, tarfile, urllib.request
base = sys.argv[1]
ctx = ssl.create_default_context()

def call(method, url, data=None, headers=None):
    url = url if url.startswith("http") else base + url
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, context=ctx, timeout=20) as resp:
        return resp.status, dict(resp.headers), resp.read()

def push_blob(data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _, headers, _ = call("POST", "/v2/mol/model/blobs/uploads/")
    location = headers["Location"]
    sep = "&" if "?" in location else "?"
    octets = {"Content-Type": "application/octet-stream"}
    status, _, _ = call("PUT", f"{location}{sep}digest={digest}", data, octets)
    assert status == 201, status
    return digest

buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    payload = b"weights of the mol model\n"
    info = tarfile.TarInfo("model/weights.bin")
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))
layer = buf.getvalue()
config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": push_blob(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": push_blob(layer), "size": len(layer)}],
}).encode()
oci = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
status, headers, _ = call("PUT", "/v2/mol/model/manifests/v1", manifest, oci)
assert status == 201, status
digest = headers["Docker-Content-Digest"]
assert digest == "sha256:" + hashlib.sha256(manifest).hexdigest(), digest

accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
_, _, pulled = call("GET", f"/v2/mol/model/manifests/{digest}", headers=accept)
assert "sha256:" + hashlib.sha256(pulled).hexdigest() == digest
blobs = [b["digest"] for b in [json.loads(pulled)["config"]] + json.loads(pulled)["layers"]]
for blob in blobs:
    _, _, data = call("GET", f"/v2/mol/model/blobs/{blob}")
    assert "sha256:" + hashlib.sha256(data).hexdigest() == blob, blob
print(json.dumps({"digest": digest, "blobs": blobs}))
"""


def test_the_registry_runs_and_starts_at_boot(host):
    service = host.service("docker-registry")
    assert service.is_running and service.is_enabled


def test_a_pushed_image_can_be_pulled_by_digest(host):
    res = host.run(f"python3 - {REGISTRY} <<'EOF'\n{PUSH_AND_PULL}\nEOF")
    assert res.rc == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["digest"].startswith("sha256:") and len(result["blobs"]) == 2
    # The tag now names that digest.
    head = host.run(
        f"python3 -c \"import ssl,urllib.request; r=urllib.request.Request('{REGISTRY}/v2/mol/model/manifests/v1', "
        "method='HEAD', headers={'Accept': 'application/vnd.oci.image.manifest.v1+json'}); "
        "print(urllib.request.urlopen(r, context=ssl.create_default_context()).headers['Docker-Content-Digest'])\""
    )
    assert head.stdout.strip() == result["digest"]


@pytest.mark.parametrize(
    "probe, expected",
    [
        # Plain HTTP is not served: the TLS port answers an HTTP request with an error, never content.
        ("urllib.request.urlopen('http://172.28.96.10:5000/v2/', timeout=5)", "HTTP Error 400"),
        # A client that does not trust the site CA is refused.
        (
            f"urllib.request.urlopen('{REGISTRY}/v2/', context=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), timeout=5)",
            "CERTIFICATE_VERIFY_FAILED",
        ),
    ],
)
def test_only_tls_clients_that_trust_the_site_ca_are_served(host, probe, expected):
    res = host.run(f'python3 -c "import ssl, urllib.request; {probe}"')
    assert res.rc != 0
    assert expected in res.stderr

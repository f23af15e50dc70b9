from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.mlfleet.fleet.plugins.filter.oci import oci_reference


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("172.28.10.30:5000/iris:v2", ("172.28.10.30:5000", "iris", "v2", None)),
        ("registry.example.com/ml/iris:v1", ("registry.example.com", "ml/iris", "v1", None)),
        ("localhost/iris", ("localhost", "iris", None, None)),
        ("nvcr.io/nvidia/tritonserver:24.08-py3", ("nvcr.io", "nvidia/tritonserver", "24.08-py3", None)),
        ("vllm/vllm-openai:v0.6.3", ("registry-1.docker.io", "vllm/vllm-openai", "v0.6.3", None)),
        ("busybox", ("registry-1.docker.io", "library/busybox", None, None)),
        ("reg:5000/iris@sha256:abc", ("reg:5000", "iris", None, "sha256:abc")),
    ],
)
def test_references_split_like_docker(ref: str, expected: tuple) -> None:
    got = oci_reference(ref)
    assert (got["registry"], got["repository"], got["tag"], got["digest"]) == expected


@pytest.mark.parametrize("bad", ["", "a b", None, "reg:5000/"])
def test_bad_references_are_named(bad: object) -> None:
    with pytest.raises(AnsibleFilterError, match="oci_reference"):
        oci_reference(bad)  # type: ignore[arg-type]

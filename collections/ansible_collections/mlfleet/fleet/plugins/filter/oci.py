# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Split an OCI image reference the way docker does, so playbooks can ask the registry about it."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

DEFAULT_REGISTRY = "registry-1.docker.io"


def oci_reference(ref: str) -> dict[str, Any]:
    """``registry:5000/team/iris:v2`` -> registry, repository, tag, digest (missing parts are None)."""
    if not isinstance(ref, str) or not ref or any(c.isspace() for c in ref):
        raise AnsibleFilterError(f"oci_reference: {ref!r} is not an image reference")
    rest, _at, digest = ref.partition("@")
    first, sep, remainder = rest.partition("/")
    # Like docker: the first component is a registry only if it looks like a host.
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DEFAULT_REGISTRY, rest
    name, colon, tag = path.rpartition(":")
    if not colon or "/" in tag:
        name, tag = path, ""
    if registry == DEFAULT_REGISTRY and "/" not in name:
        name = f"library/{name}"
    if not name:
        raise AnsibleFilterError(f"oci_reference: {ref!r} has no repository")
    return {"registry": registry, "repository": name, "tag": tag or None, "digest": digest or None}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"oci_reference": oci_reference}

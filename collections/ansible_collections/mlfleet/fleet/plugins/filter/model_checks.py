# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What is wrong with a model's settings, checked before any host changes.

``validate_argument_spec`` checks types; these are the checks of meaning that types cannot say: a
version that is no image tag (``v2 bad/../:tag`` would become a path and a tag), a sha256 that is
not 64 hex digits, a memory limit docker cannot parse, and a container that runs as root or keeps
its capabilities. The four container hardening checks can each be waived by name
(``model_server_security_waivers``), so that a waiver is visible in the inventory and the report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

# Docker's grammar (distribution/reference): a tag, and a repository with an optional registry host.
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(
    rf"(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    rf"|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
)
SHA256 = re.compile(r"[0-9a-fA-F]{64}")
MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([bkmgBKMG]?)")
ROOT_USERS = {"0", "root"}

WAIVERS = {
    "root_user": "model_server_user runs the container as root",
    "capabilities": "model_server_cap_drop does not drop ALL capabilities",
    "privilege_escalation": "model_server_security_opts lacks no-new-privileges",
    "writable_root": "model_server_read_only is false (a writable root filesystem)",
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _hardening(settings: Mapping[str, Any]) -> dict[str, bool]:
    """Which of the four container hardening checks the settings fail."""
    user = str(settings.get("user") or "").strip()
    cap_drop = [str(c).upper() for c in settings.get("cap_drop") or []]
    opts = [str(o).replace("=", ":").strip().lower() for o in settings.get("security_opts") or []]
    return {
        "root_user": user.partition(":")[0] in ROOT_USERS or not user,
        "capabilities": "ALL" not in cap_drop,
        "privilege_escalation": not any(o in ("no-new-privileges", "no-new-privileges:true") for o in opts),
        "writable_root": str(settings.get("read_only")).lower() not in ("true", "yes", "1"),
    }


def model_checks(settings: Mapping[str, Any]) -> list[str]:
    """Problems with a model's settings (``model_server_`` keys without the prefix); ``[]`` when none.

    Each problem names the variable, the value and what to do, so an assert can print them as they are.
    """
    if not isinstance(settings, Mapping):
        raise AnsibleFilterError(f"model_checks: expected the model settings as a dict, got {type(settings).__name__}")
    problems: list[str] = []
    name = str(settings.get("name") or "")
    if name and not NAME.fullmatch(name):
        problems.append(
            f"model_server_name {name!r} is not a model name: letters, digits, '_', '.' and '-', starting with a "
            "letter or digit, at most 63 (it names containers, folders and URL paths)"
        )
    for key in ("version", "tag"):
        value = settings.get(key)
        if value is None or value == "":
            continue
        if not TAG.fullmatch(str(value)):
            problems.append(
                f"model_server_{key} {str(value)!r} is not an image tag: letters, digits, '_', '.' and '-', not "
                "starting with '.' or '-', at most 128 (a version is the image tag and a folder name)"
            )
    image = str(settings.get("image") or "")
    if image and not REPOSITORY.fullmatch(image):
        hint = (
            " without the tag or digest (set the version or model_server_tag)"
            if ("@" in image or ":" in image.rsplit("/", 1)[-1])
            else ""
        )
        problems.append(
            f"model_server_image {image!r} is not an image repository: give it as [registry[:port]/]path{hint}, "
            "in lower case"
        )

    for index, artifact in enumerate(settings.get("artifacts") or []):
        where = f"model_server_artifacts[{index}]"
        if not isinstance(artifact, Mapping):
            problems.append(f"{where} must be a dict with url and sha256, not {artifact!r}")
            continue
        url = str(artifact.get("url") or "")
        if not re.match(r"https?://[^\s/]+", url):
            problems.append(f"{where}.url {url!r} is not an http(s) URL")
        if not SHA256.fullmatch(str(artifact.get("sha256") or "")):
            problems.append(
                f"{where}.sha256 {str(artifact.get('sha256') or '')!r} is not a sha256 (64 hex digits): "
                "run sha256sum on the file its authors published"
            )
        filename = artifact.get("filename")
        if filename is not None and (not str(filename) or "/" in str(filename) or str(filename) in (".", "..")):
            problems.append(f"{where}.filename {filename!r} must be a plain file name (no '/')")

    cpus = _number(settings.get("cpus"))
    if cpus is None or cpus <= 0:
        problems.append(f"model_server_cpus must be a number of CPUs above 0, not {settings.get('cpus')!r}")
    pids = settings.get("pids_limit")
    if isinstance(pids, bool) or not str(pids).isdigit() or int(str(pids)) < 1:
        problems.append(f"model_server_pids_limit must be a whole number of processes of at least 1, not {pids!r}")
    memory = settings.get("memory")
    match = MEMORY.fullmatch(str(memory).strip())
    if not match or float(match.group(1)) <= 0:
        problems.append(f"model_server_memory must be an amount above 0 such as 512m or 4g, not {memory!r}")

    waivers = settings.get("security_waivers") or []
    unknown = [w for w in waivers if w not in WAIVERS]
    if unknown:
        problems.append(
            f"model_server_security_waivers names {', '.join(map(str, unknown))}: known waivers are "
            f"{', '.join(WAIVERS)}"
        )
    for check, failed in _hardening(settings).items():
        if failed and check not in waivers:
            problems.append(
                f"{WAIVERS[check]}, which the container hardening forbids: restore it, or waive it for this "
                f"model with model_server_security_waivers: [{check}] and say why in the inventory"
            )
    return problems


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"model_checks": model_checks}

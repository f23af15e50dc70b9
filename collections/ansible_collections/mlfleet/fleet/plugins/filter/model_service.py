# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The model service definition: one place from which the container's published ports, the firewall
rules, the load balancer's backend and the Prometheus target are all derived."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleFilterError

# The model_server role of this collection: its defaults and engine profiles are read from its own
# files, so that a service can be described from any host's variables (hostvars) without running
# the role there, and no default is written twice.
ROLE = Path(__file__).resolve().parents[2] / "roles" / "model_server"

# The health endpoint the load balancer checks, per health protocol of the engine profile.
HEALTH_PATHS = {"v2": "/v2/models/{name}/ready", "openai": "/health"}
ANY = ["0.0.0.0/0", "::/0"]


def _address(value: Any) -> str | None:
    """``value`` as a normalised address or CIDR, or None when it is neither."""
    try:
        return (
            str(ipaddress.ip_network(str(value), strict=False))
            if "/" in str(value)
            else str(ipaddress.ip_address(str(value)))
        )
    except ValueError:
        return None


def allowed_sources(
    allowed_from: list[Any], groups: Mapping[str, list[str]], hostvars: Mapping[str, Any], what: str
) -> list[str]:
    """Resolve inventory group names, addresses/CIDRs and ``any`` to a sorted list of addresses/CIDRs."""
    if not isinstance(allowed_from, list):
        raise AnsibleFilterError(f"{what} must be a list of inventory groups, addresses or 'any', not {allowed_from!r}")
    sources: set[str] = set()
    for entry in allowed_from:
        if entry == "any":
            sources.update(ANY)
        elif isinstance(entry, str) and entry in groups:
            for host in groups[entry]:
                raw = hostvars[host].get("ansible_host", host)
                addr = _address(raw)
                if addr is None:
                    raise AnsibleFilterError(
                        f"{what} names group '{entry}', whose host {host} has ansible_host {raw!r}: firewall rules "
                        "need addresses. Set ansible_host to the host's address, or list its address instead."
                    )
                sources.add(addr)
        elif (addr := _address(entry)) is not None:
            sources.add(addr)
        else:
            raise AnsibleFilterError(f"{what}: {entry!r} is neither an inventory group, an address or CIDR, nor 'any'")
    return sorted(sources)


def _port(value: Any, what: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = 0
    if not 1 <= port <= 65535:
        raise AnsibleFilterError(f"{what} must be a port between 1 and 65535, not {value!r}")
    return port


SETTINGS = (
    "name",
    "version",
    "engine",
    "custom_profile",
    "port",
    "metrics_port",
    "grpc_port",
    "bind_address",
    "api_allowed_from",
    "metrics_allowed_from",
    "grpc_allowed_from",
)


@lru_cache(maxsize=1)
def role_defaults() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The model_server role's defaults of the service settings, and its engine profiles."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    profiles = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["__model_server_profiles"]
    settings = {key: defaults[f"model_server_{key}"] for key in SETTINGS}
    if any(isinstance(v, str) and "{{" in v for v in settings.values()):
        raise AnsibleFilterError("model_service: a service setting among model_server's defaults is a template")
    return settings, profiles


def model_service(
    variables: Mapping[str, Any], groups: Mapping[str, list[str]], hostvars: Mapping[str, Any]
) -> dict[str, Any]:
    """Describe the model service of a host from its variables (``hostvars[host]``, or the role's own).

    Settings the variables lack take the model_server role's defaults, so the service of any host can
    be described anywhere (a load balancer, Prometheus, a run limited with --limit). A host that
    serves no model (no ``model_server_name``) has no service: ``{}``.
    """
    defaults, profiles = role_defaults()
    settings = {key: variables.get(f"model_server_{key}", default) for key, default in defaults.items()}
    if not settings["name"]:
        return {}
    engine = settings["engine"]
    if engine == "custom":
        profile = {**profiles["mlserver"], **(settings["custom_profile"] or {})}
    elif engine in profiles:
        profile = profiles[engine]
    else:
        raise AnsibleFilterError(f"model_server_engine: {engine!r} is none of {', '.join(sorted(profiles))}, custom")
    address = variables.get("ansible_host", variables.get("inventory_hostname"))
    return describe({**settings, "profile": profile, "address": address}, groups, hostvars)


def describe(spec: Mapping[str, Any], groups: Mapping[str, list[str]], hostvars: Mapping[str, Any]) -> dict[str, Any]:
    """The service of explicit settings and an engine profile (ports, rules, health and metrics paths)."""
    required = ("name", "version", "engine", "profile", "address", "port", "bind_address")
    missing = [key for key in required if spec.get(key) in (None, "")]
    if missing:
        raise AnsibleFilterError(f"model_service: the service needs {', '.join(missing)}")
    name, profile = str(spec["name"]), spec["profile"]
    protocol = profile.get("health_protocol", "v2")
    if protocol not in HEALTH_PATHS:
        raise AnsibleFilterError(f"model_service: unknown health protocol {protocol!r} in the engine profile")

    api = _port(spec["port"], "model_server_port")
    metrics = _port(spec.get("metrics_port"), "model_server_metrics_port") if profile.get("metrics_port") else None
    grpc = _port(spec.get("grpc_port"), "model_server_grpc_port") if profile.get("grpc_port") else None
    # (purpose, host port, container port, who may reach it)
    ports = [("API", api, profile["http_port"], "api")]
    if metrics:
        ports.append(("metrics", metrics, profile["metrics_port"], "metrics"))
    if grpc:
        ports.append(("gRPC", grpc, profile["grpc_port"], "grpc"))
    host_ports = [p[1] for p in ports]
    if len(set(host_ports)) != len(host_ports):
        raise AnsibleFilterError(f"model_service: {name} publishes host port {host_ports} more than once")

    publish, firewall = [], []
    for label, host_port, container_port, key in ports:
        what = f"model_server_{key}_allowed_from"
        sources = allowed_sources(spec.get(f"{key}_allowed_from", []), groups, hostvars, what)
        if not sources:
            raise AnsibleFilterError(
                f"{what} is empty, so nobody could reach the {label} port {host_port} of {name}: name the "
                "inventory groups or addresses that may, or 'any'"
            )
        publish.append(f"{spec['bind_address']}:{host_port}:{container_port}")
        firewall.append({"port": host_port, "proto": "tcp", "sources": sources, "comment": f"{name} {label}"})

    metrics_endpoint = None
    if metrics:
        metrics_endpoint = {"port": metrics, "path": profile.get("metrics_path", "/metrics")}
    elif profile.get("metrics_on_api_port"):
        metrics_endpoint = {"port": api, "path": profile.get("metrics_path", "/metrics")}
    return {
        "name": name,
        "version": str(spec["version"]),
        "engine": spec["engine"],
        "address": str(spec["address"]),
        "port": api,
        "profile": dict(profile),
        "health_protocol": protocol,
        "health_path": HEALTH_PATHS[protocol].format(name=name),
        "metrics": metrics_endpoint,
        "publish": publish,
        "firewall": firewall,
    }


def lb_servers(
    model: Mapping[str, Any], groups: Mapping[str, list[str]], hostvars: Mapping[str, Any], default_group: str
) -> list[dict[str, Any]]:
    """The load balancer's servers of one model: every host of the model's group whose service serves it.

    The services are described from the hosts' variables here, so a run limited to the load balancer
    (``--limit``) renders every server.
    """
    group = model.get("group") or default_group
    weights = model.get("weights") or {}
    servers = []
    for host in groups.get(group, []):
        service = model_service(hostvars[host], groups, hostvars)
        if service.get("name") != model.get("name"):
            continue
        weight = 100
        # The last matching key wins: a host name or a group the host belongs to.
        for key, value in weights.items():
            if key == host or host in groups.get(key, []):
                weight = int(value)
        servers.append(
            {
                "name": host,
                "address": service["address"],
                "port": service["port"],
                "health_path": service["health_path"],
                "weight": weight,
            }
        )
    return servers


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"model_service": model_service, "lb_servers": lb_servers, "allowed_sources": allowed_sources}

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
    "replicas",
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
    variables: Mapping[str, Any], groups: Mapping[str, list[str]], hostvars: Mapping[str, Any], host: str | None = None
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
    host = host or variables.get("inventory_hostname") or address
    return describe({**settings, "profile": profile, "address": address, "host": host}, groups, hostvars)


MAX_REPLICAS = 64


def replica_count(value: Any) -> int:
    """``model_server_replicas``: a whole number of containers on the host, 1 to 64."""
    if isinstance(value, bool) or not str(value).strip().isdigit() or not 1 <= int(value) <= MAX_REPLICAS:
        raise AnsibleFilterError(
            f"model_server_replicas must be a whole number of containers between 1 and {MAX_REPLICAS}, not {value!r}"
        )
    return int(value)


def replica_names(name: str, host: str, index: int) -> tuple[str, str]:
    """The container and the load balancer server of replica ``index``: replica 0 keeps the names of a
    single-container host (``model-<name>``, the host's name), so adding replicas leaves it running."""
    if index == 0:
        return f"model-{name}", host
    return f"model-{name}-{index}", f"{host}-{index}"


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
    count = replica_count(spec.get("replicas", 1))
    # (purpose, first host port, container port, who may reach it); replica r publishes first + r.
    ports = [("API", api, profile["http_port"], "api")]
    if metrics:
        ports.append(("metrics", metrics, profile["metrics_port"], "metrics"))
    if grpc:
        ports.append(("gRPC", grpc, profile["grpc_port"], "grpc"))
    _check_port_ranges(name, ports, count)

    sources = {}
    for label, first, _container_port, key in ports:
        what = f"model_server_{key}_allowed_from"
        sources[key] = allowed_sources(spec.get(f"{key}_allowed_from", []), groups, hostvars, what)
        if not sources[key]:
            raise AnsibleFilterError(
                f"{what} is empty, so nobody could reach the {label} port {first} of {name}: name the "
                "inventory groups or addresses that may, or 'any'"
            )

    metrics_path = profile.get("metrics_path", "/metrics")
    host = str(spec.get("host") or spec["address"])
    replicas, publish, firewall = [], [], []
    for index in range(count):
        container, lb_server = replica_names(name, host, index)
        suffix = f" replica {index}" if count > 1 else ""
        replica_publish = []
        for label, first, container_port, key in ports:
            replica_publish.append(f"{spec['bind_address']}:{first + index}:{container_port}")
            firewall.append(
                {"port": first + index, "proto": "tcp", "sources": sources[key], "comment": f"{name} {label}{suffix}"}
            )
        publish.extend(replica_publish)
        endpoint = None
        if metrics:
            endpoint = {"port": metrics + index, "path": metrics_path}
        elif profile.get("metrics_on_api_port"):
            endpoint = {"port": api + index, "path": metrics_path}
        replicas.append(
            {
                "index": index,
                "container": container,
                "lb_server": lb_server,
                "port": api + index,
                "metrics": endpoint,
                "publish": replica_publish,
            }
        )

    return {
        "name": name,
        "version": str(spec["version"]),
        "engine": spec["engine"],
        "address": str(spec["address"]),
        "port": api,
        "profile": dict(profile),
        "health_protocol": protocol,
        "health_path": HEALTH_PATHS[protocol].format(name=name),
        "metrics": replicas[0]["metrics"],
        "publish": publish,
        "firewall": firewall,
        "replicas": replicas,
    }


def _check_port_ranges(name: str, ports: list[tuple[str, int, Any, str]], count: int) -> None:
    """Each purpose takes ``count`` consecutive host ports; no two ranges may overlap or pass 65535."""
    taken: dict[int, str] = {}
    for label, first, _container_port, _key in ports:
        if first + count - 1 > 65535:
            raise AnsibleFilterError(f"model_service: {count} replicas of {name} from {label} port {first} pass 65535")
        for index in range(count):
            port = first + index
            owner = f"the {label} port of replica {index}" if count > 1 else f"the {label} port"
            if port in taken:
                hint = (
                    " Replica r publishes each port + r: leave room between model_server_port, "
                    "model_server_metrics_port and model_server_grpc_port, or lower model_server_replicas."
                    if count > 1
                    else ""
                )
                raise AnsibleFilterError(
                    f"model_service: {name} would publish host port {port} twice ({taken[port]} and {owner}).{hint}"
                )
            taken[port] = owner


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
        service = model_service(hostvars[host], groups, hostvars, host)
        if service.get("name") != model.get("name"):
            continue
        weight = 100
        # The last matching key wins: a host name or a group the host belongs to.
        for key, value in weights.items():
            if key == host or host in groups.get(key, []):
                weight = int(value)
        servers.extend(
            {
                "name": replica["lb_server"],
                "host": host,
                "replica": replica["index"],
                "address": service["address"],
                "port": replica["port"],
                "health_path": service["health_path"],
                "weight": weight,
            }
            for replica in service["replicas"]
        )
    names = [server["name"] for server in servers]
    if clash := sorted({name for name in names if names.count(name) > 1}):
        raise AnsibleFilterError(
            f"lb_servers: backend {model.get('name')} would have two servers named {', '.join(clash)}: a host's "
            "replica r is the server <host>-<r>, so an inventory host may not be named like another's replica"
        )
    return servers


def port_users(
    ports: list[Any], listeners: list[Mapping[str, Any]] | None, containers: list[Mapping[str, Any]] | None, model: str
) -> list[str]:
    """Who else uses ``ports`` on a host: listening processes (``listen_ports_facts``' tcp_listen, docker's
    own proxy left out) and containers that are not a replica of ``model`` (``docker_host_info``)."""
    wanted = {int(p) for p in ports}
    found: list[str] = []
    for listener in listeners or []:
        if listener.get("port") in wanted and listener.get("name") != "docker-proxy":
            found.append(f"port {listener['port']} is used by process {listener.get('name') or '?'}")
    for container in containers or []:
        if (container.get("Labels") or {}).get("io.mlfleet.model") == model:
            continue
        name = str((container.get("Names") or ["?"])[0]).lstrip("/")
        for published in container.get("Ports") or []:
            if published.get("PublicPort") in wanted:
                found.append(f"port {published['PublicPort']} is published by container {name}")
    return sorted(set(found))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "model_service": model_service,
            "lb_servers": lb_servers,
            "allowed_sources": allowed_sources,
            "port_users": port_users,
        }

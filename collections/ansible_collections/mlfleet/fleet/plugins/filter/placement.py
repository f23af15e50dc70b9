# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Place a host's model deployments on its devices: replicas on whole GPUs, MIG devices or CPU sets.

The input is the host's list of deployments (inventory data) and its ``accelerator_facts``; the output
is one record per replica (container name, ports, devices, CPU set, memory). A plan that does not fit
the host is refused with a message naming the host, the deployment and the device, before anything
changes. Pure function over its arguments, so the same plan is shown by ``--check`` and followed by a
run.
"""

from __future__ import annotations

import re
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.mlfleet.fleet.plugins.module_utils.accelerator import format_cpulist, parse_cpulist

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_MEMORY_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)b?\s*$", re.IGNORECASE)
_MIB_PER_UNIT = {"": 1 / (1024 * 1024), "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
_DERIVED_REPLICAS = ("per_gpu", "per_mig_device", "per_numa_node")

# Keys a deployment may have; anything else is a typo and refused (a silently ignored
# `gpu_per_replica` would place a model without its GPU).
DEPLOYMENT_KEYS = frozenset(
    {
        "name",
        "model",
        "version",
        "engine",
        "replicas",
        "gpus_per_replica",
        "gpu_devices",
        "mig_profile",
        "cpus_per_replica",
        "cpusets",
        "numa_pinned",
        "memory",
        "port",
        "metrics_port",
    }
)


def memory_mib(value: Any, where: str) -> int:
    """Docker's memory notation (``512m``, ``16g``, ``2048`` bytes) or a number of MiB given as an int."""
    if isinstance(value, bool):
        raise AnsibleFilterError(f"{where}: memory {value!r} is not a size like '16g'")
    if isinstance(value, int):
        mib = value
    else:
        match = _MEMORY_RE.match(str(value))
        if not match:
            raise AnsibleFilterError(f"{where}: memory {value!r} is not a size like '512m' or '16g'")
        mib = int(int(match.group(1)) * _MIB_PER_UNIT[match.group(2).lower()])
    if mib < 1:
        raise AnsibleFilterError(f"{where}: memory {value!r} is less than 1 MiB")
    return mib


def _int(value: Any, where: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise AnsibleFilterError(f"{where} must be a whole number, got {value!r}")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise AnsibleFilterError(f"{where} must be {bound}, got {number}")
    return number


class _Host:
    """What one host has, and what the replicas placed so far hold (device -> owner)."""

    def __init__(self, host: str, facts: dict[str, Any], reserved_ports: dict[int, str]) -> None:
        self.name = host
        self.gpus: dict[int, dict[str, Any]] = {}
        for gpu in facts.get("gpus") or []:
            if gpu.get("index") is not None:
                self.gpus[int(gpu["index"])] = gpu
        numa_by_address = {
            device.get("address"): device.get("numa_node") for device in facts.get("nvidia_pci_devices") or []
        }
        self.gpu_numa = {index: numa_by_address.get(gpu.get("pci_address")) for index, gpu in self.gpus.items()}
        cpu = facts.get("cpu") or {}
        self.numa: list[dict[str, Any]] = [node for node in cpu.get("numa") or [] if node.get("cpus")]
        all_cpus = sorted({c for node in self.numa for c in node["cpus"]})
        if not all_cpus and cpu.get("logical_cores"):
            all_cpus = list(range(int(cpu["logical_cores"])))
        self.cpus = all_cpus
        self.memory_total_mib = facts.get("memory_total_mib")
        self.gpu_owner: dict[int, str] = {}
        self.mig_owner: dict[str, str] = {}
        self.cpu_owner: dict[int, str] = {}
        self.port_owner: dict[int, str] = dict(reserved_ports)

    def gpu_list(self) -> str:
        return ", ".join(str(i) for i in sorted(self.gpus)) or "none"

    def mig_devices(self) -> list[tuple[int, dict[str, Any]]]:
        return [
            (index, device)
            for index, gpu in sorted(self.gpus.items())
            if gpu.get("mig_enabled")
            for device in gpu.get("mig_devices") or []
        ]

    def claim_port(self, port: int, owner: str) -> None:
        if port in self.port_owner:
            raise AnsibleFilterError(
                f"{self.name}: port {port} is used twice: by {self.port_owner[port]} and by {owner}. "
                "Give the deployment another port (replica i listens on port + i)."
            )
        self.port_owner[port] = owner

    def claim_cpus(self, cpus: list[int], owner: str) -> None:
        unknown = [c for c in cpus if self.cpus and c not in self.cpus]
        if unknown:
            raise AnsibleFilterError(
                f"{self.name}: {owner} is pinned to CPU {format_cpulist(unknown)}, which the host does not have "
                f"(CPUs {format_cpulist(self.cpus)})"
            )
        for c in cpus:
            if c in self.cpu_owner:
                raise AnsibleFilterError(
                    f"{self.name}: CPU {c} is used twice: by {self.cpu_owner[c]} and by {owner}. "
                    "Give each replica its own CPUs (cpusets, cpus_per_replica)."
                )
        for c in cpus:
            self.cpu_owner[c] = owner

    def free_cpus(self, node: dict[str, Any] | None) -> list[int]:
        pool = node["cpus"] if node else self.cpus
        return [c for c in pool if c not in self.cpu_owner]


def _check_keys(deployment: dict[str, Any], where: str) -> None:
    unknown = sorted(set(deployment) - DEPLOYMENT_KEYS)
    if unknown:
        raise AnsibleFilterError(
            f"{where}: unknown option(s) {', '.join(unknown)}; a deployment takes {', '.join(sorted(DEPLOYMENT_KEYS))}"
        )
    for required in ("name", "version", "port"):
        if deployment.get(required) in (None, ""):
            raise AnsibleFilterError(f"{where}: '{required}' is required")
    if not _NAME_RE.match(str(deployment["name"])):
        raise AnsibleFilterError(
            f"{where}: name {deployment['name']!r} must be lower-case letters, digits, '.', '_' or '-' "
            "(it names the containers)"
        )


def _replica_count(spec: Any, where: str, host: _Host, deployment: dict[str, Any], gpus_per_replica: int) -> int:
    if spec in _DERIVED_REPLICAS:
        if spec == "per_gpu":
            if gpus_per_replica < 1:
                raise AnsibleFilterError(f"{where}: replicas per_gpu needs whole GPUs (gpus_per_replica >= 1)")
            pool = deployment.get("gpu_devices")
            whole = [i for i, gpu in sorted(host.gpus.items()) if not gpu.get("mig_enabled")]
            count = len(pool) if pool is not None else len([i for i in whole if i not in host.gpu_owner])
            replicas = count // gpus_per_replica
            if replicas < 1:
                raise AnsibleFilterError(
                    f"{where}: replicas per_gpu with {gpus_per_replica} GPU(s) each, but the host has "
                    f"{count} free whole GPU(s) (GPUs: {host.gpu_list()})"
                )
            return replicas
        if spec == "per_mig_device":
            profile = deployment.get("mig_profile")
            if not profile:
                raise AnsibleFilterError(f"{where}: replicas per_mig_device needs a mig_profile")
            return max(1, len([d for _i, d in host.mig_devices() if d.get("profile") == profile]))
        if not host.numa:
            raise AnsibleFilterError(f"{where}: replicas per_numa_node, but the host reports no NUMA nodes")
        return len(host.numa)
    if isinstance(spec, str) and not spec.strip().isdigit():
        raise AnsibleFilterError(
            f"{where}: replicas must be a number or one of {', '.join(_DERIVED_REPLICAS)}, got {spec!r}"
        )
    return _int(spec, f"{where}: replicas", 1)


def _place_gpus(where: str, host: _Host, deployment: dict[str, Any], replicas: int, per: int) -> list[list[int]]:
    explicit = deployment.get("gpu_devices")
    if explicit is not None:
        if not isinstance(explicit, list) or not explicit:
            raise AnsibleFilterError(f"{where}: gpu_devices must be a non-empty list of GPU indexes")
        pool = [_int(i, f"{where}: gpu_devices item", 0) for i in explicit]
        for index in pool:
            if index not in host.gpus:
                raise AnsibleFilterError(
                    f"{host.name}: {where} asks for GPU {index}, which the host does not have (GPUs: {host.gpu_list()})"
                )
            if pool.count(index) > 1:
                raise AnsibleFilterError(f"{host.name}: {where} lists GPU {index} twice in gpu_devices")
    else:
        pool = [i for i, gpu in sorted(host.gpus.items()) if not gpu.get("mig_enabled") and i not in host.gpu_owner]
    need = replicas * per
    if explicit is not None and need != len(pool):
        raise AnsibleFilterError(
            f"{host.name}: {where} lists {len(pool)} GPU(s) in gpu_devices, but {replicas} replica(s) x {per} "
            f"use {need}; list exactly the GPUs the replicas use"
        )
    if need > len(pool):
        whole = len([g for g in host.gpus.values() if not g.get("mig_enabled")])
        raise AnsibleFilterError(
            f"{host.name}: {where} asks for {need} GPU(s) ({replicas} replica(s) x {per}), but "
            + f"{len(pool)} of the host's {whole} whole GPU(s) are free"
            + f" (GPUs: {host.gpu_list()}). Lower replicas or gpus_per_replica."
        )
    groups = [pool[r * per : (r + 1) * per] for r in range(replicas)]
    for r, group in enumerate(groups):
        owner = f"{deployment['name']}-{r}"
        for index in group:
            if host.gpus[index].get("mig_enabled"):
                raise AnsibleFilterError(
                    f"{host.name}: {where} asks for the whole GPU {index}, which is in MIG mode; "
                    "place it on a MIG device (mig_profile) or turn MIG off on that GPU"
                )
            if index in host.gpu_owner:
                raise AnsibleFilterError(
                    f"{host.name}: GPU {index} is used twice: by {host.gpu_owner[index]} and by {owner}. "
                    "Give each deployment its own gpu_devices."
                )
            host.gpu_owner[index] = owner
    return groups


def _place_mig(where: str, host: _Host, deployment: dict[str, Any], replicas: int) -> list[tuple[int, dict[str, Any]]]:
    profile = str(deployment["mig_profile"])
    devices = host.mig_devices()
    present = sorted({str(d.get("profile")) for _i, d in devices})
    if profile not in present:
        have = f"its MIG devices are {', '.join(present)}" if present else "it has no MIG devices (MIG is off)"
        raise AnsibleFilterError(
            f"{host.name}: {where} asks for MIG profile {profile!r}, which no GPU of the host offers: {have}. "
            "Change mig_profile or the MIG layout (nvidia_gpu_mig_profiles)."
        )
    free = [(i, d) for i, d in devices if d.get("profile") == profile and d.get("uuid") not in host.mig_owner]
    if replicas > len(free):
        raise AnsibleFilterError(
            f"{host.name}: {where} asks for {replicas} MIG device(s) of profile {profile}, but {len(free)} are free"
        )
    chosen = free[:replicas]
    for r, (_index, device) in enumerate(chosen):
        host.mig_owner[device["uuid"]] = f"{deployment['name']}-{r}"
    return chosen


def _numa_node(host: _Host, node_id: int | None) -> dict[str, Any] | None:
    return next((node for node in host.numa if node["node"] == node_id), None)


def _place_cpus(
    where: str, host: _Host, deployment: dict[str, Any], replica: int, first_gpu: int | None, numa: bool
) -> tuple[list[int], int | None]:
    owner = f"{deployment['name']}-{replica}"
    cpusets = deployment.get("cpusets")
    per = _int(deployment.get("cpus_per_replica", 0), f"{where}: cpus_per_replica", 0)
    if cpusets is not None:
        try:
            cpus = parse_cpulist(str(cpusets[replica]))
        except ValueError as exc:
            raise AnsibleFilterError(f"{host.name}: {where}: cpusets[{replica}]: {exc}") from exc
        host.claim_cpus(cpus, owner)
        nodes = {node["node"] for node in host.numa if set(cpus) & set(node["cpus"])}
        return cpus, nodes.pop() if len(nodes) == 1 else None
    if numa:
        if first_gpu is None and replica >= len(host.numa):
            raise AnsibleFilterError(
                f"{host.name}: {where}: replica {replica} has no NUMA node of its own "
                f"(the host has {len(host.numa)}); lower replicas or use per_numa_node"
            )
        node = host.numa[replica] if first_gpu is None else _numa_node(host, host.gpu_numa.get(first_gpu))
        if node is None:
            raise AnsibleFilterError(f"{host.name}: {where}: the NUMA node of replica {replica} is unknown")
        free = host.free_cpus(node)
        cpus = free[:per] if per else list(node["cpus"])
        if per and len(cpus) < per:
            raise AnsibleFilterError(
                f"{host.name}: {where}: replica {replica} needs {per} CPU(s) on NUMA node {node['node']}, "
                f"{len(free)} are free there"
            )
        host.claim_cpus(cpus, owner)
        return cpus, node["node"]
    if not per:
        return [], None
    # Prefer the NUMA node of the replica's GPU, then the node with the most free CPUs.
    candidates = sorted(host.numa, key=lambda n: (n["node"] != host.gpu_numa.get(first_gpu), -len(host.free_cpus(n))))
    for node in candidates or [None]:
        free = host.free_cpus(node)
        if len(free) >= per:
            host.claim_cpus(free[:per], owner)
            return free[:per], node["node"] if node else None
    raise AnsibleFilterError(
        f"{host.name}: {where}: replica {replica} needs {per} CPU(s), but no NUMA node has that many free "
        f"({len(host.free_cpus(None))} free of {len(host.cpus)})"
    )


def placement(
    deployments: list[dict[str, Any]],
    facts: dict[str, Any],
    host: str = "host",
    reserved_ports: dict[Any, str] | None = None,
    memory_reserve_mib: int = 1024,
) -> list[dict[str, Any]]:
    """One record per replica of ``deployments`` on a host with accelerator ``facts``, or a refusal."""
    if not isinstance(deployments, list):
        raise AnsibleFilterError(f"{host}: the deployments must be a list, got {type(deployments).__name__}")
    facts = facts or {}
    reserved = {_int(p, f"{host}: reserved port", 1, 65535): str(o) for p, o in (reserved_ports or {}).items()}
    state = _Host(host, facts, reserved)
    names: set[str] = set()
    replicas_out: list[dict[str, Any]] = []
    asked_mib: list[tuple[str, int, int]] = []

    for position, deployment in enumerate(deployments):
        if not isinstance(deployment, dict):
            raise AnsibleFilterError(f"{host}: deployment #{position + 1} must be a mapping, got {deployment!r}")
        where = f"deployment {deployment.get('name') or '#' + str(position + 1)}"
        _check_keys(deployment, where)
        name = str(deployment["name"])
        if name in names:
            raise AnsibleFilterError(f"{host}: two deployments are named {name}")
        names.add(name)

        mig_profile = deployment.get("mig_profile")
        per_gpu = _int(
            deployment.get("gpus_per_replica", 1 if deployment.get("replicas") == "per_gpu" else 0),
            f"{where}: gpus_per_replica",
            0,
            64,
        )
        if mig_profile and (per_gpu or deployment.get("gpu_devices")):
            raise AnsibleFilterError(
                f"{where}: mig_profile and whole GPUs (gpus_per_replica, gpu_devices) exclude each other"
            )
        if deployment.get("gpu_devices") is not None and not per_gpu:
            per_gpu = 1
        # An explicit GPU list is used whole: by default one replica per gpus_per_replica of it.
        spec = deployment.get("replicas", "per_gpu" if deployment.get("gpu_devices") is not None else 1)
        numa = bool(deployment.get("numa_pinned", False)) or spec == "per_numa_node"
        count = _replica_count(spec, where, state, deployment, per_gpu)
        cpusets = deployment.get("cpusets")
        if cpusets is not None and (not isinstance(cpusets, list) or len(cpusets) != count):
            raise AnsibleFilterError(f"{where}: cpusets must list one CPU set per replica ({count})")
        memory = memory_mib(deployment.get("memory", "2g"), where)
        port = _int(deployment["port"], f"{where}: port", 1, 65535)
        metrics = deployment.get("metrics_port")
        metrics_port = _int(metrics, f"{where}: metrics_port", 1, 65535) if metrics is not None else None
        if port + count - 1 > 65535 or (metrics_port and metrics_port + count - 1 > 65535):
            raise AnsibleFilterError(f"{where}: {count} replicas from port {port} run past port 65535")

        no_gpus: list[list[int]] = [[] for _replica in range(count)]
        gpu_groups = _place_gpus(where, state, deployment, count, per_gpu) if per_gpu else no_gpus
        mig = _place_mig(where, state, deployment, count) if mig_profile else [None] * count

        for r in range(count):
            replica_name = f"{name}-{r}"
            gpus = gpu_groups[r]
            first_gpu = gpus[0] if gpus else (mig[r][0] if mig[r] else None)
            cpus, node = _place_cpus(where, state, deployment, r, first_gpu, numa)
            state.claim_port(port + r, f"{replica_name} (API)")
            if metrics_port is not None:
                state.claim_port(metrics_port + r, f"{replica_name} (metrics)")
            if gpus:
                device = "GPU " + ",".join(str(i) for i in gpus)
                device_ids = [str(state.gpus[i].get("uuid") or i) for i in gpus]
            elif mig[r]:
                index, mig_device = mig[r]
                device = f"MIG {mig_device['profile']} on GPU {index} (device {mig_device['device']})"
                device_ids = [str(mig_device["uuid"])]
            else:
                device = f"CPU {format_cpulist(cpus)}" if cpus else "CPU (shared)"
                device_ids = []
            if node is not None and not device.startswith("MIG"):
                device += f" (NUMA {node})"
            asked_mib.append((replica_name, memory, node if numa else -1))
            replicas_out.append(
                {
                    "host": host,
                    "deployment": name,
                    "model": str(deployment.get("model") or name),
                    "version": str(deployment["version"]),
                    "engine": str(deployment.get("engine") or "mlserver"),
                    "replica": r,
                    "name": replica_name,
                    "port": port + r,
                    "metrics_port": metrics_port + r if metrics_port is not None else None,
                    "gpus": gpus,
                    "mig_device": mig[r][1]["uuid"] if mig[r] else None,
                    "device_ids": device_ids,
                    "cpuset_cpus": format_cpulist(cpus) or None,
                    "cpuset_mems": str(node) if numa and node is not None else None,
                    "numa_node": node,
                    "memory_mib": memory,
                    "device": device,
                }
            )

    _check_memory(host, state, asked_mib, _int(memory_reserve_mib, f"{host}: memory_reserve_mib", 0))
    return replicas_out


def _check_memory(host: str, state: _Host, asked: list[tuple[str, int, int]], reserve: int) -> None:
    total = state.memory_total_mib
    if total is None:
        return
    used = sum(mib for _name, mib, _node in asked)
    if used + reserve > int(total):
        biggest = ", ".join(f"{name} {mib} MiB" for name, mib, _node in sorted(asked, key=lambda a: -a[1])[:4])
        raise AnsibleFilterError(
            f"{host}: memory overcommitted: the replicas ask {used} MiB ({biggest}) plus {reserve} MiB kept for the "
            f"host, but it has {total} MiB. Lower memory or replicas."
        )
    for node in state.numa:
        pinned = [(name, mib) for name, mib, n in asked if n == node["node"]]
        node_mib = node.get("memory_total_mib")
        if pinned and node_mib is not None and sum(mib for _n, mib in pinned) > int(node_mib):
            raise AnsibleFilterError(
                f"{host}: memory overcommitted on NUMA node {node['node']}: "
                f"{', '.join(f'{n} {m} MiB' for n, m in pinned)} > {node_mib} MiB"
            )


class FilterModule:
    """Placement of model replicas on a host's devices."""

    def filters(self) -> dict[str, Any]:
        return {"placement": placement}

"""docs/deployments.md shows example hosts and where their replicas land; this keeps those tables true.

Each example section quotes a host_vars file of inventories/example; the host's model_server settings
(role defaults, group_vars, host_vars) are placed with the placement filter on the recorded facts the
section names, as the role's placement.yml does, and every row of the table under it must match the
replica of the same container.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from ansible_collections.mlfleet.fleet.plugins.filter.model_service import model_service
from ansible_collections.mlfleet.fleet.plugins.filter.placement import placement
from conftest import ROOT
from test_placement_filter import H100X8, MIG

DOC = ROOT / "docs" / "deployments.md"
EXAMPLE = ROOT / "inventories" / "example"
ROLE = ROOT / "collections" / "ansible_collections" / "mlfleet" / "fleet" / "roles" / "model_server"
CPU_ONLY = {**H100X8, "gpus": [], "nvidia_pci_devices": []}
# Section title -> (host, its groups with group_vars, recorded facts)
HOSTS = {
    "An 8-GPU vLLM host": ("gpu-h100-01.ml.example.internal", ["inference", "gpu_inference"], H100X8),
    "A MIG-sliced host": ("gpu-a100-mig-01.ml.example.internal", ["inference", "gpu_inference"], MIG),
    "A CPU host": ("cpu-big-01.ml.example.internal", ["inference", "cpu_inference"], CPU_ONLY),
}


def _load(path) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def sections() -> dict[str, str]:
    parts = re.split(r"^## ", DOC.read_text(), flags=re.MULTILINE)
    return {part.splitlines()[0]: part for part in parts[1:]}


def section(title: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    (text,) = [text for name, text in sections().items() if name.startswith(title)]
    block = re.search(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    assert block, f"no YAML block under '{title}'"
    rows = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    table = [dict(zip(header, (cell.strip() for cell in row.strip("|").split("|")), strict=True)) for row in rows[2:]]
    return yaml.safe_load(block.group(1)), table


def host_settings(host: str, groups: list[str]) -> dict[str, Any]:
    settings = _load(ROLE / "defaults" / "main.yml")
    for group in groups:
        settings |= _load(EXAMPLE / "group_vars" / group / "model_server.yml")
    return settings | _load(EXAMPLE / "host_vars" / f"{host}.yml") | {"inventory_hostname": host}


def service(settings: dict[str, Any]) -> dict[str, Any]:
    # The example's allowed_from names groups; who may connect does not change where replicas run.
    anyone = {"model_server_api_allowed_from": ["any"], "model_server_metrics_allowed_from": ["any"]}
    return model_service(settings | anyone, {}, {})


def plan(settings: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """The deployment the role's placement.yml builds from the model_server settings."""
    svc = service(settings)
    gpus = settings["model_server_gpus"]
    metrics = svc["metrics"]
    return {
        "name": settings["model_server_name"],
        "version": str(settings["model_server_version"]),
        "engine": settings["model_server_engine"],
        "replicas": settings["model_server_replicas"],
        "gpus_per_replica": 0 if gpus is None else len(facts["gpus"]) if gpus == "all" else int(gpus),
        "mig_profile": settings["model_server_mig_profile"],
        "cpus_per_replica": settings["model_server_cpus_per_replica"] or 0,
        "cpusets": settings["model_server_cpusets"],
        "numa_pinned": settings["model_server_numa_pinned"],
        "memory": settings["model_server_memory"],
        "port": svc["port"],
        "metrics_port": metrics["port"] if metrics and metrics["port"] != svc["port"] else None,
    }


def test_every_example_section_is_checked() -> None:
    examples = [name for name, text in sections().items() if "```yaml" in text]
    assert sorted(examples) == sorted(name for name in sections() if any(name.startswith(t) for t in HOSTS))
    assert len(examples) == len(HOSTS)


def test_the_plan_here_has_the_keys_of_the_roles_plan() -> None:
    tasks = yaml.safe_load((ROLE / "tasks" / "placement.yml").read_text())
    (role_plan,) = [t["vars"]["__model_server_plan"] for t in tasks if "vars" in t]
    assert set(role_plan) == set(plan(host_settings(*HOSTS["A CPU host"][:2]), CPU_ONLY))


@pytest.mark.parametrize("title", sorted(HOSTS))
def test_the_docs_quote_the_example_inventory_and_show_what_the_filter_places(title: str) -> None:
    host, groups, facts = HOSTS[title]
    quoted, table = section(title)
    host_vars = _load(EXAMPLE / "host_vars" / f"{host}.yml")
    assert {key: host_vars[key] for key in quoted} == quoted, f"{title} quotes {host}'s host_vars wrongly"

    settings = host_settings(host, groups)
    containers = {r["index"]: r["container"] for r in service(settings)["replicas"]}
    placed = {containers[r["replica"]]: r for r in placement([plan(settings, facts)], facts, host)}
    assert table, title
    for row in table:
        replica = placed[row["Replica"]]
        assert row["Device"] == replica["device"], row
        if "CPUs" in row:
            assert row["CPUs"] == replica["cpuset_cpus"], row
        if "CPUs / memory node" in row:
            assert row["CPUs / memory node"] == f"{replica['cpuset_cpus']} / {replica['cpuset_mems']}", row
        ports = row.get("Port") or row.get("Ports")
        expected = [replica["port"]] + ([replica["metrics_port"]] if replica["metrics_port"] else [])
        assert ports == ", ".join(str(p) for p in expected), row


def test_the_rollout_plan_shown_is_the_one_the_rollout_follows() -> None:
    from ansible_collections.mlfleet.fleet.plugins.filter.rollout import rollout_plan

    part = sections()["Rolling out replica by replica"]
    shown = [line for line in part.splitlines() if line.startswith("batch ")]
    host, groups, _facts = HOSTS["An 8-GPU vLLM host"]
    replicas = host_settings(host, groups)["model_server_replicas"]
    plan = rollout_plan([{"host": host, "to": "v2", "replicas": replicas}], [1, "25%", "100%"])
    assert shown == [line for line in plan if line.startswith("batch ")]

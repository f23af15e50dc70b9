"""docs/deployments.md shows deployments and where they land; this keeps those tables true.

Each example section's YAML block is placed with the placement filter on the recorded facts the
section names, and every row of the table under it must match the replica of the same name.
"""

from __future__ import annotations

import re

import pytest
import yaml
from ansible_collections.mlfleet.fleet.plugins.filter.placement import placement
from conftest import ROOT
from test_placement_filter import H100X8, MIG

DOC = ROOT / "docs" / "deployments.md"
FACTS = {
    "An 8-GPU vLLM host": H100X8,
    "A MIG-sliced host": MIG,
    "A CPU host": {**H100X8, "gpus": [], "nvidia_pci_devices": []},
}


def sections() -> dict[str, str]:
    parts = re.split(r"^## ", DOC.read_text(), flags=re.MULTILINE)
    return {part.splitlines()[0]: part for part in parts[1:]}


def example(title: str) -> tuple[list[dict], list[dict[str, str]]]:
    (section,) = [text for name, text in sections().items() if name.startswith(title)]
    block = re.search(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    assert block, f"no YAML block under '{title}'"
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    table = [dict(zip(header, (cell.strip() for cell in row.strip("|").split("|")), strict=True)) for row in rows[2:]]
    return yaml.safe_load(block.group(1))["deployments"], table


def test_every_example_section_is_checked():
    examples = [name for name, text in sections().items() if "```yaml" in text]
    assert sorted(examples) == sorted(name for name in sections() if any(name.startswith(t) for t in FACTS))
    assert len(examples) == len(FACTS)


@pytest.mark.parametrize("title", sorted(FACTS))
def test_the_tables_show_what_the_filter_places(title):
    deployments, table = example(title)
    placed = {replica["name"]: replica for replica in placement(deployments, FACTS[title], "doc-host")}
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

"""What the model_server role tells Prometheus about each replica it starts (node-exporter textfile).

The role's template is rendered by Ansible for the placements the placement filter produces (CPU,
two whole GPUs for tensor parallelism, a MIG slice, a definition recorded before replicas existed),
then checked with promtool the way node-exporter reads it; the DCGM join of those series is tested
in fixtures/prometheus/rules_test.yml.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from playbook_runner import run_playbook
from test_prometheus_rules import promtool  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "collections/ansible_collections/mlfleet/fleet/roles/model_server/templates/mlfleet_replica.prom.j2"

REPLICAS = [
    {"index": 0, "container": "model-iris", "device": "CPU 0-3 (NUMA 0)", "device_ids": []},
    {"index": 1, "container": "model-llm-1", "device": "GPU 2,3 (NUMA 1)", "device_ids": ["GPU-77d0", "GPU-9ab3"]},
    {
        "index": 2,
        "container": "model-llm-2",
        "device": "MIG 1g.10gb on GPU 4 (device 0)",
        "device_ids": ["MIG-1c2d"],
    },
    {"index": 0, "container": "model-old"},
]


def render(tmp_path: Path) -> dict[str, str]:
    out = tmp_path / "textfile"
    out.mkdir()
    play = {
        "name": "Render the replica textfile",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Render one file per replica",
                "ansible.builtin.template": {
                    "src": str(TEMPLATE),
                    "dest": f"{out}/mlfleet_replica_{{{{ item.container }}}}.prom",
                    "mode": "0644",
                },
                "loop": REPLICAS,
                "vars": {"__model_server_definition": {"model": "llm", "version": 'v2 "tp"'}},
            }
        ],
    }
    res = run_playbook(tmp_path, "inventories/lab", [play])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert json.loads(res.stdout)["stats"]["localhost"]["failures"] == 0
    return {p.name: p.read_text() for p in sorted(out.iterdir())}


def series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_each_replica_names_its_model_version_and_placement_and_each_whole_gpu(tmp_path, promtool):  # noqa: F811
    files = render(tmp_path)
    common = 'model="llm",version="v2 \\"tp\\""'
    assert series(files["mlfleet_replica_model-iris.prom"]) == [
        f'mlfleet_replica_info{{{common},replica="0",container="model-iris",placement="CPU 0-3 (NUMA 0)"}} 1'
    ]
    # Tensor parallel over two GPUs: one GPU series each, with its UUID, to join DCGM on (host, gpu).
    assert series(files["mlfleet_replica_model-llm-1.prom"]) == [
        f'mlfleet_replica_info{{{common},replica="1",container="model-llm-1",placement="GPU 2,3 (NUMA 1)"}} 1',
        f'mlfleet_replica_gpu_info{{{common},replica="1",container="model-llm-1",gpu="2",UUID="GPU-77d0"}} 1',
        f'mlfleet_replica_gpu_info{{{common},replica="1",container="model-llm-1",gpu="3",UUID="GPU-9ab3"}} 1',
    ]
    # A MIG slice shares its GPU with other replicas: described, not joined per GPU.
    assert series(files["mlfleet_replica_model-llm-2.prom"]) == [
        f'mlfleet_replica_info{{{common},replica="2",container="model-llm-2",'
        'placement="MIG 1g.10gb on GPU 4 (device 0)"} 1'
    ]
    assert series(files["mlfleet_replica_model-old.prom"]) == [
        f'mlfleet_replica_info{{{common},replica="0",container="model-old",placement=""}} 1'
    ]
    # Every file parses as node-exporter's textfile collector reads it (exposition format, lint).
    for name, text in files.items():
        res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert res.returncode == 0, f"{name}: {res.stdout}{res.stderr}"

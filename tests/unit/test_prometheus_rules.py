"""The prometheus role's generated files, checked by Prometheus' own promtool.

The templates are rendered by Ansible itself (a throwaway playbook that loads the role's defaults), so
filters and ``ansible_managed`` behave as on a real run. promtool comes from Debian's ``prometheus``
package: tests/unit/tools/get_promtool.sh finds it on PATH or unpacks it from the package into .cache.

- the alerting rules pass ``promtool test rules`` (fixtures/prometheus/rules_test.yml): every alert
  fires on the series it is meant for and stays silent on the others;
- the scrape configuration generated from a lab-like inventory passes ``promtool check config`` and
  names the targets and labels the inventory implies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "collections" / "ansible_collections" / "mlfleet" / "fleet" / "roles" / "prometheus"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "prometheus"
GET_PROMTOOL = Path(__file__).resolve().parent / "tools" / "get_promtool.sh"

# The lab's layout (inventories/lab) with the variables the scrape configuration reads.
INVENTORY = {
    "all": {
        "children": {
            "loadbalancers": {"hosts": {"lb-1": {"ansible_host": "172.28.10.10"}}},
            "inference": {
                "vars": {
                    "model_server_name": "iris",
                    "model_server_version": "v2",
                    "model_server_image": "registry.lab:5000/iris",
                    "model_server_metrics_port": 8082,
                },
                "children": {
                    "gpu_inference": {
                        "hosts": {
                            # vLLM serves its metrics on the API port.
                            "gpu-1": {
                                "ansible_host": "172.28.10.11",
                                "model_server_engine": "vllm",
                                "model_server_name": "llm",
                                "model_server_port": 8000,
                                "model_server_metrics_port": None,
                                "nvidia_gpu_dcgm_exporter_enabled": True,
                            },
                            "gpu-2": {"ansible_host": "172.28.10.12", "nvidia_gpu_dcgm_exporter_enabled": False},
                        }
                    },
                    "cpu_inference": {
                        "hosts": {
                            # Two replicas: metrics on 8082 and 8083.
                            "cpu-1": {"ansible_host": "172.28.10.21", "model_server_replicas": 2},
                            # No metrics endpoint and an engine without metrics on its API port: not scraped.
                            "cpu-2": {
                                "ansible_host": "172.28.10.22",
                                "model_server_engine": "custom",
                                "model_server_custom_profile": {"http_port": 9000, "metrics_port": None},
                                "model_server_metrics_port": None,
                            },
                        }
                    },
                },
            },
            "monitoring": {"hosts": {"obs-1": {"ansible_host": "172.28.10.30", "ansible_connection": "local"}}},
        }
    }
}


@pytest.fixture(scope="module")
def promtool() -> str:
    res = subprocess.run([str(GET_PROMTOOL)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"could not get promtool: {res.stderr}"
    return res.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory) -> Path:
    """The rules rendered with the defaults and one per-model latency threshold."""
    return render(
        tmp_path_factory.mktemp("rules"),
        ["etc/prometheus/rules/mlfleet.yml"],
        {"prometheus_model_latency_p99_seconds": {"iris": 0.5}},
    )


def render(tmp_path: Path, templates: list[str], extra_vars: dict) -> Path:
    """Render role templates on localhost with the role's defaults plus extra_vars; return the output dir."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(INVENTORY))
    playbook = [
        {
            "name": "Render",
            "hosts": "obs-1",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Load the role's defaults",
                    "ansible.builtin.include_vars": str(ROLE / "defaults" / "main.yml"),
                },
                {
                    "name": "Render the templates",
                    "ansible.builtin.template": {
                        "src": f"{ROLE}/templates/{{{{ item }}}}.j2",
                        "dest": f"{out}/{{{{ item | basename }}}}",
                        "mode": "0644",
                    },
                    "loop": templates,
                },
            ],
        },
    ]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(playbook))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="false")
    # Extra vars beat include_vars, as inventory variables beat role defaults on a real run.
    extra = dict(extra_vars, ansible_python_interpreter=sys.executable)
    res = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(tmp_path / "inventory.yml"),
            str(tmp_path / "render.yml"),
            "-e",
            json.dumps(extra),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def test_every_alert_fires_on_its_series_and_only_there(rules_dir, promtool):
    out = rules_dir
    shutil.copy(FIXTURES / "rules_test.yml", out / "rules_test.yml")
    check = subprocess.run([promtool, "check", "rules", str(out / "mlfleet.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    res = subprocess.run([promtool, "test", "rules", str(out / "rules_test.yml")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_rules_test_covers_every_alert(rules_dir):
    rules = yaml.safe_load((rules_dir / "mlfleet.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((FIXTURES / "rules_test.yml").read_text())
    cases = [t for case in tests["tests"] for t in case.get("alert_rule_test", [])]
    tested = {t["alertname"] for t in cases if t["exp_alerts"]}
    silent = {t["alertname"] for t in cases if not t["exp_alerts"]}
    assert alerts == tested == silent
    assert len(alerts) == 14


def test_the_rules_test_covers_every_recording_rule(rules_dir):
    rules = yaml.safe_load((rules_dir / "mlfleet.yml").read_text())
    records = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    tests = yaml.safe_load((FIXTURES / "rules_test.yml").read_text())
    tested = {t["expr"] for case in tests["tests"] for t in case.get("promql_expr_test", []) if t["exp_samples"]}
    assert {r for r in records if r.startswith("mlfleet:replica_gpu_")} <= tested
    assert "mlfleet:replica_gpu_utilization:percent" in records


def test_the_lab_can_shorten_one_for_window(tmp_path):
    out = render(tmp_path, ["etc/prometheus/rules/mlfleet.yml"], {"prometheus_alert_for": {"host_down": "10s"}})
    groups = yaml.safe_load((out / "mlfleet.yml").read_text())["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    assert rules["HostDown"]["for"] == "10s"
    assert rules["ModelServerDown"]["for"] == "2m"


def test_the_scrape_configuration_follows_the_inventory(tmp_path, promtool):
    out = render(
        tmp_path,
        ["etc/prometheus/prometheus.yml", "etc/prometheus/rules/mlfleet.yml", "etc/prometheus/alertmanager.yml"],
        {"prometheus_rules_dir": str(tmp_path / "rules")},
    )
    (tmp_path / "rules").mkdir()
    shutil.copy(out / "mlfleet.yml", tmp_path / "rules" / "mlfleet.yml")
    res = subprocess.run([promtool, "check", "config", str(out / "prometheus.yml")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 rule files found" in res.stdout

    config = yaml.safe_load((out / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}

    def targets(job: str) -> dict[str, dict]:
        return {t: sc["labels"] for sc in jobs[job]["static_configs"] for t in sc["targets"]}

    node = targets("node")
    assert set(node) == {f"172.28.10.{n}:9100" for n in (10, 11, 12, 21, 22, 30)}
    assert node["172.28.10.11:9100"] == {"host": "gpu-1", "groups": ",gpu_inference,inference,"}

    # Targets, labels and metrics paths come from each host's model service (model_server_service).
    assert targets("model") == {
        "172.28.10.11:8000": {
            "host": "gpu-1",
            "groups": ",gpu_inference,inference,",
            "model": "llm",
            "version": "v2",
            "engine": "vllm",
            "replica": "0",
            "container": "model-llm",
            "__metrics_path__": "/metrics",
        },
        "172.28.10.12:8082": {
            "host": "gpu-2",
            "groups": ",gpu_inference,inference,",
            "model": "iris",
            "version": "v2",
            "engine": "mlserver",
            "replica": "0",
            "container": "model-iris",
            "__metrics_path__": "/metrics",
        },
        "172.28.10.21:8082": {
            "host": "cpu-1",
            "groups": ",cpu_inference,inference,",
            "model": "iris",
            "version": "v2",
            "engine": "mlserver",
            "replica": "0",
            "container": "model-iris",
            "__metrics_path__": "/metrics",
        },
        "172.28.10.21:8083": {
            "host": "cpu-1",
            "groups": ",cpu_inference,inference,",
            "model": "iris",
            "version": "v2",
            "engine": "mlserver",
            "replica": "1",
            "container": "model-iris-1",
            "__metrics_path__": "/metrics",
        },
    }
    assert targets("haproxy") == {"172.28.10.10:8404": {"host": "lb-1"}}
    # Only the GPU host whose inventory enables the DCGM exporter.
    assert targets("dcgm") == {"172.28.10.11:9400": {"host": "gpu-1"}}

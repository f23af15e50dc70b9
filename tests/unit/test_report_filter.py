"""The "what runs where" report: one line per replica, with its device, health and latency."""

from __future__ import annotations

from pathlib import Path

from ansible_collections.mlfleet.fleet.plugins.filter.report import HEADER, report_lines

ROLLOUT = Path(__file__).resolve().parents[2] / "collections/ansible_collections/mlfleet/fleet/roles/rollout"

DIGEST = "sha256:4f1c0e9b2a7d8c1e0000000000000000"


def gate(container: str, p50: float, failed_check: str | None = None) -> dict:
    result = {
        "container": container,
        "failed": False,
        "failed_check": failed_check,
        "latency": {"p50_ms": p50, "p99_ms": p50 * 2},
    }
    if failed_check:
        result |= {"failed": True, "msg": f"{failed_check} failed"}
    return result


def test_each_replica_has_its_line_with_device_and_health() -> None:
    hostvars = {
        "inventory_hostname": "gpu-1",
        "model_server_state": {
            "current": {
                "model": "llm",
                "version": "v3",
                "digest": DIGEST,
                "replicas": [
                    {"index": 0, "container": "model-llm", "device": "GPU 0 (NUMA 0)"},
                    {"index": 1, "container": "model-llm-1", "device": "GPU 1 (NUMA 1)"},
                ],
            }
        },
        "model_server_gates": [gate("model-llm", 1.25), gate("model-llm-1", 3.0, failed_check="infer")],
    }
    lines = report_lines(hostvars)
    assert [line.split()[:5] for line in lines] == [
        ["gpu-1", "model-llm", "GPU", "0", "(NUMA"],
        ["gpu-1", "model-llm-1", "GPU", "1", "(NUMA"],
    ]
    assert "v3" in lines[0] and DIGEST[:24] in lines[0]
    assert lines[0].split()[-3:] == ["ok", "1.2", "2.5"]
    assert lines[1].split()[-4:] == ["FAILED", "(infer)", "3.0", "6.0"]
    # The columns line up under the header.
    assert lines[0].index(" llm ") + 1 == HEADER.index("model")
    assert lines[0].index(" ok ") + 1 == HEADER.index("health")


def test_a_definition_from_before_replicas_is_one_line_with_the_gate_of_its_container() -> None:
    hostvars = {
        "inventory_hostname": "cpu-1",
        "model_server_state": {"current": {"model": "iris", "version": "v2", "digest": DIGEST}},
        "model_server_gates": [
            {
                "container": "model-iris",
                "failed": False,
                "failed_check": None,
                "latency": {"p50_ms": 0.9, "p99_ms": 2.0},
            }
        ],
    }
    [line] = report_lines(hostvars)
    assert line.split()[:3] == ["cpu-1", "model-iris", "-"]
    assert line.split()[-3:] == ["ok", "0.9", "2.0"]


def test_a_host_without_a_model_or_without_a_probe_says_so() -> None:
    assert report_lines({"inventory_hostname": "cpu-2"}) == ["cpu-2     (no model deployed)"]
    [line] = report_lines(
        {"inventory_hostname": "cpu-2", "model_server_state": {"current": {"model": "iris", "version": "v1"}}}
    )
    assert line.split()[-3:] == ["-", "-", "-"]


def test_the_report_task_prints_the_header_of_these_columns() -> None:
    assert f"['{HEADER}']" in (ROLLOUT / "tasks" / "report.yml").read_text()

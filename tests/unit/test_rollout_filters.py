from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.mlfleet.fleet.plugins.filter.rollout import rollout_batches, rollout_plan

HOSTS = ["gpu-1", "gpu-2", "cpu-1", "cpu-2"]


def test_canary_then_half_then_rest() -> None:
    assert rollout_batches(HOSTS, [1, "50%", "100%"]) == [["gpu-1"], ["gpu-2", "cpu-1"], ["cpu-2"]]


def test_the_last_size_repeats_like_serial() -> None:
    assert rollout_batches(HOSTS, [1]) == [["gpu-1"], ["gpu-2"], ["cpu-1"], ["cpu-2"]]
    assert rollout_batches(HOSTS, 3) == [["gpu-1", "gpu-2", "cpu-1"], ["cpu-2"]]


def test_a_small_percentage_still_takes_one_host() -> None:
    assert rollout_batches(HOSTS, ["10%"]) == [[h] for h in HOSTS]


def test_no_hosts_no_batches() -> None:
    assert rollout_batches([], [1, "50%"]) == []


@pytest.mark.parametrize("bad", [0, -1, "0%", "150%", "half", [], None])
def test_bad_batch_specs_are_named(bad: object) -> None:
    with pytest.raises(AnsibleFilterError, match="rollout_batches"):
        rollout_batches(HOSTS, bad)


def test_the_plan_batches_only_the_hosts_that_change() -> None:
    targets = [
        {"host": "gpu-1", "from": "", "to": "v2", "changes": True},
        {"host": "cpu-2", "from": "v1", "to": "v2", "changes": True},
        {"host": "cpu-1", "from": "v1", "to": "v2", "changes": True},
        {"host": "gpu-2", "from": "v2", "to": "v2", "changes": False},
    ]
    assert rollout_plan(targets, [1, "100%"]) == [
        "batch 1: cpu-1",
        "batch 2: cpu-2, gpu-1",
        "cpu-1: v1 -> v2",
        "cpu-2: v1 -> v2",
        "gpu-1: nothing -> v2",
        "gpu-2: v2 (no change)",
    ]


def test_a_plan_with_nothing_to_change_has_no_batch() -> None:
    assert rollout_plan([{"host": "cpu-1", "from": "v2", "to": "v2", "changes": False}], [1]) == [
        "cpu-1: v2 (no change)"
    ]

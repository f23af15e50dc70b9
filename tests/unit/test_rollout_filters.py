from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.mlfleet.fleet.plugins.filter.rollout import rollout_batches, rollout_plan, rollout_waves

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


LAB = [
    {"host": "gpu-2", "from": "v1", "to": "v2", "changes": True, "replicas": 1},
    {"host": "cpu-2", "from": "v1", "to": "v2", "changes": True, "replicas": 2},
    {"host": "cpu-1", "from": "v1", "to": "v2", "changes": True, "replicas": 2},
    {"host": "gpu-1", "from": "v1", "to": "v2", "changes": True, "replicas": 1},
]


def test_batches_count_replicas_and_the_canary_is_one_replica() -> None:
    # 6 replicas: 1, then 50% (3), then the rest; cpu-2's share of batch 2 runs one replica at a time.
    assert rollout_waves(LAB, [1, "50%", "100%"]) == [
        {"cpu-1": [[0]]},
        {"cpu-1": [[1]], "cpu-2": [[0], [1]]},
        {"gpu-1": [[0]], "gpu-2": [[0]]},
    ]


def test_batch_one_takes_one_replica_at_a_time() -> None:
    waves = rollout_waves(LAB, [1])
    assert [[(h, s) for h, steps in w.items() for s in steps] for w in waves] == [
        [("cpu-1", [0])],
        [("cpu-1", [1])],
        [("cpu-2", [0])],
        [("cpu-2", [1])],
        [("gpu-1", [0])],
        [("gpu-2", [0])],
    ]


def test_a_host_is_never_drained_whole_unless_asked() -> None:
    h100 = [{"host": "h100", "changes": True, "replicas": 8}]
    # The canary, then 25% of 8, then the rest in steps of at most half the host's replicas.
    assert rollout_waves(h100, [1, "25%", "100%"]) == [
        {"h100": [[0]]},
        {"h100": [[1, 2]]},
        {"h100": [[3, 4, 5, 6], [7]]},
    ]
    assert rollout_waves(h100, ["100%"]) == [{"h100": [[0, 1, 2, 3], [4, 5, 6, 7]]}]
    assert rollout_waves(h100, ["100%"], 1) == [{"h100": [[i] for i in range(8)]}]
    assert rollout_waves(h100, ["100%"], "100%") == [{"h100": [list(range(8))]}]
    # A host with one replica is drained whole: the other hosts serve meanwhile.
    assert rollout_waves([{"host": "gpu-1", "replicas": 1}], [1]) == [{"gpu-1": [[0]]}]


@pytest.mark.parametrize("bad", [0, "0%", "150%", "half"])
def test_a_bad_host_max_unavailable_is_refused(bad: object) -> None:
    with pytest.raises(AnsibleFilterError, match="host_max_unavailable"):
        rollout_waves(LAB, [1], bad)


def test_the_plan_names_the_replicas_of_each_batch_and_step() -> None:
    assert rollout_plan(LAB, [1, "50%", "100%"]) == [
        "batch 1: cpu-1 replica 0",
        "batch 2: cpu-1 replica 1, cpu-2 replicas 0 then 1",
        "batch 3: gpu-1, gpu-2",
        "cpu-1: v1 -> v2 (2 replicas)",
        "cpu-2: v1 -> v2 (2 replicas)",
        "gpu-1: v1 -> v2",
        "gpu-2: v1 -> v2",
    ]
    h100 = [{"host": "h100", "from": "v1", "to": "v2", "changes": True, "replicas": 8}]
    assert rollout_plan(h100, [1, "100%"])[:2] == ["batch 1: h100 replica 0", "batch 2: h100 replicas 1-4 then 5-7"]

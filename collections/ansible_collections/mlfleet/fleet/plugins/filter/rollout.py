# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters for planning a rollout: the batches (waves) of replicas, canary first, shown before any change.

A batch counts replicas (one container each), host by host: the canary is one replica. Within a batch
a host replaces its replicas in steps of at most ``host_max_unavailable`` of them, so a host with
several replicas always keeps some in service unless asked otherwise."""

from __future__ import annotations

import math
from typing import Any

from ansible.errors import AnsibleFilterError


def _batch_size(spec: Any, total: int) -> int:
    """One batch entry as Ansible reads ``serial``: an int, or a percentage of all hosts (at least 1)."""
    if isinstance(spec, str) and spec.strip().endswith("%"):
        try:
            pct = float(spec.strip()[:-1])
        except ValueError as exc:
            raise AnsibleFilterError(f"rollout_batches: {spec!r} is not a percentage like '50%'") from exc
        if not 0 < pct <= 100:
            raise AnsibleFilterError(f"rollout_batches: {spec!r} must be above 0% and at most 100%")
        return max(1, int(math.floor(total * pct / 100)))
    try:
        size = int(spec)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"rollout_batches: {spec!r} is neither a count nor a percentage") from exc
    if size < 1:
        raise AnsibleFilterError(f"rollout_batches: batch size {size} must be at least 1")
    return size


def rollout_batches(hosts: list[Any], serial: Any) -> list[list[Any]]:
    """Split ``hosts`` (or any units) into batches the way ``serial: <serial>`` would (the last size repeats)."""
    specs = serial if isinstance(serial, list) else [serial]
    if not specs:
        raise AnsibleFilterError("rollout_batches: the batch list is empty")
    sizes = [_batch_size(s, len(hosts)) for s in specs]
    batches: list[list[Any]] = []
    rest = list(hosts)
    i = 0
    while rest:
        size = sizes[min(i, len(sizes) - 1)]
        batches.append(rest[:size])
        rest = rest[size:]
        i += 1
    return batches


def _host_step(spec: Any, replicas: int) -> int:
    """How many of a host's ``replicas`` may be out of the load balancer at once (at least 1, at most all)."""
    if isinstance(spec, str) and spec.strip().endswith("%"):
        try:
            pct = float(spec.strip()[:-1])
        except ValueError as exc:
            raise AnsibleFilterError(
                f"rollout_waves: host_max_unavailable {spec!r} is not a percentage like '50%'"
            ) from exc
        if not 0 < pct <= 100:
            raise AnsibleFilterError(f"rollout_waves: host_max_unavailable {spec!r} must be above 0% and at most 100%")
        return max(1, min(replicas, int(math.floor(replicas * pct / 100))))
    try:
        size = int(spec)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(
            f"rollout_waves: host_max_unavailable {spec!r} is neither a count nor a percentage"
        ) from exc
    if size < 1:
        raise AnsibleFilterError(f"rollout_waves: host_max_unavailable {size} must be at least 1")
    return min(replicas, size)


def rollout_waves(
    targets: list[dict[str, Any]], serial: Any, host_max_unavailable: Any = "50%"
) -> list[dict[str, list[list[int]]]]:
    """The batches of a rollout, counting replicas: ``[{host: [[indexes of step 1], [step 2], ...]}, ...]``.

    ``targets`` are ``{host, changes, replicas}`` (``replicas`` a count, default 1); only the hosts that
    change take part, in host order, each replica by index. ``serial`` sizes count replicas (numbers or
    percentages of all the replicas that change; the last repeats). Each host's share of a batch is
    split into steps of at most ``host_max_unavailable`` replicas (a count or a percentage of the host's
    replicas), which the host runs one after the other.
    """
    ordered = sorted((t for t in targets if t.get("changes", True)), key=lambda t: t["host"])
    units: list[tuple[str, int]] = []
    steps_of: dict[str, int] = {}
    for t in ordered:
        count = int(t.get("replicas", 1) or 1)
        if count < 1:
            raise AnsibleFilterError(f"rollout_waves: {t['host']} has {count} replicas; it needs at least 1")
        units.extend((t["host"], i) for i in range(count))
        steps_of[t["host"]] = _host_step(host_max_unavailable, count)
    waves: list[dict[str, list[list[int]]]] = []
    for batch in rollout_batches(units, serial):  # type: ignore[arg-type]
        wave: dict[str, list[int]] = {}
        for host, index in batch:
            wave.setdefault(host, []).append(index)
        waves.append(
            {h: [idx[i : i + steps_of[h]] for i in range(0, len(idx), steps_of[h])] for h, idx in wave.items()}
        )
    return waves


def _indexes(idx: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    runs: list[list[int]] = []
    for i in idx:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _host_share(host: str, steps: list[list[int]], replicas: int) -> str:
    """One host's part of a batch: ``gpu-1`` (its only replica), ``cpu-1 replica 0``, ``cpu-2 replicas 0 then 1``."""
    if replicas == 1:
        return host
    word = "replica" if len(steps) == 1 and len(steps[0]) == 1 else "replicas"
    return f"{host} {word} {' then '.join(_indexes(s) for s in steps)}"


def rollout_plan(targets: list[dict[str, Any]], serial: Any, host_max_unavailable: Any = "50%") -> list[str]:
    """Human-readable plan: one line per batch of the replicas that change, then ``host: from -> to`` per host."""
    ordered = sorted(targets, key=lambda t: t["host"])
    counts = {t["host"]: int(t.get("replicas", 1) or 1) for t in ordered}
    lines = [
        f"batch {i}: {', '.join(_host_share(h, steps, counts[h]) for h, steps in wave.items())}"
        for i, wave in enumerate(rollout_waves(ordered, serial, host_max_unavailable), start=1)
    ]
    for t in ordered:
        n = counts[t["host"]]
        of = f" ({n} replicas)" if n > 1 else ""
        if t.get("changes", True):
            lines.append(f"{t['host']}: {t.get('from') or 'nothing'} -> {t['to']}{of}")
        else:
            lines.append(f"{t['host']}: {t['to']} (no change){of}")
    return lines


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"rollout_batches": rollout_batches, "rollout_waves": rollout_waves, "rollout_plan": rollout_plan}

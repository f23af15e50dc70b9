# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters for planning a rollout: the batches (waves) of hosts, canary first, shown before any change."""

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
        raise AnsibleFilterError(f"rollout_batches: {spec!r} is neither a host count nor a percentage") from exc
    if size < 1:
        raise AnsibleFilterError(f"rollout_batches: batch size {size} must be at least 1")
    return size


def rollout_batches(hosts: list[str], serial: Any) -> list[list[str]]:
    """Split ``hosts`` into batches the way ``serial: <serial>`` would (the last size repeats)."""
    specs = serial if isinstance(serial, list) else [serial]
    if not specs:
        raise AnsibleFilterError("rollout_batches: the batch list is empty")
    sizes = [_batch_size(s, len(hosts)) for s in specs]
    batches: list[list[str]] = []
    rest = list(hosts)
    i = 0
    while rest:
        size = sizes[min(i, len(sizes) - 1)]
        batches.append(rest[:size])
        rest = rest[size:]
        i += 1
    return batches


def rollout_plan(targets: list[dict[str, Any]], serial: Any) -> list[str]:
    """Human-readable plan: one line per batch of the hosts that change, then ``host: from -> to`` per host."""
    ordered = sorted(targets, key=lambda t: t["host"])
    changing = [t["host"] for t in ordered if t.get("changes", True)]
    lines = [f"batch {i}: {', '.join(batch)}" for i, batch in enumerate(rollout_batches(changing, serial), start=1)]
    for t in ordered:
        if t.get("changes", True):
            lines.append(f"{t['host']}: {t.get('from') or 'nothing'} -> {t['to']}")
        else:
            lines.append(f"{t['host']}: {t['to']} (no change)")
    return lines


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"rollout_batches": rollout_batches, "rollout_plan": rollout_plan}

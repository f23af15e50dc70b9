# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Format the "what runs where" report of a model host: one line per replica."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HEADER = (
    "host      container       device               model  version  digest                   health   p50 ms  p99 ms"
)


def _ms(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _health(gate: Mapping[str, Any] | None) -> str:
    if not gate:
        return "-"
    if gate.get("failed") or gate.get("failed_check"):
        return f"FAILED ({gate.get('failed_check') or '?'})"
    return "ok"


def report_lines(hostvars: Mapping[str, Any]) -> list[str]:
    """``host container device model version digest health p50 p99`` per replica, from the host's
    ``model_server_state`` (what runs, with each replica's device) and ``model_server_gates`` (the gate
    of each replica gated, with its container)."""
    host = str(hostvars.get("inventory_hostname", "?"))
    current = (hostvars.get("model_server_state") or {}).get("current") or {}
    if not current:
        return [f"{host:<9} (no model deployed)"]
    model = str(current.get("model", "?"))
    replicas = current.get("replicas") or [{"container": f"model-{model}", "device": ""}]
    gates = {
        str(gate.get("container")): gate
        for gate in hostvars.get("model_server_gates") or []
        if isinstance(gate, Mapping)
    }
    digest = str(current.get("digest") or "")[:24]
    lines = []
    for replica in replicas:
        container = str(replica.get("container", "?"))
        gate = gates.get(container) or {}
        latency = gate.get("latency") or {}
        device = str(replica.get("device") or "-")
        lines.append(
            f"{host:<9} {container:<15} {device[:20]:<20} {model:<6} {current.get('version', '?'):<8} "
            f"{digest:<24} {_health(gate):<8} {_ms(latency.get('p50_ms')):>6} {_ms(latency.get('p99_ms')):>7}"
        )
    return lines


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"report_lines": report_lines}

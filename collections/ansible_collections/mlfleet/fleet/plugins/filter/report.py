# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Format one line of the "what runs where" report from a host's variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def report_line(hostvars: Mapping[str, Any]) -> str:
    """``host model version digest health p50 p99`` from model_server_state and model_server_gate."""
    host = hostvars.get("inventory_hostname", "?")
    current = (hostvars.get("model_server_state") or {}).get("current") or {}
    if not current:
        return f"{host:<9} (no model deployed)"
    gate = hostvars.get("model_server_gate") or {}
    latency = gate.get("latency") or {}
    health = "ok" if gate and not gate.get("failed") else f"FAILED ({gate.get('failed_check', '?')})"
    digest = (current.get("digest") or "")[:24]

    def ms(value: Any) -> str:
        return f"{value:.1f}" if isinstance(value, (int, float)) else "-"

    return (
        f"{host:<9} {current.get('model', '?'):<6} {current.get('version', '?'):<8} {digest:<24} "
        f"{health:<7} {ms(latency.get('p50_ms')):>6} {ms(latency.get('p99_ms')):>7}"
    )


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"report_line": report_line}

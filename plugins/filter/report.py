"""Format one line of the "what runs where" report from a host's variables."""

from __future__ import annotations

import base64
import json
from typing import Any


def mlfleet_report_line(hostvars: dict[str, Any]) -> str:
    """``host model version digest health p50 p99`` from the facts report.yml gathered on a host."""
    host = hostvars.get("inventory_hostname", "?")
    raw = (hostvars.get("__report_current") or {}).get("content")
    if not raw:
        return f"{host:<9} (no model deployed)"
    current = json.loads(base64.b64decode(raw))
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
        return {"mlfleet_report_line": mlfleet_report_line}

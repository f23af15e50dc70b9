"""The compliance_scan role refuses bad settings before it touches any host (nothing connects: the
play runs on the controller, and the refusal comes before the first change)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playbook_runner import run_playbook


def scan(tmp_path: Path, **settings: Any):
    play = {
        "name": "Scan",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "roles": [{"role": "mlfleet.fleet.compliance_scan", "vars": settings}],
    }
    return run_playbook(tmp_path, "inventories/lab", [play])


def test_a_waiver_without_a_reason_is_refused_by_the_argument_specs(tmp_path: Path) -> None:
    res = scan(tmp_path, compliance_scan_waivers=[{"rule": "sudoers_no_root_target"}])
    assert res.returncode != 0
    assert "missing required arguments: reason found in compliance_scan_waivers" in res.stdout
    assert "Install the scanners" not in res.stdout


def test_a_blank_reason_a_bad_checksum_or_a_long_profile_name_is_refused_in_preflight(tmp_path: Path) -> None:
    for settings in (
        {"compliance_scan_waivers": [{"rule": "sudoers_no_root_target", "reason": "  "}]},
        {"compliance_scan_ssg_sha256": "f6880719"},
        {"compliance_scan_profiles": ["xccdf_org.ssgproject.content_profile_anssi_bp28_minimal"]},
        {"compliance_scan_profiles": [], "compliance_scan_lynis": False},
    ):
        res = scan(tmp_path, **settings)
        assert res.returncode != 0, settings
        assert "compliance_scan: nothing to scan with" in res.stdout, (settings, res.stdout[-2000:])
        assert "Install the scanners" not in res.stdout

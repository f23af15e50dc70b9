"""Compliance evidence from a hardened lab inference host (issue 19, items 3 and 4 in part): the scan
playbook scores it with OpenSCAP (ANSSI-BP-028 minimal and intermediary, with the lab's waivers) and
Lynis, fetches the evidence, and `mlfleet compliance` holds the scores to the gates and gives
Prometheus the scores, under the scanned host's name."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from labkit import BIN, LAB_INVENTORY, ROOT, Lab, playbook, recap, run, wait_for

PROMETHEUS = "http://172.28.10.30:9090"
SCANS = ROOT / "artifacts" / "compliance"
HOST = "cpu-2"  # a hardened inference host: docker, two model replicas, every role of site.yml
# What the hardened lab inference host must hold (docs/compliance.md): every rule of ANSSI-BP-028
# minimal passes, with the lab's waivers and its one site value (the password hash cost). The issue's
# Lynis target, 85, is not met yet (78 on 2026-12-07).
GATES = {"anssi_bp28_minimal": 100.0, "anssi_bp28_intermediary": 95.0, "lynis": 75.0}
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


def prometheus(query: str) -> list[dict]:
    url = f"{PROMETHEUS}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())["data"]["result"]


def test_a_hardened_inference_host_meets_the_gates_and_the_evidence_is_kept(
    lab: Lab, converged: str, tmp_path: Path
) -> None:
    res = playbook("playbooks/compliance_scan.yml", "--limit", HOST, timeout=900)
    assert recap(res.stdout)[HOST]["failed"] == 0
    scan = (SCANS / "latest").resolve()
    # The evidence of each profile and of Lynis, and the waivers with their reasons.
    assert sorted(p.name for p in (scan / HOST).iterdir()) == [
        "arf-anssi_bp28_intermediary.xml",
        "arf-anssi_bp28_minimal.xml",
        "lynis-report.dat",
        "lynis.log",
        "report-anssi_bp28_intermediary.html",
        "report-anssi_bp28_minimal.html",
    ]
    waivers = yaml.safe_load((LAB_INVENTORY / "group_vars" / "all" / "compliance.yml").read_text())
    assert yaml.safe_load((scan / "waivers.yml").read_text()) == waivers["compliance_scan_waivers"]
    assert all(w["reason"].strip() for w in waivers["compliance_scan_waivers"])
    # The site's value for the hash cost is the hardening role's, and is scored (not waived).
    values = yaml.safe_load((scan / "values.yml").read_text())
    assert [(v["value"], str(v["set"])) for v in values] == [("var_password_pam_unix_rounds", "8")]

    gates = [arg for name, score in GATES.items() for arg in ("--gate", f"{name}={score:g}")]
    summary = run(
        [str(BIN / "mlfleet"), "compliance", str(scan), *gates, "--textfile-dir", str(tmp_path), "-o", "json"]
    )
    report = json.loads(summary.stdout)
    scores = {name: s["score"] for name, s in report["hosts"][HOST].items()}
    assert summary.returncode == 0, (scores, summary.stderr)
    assert set(scores) == set(GATES)
    waived = {w["rule"] for w in waivers["compliance_scan_waivers"]}
    assert report["hosts"][HOST]["anssi_bp28_minimal"]["failed"] == []
    # A waived rule is left out by the tailoring, not failed (the lab waives two intermediary rules).
    assert not waived & set(report["hosts"][HOST]["anssi_bp28_intermediary"]["failed"])
    assert (scan / "summary.md").read_text().count(f"| {HOST} |") == 1

    # Prometheus reads the scores from the textfile of a monitored host, under the scanned host's name;
    # a later scan under the gate fires both compliance alerts for that host.
    prom = tmp_path / "mlfleet_compliance.prom"
    textfile = f"{TEXTFILE_DIR}/mlfleet_compliance.prom"
    lab.ansible("obs-1", "ansible.builtin.copy", f"src={prom} dest={textfile} mode=0644", become=True)
    try:
        query = f'mlfleet_compliance_score{{host="{HOST}",benchmark="anssi_bp28_minimal"}}'
        series = wait_for(lambda: prometheus(query), 60)
        minimal = scores["anssi_bp28_minimal"]
        assert [(s["metric"]["checked_from"], float(s["value"][1])) for s in series] == [("obs-1", minimal)]
        # A later scan 5 points under the gate: under the gate, and more than a point under the best.
        line = f'mlfleet_compliance_score{{host="{HOST}",benchmark="anssi_bp28_minimal"}} '
        weaker = tmp_path / "weaker.prom"
        weaker.write_text(
            prom.read_text().replace(f"{line}{minimal:g}\n", f"{line}{GATES['anssi_bp28_minimal'] - 5:g}\n")
        )
        assert weaker.read_text() != prom.read_text()
        lab.ansible("obs-1", "ansible.builtin.copy", f"src={weaker} dest={textfile} mode=0644", become=True)

        def firing() -> set[tuple[str, str, str]]:
            alerts = prometheus('ALERTS{alertname=~"Compliance.*",alertstate="firing"}')
            return {(a["metric"]["alertname"], a["metric"]["host"], a["metric"]["benchmark"]) for a in alerts}

        expected = {
            ("ComplianceScoreBelowGate", HOST, "anssi_bp28_minimal"),
            ("ComplianceScoreDropped", HOST, "anssi_bp28_minimal"),
        }
        assert wait_for(lambda: firing() == expected, 90), firing()
        assert prometheus(f'ALERTS{{alertname=~"Compliance.*",host!="{HOST}"}}') == []
    finally:
        lab.ansible("obs-1", "ansible.builtin.file", f"path={textfile} state=absent", become=True)

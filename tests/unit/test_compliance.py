"""`mlfleet compliance`: scores per host from real OpenSCAP and Lynis results, gates, metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from mlfleet import cli, compliance

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "compliance" / "scan"
WAIVERS = [{"rule": "sysctl_net_ipv4_ip_forward", "reason": "docker hosts route their containers' traffic"}]
VALUES = [{"value": "var_password_pam_unix_rounds", "set": "8", "reason": "cost 11 takes 1 GiB per check"}]


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    """A scan folder of two hosts: the recorded results, once as they are, once with one rule fixed."""
    folder = tmp_path / "20261207T161900Z"
    shutil.copytree(FIXTURE / "debian12-base", folder / "cpu-2")
    shutil.copytree(FIXTURE / "debian12-base", folder / "gpu-1")
    (folder / "waivers.yml").write_text(yaml.safe_dump(WAIVERS))
    (folder / "values.yml").write_text(yaml.safe_dump(VALUES))
    return folder


def test_the_scores_are_those_openscap_and_lynis_reported() -> None:
    minimal = list(compliance.read_xccdf(FIXTURE / "debian12-base" / "testresult-anssi_bp28_minimal.xml"))
    assert [(s.benchmark, s.score) for s in minimal] == [("anssi_bp28_minimal", 75.0)]
    # 35 rules evaluated: 16 pass, 15 fail, 3 not applicable, 1 not checked (oscap's own output).
    assert minimal[0].results == {"fail": 15, "notapplicable": 3, "notchecked": 1, "pass": 16}
    assert len(minimal[0].failed) == 15
    assert "accounts_passwords_pam_faillock_deny" in minimal[0].failed
    assert minimal[0].finished.startswith("2026-12-07T16:16")
    (intermediary,) = compliance.read_xccdf(FIXTURE / "debian12-base" / "testresult-anssi_bp28_intermediary.xml")
    assert (intermediary.benchmark, intermediary.score) == ("anssi_bp28_intermediary", 79.26)
    lynis = compliance.read_lynis(FIXTURE / "debian12-base" / "lynis-report.dat")
    assert (lynis.benchmark, lynis.score) == ("lynis", 60.0)
    assert lynis.failed == ["PKGS-7392"]
    assert lynis.results == {"warnings": 1, "suggestions": 50}


def test_the_summary_lists_every_host_with_its_scores_and_the_waivers(scan: Path, capsys) -> None:
    assert cli.main(["compliance", str(scan)]) == 0
    out = capsys.readouterr().out.splitlines()
    scores = "anssi_bp28_intermediary 79.26, anssi_bp28_minimal 75, lynis 60"
    assert out == [f"cpu-2: {scores}", f"gpu-1: {scores}", f"summary: {scan / 'summary.md'}"]
    report = json.loads((scan / "summary.json").read_text())
    assert sorted(report["hosts"]) == ["cpu-2", "gpu-1"]
    assert report["hosts"]["cpu-2"]["anssi_bp28_minimal"]["source"] == "testresult-anssi_bp28_minimal.xml"
    assert report["waivers"] == WAIVERS
    assert report["values"] == VALUES
    md = (scan / "summary.md").read_text()
    assert "| cpu-2 | 79.26 | 75 | 60 |" in md
    assert "- `sysctl_net_ipv4_ip_forward`: docker hosts route their containers' traffic" in md
    assert "- `var_password_pam_unix_rounds` = 8: cost 11 takes 1 GiB per check" in md


def test_a_score_under_its_gate_exits_2_naming_host_benchmark_and_failed_rules(scan: Path, capsys) -> None:
    rc = cli.main(["compliance", str(scan), "--gate", "anssi_bp28_minimal=100", "--gate", "lynis=60"])
    assert rc == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("below gate: cpu-2: anssi_bp28_minimal 75 < gate 100 (failed: ")
    assert "accounts_password_pam_minclass" in err[0]
    assert err[1].startswith("below gate: gpu-1: anssi_bp28_minimal 75 < gate 100")
    md = (scan / "summary.md").read_text()
    assert "| cpu-2 | 79.26 | 75 **below gate** | 60 |" in md
    assert "Gates: anssi_bp28_minimal ≥ 100, lynis ≥ 60" in md


def test_a_gate_on_a_benchmark_the_scan_lacks_fails(scan: Path, capsys) -> None:
    assert cli.main(["compliance", str(scan), "--gate", "cis_level1_server=80"]) == 2
    assert "below gate: cpu-2: no cis_level1_server result in the scan (gate 80)" in capsys.readouterr().err


def test_the_textfile_gives_prometheus_the_scores_and_gates(scan: Path, tmp_path: Path) -> None:
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    assert cli.main(["compliance", str(scan), "--gate", "lynis=50", "--textfile-dir", str(textfiles)]) == 0
    metrics = (textfiles / "mlfleet_compliance.prom").read_text()
    assert 'mlfleet_compliance_score{host="cpu-2",benchmark="anssi_bp28_minimal"} 75\n' in metrics
    assert 'mlfleet_compliance_score{host="gpu-1",benchmark="lynis"} 60\n' in metrics
    assert 'mlfleet_compliance_gate{host="gpu-1",benchmark="lynis"} 50\n' in metrics
    assert 'mlfleet_compliance_failed_rules{host="cpu-2",benchmark="anssi_bp28_minimal"} 15\n' in metrics
    assert "mlfleet_compliance_summary_timestamp_seconds " in metrics
    assert [p.name for p in textfiles.iterdir()] == ["mlfleet_compliance.prom"]  # no temporary file left


def test_markdown_and_json_on_stdout(scan: Path, capsys) -> None:
    assert cli.main(["compliance", str(scan), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["hosts"]["gpu-1"]["lynis"]["score"] == 60
    assert cli.main(["compliance", str(scan), "-o", "markdown"]) == 0
    assert capsys.readouterr().out.startswith(f"# Compliance scan `{scan}`")


def test_the_latest_scan_of_the_site_is_the_default(scan: Path, tmp_path: Path, capsys) -> None:
    site = tmp_path / "site"
    (site / "artifacts" / "compliance").mkdir(parents=True)
    (site / "artifacts" / "compliance" / "latest").symlink_to(scan)
    assert cli.main(["compliance", "--project-dir", str(site)]) == 0
    assert "cpu-2: " in capsys.readouterr().out


def test_no_scan_or_a_broken_file_exits_1_with_the_reason(scan: Path, tmp_path: Path, capsys) -> None:
    assert cli.main(["compliance", str(tmp_path / "none")]) == 1
    assert "No scan folder at" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "cpu-1").mkdir(parents=True)
    assert cli.main(["compliance", str(empty)]) == 1
    assert "No OpenSCAP or Lynis result" in capsys.readouterr().err
    (scan / "cpu-2" / "testresult-anssi_bp28_minimal.xml").write_text("<TestResult")
    assert cli.main(["compliance", str(scan)]) == 1
    assert "Could not read the scan" in capsys.readouterr().err
    (scan / "cpu-2" / "testresult-anssi_bp28_minimal.xml").unlink()
    (scan / "gpu-1" / "lynis-report.dat").write_text("lynis_version=3.0.8\n")
    assert cli.main(["compliance", str(scan)]) == 1
    assert "no hardening_index (an interrupted Lynis run?)" in capsys.readouterr().err


def test_a_bad_gate_is_a_usage_error(scan: Path, capsys) -> None:
    assert cli.main(["compliance", str(scan), "--gate", "lynis"]) == 1
    assert "'lynis' is not BENCHMARK=SCORE" in capsys.readouterr().err


def test_a_tailored_profile_is_scored_under_its_benchmark_and_a_waived_rule_is_not_failed() -> None:
    (tailored,) = compliance.read_xccdf(FIXTURE.parent / "tailored" / "testresult-anssi_bp28_minimal.xml")
    assert tailored.benchmark == "anssi_bp28_minimal"  # from xccdf_io.mlfleet_profile_anssi_bp28_minimal
    assert sum(tailored.results.values()) == 34  # one rule fewer than the profile's 35
    assert "accounts_passwords_pam_faillock_deny" not in tailored.failed
    assert "accounts_passwords_pam_faillock_interval" in tailored.failed

"""The `mlfleet` command: dispatch, the `ledger` subcommand, progress lines, and the wheel.

The wheel test builds the package the way a user's `pip install` / `pipx install` would (build
isolation, dependencies from the package index) into a fresh virtualenv with nothing else in it.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlfleet import cli, ledger
from mlfleet.progress import Progress
from mlfleet.site import default_project_dir

ROOT = Path(__file__).resolve().parents[2]

RECORDS = [
    {"when": "2026-12-01T10:00:00Z", "host": "cpu-1", "model": "iris", "action": "rollout", "result": "deployed",
     "version": "v1", "from_version": None, "replicas": [{"container": "model-iris", "device": "cpus 0-1"}],
     "who": "ops", "commit": "abc1234", "failure": None},
    {"when": "2026-12-01T10:00:05Z", "host": "gpu-1", "model": "iris", "action": "rollout", "result": "deployed",
     "version": "v1", "from_version": None, "replicas": [{"container": "model-iris", "device": "GPU-0a1b"}],
     "who": "ops", "commit": "abc1234", "failure": None},
    {"when": "2026-12-02T09:00:00Z", "host": "cpu-1", "model": "iris", "action": "rollout", "result": "deployed",
     "version": "v2", "from_version": "v1", "replicas": [{"container": "model-iris", "device": "cpus 0-1"}],
     "who": "ops", "commit": "def5678", "failure": None},
    {"when": "2026-12-02T09:01:00Z", "host": "gpu-1", "model": "iris", "action": "rollout", "result": "rolled_back",
     "version": "v1", "from_version": "v1", "attempted_version": "v2",
     "replicas": [{"container": "model-iris", "device": "GPU-0a1b"}], "who": "ops", "commit": "def5678",
     "failure": "gate: POST /v2/models/iris/infer answered 500"},
    {"when": "2026-12-03T08:00:00Z", "host": "cpu-1", "model": "iris", "action": "rollout", "result": "returned",
     "version": "v2", "from_version": "v2", "replicas": [{"container": "model-iris", "device": "cpus 0-1"}],
     "who": "ops", "commit": "def5678", "failure": None},
]  # fmt: skip


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlfleet", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture()
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "deployments.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


# --- Dispatch ------------------------------------------------------------------------------------


def test_help_lists_every_command_and_the_exit_codes():
    res = run("--help")
    assert res.returncode == 0, res.stderr
    for name in cli.COMMANDS:
        assert f"    {name}" in res.stdout
    assert "exit codes:" in res.stdout


def test_no_command_prints_the_help_and_fails_and_an_unknown_one_is_named():
    res = run()
    assert res.returncode == 1 and "commands:" in res.stdout
    res = run("drfit")
    assert res.returncode == 1
    assert "unknown command 'drfit'; commands: compliance, drift, ledger, release, report" in res.stderr


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_help_with_its_exit_codes(name):
    res = run(name, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: mlfleet {name}") and "exit codes:" in res.stdout


def test_the_site_repository_is_found_from_a_subfolder(tmp_path):
    site = tmp_path / "site"
    (site / "playbooks").mkdir(parents=True)
    (site / "ansible.cfg").write_text("[defaults]\n")
    (site / "inventories" / "prod").mkdir(parents=True)
    assert default_project_dir(site / "inventories" / "prod") == site
    assert default_project_dir(ROOT / "docs") == ROOT


# --- ledger ----------------------------------------------------------------------------------------


def test_ledger_table_lists_every_record_in_order(ledger_file):
    res = run("ledger", "--file", str(ledger_file))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == list(ledger.COLUMNS)
    assert len(lines) == 1 + len(RECORDS)
    assert "model-iris@GPU-0a1b" in lines[2] and "rolled_back" in lines[4]


def test_ledger_current_says_what_each_host_serves(ledger_file):
    res = run("ledger", "--file", str(ledger_file), "--current", "-o", "json")
    assert res.returncode == 0, res.stderr
    current = [json.loads(line) for line in res.stdout.splitlines()]
    # cpu-1: v2 (deployed; the later "returned" only put it back in rotation); gpu-1: rolled back to v1.
    assert [(r["host"], r["version"], r["result"]) for r in current] == [
        ("cpu-1", "v2", "deployed"),
        ("gpu-1", "v1", "rolled_back"),
    ]


def test_ledger_filters_and_markdown(ledger_file):
    res = run(
        "ledger", "--file", str(ledger_file), "--result", "rolled_back", "--since", "2026-12-02", "-o", "markdown"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("# Deployment ledger\n")
    rows = [line for line in res.stdout.splitlines() if line.startswith("| 2026")]
    assert len(rows) == 1 and "| gpu-1 |" in rows[0]
    assert "**gpu-1 rolled_back at 2026-12-02T09:01:00Z:** gate: POST /v2/models/iris/infer answered 500" in res.stdout
    res = run("ledger", "--file", str(ledger_file), "--host", "cpu-1", "--last", "1", "-o", "json")
    assert [json.loads(line)["result"] for line in res.stdout.splitlines()] == ["returned"]
    res = run("ledger", "--file", str(ledger_file), "--model", "resnet")
    assert res.returncode == 0 and res.stdout == "no ledger record matches\n"


def test_ledger_names_a_broken_line_and_a_missing_file(ledger_file, tmp_path):
    with ledger_file.open("a") as handle:
        handle.write('{"host": "cpu-2", "result": "depl\n')
    res = run("ledger", "--file", str(ledger_file))
    assert res.returncode == 1 and f"{ledger_file}:{len(RECORDS) + 1} is not a JSON record" in res.stderr
    res = run("ledger", "--project-dir", str(tmp_path))
    assert res.returncode == 1
    assert f"No ledger at {tmp_path / ledger.LEDGER}: no rollout has run" in res.stderr
    res = run("ledger", "--last", "many")
    assert res.returncode == 1 and "usage error: argument --last: invalid int value: 'many'" in res.stderr


# --- Progress ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(kind: str, **data: object) -> dict:
    return {"event": kind, "event_data": data}


def test_progress_shows_play_task_hosts_and_trouble_on_a_terminal():
    clock, out = Clock(), io.StringIO()
    progress = Progress(out, enabled=True, clock=clock, min_interval=0)
    progress.start_phase("check")
    progress.feed(event("playbook_on_play_start", play="Hosts"))
    progress.feed(event("playbook_on_task_start", task="Gather facts"))
    for host in ("a", "b", "c"):
        progress.feed(event("runner_on_ok", host=host))
    progress.feed(event("playbook_on_task_start", task="Install the exporter"))
    progress.feed(event("runner_on_ok", host="a"))
    clock.now += 83
    progress.feed(event("runner_on_unreachable", host="c"))
    assert progress.line() == "[01:23] check · play 1 Hosts · task 2 Install the exporter · 2/3 hosts · 1 unreachable"
    assert out.getvalue().endswith("\r\x1b[K" + progress.line())
    progress.close()
    assert out.getvalue().endswith("\r\x1b[K")


def test_progress_prints_nothing_off_a_terminal():
    out = io.StringIO()  # isatty() is False: piped, scheduled or captured output
    progress = Progress(out)
    progress.start_phase("check")
    progress.feed(event("playbook_on_play_start", play="Hosts"))
    progress.close()
    assert out.getvalue() == ""


# --- The wheel ---------------------------------------------------------------------------------


def test_the_wheel_installs_a_working_mlfleet_command_in_a_fresh_venv(tmp_path, ledger_file):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "mlfleet", source / "mlfleet", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("mlfleet-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), *pip[1:], "install", str(wheel)], capture_output=True, text=True, timeout=900
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    mlfleet = str(venv / "bin" / "mlfleet")
    elsewhere = tmp_path / "elsewhere"  # not the checkout: the installed package must stand alone
    elsewhere.mkdir()
    res = subprocess.run([mlfleet, "--help"], cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "drift" in res.stdout and "ledger" in res.stdout, res.stderr
    res = subprocess.run([mlfleet, "--version"], cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "mlfleet 0.2.0"
    res = subprocess.run([mlfleet, "drift", "--help"], cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "exit codes:" in res.stdout
    res = subprocess.run(
        [mlfleet, "ledger", "--file", str(ledger_file), "--current"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 3, res.stderr
    # The report draws its charts with the matplotlib that came with it.
    page = tmp_path / "report" / "fleet.html"
    res = subprocess.run(
        [mlfleet, "report", "--ledger", str(ledger_file), "--range", "3650d", "--out", str(page), "-q"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0 and res.stdout.strip() == str(page), res.stderr
    assert "<svg" in page.read_text()
    # The manifest schema ships in the wheel, and jsonschema with it.
    example = ROOT / "docs" / "examples" / "release-iris-v3.yml"
    res = subprocess.run(
        [mlfleet, "release", "validate", str(example)], cwd=elsewhere, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and res.stdout.strip() == f"{example}: valid", res.stderr
    # The dependencies came with it: the drift check's runner imports in the fresh venv.
    res = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import ansible_runner, ansible, yaml"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr

"""Configuration drift run: the site playbook in check + diff mode through ansible-runner's Python API.

Usage: mlfleet drift --help (or python -m mlfleet.drift --help from a checkout)

ansible-runner traps this module avoids on purpose (verified with ansible-runner 2.4.3):
- ``cmdline``/``envvars``/``extravars`` given to ``run()`` are written to ``<private_data_dir>/env/``
  and silently reused by later runs unless ``suppress_env_files=True``; each run also gets its own
  dated ``private_data_dir`` and ``ident``.
- ``artifacts/<ident>/command`` stores the complete process environment, so no secret travels as an
  environment variable (the vault password is a file path in ``cmdline``), and secret-looking
  variable names in that file are masked after the run.
- ``rc`` is 0 when hosts drifted; drift comes from the events (``runner_on_ok`` with ``changed``).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlfleet.cli import Parser, UsageError
from mlfleet.drift_report import (
    EXIT_CLEAN,
    EXIT_DRIFT,
    EXIT_FAILED,
    EXIT_LOCKED,
    DriftReport,
    EventCollector,
    Masker,
    RunReport,
    last_success_of,
    secret_values,
    to_alertmanager,
    to_dict,
    to_junit,
    to_markdown,
    to_prometheus,
)
from mlfleet.progress import Progress
from mlfleet.site import default_project_dir

PROJECT_DIR = default_project_dir()
DEFAULT_TEXTFILE_DIR = Path("/var/lib/prometheus/node-exporter")
METRICS_FILE = "mlfleet_drift.prom"

EPILOG = f"""\
exit codes:
  {EXIT_CLEAN}  no drift: every host in scope was reached and no task would change anything
  {EXIT_DRIFT}  drift: at least one task would change a host (with --remediate: still drifting after
     the remediation run); the run itself worked
  {EXIT_FAILED}  the run itself failed: a host was unreachable, a task failed, the playbook or
     inventory is broken, (with --remediate) the remediation run failed, an option was wrong, a
     file could not be read, or the tool was stopped (SIGTERM, e.g. systemd's TimeoutStartSec).
     Drift found on the other hosts is still in the report; a failed report and the failed-run
     metric are written in every one of these cases.
  {EXIT_LOCKED}  not run: another drift run holds --lock-file (the message names its PID and start)

output (in ARTIFACTS_DIR/<UTC timestamp>/): report.json, report.md, report.junit.xml and
ansible-runner's own artifacts (artifacts/<ident>/: stdout, job_events/, command, ...) for audit.
Secrets: pass secret variables only in files (-e/--extra-vars-file, vault-encrypted or not) and the
vault password only as --vault-password-file; never as environment variables or on the command
line, both of which ansible-runner records in artifacts/<ident>/command.
"""


def parse_args(argv: Sequence[str] | None, prog: str = "mlfleet drift") -> argparse.Namespace:
    parser = Parser(
        prog=prog,
        description="Run a playbook in check + diff mode, report configuration drift per host and task.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR, help="repository root (default: %(default)s)")
    parser.add_argument("-p", "--playbook", help="playbook (default: PROJECT_DIR/playbooks/site.yml)")
    parser.add_argument("-i", "--inventory", help="inventory path (default: PROJECT_DIR/inventories/lab)")
    parser.add_argument("-l", "--limit", help="ansible-playbook --limit pattern")
    parser.add_argument("-t", "--tags", help="ansible-playbook --tags (comma-separated)")
    parser.add_argument("--skip-tags", help="ansible-playbook --skip-tags (comma-separated)")
    parser.add_argument(
        "-e",
        "--extra-vars-file",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="YAML/JSON vars file passed as -e @FILE (repeatable). Values under names matching "
        "password|secret|token|key or vault_*, and every value of a vault-encrypted file, are masked",
    )
    parser.add_argument("--vault-password-file", type=Path, help="vault password file (never an env var)")
    parser.add_argument("--forks", type=int, help="ansible forks (default: ansible.cfg)")
    parser.add_argument("--timeout", type=int, help="abort a run after this many seconds (exit 1)")
    parser.add_argument(
        "--remediate",
        action="store_true",
        help="after the check, run the playbook for real on the drifted hosts only, then check those "
        "hosts again; the exit code reflects the re-check (and the check, for the other hosts)",
    )
    parser.add_argument(
        "--artifacts-dir", type=Path, help="where dated report folders go (default: PROJECT_DIR/artifacts/drift)"
    )
    parser.add_argument(
        "--textfile-dir",
        type=Path,
        default=DEFAULT_TEXTFILE_DIR,
        help=f"node-exporter textfile collector folder for {METRICS_FILE} (default: %(default)s)",
    )
    parser.add_argument("--no-textfile", action="store_true", help="do not write the metrics file")
    hook = parser.add_mutually_exclusive_group()
    hook.add_argument("--webhook", metavar="URL", help="POST the result to URL (errors are reported, not fatal)")
    hook.add_argument(
        "--webhook-url-file", type=Path, metavar="FILE", help="read the webhook URL from FILE (URLs with tokens)"
    )
    parser.add_argument(
        "--webhook-format",
        choices=["alertmanager", "plain"],
        default="alertmanager",
        help="alertmanager: Alertmanager API v2 alerts (alertname=ConfigDriftDetected, host, task); "
        "plain: the report JSON (default: %(default)s)",
    )
    parser.add_argument("--webhook-timeout", type=float, default=10.0, help="seconds (default: %(default)s)")
    parser.add_argument(
        "--alert-ttl-hours",
        type=float,
        default=26.0,
        help="endsAt of alerts: how long an alert stays firing unless the next run repeats it (default: %(default)s)",
    )
    parser.add_argument(
        "--lock-file",
        type=Path,
        help="take this lock (flock) for the run; when another run holds it, exit 3 and name it. "
        "Put it in a folder only the drift user can write",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=["summary", "json", "markdown"],
        default="summary",
        help="what goes to stdout at the end: summary lines, or the whole report as JSON or Markdown "
        "(then every other line goes to stderr) (default: %(default)s)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress and no summary: print only the report folder (or the --output report)",
    )
    return parser.parse_args(argv)


def _fallback_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Where a failed report goes when the command line itself is wrong: the output options that parse."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR)
    parser.add_argument("--artifacts-dir", type=Path)
    parser.add_argument("--textfile-dir", type=Path, default=DEFAULT_TEXTFILE_DIR)
    parser.add_argument("--no-textfile", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("-o", "--output", default="summary")
    try:
        args, _ = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):
        args = parser.parse_args([])
    args.playbook = args.inventory = args.limit = args.tags = None
    args.remediate = False
    return args


# --- Secrets ----------------------------------------------------------------------------------


def _load_vars_file(path: Path, vault_password_file: Path | None) -> tuple[Any, bool]:
    """Parse a vars file the way ansible-playbook will (vault included). Returns (data, was_encrypted)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import FileVaultSecret, is_encrypted_file

    loader = DataLoader()
    if vault_password_file is not None:
        secret = FileVaultSecret(filename=str(vault_password_file), loader=loader)
        secret.load()
        loader.set_vault_secrets([("default", secret)])
    with path.open("rb") as handle:
        encrypted = is_encrypted_file(handle)
    return loader.load_from_file(str(path)), encrypted


def collect_secrets(args: argparse.Namespace) -> list[str]:
    secrets: list[str] = []
    if args.vault_password_file:
        secrets.append(args.vault_password_file.read_text().strip())
    for path in args.extra_vars_file:
        data, encrypted = _load_vars_file(path, args.vault_password_file)
        secrets += secret_values(data, all_values=encrypted)
    secrets += inventory_secrets([args.inventory, args.playbook.parent], args.vault_password_file)
    return secrets


class _Vaulted(str):
    """The ciphertext of an inline ``!vault`` value."""


def _inventory_loader() -> type:
    """A SafeLoader for plain YAML plus Ansible's tags: ``!vault`` keeps its ciphertext, ``!unsafe``
    is a string."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!vault", lambda loader, node: _Vaulted(loader.construct_scalar(node)))
    Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
    return Loader


def _vars_files(roots: Sequence[Path]) -> list[Path]:
    """The inventory files and the group_vars/host_vars beside the inventory and the playbooks."""
    files: list[Path] = []
    for root in roots:
        if root.is_file():
            files.append(root)
            root = root.parent
        for sub in ("", "group_vars", "host_vars") if root.is_dir() else ():
            folder = root / sub
            if not folder.is_dir():
                continue
            pattern = "*" if sub == "" else "**/*"
            files += [p for p in folder.glob(pattern) if p.is_file() and p.suffix in ("", ".yml", ".yaml", ".json")]
    return sorted(set(files))


def inventory_secrets(roots: Sequence[Path], vault_password_file: Path | None) -> list[str]:
    """Every value of the inventory that ansible-vault protects: whole encrypted files and inline
    ``!vault`` values. Names alone do not make an inventory value secret (ports and paths under
    ``*_key`` names would hide half the report)."""
    import yaml
    from ansible.parsing.vault import VaultLib, VaultSecret

    loader = _inventory_loader()
    vaulted = [raw for raw in (p.read_bytes() for p in _vars_files(roots)) if b"$ANSIBLE_VAULT" in raw]
    if not vaulted:
        return []
    if vault_password_file is None:
        raise ValueError(
            "the inventory holds ansible-vault values; give --vault-password-file so that they can be "
            "masked in the report (ansible-playbook needs it too)"
        )
    vault = VaultLib([("default", VaultSecret(vault_password_file.read_text().strip().encode()))])
    secrets: list[str] = []

    def walk(data: Any, encrypted: bool) -> None:
        if isinstance(data, _Vaulted):
            secrets.append(vault.decrypt(str(data).encode()).decode())
        elif isinstance(data, dict):
            for value in data.values():
                walk(value, encrypted)
        elif isinstance(data, list):
            for value in data:
                walk(value, encrypted)
        elif encrypted and isinstance(data, str | int | float) and not isinstance(data, bool):
            secrets.append(str(data))

    for raw in vaulted:
        encrypted = raw.lstrip().startswith(b"$ANSIBLE_VAULT")
        text = vault.decrypt(raw).decode() if encrypted else raw.decode()
        walk(yaml.load(text, Loader=loader), encrypted)  # noqa: S506 - a SafeLoader subclass
    return secrets


def scrub_tree(root: Path, masker: Masker) -> None:
    """Mask secrets in every file ansible-runner wrote (job events, stdout, the `command` env dump)."""
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        new = text
        if path.name == "command":
            try:
                data = json.loads(text)
                data["env"] = masker.env(data.get("env") or {})
                new = json.dumps(data, ensure_ascii=False)
            except (ValueError, AttributeError):
                pass
        new = masker.text(new)
        if new != text:
            path.write_text(new, encoding="utf-8")


# --- Running ----------------------------------------------------------------------------------


def run_phase(
    args: argparse.Namespace,
    run_dir: Path,
    masker: Masker,
    *,
    phase: str,
    check: bool,
    limit: str | None,
    progress: Progress | None = None,
) -> RunReport:
    import ansible_runner  # imported here so that --help works without the toolchain

    collector = EventCollector(masker)
    progress = progress or Progress(enabled=False)
    progress.start_phase(phase)

    def on_event(event: dict[str, Any]) -> bool:
        collector.feed(event)
        progress.feed(event)
        return True

    cmdline = ["--diff"] + (["--check"] if check else [])
    if args.vault_password_file:
        cmdline += ["--vault-password-file", str(args.vault_password_file.resolve())]
    for path in args.extra_vars_file:
        cmdline += ["-e", f"@{path.resolve()}"]
    ident = f"{run_dir.name}-{phase}"
    envvars = {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "PATH": tool_path()}
    # An ANSIBLE_CONFIG the operator set wins (e.g. one that turns on the Mitogen strategy, see
    # docs/benchmarks.md); otherwise the project's. Safe as an env var only because
    # suppress_env_files=True keeps it out of env/envvars.
    config = (
        Path(os.environ["ANSIBLE_CONFIG"]) if os.environ.get("ANSIBLE_CONFIG") else args.project_dir / "ansible.cfg"
    )
    if config.is_file():
        envvars["ANSIBLE_CONFIG"] = str(config)
    kwargs: dict[str, Any] = {"cancel_callback": lambda: _STOP.signum is not None}
    if args.forks:
        kwargs["forks"] = args.forks
    if args.timeout:
        kwargs["timeout"] = args.timeout
    runner = ansible_runner.run(
        private_data_dir=str(run_dir),
        ident=ident,
        project_dir=str(args.project_dir),
        playbook=str(args.playbook),
        inventory=str(args.inventory),
        cmdline=shlex.join(cmdline),
        limit=limit,
        tags=args.tags,
        skip_tags=args.skip_tags,
        envvars=envvars,
        suppress_env_files=True,
        quiet=True,
        event_handler=on_event,
        **kwargs,
    )
    progress.close()
    report = collector.build(
        phase=phase,
        ident=ident,
        rc=runner.rc,
        runner_status=str(runner.status),
        artifact_dir=str(Path(runner.config.artifact_dir).relative_to(run_dir)),
        limit=limit,
    )
    if runner.status == "timeout":
        report.errors.append(f"stopped by --timeout {args.timeout}: the playbook ran longer than {args.timeout}s")
    return report


def tool_path() -> str:
    """PATH with this interpreter's bin folder first: a venv's python run without activating the venv
    must still find the ansible-playbook installed beside it."""
    here = str(Path(sys.executable).parent)
    rest = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p and p != here]
    return os.pathsep.join([here, *rest])


def make_run_dir(base: Path, now: datetime) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    for n in range(100):
        path = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"Could not create a report folder under {base}: 100 folders for {stamp} exist")


# --- Outputs ----------------------------------------------------------------------------------


def write_textfile(directory: Path, body: str, name: str = METRICS_FILE) -> None:
    """Atomic: node-exporter never reads a half-written file (it ignores names not ending in .prom)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _target(url: str) -> str:
    """The URL without credentials, query or fragment: what the report may show."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def post_webhook(url: str, payload: Any, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "mlfleet-drift"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - operator-given URL
            return {"ok": True, "status": response.status}
    except urllib.error.HTTPError as exc:
        return {"ok": False, "status": exc.code, "error": f"HTTP {exc.code} {exc.reason}"}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"ok": False, "error": f"{type(exc).__name__}: {reason}"}


def _say(args: argparse.Namespace, text: str) -> None:
    """Progress and summary lines: stdout, unless stdout carries a whole report (--output)."""
    if not args.quiet:
        print(text, flush=True, file=sys.stdout if args.output == "summary" else sys.stderr)


class _Stop:
    """SIGTERM (systemd's stop or TimeoutStartSec) and SIGINT end the run cleanly: ansible-runner
    cancels the playbook through its cancel callback, and the report, the metric and the scrubbing
    still happen."""

    signum: int | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        self.signum = signum


_STOP = _Stop()


def take_lock(path: Path) -> tuple[int | None, str]:
    """flock ``path``. Returns (fd, "") when taken, (None, who holds it) when another run does."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            os.close(fd)
            raise
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process that wrote no name"
        os.close(fd)
        return None, holder
    os.ftruncate(fd, 0)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    os.pwrite(fd, f"pid {os.getpid()}, started {stamp}\n".encode(), 0)
    return fd, ""


RUNNING = ".running"  # flocked by the run that owns the report folder, for as long as it runs
_RUN_FOLDER = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")  # make_run_dir's names: nothing else is touched
_HEAL_MIN_AGE_S = 60  # a younger folder may be a run that has not taken its lock yet


def mark_running(run_dir: Path) -> int:
    """Hold ``run_dir/.running`` (flock) while this run lasts; the kernel lets go however it ends."""
    fd = os.open(run_dir / RUNNING, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
    return fd


def heal_killed_runs(artifacts: Path, current: Path, now: float | None = None) -> list[str]:
    """Report folders of runs killed before they wrote their report (SIGKILL, the OOM killer, power
    loss): nothing masked their raw ansible-runner artifacts, whose `command` file dumps the whole
    environment. Remove those artifacts (the secrets that were in play are not known here) and leave
    a failed report in their place. A folder whose run still holds its lock, or that is younger
    than a minute, is left alone. Returns the names of the folders healed."""
    now = time.time() if now is None else now
    healed = []
    for folder in sorted(p for p in artifacts.iterdir() if p.is_dir() and not p.is_symlink()):
        if folder == current or not _RUN_FOLDER.match(folder.name) or (folder / "report.json").exists():
            continue
        if now - folder.stat().st_mtime < _HEAL_MIN_AGE_S:
            continue
        fd = os.open(folder / RUNNING, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                    continue  # its run is still going
                raise
            if (folder / "report.json").exists():  # it finished while we looked
                continue
            for entry in folder.iterdir():
                if entry.name == RUNNING:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            try:
                started = datetime.strptime(folder.name[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            except ValueError:
                started = datetime.fromtimestamp(folder.stat().st_mtime, UTC)
            report = DriftReport(
                playbook="", inventory="", limit=None, tags=None, started=started.isoformat(timespec="seconds")
            )
            report.errors.append(
                "the run was killed before it finished (SIGKILL, out of memory or power loss?): it wrote no "
                f"report. Its raw ansible-runner artifacts were removed by the run {current.name}, as they "
                "may hold secrets that nothing masked."
            )
            report.finished = datetime.now(UTC).isoformat(timespec="seconds")
            write_reports(folder, report)
            (folder / RUNNING).unlink(missing_ok=True)
            healed.append(folder.name)
        finally:
            os.close(fd)
    return healed


def write_reports(run_dir: Path, report: DriftReport) -> None:
    """report.json, report.md and report.junit.xml of one run."""
    (run_dir / "report.json").write_text(json.dumps(to_dict(report), indent=2) + "\n")
    (run_dir / "report.md").write_text(to_markdown(report))
    (run_dir / "report.junit.xml").write_text(to_junit(report))


def finish(args: argparse.Namespace, run_dir: Path, report: DriftReport, masker: Masker) -> None:
    """Reports, scrubbing and the metric: done for every run that got as far as a report folder."""
    finished = datetime.now(UTC)
    report.finished = finished.isoformat(timespec="seconds")
    write_reports(run_dir, report)
    scrub_tree(run_dir, masker)
    (run_dir / RUNNING).unlink(missing_ok=True)
    if not args.no_textfile:
        target = args.textfile_dir / METRICS_FILE
        try:
            previous = last_success_of(target.read_text()) if target.is_file() else None
            write_textfile(args.textfile_dir, to_prometheus(report, finished, previous))
        except OSError as exc:
            print(f"Could not write {target}: {exc}", file=sys.stderr)


def _failed_early(argv: Sequence[str] | None, error: str) -> int:
    """A run that failed before it could start (a bad option): still a failed report and metric."""
    args = _fallback_args(argv)
    artifacts = (args.artifacts_dir or args.project_dir / "artifacts/drift").resolve()
    started = datetime.now(UTC)
    report = DriftReport(
        playbook="", inventory="", limit=None, tags=None, started=started.isoformat(timespec="seconds")
    )
    report.errors.append(error)
    try:
        run_dir = make_run_dir(artifacts, started)
        finish(args, run_dir, report, Masker())
    except OSError as exc:
        print(f"Could not write the failed report under {artifacts}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _say(args, f"result: failed (exit {EXIT_FAILED}); report: {run_dir / 'report.md'}")
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None, prog: str = "mlfleet drift") -> int:
    try:
        args = parse_args(argv, prog)
    except UsageError as exc:
        print(f"usage error: {exc} (see --help)", file=sys.stderr)
        return _failed_early(argv, f"bad command line: {exc}")
    args.project_dir = args.project_dir.resolve()
    args.playbook = Path(args.playbook).resolve() if args.playbook else args.project_dir / "playbooks/site.yml"
    args.inventory = Path(args.inventory).resolve() if args.inventory else args.project_dir / "inventories/lab"
    artifacts = (args.artifacts_dir or args.project_dir / "artifacts/drift").resolve()

    lock_fd = None
    if args.lock_file:
        try:
            lock_fd, holder = take_lock(args.lock_file)
        except OSError as exc:
            return _failed_early(argv, f"could not open the lock file {args.lock_file}: {exc}")
        if lock_fd is None:
            print(
                f"Not run: another drift run holds {args.lock_file} ({holder}); this run changed and "
                f"reported nothing. Wait for it, or stop it if it hangs.",
                file=sys.stderr,
            )
            return EXIT_LOCKED

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _STOP)
    started = datetime.now(UTC)
    run_dir = make_run_dir(artifacts, started)
    running_fd = mark_running(run_dir)
    report = DriftReport(
        playbook=str(args.playbook),
        inventory=str(args.inventory),
        limit=args.limit,
        tags=args.tags,
        started=started.isoformat(timespec="seconds"),
        remediate=args.remediate,
    )
    try:
        report.healed = heal_killed_runs(artifacts, run_dir)
    except OSError as exc:  # not this run's failure: say so and go on
        print(f"Could not clean up the folders of killed runs under {artifacts}: {exc}", file=sys.stderr)
    for name in report.healed:
        print(
            f"An earlier run ({name}) was killed before it finished: its raw artifacts were removed and it "
            "now has a failed report.",
            file=sys.stderr,
        )
    masker_box = [Masker()]
    try:
        run(args, run_dir, report, masker_box)
    except Exception as exc:  # noqa: BLE001 - any crash still ends in a failed report and metric
        report.errors.append(f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeError) else str(exc))
    masker = masker_box[0]
    if _STOP.signum is not None:
        name = signal.Signals(_STOP.signum).name
        report.errors.append(f"stopped by {name} (systemd's stop or TimeoutStartSec?): the run is incomplete")
    finish(args, run_dir, report, masker)

    final = report.final_check
    for name, host in final.hosts.items() if final else []:
        if host.status != "clean":
            detail = host.unreachable or "; ".join([f.task for f in host.failed] or [c.task for c in host.drift])
            _say(args, f"  {name}: {host.status}: {detail}")
    for error in (final.errors if final else []) + report.errors:
        print(f"  run error: {masker.text(error)}", file=sys.stderr)
    _say(args, f"result: {report.result} (exit {report.exit_code}); report: {run_dir / 'report.md'}")
    if args.output == "json":
        print((run_dir / "report.json").read_text(), end="")
    elif args.output == "markdown":
        print((run_dir / "report.md").read_text(), end="")
    elif args.quiet:
        print(run_dir)
    os.close(running_fd)
    if lock_fd is not None:
        os.close(lock_fd)
    return report.exit_code


def run(args: argparse.Namespace, run_dir: Path, report: DriftReport, masker_box: list[Masker]) -> None:
    """The check (and remediation) runs and the webhook. ``masker_box[0]`` grows as secrets are known,
    so that a failure half-way is still scrubbed with everything read so far."""
    webhook_url = args.webhook
    if args.webhook_url_file:
        try:
            webhook_url = args.webhook_url_file.read_text().strip()
        except OSError as exc:
            raise RuntimeError(f"could not read --webhook-url-file {args.webhook_url_file}: {exc.strerror}") from None
    try:
        masker_box[0] = Masker([*collect_secrets(args), *([webhook_url] if webhook_url else [])])
    except Exception as exc:  # noqa: BLE001 - a vars file or vault that cannot be read
        raise RuntimeError(f"could not read the secrets to mask: {exc}") from None
    masker = masker_box[0]

    _say(args, f"drift check of {args.playbook} on {args.inventory} -> {run_dir}")
    progress = Progress(enabled=None if not args.quiet else False)
    check = run_phase(args, run_dir, masker, phase="check", check=True, limit=args.limit, progress=progress)
    report.runs.append(check)
    # Only hosts that drifted and had nothing fail: a host whose check stopped half-way is not
    # changed blind; its failure is reported instead.
    to_fix = [name for name in check.drifted_hosts if check.hosts[name].status == "drift"]
    if args.remediate and to_fix and _STOP.signum is None:
        _say(args, f"remediating {', '.join(to_fix)}")
        fixing = ",".join(to_fix)
        report.runs.append(
            run_phase(args, run_dir, masker, phase="remediate", check=False, limit=fixing, progress=progress)
        )
        # The recheck looks again at the hosts just changed only: the others were checked minutes ago
        # (on a large fleet a second check of all of them would double the run).
        if _STOP.signum is None:
            report.runs.append(
                run_phase(args, run_dir, masker, phase="recheck", check=True, limit=fixing, progress=progress)
            )

    if webhook_url and _STOP.signum is None:
        finished = datetime.now(UTC)
        if args.webhook_format == "plain":
            payload: Any = to_dict(report)
        else:
            payload = to_alertmanager(report, finished, timedelta(hours=args.alert_ttl_hours))
        report.webhook = {"target": _target(webhook_url), "format": args.webhook_format}
        report.webhook.update(post_webhook(webhook_url, payload, args.webhook_timeout))
        if not report.webhook["ok"]:
            print(
                f"Could not post to the webhook {report.webhook['target']}: {report.webhook['error']}", file=sys.stderr
            )


if __name__ == "__main__":
    sys.exit(main())

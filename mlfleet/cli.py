"""``mlfleet``: the site tools of an mlfleet site repository, as subcommands of one command.

Each subcommand is a module with ``main(argv, prog) -> int`` and its own ``--help`` and exit codes;
this module only dispatches, so that ``mlfleet --help`` works without the Ansible toolchain.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

# name -> (module, one line for the command list)
COMMANDS: dict[str, tuple[str, str]] = {
    "compliance": ("mlfleet.compliance", "a compliance scan's scores per host (OpenSCAP, Lynis), gates and metrics"),
    "drift": ("mlfleet.drift", "check the fleet for configuration drift (check + diff), report and alert"),
    "ledger": ("mlfleet.ledger", "what each host serves and every rollout, rollback and heal, from the ledger"),
    "release": ("mlfleet.release", "model release manifests: validate them (each fault names its field), the schema"),
    "report": ("mlfleet.report", "the fleet report: one HTML page of what runs where, rollouts, traffic and drift"),
}

EPILOG = """\
exit codes: each command documents its own (mlfleet COMMAND --help). Common to all: 0 success,
1 the command failed or its command line was wrong (with the reason on stderr).

Run `mlfleet COMMAND --help` for a command's options.
"""


class UsageError(Exception):
    """A bad command line. argparse would exit 2, which `mlfleet drift` uses for "drift found"; every
    subcommand reports it as a failure (exit 1) instead."""


class Parser(argparse.ArgumentParser):
    """The parser of every subcommand: a bad command line raises UsageError instead of exiting 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def parse_or_say(
    parse_args: Callable[[Sequence[str] | None, str], argparse.Namespace], argv: Sequence[str] | None, prog: str
) -> argparse.Namespace | None:
    """A subcommand's command line, or None once its usage error is printed (the subcommand exits 1)."""
    try:
        return parse_args(argv, prog)
    except UsageError as exc:
        print(f"usage error: {exc} (see --help)", file=sys.stderr)
        return None


def version() -> str:
    try:
        return metadata.version("mlfleet")
    except metadata.PackageNotFoundError:  # run from a checkout without installing it
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mlfleet",
        description="Site tools for on-prem ML inference fleets run with the mlfleet.fleet collection.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"mlfleet {version()}")
    commands = top.add_subparsers(title="commands", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        parser().print_help()
        return 0 if args else 1
    if args[0] == "--version":
        print(f"mlfleet {version()}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(
            f"mlfleet: unknown command {name!r}; commands: {', '.join(COMMANDS)} (see mlfleet --help)", file=sys.stderr
        )
        return 1
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest, prog=f"mlfleet {name}"))


if __name__ == "__main__":
    sys.exit(main())

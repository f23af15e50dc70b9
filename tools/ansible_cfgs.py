"""The repository's ansible.cfg as a file that can live anywhere, with or without the Mitogen strategy.

    python tools/ansible_cfgs.py mitogen.cfg     # the project's settings plus strategy = mitogen_linear

Used by the benchmarks (benchmarks/fleet_bench.py: the ``project`` and ``mitogen`` profiles) and by
the end-to-end tests (tests/e2e/labkit.py: the converge and drift runs), so that both run exactly
the settings docs/benchmarks.md describes. Mitogen must be installed (requirements.txt has it).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def project_config(root: Path = ROOT) -> str:
    """ansible.cfg with its relative paths made absolute (they are relative to the file's folder)."""
    text = (root / "ansible.cfg").read_text()
    for key in ("inventory", "collections_path"):
        text = re.sub(rf"^({key}\s*=\s*)(?!/)(\S+)", rf"\g<1>{root}/\2", text, flags=re.M)
    return text


def mitogen_strategy_dir() -> Path:
    import ansible_mitogen  # noqa: PLC0415 - only a Mitogen config needs it

    return Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"


def mitogen_config(root: Path = ROOT) -> str:
    """The project's settings plus the Mitogen strategy (mitogen_linear)."""
    return project_config(root).replace(
        "[defaults]\n",
        # Mitogen runs its own ssh and enforces host keys unless told not to; the lab's inventory
        # already turns checking off for its throwaway host keys.
        f"[defaults]\nstrategy_plugins = {mitogen_strategy_dir()}\nstrategy = mitogen_linear\n"
        "host_key_checking = False\n",
        1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the Mitogen ansible.cfg")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(mitogen_config())
    print(args.out)


if __name__ == "__main__":
    main()

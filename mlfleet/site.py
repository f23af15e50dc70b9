"""Where the site repository is: the folder the playbooks, inventories and artifacts live in."""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def is_site(path: Path) -> bool:
    return (path / "playbooks").is_dir() and (path / "ansible.cfg").is_file()


def default_project_dir(cwd: Path | None = None) -> Path:
    """The site repository around the current folder (the nearest parent with ansible.cfg and
    playbooks/); else the checkout this package runs from (``python -m`` in this repository); else
    the current folder. An installed ``mlfleet`` is thus run from inside the site repository."""
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if is_site(folder):
            return folder
    return CHECKOUT if is_site(CHECKOUT) else here

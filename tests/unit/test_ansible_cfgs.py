"""tools/ansible_cfgs.py: the project's ansible.cfg, movable, and its Mitogen variant."""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from ansible_cfgs import mitogen_config, project_config  # noqa: E402


def parse(text: str) -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(text)
    return cfg


def test_the_project_config_points_at_this_repository_from_anywhere() -> None:
    cfg = parse(project_config(ROOT))
    assert cfg["defaults"]["inventory"] == f"{ROOT}/inventories/lab"
    assert cfg["defaults"]["collections_path"] == f"{ROOT}/collections"
    # Every other setting is the repository's own.
    assert cfg["defaults"]["forks"] == parse((ROOT / "ansible.cfg").read_text())["defaults"]["forks"]
    assert "strategy" not in cfg["defaults"]


def test_the_mitogen_config_adds_only_the_strategy_and_host_key_setting() -> None:
    project, mitogen = parse(project_config(ROOT)), parse(mitogen_config(ROOT))
    assert mitogen["defaults"]["strategy"] == "mitogen_linear"
    strategy_dir = Path(mitogen["defaults"]["strategy_plugins"])
    assert (strategy_dir / "mitogen_linear.py").is_file()
    assert mitogen["defaults"]["host_key_checking"] == "False"
    added = {"strategy", "strategy_plugins", "host_key_checking"}
    for section in project.sections():
        assert {k: v for k, v in mitogen[section].items() if k not in added} == dict(project[section])

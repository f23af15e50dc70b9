"""Make the project's plugins importable the way Ansible imports them.

Modules import shared code as ``ansible.module_utils.<name>``; Ansible finds those files through
``module_utils`` in ansible.cfg. Tests get the same view by extending the package's search path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ansible.module_utils

ROOT = Path(__file__).resolve().parents[2]
MODULE_UTILS = ROOT / "plugins" / "module_utils"
MODULES = ROOT / "plugins" / "modules"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

if str(MODULE_UTILS) not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(MODULE_UTILS))
for extra in (MODULES, ROOT / "plugins" / "filter", ROOT / "plugins" / "callback"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

"""Run an Ansible module's ``main()`` in-process and return what it would print.

This is the same path AnsiballZ takes (arguments in, one JSON document out), without mocks of the
module's internals: tests feed real arguments and real inputs (files, a local HTTP server).
"""

from __future__ import annotations

import io
import json
import sys
from contextlib import redirect_stdout, suppress
from types import ModuleType
from typing import Any

from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes


def run_module(module: ModuleType, args: dict[str, Any], check_mode: bool = False) -> dict[str, Any]:
    """Call ``module.main()`` with ``args``; return the result dict (``failed`` is set on fail_json)."""
    payload = dict(args)
    payload["_ansible_check_mode"] = check_mode
    payload.setdefault("_ansible_remote_tmp", "/tmp")
    payload.setdefault("_ansible_keep_remote_files", False)
    basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    basic._ANSIBLE_PROFILE = "legacy"
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [module.__name__]
    try:
        with redirect_stdout(out), suppress(SystemExit):
            module.main()
    finally:
        sys.argv = argv
        basic._ANSIBLE_ARGS = None
    return json.loads(out.getvalue())

#!/usr/bin/python
# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ledger_append
short_description: Append one record to a JSON-lines ledger, safe under concurrent writers
description:
  - Appends O(record) as one JSON line (keys sorted) to O(path), and never rewrites what is there. The
    deployment ledger is an audit trail; M(ansible.builtin.lineinfile) rewrites the whole file, drops a
    line equal to one already there, and loses records when two runs write at once.
  - The line is written with one C(write) to a file opened with C(O_APPEND) under an exclusive C(flock),
    then C(fsync)ed, so records of concurrent writers (forks of one run, or two runs) never interleave and
    a written record survives a crash of the machine.
  - A last line without its newline (a writer killed mid-write) is closed first, so the new record starts
    on its own line; readers skip the broken line and name it.
author:
  - mlfleet contributors (@mlfleet)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: In check mode nothing is written; the result has the line that would be appended.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
options:
  path:
    description: The ledger file. Its folder must exist.
    type: path
    required: true
  record:
    description: The record; any JSON-serialisable mapping.
    type: dict
    required: true
  mode:
    description: Permissions of the file when this task creates it.
    type: raw
    default: "0644"
  lock_timeout:
    description: Seconds to wait for another writer's lock before failing.
    type: int
    default: 30
"""

EXAMPLES = r"""
- name: Append the record to the control node's ledger
  mlfleet.fleet.ledger_append:
    path: "{{ playbook_dir }}/artifacts/ledger/deployments.jsonl"
    record:
      host: "{{ inventory_hostname }}"
      model: iris
      version: v2
      result: deployed
  delegate_to: localhost
"""

RETURN = r"""
line:
  description: The JSON line appended (or, in check mode, that would be).
  returned: always
  type: str
  sample: '{"host": "cpu-1", "model": "iris", "result": "deployed", "version": "v2"}'
offset:
  description: Where in the file the line starts (bytes); not returned in check mode.
  returned: success
  type: int
  sample: 2048
"""

import errno
import fcntl
import json
import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native


def lock(fd: int, timeout: int) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def append(path: str, data: bytes, mode: int, timeout: int) -> int:
    """Append ``data`` (one line) and return its offset; raise TimeoutError when the lock stays taken."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        if not lock(fd, timeout):
            raise TimeoutError(f"another writer has held the lock on {path} for {timeout}s")
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as reader:
                reader.seek(size - 1)
                if reader.read(1) != b"\n":
                    data = b"\n" + data
                    size += 1
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.EIO, f"wrote {written} of {len(data)} bytes")
        os.fsync(fd)
        return size
    finally:
        os.close(fd)  # releases the flock


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "record": {"type": "dict", "required": True},
            "mode": {"type": "raw", "default": "0644"},
            "lock_timeout": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    path = module.params["path"]
    try:
        line = json.dumps(module.params["record"], sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        module.fail_json(msg=f"The record cannot be written as JSON: {to_native(exc)}")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        module.fail_json(msg=f"The ledger's folder {folder} does not exist: create it first", line=line)
    mode = module.params["mode"]
    try:
        mode = int(mode, 8) if isinstance(mode, str) else int(mode)
    except ValueError:
        module.fail_json(msg=f"mode must be an octal number such as 0644, not {mode!r}")
    diff = {"before_header": path, "after_header": path, "before": "", "after": line + "\n"}
    if module.check_mode:
        module.exit_json(changed=True, line=line, diff=diff)
    try:
        offset = append(path, to_bytes(line + "\n"), mode, module.params["lock_timeout"])
    except TimeoutError as exc:
        module.fail_json(msg=f"{exc}: no record written. Retry when the other run has written its record.", line=line)
    except OSError as exc:
        module.fail_json(
            msg=f"Could not append to the ledger {path}: {to_native(exc)}. No record written: make it writable "
            "and record the outcome by hand or re-run.",
            line=line,
        )
    module.exit_json(changed=True, line=line, offset=offset, diff=diff)


if __name__ == "__main__":
    main()

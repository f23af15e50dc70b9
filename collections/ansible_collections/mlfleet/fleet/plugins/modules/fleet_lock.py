#!/usr/bin/python
# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: fleet_lock
short_description: Take or give back the one lock that lets a run change the fleet
description:
  - A lock file on one host (by default the first load balancer) that every run which changes model
    services (rollout, rollback, C(site.yml), a drift remediation) takes before it changes anything and
    gives back at its end, so that two such runs never overlap and the ledger keeps every record.
  - Taking it is atomic (the file is created with C(O_EXCL)); a lock already held by the same run
    (O(run_id)) is taken again without change, so nested playbooks share it.
  - A lock held by another run fails the task with who holds it, since when and until when, and what
    to do. A lock past its expiry (a run whose control node died) is taken over, and the result says
    from whom. O(break_run_id) breaks a lock held by the named run at once (an operator who knows it is
    dead).
  - Giving it back removes the file only when this run holds it.
author:
  - mlfleet contributors (@mlfleet)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: In check mode nothing is written; a lock held by another run is reported in RV(holder) and does not fail.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  path:
    description: The lock file. Its folder is created (mode 0700) when missing.
    type: path
    default: /var/lib/mlfleet/fleet.lock
  state:
    description: V(present) takes the lock, V(absent) gives it back.
    type: str
    choices: [present, absent]
    default: present
  run_id:
    description: What identifies this run (unique per run, the same for every task of it).
    type: str
    required: true
  owner:
    description:
      - "Who and what holds the lock, for the message another run gets (e.g. C(alice@ctl-1: rollout.yml))."
    type: str
    default: ""
  ttl:
    description:
      - Seconds after which the lock counts as abandoned and another run may take it over. Taking the lock
        again with the same O(run_id) renews it (a long rollout does, batch by batch).
    type: int
    default: 3600
  break_run_id:
    description: Take the lock even though the run with this id holds it (it died; check first).
    type: str
"""

EXAMPLES = r"""
- name: Take the fleet lock before any change
  mlfleet.fleet.fleet_lock:
    run_id: "{{ fleet_lock_run_id }}"
    owner: "rollout of iris v2 by {{ lookup('ansible.builtin.env', 'USER') }}"
  delegate_to: lb-1

- name: Give the fleet lock back
  mlfleet.fleet.fleet_lock:
    run_id: "{{ fleet_lock_run_id }}"
    state: absent
  delegate_to: lb-1
"""

RETURN = r"""
holder:
  description: The lock as it is after the task (absent - C({})), or, in check mode, the run that holds it.
  returned: always
  type: dict
  sample:
    run_id: "ctl-1:48211:1731542"
    owner: "alice@ctl-1: rollout.yml"
    since: "2026-12-05T15:10:02Z"
    expires: "2026-12-05T16:10:02Z"
    expires_ts: 1796487002.5
taken_over:
  description: The abandoned (or broken) lock this run took over, or C({}).
  returned: always
  type: dict
"""

import json
import os
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def read_lock(path: str) -> dict[str, Any] | None:
    """The lock in ``path``, None when there is none; an unreadable one counts as expired."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return data
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"run_id": "?", "owner": "an unreadable lock file", "since": "?", "expires": "?", "expires_ts": 0}


def write_lock(path: str, lock: dict[str, Any], exclusive: bool) -> bool:
    """Write ``lock``; with ``exclusive`` only if no lock file exists (False when one does)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(lock, handle, sort_keys=True)
        handle.write("\n")
    return True


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/var/lib/mlfleet/fleet.lock"},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "run_id": {"type": "str", "required": True},
            "owner": {"type": "str", "default": ""},
            "ttl": {"type": "int", "default": 3600},
            "break_run_id": {"type": "str"},
        },
        supports_check_mode=True,
    )
    path, run_id = module.params["path"], module.params["run_id"].strip()
    if not run_id:
        module.fail_json(msg="The fleet lock needs a run_id: it is empty (give every run its own id)")
    if module.params["ttl"] < 1:
        module.fail_json(msg=f"The fleet lock's ttl must be at least 1 second, not {module.params['ttl']}")
    held = read_lock(path)
    result: dict[str, Any] = {"changed": False, "holder": held or {}, "taken_over": {}}

    if module.params["state"] == "absent":
        if held is None:
            module.exit_json(**result)
        if held.get("run_id") != run_id:
            module.warn(
                f"The fleet lock {path} is held by another run ({held.get('owner')}, {held.get('run_id')}): "
                "left as it is."
            )
            module.exit_json(**result)
        result.update(changed=True, holder={})
        if not module.check_mode:
            os.unlink(path)
        module.exit_json(**result)

    now = time.time()
    lock = {
        "run_id": run_id,
        "owner": module.params["owner"],
        "since": held["since"] if held and held.get("run_id") == run_id else _iso(now),
        "expires": _iso(now + module.params["ttl"]),
        "expires_ts": now + module.params["ttl"],
    }
    if held is not None and held.get("run_id") != run_id:
        expired = float(held.get("expires_ts") or 0) <= now
        broken = module.params["break_run_id"] and module.params["break_run_id"] == held.get("run_id")
        if not (expired or broken):
            if module.check_mode:
                module.exit_json(**result)
            module.fail_json(
                msg=(
                    f"The fleet is locked by another run: {held.get('owner') or 'no owner given'} "
                    f"(run {held.get('run_id')}, since {held.get('since')}, until {held.get('expires')}). "
                    "This run stops here. Wait for that run to end; if it died, its lock expires at the time "
                    f"above, or break it now: break_run_id={held.get('run_id')} (the playbooks: "
                    f"-e preflight_lock_break={held.get('run_id')})."
                ),
                **result,
            )
        result["taken_over"] = held
    result.update(changed=held is None or held.get("run_id") != run_id, holder=lock)
    if module.check_mode:
        module.exit_json(**result)
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700)
    if held is None:
        if not write_lock(path, lock, exclusive=True):
            again = read_lock(path) or {}
            module.fail_json(
                msg=(
                    f"The fleet lock was taken by {again.get('owner')} (run {again.get('run_id')}) at the same "
                    "moment. This run stops here."
                ),
                holder=again,
                taken_over={},
            )
    else:
        # Renewal by the holder, or a take-over of an abandoned lock: replace the file atomically.
        tmp = f"{path}.{os.getpid()}"
        write_lock(tmp, lock, exclusive=False)
        os.replace(tmp, path)
    if result["taken_over"]:
        module.warn(
            f"Took over the fleet lock of run {held.get('run_id')} ({held.get('owner')}, since {held.get('since')}), "
            "which had expired or was broken on purpose: check what that run left half done (the ledger)."
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()

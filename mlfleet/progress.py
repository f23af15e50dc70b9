"""Progress of a playbook run for a person at a terminal: one status line, rewritten in place.

Fed with ansible-runner events. Off (prints nothing) when the stream is not a terminal or the
command runs with ``--quiet``, so that piped or scheduled output stays machine-readable.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

_RESULTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "ok",
}


class Progress:
    """``[01:23] check · play 3 Monitoring · task 41 Install the exporter · 4/6 hosts · 1 unreachable``"""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = 0.2,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = (
            (self.stream.isatty() if hasattr(self.stream, "isatty") else False) if enabled is None else enabled
        )
        self.clock = clock
        self.started = clock()
        self.min_interval = min_interval
        self.phase = ""
        self.plays = 0
        self.play = ""
        self.tasks = 0
        self.task = ""
        self.hosts: set[str] = set()  # every host seen in the run
        self.answered: set[str] = set()  # hosts that answered the current task
        self.trouble: dict[str, str] = {}  # host -> failed | unreachable, for the whole run
        self._last_draw = float("-inf")
        self._drawn = False

    def start_phase(self, phase: str) -> None:
        self.phase = phase
        self.draw(force=True)

    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event", "")
        data: Mapping[str, Any] = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.plays += 1
            self.play = str(data.get("play") or data.get("name") or "")
            self.answered = set()
        elif kind == "playbook_on_task_start":
            self.tasks += 1
            self.task = str(data.get("task") or data.get("name") or "")
            self.answered = set()
        elif kind in _RESULTS and data.get("host"):
            host = str(data["host"])
            self.hosts.add(host)
            self.answered.add(host)
            if _RESULTS[kind] != "ok" and not data.get("ignore_errors"):
                self.trouble.setdefault(host, _RESULTS[kind])
        else:
            return
        self.draw()

    def line(self) -> str:
        elapsed = int(self.clock() - self.started)
        parts = [f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {self.phase or 'run'}"]
        if self.plays:
            parts.append(f"play {self.plays} {self.play}".rstrip())
        if self.tasks:
            parts.append(f"task {self.tasks} {self.task}".rstrip())
        if self.hosts:
            parts.append(f"{len(self.answered)}/{len(self.hosts)} hosts")
        for state in ("unreachable", "failed"):
            if count := sum(1 for s in self.trouble.values() if s == state):
                parts.append(f"{count} {state}")
        return " · ".join(parts)

    def draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        width = shutil.get_terminal_size((100, 24)).columns - 1
        self.stream.write("\r\x1b[K" + self.line()[:width])
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Clear the status line, so that what is printed next starts on a clean line."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

"""A bounded background client: sends inference requests through the LB and counts every outcome."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

IRIS_REQUEST = {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


class Client:
    """Send requests to ``url`` until stopped (at most ``max_requests`` or ``max_seconds``)."""

    def __init__(self, url: str, max_requests: int = 20000, max_seconds: float = 900.0, interval: float = 0.02):
        self.url = url
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.interval = interval
        self.outcomes: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def request_once(self) -> None:
        body = json.dumps(IRIS_REQUEST).encode()
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                data = json.loads(resp.read())
            self.outcomes["ok" if data["outputs"][0]["data"] == [0] else "wrong"] += 1
            self.versions[data.get("model_version", "?")] += 1
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            self.outcomes["failed"] += 1
            if len(self.errors) < 20:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {exc}")

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline and self.total < self.max_requests:
            self.request_once()
            time.sleep(self.interval)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

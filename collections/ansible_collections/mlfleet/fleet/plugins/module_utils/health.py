# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTP probes for model servers: a small client, the health-gate checks and pure helpers.

Used by the ``model_health`` module. Only the Python standard library and ``ansible.module_utils``:
this file runs on the managed host.

Protocols:

* ``v2``: Open Inference Protocol v2 (Triton, MLServer, KServe).
* ``openai``: OpenAI-compatible servers (vLLM, TGI).
* ``http``: one user-given path that must answer with one of the expected status codes.
"""

from __future__ import annotations

import json
import math
import re
import socket
import time
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote

from ansible.module_utils.urls import Request, make_context

EXCERPT_CHARS = 200
TEXT_CHARS = 2000
PERCENTILE_METHOD = "nearest-rank"

PROTOCOL_CHECKS = {
    "v2": ("live", "ready", "model_ready", "infer", "latency"),
    "openai": ("live", "ready", "model_ready", "infer", "latency"),
    "http": ("live", "ready", "latency"),
}
# Checks always run in this order, whatever order the user lists them in.
CHECK_ORDER = ("live", "ready", "model_ready", "infer", "latency")


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def excerpt(text: str | None, limit: int = EXCERPT_CHARS) -> str:
    """Whitespace-collapsed start of ``text``, at most ``limit`` characters (with ``...`` when cut)."""
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest sample such that ``pct`` % of the samples are <= it.

    ``rank = ceil(pct / 100 * n)`` (at least 1) over the sorted samples; no interpolation, so the
    result is always a latency that was actually observed.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def latency_stats(samples_ms: list[float], errors: int = 0) -> dict[str, Any]:
    """Summary of request latencies in milliseconds (nearest-rank percentiles)."""
    stats: dict[str, Any] = {"count": len(samples_ms), "errors": errors, "method": PERCENTILE_METHOD}
    if samples_ms:
        stats.update(
            min_ms=round(min(samples_ms), 3),
            p50_ms=round(percentile(samples_ms, 50), 3),
            p95_ms=round(percentile(samples_ms, 95), 3),
            p99_ms=round(percentile(samples_ms, 99), 3),
            max_ms=round(max(samples_ms), 3),
            mean_ms=round(sum(samples_ms) / len(samples_ms), 3),
        )
    return stats


def latency_violations(stats: dict[str, Any], p95_max_ms: float | None, p99_max_ms: float | None) -> list[str]:
    """Threshold breaches as messages such as ``p99 812.3 ms > 500 ms threshold``."""
    found = []
    for name, limit in (("p95", p95_max_ms), ("p99", p99_max_ms)):
        value = stats.get(name + "_ms")
        if limit is not None and value is not None and value > limit:
            found.append(f"{name} {value:.1f} ms > {limit:g} ms threshold")
    return found


def flatten(data: Any) -> list[Any]:
    """Row-major flattening of (possibly nested) tensor data; a scalar becomes a one-item list."""
    if isinstance(data, (list, tuple)):
        flat: list[Any] = []
        for item in data:
            flat.extend(flatten(item))
        return flat
    return [data]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compact(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """Short JSON rendering of a value for messages."""
    try:
        text = json.dumps(value, separators=(", ", ": "), sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return excerpt(text, limit)


def compare_output(expected: Any, actual: Any, tolerance: float | None = None) -> str | None:
    """Compare tensor data; ``None`` when it matches, else ``expected [..] got [..]``.

    Both sides are flattened. Without ``tolerance`` the comparison is exact (``1 == 1.0`` holds).
    With ``tolerance`` two numbers match when ``abs(expected - actual) <= tolerance``; anything
    else (strings, booleans) must still be equal.
    """
    exp = flatten(expected)
    act = flatten(actual)
    mismatch = len(exp) != len(act)
    if not mismatch:
        for e, a in zip(exp, act):  # noqa: B905 - lengths are equal here; strict= needs Python 3.10
            if tolerance is not None and _is_number(e) and _is_number(a):
                if not abs(float(e) - float(a)) <= tolerance:
                    mismatch = True
                    break
            elif e != a or _is_number(e) != _is_number(a):
                mismatch = True
                break
    if not mismatch:
        return None
    msg = f"expected {compact(exp)} got {compact(act)}"
    if tolerance is not None:
        msg += f" (tolerance {tolerance:g})"
    return msg


def select_output(outputs: Any, selector: Any) -> dict[str, Any]:
    """Pick one entry of a v2 ``outputs`` list by index (int or digit string) or by ``name``."""
    if not isinstance(outputs, list) or not outputs:
        raise ValueError("the response has no 'outputs' list")
    if isinstance(selector, str):
        for item in outputs:
            if isinstance(item, dict) and item.get("name") == selector:
                return item
        if not selector.isdigit():
            names = [item.get("name") for item in outputs if isinstance(item, dict)]
            raise ValueError(f"no output named '{selector}' (outputs: {', '.join(map(str, names))})")
        selector = int(selector)
    if isinstance(selector, bool) or not isinstance(selector, int):
        raise ValueError(f"output must be an index or a name, got {selector!r}")
    if not -len(outputs) <= selector < len(outputs):
        raise ValueError(f"output index {selector} out of range ({len(outputs)} outputs)")
    item = outputs[selector]
    if not isinstance(item, dict):
        raise ValueError(f"output {selector} is not an object")
    return item


def openai_text(payload: Any) -> str:
    """Generated text of a completions (``choices[0].text``) or chat (``choices[0].message.content``) reply."""
    if not isinstance(payload, dict):
        raise ValueError("the response is not a JSON object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("the response has no 'choices'")
    first = choices[0]
    message = first.get("message")
    content = message.get("content") if isinstance(message, dict) else first.get("text")
    if not isinstance(content, str):
        raise ValueError("choices[0] has no text")
    return content


def listed_models(payload: Any) -> list[str]:
    """Model ids of an OpenAI ``GET /v1/models`` reply (``data[].id``)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise ValueError("the response has no 'data' list")
    return [str(item.get("id")) for item in payload["data"] if isinstance(item, dict)]


def openai_infer_path(infer_request: dict[str, Any] | None) -> str:
    """``/v1/chat/completions`` when the payload has ``messages``, else ``/v1/completions``."""
    if isinstance(infer_request, dict) and "messages" in infer_request:
        return "/v1/chat/completions"
    return "/v1/completions"


def v2_model_path(model: str, version: str | None = None) -> str:
    path = "/v2/models/" + quote(str(model), safe="")
    if version not in (None, ""):
        path += "/versions/" + quote(str(version), safe="")
    return path


def default_checks(protocol: str, model: str | None, infer_request: Any, latency_thresholds: bool) -> list[str]:
    """Checks run when the user gives none (see the module documentation)."""
    if protocol == "http":
        checks = ["ready"]
    elif protocol == "openai":
        checks = ["live", "model_ready" if model else "ready"]
    else:
        checks = ["live", "ready"] + (["model_ready"] if model else [])
    if protocol != "http" and infer_request is not None:
        checks.append("infer")
    if latency_thresholds:
        checks.append("latency")
    return checks


# --------------------------------------------------------------------------------------------
# HTTP client
# --------------------------------------------------------------------------------------------


class Response:
    """What one request gave: a status and body, or a connection error."""

    def __init__(
        self,
        method: str,
        url: str,
        status: int | None = None,
        body: str = "",
        error: str | None = None,
        elapsed_ms: float = 0.0,
        deadline_hit: bool = False,
    ) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        self.error = error
        self.elapsed_ms = elapsed_ms
        # True when the request was not sent, or timed out, because the overall deadline was (almost) over.
        self.deadline_hit = deadline_hit

    @property
    def success(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ValueError(f"the response is not JSON ({exc}): {excerpt(self.body) or '(empty body)'}") from None

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.method} {self.url} failed: {self.error}"
        return f"{self.method} {self.url} returned HTTP {self.status}: {excerpt(self.body) or '(empty body)'}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.url,
            "status": self.status,
            "body": excerpt(self.body),
            "error": self.error,
            "elapsed_ms": round(self.elapsed_ms, 3),
        }


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, URLError) and not isinstance(exc, HTTPError):
        return isinstance(exc.reason, (socket.timeout, TimeoutError))
    return isinstance(exc, (socket.timeout, TimeoutError))


def _error_text(exc: BaseException, timeout: float) -> str:
    if _is_timeout(exc):
        return f"timed out after {timeout:.3g} s"
    if isinstance(exc, URLError) and not isinstance(exc, HTTPError):
        return f"connection error: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


class ProbeClient:
    """JSON-over-HTTP client bound to one base URL, on Ansible's own ``ansible.module_utils.urls``.

    It uses ``Request.open`` (what ``open_url`` wraps) with one TLS context made once by ``make_context``:
    ``open_url`` builds a fresh context, loading every CA certificate, on each call (some 20-30 ms),
    which would swamp the latency of a fast model.

    Every request's socket timeout is ``min(timeout, time left before deadline)``, so no single
    request (for instance to a server whose engine hangs) can outlive the overall deadline.
    ``deadline`` is an absolute ``time.monotonic()`` value.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        deadline: float | None = None,
        validate_certs: bool = True,
        ca_path: str | None = None,
        headers: dict[str, str] | None = None,
        use_proxy: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.deadline = deadline
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self.use_proxy = use_proxy
        self._context: Any = None

    def tls_context(self) -> Any:
        if self._context is None:
            self._context = make_context(cafile=self.ca_path, validate_certs=self.validate_certs)
        return self._context

    def url_for(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def request(self, method: str, path: str, body: Any = None) -> Response:
        url = self.url_for(path)
        timeout = self.timeout
        left = self.remaining()
        if left is not None:
            if left <= 0:
                return Response(method, url, error="deadline exceeded before the request was sent", deadline_hit=True)
            timeout = min(timeout, left)
        capped = timeout < self.timeout
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        headers.update(self.headers)
        try:
            context = self.tls_context()
        except Exception as exc:  # noqa: BLE001 - a bad ca_path is a check result too
            return Response(method, url, error=f"TLS set-up failed: {type(exc).__name__}: {exc}")
        start = time.monotonic()
        status: int | None = None
        raw = b""
        error: str | None = None
        deadline_hit = False
        try:
            resp = Request().open(
                method,
                url,
                data=data,
                headers=headers,
                timeout=timeout,
                validate_certs=self.validate_certs,
                ca_path=self.ca_path,
                use_proxy=self.use_proxy,
                http_agent="mlfleet-model-health",
                follow_redirects="safe",
                context=context,
            )
            try:
                status = resp.getcode()
                raw = resp.read()
            finally:
                resp.close()
        except HTTPError as exc:
            status = exc.code
            try:
                raw = exc.read() or b""
            except Exception:  # noqa: BLE001 - the body of an error reply is best effort
                raw = b""
        except Exception as exc:  # noqa: BLE001 - any failure to talk to the server is a check result
            error = _error_text(exc, timeout)
            deadline_hit = capped and _is_timeout(exc)
        elapsed_ms = (time.monotonic() - start) * 1000.0
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        return Response(
            method, url, status=status, body=text, error=error, elapsed_ms=elapsed_ms, deadline_hit=deadline_hit
        )


# --------------------------------------------------------------------------------------------
# Health gate
# --------------------------------------------------------------------------------------------


class CheckFailed(Exception):
    """A check did not pass; ``response`` is the request that showed it (if any)."""

    def __init__(self, msg: str, response: Response | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.response = response


class HealthGate:
    """Runs the checks of one model server, retrying failing ones until the deadline.

    ``params`` are the module's options (see ``model_health``'s DOCUMENTATION).
    """

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.protocol: str = params["protocol"]
        self.model: str | None = params.get("model")
        self.version: str | None = params.get("model_version")
        self.infer_request: Any = params.get("infer_request")
        self.expected: Any = params.get("expected_output")
        self.tolerance: float | None = params.get("tolerance")
        self.output: Any = params.get("output", 0)
        self.http_status: list[int] = list(params.get("http_status") or [200])
        self.client = ProbeClient(
            params["url"],
            timeout=float(params.get("timeout", 10)),
            validate_certs=params.get("validate_certs", True),
            ca_path=params.get("ca_path"),
            headers=params.get("headers"),
            use_proxy=params.get("use_proxy", True),
        )
        self.inference: dict[str, Any] = {}
        self.latency: dict[str, Any] = {}

    # --- paths -------------------------------------------------------------------------------

    def infer_path(self) -> str:
        if self.params.get("infer_path"):
            return self.params["infer_path"]
        if self.protocol == "openai":
            return openai_infer_path(self.infer_request)
        return v2_model_path(self.model or "", self.version) + "/infer"

    def infer_body(self) -> Any:
        body = self.infer_request
        if self.protocol == "openai" and isinstance(body, dict) and "model" not in body and self.model:
            body = dict(body, model=self.model)
        return body

    # --- checks --------------------------------------------------------------------------------

    def _get_ok(self, path: str) -> Response:
        resp = self.client.request("GET", path)
        if not resp.success:
            raise CheckFailed(resp.describe(), resp)
        return resp

    def check_live(self) -> Response:
        if self.protocol == "v2":
            return self._get_ok("/v2/health/live")
        if self.protocol == "openai":
            return self._get_ok("/health")
        return self.check_http()

    def check_ready(self) -> Response:
        if self.protocol == "v2":
            return self._get_ok("/v2/health/ready")
        if self.protocol == "openai":
            resp = self._get_ok("/v1/models")
            try:
                listed_models(resp.json())
            except ValueError as exc:
                raise CheckFailed(f"{resp.describe()}: {exc}", resp) from None
            return resp
        return self.check_http()

    def check_model_ready(self) -> Response:
        if self.protocol == "v2":
            return self._get_ok(v2_model_path(self.model or "", self.version) + "/ready")
        resp = self._get_ok("/v1/models")
        try:
            models = listed_models(resp.json())
        except ValueError as exc:
            raise CheckFailed(f"{resp.describe()}: {exc}", resp) from None
        if self.model not in models:
            listed = ", ".join(models) or "none"
            raise CheckFailed(f"model '{self.model}' is not listed by GET {resp.url} (listed: {listed})", resp)
        return resp

    def check_http(self) -> Response:
        resp = self.client.request("GET", self.params.get("http_path") or "/")
        if resp.error is not None or resp.status not in self.http_status:
            expected = " or ".join(str(s) for s in self.http_status)
            raise CheckFailed(f"{resp.describe()} (expected HTTP {expected})", resp)
        return resp

    def check_infer(self) -> Response:
        self.inference = {}
        resp = self.client.request("POST", self.infer_path(), self.infer_body())
        if not resp.success:
            raise CheckFailed(resp.describe(), resp)
        try:
            payload = resp.json()
            if self.protocol == "openai":
                self._judge_openai(payload)
            else:
                self._judge_v2(payload)
        except ValueError as exc:
            raise CheckFailed(f"POST {resp.url}: {exc}", resp) from None
        return resp

    def _judge_v2(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            raise ValueError("the response is not a JSON object")
        item = select_output(payload.get("outputs"), self.output)
        data = item.get("data")
        self.inference = {
            "model_name": payload.get("model_name"),
            "model_version": payload.get("model_version"),
            "output_name": item.get("name"),
            "datatype": item.get("datatype"),
            "shape": item.get("shape"),
            "output": data,
            "expected": self.expected,
            "matched": None,
        }
        if self.expected is None:
            return
        problem = compare_output(self.expected, data, self.tolerance)
        self.inference["matched"] = problem is None
        if problem:
            raise ValueError(f"output '{item.get('name', self.output)}': {problem}")

    def _judge_openai(self, payload: Any) -> None:
        text = openai_text(payload)
        self.inference = {
            "model_name": payload.get("model"),
            "output": excerpt(text, TEXT_CHARS) if len(text) > TEXT_CHARS else text,
            "finish_reason": (payload.get("choices") or [{}])[0].get("finish_reason"),
            "usage": payload.get("usage"),
            "expected": self.expected,
            "matched": None,
        }
        if self.expected is None:
            return
        matched = re.search(str(self.expected), text) is not None
        self.inference["matched"] = matched
        if not matched:
            raise ValueError(f"expected text matching {self.expected!r} got {excerpt(text)!r}")

    def check_latency(self) -> Response | None:
        count = int(self.params.get("latency_requests") or 20)
        if self.protocol == "http":
            method, path, body = "GET", self.params.get("http_path") or "/", None
        else:
            method, path, body = "POST", self.infer_path(), self.infer_body()
        self.latency = {}
        samples: list[float] = []
        errors = 0
        last_bad: Response | None = None
        last: Response | None = None
        for _attempt in range(count):
            resp = self.client.request(method, path, body)
            last = resp
            good = resp.status in self.http_status if self.protocol == "http" else resp.success
            if good and resp.error is None:
                samples.append(resp.elapsed_ms)
            else:
                errors += 1
                last_bad = resp
                left = self.client.remaining()
                if left is not None and left <= 0:
                    break
        self.latency = latency_stats(samples, errors)
        self.latency["requests"] = count
        if last_bad is not None:
            raise CheckFailed(
                f"{errors} of {count} requests failed ({len(samples)} succeeded); last: {last_bad.describe()}",
                last_bad,
            )
        problems = latency_violations(
            self.latency, self.params.get("latency_p95_max_ms"), self.params.get("latency_p99_max_ms")
        )
        if problems:
            raise CheckFailed(f"{', '.join(problems)} over {len(samples)} requests", last)
        return last

    def run_check(self, name: str) -> dict[str, Any]:
        start = time.monotonic()
        outcome: dict[str, Any] = {"ok": True, "msg": "ok"}
        try:
            resp = getattr(self, "check_" + name)()
        except CheckFailed as exc:
            outcome = {"ok": False, "msg": exc.msg}
            resp = exc.response
            if resp is not None and resp.deadline_hit:
                outcome["deadline_hit"] = True
        outcome.update(resp.as_dict() if resp is not None else Response("", "").as_dict())
        outcome["elapsed_ms"] = round((time.monotonic() - start) * 1000.0, 3)
        return outcome

    # --- the gate ------------------------------------------------------------------------------

    def run(self, checks: list[str], deadline: float, retry_interval: float) -> dict[str, Any]:
        """Run ``checks`` in order; retry from the first failing one until ``deadline`` seconds pass.

        Returns ``checks``, ``failed_check``, ``inference``, ``latency``, ``attempts``, ``elapsed``
        and, on failure, ``msg``.
        """
        start = time.monotonic()
        self.client.deadline = start + deadline
        ordered = [c for c in CHECK_ORDER if c in checks]
        results: dict[str, dict[str, Any]] = {}
        runs = dict.fromkeys(ordered, 0)
        pending = list(ordered)
        attempts = 0
        failed: str | None = None
        while True:
            attempts += 1
            failed = None
            for name in pending:
                runs[name] += 1
                before = (self.inference, self.latency)
                result = self.run_check(name)
                previous = results.get(name)
                if result.pop("deadline_hit", False) and previous is not None:
                    # This retry could not finish before the deadline: the previous attempt's
                    # complete answer (wrong output, HTTP 503, ...) says more than "timed out".
                    result = previous
                    self.inference, self.latency = before
                results[name] = result
                result["attempts"] = runs[name]
                if not results[name]["ok"]:
                    failed = name
                    break
            pending = [name for name in ordered if not (name in results and results[name]["ok"])]
            if failed is None:
                break
            left = self.client.deadline - time.monotonic()
            if left <= retry_interval:
                break
            time.sleep(retry_interval)
        elapsed = time.monotonic() - start
        for name in ordered:
            if name not in results:
                results[name] = {
                    "ok": False,
                    "skipped": True,
                    "msg": f"not run: check '{failed}' did not pass",
                    "attempts": 0,
                }
        outcome: dict[str, Any] = {
            "checks": results,
            "failed_check": failed,
            "inference": self.inference,
            "latency": self.latency,
            "attempts": attempts,
            "elapsed": round(elapsed, 3),
        }
        if failed is not None:
            outcome["msg"] = (
                f"check '{failed}' failed after {attempts} attempt{'s' if attempts != 1 else ''} in "
                f"{elapsed:.1f} s (deadline {deadline:g} s): {results[failed]['msg']}"
            )
        return outcome

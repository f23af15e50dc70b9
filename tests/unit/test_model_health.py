"""Tests of the model_health module against a real local HTTP server (no mocks of open_url).

The server imitates MLServer's Open Inference Protocol v2 endpoints and an OpenAI-compatible server
(vLLM-style ``/health``, ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``), with switchable
behaviours: not ready for the first K calls, wrong prediction, slow or hung inference.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from ansible_collections.mlfleet.fleet.plugins.module_utils.health import (
    compare_output,
    latency_stats,
    percentile,
    select_output,
)
from ansible_collections.mlfleet.fleet.plugins.modules import model_health
from module_runner import run_module

IRIS_OUTPUT = [{"name": "predict", "shape": [1, 1], "datatype": "INT64", "data": [0]}]
IRIS_REQUEST = {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": [[5.1, 3.5, 1.4, 0.2]]}]}
TOKEN = "Bearer s3cr3t-token-6f1d2c"


class State:
    """Behaviour switches of the fake server, and what it saw."""

    def __init__(self) -> None:
        self.not_ready_for = 0  # answer 503 on /v2/health/ready for this many calls
        self.outputs: list[dict[str, Any]] = [dict(o) for o in IRIS_OUTPUT]
        self.infer_delay = 0.0  # seconds before answering an inference (v2 and openai)
        self.models = ["iris"]
        self.llm_models = ["tiny-llm"]
        self.text = " Paris is the capital of France."
        self.calls: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.release = threading.Event()  # set at teardown: wakes up every delayed handler
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        pass

    def _send(self, status: int, payload: Any = None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self, body: Any) -> int:
        state: State = self.server.state
        with state.lock:
            state.calls[self.path] += 1
            state.requests.append((self.command, self.path, dict(self.headers), body))
            return state.calls[self.path]

    def _delay(self) -> None:
        state: State = self.server.state
        if state.infer_delay:
            state.release.wait(state.infer_delay)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        state: State = self.server.state
        count = self._record(None)
        path = self.path
        if path == "/v2/health/live" or path == "/health":
            self._send(200)
        elif path == "/v2/health/ready":
            if count <= state.not_ready_for:
                self._send(503, {"error": "Model server not ready"})
            else:
                self._send(200)
        elif path.startswith("/v2/models/") and path.endswith("/ready"):
            name = path.split("/")[3]
            if name in state.models:
                self._send(200)
            else:
                self._send(404, {"error": f"Model {name} not found"})
        elif path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in state.llm_models]})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        state: State = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self._record(body)
        path = self.path
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            self._delay()
            name = path.split("/")[3]
            if name not in state.models:
                self._send(404, {"error": f"Model {name} not found"})
                return
            self._send(200, {"model_name": name, "id": "req-1", "parameters": {}, "outputs": state.outputs})
        elif path == "/v1/completions":
            self._delay()
            self._send(
                200,
                {
                    "id": "cmpl-1",
                    "object": "text_completion",
                    "model": body.get("model"),
                    "choices": [{"index": 0, "text": state.text, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
                },
            )
        elif path == "/v1/chat/completions":
            self._delay()
            self._send(
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": state.text}, "finish_reason": "stop"}
                    ],
                },
            )
        else:
            self._send(404, {"detail": "Not Found"})


class FakeServer:
    def __init__(self) -> None:
        self.state = State()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self.state  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def paths(self) -> list[str]:
        return [path for _, path, _, _ in self.state.requests]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to 127.0.0.1 must not go through a proxy from the environment."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Any:
    srv = FakeServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.state.release.set()
        srv.httpd.shutdown()
        srv.httpd.server_close()


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def v2_args(server: FakeServer, **extra: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "url": server.url,
        "protocol": "v2",
        "model": "iris",
        "infer_request": IRIS_REQUEST,
        "expected_output": [0],
        "deadline": 5,
        "retry_interval": 0.05,
        "timeout": 2,
    }
    args.update(extra)
    return args


def run(args: dict[str, Any], check_mode: bool = False) -> dict[str, Any]:
    return run_module(model_health, args, check_mode=check_mode)


# ----------------------------------------------------------------------------------------------
# v2 (MLServer)
# ----------------------------------------------------------------------------------------------


def test_v2_all_checks_pass(server: FakeServer) -> None:
    result = run(
        v2_args(
            server,
            checks=["live", "ready", "model_ready", "infer", "latency"],
            latency_requests=5,
            latency_p95_max_ms=2000,
            latency_p99_max_ms=2000,
        )
    )
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    assert result["failed_check"] is None
    assert result["attempts"] == 1
    assert list(result["checks"]) == ["live", "ready", "model_ready", "infer", "latency"]
    for name, check in result["checks"].items():
        assert check["ok"] is True, name
        assert check["status"] == 200, name
        assert check["attempts"] == 1
    assert result["checks"]["model_ready"]["url"] == server.url + "/v2/models/iris/ready"
    assert result["inference"]["output"] == [0]
    assert result["inference"]["output_name"] == "predict"
    assert result["inference"]["datatype"] == "INT64"
    assert result["inference"]["matched"] is True
    latency = result["latency"]
    assert latency["count"] == 5 and latency["errors"] == 0 and latency["method"] == "nearest-rank"
    assert latency["min_ms"] <= latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert latency["mean_ms"] > 0
    # 1 infer + 5 latency requests, each with the user's body
    infers = [r for r in server.state.requests if r[1] == "/v2/models/iris/infer"]
    assert len(infers) == 6
    assert all(body == IRIS_REQUEST for *_, body in infers)


def test_v2_default_checks(server: FakeServer) -> None:
    result = run(v2_args(server))
    assert not result.get("failed"), result.get("msg")
    assert list(result["checks"]) == ["live", "ready", "model_ready", "infer"]
    assert result["latency"] == {}


def test_model_version_path(server: FakeServer) -> None:
    result = run(v2_args(server, model_version="1"))
    assert not result.get("failed"), result.get("msg")
    assert "/v2/models/iris/versions/1/ready" in server.paths()
    assert "/v2/models/iris/versions/1/infer" in server.paths()


def test_retry_until_ready(server: FakeServer) -> None:
    server.state.not_ready_for = 3
    result = run(v2_args(server))
    assert not result.get("failed"), result.get("msg")
    assert result["attempts"] == 4
    assert result["checks"]["ready"]["attempts"] == 4
    assert result["checks"]["live"]["attempts"] == 1  # passed checks are not repeated
    assert result["checks"]["infer"]["attempts"] == 1
    assert server.state.calls["/v2/health/ready"] == 4


def test_deadline_exceeded_names_the_check(server: FakeServer) -> None:
    server.state.not_ready_for = 10**6
    start = time.monotonic()
    # Deadlines leave room for a loaded CI machine; the bound is still far below the 2 s x retries
    # the checks would take without one.
    result = run(v2_args(server, deadline=1.5))
    assert time.monotonic() - start < 6
    assert result["failed"] is True
    assert result["failed_check"] == "ready"
    assert result["msg"].startswith("check 'ready' failed after ")
    assert "HTTP 503" in result["msg"] and "Model server not ready" in result["msg"]
    assert "deadline 1.5 s" in result["msg"]
    assert result["attempts"] > 1
    assert result["checks"]["live"]["ok"] is True
    assert result["checks"]["ready"]["status"] == 503
    assert "Model server not ready" in result["checks"]["ready"]["body"]
    assert result["checks"]["model_ready"] == {
        "ok": False,
        "skipped": True,
        "msg": "not run: check 'ready' did not pass",
        "attempts": 0,
    }


def test_unknown_model(server: FakeServer) -> None:
    result = run(v2_args(server, model="setosa", deadline=5, retry_interval=10))
    assert result["failed"] is True
    assert result["failed_check"] == "model_ready"
    assert "HTTP 404" in result["msg"] and "Model setosa not found" in result["msg"]


def test_wrong_output(server: FakeServer) -> None:
    server.state.outputs = [{"name": "predict", "shape": [1, 1], "datatype": "INT64", "data": [2]}]
    result = run(v2_args(server, deadline=5, retry_interval=10))
    assert result["failed"] is True
    assert result["failed_check"] == "infer"
    assert "check 'infer'" in result["msg"]
    assert "output 'predict': expected [0] got [2]" in result["msg"]
    assert result["inference"]["output"] == [2]
    assert result["inference"]["expected"] == [0]
    assert result["inference"]["matched"] is False
    assert result["checks"]["infer"]["status"] == 200

    # Retried until the deadline, the message still says what the last complete answer was,
    # not that the last retry was cut short.
    retried = run(v2_args(server, deadline=2.0, retry_interval=0.02))
    assert retried["attempts"] > 1
    assert "expected [0] got [2]" in retried["msg"], retried["msg"]
    assert retried["inference"]["output"] == [2]


def test_tolerance(server: FakeServer) -> None:
    server.state.outputs = [{"name": "proba", "shape": [1, 2], "datatype": "FP32", "data": [[0.501, 0.499]]}]
    ok = run(v2_args(server, expected_output=[0.5, 0.5], tolerance=0.01))
    assert not ok.get("failed"), ok.get("msg")
    assert ok["inference"]["matched"] is True

    tight = run(v2_args(server, expected_output=[0.5, 0.5], tolerance=0.0001, deadline=5, retry_interval=10))
    assert tight["failed"] is True
    assert "expected [0.5, 0.5] got [0.501, 0.499] (tolerance 0.0001)" in tight["msg"]

    exact = run(v2_args(server, expected_output=[0.5, 0.5], deadline=5, retry_interval=10))
    assert exact["failed"] is True
    assert "expected [0.5, 0.5] got [0.501, 0.499]" in exact["msg"]


def test_output_selected_by_name(server: FakeServer) -> None:
    server.state.outputs = [
        {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["setosa"]},
        {"name": "proba", "shape": [1, 3], "datatype": "FP32", "data": [0.9, 0.05, 0.05]},
    ]
    result = run(v2_args(server, output="proba", expected_output=[0.9, 0.05, 0.05], tolerance=1e-6))
    assert not result.get("failed"), result.get("msg")
    assert result["inference"]["output_name"] == "proba"
    by_index = run(v2_args(server, output=0, expected_output="setosa"))
    assert not by_index.get("failed"), by_index.get("msg")
    missing = run(v2_args(server, output="logits", deadline=5, retry_interval=10))
    assert "no output named 'logits' (outputs: label, proba)" in missing["msg"]


def test_latency_threshold_failure(server: FakeServer) -> None:
    server.state.infer_delay = 0.03
    result = run(
        v2_args(
            server,
            checks=["infer", "latency"],
            latency_requests=4,
            latency_p99_max_ms=10,
            deadline=5,
            retry_interval=10,
        )
    )
    assert result["failed"] is True
    assert result["failed_check"] == "latency"
    assert "check 'latency' failed after 1 attempt " in result["msg"]
    assert "ms > 10 ms threshold over 4 requests" in result["msg"]
    assert f"p99 {result['latency']['p99_ms']:.1f} ms > 10 ms threshold" in result["msg"]
    assert result["latency"]["count"] == 4
    assert result["latency"]["p99_ms"] >= 30
    assert result["checks"]["infer"]["ok"] is True


def test_hung_engine_is_bounded_by_the_deadline(server: FakeServer) -> None:
    """An inference that never answers fails the gate at the deadline, not at the (long) timeout."""
    server.state.infer_delay = 30
    start = time.monotonic()
    result = run(v2_args(server, timeout=30, deadline=1.5, retry_interval=1))
    assert time.monotonic() - start < 6
    assert result["failed"] is True
    assert result["failed_check"] == "infer"
    assert "timed out" in result["msg"]
    assert result["checks"]["infer"]["status"] is None
    assert result["checks"]["ready"]["ok"] is True


def test_connection_refused(closed_port_url: str) -> None:
    result = run({"url": closed_port_url, "model": "iris", "deadline": 0.2, "retry_interval": 0.05})
    assert result["failed"] is True
    assert result["failed_check"] == "live"
    assert "check 'live'" in result["msg"]
    assert "connection error" in result["msg"] and "refused" in result["msg"].lower()
    assert result["checks"]["live"]["status"] is None
    assert result["checks"]["live"]["error"]


def test_check_mode_gives_the_same_result(server: FakeServer) -> None:
    def stable(result: dict[str, Any]) -> dict[str, Any]:
        checks = {
            name: {k: v for k, v in check.items() if k != "elapsed_ms"} for name, check in result["checks"].items()
        }
        return {
            "failed": result.get("failed", False),
            "changed": result["changed"],
            "checks": checks,
            "inference": result["inference"],
            "latency_count": result["latency"].get("count"),
            "attempts": result["attempts"],
            "failed_check": result["failed_check"],
        }

    args = v2_args(server, checks=["live", "ready", "model_ready", "infer", "latency"], latency_requests=3)
    normal = run(args)
    checked = run(args, check_mode=True)
    assert not normal.get("failed"), normal.get("msg")
    assert stable(checked) == stable(normal)

    server.state.outputs = [{"name": "predict", "shape": [1, 1], "datatype": "INT64", "data": [1]}]
    failing = dict(args, deadline=5, retry_interval=10)  # one attempt: the same number of requests both times
    assert stable(run(failing, check_mode=True)) == stable(run(failing))


def test_headers_are_sent_and_not_returned(server: FakeServer) -> None:
    result = run(v2_args(server, headers={"Authorization": TOKEN}))
    assert not result.get("failed"), result.get("msg")
    assert all(headers.get("Authorization") == TOKEN for _, _, headers, _ in server.state.requests)
    assert "s3cr3t" not in json.dumps(result)


# ----------------------------------------------------------------------------------------------
# openai (vLLM / TGI)
# ----------------------------------------------------------------------------------------------


def test_openai_completions_pass(server: FakeServer) -> None:
    result = run(
        {
            "url": server.url + "/",
            "protocol": "openai",
            "model": "tiny-llm",
            "checks": ["live", "model_ready", "infer", "latency"],
            "infer_request": {"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0},
            "expected_output": "(?i)paris",
            "latency_requests": 3,
            "latency_p95_max_ms": 5000,
            "deadline": 5,
        }
    )
    assert not result.get("failed"), result.get("msg")
    assert result["checks"]["live"]["url"] == server.url + "/health"
    assert result["inference"]["output"] == server.state.text
    assert result["inference"]["matched"] is True
    assert result["inference"]["model_name"] == "tiny-llm"
    assert result["inference"]["finish_reason"] == "length"
    assert result["latency"]["count"] == 3
    completions = [r for r in server.state.requests if r[1] == "/v1/completions"]
    assert len(completions) == 4
    assert completions[0][3]["model"] == "tiny-llm"  # added to the user's body


def test_openai_chat_and_wrong_text(server: FakeServer) -> None:
    args = {
        "url": server.url,
        "protocol": "openai",
        "model": "tiny-llm",
        "infer_request": {"messages": [{"role": "user", "content": "Capital of France?"}], "max_tokens": 8},
        "expected_output": "Paris",
        "deadline": 5,
        "retry_interval": 10,
    }
    result = run(args)
    assert not result.get("failed"), result.get("msg")
    assert list(result["checks"]) == ["live", "model_ready", "infer"]
    assert "/v1/chat/completions" in server.paths()

    server.state.text = "Lyon"
    wrong = run(args)
    assert wrong["failed"] is True
    assert wrong["failed_check"] == "infer"
    assert "expected text matching 'Paris' got 'Lyon'" in wrong["msg"]


def test_openai_model_not_listed(server: FakeServer) -> None:
    result = run({"url": server.url, "protocol": "openai", "model": "big-llm", "deadline": 5, "retry_interval": 10})
    assert result["failed"] is True
    assert result["failed_check"] == "model_ready"
    assert "model 'big-llm' is not listed by GET " in result["msg"]
    assert "(listed: tiny-llm)" in result["msg"]


# ----------------------------------------------------------------------------------------------
# http
# ----------------------------------------------------------------------------------------------


def test_http_protocol(server: FakeServer) -> None:
    ok = run({"url": server.url, "protocol": "http", "http_path": "/v2/health/live", "deadline": 5})
    assert not ok.get("failed"), ok.get("msg")
    assert list(ok["checks"]) == ["ready"]

    server.state.not_ready_for = 10**6
    bad = run(
        {
            "url": server.url,
            "protocol": "http",
            "http_path": "/v2/health/ready",
            "http_status": [200, 204],
            "deadline": 5,
            "retry_interval": 10,
        }
    )
    assert bad["failed"] is True
    assert "returned HTTP 503" in bad["msg"] and "(expected HTTP 200 or 204)" in bad["msg"]

    timed = run(
        {
            "url": server.url,
            "protocol": "http",
            "http_path": "/health",
            "checks": ["ready", "latency"],
            "latency_requests": 3,
        }
    )
    assert not timed.get("failed"), timed.get("msg")
    assert timed["latency"]["count"] == 3


# ----------------------------------------------------------------------------------------------
# options
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"checks": ["infer"], "infer_request": None}, "check(s) infer need infer_request"),
        ({"protocol": "grpc"}, "value of protocol must be one of: v2, openai, http, got: grpc"),
        ({"checks": ["live", "bogus"]}, "value of checks must be one or more of"),
        ({"model": None}, "check(s) infer need model"),
        ({"model": None, "checks": ["model_ready"], "expected_output": None}, "check(s) model_ready need model"),
        ({"latency_p99_max_ms": 100, "checks": ["live"], "expected_output": None}, "latency check is not in checks"),
        ({"checks": ["live"]}, "expected_output is set but the infer check is not in checks"),
        ({"protocol": "openai", "expected_output": "(unclosed"}, "not a valid regular expression"),
        ({"protocol": "openai", "expected_output": [0]}, "must be a string (a regular expression)"),
        ({"protocol": "http", "checks": ["infer"]}, "protocol http does not support the check(s) infer"),
        ({"tolerance": -1}, "tolerance must be >= 0"),
        ({"deadline": 0}, "deadline must be > 0"),
        ({"latency_requests": 0}, "latency_requests must be >= 1"),
        ({"url": "127.0.0.1:8080"}, "url must start with http:// or https://"),
    ],
)
def test_bad_options(server: FakeServer, extra: dict[str, Any], expected: str) -> None:
    args = {k: v for k, v in dict(v2_args(server), **extra).items() if v is not None}
    result = run(args)
    assert result["failed"] is True
    assert expected in result["msg"], result["msg"]
    assert server.state.requests == []  # nothing was sent


def test_url_is_required() -> None:
    result = run({"model": "iris"})
    assert result["failed"] is True
    assert "missing required arguments: url" in result["msg"]


# ----------------------------------------------------------------------------------------------
# pure helpers
# ----------------------------------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([10.0, 20.0, 30.0], 50) == 20
    assert percentile([10.0, 20.0, 30.0], 95) == 30
    assert percentile([7.0], 99) == 7
    with pytest.raises(ValueError):
        percentile([], 50)


def test_latency_stats() -> None:
    stats = latency_stats([4.0, 1.0, 3.0, 2.0], errors=1)
    assert stats == {
        "count": 4,
        "errors": 1,
        "method": "nearest-rank",
        "min_ms": 1.0,
        "p50_ms": 2.0,
        "p95_ms": 4.0,
        "p99_ms": 4.0,
        "max_ms": 4.0,
        "mean_ms": 2.5,
    }
    assert latency_stats([]) == {"count": 0, "errors": 0, "method": "nearest-rank"}


def test_compare_output() -> None:
    assert compare_output([0], [[0]]) is None  # flattened
    assert compare_output(1, [1.0]) is None
    assert compare_output([0], [0, 1]) == "expected [0] got [0, 1]"
    assert compare_output([True], [1]) == "expected [true] got [1]"
    assert compare_output(["a"], ["a"], tolerance=0.1) is None
    assert compare_output([1.0], [1.05], tolerance=0.1) is None
    assert compare_output([1.0], [1.2], tolerance=0.1) == "expected [1.0] got [1.2] (tolerance 0.1)"


def test_select_output() -> None:
    outputs = [{"name": "a", "data": [1]}, {"name": "b", "data": [2]}]
    assert select_output(outputs, 1)["name"] == "b"
    assert select_output(outputs, "1")["name"] == "b"
    assert select_output(outputs, "a")["name"] == "a"
    with pytest.raises(ValueError, match="out of range"):
        select_output(outputs, 2)
    with pytest.raises(ValueError, match="no 'outputs' list"):
        select_output(None, 0)

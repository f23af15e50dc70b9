"""A stand-in model server for Molecule scenarios: the Open Inference Protocol v2 endpoints that the
load balancer checks, the health gate probes and clients call, Prometheus-style metrics, and /count
(inferences served) for the verify steps. The end-to-end tests use the real MLServer instead.

    python3 stub_model.py --port 8080 [--bind 0.0.0.0] [--model iris] [--version v1] [--answer 0]
                          [--metrics-port 8082] [--name a]

Configuration can also come from the environment (STUB_VERSION, STUB_ANSWER), as in a model image.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=8080)
parser.add_argument("--bind", default="0.0.0.0")
parser.add_argument("--model", default="iris")
parser.add_argument("--version", default=os.environ.get("STUB_VERSION", "v1"))
parser.add_argument("--answer", type=int, default=int(os.environ.get("STUB_ANSWER", "0")))
parser.add_argument("--metrics-port", type=int, default=None)
parser.add_argument("--name", default=os.environ.get("HOSTNAME", "stub"))
ARGS = parser.parse_args()
SERVED = 0
LOCK = threading.Lock()
MODEL = re.compile(rf"^/v2/models/{re.escape(ARGS.model)}(?:/versions/(?P<version>[^/]+))?/(?P<what>ready|infer)$")


class Handler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: dict | str) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        match = MODEL.match(self.path)
        if self.path in ("/v2/health/live", "/v2/health/ready"):
            self.reply(200, {})
        elif match and match["what"] == "ready" and match["version"] in (None, ARGS.version):
            self.reply(200, {"name": ARGS.model, "ready": True})
        elif self.path == "/count":
            self.reply(200, {"served": SERVED})
        elif self.path == "/metrics":
            self.reply(200, f'stub_requests_total{{model="{ARGS.model}"}} {SERVED}\n')
        else:
            self.reply(404, {"error": f"{self.path} not found"})

    def do_POST(self) -> None:  # noqa: N802
        global SERVED
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        match = MODEL.match(self.path)
        if not match or match["what"] != "infer" or match["version"] not in (None, ARGS.version):
            self.reply(404, {"error": f"{self.path} not found"})
            return
        with LOCK:
            SERVED += 1
        output = {"name": "predict", "datatype": "INT64", "shape": [1], "data": [ARGS.answer]}
        self.reply(200, {"model_name": ARGS.model, "model_version": ARGS.version, "id": ARGS.name, "outputs": [output]})

    def log_message(self, *args: object) -> None:
        pass


if ARGS.metrics_port:
    metrics = ThreadingHTTPServer((ARGS.bind, ARGS.metrics_port), Handler)
    threading.Thread(target=metrics.serve_forever, daemon=True).start()
ThreadingHTTPServer((ARGS.bind, ARGS.port), Handler).serve_forever()

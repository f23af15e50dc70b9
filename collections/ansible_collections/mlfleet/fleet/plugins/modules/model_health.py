#!/usr/bin/python
# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_health
short_description: Health gate for a model server (Open Inference Protocol v2, OpenAI-compatible or plain HTTP)
description:
  - Probes a model server and fails unless it is live, ready, serves the model, answers a sample
    inference with the expected output and, optionally, meets latency thresholds.
  - Meant as the gate of a model rollout. Failing checks are retried every O(retry_interval) seconds
    until O(deadline) seconds have passed; checks that already passed are not repeated.
  - The O(deadline) bounds every single request too, since each request's socket timeout is the lesser of
    O(timeout) and the time left before the deadline. A server whose engine hangs cannot hold the task longer
    than O(deadline) plus a fraction of a second.
  - "A liveness or readiness endpoint answering 200 is not a health gate: vLLM's C(/health) stays 200 while
    its engine is hung, and a v2 server can report ready while a model returns garbage. Always include the
    V(infer) check (with O(infer_request) and O(expected_output)) in a rollout gate."
  - The module only reads; it never changes the server, so it runs normally in check mode and always
    returns C(changed=false).
  - Runs on the host that performs the requests (often C(delegate_to=localhost) or the inference node itself).
    Needs only the Python standard library.
version_added: "0.1.0"
author:
  - mlfleet contributors (@mlfleet)
options:
  url:
    description:
      - Base URL of the server, for example V(http://10.0.0.5:8080). Paths of the checks are appended to it.
    type: str
    required: true
  protocol:
    description:
      - V(v2) is the Open Inference Protocol v2 (Triton, MLServer, KServe).
        V(live) is C(GET /v2/health/live), V(ready) is C(GET /v2/health/ready),
        V(model_ready) is C(GET /v2/models/{model}[/versions/{model_version}]/ready),
        V(infer) is C(POST /v2/models/{model}[/versions/{model_version}]/infer).
      - V(openai) is an OpenAI-compatible server (vLLM, TGI).
        V(live) is C(GET /health), V(ready) is C(GET /v1/models) answering a model list,
        V(model_ready) is C(GET /v1/models) listing O(model) among C(data[].id),
        V(infer) is C(POST /v1/chat/completions) when O(infer_request) has C(messages), else C(POST /v1/completions).
      - V(http) is a plain endpoint. V(live) and V(ready) both are C(GET) O(http_path) answering one of O(http_status).
    type: str
    choices: [v2, openai, http]
    default: v2
  model:
    description:
      - Model name (V(v2)) or model id as listed by C(/v1/models) (V(openai)).
      - Required for the V(model_ready) check and, with O(protocol=v2), for V(infer) and V(latency).
      - With O(protocol=openai) it is added as C(model) to O(infer_request) when the request has none.
    type: str
  model_version:
    description:
      - Model version (V(v2) only); adds C(/versions/{model_version}) to the model paths.
    type: str
  checks:
    description:
      - Checks to run. They always run in the order V(live), V(ready), V(model_ready), V(infer), V(latency),
        and a check runs only once the ones before it passed.
      - V(infer) sends O(infer_request) once and compares the reply with O(expected_output) when given.
      - V(latency) sends the same request O(latency_requests) times in sequence and measures each one;
        it fails when any request fails or a threshold (O(latency_p95_max_ms), O(latency_p99_max_ms)) is
        exceeded. Listed after V(infer), the V(infer) request also warms the model up.
      - With O(protocol=http) only V(live), V(ready) and V(latency) (timed C(GET) O(http_path)) are valid.
      - "Default: V(v2): V(live), V(ready), plus V(model_ready) when O(model) is set; V(openai): V(live) and
        V(model_ready) when O(model) is set, else V(ready); V(http): V(ready). V(infer) is added when
        O(infer_request) is set, V(latency) when a latency threshold is set."
    type: list
    elements: str
    choices: [live, ready, model_ready, infer, latency]
  infer_request:
    description:
      - JSON body of the sample inference, sent as is (for V(v2) an inference request with C(inputs);
        for V(openai) a completions or chat completions request, for example with C(prompt) or C(messages),
        C(max_tokens) and C(temperature=0)).
      - Required by the V(infer) and V(latency) checks (except V(latency) with O(protocol=http)).
    type: dict
  infer_path:
    description:
      - Path of the sample inference, to override the protocol's default (see O(protocol)).
    type: str
  expected_output:
    description:
      - What the V(infer) check expects.
      - With O(protocol=v2), a list (or a scalar) compared with C(data) of the output chosen by O(output).
        Both sides are flattened in row-major order. The comparison is exact unless O(tolerance) is set.
      - With O(protocol=openai), a Python regular expression searched (C(re.search)) in the generated text
        (C(choices[0].text) or C(choices[0].message.content)). A plain word is a substring match;
        escape C(.), C(?), C(*), C(+), C(() and friends to match them literally, and prefix C((?i)) to ignore case.
      - When unset, V(infer) only requires a successful, well-formed reply.
    type: raw
  output:
    description:
      - Which entry of a V(v2) reply's C(outputs) O(expected_output) applies to, by index (V(0)) or by C(name).
    type: raw
    default: 0
  tolerance:
    description:
      - Absolute tolerance for numbers when comparing O(expected_output) (V(v2)); C(|expected - actual| <= tolerance).
      - Strings and booleans are always compared exactly.
    type: float
  latency_requests:
    description:
      - Number of sample inferences the V(latency) check sends, one after another.
    type: int
    default: 20
  latency_p95_max_ms:
    description:
      - Fail the V(latency) check when the 95th percentile latency, in milliseconds, is above this.
    type: float
  latency_p99_max_ms:
    description:
      - Fail the V(latency) check when the 99th percentile latency, in milliseconds, is above this.
    type: float
  timeout:
    description:
      - Socket timeout of each request, in seconds. Always capped at the time left before O(deadline).
    type: float
    default: 10
  deadline:
    description:
      - Overall time, in seconds, for all checks and their retries. No retry starts, and no request waits,
        beyond it.
    type: float
    default: 60
  retry_interval:
    description:
      - Seconds to wait before retrying the failing checks. No retry starts when less than this is left
        before O(deadline).
    type: float
    default: 2
  validate_certs:
    description:
      - Whether to validate the server's TLS certificate.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA certificates to validate the server's certificate with (for an internal CA).
    type: path
  headers:
    description:
      - Extra request headers, for example C(Authorization) with a bearer token.
      - "Marked C(no_log) as they often carry a token; their values are masked wherever they appear in the output,
        so do not put short, common values here."
    type: dict
  use_proxy:
    description:
      - Whether to honour C(http_proxy), C(https_proxy) and C(no_proxy) from the environment.
    type: bool
    default: true
  http_path:
    description:
      - Path requested by the V(live), V(ready) and V(latency) checks with O(protocol=http).
    type: str
    default: /
  http_status:
    description:
      - Status codes that count as healthy with O(protocol=http).
    type: list
    elements: int
    default: [200]
attributes:
  check_mode:
    support: full
    description: The module only sends read-only probes and runs the same way in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
notes:
  - Latency percentiles use the nearest-rank method (the sample whose rank is p/100 times n, rounded up,
    in the sorted samples; no interpolation), so each percentile is a latency that was actually observed.
    With fewer than 100 requests, p99 is the maximum.
  - Latencies are measured on the host that runs the module and include connection set-up (no keep-alive)
    and reading the whole reply.
  - Checks are read-only but V(infer) and V(latency) do run inferences, which use the server's capacity.
seealso:
  - name: Open Inference Protocol v2
    description: The REST health, metadata and inference API of KServe, Triton and MLServer.
    link: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
  - module: ansible.builtin.uri
"""

EXAMPLES = r"""
- name: Gate the rollout of the iris model on MLServer (v2)
  mlfleet.fleet.model_health:
    url: "http://{{ inventory_hostname }}:8080"
    protocol: v2
    model: iris
    checks: [live, ready, model_ready, infer, latency]
    infer_request:
      inputs:
        - name: predict
          shape: [1, 4]
          datatype: FP32
          data: [[5.1, 3.5, 1.4, 0.2]]
    expected_output: [0]
    latency_requests: 50
    latency_p99_max_ms: 50
    deadline: 300
    retry_interval: 5
  delegate_to: localhost

- name: Check a regression model's output within a tolerance, picking the output by name
  mlfleet.fleet.model_health:
    url: https://triton.ml.example.internal:8000
    model: house_prices
    model_version: "3"
    infer_request: "{{ lookup('file', 'samples/house_prices.json') | from_json }}"
    output: price
    expected_output: [312000.0]
    tolerance: 0.5
    ca_path: /etc/pki/mlfleet/ca.pem

- name: Gate a vLLM server on a real completion, not only on /health
  mlfleet.fleet.model_health:
    url: http://gpu-07:8000
    protocol: openai
    model: meta-llama/Llama-3.1-8B-Instruct
    checks: [live, model_ready, infer, latency]
    infer_request:
      messages:
        - role: user
          content: "What is the capital of France? Answer with one word."
      max_tokens: 8
      temperature: 0
    expected_output: "(?i)paris"
    latency_requests: 10
    latency_p95_max_ms: 2000
    timeout: 30
    deadline: 600
    headers:
      Authorization: "Bearer {{ vllm_api_key }}"
  register: gate

- name: Show the p99
  ansible.builtin.debug:
    msg: "p99 {{ gate.latency.p99_ms }} ms over {{ gate.latency.count }} requests"

- name: Wait for a plain HTTP endpoint to answer 200 or 204
  mlfleet.fleet.model_health:
    url: http://feature-store:9000
    protocol: http
    http_path: /healthz
    http_status: [200, 204]
    deadline: 120
"""

RETURN = r"""
checks:
  description:
    - Result of each requested check, by name. Checks after the one that failed are V(skipped) with V(attempts=0).
    - For V(latency) the request fields describe the last request.
  returned: always
  type: dict
  contains:
    ok:
      description: Whether the check passed.
      type: bool
    msg:
      description: V(ok), or why the check failed.
      type: str
    attempts:
      description: How many times the check ran.
      type: int
    method:
      description: HTTP method of the check's (last) request.
      type: str
    url:
      description: URL of the check's (last) request.
      type: str
    status:
      description: HTTP status code, V(null) when no reply came (see RV(checks.error)).
      type: int
    body:
      description: First 200 characters of the reply body, whitespace collapsed.
      type: str
    error:
      description: Connection error or timeout, V(null) when a reply came.
      type: str
    elapsed_ms:
      description: Time the check took on its last attempt, in milliseconds.
      type: float
    skipped:
      description: Present and V(true) when the check did not run because an earlier one failed.
      type: bool
  sample:
    live: {ok: true, msg: ok, attempts: 1, method: GET, url: "http://10.0.0.5:8080/v2/health/live",
           status: 200, body: "", error: null, elapsed_ms: 1.9}
    infer: {ok: false, msg: "POST http://10.0.0.5:8080/v2/models/iris/infer: output 'predict': expected [0] got [2]",
            attempts: 3, method: POST, url: "http://10.0.0.5:8080/v2/models/iris/infer", status: 200,
            body: '{"model_name":"iris","outputs":[...]}', error: null, elapsed_ms: 6.4}
failed_check:
  description: Name of the check that failed, V(null) when all passed.
  returned: always
  type: str
  sample: infer
inference:
  description: What the last V(infer) check got; empty when it did not run or got no well-formed reply.
  returned: always
  type: dict
  contains:
    model_name:
      description: Model name (V(v2) C(model_name), V(openai) C(model)) in the reply.
      type: str
    model_version:
      description: C(model_version) of a V(v2) reply.
      type: str
    output_name:
      description: Name of the V(v2) output selected by O(output).
      type: str
    datatype:
      description: Datatype of the V(v2) output.
      type: str
    shape:
      description: Shape of the V(v2) output.
      type: list
      elements: int
    output:
      description: C(data) of the V(v2) output, or the V(openai) generated text (at most 2000 characters).
      type: raw
    finish_reason:
      description: C(finish_reason) of the first V(openai) choice.
      type: str
    usage:
      description: C(usage) (token counts) of the V(openai) reply.
      type: dict
    expected:
      description: O(expected_output).
      type: raw
    matched:
      description: Whether the output matched O(expected_output); V(null) when none was given.
      type: bool
  sample: {model_name: iris, model_version: null, output_name: predict, datatype: INT64, shape: [1, 1],
           output: [0], expected: [0], matched: true}
latency:
  description:
    - Latency of the V(latency) check's requests, in milliseconds, over the successful ones.
      Percentiles are nearest-rank. Empty when the check did not run.
  returned: always
  type: dict
  contains:
    requests:
      description: Requests planned (O(latency_requests)).
      type: int
    count:
      description: Successful requests the statistics are computed over.
      type: int
    errors:
      description: Failed requests.
      type: int
    method:
      description: Percentile method, V(nearest-rank).
      type: str
    min_ms:
      description: Fastest request.
      type: float
    p50_ms:
      description: Median.
      type: float
    p95_ms:
      description: 95th percentile.
      type: float
    p99_ms:
      description: 99th percentile.
      type: float
    max_ms:
      description: Slowest request.
      type: float
    mean_ms:
      description: Arithmetic mean.
      type: float
  sample: {requests: 20, count: 20, errors: 0, method: nearest-rank, min_ms: 3.1, p50_ms: 3.6, p95_ms: 5.2,
           p99_ms: 7.9, max_ms: 7.9, mean_ms: 3.9}
attempts:
  description: Rounds of checks run (1 when everything passed at once).
  returned: always
  type: int
  sample: 3
elapsed:
  description: Seconds from the first request to the result.
  returned: always
  type: float
  sample: 4.213
msg:
  description: On failure, the failing check, the number of attempts and what came back.
  returned: failure
  type: str
  sample: >-
    check 'latency' failed after 1 attempt in 0.4 s (deadline 60 s):
    p99 812.3 ms > 500 ms threshold over 20 requests
"""

import re
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlfleet.fleet.plugins.module_utils.health import PROTOCOL_CHECKS, HealthGate, default_checks


def argument_spec() -> dict[str, Any]:
    return dict(
        url=dict(type="str", required=True),
        protocol=dict(type="str", default="v2", choices=["v2", "openai", "http"]),
        model=dict(type="str"),
        model_version=dict(type="str"),
        checks=dict(type="list", elements="str", choices=["live", "ready", "model_ready", "infer", "latency"]),
        infer_request=dict(type="dict"),
        infer_path=dict(type="str"),
        expected_output=dict(type="raw"),
        output=dict(type="raw", default=0),
        tolerance=dict(type="float"),
        latency_requests=dict(type="int", default=20),
        latency_p95_max_ms=dict(type="float"),
        latency_p99_max_ms=dict(type="float"),
        timeout=dict(type="float", default=10),
        deadline=dict(type="float", default=60),
        retry_interval=dict(type="float", default=2),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        headers=dict(type="dict", no_log=True),
        use_proxy=dict(type="bool", default=True),
        http_path=dict(type="str", default="/"),
        http_status=dict(type="list", elements="int", default=[200]),
    )


def option_errors(p: dict[str, Any], checks: list[str]) -> list[str]:
    """Everything wrong with the options, found before any request is sent."""
    errors = []
    protocol = p["protocol"]
    thresholds = [n for n in ("latency_p95_max_ms", "latency_p99_max_ms") if p[n] is not None]
    unsupported = [c for c in checks if c not in PROTOCOL_CHECKS[protocol]]
    if unsupported:
        errors.append(
            f"protocol {protocol} does not support the check(s) {', '.join(unsupported)} "
            f"(supported: {', '.join(PROTOCOL_CHECKS[protocol])})"
        )
    needs_request = [c for c in ("infer", "latency") if c in checks and not (protocol == "http" and c == "latency")]
    if needs_request and p["infer_request"] is None:
        errors.append(f"check(s) {', '.join(needs_request)} need infer_request (the JSON body of a sample inference)")
    needs_model = [c for c in checks if c == "model_ready"]
    if protocol == "v2" and not p["infer_path"]:
        needs_model += [c for c in checks if c in ("infer", "latency")]
    if needs_model and not p["model"]:
        errors.append(f"check(s) {', '.join(needs_model)} need model")
    if p["expected_output"] is not None:
        if "infer" not in checks:
            errors.append("expected_output is set but the infer check is not in checks")
        if protocol == "http":
            errors.append("expected_output does not apply to protocol http")
        elif protocol == "openai":
            if not isinstance(p["expected_output"], str):
                errors.append("expected_output must be a string (a regular expression) with protocol openai")
            else:
                try:
                    re.compile(p["expected_output"])
                except re.error as exc:
                    errors.append(f"expected_output is not a valid regular expression: {exc}")
        elif isinstance(p["expected_output"], dict):
            errors.append("expected_output must be a list (or a scalar) with protocol v2")
    if p["tolerance"] is not None:
        if p["tolerance"] < 0:
            errors.append("tolerance must be >= 0")
        if protocol != "v2":
            errors.append("tolerance applies only to protocol v2")
    if thresholds and "latency" not in checks:
        errors.append(f"{', '.join(thresholds)} set but the latency check is not in checks")
    for name in thresholds:
        if p[name] <= 0:
            errors.append(f"{name} must be > 0")
    if p["latency_requests"] < 1:
        errors.append("latency_requests must be >= 1")
    for name in ("timeout", "deadline"):
        if p[name] <= 0:
            errors.append(f"{name} must be > 0")
    if p["retry_interval"] < 0:
        errors.append("retry_interval must be >= 0")
    if not re.match(r"^https?://[^/]", p["url"]):
        errors.append(f"url must start with http:// or https://, got {p['url']!r}")
    output = p["output"]
    if isinstance(output, bool) or not isinstance(output, (int, str)):
        errors.append("output must be an index (integer) or an output name")
    return errors


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    thresholds = p["latency_p95_max_ms"] is not None or p["latency_p99_max_ms"] is not None
    checks = p["checks"] or default_checks(p["protocol"], p["model"], p["infer_request"], thresholds)
    errors = option_errors(p, checks)
    if errors:
        module.fail_json(msg="invalid options: " + "; ".join(errors), changed=False)

    outcome = HealthGate(p).run(checks, deadline=p["deadline"], retry_interval=p["retry_interval"])
    msg = outcome.pop("msg", None)
    if msg:
        module.fail_json(msg=msg, changed=False, **outcome)
    module.exit_json(changed=False, **outcome)


if __name__ == "__main__":
    main()

"""Closed-loop HTTP/1.1 load client on asyncio, standard library only.

It runs on a lab host as the deploy user (``ssh host python3 - ARGS < loadclient.py``): the fleet's
hosts are hardened and have no wrk, and installing one would itself be drift. Each of
``--connections`` keep-alive connections sends the next request as soon as the last answer is read,
for ``--seconds``; the output is one JSON line: requests, errors, throughput and latency
percentiles (exact, from every sample), plus the client's own CPU seconds so that a saturated
client can be told from a slow server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import time

BODY = json.dumps(
    {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
).encode()


def request_bytes(host: str, port: int, path: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + BODY


async def read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length = 0
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status


async def worker(args: argparse.Namespace, deadline: float, latencies: list[float], errors: list[str]) -> None:
    payload = request_bytes(args.host, args.port, args.path)
    reader = writer = None
    while time.monotonic() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(args.host, args.port)
            start = time.perf_counter()
            writer.write(payload)
            status = await read_response(reader)
            elapsed = time.perf_counter() - start
            if status == 200:
                latencies.append(elapsed)
            else:
                errors.append(f"HTTP {status}")
        except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError) as exc:
            errors.append(type(exc).__name__)
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.05)
    if writer is not None:
        writer.close()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    # Nearest rank: the smallest value with at least q % of the samples at or below it.
    index = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def main_async(args: argparse.Namespace) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    # Warm-up: connections opened and the model's first-request costs paid before measuring.
    await asyncio.gather(*(worker(args, time.monotonic() + args.warmup, [], []) for _ in range(args.connections)))
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    deadline = start + args.seconds
    await asyncio.gather(*(worker(args, deadline, latencies, errors) for _ in range(args.connections)))
    duration = time.monotonic() - start
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    values = sorted(latencies)
    ms = 1000.0
    return {
        "target": f"{args.host}:{args.port}{args.path}",
        "connections": args.connections,
        "seconds": round(duration, 2),
        "requests": len(values),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "rps": round(len(values) / duration, 1),
        "p50_ms": round(percentile(values, 50) * ms, 3),
        "p95_ms": round(percentile(values, 95) * ms, 3),
        "p99_ms": round(percentile(values, 99) * ms, 3),
        "client_cpu_s": round(
            (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime), 2
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v2/models/iris/infer")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    print(json.dumps(asyncio.run(main_async(parser.parse_args()))))


if __name__ == "__main__":
    main()

"""ACK latency of async videoInference submits vs the bare /health endpoint, under the same load.

Starts a real server (``python -m reelserve serve``) with no worker threads (the benchmark
measures the API path: parse, validate, durable SQLite insert, ACK), then runs ``--clients``
concurrent clients for ``--seconds``, half the requests async submits and half GET /health,
interleaved, in one run. Prints p50/p99 of both and their ratio.

    python bench/bench_ack.py --clients 50 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _client(base: str, until: float, ack: list[float], health: list[float],
                  http: httpx.AsyncClient, index: int) -> None:
    turn = index % 2
    while time.perf_counter() < until:
        start = time.perf_counter()
        if turn == 0:
            task = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()),
                    "model": "klingai:1@1", "positivePrompt": "benchmark prompt",
                    "width": 720, "height": 720, "duration": 5}
            resp = await http.post(f"{base}/v1", json=[task])
            assert resp.status_code == 200 and "videoUUID" not in resp.text, resp.text
            ack.append(time.perf_counter() - start)
        else:
            resp = await http.get(f"{base}/health")
            assert resp.status_code == 200
            health.append(time.perf_counter() - start)
        turn ^= 1


async def _run(base: str, clients: int, seconds: float) -> tuple[list[float], list[float]]:
    ack: list[float] = []
    health: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        # Warm up connections and the catalog before measuring.
        await asyncio.gather(*(http.get(f"{base}/health") for _ in range(clients)))
        warm: list[float] = []
        await _client(base, time.perf_counter() + 1.0, warm, warm, http, 0)
        until = time.perf_counter() + seconds
        await asyncio.gather(*(_client(base, until, ack, health, http, i) for i in range(clients)))
    return ack, health


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REELSERVE_")}
        env["REELSERVE_WORKERS"] = "0"
        # Per-key rate limits would turn most submits into refusals: measure the accept path.
        env["REELSERVE_RATE_SUBMITS_PER_MINUTE"] = "0"
        env["REELSERVE_RATE_MAX_IN_FLIGHT"] = "0"
        proc = subprocess.Popen(
            [sys.executable, "-m", "reelserve", "--log-level", "warning", "serve",
             "--port", str(port), "--data-dir", data_dir], env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            started = time.perf_counter()
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.perf_counter() - started > 30:
                    raise SystemExit("server did not start")
                time.sleep(0.02)
            startup = time.perf_counter() - started
            ack, health = asyncio.run(_run(base, args.clients, args.seconds))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    a50, a99 = _pct(ack, 0.50), _pct(ack, 0.99)
    h50, h99 = _pct(health, 0.50), _pct(health, 0.99)
    print(f"server ready after {startup * 1000:.0f} ms (spawn to first /health)")
    print(f"{args.clients} concurrent clients, {args.seconds:g} s, interleaved requests")
    print(f"async submit ACK: n={len(ack):5d}  p50={a50:7.2f} ms  p99={a99:7.2f} ms  "
          f"mean={statistics.fmean(ack) * 1000:.2f} ms")
    print(f"GET /health     : n={len(health):5d}  p50={h50:7.2f} ms  p99={h99:7.2f} ms  "
          f"mean={statistics.fmean(health) * 1000:.2f} ms")
    print(f"ratio ACK/health: p50 x{a50 / h50:.2f}  p99 x{a99 / h99:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

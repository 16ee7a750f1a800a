"""Soak and fault benchmark: no accepted task lost or duplicated under kills, stops, a full disk
and bursts separated by idle pauses; file descriptors and memory stay flat.

Starts a real server (``python -m reelserve serve``, one worker thread) and a separate worker
process (``python -m reelserve worker``, two slots) on one data dir, both rendering with the
default (preview) engine. Then:

1. chaos, ``--rounds`` rounds: a burst of ``--burst`` async ``videoInference`` submits, then,
   while jobs are mid-render, one fault in turn: kill -9 of the server, kill -9 of the worker,
   SIGTERM of the server, SIGTERM of the worker, and a full disk (the artifacts folder is a
   small tmpfs, filled for ``--full-seconds`` while a burst arrives; needs root, skipped with a
   note otherwise). Whatever was stopped is started again. Clients retry submits that got no
   answer (server down) with the same taskUUID, so "accepted" means the server said so once.
2. steady, on the last server and worker processes: ``--steady-bursts`` bursts separated by
   ``--pause`` seconds of idle (longer than the request thread pool keeps idle threads), with
   the server's and the worker's open fds and RSS read after the first and after the last burst.

At the end every accepted task must be succeeded with its one result on disk; it prints
accepted / completed / lost / duplicated, the faults applied, the fds and RSS, and tracebacks
found in the logs.

    sudo .venv/bin/python bench/bench_soak.py --rounds 10 --burst 12   # a few minutes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

FAULTS = ("kill -9 server", "kill -9 worker", "SIGTERM server", "SIGTERM worker", "full disk")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_numbers(pid: int) -> tuple[int, float]:
    """(open fds, RSS in MiB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return fds, rss


class Proc:
    """One ``python -m reelserve ...`` process that can be killed and started again."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "reelserve", *self.args],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def signal(self, sig: int, wait: float = 60.0) -> float:
        """Send ``sig`` and wait for the exit; returns the seconds it took."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return time.monotonic() - began

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class Soak:
    def __init__(self, args: argparse.Namespace, data_dir: Path) -> None:
        self.args = args
        self.data_dir = data_dir
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("REELSERVE_")}
        env.update({"REELSERVE_LEASE_SECONDS": "3", "REELSERVE_RATE_SUBMITS_PER_MINUTE": "0",
                    "REELSERVE_RATE_MAX_IN_FLIGHT": "0", "REELSERVE_SHUTDOWN_GRACE": "2"})
        self.server = Proc("server", ["--log-level", "warning", "serve", "--port", str(self.port),
                                      "--data-dir", str(data_dir)],
                           {**env, "REELSERVE_WORKERS": "1"}, data_dir / "server.log")
        self.worker = Proc("worker", ["--log-level", "warning", "worker", "--data-dir",
                                      str(data_dir), "--grace", "2"],
                           {**env, "REELSERVE_WORKERS": "2"}, data_dir / "worker.log")
        self.accepted: set[str] = set()
        self.lock = threading.Lock()
        self.faults: Counter[str] = Counter()
        self.notes: list[str] = []
        self.http = httpx.Client(timeout=30.0)

    # ------------------------------------------------------------------ processes

    def start_server(self) -> None:
        self.server.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get(f"{self.base}/health", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("the server did not come up")

    # ------------------------------------------------------------------ clients

    def submit(self, task_uuid: str) -> None:
        """Submit one task until the server accepts it (the same taskUUID on every retry)."""
        task = {"taskType": "videoInference", "taskUUID": task_uuid, "model": "klingai:1@1",
                "positivePrompt": "soak test", "width": 720, "height": 720, "duration": 5}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                resp = self.http.post(f"{self.base}/v1", json=[task])
            except httpx.HTTPError:
                time.sleep(0.3)  # server down: it comes back
                continue
            try:
                errors = resp.json().get("errors") or []
            except ValueError:  # not JSON (a proxy's error page): retry
                errors = [{"code": f"HTTP {resp.status_code}"}]
            codes = {e.get("code") for e in errors}
            if (resp.status_code == 200 and not errors) or "conflictTaskUUID" in codes:
                with self.lock:
                    self.accepted.add(task_uuid)
                return
            time.sleep(0.3)  # refused for now (507, 5xx): try again
        raise RuntimeError(f"task {task_uuid} never accepted")

    def burst(self, n: int) -> None:
        with ThreadPoolExecutor(max_workers=min(n, 16)) as pool:
            list(pool.map(self.submit, [str(uuid.uuid4()) for _ in range(n)]))

    # ------------------------------------------------------------------ faults

    def fault(self, name: str) -> None:
        self.faults[name] += 1
        if name == "kill -9 server":
            self.server.signal(signal.SIGKILL)
            self.start_server()
        elif name == "kill -9 worker":
            self.worker.signal(signal.SIGKILL)
            self.worker.start()
        elif name == "SIGTERM server":
            took = self.server.signal(signal.SIGTERM)
            self.notes.append(f"SIGTERM server: exited in {took:.1f} s")
            self.start_server()
        elif name == "SIGTERM worker":
            took = self.worker.signal(signal.SIGTERM)
            self.notes.append(f"SIGTERM worker: exited in {took:.1f} s")
            self.worker.start()
        elif name == "full disk":
            self.full_disk()

    def full_disk(self) -> None:
        artifacts = self.data_dir / "artifacts"
        if not self.args.tmpfs_ok:
            self.faults["full disk"] -= 1
            self.notes.append("full disk skipped: no tmpfs (needs root)")
            return
        filler = artifacts / "soak-filler"
        with open(filler, "wb", buffering=0) as fh:
            free = os.statvfs(artifacts).f_bavail * os.statvfs(artifacts).f_frsize
            with contextlib.suppress(OSError):
                os.posix_fallocate(fh.fileno(), 0, max(1, free))
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 4096)
        # An upload on the full disk must be refused with 507 (and leave no temp file).
        with contextlib.suppress(httpx.HTTPError):
            png = _tiny_png()
            resp = self.http.post(f"{self.base}/v1", json=[{
                "taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                "image": "data:image/png;base64," + __import__("base64").b64encode(png).decode()}])
            self.notes.append(f"upload on the full disk: HTTP {resp.status_code} "
                              f"{(resp.json().get('errors') or [{}])[0].get('code')}")
        self.burst(self.args.burst)  # accepted: the job database is on another disk
        time.sleep(self.args.full_seconds)
        filler.unlink()
        left = list((artifacts / ".tmp").iterdir())
        self.notes.append(f"full disk for {self.args.full_seconds:.0f} s; temp files left: "
                          f"{len(left)}")

    # ------------------------------------------------------------------ results

    def wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.states()
            if all(s in ("succeeded", "failed", "cancelled") for s in states.values()):
                return
            time.sleep(1.0)

    def states(self) -> dict[str, str]:
        with contextlib.closing(sqlite3.connect(self.data_dir / "reelserve.db", timeout=30)) as c:
            rows = c.execute("SELECT task_uuid, status FROM jobs").fetchall()
        return {u: s for u, s in rows if u in self.accepted}

    def report(self) -> dict[str, Any]:
        db = self.data_dir / "reelserve.db"
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
            jobs = conn.execute("SELECT id, task_uuid, status, attempts, error FROM jobs").fetchall()
            results = conn.execute("SELECT job_id, data FROM results").fetchall()
        rows_per_task = Counter(task_uuid for _, task_uuid, *_ in jobs)
        results_per_job = Counter(job_id for job_id, _ in results)
        keys = {json.loads(data)["artifact_key"] for _, data in results}
        outputs = self.data_dir / "artifacts" / "outputs"
        files = {f"outputs/{p.stem}" for p in outputs.glob("*.json")}
        missing_files = sum(1 for k in keys if not (self.data_dir / "artifacts" / k).exists())
        by_uuid = {task_uuid: (job_id, status, attempts, error)
                   for job_id, task_uuid, status, attempts, error in jobs}
        completed = lost = 0
        failures: Counter[str] = Counter()
        attempts: Counter[int] = Counter()
        for task_uuid in self.accepted:
            found = by_uuid.get(task_uuid)
            if found is None:
                lost += 1
                failures["not in the database"] += 1
                continue
            job_id, status, tries, error = found
            attempts[tries] += 1
            if status == "succeeded" and results_per_job[job_id] == 1:
                completed += 1
            else:
                lost += 1
                failures[json.loads(error)["code"] if error else status] += 1
        duplicated = (sum(n - 1 for n in rows_per_task.values() if n > 1)
                      + sum(n - 1 for n in results_per_job.values() if n > 1))
        tracebacks = sum(p.read_text(errors="replace").count("Traceback")
                         for p in (self.server.log, self.worker.log))
        closed = sum(p.read_text(errors="replace").count("closed database")
                     for p in (self.server.log, self.worker.log))
        return {"accepted": len(self.accepted), "completed": completed, "lost": lost,
                "duplicated": duplicated, "lost_by_reason": dict(failures),
                "attempts": dict(sorted(attempts.items())),
                "orphan_outputs": len(files - keys), "missing_files": missing_files,
                "tracebacks_in_logs": tracebacks, "closed_database_errors": closed}


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, check=False)
    return done.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="chaos rounds (one fault each)")
    parser.add_argument("--burst", type=int, default=12, help="tasks per burst")
    parser.add_argument("--full-seconds", type=float, default=8.0,
                        help="how long the disk stays full")
    parser.add_argument("--steady-bursts", type=int, default=6)
    parser.add_argument("--pause", type=float, default=12.0, help="idle seconds between bursts")
    parser.add_argument("--tmpfs-size", default="1g", help="size of the artifacts tmpfs")
    args = parser.parse_args()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reelserve-soak-") as tmp:
        data_dir = Path(tmp)
        args.tmpfs_ok = _mount_tmpfs(data_dir / "artifacts", args.tmpfs_size)
        soak = Soak(args, data_dir)
        try:
            soak.start_server()
            soak.worker.start()
            soak.burst(2)
            soak.wait_all(120)
            for round_ in range(args.rounds):
                soak.burst(args.burst)
                time.sleep(1.5)  # jobs are mid-render now
                soak.fault(FAULTS[round_ % len(FAULTS)])
                time.sleep(2.0)
            chaos_s = time.monotonic() - began
            soak.wait_all(600)
            numbers: dict[str, list[tuple[int, float]]] = {"server": [], "worker": []}
            for index in range(args.steady_bursts):
                soak.burst(args.burst)
                soak.wait_all(300)
                if index in (0, args.steady_bursts - 1):
                    numbers["server"].append(_proc_numbers(soak.server.pid))
                    numbers["worker"].append(_proc_numbers(soak.worker.pid))
                if index < args.steady_bursts - 1:
                    time.sleep(args.pause)
            soak.wait_all(600)
            report = soak.report()
            soak.server.signal(signal.SIGTERM)
            soak.worker.signal(signal.SIGTERM)
        finally:
            for proc in (soak.server, soak.worker):
                if proc.proc is not None and proc.proc.poll() is None:
                    proc.proc.kill()
            soak.http.close()
            if args.tmpfs_ok:
                subprocess.run(["umount", "-l", str(data_dir / "artifacts")], check=False)
    print(f"chaos: {args.rounds} rounds of {args.burst} tasks in {chaos_s:.0f} s; faults: "
          + ", ".join(f"{name} x{count}" for name, count in soak.faults.items()))
    for note in soak.notes:
        print(f"  {note}")
    print(f"steady: {args.steady_bursts} bursts of {args.burst} tasks, {args.pause:.0f} s idle "
          "between them")
    for name, ((fd0, rss0), (fd1, rss1)) in numbers.items():
        print(f"  {name}: fds {fd0} -> {fd1}, RSS {rss0:.0f} -> {rss1:.0f} MiB "
              "(after the first -> after the last burst)")
    for key, value in report.items():
        print(f"{key}: {value}")
    print(f"total: {time.monotonic() - began:.0f} s")
    return 0 if report["lost"] == 0 and report["duplicated"] == 0 else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)

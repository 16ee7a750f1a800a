"""The process executor with real processes: GPU slot syntax, supervised children (their devices,
restarts with backoff, stop and kill), and ``reelserve worker --gpus/--processes`` end to end
against a real ``reelserve serve`` with no worker threads (``REELSERVE_WORKERS=0``).

The end-to-end tests render with ``tiny_engine:recording_engine_selector``: each render writes
which process made it and the ``CUDA_VISIBLE_DEVICES`` that process saw. No GPU is needed: the
variable is only read back, never used.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from reelserve.errors import ValidationError
from reelserve.settings import Settings
from reelserve.worker.executors import ProcessExecutor, settings_environ
from reelserve.worker.slots import WorkerSlot, gpu_slots, process_slots
from reelserve_testing import TESTS_DIR, ServerFactory, poll_results, runware

T = TypeVar("T")

LEASE = "2"  # seconds: a killed child's job is claimed again soon after

# A stand-in worker for the supervisor tests: records its pid, CUDA_VISIBLE_DEVICES and settings
# seen through the environment, then idles (``ignore-term``: it also ignores SIGTERM).
CHILD = """
import json, os, pathlib, signal, sys, time
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
record = {"pid": os.getpid(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
          "data_dir": os.environ.get("REELSERVE_DATA_DIR"),
          "lease": os.environ.get("REELSERVE_LEASE_SECONDS")}
tmp = out / f"{os.getpid()}.tmp"
tmp.write_text(json.dumps(record))
tmp.replace(out / f"{os.getpid()}.json")
if sys.argv[2] == "exit":
    sys.exit(3)
while True:
    time.sleep(0.1)
"""


def wait_for(check: Callable[[], T | None], timeout: float, what: str,
             log: Callable[[], str] = lambda: "") -> T:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} (waited {timeout} s)\n{log()}")


def children_of(pid: int) -> set[int]:
    """Live (non-zombie) child processes of ``pid``, from /proc."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry.name))
    return found


def child_records(out: Path) -> dict[int, dict[str, Any]]:
    """pid -> record of every stand-in child started so far (in any slot)."""
    return {int(p.stem): json.loads(p.read_text()) for p in out.glob("*/*.json")}


# ------------------------------------------------------------------------ --gpus syntax


def test_gpu_spec_commas_separate_workers_and_plus_joins_gpus() -> None:
    assert gpu_slots("0,1,2,3") == [WorkerSlot(f"gpu{i}", (str(i),)) for i in range(4)]
    two = [WorkerSlot("gpu0+1", ("0", "1")), WorkerSlot("gpu2+3", ("2", "3"))]
    assert gpu_slots("0+1,2+3") == two
    assert gpu_slots("0,1,2,3", per_worker=2) == two
    assert gpu_slots(" 1 , 3") == [WorkerSlot("gpu1", ("1",)), WorkerSlot("gpu3", ("3",))]
    uuids = gpu_slots("GPU-8932f937-d72c-4106-c12f,MIG-5c1e-0a2b")
    assert [slot.devices for slot in uuids] == [("GPU-8932f937-d72c-4106-c12f",), ("MIG-5c1e-0a2b",)]
    assert process_slots(2) == [WorkerSlot("proc0"), WorkerSlot("proc1")]


@pytest.mark.parametrize(("spec", "per_worker", "message"), [
    ("0-1,2-3", None, "'0-1' is ambiguous: write 0,1 for one worker per GPU or 0+1 for one"),
    ("0,1,0", None, "gives GPU 0 to more than one worker"),
    ("0,,1", None, "has an empty device"),
    ("0;1", None, "is not a GPU index"),
    ("0,1,2", 2, "--gpus-per-worker 2 does not divide the 3 GPUs"),
    ("0+1,2+3", 2, "already groups GPUs with '+'"),
    ("0,1", 0, "must be 1 or more"),
])
def test_gpu_spec_refusals_say_what_to_write(spec: str, per_worker: int | None, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        gpu_slots(spec, per_worker)
    assert info.value.code == "invalidGpus" and message in info.value.message


def test_cli_refuses_a_range_with_both_meanings_spelled_out() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reelserve", "worker", "--gpus", "0-3"],
        capture_output=True, text=True, timeout=60, env=_clean_env())
    assert done.returncode == 2
    assert "write 0,1,2,3 for one worker per GPU or 0+1+2+3 for one worker" in done.stderr


def test_diffusers_device_beyond_the_slot_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, diffusers_device="cuda:1")
    with pytest.raises(ValidationError, match="cuda:0 to cuda:0"):
        ProcessExecutor(settings, gpu_slots("0,1"))
    ProcessExecutor(settings, gpu_slots("0+1,2+3"))  # two GPUs each: cuda:1 exists


def test_settings_reach_children_through_the_environment(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file
    settings = Settings(data_dir=tmp_path / "d", api_keys=["k1", "k2"], lease_seconds=1.5,
                        preview_fallback=False, diffusers_memory_gb=12.5, workers=0,
                        kling_keys=["ak:sk"])
    for name, value in settings_environ(settings).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert Settings() == settings


# ------------------------------------------------------------------- supervisor, stand-ins


def _stand_in(out: Path, mode: str = "idle") -> Callable[[WorkerSlot], list[str]]:
    return lambda slot: [sys.executable, "-c", CHILD, str(out / slot.label), mode]


def test_each_child_gets_its_gpus_and_settings_and_a_killed_one_is_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "reelserve")
    out = tmp_path / "children"
    settings = Settings(data_dir=tmp_path / "data", lease_seconds=7.5)
    executor = ProcessExecutor(settings, gpu_slots("0,1+2"), backoff_base=0.2,
                               command=_stand_in(out),
                               environ={**_clean_env(), "CUDA_VISIBLE_DEVICES": "7"})
    executor.start()
    try:
        first = wait_for(lambda: r if len(r := child_records(out)) == 2 else None, 30,
                         "two children")
        assert sorted(r["cuda"] for r in first.values()) == ["0", "1,2"]
        assert {(r["data_dir"], r["lease"]) for r in first.values()} == {
            (str(tmp_path / "data"), "7.5")}
        pids = executor.pids()
        assert set(pids.values()) == set(first) == children_of(os.getpid()) & set(first)
        os.kill(pids["gpu0"], signal.SIGKILL)
        new = wait_for(lambda: (p := executor.pids().get("gpu0")) not in (None, pids["gpu0"])
                       and p, 30, "gpu0 restarted")
        assert executor.pids()["gpu1+2"] == pids["gpu1+2"]  # the other child kept running
        assert executor.restarts() == {"gpu0": 1, "gpu1+2": 0}
        record = wait_for(lambda: child_records(out).get(new), 30, "the new child's record")
        assert record["cuda"] == "0"
    finally:
        executor.stop(timeout=10)
    assert executor.pids() == {}
    assert not children_of(os.getpid()) & (set(first) | {new})
    assert f"process {pids['gpu0']} was killed by SIGKILL; restarting it in 0.2 s" in caplog.text


def test_a_child_dying_at_once_is_restarted_with_growing_delays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "reelserve")
    executor = ProcessExecutor(Settings(data_dir=tmp_path), process_slots(1), backoff_base=0.1,
                               backoff_max=0.4, command=_stand_in(tmp_path / "out", "exit"),
                               environ=_clean_env())
    executor.start()
    try:
        wait_for(lambda: caplog.text.count("exited with code 3") >= 4, 60, "four exits")
    finally:
        executor.stop(timeout=10)
    delays = [line.rsplit(" in ", 1)[1] for line in caplog.messages if "exited with code 3" in line]
    assert delays[:4] == ["0.1 s", "0.2 s", "0.4 s", "0.4 s"]


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    executor = ProcessExecutor(Settings(data_dir=tmp_path), process_slots(1), grace=0.5,
                               command=_stand_in(out, "ignore-term"), environ=_clean_env())
    executor.start()
    [pid] = wait_for(lambda: child_records(out), 30, "the child")
    started = time.monotonic()
    executor.stop(timeout=1.0)
    assert 0.9 < time.monotonic() - started < 10
    assert pid not in children_of(os.getpid())
    assert "still running after the grace period; killing it" in caplog.text


# ------------------------------------------------------------------- end to end, real server


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELSERVE_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TESTS_DIR / "worker"), env.get("PYTHONPATH")) if p)
    return env


class Supervisor:
    """``python -m reelserve worker --gpus/--processes ...``, logging to ``DIR/supervisor.log``."""

    def __init__(self, data_dir: Path, env: dict[str, str], args: list[str]) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir / "supervisor.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reelserve", "--log-level", "info", "worker",
                 "--data-dir", str(data_dir), *args],
                env={**_clean_env(), **env}, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def wait_started(self, *labels: str) -> None:
        """Wait until every child has its worker threads running (so each claims at once)."""
        for label in labels:
            wait_for(functools.partial(self.logged, f"[{label}] reelserve.worker.executors: started"),
                     60, f"child {label} did not start", self.log)

    def logged(self, text: str) -> bool:
        return text in self.log()

    def close(self) -> None:
        if self.proc.poll() is None:
            children = children_of(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                for pid in children | {self.proc.pid}:
                    os.kill(pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def cluster(server_factory: ServerFactory, tmp_path: Path
            ) -> Iterator[tuple[httpx.Client, Callable[..., Supervisor]]]:
    """A server with no worker threads and a way to start a supervisor on its data dir."""
    data_dir = tmp_path / "shared"
    env = {"REELSERVE_ENGINE_SELECTOR": "tiny_engine:recording_engine_selector",
           "REELSERVE_LEASE_SECONDS": LEASE}
    server = server_factory(env={**env, "REELSERVE_WORKERS": "0"}, data_dir=data_dir)
    started: list[Supervisor] = []

    def start(*args: str, **extra_env: str) -> Supervisor:
        supervisor = Supervisor(data_dir, {**env, **extra_env}, list(args))
        started.append(supervisor)
        return supervisor

    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            yield http, start
    finally:
        for supervisor in started:
            supervisor.close()


def _task() -> dict[str, Any]:
    return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "klingai:1@1",
            "positivePrompt": "a lighthouse at dusk", "width": 720, "height": 720,
            "duration": 5, "deliveryMethod": "async"}


def _renders(data_dir: Path, task_uuid: str | None = None) -> list[dict[str, Any]]:
    runs = data_dir / "engine-runs"
    pattern = f"{task_uuid}.*.json" if task_uuid else "*.json"
    return [json.loads(p.read_text()) for p in runs.glob(pattern)] if runs.is_dir() else []


def _attempts(data_dir: Path, task_uuid: str) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / "reelserve.db")) as conn:
        row = conn.execute("SELECT attempts FROM jobs WHERE task_uuid = ?", (task_uuid,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.slow
def test_gpu_workers_render_jobs_each_seeing_only_its_gpu(
    cluster: tuple[httpx.Client, Callable[..., Supervisor]]
) -> None:
    http, start = cluster
    supervisor = start("--gpus", "0,1")
    supervisor.wait_started("gpu0", "gpu1")
    tasks = [_task(), _task()]
    # Both at once: each idle child claims one (a render takes 3 s, a claim poll 0.5 s).
    assert runware(http, tasks).status_code == 200
    for task in tasks:
        items, errors = poll_results(http, task["taskUUID"], timeout=120)
        assert errors == [] and len(items) == 1, f"{errors}\n{supervisor.log()}"
        assert http.get(items[0]["videoURL"]).status_code == 200
    renders = _renders(supervisor.data_dir)
    devices = {r["pid"]: r["cuda_visible_devices"] for r in renders}
    assert sorted(devices.values()) == ["0", "1"], supervisor.log()
    assert set(devices) == children_of(supervisor.proc.pid)  # rendered by its two children


@pytest.mark.slow
def test_kill_9_of_a_child_mid_job_restarts_it_and_the_job_completes(
    cluster: tuple[httpx.Client, Callable[..., Supervisor]]
) -> None:
    http, start = cluster
    supervisor = start("--gpus", "0,1")
    supervisor.wait_started("gpu0", "gpu1")
    task = _task()
    assert runware(http, [task]).status_code == 200
    [first] = wait_for(lambda: _renders(supervisor.data_dir, task["taskUUID"]), 60,
                       "the job never started rendering", supervisor.log)
    victim = first["pid"]
    os.kill(victim, signal.SIGKILL)  # mid-render: the job is left with a live lease
    items, errors = poll_results(http, task["taskUUID"], timeout=120)
    assert errors == [] and len(items) == 1, f"{errors}\n{supervisor.log()}"
    assert http.get(items[0]["videoURL"]).status_code == 200
    # Claimed again through the lease expiry only: once by the killed child, once after it.
    assert _attempts(supervisor.data_dir, task["taskUUID"]) == 2
    assert {r["pid"] for r in _renders(supervisor.data_dir, task["taskUUID"])} - {victim}
    wait_for(lambda: f"process {victim} was killed by SIGKILL; restarting it" in
             supervisor.log(), 30, "no restart logged", supervisor.log)
    alive = wait_for(lambda: c if len(c := children_of(supervisor.proc.pid)) == 2 else None, 60,
                     "the supervisor did not restart the killed child", supervisor.log)
    assert victim not in alive


@pytest.mark.slow
def test_sigterm_lets_children_finish_their_job_then_exits_0(
    cluster: tuple[httpx.Client, Callable[..., Supervisor]]
) -> None:
    http, start = cluster
    # --processes keeps the supervisor's CUDA_VISIBLE_DEVICES (CPU preview rendering).
    supervisor = start("--processes", "2", CUDA_VISIBLE_DEVICES="3")
    supervisor.wait_started("proc0", "proc1")
    children = children_of(supervisor.proc.pid)
    assert len(children) == 2
    task = _task()
    assert runware(http, [task]).status_code == 200
    [render] = wait_for(lambda: _renders(supervisor.data_dir, task["taskUUID"]), 60,
                        "the job never started rendering", supervisor.log)
    assert render["cuda_visible_devices"] == "3" and render["pid"] in children
    supervisor.proc.send_signal(signal.SIGTERM)  # mid-render
    assert supervisor.proc.wait(60) == 0, supervisor.log()
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)
    # The child finished the job it had before exiting: one attempt, nothing left to re-claim.
    items, errors = poll_results(http, task["taskUUID"], timeout=30)
    assert errors == [] and len(items) == 1, f"{errors}\n{supervisor.log()}"
    assert _attempts(supervisor.data_dir, task["taskUUID"]) == 1
    assert "all worker processes stopped" in supervisor.log()

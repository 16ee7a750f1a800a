"""Several GPUs for one video: the ``parallel`` profile key, the GPU layout, group supervision,
and a real torch.distributed group of 2 CPU processes (gloo) rendering through a real server.

diffusers' context-parallel path runs on the CPU with gloo for Ulysses (``native`` attention, the
one CPU backend diffusers lets split); ring attention needs a backend that returns its
log-sum-exp (flash, cuDNN), so only a GPU can show it. The end-to-end test therefore renders a
tiny Wan 2.1 pipeline with ``parallel = { ulysses = 2 }`` for real, compares the frames with the
same seed rendered on one device, and kills rank 1 mid-job: the supervisor must restart the
whole group and the job must complete. No GPU is needed: ``--gpus 0,1`` only sets
``CUDA_VISIBLE_DEVICES``, and ``REELSERVE_DIFFUSERS_DEVICE=cpu`` keeps the ranks on the CPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from test_process_executor import Supervisor, _clean_env, children_of, wait_for

from reelserve.engines.diffusers.parallel import fit_tokens, tokens
from reelserve.engines.diffusers.profiles import ProfileSet
from reelserve.errors import EngineError, ValidationError
from reelserve.settings import Settings
from reelserve.worker.executors import ProcessExecutor
from reelserve.worker.slots import WorkerSlot, gpu_slots, plan_groups
from reelserve_testing import TESTS_DIR, ServerFactory, poll_results, runware

# ------------------------------------------------------------------ the `parallel` key


def _weights(root: Path, heads: int = 2) -> Path:
    """A folder that passes the start-time checks: model_index.json and the transformer config."""
    folder = root / "wan"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "transformer" / "config.json").write_text(json.dumps({"num_attention_heads": heads}))
    return folder


def _load(tmp_path: Path, body: str, pipeline: str = "wan-t2v", heads: int = 2) -> ProfileSet:
    weights = _weights(tmp_path, heads)
    path = tmp_path / "profiles.toml"
    path.write_text(f'[models."klingai:1@1".t2v]\npipeline = "{pipeline}"\n'
                    f'weights = "{weights.name}"\n{body}\n')
    return ProfileSet.load(path)


def test_a_parallel_profile_loads_and_its_degree_is_the_product(tmp_path: Path) -> None:
    [entry] = _load(tmp_path, 'parallel = { ulysses = 2, ring = 2 }\nattention_backend = "_native_flash"')
    assert entry.profile.parallel is not None and entry.profile.parallel.degree == 4
    plain = _load(tmp_path / "b", "")
    # Split and unsplit pipelines of the same weights are different resident pipelines.
    assert next(iter(plain)).profile.resident_key() != entry.profile.resident_key()


@pytest.mark.parametrize(("body", "pipeline", "key", "says"), [
    ("parallel = { ulyses = 2 }", "wan-t2v", "parallel.ulyses",
     "allowed keys: ['cfg', 'ring', 'ulysses']"),
    ("parallel = { ulysses = 2 }", "wan-vace", "parallel", "pipeline 'wan-vace' cannot be split"),
    ("parallel = { ulysses = 2 }", "ltx-condition", "parallel", "kinds that can: ['wan-flf2v'"),
    ("parallel = { ring = 2 }", "wan-t2v", "parallel.ring", "ring attention needs an attention_backend"),
    ("parallel = { cfg = 2, ulysses = 2 }", "wan-t2v", "parallel.cfg", "runs CFG parallel alone"),
    ("parallel = { cfg = 2 }", "ltx-condition", "parallel.cfg",
     "cannot put its guidance passes on two GPUs"),
    ("parallel = { cfg = 2 }\ncfg_batch = true", "wan-t2v", "cfg_batch", "choose one"),
    ('parallel = { cfg = 2 }\noffload = "model"', "wan-t2v", "parallel", "offload = 'none'"),
    ("parallel = { ulysses = 1 }", "wan-t2v", "parallel", "every degree is 1"),
    ("parallel = { ulysses = 4 }", "wan-t2v", "parallel.ulysses", "does not divide the 2 attention heads"),
    ('parallel = { ulysses = 2 }\nattention_backend = "flex"', "wan-t2v", "attention_backend",
     "'flex' cannot run split over GPUs"),
    ('parallel = { ulysses = 2 }\noffload = "model"', "wan-t2v", "parallel", "offload = 'none'"),
])
def test_a_bad_parallel_table_is_refused_naming_file_entry_and_key(
    tmp_path: Path, body: str, pipeline: str, key: str, says: str
) -> None:
    with pytest.raises(EngineError) as info:
        _load(tmp_path, body, pipeline)
    message = info.value.message
    assert info.value.code == "invalidProfile"
    assert str(tmp_path / "profiles.toml") in message and 'models."klingai:1@1".t2v' in message
    assert key in message and says in message, message


def test_cfg_parallel_is_a_group_of_two_that_keeps_the_whole_sequence(tmp_path: Path) -> None:
    [entry] = _load(tmp_path, "parallel = { cfg = 2 }")
    option = entry.profile.parallel
    assert option is not None and (option.degree, option.sequence_degree) == (2, 1)
    # Any head count: nothing is split by heads.
    assert next(iter(_load(tmp_path / "odd", "parallel = { cfg = 2 }", heads=7))).profile.parallel
    assert plan_groups(gpu_slots("0,1"), _load(tmp_path / "b", "parallel = { cfg = 2 }")) == [
        WorkerSlot("gpu0+1", ("0", "1"), ranks=2)]


def test_ulysses_must_divide_the_heads_and_the_refusal_lists_what_does(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as info:
        _load(tmp_path, "parallel = { ulysses = 4 }", heads=12 * 1 + 2)  # 14 heads
    assert info.value.allowed_values == [2, 7, 14]
    assert next(iter(_load(tmp_path / "ok", "parallel = { ulysses = 4 }", heads=12))).profile.parallel


def test_generation_sizes_move_only_as_far_as_the_split_needs() -> None:
    # 832x480 x 81 frames (the Wan 2.1 native size) divides by 2, 4 and 8 as it is.
    for degree in (2, 4, 8):
        assert fit_tokens("wan-t2v", 832, 480, 81, degree, 16) == (832, 480)
    # 720x1264 x 81: 21 x 45 x 79 tokens, odd: one side moves by one 16 px step.
    width, height = fit_tokens("wan-t2v", 1264, 720, 81, 2, 16)
    assert tokens("wan-t2v", width, height, 81) % 2 == 0
    assert abs(width - 1264) + abs(height - 720) == 16
    width, height = fit_tokens("wan22-ti2v", 1264, 704, 121, 4, 32)
    assert tokens("wan22-ti2v", width, height, 121) % 4 == 0


# ------------------------------------------------------------------ the GPU layout


def test_each_split_pipeline_gets_a_group_and_the_other_gpus_stay_single(tmp_path: Path) -> None:
    profiles = _load(tmp_path, "parallel = { ulysses = 2 }")
    assert plan_groups(gpu_slots("0,1,2"), profiles) == [
        WorkerSlot("gpu0+1", ("0", "1"), ranks=2), WorkerSlot("gpu2", ("2",))]
    # A '+'-joined slot of the right size becomes the group.
    assert plan_groups(gpu_slots("0,2+3"), profiles) == [
        WorkerSlot("gpu2+3", ("2", "3"), ranks=2), WorkerSlot("gpu0", ("0",))]
    # No parallel profile: the layout is what --gpus said.
    assert plan_groups(gpu_slots("0,1"), _load(tmp_path / "b", "")) == gpu_slots("0,1")


def test_too_few_gpus_for_a_group_is_refused_naming_the_entry(tmp_path: Path) -> None:
    profiles = _load(tmp_path, "parallel = { ulysses = 2 }")
    with pytest.raises(ValidationError) as info:
        plan_groups(gpu_slots("0"), profiles)
    assert info.value.code == "invalidGpus"
    assert 'models."klingai:1@1".t2v: parallel asks for a group of 2 GPUs' in info.value.message


# ------------------------------------------------------------------ group supervision, stand-ins

# A stand-in rank: records its pid and the group variables it was started with, then idles.
RANK = """
import json, os, pathlib, sys, time
out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES")
record = {"pid": os.getpid(), **{k: os.environ.get(k) for k in keys}}
tmp = out / f"{os.getpid()}.tmp"
tmp.write_text(json.dumps(record))
tmp.replace(out / f"{os.getpid()}.json")
while True:
    time.sleep(0.1)
"""


def _records(out: Path) -> dict[int, dict[str, Any]]:
    return {int(p.stem): json.loads(p.read_text()) for p in out.glob("*.json")}


def test_a_dead_rank_restarts_the_whole_group_on_a_new_port(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "reelserve")
    out = tmp_path / "ranks"
    slots = [WorkerSlot("gpu0+1", ("0", "1"), ranks=2), WorkerSlot("gpu2", ("2",))]
    executor = ProcessExecutor(Settings(data_dir=tmp_path / "data"), slots, backoff_base=0.2,
                               command=lambda slot: [sys.executable, "-c", RANK, str(out / slot.label)],
                               environ=_clean_env())
    executor.start()
    try:
        first = wait_for(lambda: r if len(r := _records(out / "gpu0+1")) == 2 else None, 60,
                         "the group's two ranks")
        assert sorted((r["RANK"], r["LOCAL_RANK"], r["WORLD_SIZE"], r["CUDA_VISIBLE_DEVICES"])
                      for r in first.values()) == [("0", "0", "2", "0,1"), ("1", "1", "2", "0,1")]
        assert len({(r["MASTER_ADDR"], r["MASTER_PORT"]) for r in first.values()}) == 1
        pids = executor.pids()
        assert set(pids) == {"gpu0+1.rank0", "gpu0+1.rank1", "gpu2"}
        os.kill(pids["gpu0+1.rank1"], signal.SIGKILL)
        both = wait_for(lambda: r if len(r := _records(out / "gpu0+1")) == 4 else None, 60,
                        "the group restarted as a whole")
        again = {pid: r for pid, r in both.items() if pid not in first}
        assert sorted(r["RANK"] for r in again.values()) == ["0", "1"]
        # Rank 0 was ended with rank 1 (it cannot go on alone), not left running.
        assert not children_of(os.getpid()) & set(first)
        assert {r["MASTER_PORT"] for r in again.values()} != {r["MASTER_PORT"] for r in first.values()}
        assert executor.restarts() == {"gpu0+1": 1, "gpu2": 0}
        assert executor.pids()["gpu2"] == pids["gpu2"]  # the single slot kept running
    finally:
        executor.stop(timeout=10)
    assert executor.pids() == {}
    assert (f"worker gpu0+1: rank 1 (process {pids['gpu0+1.rank1']}) was killed by SIGKILL; "
            "ending the other ranks and restarting the group of 2 in 0.2 s") in caplog.text


# ------------------------------------------------------------------ a real group, a real server


def _tiny() -> ModuleType:
    """``tests/engines/diffusers/diffusers_tiny.py`` (tiny random pipelines built offline)."""
    path = TESTS_DIR / "engines" / "diffusers" / "diffusers_tiny.py"
    spec = importlib.util.spec_from_file_location("diffusers_tiny", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _job(data_dir: Path, task_uuid: str) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(data_dir / "reelserve.db")) as conn:
        row = conn.execute("SELECT status, attempts, spec FROM jobs WHERE task_uuid = ?",
                           (task_uuid,)).fetchone()
    assert row is not None
    return {"status": row[0], "attempts": int(row[1]), "spec": row[2]}


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    value = next((v for v in environ if v.startswith(b"RANK=")), None)
    return int(value[5:]) if value is not None else None


def _frames(path: Path, every: int) -> list[Any]:
    import numpy as np

    from reelserve.media.frames import iter_video_frames

    return [np.asarray(im, dtype=np.float32) for i, im in enumerate(iter_video_frames(path))
            if i % every == 0]


def _one_device_video(profiles: Path, spec_json: str, seed: int, out: Path) -> Path:
    """The same spec and seed rendered in this process on one device (no group), encoded as
    the worker encodes it."""
    from reelserve.engines.diffusers.engine import DiffusersEngine
    from reelserve.media.clip import ResolvedInputs
    from reelserve.media.encode import encode_clip
    from reelserve.tasks import GenerationSpec

    engine = DiffusersEngine(ProfileSet.load(profiles),
                             Settings(profiles=profiles, diffusers_device="cpu"))
    spec = GenerationSpec.model_validate_json(spec_json)
    clip = engine.generate(spec, ResolvedInputs(), seed, lambda _f: None, lambda: False)
    return encode_clip(clip, out, output_format=spec.output_format, quality=spec.output_quality)


@pytest.fixture
def group_cluster(server_factory: ServerFactory, tmp_path: Path
                  ) -> Iterator[tuple[httpx.Client, Supervisor, Path]]:
    """A server without worker threads and ``reelserve worker --gpus 0,1`` on its data dir, with
    a tiny Wan 2.1 T2V profile split over 2 ranks (``parallel = { ulysses = 2 }``)."""
    weights = _tiny().save_tiny("wan-t2v", tmp_path / "wan-t2v")
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(_tiny().profile_toml(
        [("klingai:1@1", "t2v", "wan-t2v", weights, {"steps": 8})]).replace(
        "steps = 8", "steps = 8\nparallel = { ulysses = 2 }"))
    env = {"REELSERVE_PROFILES": str(profiles), "REELSERVE_PREVIEW_FALLBACK": "false",
           "REELSERVE_DIFFUSERS_DEVICE": "cpu", "REELSERVE_LEASE_SECONDS": "3"}
    data_dir = tmp_path / "shared"
    server = server_factory(env={**env, "REELSERVE_WORKERS": "0"}, data_dir=data_dir)
    supervisor = Supervisor(data_dir, env, ["--gpus", "0,1"])
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            yield http, supervisor, profiles
    finally:
        supervisor.close()


def _submit(http: httpx.Client, seed: int) -> str:
    task_uuid = str(uuid.uuid4())
    task = {"taskType": "videoInference", "taskUUID": task_uuid, "model": "klingai:1@1",
            "positivePrompt": "a lighthouse at dusk", "width": 720, "height": 720, "duration": 5,
            "seed": seed, "deliveryMethod": "async"}
    assert runware(http, [task]).status_code == 200
    return task_uuid


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two group starts and three tiny renders on a shared 2-core machine
def test_a_group_of_two_cpu_ranks_renders_and_survives_a_rank_kill(
    group_cluster: tuple[httpx.Client, Supervisor, Path], tmp_path: Path
) -> None:
    import numpy as np

    from reelserve.media.probe import probe

    http, supervisor, profiles = group_cluster
    group_log = "[gpu0+1.rank{}] reelserve.engines.diffusers.parallel: context parallel (ulysses 2"

    # 1. One job, rendered by both ranks: rank 1 split the transformer with rank 0.
    task_uuid = _submit(http, seed=11)
    items, errors = poll_results(http, task_uuid, timeout=900)
    assert errors == [] and len(items) == 1, f"{errors}\n{supervisor.log()}"
    for rank in (0, 1):
        assert group_log.format(rank) in supervisor.log(), supervisor.log()
    out = tmp_path / "group.mp4"
    out.write_bytes(http.get(items[0]["videoURL"]).content)
    info = probe(out)
    assert (info.width, info.height, info.num_frames) == (720, 720, 150)
    assert info.fps == pytest.approx(30)

    # Same math as one device: the frames match the same seed rendered and encoded here (up to
    # float rounding); another seed differs (the tiny random model's frames are nearly flat, so
    # "differs" is small in absolute terms, but far above the rounding).
    spec = _job(supervisor.data_dir, task_uuid)["spec"]
    group_frames = _frames(out, every=15)
    same = _frames(_one_device_video(profiles, spec, 11, tmp_path / "same.mp4"), every=15)
    other = _frames(_one_device_video(profiles, spec, 12, tmp_path / "other.mp4"), every=15)
    close = max(float(np.abs(a - b).mean()) for a, b in zip(group_frames, same, strict=True))
    far = min(float(np.abs(a - b).mean()) for a, b in zip(group_frames, other, strict=True))
    assert close < 0.1 and far > 0.5, (close, far)

    # 2. kill -9 of rank 1 mid-job: the whole group restarts and the job completes.
    ranks = {_rank_of(pid): pid for pid in children_of(supervisor.proc.pid)}
    assert set(ranks) == {0, 1}, ranks
    task_uuid = _submit(http, seed=13)
    wait_for(lambda: _job(supervisor.data_dir, task_uuid)["status"] == "running", 120,
             "the group never claimed the job", supervisor.log)
    os.kill(ranks[1], signal.SIGKILL)
    wait_for(lambda: f"rank 1 (process {ranks[1]}) was killed by SIGKILL; ending the other ranks "
             "and restarting the group of 2" in supervisor.log(), 60, "no group restart",
             supervisor.log)
    items, errors = poll_results(http, task_uuid, timeout=900)
    assert errors == [] and len(items) == 1, f"{errors}\n{supervisor.log()}"
    out = tmp_path / "after-kill.mp4"
    out.write_bytes(http.get(items[0]["videoURL"]).content)
    assert probe(out).num_frames == 150
    # Claimed by the first group, then again by the restarted one through the lease expiry.
    assert _job(supervisor.data_dir, task_uuid)["attempts"] == 2, supervisor.log()
    new = {_rank_of(pid): pid for pid in children_of(supervisor.proc.pid)}
    assert set(new) == {0, 1} and not set(new.values()) & set(ranks.values())


# ------------------------------------------------------------------ CFG parallel, two real ranks

# One rank of a real gloo group (the worker's own _setup and GroupMember): rank 0 renders through
# DiffusersEngine.generate (announcing it), rank 1 runs what rank 0 announced (serve_peer), as in
# ``reelserve worker --gpus``. Each counts its transformer runs.
CFG_RANK = """
import json, logging, sys, threading
from pathlib import Path
import numpy as np, torch, torch.distributed as dist
from reelserve.engines.diffusers.engine import DiffusersEngine
from reelserve.engines.diffusers.profiles import ProfileSet
from reelserve.media.clip import ResolvedInputs
from reelserve.settings import Settings
from reelserve.tasks import GenerationSpec
from reelserve.worker.group import _setup

rank, profiles, spec_json, out = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
logging.basicConfig(level=logging.WARNING)
logging.getLogger("reelserve").setLevel(logging.INFO)
runs = []
torch.nn.modules.module.register_module_forward_hook(
    lambda m, a, r: runs.append(1) if type(m).__name__ == "WanTransformer3DModel" else None)
settings, member = _setup(Settings(profiles=profiles, diffusers_device="cpu"), rank, 2, rank)
engine = DiffusersEngine(ProfileSet.load(profiles), settings)
engine.group = member
spec = GenerationSpec.model_validate_json(spec_json)
if rank == 0:
    clip = engine.generate(spec, ResolvedInputs(), 7, lambda f: None, lambda: False)
    np.save(out / "frames.npy", np.stack(list(clip.frames)))
else:
    engine.serve_peer(member.receive(threading.Event()))
dist.barrier()
(out / f"rank{rank}.json").write_text(json.dumps({"runs": len(runs)}))
if rank == 0:
    member.flush()
"""


@pytest.mark.timeout(600)
def test_cfg_parallel_two_ranks_each_run_one_pass_and_match_one_device(tmp_path: Path) -> None:
    import socket
    import subprocess

    import numpy as np

    from reelserve.engines.diffusers.engine import DiffusersEngine
    from reelserve.media.clip import ResolvedInputs
    from reelserve.tasks import GenerationSpec, Workflow

    tiny = _tiny()
    weights = tiny.save_tiny("wan-t2v", tmp_path / "wan-t2v")
    plain = tmp_path / "plain.toml"
    plain.write_text(tiny.profile_toml([("klingai:1@1", "t2v", "wan-t2v", weights, {})]))
    split = tmp_path / "split.toml"
    split.write_text(plain.read_text() + "parallel = { cfg = 2 }\n")
    spec = GenerationSpec(task_uuid="t", model="klingai:1@1", workflow=Workflow.T2V, width=48,
                          height=32, fps=8, duration=1.0, positive_prompt="a cat dances on the moon",
                          negative_prompt="blurry", seeds=[7])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**_clean_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    ranks = [subprocess.Popen([sys.executable, "-c", CFG_RANK, str(rank), str(split),
                               spec.model_dump_json(), str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    logs = [proc.communicate(timeout=540)[0] for proc in ranks]
    assert [proc.returncode for proc in ranks] == [0, 0], "\n".join(logs)
    for log in logs:  # both ranks paired their passes over the group
        assert "cfg parallel (the two guidance passes on 2 ranks) on cpu" in log, log

    # One transformer run per step on each rank (2 steps): the pair is split, not repeated.
    assert [json.loads((tmp_path / f"rank{r}.json").read_text())["runs"] for r in (0, 1)] == [2, 2]

    # The same frames as one device running both passes (4 runs), and another seed differs.
    engine = DiffusersEngine(ProfileSet.load(plain), Settings(diffusers_device="cpu"))
    runs: list[int] = []
    hook = __import__("torch").nn.modules.module.register_module_forward_hook(
        lambda m, a, r: runs.append(1) if type(m).__name__ == "WanTransformer3DModel" else None)
    try:
        one = np.stack(list(engine.generate(spec, ResolvedInputs(), 7, lambda f: None,
                                            lambda: False).frames)).astype(np.float64)
    finally:
        hook.remove()
    assert len(runs) == 4
    other = np.stack(list(engine.generate(spec, ResolvedInputs(), 8, lambda f: None,
                                          lambda: False).frames)).astype(np.float64)
    group = np.load(tmp_path / "frames.npy").astype(np.float64)
    assert group.shape == one.shape == (spec.num_frames, 32, 48, 3)
    close, far = float(np.abs(group - one).max()), float(np.abs(other - one).max())
    assert close <= 1.0 and far > 4.0, (close, far)

"""One ArtifactStore contract, run against every implementation: local disk and S3.

The S3 store talks to a real S3 endpoint on loopback (moto's standalone server, started by the
``s3_server`` fixture). Stores are opened through :func:`open_artifacts` with real settings, the
way the server and the worker open them. ``machine(name)`` opens another handle as a second
machine would: for the local store on the same (shared) directory, for S3 on the same bucket but
with its own data dir, so no file is shared between the two.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reelserve.delivery import open_artifacts
from reelserve.delivery.artifact_cache import ArtifactCache
from reelserve.delivery.storage import (
    ArtifactStore,
    LocalArtifactStore,
    derived_key,
    owned_media_path,
)
from reelserve.delivery.sweeper import Sweeper
from reelserve.errors import ErrorKind, ReelserveError, ValidationError
from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.settings import Settings
from reelserve.tasks import GenerationSpec, Job, Result, Workflow
from reelserve_testing import free_port
from s3_server import S3Bucket

Machine = Callable[..., ArtifactStore]


def _settings(data_dir: Path, **kw: Any) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, **kw)  # type: ignore[call-arg]


@pytest.fixture(params=["local", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def machine(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Machine:
    """``machine(name="a", **settings)``: the store as seen from machine ``name``."""
    bucket: S3Bucket | None = request.getfixturevalue("s3_bucket") if kind == "s3" else None

    def open_on(name: str = "a", **kw: Any) -> ArtifactStore:
        if bucket is None:
            return open_artifacts(_settings(tmp_path / "shared", **kw))
        return open_artifacts(_settings(tmp_path / name, **bucket.settings(**kw)))

    return open_on


@pytest.fixture
def store(machine: Machine) -> ArtifactStore:
    return machine()


def _key(kind: str = "outputs") -> str:
    return f"{kind}/{uuid.uuid4()}"


def test_the_settings_select_the_implementation(kind: str, store: ArtifactStore) -> None:
    assert isinstance(store, ArtifactStore)
    expected = "LocalArtifactStore" if kind == "local" else "S3ArtifactStore"
    assert type(store).__name__ == expected


def test_put_bytes_then_info_read_and_local_path(store: ArtifactStore) -> None:
    key, data = _key(), b"\x00\x00\x00\x20ftypisom" + bytes(range(256)) * 40
    before = time.time()
    info = store.put_bytes(key, data, content_type="video/mp4", owner="k_1", extension="mp4")
    assert (info.key, info.content_type, info.size, info.owner, info.extension) == (
        key, "video/mp4", len(data), "k_1", "mp4")
    assert before - 1 <= info.created_at <= time.time() + 1
    assert store.info(key) == info
    assert store.read_bytes(key) == data
    path = store.local_path(key)
    assert path is not None and path.read_bytes() == data


def test_put_file_copies_or_moves(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "video.webm"
    src.write_bytes(b"webm" * 5000)
    copied = store.put_file(_key(), src, content_type="video/webm", extension="webm")
    assert src.exists(), "put_file without move keeps the source"
    moved = store.put_file(_key(), src, content_type="video/webm", owner="k_2", extension="webm",
                           move=True)
    assert not src.exists(), "put_file with move takes the source"
    for info in (copied, moved):
        assert info.size == 20000
        assert store.info(info.key) == info
        assert store.read_bytes(info.key) == b"webm" * 5000
        path = store.local_path(info.key)
        assert path is not None and path.read_bytes() == b"webm" * 5000
    assert store.info(moved.key) is not None and store.info(moved.key).owner == "k_2"  # type: ignore[union-attr]


def test_missing_keys(store: ArtifactStore) -> None:
    key = _key("uploads")
    assert store.info(key) is None
    assert store.local_path(key) is None
    with pytest.raises(KeyError):
        store.read_bytes(key)
    assert store.delete(key) is False


def test_delete_removes_it_for_every_machine(machine: Machine) -> None:
    a, b = machine("a"), machine("b")
    key = _key()
    a.put_bytes(key, b"gone soon", content_type="video/mp4", owner="o")
    cached = b.local_path(key)
    assert cached is not None and cached.read_bytes() == b"gone soon"
    assert a.delete(key) is True
    for store in (a, b):
        assert store.info(key) is None
        assert store.local_path(key) is None, "a copy of a deleted artifact was handed out"
        with pytest.raises(KeyError):
            store.read_bytes(key)
    assert a.delete(key) is False and b.delete(key) is False


def test_an_overwrite_is_seen_by_every_machine(machine: Machine) -> None:
    a, b = machine("a"), machine("b")
    key = _key("uploads")
    a.put_bytes(key, b"first", content_type="image/png", extension="png")
    first = b.local_path(key)
    assert first is not None and first.read_bytes() == b"first"
    a.put_bytes(key, b"second version", content_type="image/jpeg", extension="jpg")
    second = b.local_path(key)
    assert second is not None and second.read_bytes() == b"second version"
    info = b.info(key)
    assert info is not None and (info.content_type, info.size, info.extension) == (
        "image/jpeg", 14, "jpg")


def test_local_path_is_reused(store: ArtifactStore) -> None:
    key = _key()
    store.put_bytes(key, b"x" * 4096, content_type="video/mp4")
    first = store.local_path(key)
    second = store.local_path(key)
    assert first is not None and second == first
    assert second.stat().st_ino == first.stat().st_ino, "the file was fetched again"


BAD_KEYS = ["outputs", "outputs/", "other/abc", "outputs/../abc", "outputs/a/b", "outputs/a.b",
            "uploads/a b", "/outputs/abc", "outputs/abc/"]


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_keys_must_be_kind_and_uuid(store: ArtifactStore, bad: str, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    calls: list[Callable[[], object]] = [
        lambda: store.put_bytes(bad, b"x", content_type="image/png"),
        lambda: store.put_file(bad, src, content_type="image/png"),
        lambda: store.info(bad),
        lambda: store.read_bytes(bad),
        lambda: store.local_path(bad),
        lambda: store.delete(bad),
    ]
    for call in calls:
        with pytest.raises(ValidationError) as err:
            call()
        assert err.value.code == "invalidArtifactKey" and err.value.parameter == "key"
    assert src.exists()


def test_list_keys_by_kind_and_write_time(store: ArtifactStore) -> None:
    with pytest.raises(ValidationError):
        list(store.list_keys("other"))
    assert list(store.list_keys("uploads")) == []
    up1, up2, out = _key("uploads"), _key("uploads"), _key("outputs")
    for key in (up1, up2, out):
        store.put_bytes(key, b"data", content_type="image/png")
    assert sorted(store.list_keys("uploads")) == sorted([up1, up2])
    assert list(store.list_keys("outputs")) == [out]
    assert list(store.list_keys("uploads", stored_before=time.time() - 3600)) == []
    assert sorted(store.list_keys("uploads", stored_before=time.time() + 5)) == sorted([up1, up2])
    store.delete(up1)
    assert list(store.list_keys("uploads")) == [up2]


def test_owner_metadata_decides_who_may_use_a_uuid(store: ArtifactStore) -> None:
    mine, shared = str(uuid.uuid4()), str(uuid.uuid4())
    store.put_bytes(f"uploads/{mine}", b"mine", content_type="image/png", owner="k_alice")
    store.put_bytes(f"outputs/{shared}", b"shared", content_type="video/mp4", owner=None)
    info = store.info(f"uploads/{mine}")
    assert info is not None and info.owner == "k_alice"
    info = store.info(f"outputs/{shared}")
    assert info is not None and info.owner is None
    found = owned_media_path(store, mine, "k_alice")
    assert found is not None and found.read_bytes() == b"mine"
    assert owned_media_path(store, mine, "k_bob") is None
    for owner in ("k_alice", "k_bob"):
        got = owned_media_path(store, shared, owner)
        assert got is not None and got.read_bytes() == b"shared"
    assert owned_media_path(store, "../../etc", "k_alice") is None
    assert owned_media_path(store, str(uuid.uuid4()), "k_alice") is None


def test_a_failed_put_changes_nothing(store: ArtifactStore, tmp_path: Path) -> None:
    key = _key()
    with pytest.raises(OSError):
        store.put_file(key, tmp_path / "missing.mp4", content_type="video/mp4")
    assert store.info(key) is None and store.local_path(key) is None
    store.put_bytes(key, b"kept", content_type="video/mp4")
    with pytest.raises(OSError):
        store.put_file(key, tmp_path / "missing.mp4", content_type="video/mp4", move=True)
    assert store.read_bytes(key) == b"kept"


def test_readers_never_see_a_partial_artifact(machine: Machine) -> None:
    writer, reader = machine("a"), machine("b")
    key = _key()
    versions = [bytes([n]) * (256 * 1024 + n) for n in range(3)]
    writer.put_bytes(key, versions[0], content_type="video/mp4")
    seen: list[bytes] = []
    problems: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                data = reader.read_bytes(key)
                path = reader.local_path(key)
                info = reader.info(key)
            except Exception as exc:
                problems.append(repr(exc))
                return
            if data not in versions:
                problems.append(f"read_bytes gave {len(data)} bytes of no version")
            if path is None or path.read_bytes() not in versions:
                problems.append("local_path gave no complete version")
            if info is None or info.size not in {len(v) for v in versions}:
                problems.append(f"info gave {info}")
            seen.append(data)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for n in range(12):
            writer.put_bytes(key, versions[n % 3], content_type="video/mp4")
    finally:
        done.set()
        for thread in threads:
            thread.join(30)
    assert problems == []
    assert seen


def _finished_job(store: SQLiteJobStore, artifacts: ArtifactStore, ttl: int) -> Job:
    task_uuid = str(uuid.uuid4())
    spec = GenerationSpec(task_uuid=task_uuid, model="klingai:1@1", workflow=Workflow.T2V,
                          width=1280, height=720, fps=30, duration=5.0, seeds=[1], ttl=ttl)
    job = store.create(Job(id=str(uuid.uuid4()), task_uuid=task_uuid, owner="o", spec=spec))
    assert store.claim("w", 30) is not None
    info = artifacts.put_bytes(_key(), b"video", content_type="video/mp4", owner="o",
                               extension="mp4")
    store.add_result(job.id, "w", Result(
        index=0, video_uuid=info.key.split("/")[1], seed=1, artifact_key=info.key,
        content_type="video/mp4", size_bytes=5, width=1280, height=720, fps=30.0,
        num_frames=150, duration=5.0))
    store.finish(job.id, "w")
    return job


def test_the_sweeper_deletes_expired_outputs_and_uploads(
    machine: Machine, tmp_path: Path
) -> None:
    artifacts = machine("a")
    other = machine("b")
    store = SQLiteJobStore(tmp_path / "jobs.db")
    try:
        job = _finished_job(store, artifacts, ttl=120)
        [result] = store.get(job.id).results  # type: ignore[union-attr]
        upload = artifacts.put_bytes(_key("uploads"), b"img", content_type="image/png",
                                     owner="o", extension="png")
        assert other.local_path(upload.key) is not None  # cached on another machine
        sweeper = Sweeper(_settings(tmp_path, default_ttl=60), store, artifacts)
        report = sweeper.sweep(now=upload.created_at + 59)
        assert (report.outputs, report.uploads) == (0, 0)
        report = sweeper.sweep(now=time.time() + 61)
        assert (report.outputs, report.uploads) == (0, 1)
        assert artifacts.info(upload.key) is None and other.local_path(upload.key) is None
        assert artifacts.info(result.artifact_key) is not None  # its task's ttl is 120 s
        report = sweeper.sweep(now=time.time() + 121)
        assert (report.outputs, report.uploads) == (1, 0)
        assert artifacts.info(result.artifact_key) is None
        assert list(artifacts.list_keys("outputs")) == list(artifacts.list_keys("uploads")) == []
    finally:
        store.close()


def test_the_sweeper_deletes_an_expired_outputs_cover_with_it(
    machine: Machine, tmp_path: Path
) -> None:
    artifacts = machine("a")
    other = machine("b")
    store = SQLiteJobStore(tmp_path / "jobs.db")
    try:
        expiring = _finished_job(store, artifacts, ttl=120)
        kept = _finished_job(store, artifacts, ttl=3600)
        covers = {}
        for job in (expiring, kept):
            [result] = store.get(job.id).results  # type: ignore[union-attr]
            cover = artifacts.put_bytes(derived_key(result.artifact_key, "cover"), b"\xff\xd8jpg",
                                        content_type="image/jpeg", owner="o", extension="jpg")
            assert cover.key == f"outputs/{result.video_uuid}_cover"
            covers[job.id] = (result.artifact_key, cover.key)
        assert other.local_path(covers[expiring.id][1]) is not None  # cached on another machine
        sweeper = Sweeper(_settings(tmp_path, default_ttl=60), store, artifacts)
        report = sweeper.sweep(now=time.time() + 121)
        assert (report.outputs, report.uploads) == (1, 0)  # the cover is not counted as an output
        output, cover_key = covers[expiring.id]
        assert artifacts.info(output) is None and artifacts.info(cover_key) is None
        assert other.local_path(cover_key) is None
        assert sorted(artifacts.list_keys("outputs")) == sorted(covers[kept.id])  # not yet due
    finally:
        store.close()


def test_derived_keys_are_registered_names_beside_an_output() -> None:
    assert derived_key("outputs/abc-1", "cover") == "outputs/abc-1_cover"
    with pytest.raises(ValueError, match="not registered"):
        derived_key("outputs/abc-1", "poster")
    with pytest.raises(ValueError, match="not an output"):
        derived_key("uploads/abc-1", "cover")


# ----------------------------------------------------------------------------- S3 specifics


def test_s3_objects_and_metadata(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = open_artifacts(_settings(tmp_path, **s3_bucket.settings()))
    key = _key()
    store.put_bytes(key, b"mp4", content_type="video/mp4", owner="k_ä/ö", extension="mp4")
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=s3_bucket.object_key(key))
    assert head["ContentType"] == "video/mp4" and head["ContentLength"] == 3
    meta = head["Metadata"]
    assert set(meta) == {"owner", "created-at", "extension"} and meta["extension"] == "mp4"
    info = store.info(key)
    assert info is not None and info.owner == "k_ä/ö"  # percent-encoded in the header
    assert s3_bucket.object_names() == [s3_bucket.object_key(key)]
    assert not (tmp_path / "artifacts").exists(), "the S3 store wrote the local artifacts dir"


def test_s3_objects_not_written_by_reelserve_are_absent(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    store = open_artifacts(_settings(tmp_path, **s3_bucket.settings()))
    key = _key("uploads")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=s3_bucket.object_key(key), Body=b"x")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"{s3_bucket.prefix}/uploads/a.b/c",
                                Body=b"x")
    assert store.info(key) is None and store.local_path(key) is None
    with pytest.raises(KeyError):
        store.read_bytes(key)
    assert list(store.list_keys("uploads")) == [key]  # listed, then judged by info()


def test_s3_put_file_move_becomes_the_cached_copy(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = open_artifacts(_settings(tmp_path / "worker", **s3_bucket.settings()))
    src = tmp_path / "result-0.mp4"
    src.write_bytes(b"rendered" * 1000)
    inode = src.stat().st_ino
    info = store.put_file(_key(), src, content_type="video/mp4", move=True)
    path = store.local_path(info.key)
    assert path is not None and path.stat().st_ino == inode, "downloaded what it just uploaded"
    assert path.is_relative_to(tmp_path / "worker" / "artifact-cache")


def test_s3_cache_is_bounded(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = open_artifacts(_settings(tmp_path, **s3_bucket.settings(artifact_cache_bytes=250_000)))
    cache: ArtifactCache = store.cache  # type: ignore[attr-defined]
    cache.keep_recent = 0.0
    blobs = {_key(): bytes([n]) * 100_000 for n in range(5)}
    for key, data in blobs.items():
        store.put_bytes(key, data, content_type="video/mp4")
        path = store.local_path(key)
        assert path is not None and path.read_bytes() == data
        held = sum(p.stat().st_size for p in (tmp_path / "artifact-cache").rglob("*@*"))
        assert held <= 250_000
    for key, data in blobs.items():  # evicted ones come back from the bucket
        path = store.local_path(key)
        assert path is not None and path.read_bytes() == data


def test_cache_eviction_keeps_files_in_use(tmp_path: Path) -> None:
    now = [1000.0]
    cache = ArtifactCache(tmp_path, max_bytes=100, keep_recent=60.0, clock=lambda: now[0])

    def put(key: str) -> Path:
        def write(tmp: Path) -> str:
            tmp.write_bytes(b"x" * 60)
            return '"v1"'

        return cache.fill(key, write)

    first = put("outputs/a")
    os.utime(first, (now[0] - 120, now[0] - 120))  # last used two minutes ago
    second = put("outputs/b")  # over the bound: the old one goes, the new one stays
    assert not first.exists() and second.exists()
    third = put("outputs/c")  # over the bound, but b was used within keep_recent: both stay
    assert second.exists() and third.exists()
    assert cache.get("outputs/b", '"v1"') == second and cache.get("outputs/b", '"v2"') is None
    cache.discard("outputs/b")
    assert not second.exists()


def test_s3_missing_bucket_or_unreachable_endpoint_fails_at_open(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    cases = {
        "does not exist": s3_bucket.settings(artifacts_url="s3://no-such-bucket-here/x"),
        "Could not connect": s3_bucket.settings(s3_endpoint_url=f"http://127.0.0.1:{free_port()}"),
    }
    for says, kw in cases.items():
        with pytest.raises(ReelserveError) as err:
            open_artifacts(_settings(tmp_path, **kw))
        assert err.value.code == "artifactStoreUnavailable"
        assert err.value.kind is ErrorKind.UNAVAILABLE and err.value.parameter == "artifacts_url"
        assert says in err.value.message and "s3://" in err.value.message
        assert "reelserve-test-secret" not in err.value.message


def test_s3_failures_later_are_unavailable_not_absent(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    import boto3
    from botocore.config import Config

    from reelserve.delivery.s3 import S3ArtifactStore

    dead = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1",
    ).client("s3", endpoint_url=f"http://127.0.0.1:{free_port()}",
             config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))
    store = S3ArtifactStore(dead, s3_bucket.name, "p/", ArtifactCache(tmp_path, 1 << 20),
                            target="s3://test")
    key = _key()
    calls: list[Callable[[], object]] = [
        lambda: store.put_bytes(key, b"x", content_type="image/png"),
        lambda: store.info(key),
        lambda: store.read_bytes(key),
        lambda: store.local_path(key),
        lambda: store.delete(key),
        lambda: list(store.list_keys("uploads")),
    ]
    for call in calls:
        with pytest.raises(ReelserveError) as err:
            call()
        assert err.value.code == "artifactStoreUnavailable"
        assert err.value.kind is ErrorKind.UNAVAILABLE and err.value.http_status == 503


def test_s3_settings_are_checked(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    from pydantic import ValidationError as SettingsError

    for bad in ("http://bucket/x", "s3://", "s3:///prefix", "/local/dir"):
        with pytest.raises(SettingsError, match="artifacts_url"):
            _settings(tmp_path, artifacts_url=bad)
    with pytest.raises(ValidationError, match="go together"):
        open_artifacts(_settings(tmp_path, **s3_bucket.settings(s3_secret_access_key=None)))
    assert isinstance(open_artifacts(_settings(tmp_path, artifacts_url="")), LocalArtifactStore)

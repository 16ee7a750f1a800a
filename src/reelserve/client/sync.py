"""The blocking client: :class:`Client`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from reelserve.client import _wire
from reelserve.client._wire import ProgressCallback, VideoResult


class Client:
    """A blocking client for a reelserve server's Runware REST protocol (``POST /v1``).

    Args:
        url: the server root (``http://127.0.0.1:8000``; a trailing ``/v1`` is accepted).
        api_key: sent as ``Authorization: Bearer``; default ``REELSERVE_API_KEY``, and none for a
            loopback server without keys.
        timeout: seconds for one HTTP request (uploads, polls), not for a whole generation.
        transport: an httpx transport (e.g. for custom TLS or proxies).

    Every server refusal is raised as the matching :mod:`reelserve.errors` class with the
    server's ``code``, ``message``, ``parameter`` and ``allowed_values``.

    Example::

        with Client("http://127.0.0.1:8000") as client:
            [video] = client.video_inference(model="klingai:1@1", positivePrompt="a lighthouse",
                                             width=1280, height=720, duration=5)
            client.download(video, "lighthouse.mp4")
    """

    def __init__(self, url: str = _wire.DEFAULT_URL, api_key: str | None = None, *,
                 timeout: float = 120.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = _wire.base_url(url)
        self.api_key = _wire.resolve_api_key(api_key)
        # No default auth header: output URLs are signed and may live on another host
        # (public_url, object storage), which must never receive the API key.
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        # What the last /v1/tasks answer said: "keys" or "keyless" (None: not asked yet).
        self.auth_mode: str | None = None

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ protocol

    def run(
        self, tasks: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """POST one task array; returns the raw ``(data, errors)`` lists.

        Raises only for a reply outside the envelope or an unreachable server; task errors are
        returned, not raised (the typed methods below raise them).
        """
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            resp = self._http.post("/v1", json=tasks, headers=headers)
        except httpx.HTTPError as exc:
            raise _wire.unreachable(self.url, exc) from exc
        data, errors = _wire.parse_reply(resp.status_code, resp.content)
        if resp.status_code == 401:
            _wire.raise_errors(errors, 401)
        return data, errors

    def _one(self, task: dict[str, Any]) -> dict[str, Any]:
        data, errors = self.run([task])
        _wire.raise_errors(errors)
        if not data:
            raise _wire.invalid_response(f"no item for {task.get('taskType')}")
        return data[0]

    def ping(self) -> bool:
        """Whether the server answers a ``ping`` task (and accepts the key)."""
        return bool(self._one({"taskType": "ping", "ping": True}).get("pong"))

    def upload_image(self, image: str | os.PathLike[str] | bytes) -> str:
        """Upload an image (``imageUpload``); returns its imageUUID.

        ``image``: file path, bytes, an http(s) URL (fetched by the server) or a data URI.
        """
        item = self._one({"taskType": "imageUpload", "taskUUID": _wire.new_task_uuid(),
                          "image": _wire.media_value(image, "image")})
        return str(item["imageUUID"])

    def upload_media(self, media: str | os.PathLike[str] | bytes) -> str:
        """Upload an image, video or audio file (``mediaStorage``); returns its mediaUUID."""
        item = self._one({"taskType": "mediaStorage", "taskUUID": _wire.new_task_uuid(),
                          "operation": "upload", "media": _wire.media_value(media, "media")})
        return str(item["mediaUUID"])

    def delete_media(self, media_uuid: str) -> None:
        """Delete an upload (``mediaStorage`` with ``operation: "delete"``)."""
        self._one({"taskType": "mediaStorage", "taskUUID": _wire.new_task_uuid(),
                   "operation": "delete", "mediaUUID": media_uuid})

    def submit(self, **params: Any) -> str:
        """Submit a ``videoInference`` task async (wire parameter names); returns its taskUUID."""
        task = _wire.video_task(params)
        self._one(task)
        return str(task["taskUUID"])

    def video_inference(self, *, wait: bool = True, poll_interval: float = 1.0,
                        timeout: float = 900.0, on_progress: ProgressCallback | None = None,
                        **params: Any) -> list[VideoResult]:
        """Generate videos: submit async with a fresh taskUUID, then poll until all arrived.

        ``params`` are the task's wire fields (``model``, ``positivePrompt``, ``width``,
        ``height``, ``duration``, ``numberResults``, ``inputs``, ``outputFormat``, ...).
        With ``wait=False`` it returns at once with one ``processing`` item that names the
        taskUUID (continue with :meth:`wait_for`).

        Raises:
            reelserve.errors.ReelserveError: the server's refusal or the task's failure (the
                matching subclass), or ``timeoutClient`` after ``timeout`` seconds.
        """
        task_uuid = self.submit(**params)
        if not wait:
            return [VideoResult(task_uuid=task_uuid, status="processing", progress=0)]
        return self.wait_for(task_uuid, _wire.number_results(params),
                             poll_interval=poll_interval, timeout=timeout,
                             on_progress=on_progress)

    def wait_for(self, task_uuid: str, number_results: int = 1, *, poll_interval: float = 1.0,
                 timeout: float = 900.0,
                 on_progress: ProgressCallback | None = None) -> list[VideoResult]:
        """Poll ``getResponse`` until ``number_results`` videos arrived or the task failed."""
        collector = _wire.Collector(task_uuid, number_results, on_progress)
        deadline = time.monotonic() + timeout
        while True:
            data, errors = self.run([{"taskType": "getResponse", "taskUUID": task_uuid}])
            collector.feed(data, errors)
            if collector.needs_details and not collector.complete:
                collector.feed_details(self.task_details(task_uuid))
            if collector.complete:
                return collector.ordered()
            left = deadline - time.monotonic()
            if left <= 0:
                raise _wire.wait_timeout(task_uuid, timeout)
            time.sleep(min(poll_interval, left))

    def get_response(self, task_uuid: str) -> list[VideoResult]:
        """One ``getResponse`` poll: videos finished since the last poll, or a ``processing``
        item. Raises the task's error if it failed."""
        data, errors = self.run([{"taskType": "getResponse", "taskUUID": task_uuid}])
        _wire.raise_errors(errors)
        return [VideoResult.from_item(item) for item in data]

    def task_details(self, task_uuid: str) -> dict[str, Any]:
        """``getTaskDetails``: the stored request, status, progress and the whole response."""
        return self._one({"taskType": "getTaskDetails", "taskUUID": task_uuid})

    def model_search(self, search: str | None = None, *, limit: int = 20,
                     offset: int = 0) -> dict[str, Any]:
        """``modelSearch``: ``{"totalResults": N, "results": [model, ...]}``."""
        task: dict[str, Any] = {"taskType": "modelSearch", "taskUUID": _wire.new_task_uuid(),
                                "limit": limit, "offset": offset}
        if search is not None:
            task["search"] = search
        item = self._one(task)
        return {"totalResults": item.get("totalResults", 0), "results": item.get("results", [])}

    # ------------------------------------------------------------------ /v1/tasks

    def _tasks(self, method: str, path: str,
               params: dict[str, str | int] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            resp = self._http.request(method, path, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise _wire.unreachable(self.url, exc) from exc
        self.auth_mode = resp.headers.get(_wire.AUTH_MODE_HEADER, self.auth_mode)
        return _wire.parse_task_reply(resp.status_code, resp.content)

    def list_tasks(self, *, status: str | list[str] | None = None, limit: int = 20,
                   cursor: str | None = None) -> dict[str, Any]:
        """``GET /v1/tasks``: this key's tasks of every dialect, newest first.

        Returns ``{"data": [task, ...], "nextCursor": str | None}``; pass ``nextCursor`` back as
        ``cursor`` for the next page. ``status``: ``queued``, ``running``, ``succeeded``,
        ``failed``, ``cancelled`` (one or several).
        """
        return self._tasks("GET", _wire.TASKS_PATH, _wire.task_params(status, limit, cursor))

    def get_task(self, task_uuid: str) -> dict[str, Any]:
        """``GET /v1/tasks/{taskUUID}``: status, progress, result URLs and error of one task."""
        return self._tasks("GET", f"{_wire.TASKS_PATH}/{task_uuid}")

    def cancel_task(self, task_uuid: str) -> dict[str, Any]:
        """``POST /v1/tasks/{taskUUID}/cancel``: a queued task never runs, a running one stops at
        its next step. Returns the task as it is now (``cancelling`` until the worker stops)."""
        return self._tasks("POST", f"{_wire.TASKS_PATH}/{task_uuid}/cancel")

    def download(self, result: VideoResult, path: str | os.PathLike[str]) -> Path:
        """Write ``result``'s video to ``path`` (or into it, when it is a directory).

        URL outputs are streamed without the API key (the URL is signed); base64/dataURI outputs
        are decoded. The file appears only once complete. Returns the path written.
        """
        target = _wire.download_target(result, path)
        part = _wire.partial_path(target)
        inline = result.inline_bytes()
        try:
            if inline is not None:
                part.write_bytes(inline)
            elif result.url is not None:
                self._stream_to(result.url, part)
            else:
                raise _wire.invalid_response(f"video {result.video_uuid} has no URL or data")
            part.replace(target)
        finally:
            part.unlink(missing_ok=True)
        return target

    def _stream_to(self, url: str, part: Path) -> None:
        try:
            with self._http.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise _wire.download_error(resp.status_code, url)
                with part.open("wb") as out:
                    for chunk in resp.iter_bytes():
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise _wire.unreachable(url.split("?", 1)[0], exc) from exc

"""Runware over WebSocket: ``/v1`` (any query string), the transport the official SDKs use.

The tasks are the REST tasks, run by the same :class:`~reelserve.api.runware.handlers.RunwareHandler`;
only delivery differs (PROTOCOLS.md §1.2, docs/sdk-compat.md):

* The first frame authenticates: ``[{"taskType":"authentication","apiKey":K}]``, optionally with
  ``connectionSessionUUID`` to resume a session. The reply is exactly
  ``{"data":[{"taskType":"authentication","connectionSessionUUID":U}]}`` (no taskUUID: the JS SDK
  matches it by taskType). A bad key gets ``invalidApiKey`` with ``taskType: "authentication"``
  and the socket stays open.
* Every task of a frame runs concurrently and is answered in its own frame (the JS SDK routes an
  ``errors`` frame by its *first* error, so one task per frame keeps errors with their task).
* ``videoInference`` with ``deliveryMethod: "sync"`` gets no ACK: progress items and then each
  result are pushed as they exist. Async tasks get the ACK; clients poll with ``getResponse``.
* Results belong to a *session* (``connectionSessionUUID``), not to a socket: frames that cannot be
  sent (the client dropped, or was too slow) are kept ``ws_resume_seconds`` and sent after the
  client re-authenticates with that UUID. Results leave the store only when their frame is sent:
  when a session expires (or its resume buffer overflows) the results its kept frames carried are
  undelivered again, and ``getResponse`` (REST or WebSocket) hands them out.
* Limits: open sockets per process (``ws_max_connections``, refused at the handshake); per
  connection: frame size (``max_body_bytes``, as for REST), tasks per frame
  (``max_tasks_per_request``, as for REST), tasks in flight (``ws_max_in_flight``, counted per
  socket and per session, so authenticating again does not reset it), an outgoing queue (``ws_send_queue`` frames; a client that cannot keep
  up is disconnected and its frames kept for resume) and ``ws_idle_timeout`` without a message.

Sessions live in this process's memory: with several API processes behind one address, route a
client to the same process (sticky sessions) for resume to work; polling works anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect, WebSocketState

from reelserve.api.auth import authenticate, client_address
from reelserve.api.parsing import parse_json_async
from reelserve.api.runware import render
from reelserve.api.runware.handlers import Reply
from reelserve.api.runware.rest import check_task_count
from reelserve.errors import (
    AuthError,
    ErrorKind,
    RateLimitError,
    ReelserveError,
    ValidationError,
)

if TYPE_CHECKING:
    from reelserve.api.runware.handlers import RunwareHandler
    from reelserve.api.serving import Serving
    from reelserve.tasks import Job

log = logging.getLogger(__name__)

AUTH_TASK = "authentication"
PING_TASK = "ping"

# A send that makes no progress for this long means a dead peer: drop it, keep its frames.
_SEND_TIMEOUT = 30.0
# Sync delivery: how often a running job is looked at, and the least gap between progress pushes.
_WATCH_INTERVAL = 0.5
_PROGRESS_INTERVAL = 1.0
# WebSocket close codes.
_CLOSE_NORMAL = 1000
_CLOSE_TRY_AGAIN = 1013


# ================================================================================================
# Sessions and connections
# ================================================================================================

Taken = Sequence[tuple[str, list[int]]]
"""``(job id, result indexes)`` a frame took from the store (marked delivered)."""


@dataclass(frozen=True)
class _Out:
    """An outgoing frame, and the results it carries: a frame that is dropped unsent hands them
    back to the store, so ``getResponse`` still finds them (they never reached the client)."""

    text: str
    taken: Taken = ()


class _Connection:
    """One socket: a bounded outgoing queue drained by a sender task."""

    def __init__(self, websocket: WebSocket, queue_size: int) -> None:
        self.websocket = websocket
        self.queue: asyncio.Queue[_Out] = asyncio.Queue(maxsize=queue_size)
        self.closed = asyncio.Event()
        self.close_code = _CLOSE_NORMAL
        self.close_reason = ""
        self.unsent: list[_Out] = []  # a frame whose send failed midway
        # Called after each send: the session tops the queue up from its resume backlog.
        self.refill: Callable[[], None] | None = None

    def offer(self, out: _Out, *, shut_when_full: bool = True) -> bool:
        """Queue a frame without waiting; False when the socket is closed or the queue is full
        (which, unless ``shut_when_full`` is False, means the client is too slow: drop it)."""
        if self.closed.is_set():
            return False
        try:
            self.queue.put_nowait(out)
        except asyncio.QueueFull:
            if not shut_when_full:
                return False
            # A close reason holds at most 123 bytes: keep it short.
            self.shut(_CLOSE_TRY_AGAIN, f"client too slow: {self.queue.maxsize} frames queued "
                      "(REELSERVE_WS_SEND_QUEUE); resume with connectionSessionUUID")
            return False
        return True

    def shut(self, code: int, reason: str) -> None:
        """Ask the connection to end (the endpoint closes the socket)."""
        if not self.closed.is_set():
            self.close_code, self.close_reason = code, reason
            self.closed.set()

    async def run_sender(self) -> None:
        """Send queued frames in order until the connection ends."""
        while True:
            out = await self.queue.get()
            try:
                await asyncio.wait_for(self.websocket.send_text(out.text), _SEND_TIMEOUT)
            except Exception as exc:  # peer gone, or stuck: keep the frame for a resume
                self.unsent.append(out)
                self.shut(_CLOSE_TRY_AGAIN, f"send failed: {type(exc).__name__}")
                return
            if self.refill is not None:
                self.refill()

    def drain(self) -> list[_Out]:
        """Frames that were never sent (in order), emptying the queue."""
        out = list(self.unsent)
        self.unsent.clear()
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out


class Session:
    """Results and running tasks of one ``connectionSessionUUID`` (outlives its sockets)."""

    def __init__(self, session_uuid: str, owner: str, max_pending: int,
                 give_back: Callable[[Taken], None]) -> None:
        self.uuid = session_uuid
        self.owner = owner
        self.connection: _Connection | None = None
        self.pending: deque[_Out] = deque()
        self.give_back = give_back
        self.max_pending = max_pending
        self.detached_at: float | None = None
        self.expired = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0

    def deliver(self, text: str, taken: Taken = ()) -> None:
        """Send a frame now, or keep it for the client's next authentication with this UUID.

        ``taken`` names the results the frame carries: if the frame is dropped unsent (the
        session expired, or its resume buffer overflowed) they go back to the store."""
        out = _Out(text, tuple(taken))
        if self.expired:
            self.give_back(out.taken)
            return
        conn = self.connection
        if conn is not None and not self.pending and conn.offer(out):
            return
        self.pending.append(out)
        if len(self.pending) > self.max_pending:
            # Bounded memory per session: the oldest frame goes (logged); results it carried
            # return to the store, where getResponse finds them.
            self.give_back(self.pending.popleft().taken)
            log.warning("ws session %s: resume buffer full, dropped the oldest frame", self.uuid)
        self.flush()

    def flush(self) -> None:
        """Move kept frames to the attached connection, in order, as far as its queue allows
        (the sender calls this again after each send, so a backlog drains at the client's pace)."""
        conn = self.connection
        while conn is not None and self.pending:
            if not conn.offer(self.pending[0], shut_when_full=False):
                return
            self.pending.popleft()

    def spawn(self, coro: Any) -> None:
        """Run a coroutine tied to this session (kept referenced until done)."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class SessionRegistry:
    """Sessions of this process, with expiry of detached ones.

    Expiry uses a heap of ``(deadline, uuid)`` pushed at each detach, so :meth:`purge` costs
    O(expired * log n), not a scan of every session (one frame of 10,000 ``authentication``
    tasks once blocked the event loop for 89 s that way). A heap entry whose session was
    re-attached (or detached again later) is stale and skipped. Each detach also arms a timer
    for its deadline, so a session expires on time even when no other socket comes or goes:
    the results its kept frames carried then return to the store for ``getResponse``.
    """

    def __init__(self, resume_seconds: float, max_pending: int,
                 give_back: Callable[[Taken], None]) -> None:
        self.resume_seconds = resume_seconds
        self.max_pending = max_pending
        self.give_back = give_back
        self._sessions: dict[str, Session] = {}
        self._deadlines: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def purge(self) -> None:
        """Forget sessions detached for longer than ``resume_seconds``."""
        now = time.monotonic()
        heap = self._deadlines
        while heap and heap[0][0] < now:
            _, key = heapq.heappop(heap)
            session = self._sessions.get(key)
            if session is None or session.detached_at is None or (
                now - session.detached_at <= self.resume_seconds
            ):
                continue  # attached again, or detached again later (a newer entry exists)
            self._forget(session)

    def _forget(self, session: Session) -> None:
        session.expired = True
        taken = [item for out in session.pending for item in out.taken]
        session.pending.clear()
        self._sessions.pop(session.uuid, None)
        self.give_back(taken)

    def attach(self, requested: Any, owner: str, conn: _Connection) -> Session:
        """The session to use: the requested one when it exists, is live and has this owner,
        otherwise a new one (clients never choose a session UUID themselves)."""
        self.purge()
        session = self._sessions.get(requested) if isinstance(requested, str) else None
        if session is None or session.owner != owner:
            session = Session(str(uuid.uuid4()), owner, self.max_pending, self.give_back)
            self._sessions[session.uuid] = session
        old = session.connection
        if old is not None and old is not conn:
            old.shut(_CLOSE_NORMAL, "session resumed on another connection")
        session.connection = conn
        session.detached_at = None
        conn.refill = session.flush
        return session

    def detach(self, session: Session, conn: _Connection) -> None:
        """The socket ended: keep what it did not send, start the resume clock."""
        if session.connection is conn:
            conn.refill = None
            session.pending.extendleft(reversed(conn.drain()))
            session.connection = None
            session.detached_at = time.monotonic()
            heapq.heappush(self._deadlines,
                           (session.detached_at + self.resume_seconds, session.uuid))
            # A little after the deadline (purge compares strictly), on this loop.
            asyncio.get_running_loop().call_later(self.resume_seconds + 0.05, self.purge)
        self.purge()

    def replace(self, session: Session, conn: _Connection) -> None:
        """The socket authenticates again: its old session is detached, and forgotten at once
        when nothing of it can still arrive (no frames kept, no task running), so re-auth
        frames cannot pile up sessions."""
        self.detach(session, conn)
        if session.connection is None and not session.pending and not session.tasks:
            self._forget(session)


# ================================================================================================
# Frames
# ================================================================================================


def _frame(reply: Reply) -> dict[str, Any]:
    frame: dict[str, Any] = {}
    if reply.data:
        frame["data"] = reply.data
    if reply.errors:
        frame["errors"] = reply.errors
    return frame


def _errors_frame(*errors: dict[str, Any]) -> dict[str, Any]:
    return {"errors": list(errors)}


def _is_big(frame: dict[str, Any]) -> bool:
    return any("videoBase64Data" in item or "videoDataURI" in item
               for item in frame.get("data", ()) if isinstance(item, dict))


async def _dumps(frame: dict[str, Any]) -> str:
    if _is_big(frame):  # base64 video: serialise off the loop
        return await run_in_threadpool(json.dumps, frame)
    return json.dumps(frame)


def _task_ids(task: Any) -> tuple[str | None, str | None]:
    if not isinstance(task, dict):
        return None, None
    task_type, task_uuid = task.get("taskType"), task.get("taskUUID")
    return (task_type if isinstance(task_type, str) else None,
            task_uuid if isinstance(task_uuid, str) else None)


# ================================================================================================
# The endpoint
# ================================================================================================


class RunwareWebSocket:
    """Serves ``/v1`` sockets for one app."""

    def __init__(self, serving: Serving, handler: RunwareHandler) -> None:
        self.serving = serving
        self.services = serving.services
        self.settings = serving.settings
        self.handler = handler
        self.sessions = SessionRegistry(self.settings.ws_resume_seconds,
                                        self.settings.ws_send_queue, self._give_back)
        self.open_sockets = 0
        self._refusing = False
        self._background: set[asyncio.Future[None]] = set()

    async def serve(self, websocket: WebSocket) -> None:
        """The lifetime of one socket (refused at the handshake over ``ws_max_connections``)."""
        if self.open_sockets >= self.settings.ws_max_connections:
            # Closing before accepting answers the handshake with 403: each open socket holds
            # a file descriptor and buffers, so their number is bounded per process.
            if not self._refusing:  # one line per episode, not one per refused socket
                log.warning("ws: %d sockets open, refusing more (REELSERVE_WS_MAX_CONNECTIONS)",
                            self.open_sockets)
            self._refusing = True
            await websocket.close(_CLOSE_TRY_AGAIN)
            return
        self._refusing = False
        self.open_sockets += 1
        try:
            await self._serve(websocket)
        finally:
            self.open_sockets -= 1

    async def _serve(self, websocket: WebSocket) -> None:
        await websocket.accept()
        conn = _Connection(websocket, self.settings.ws_send_queue)
        sender = asyncio.create_task(conn.run_sender())
        state = _State()
        try:
            await self._receive_loop(websocket, conn, state)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            if state.session is not None:
                self.sessions.detach(state.session, conn)
            if websocket.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close(conn.close_code, conn.close_reason[:120])

    async def _receive_loop(self, websocket: WebSocket, conn: _Connection, state: _State) -> None:
        idle = self.settings.ws_idle_timeout
        closed = asyncio.ensure_future(conn.closed.wait())
        try:
            while True:
                receive = asyncio.ensure_future(websocket.receive())
                done, _ = await asyncio.wait({receive, closed}, timeout=idle,
                                             return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await receive
                    if not done:
                        conn.shut(_CLOSE_NORMAL, f"idle for {idle:g} s without a message "
                                  "(REELSERVE_WS_IDLE_TIMEOUT)")
                    return
                message = receive.result()
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text")
                if raw is None and message.get("bytes") is not None:
                    raw = message["bytes"]
                await self._on_frame(raw if raw is not None else "", conn, state)
        except WebSocketDisconnect:
            return
        finally:
            closed.cancel()

    async def _send_now(self, conn: _Connection, frame: dict[str, Any]) -> None:
        conn.offer(_Out(await _dumps(frame)))

    def _give_back(self, taken: Taken) -> None:
        """Results of frames dropped unsent: undelivered again in the store (in a thread; kept
        referenced until done, and a failure is logged rather than lost silently)."""
        if not taken:  # most frames carry no results
            return
        reply = Reply(taken=list(taken))
        task = asyncio.ensure_future(run_in_threadpool(self.handler.give_back, reply))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ws: could not hand results back to the store", exc_info=task.exception())

    # --------------------------------------------------------------------- frames

    async def _on_frame(self, raw: str | bytes, conn: _Connection, state: _State) -> None:
        cap = self.settings.max_body_bytes
        if len(raw) > cap:
            await self._too_large(raw, cap, conn)
            return
        try:
            tasks: Any = await parse_json_async(raw, parameter="frame", what="the frame")
        except ReelserveError as exc:
            await self._send_now(conn, _errors_frame(
                {**exc.to_dict(), "taskType": None, "taskUUID": None}))
            return
        if isinstance(tasks, dict):  # tolerate a bare task object
            tasks = [tasks]
        if not isinstance(tasks, list):
            await self._send_now(conn, _errors_frame({
                **ValidationError("invalidRequestBody", "a frame must be a JSON array of task "
                                  f"objects, got a JSON {type(tasks).__name__}",
                                  parameter="frame").to_dict(), "taskType": None, "taskUUID": None}))
            return
        try:
            check_task_count(tasks, self.settings.max_tasks_per_request, parameter="frame")
        except ReelserveError as exc:  # one refusal for the whole frame; nothing of it runs
            await self._send_now(conn, _errors_frame(
                {**exc.to_dict(), "taskType": None, "taskUUID": None}))
            return
        failed_auth: ReelserveError | None = None
        for task in tasks:
            task_type, task_uuid = _task_ids(task)
            if task_type == AUTH_TASK:
                failed_auth = await self._authenticate(task, conn, state)
                continue
            if task_type == PING_TASK:
                await self._send_now(conn, _frame(await self.handler.handle_one(task, "")))
                continue
            session = state.session
            if session is None:
                error = failed_auth or AuthError(
                    "missingApiKey", "this socket is not authenticated: send "
                    "[{\"taskType\":\"authentication\",\"apiKey\":\"...\"}] as the first frame",
                    parameter="apiKey")
                await self._send_now(conn, _errors_frame(
                    render.error_item(error, task_type=task_type, task_uuid=task_uuid)))
                continue
            # Counted per socket and per session: neither authenticating again (a new session
            # on this socket) nor resuming the session on a new socket starts from zero.
            running = max(state.in_flight, session.in_flight)
            if running >= self.settings.ws_max_in_flight:
                error = RateLimitError(
                    "rateLimitExceeded", f"this connection already has {running} tasks "
                    f"in flight; the limit is {self.settings.ws_max_in_flight} "
                    "(REELSERVE_WS_MAX_IN_FLIGHT): wait for results before sending more",
                    parameter="taskUUID")
                session.deliver(await _dumps(_errors_frame(
                    render.error_item(error, task_type=task_type, task_uuid=task_uuid))))
                continue
            session.in_flight += 1
            state.in_flight += 1
            session.spawn(self._run_task(task, session, state))

    async def _too_large(self, raw: str | bytes, cap: int, conn: _Connection) -> None:
        """Refuse an oversized frame, naming each of its tasks when the JSON can be read."""
        error = ReelserveError(
            "payloadTooLarge", f"the frame is {len(raw)} bytes; the limit is {cap} bytes "
            "(REELSERVE_MAX_BODY_BYTES): upload big media with imageUpload/mediaStorage "
            "in frames of their own, or pass a URL", parameter="frame", kind=ErrorKind.TOO_LARGE)
        try:
            tasks = await run_in_threadpool(json.loads, raw)
        except (ValueError, RecursionError):
            tasks = None
        ids = [_task_ids(t) for t in tasks] if isinstance(tasks, list) else [(None, None)]
        for task_type, task_uuid in ids or [(None, None)]:
            await self._send_now(conn, _errors_frame(
                render.error_item(error, task_type=task_type, task_uuid=task_uuid)))

    async def _authenticate(self, task: dict[str, Any], conn: _Connection,
                            state: _State) -> ReelserveError | None:
        api_key = task.get("apiKey")
        client = client_address(self.settings, conn.websocket.scope)
        try:
            owner = authenticate(self.settings, api_key if isinstance(api_key, str) else None,
                                 client)
        except ReelserveError as exc:
            # Exactly this shape, and the socket stays open: the SDKs read the message from it
            # and decide themselves whether to retry.
            await self._send_now(conn, _errors_frame({**exc.to_dict(), "taskType": AUTH_TASK}))
            return exc
        if state.session is not None and state.session.connection is conn:
            self.sessions.replace(state.session, conn)
        session = self.sessions.attach(task.get("connectionSessionUUID"), owner, conn)
        state.session = session
        await self._send_now(conn, {"data": [{"taskType": AUTH_TASK,
                                              "connectionSessionUUID": session.uuid}]})
        session.flush()
        return None

    # --------------------------------------------------------------------- tasks

    async def _run_task(self, task: Any, session: Session, state: _State) -> None:
        try:
            reply = await self.handler.handle_one(task, session.owner, wait_sync=False)
            if reply.push and not reply.errors:
                # The handler accepted a sync task (it read deliveryMethod, in any case): no ACK
                # on WS for sync; push progress and results as they exist.
                for task_uuid in reply.push:
                    await self._watch(task_uuid, session)
                return
            session.deliver(await _dumps(_frame(reply)), reply.taken)
        except Exception:  # a bug must not take the socket down: answer with an error item
            log.exception("ws task failed")
            task_type, failed_uuid = _task_ids(task)
            error = ReelserveError("internalError", "the server failed while handling this task",
                                   kind=ErrorKind.INTERNAL)
            session.deliver(await _dumps(_errors_frame(
                render.error_item(error, task_type=task_type, task_uuid=failed_uuid))))
        finally:
            session.in_flight -= 1
            state.in_flight -= 1

    async def _watch(self, task_uuid: str, session: Session) -> None:
        """Push a sync task's progress, then each result once, then its error if it failed."""
        store, events = self.services.store, self.services.events
        job = await run_in_threadpool(store.get_by_task, session.owner, task_uuid)
        if job is None:  # created a moment ago: cannot happen unless the store was wiped
            raise RuntimeError(f"job for {task_uuid} vanished")
        deadline = time.monotonic() + self.settings.sync_timeout
        delivered = 0
        last_progress, last_push = -1, 0.0
        while True:
            latest = await events.wait_terminal(job.id, _WATCH_INTERVAL)
            if latest is None:
                raise RuntimeError(f"job {job.id} vanished")
            job = latest
            if session.expired:
                return  # nobody to push to: the results stay in the store for getResponse
            terminal = job.status.is_terminal
            if terminal or len(job.results) > delivered:
                reply_data, taken = await run_in_threadpool(self._take_results, job)
                delivered += len(reply_data)
                if reply_data:
                    session.deliver(await _dumps({"data": reply_data}), taken)
            if terminal:
                errors = render.job_errors(job)
                if errors:
                    session.deliver(await _dumps(_errors_frame(*errors)))
                return
            now = time.monotonic()
            progress = int(job.progress)
            if progress != last_progress and now - last_push >= _PROGRESS_INTERVAL:
                last_progress, last_push = progress, now
                session.deliver(await _dumps({"data": [render.processing_item(job)]}))
            if now > deadline:
                error = ReelserveError(
                    "timeoutProvider", f"the task did not finish within sync_timeout="
                    f"{self.settings.sync_timeout:g} s; it keeps running: poll it with getResponse",
                    kind=ErrorKind.TIMEOUT)
                session.deliver(await _dumps(_errors_frame(render.error_item(
                    error, task_type=render.VIDEO_TASK, task_uuid=task_uuid))))
                return

    def _take_results(self, job: Job) -> tuple[list[dict[str, Any]], Taken]:
        """Results not handed out yet, rendered like the REST sync reply, and what was taken
        (blocking: a thread)."""
        results = self.services.store.take_undelivered(job.id)
        taken = [(job.id, [r.index for r in results])] if results else []
        try:
            return [render.result_item(job, r, self.serving, with_status=False)
                    for r in results], taken
        except BaseException:  # never handed out
            self.handler.give_back(Reply(taken=taken))
            raise


class _State:
    """Per-socket mutable state."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.in_flight = 0  # tasks of this socket still running, whatever session they joined


def runware_ws_router(serving: Serving, handler: RunwareHandler) -> APIRouter:
    """The WebSocket routes ``/v1`` and ``/v1/`` (a POST route may share the path)."""
    router = APIRouter()
    endpoint = RunwareWebSocket(serving, handler)

    async def runware_socket(websocket: WebSocket) -> None:
        await endpoint.serve(websocket)

    router.add_api_websocket_route("/v1", runware_socket)
    router.add_api_websocket_route("/v1/", runware_socket)
    return router

"""The delivery dispatcher: drains the job store's outbox (webhook POSTs, upload PUTs and
status-change POSTs).

The outbox lives in the job store, so it is as durable as the jobs: the store adds a delivery row
in the same transaction that records a result (one webhook and, with ``uploadEndpoint``, one
upload per result), ends a job with an error (one webhook), or — for a job whose
``spec.delivery.status_url`` is set — changes its status (one ``status`` row per status the job
enters: queued, running, then its terminal status; the job store sends one job's status rows in
that order). The dispatcher claims due rows with a lease (several processes may run one; a row is
sent by one at a time), makes one attempt through the netguard and records the outcome:

* 2xx: ``delivered`` — never sent again;
* refused URL (``invalidURL``/``blockedAddress``) or a missing output: ``failed`` at once;
* anything else (timeout, connection error, non-2xx): retried with exponential backoff
  (``delivery_backoff_base`` x 2^(attempt-1), capped at ``delivery_backoff_max``, +/-10 % jitter)
  until ``delivery_retry_window`` seconds after the row was created, then ``failed``.

A restart resumes pending rows where they were (their schedule is stored). A crash after the
receiver answered 2xx but before the outcome was recorded sends once more: receivers that must
not see duplicates drop repeats of the ``webhook-id`` (Standard Webhooks; see
:mod:`reelserve.delivery.webhook`).

The dispatcher knows no wire dialect: the API layer registers, per ``Job.origin``, a renderer
that turns a job and a result (or ``None`` for the job's failure) into the webhook body, and a
status renderer that turns a job and a :class:`StatusEvent` into the status POST body.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from reelserve.delivery import upload, webhook
from reelserve.delivery.webhook import Attempt
from reelserve.media import netguard
from reelserve.tasks import JobStatus

if TYPE_CHECKING:
    from reelserve.delivery.storage import ArtifactStore
    from reelserve.jobs.store import DeliveryOutbox, DeliveryRecord
    from reelserve.settings import Settings
    from reelserve.tasks import Delivery, Job, Result

log = logging.getLogger(__name__)

__all__ = [
    "Dispatcher",
    "PayloadRenderer",
    "StatusEvent",
    "StatusRenderer",
    "check_targets",
    "describe",
]

PayloadRenderer = Callable[["Job", "Result | None"], "dict[str, Any] | None"]
"""``(job, result)`` -> webhook JSON body; ``result`` is None for the job's failure.

Return None to send nothing for that event (the row is recorded as ``skipped``). Called from a
dispatcher thread: it may block (read files for base64 output)."""


@dataclass(frozen=True)
class StatusEvent:
    """A status change of a job, as the outbox row recorded it.

    ``status`` is the status the job entered and ``at`` when (unix seconds). The job handed to a
    status renderer beside it is the job *now*, which may have moved on (a retry of "running"
    can go out after the job finished): render the job as it was at this event, not as it is.
    """

    status: JobStatus
    at: float


StatusRenderer = Callable[["Job", StatusEvent], "dict[str, Any] | None"]
"""``(job, event)`` -> status POST JSON body; None to send nothing (recorded as ``skipped``).
Called from a dispatcher thread."""

WEBHOOK = "webhook"
UPLOAD = "upload"
STATUS = "status"
PENDING, DELIVERED, FAILED, SKIPPED = "pending", "delivered", "failed", "skipped"


def check_targets(
    delivery: Delivery, policy: netguard.OutboundPolicy, *, status_parameter: str = "statusURL"
) -> None:
    """Refuse a task's ``webhookURL``/``uploadEndpoint``/status URL at submit time when the URL
    itself is refused (bad scheme, credentials, internal IP literal). Names are resolved only
    when the delivery is sent (and refused then if they point inside); no DNS happens here.

    ``status_parameter`` is the wire field the dialect took ``delivery.status_url`` from (Kling:
    ``callback_url``), so the refusal names what the client sent."""
    if delivery.webhook_url:
        netguard.check_url(delivery.webhook_url, policy=policy, parameter="webhookURL")
    if delivery.upload_endpoint:
        netguard.check_url(delivery.upload_endpoint, policy=policy, parameter="uploadEndpoint")
    if delivery.status_url:
        netguard.check_url(delivery.status_url, policy=policy, parameter=status_parameter)


def describe(records: list[DeliveryRecord]) -> list[dict[str, Any]]:
    """Deliveries of a job as wire-neutral dicts (``type`` is ``webhook``, ``upload`` or
    ``status``; keys snake_case); a dialect renders them in its own spelling (Runware's
    ``getTaskDetails``: :func:`reelserve.api.runware.render.delivery_item`)."""
    out: list[dict[str, Any]] = []
    for rec in records:
        item: dict[str, Any] = {
            "type": rec.kind,
            "url": netguard.redact(rec.url),
            "result_index": rec.result_index,
            "state": rec.state,
            "attempts": rec.attempts,
        }
        if rec.kind == STATUS:
            item["event"] = rec.event
        if rec.state == PENDING and rec.attempts:
            item["next_attempt_at"] = rec.next_at
        if rec.last_status is not None:
            item["last_status"] = rec.last_status
        if rec.last_error:
            item["last_error"] = rec.last_error
        item["history"] = list(rec.history)
        out.append(item)
    return out


_R = TypeVar("_R")


def _by_origin(renderers: dict[str, _R], origin: str) -> _R | None:
    """The renderer of ``origin``, else of its family (``kling.text2video`` -> ``kling``)."""
    found = renderers.get(origin)
    return found if found is not None else renderers.get(origin.partition(".")[0])


class Dispatcher:
    """Sends the outbox. ``start()`` runs it in background threads; ``run_once()`` is one pass.

    Args:
        settings: delivery settings (``delivery_*``, ``webhook_secret``, ``outbound_*``).
        store: the job store holding jobs and the outbox.
        artifacts: where output files are read for uploads.
        policy: the outbound policy (default: from settings, with ``delivery_timeout`` as the
            read timeout).
        clock: wall clock (seconds); a seam for tests.
    """

    def __init__(
        self,
        settings: Settings,
        store: DeliveryOutbox,
        artifacts: ArtifactStore,
        *,
        policy: netguard.OutboundPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        base = policy or netguard.OutboundPolicy.from_settings(settings)
        self.policy = (
            dataclasses.replace(base, read_timeout=settings.delivery_timeout)
            if policy is None
            else base
        )
        self.clock = clock
        # Resolved once, so the first start generates and keeps the secret (signed by default).
        self.secret = webhook.resolve_secret(settings)
        """The ``whsec_...`` secret webhooks and status callbacks are signed with."""
        self.worker_id = f"dispatcher-{id(self):x}-{random.getrandbits(32):08x}"
        self._renderers: dict[str, PayloadRenderer] = {}
        self._status_renderers: dict[str, StatusRenderer] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # ------------------------------------------------------------------ configuration

    def register_renderer(self, origin: str, renderer: PayloadRenderer) -> None:
        """Use ``renderer`` for webhook bodies of jobs whose ``origin`` is ``origin`` (or, for a
        family such as ``kling``, starts with ``origin + "."``). ``create_app`` hands each
        declared dialect's renderers over; nothing registers itself on import."""
        self._renderers[origin] = renderer

    def register_status_renderer(self, origin: str, renderer: StatusRenderer) -> None:
        """Use ``renderer`` for status-change POST bodies of jobs whose ``origin`` is ``origin``."""
        self._status_renderers[origin] = renderer

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts (exponential, capped, jittered)."""
        s = self.settings
        delay = min(s.delivery_backoff_max, s.delivery_backoff_base * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.9, 1.1)

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        """Run in the background until :meth:`stop` (woken by store changes, else polling)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, self.settings.delivery_concurrency), thread_name_prefix="delivery"
        )
        self._unsubscribe = self.store.subscribe(lambda _job_id: self._wake.set())
        self._thread = threading.Thread(target=self._loop, name="delivery-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming; wait up to ``timeout`` for attempts in flight (their leases expire
        otherwise and another dispatcher, or the next start, retries them)."""
        self._stop.set()
        self._wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _loop(self) -> None:
        poll = self.settings.delivery_poll_interval
        while not self._stop.is_set():
            try:
                n = self.run_once(pool=self._pool)
            except Exception:  # a busy database must not kill delivery; try again next tick
                log.exception("delivery dispatcher pass failed")
                n = 0
            if n == 0:
                self._wake.wait(poll)
                self._wake.clear()

    def run_once(self, *, pool: ThreadPoolExecutor | None = None) -> int:
        """Claim due deliveries and attempt each once; returns how many were attempted."""
        limit = max(1, self.settings.delivery_concurrency) * 2
        records = self.store.claim_deliveries(self.worker_id, self._lease_seconds(), limit)
        if not records:
            return 0
        if pool is None:
            for rec in records:
                self._attempt(rec)
        else:
            for fut in [pool.submit(self._attempt, rec) for rec in records]:
                fut.result()
        return len(records)

    def _lease_seconds(self) -> float:
        # Long enough for one full attempt (connect + body + read), so no second sender starts.
        p = self.policy
        return p.connect_timeout + p.total_timeout + 5.0

    # ------------------------------------------------------------------ one attempt

    def _attempt(self, rec: DeliveryRecord) -> None:
        try:
            outcome, skip = self._send(rec)
        except Exception as exc:  # a renderer bug: record it, retry on the normal schedule
            log.exception("delivery %s failed before sending", rec.id)
            outcome, skip = (
                Attempt(False, None, f"internalError: {type(exc).__name__}: {exc}", 0),
                False,
            )
        now = self.clock()
        entry: dict[str, Any] = {
            "attempt": rec.attempts + 1,
            "at": round(now, 3),
            "status": outcome.status,
            "ms": outcome.elapsed_ms,
        }
        if outcome.error:
            entry["error"] = outcome.error[:300]
        next_at: float | None = None
        if skip:
            state = SKIPPED
        elif outcome.ok:
            state = DELIVERED
        elif outcome.permanent:
            state = FAILED
        else:
            next_at = now + self.backoff(rec.attempts + 1)
            window_end = rec.created_at + self.settings.delivery_retry_window
            state = PENDING if next_at <= window_end else FAILED
        if state == FAILED:
            log.warning(
                "delivery %s to %s gave up: %s", rec.id, netguard.redact(rec.url), outcome.error
            )
        self.store.record_delivery(rec.id, self.worker_id, entry, state=state, next_at=next_at)

    def _send(self, rec: DeliveryRecord) -> tuple[Attempt, bool]:
        job = self.store.get(rec.job_id)
        if job is None:
            return Attempt(False, None, "the task no longer exists", 0, permanent=True), False
        result = None
        if rec.result_index is not None:
            result = next((r for r in job.results if r.index == rec.result_index), None)
            if result is None:
                return Attempt(False, None, f"result {rec.result_index} is missing", 0, True), False
        if rec.kind == UPLOAD:
            assert result is not None
            try:
                data = self.artifacts.read_bytes(result.artifact_key)
            except KeyError:
                return Attempt(False, None, "the output file is gone (expired?)", 0, True), False
            return upload.put(
                rec.url, data, content_type=result.content_type, policy=self.policy
            ), False
        if rec.kind == STATUS:
            status_renderer = _by_origin(self._status_renderers, job.origin)
            if status_renderer is None or rec.event is None:
                return Attempt(
                    False, None, f"no status renderer for origin {job.origin!r}", 0, True
                ), False
            payload = status_renderer(job, StatusEvent(JobStatus(rec.event), rec.created_at))
        else:
            renderer = _by_origin(self._renderers, job.origin)
            if renderer is None:
                return Attempt(
                    False, None, f"no webhook renderer for origin {job.origin!r}", 0, True
                ), False
            payload = renderer(job, result)
        if payload is None:
            return Attempt(True, None, None, 0), True
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        return webhook.post(
            rec.url,
            body,
            policy=self.policy,
            secret=self.secret,
            delivery_id=rec.id,
            attempt=rec.attempts + 1,
        ), False

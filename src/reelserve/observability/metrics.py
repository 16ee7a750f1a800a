"""Prometheus metrics of the whole deployment, read from the job store at scrape time.

Why from the store: a deployment is several processes (the API server, ``reelserve worker``
processes, on several machines with PostgreSQL), and each of them sees only its own work. The
job store sees all of it, so a :class:`StoreCollector` asks the store at each scrape
(:meth:`~reelserve.jobs.store.JobStore.stats` and :meth:`~reelserve.jobs.store.JobStore.
durations`) and every server answers ``/metrics`` with the same, deployment-wide numbers. No
process keeps counters in memory, so nothing is lost when one restarts and no
``PROMETHEUS_MULTIPROC_DIR`` is needed.

Counters and histograms are kept by the store itself (its ``counters`` and ``duration_counts``
tables): the write that ends a job, a duration or a delivery attempt counts it in the same
transaction, whichever process makes it (a worker's first claim: queue wait; its finish: run; a
new result: its ``render_seconds`` and ``encode_seconds``, measured by the worker; a delivered
outbox row: delivery). So they are deployment-wide, survive restarts, are never counted twice,
purging old jobs (``REELSERVE_JOB_RETENTION_DAYS``) leaves them, and a scrape reads a few rows
plus index ranges over the active jobs and pending deliveries, never the finished jobs. This was
chosen over prometheus-client's multiprocess mode, which adds up only the processes of one
machine. Histogram buckets are fixed (:data:`~reelserve.jobs.store.DURATION_BUCKETS`).

Metrics (all prefixed ``reelserve_``):

==============================================  =====================================================
``jobs{state}``                                 queued and running jobs (gauge)
``queue_depth{model}``                          queued jobs per model (gauge)
``queue_oldest_age_seconds{model}``             age of the oldest queued job per model (gauge)
``workers_busy``                                workers holding a live lease on a job (gauge)
``deliveries_pending{kind}``                    outbox rows still to send (gauge)
``jobs_finished_total{outcome}``                succeeded, failed, cancelled jobs (counter)
``jobs_failed_total{code}``                     failed jobs by error code (counter)
``results_total``                               videos produced (counter)
``deliveries_total{kind,state}``                outbox rows that ended (counter)
``delivery_attempts_total{kind}``               attempts made (counter)
``delivery_failed_attempts_total{kind}``        attempts that did not deliver (counter)
``queue_wait_seconds``, ``run_seconds``,
``render_seconds``, ``encode_seconds``,
``delivery_seconds``                            histograms (see ``DURATIONS`` in jobs/store.py)
==============================================  =====================================================

Process-local facts (loaded models, GPU memory) can be added with ``extra`` collectors.
:func:`render` gives the exposition text; the API mounts it at ``GET /metrics``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from reelserve.jobs.store import DURATION_BUCKETS, DURATIONS
from reelserve.tasks import JobStatus

if TYPE_CHECKING:
    from reelserve.jobs.store import StoreMetrics

__all__ = ["BUCKETS", "CONTENT_TYPE", "StoreCollector", "render"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of :func:`render`'s text (Prometheus text format 0.0.4)."""

BUCKETS = DURATION_BUCKETS
"""Histogram upper bounds in seconds (the store's)."""

PREFIX = "reelserve"


class StoreCollector(Collector):
    """Collects the deployment's numbers from ``store`` at each scrape.

    Args:
        store: the job store every process of the deployment shares.
    """

    def __init__(self, store: StoreMetrics) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        """The metric families of one scrape (store reads happen here)."""
        stats = self.store.stats()

        jobs = GaugeMetricFamily(f"{PREFIX}_jobs", "Jobs queued or running now",
                                 labels=["state"])
        for state in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
            jobs.add_metric([state], stats.active.get(state, 0))  # 0 too: no vanishing series
        yield jobs
        depth = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Queued jobs per model",
                                  labels=["model"])
        age = GaugeMetricFamily(f"{PREFIX}_queue_oldest_age_seconds",
                                "Age of the oldest queued job per model", labels=["model"])
        for queue in stats.queues:
            depth.add_metric([queue.model], queue.depth)
            age.add_metric([queue.model], max(0.0, stats.now - queue.oldest_created_at))
        yield depth
        yield age
        yield GaugeMetricFamily(f"{PREFIX}_workers_busy",
                                "Workers holding a live lease on a running job",
                                value=stats.busy_workers)
        pending = GaugeMetricFamily(f"{PREFIX}_deliveries_pending",
                                    "Outbox rows (webhook, upload, status) still to send",
                                    labels=["kind"])
        for kind, count in sorted(stats.pending_deliveries.items()):
            pending.add_metric([kind], count)
        yield pending

        finished = CounterMetricFamily(f"{PREFIX}_jobs_finished", "Jobs that ended, by outcome",
                                       labels=["outcome"])
        for status in JobStatus:
            if status.is_terminal:
                finished.add_metric([status.value], stats.finished.get(status.value, 0))
        yield finished
        failed = CounterMetricFamily(f"{PREFIX}_jobs_failed", "Failed jobs by error code",
                                     labels=["code"])
        for code, count in sorted(stats.failures.items()):
            failed.add_metric([code], count)
        yield failed
        yield CounterMetricFamily(f"{PREFIX}_results", "Videos produced (results recorded)",
                                  value=stats.results)
        ended = CounterMetricFamily(f"{PREFIX}_deliveries",
                                    "Outbox rows that ended, by kind and state (delivered, "
                                    "failed, skipped)", labels=["kind", "state"])
        for (kind, state), count in sorted(stats.deliveries.items()):
            ended.add_metric([kind, state], count)
        yield ended
        attempts = CounterMetricFamily(f"{PREFIX}_delivery_attempts",
                                       "Delivery attempts made, by kind", labels=["kind"])
        misses = CounterMetricFamily(f"{PREFIX}_delivery_failed_attempts",
                                     "Delivery attempts that did not deliver, by kind",
                                     labels=["kind"])
        for kind in sorted(stats.delivery_attempts):
            attempts.add_metric([kind], stats.delivery_attempts[kind])
            misses.add_metric([kind], stats.delivery_failed_attempts.get(kind, 0))
        yield attempts
        yield misses

        bounds = [_bound(b) for b in BUCKETS] + ["+Inf"]
        for name, histogram in self.store.durations().items():
            family = HistogramMetricFamily(
                f"{PREFIX}_{name}_seconds", f"Duration {DURATIONS[name]}")
            family.add_metric(
                [], list(zip(bounds, [*histogram.buckets, histogram.count], strict=True)),
                sum_value=histogram.total)
            yield family


def _bound(value: float) -> str:
    """A bucket's ``le`` label as Prometheus clients write it (``1.0``, ``0.25``)."""
    return repr(float(value))


def render(store: StoreMetrics, *, extra: Iterable[Collector] = ()) -> bytes:
    """The Prometheus text exposition of the deployment (``Content-Type``:
    :data:`CONTENT_TYPE`). Blocking (store reads): call it from a thread, not the event loop.

    ``extra`` collectors add process-local families (loaded models, GPU memory).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)

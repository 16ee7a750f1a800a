"""Observability: Prometheus metrics read from the job store (:mod:`.metrics`)."""

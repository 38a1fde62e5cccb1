"""Prometheus: the same metrics as counters, histograms and a gauge, served on ``/metrics``.

Needs the ``prometheus`` extra (``pip install 'cloudq[prometheus]'``); imported only when
``CLOUDQ_METRICS=prometheus``. ``cloudq worker APP --metrics-port PORT`` serves the app's registry
over HTTP (prometheus_client's own server, on a daemon thread); a port that is taken is a one-line
error at start-up (exit 2), before any message is received.

Names are the table's (:data:`cloudq.observability.metrics.METRICS`) under the namespace, with
Prometheus's suffixes: ``cloudq_jobs_succeeded_total``, ``cloudq_job_duration_ms_bucket``... Each app
gets a registry of its own, so two apps in one process (tests) never clash.
"""

from __future__ import annotations

import re
from typing import Any

from cloudq.errors import ConfigurationError
from cloudq.observability.metrics import METRICS, Metric

try:
    import prometheus_client
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ConfigurationError("CLOUDQ_METRICS=prometheus needs prometheus-client: pip install 'cloudq[prometheus]'") from exc

__all__ = ["PrometheusSink"]

MS_BUCKETS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000, 900_000)
COUNT_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")


class PrometheusSink:
    """One prometheus_client collector per metric, in a registry of the app's own."""

    def __init__(self, namespace: str) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        prefix = _NOT_NAME.sub("_", namespace)
        self._collectors = {metric.name: _collector(metric, prefix, self.registry) for metric in METRICS.values()}
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._server: Any = None
        self.port: int | None = None
        """The port ``/metrics`` is served on (``serve(0)`` picks a free one)."""

    def record(self, metric: Metric, labels: tuple[str, ...], value: float) -> None:
        child = self._children.get((metric.name, labels))
        if child is None:
            child = self._children[(metric.name, labels)] = self._collectors[metric.name].labels(*labels)
        if metric.kind == "counter":
            child.inc(value)
        elif metric.kind == "gauge":
            child.set(value)
        else:
            child.observe(value)

    def text(self) -> str:
        """What ``/metrics`` answers right now."""
        return prometheus_client.generate_latest(self.registry).decode("utf-8")

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``port`` from a daemon thread; a port in use is a ConfigurationError."""
        try:
            served = prometheus_client.start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise ConfigurationError(f"--metrics-port {port}: cannot listen on {addr}:{port}: {exc.strerror or exc}") from None
        self._server = served[0] if isinstance(served, tuple) else None
        self.port = self._server.server_port if self._server is not None else port

    def flush(self) -> None:
        """Nothing to write: Prometheus scrapes."""

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _collector(metric: Metric, prefix: str, registry: Any) -> Any:
    common = {"name": metric.name, "documentation": metric.help, "labelnames": metric.dimensions, "namespace": prefix, "registry": registry}
    if metric.kind == "counter":
        return prometheus_client.Counter(**common)
    if metric.kind == "gauge":
        return prometheus_client.Gauge(**common)
    return prometheus_client.Histogram(**common, buckets=MS_BUCKETS if metric.unit == "Milliseconds" else COUNT_BUCKETS)

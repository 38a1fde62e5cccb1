"""Metrics and traces, installed by :class:`cloudq.App` from its settings as middleware.

* ``CLOUDQ_METRICS``: ``none`` (default: nothing is installed, nothing is imported), ``emf``
  (:mod:`cloudq.observability.emf`) or ``prometheus`` (:mod:`cloudq.observability.prometheus`); the
  metrics are :data:`cloudq.observability.metrics.METRICS`.
* ``CLOUDQ_TRACING``: ``auto`` (default: on when a global OpenTelemetry tracer provider is set when the
  App is built, as ``opentelemetry-instrument`` and the ADOT Lambda layer do), ``otel`` or ``none``; see
  :mod:`cloudq.observability.tracing`.

Both hook into a job's life through the public middleware seam only, installed outermost (tracing,
then metrics, then the app's own middleware), so that the worker, the Lambda handler and
``lambda-local`` all report through the one consumer core. The worker adds the per-receive records.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudq.middleware import Middleware
    from cloudq.observability.metrics import Metrics

__all__ = ["Observability", "tracing_wanted", "wanted"]


def tracing_wanted(settings: Any) -> bool:
    """``otel``; or ``auto`` with a global OpenTelemetry tracer provider set (opentelemetry-instrument, the
    ADOT layer or the app's own set-up did). Looked for only when opentelemetry is imported already."""
    mode = getattr(settings, "tracing", "none")
    if mode != "auto":
        return mode == "otel"
    if "opentelemetry.trace" not in sys.modules:
        return False
    from opentelemetry import trace

    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def wanted(settings: Any) -> bool:
    """Whether the settings ask for anything: checked by the App before importing this package's modules."""
    return getattr(settings, "metrics", "none") != "none" or tracing_wanted(settings)


class Observability:
    """What one App installed: its :class:`Metrics` (or None) and the middleware, to take out again."""

    def __init__(self, settings: Any, app_name: str, is_task: Callable[[str], bool]) -> None:
        self.metrics: Metrics | None = _metrics(settings, app_name, is_task)
        self.middleware: list[Middleware] = []
        if tracing_wanted(settings):
            from cloudq.observability.tracing import TracingMiddleware

            self.middleware.append(TracingMiddleware())
        if self.metrics is not None:
            from cloudq.observability.metrics import MetricsMiddleware

            self.middleware.append(MetricsMiddleware(self.metrics))

    @property
    def empty(self) -> bool:
        return self.metrics is None and not self.middleware

    def close(self) -> None:
        """Flush what is left (EMF) and stop serving (Prometheus)."""
        if self.metrics is not None:
            self.metrics.close()


def _metrics(settings: Any, app_name: str, is_task: Callable[[str], bool]) -> Metrics | None:
    kind = getattr(settings, "metrics", "none")
    if kind == "none":
        return None
    from cloudq.observability.metrics import Metrics

    namespace = settings.metrics_namespace
    if kind == "emf":
        from cloudq.observability.emf import EmfSink

        return Metrics(EmfSink(namespace), app_name, is_task, interval_s=settings.metrics_interval_s)
    from cloudq.observability.prometheus import PrometheusSink

    return Metrics(PrometheusSink(namespace), app_name, is_task)

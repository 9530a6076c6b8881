"""A batch span processor with a bounded queue that drops, and counts, instead of blocking."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger(__name__)

__all__ = ["BoundedBatchSpanProcessor"]


class BoundedBatchSpanProcessor(SpanProcessor):
    """Exports ended spans in batches from a worker thread.

    The queue is bounded: when it is full the new span is dropped and counted, so the
    request path never blocks on a slow collector and memory never grows without bound.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        schedule_delay: float = 5.0,
        export_timeout: float = 30.0,
        on_dropped: Callable[[], None] | None = None,
        on_export_failed: Callable[[int], None] | None = None,
    ) -> None:
        self._exporter = exporter
        self._max_queue = max_queue_size
        self._batch_size = min(max_export_batch_size, max_queue_size)
        self._delay = schedule_delay
        self._export_timeout = export_timeout
        self._on_dropped = on_dropped
        self._on_export_failed = on_export_failed
        self._queue: deque[ReadableSpan] = deque()
        self._cond = threading.Condition()
        self._flushes: list[threading.Event] = []
        self._shutdown = False
        self.dropped = 0  # spans refused because the queue was full (or after shutdown)
        self.export_failed = 0  # spans handed to the exporter that did not arrive
        self._worker = self._start_worker()
        if hasattr(os, "register_at_fork"):  # a forked worker process gets no threads: start ours again
            after_fork = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: _call_if_alive(after_fork))

    def _start_worker(self) -> threading.Thread:
        worker = threading.Thread(target=self._run, name="llmobs-otel-spans", daemon=True)
        worker.start()
        return worker

    def _after_fork(self) -> None:
        self._cond = threading.Condition()
        self._queue.clear()  # the parent exports these
        self._flushes = []
        self._worker = self._start_worker()

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a sampled span, or drop and count it when the queue is full."""
        if span.context is None or not span.context.trace_flags.sampled:
            return
        with self._cond:
            dropped = self._shutdown or len(self._queue) >= self._max_queue
            if dropped:
                self.dropped += 1
            else:
                self._queue.append(span)
                if len(self._queue) == self._batch_size:
                    self._cond.notify()
        if dropped and self._on_dropped is not None:
            _call_safely(self._on_dropped)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued so far; False if that took longer than the timeout."""
        done = threading.Event()
        with self._cond:
            if self._shutdown:
                return not self._queue
            self._flushes.append(done)
            self._cond.notify()
        return done.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Export what is queued (within the export timeout), then stop the worker and exporter."""
        with self._cond:
            if self._shutdown:
                return
            self._shutdown = True
            self._cond.notify()
        self._worker.join(self._export_timeout)
        self._exporter.shutdown()  # also aborts an export still retrying
        self._worker.join(1.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not (self._shutdown or self._flushes or len(self._queue) >= self._batch_size):
                    self._cond.wait(self._delay)
                flushes, self._flushes = self._flushes, []
                stop = self._shutdown
                pending = len(self._queue)
            self._export(pending)
            for done in flushes:
                done.set()
            if stop:
                return

    def _export(self, count: int) -> None:
        """Export the `count` oldest spans in batches; spans queued meanwhile wait for the next round."""
        while count > 0:
            with self._cond:
                batch = [self._queue.popleft() for _ in range(min(count, self._batch_size, len(self._queue)))]
            if not batch:
                return
            count -= len(batch)
            token = otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                result = self._exporter.export(batch)
            except Exception:
                log.exception("span export raised")
                result = SpanExportResult.FAILURE
            finally:
                otel_context.detach(token)
            if result is not SpanExportResult.SUCCESS:
                self.export_failed += len(batch)
                if self._on_export_failed is not None:
                    _call_safely(self._on_export_failed, len(batch))


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


def _call_safely(callback: Callable[..., None], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:
        log.debug("otel drop callback failed", exc_info=True)

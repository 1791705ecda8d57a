"""Langfuse export in a child process, so tracing never competes for the gateway's GIL.

Turning a record into an OpenTelemetry span, encoding OTLP protobuf and
gzipping it costs a few hundred microseconds of CPU per call; in the
gateway's process that time is taken from the event loop (one GIL). The
:class:`ProcessTracer` keeps the :class:`~gateway.tracing.Tracer` interface
but only queues records on the request path: a sender thread pickles them in
batches (woken every 64 records, else every 0.2 s) and writes them to a
pipe, and a spawned child process runs the ordinary
:class:`~gateway.tracing.Tracer` (same SDK pieces, same attributes,
same bounded queues). If the child dies, records are dropped and counted,
never raised; the request path is not affected.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import threading
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Final

from core.config import LangfuseSettings
from gateway.tracing import GenerationRecord, Tracer

logger = logging.getLogger(__name__)

_FLUSH: Final = "flush"
_STOP: Final = "stop"
_BATCH: Final = 256
# Records queued before the sender is woken; below that it ships every _TICK_S. Waking it per
# record would cost a thread switch (and a contended GIL) per request.
_WAKE_AT: Final = 64
_TICK_S: Final = 0.2


def _child_main(settings: LangfuseSettings, environment: str | None, conn: Connection) -> None:
    """The child process: receive batches, hand them to an in-process Tracer."""
    tracer = Tracer(settings, environment=environment)
    try:
        while True:
            try:
                message = pickle.loads(conn.recv_bytes())  # noqa: S301 - an anonymous pipe from our own parent
            except (EOFError, OSError):
                return
            if message == _STOP:
                return
            if isinstance(message, tuple) and message[0] == _FLUSH:
                ok = tracer.flush(float(message[1]))
                conn.send_bytes(pickle.dumps(("flushed", ok, tracer.stats)))
                continue
            for record in message:
                tracer.record(record)
    finally:
        tracer.shutdown()


class ProcessTracer:
    """A :class:`~gateway.tracing.Tracer` whose export runs in a child process.

    Args:
        settings: Langfuse settings; inactive settings make this a no-op
            (no thread, no process).
        environment: Langfuse environment.
        on_drop: Called when a record is dropped (queue full or child gone).
        max_queue_size: Records waiting to be shipped before drops start.
    """

    def __init__(
        self,
        settings: LangfuseSettings,
        *,
        environment: str | None = None,
        on_drop: Callable[[], None] | None = None,
        max_queue_size: int | None = None,
    ) -> None:
        self._active = settings.active
        self._on_drop = on_drop
        self._max = max_queue_size or settings.max_queue_size
        self._queue: deque[GenerationRecord | tuple[str, float, threading.Event]] = deque()
        self._wake = threading.Event()
        self._closed = False
        self.dropped = 0
        self.last_child_stats: Any = None
        self._conn: Connection | None = None
        self._process: Any = None
        self._thread: threading.Thread | None = None
        if not self._active:
            return
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        self._conn = parent
        self._process = context.Process(
            target=_child_main, args=(settings, environment, child), name="gateway-tracing", daemon=True
        )
        self._process.start()
        child.close()
        self._thread = threading.Thread(target=self._send_loop, name="gateway-tracing-sender", daemon=True)
        self._thread.start()

    @property
    def enabled(self) -> bool:
        """Whether records are exported."""
        return self._active and not self._closed

    @property
    def pending(self) -> int:
        """Records not yet shipped to the child."""
        return len(self._queue)

    def record(self, rec: GenerationRecord) -> None:
        """Queue one record (O(1), never raises, drops when the queue is full)."""
        if not self._active or self._closed:
            return
        if len(self._queue) >= self._max:
            self._drop()
            return
        self._queue.append(rec)
        if len(self._queue) == _WAKE_AT:
            self._wake.set()

    def _drop(self, count: int = 1) -> None:
        self.dropped += count
        if self._on_drop is not None:
            for _ in range(count):
                try:
                    self._on_drop()
                except Exception:  # a metrics hook must not break tracing
                    logger.debug("tracing.on_drop_failed", exc_info=True)

    def _send_loop(self) -> None:
        assert self._conn is not None
        conn = self._conn
        while True:
            self._wake.wait(_TICK_S)
            self._wake.clear()
            while self._queue:
                batch: list[GenerationRecord] = []
                control: tuple[str, float, threading.Event] | None = None
                while self._queue and len(batch) < _BATCH:
                    item = self._queue.popleft()
                    if isinstance(item, tuple):
                        control = item
                        break
                    batch.append(item)
                try:
                    if batch:
                        conn.send_bytes(pickle.dumps(batch, pickle.HIGHEST_PROTOCOL))
                    if control is not None:
                        kind, timeout_s, done = control
                        if kind == _STOP:
                            conn.send_bytes(pickle.dumps(_STOP))
                            done.set()
                            return
                        conn.send_bytes(pickle.dumps((_FLUSH, timeout_s)))
                        if conn.poll(timeout_s + 1.0):
                            self.last_child_stats = pickle.loads(conn.recv_bytes())  # noqa: S301 - our own child
                        done.set()
                except (OSError, ValueError, pickle.PicklingError) as exc:
                    self._drop(len(batch))
                    logger.warning("tracing.child_unreachable", extra={"error": type(exc).__name__})
                    if control is not None:
                        control[2].set()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Ship what is queued and wait until the child exported it (bounded)."""
        if not self._active or self._closed:
            return True
        done = threading.Event()
        self._queue.append((_FLUSH, timeout_s, done))
        self._wake.set()
        return done.wait(timeout_s + 2.0) and bool(self.last_child_stats and self.last_child_stats[1])

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush, stop the child and the sender thread (bounded)."""
        if not self._active or self._closed:
            self._closed = True
            return
        self.flush(timeout_s)
        done = threading.Event()
        self._queue.append((_STOP, timeout_s, done))
        self._wake.set()
        done.wait(timeout_s)
        self._closed = True
        if self._process is not None:
            self._process.join(timeout_s)
            if self._process.is_alive():
                self._process.kill()
        if self._conn is not None:
            self._conn.close()

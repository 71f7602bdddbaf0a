"""Batched response lookups for the replica set's responder: one round trip for many requests.

On PostgreSQL a lookup is a network round trip; made one per request inside the event loop it
also stalled every other request of the worker meanwhile. Here concurrent requests of one
worker queue their keys; while one batch is at the database (in a thread, so the loop keeps
accepting and parsing), the next fills up, and goes as one query. Nothing is cached: every
answer comes from the database as it is at that moment, so no purge or revocation can be
outrun by this layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from certstatus.ocsp.certid import HashAlgorithm
from certstatus.store.base import StoredResponse

Key = tuple[int, int, HashAlgorithm]
Pending = tuple[Key, "asyncio.Future[StoredResponse | None]"]


class BatchReader(Protocol):
    """Answers a batch under every rule, blocking (on the lookup thread): one answer per key,
    in order; an exception in a key's place refuses that key alone."""

    def responses(self, keys: Sequence[Key]) -> Sequence[StoredResponse | Exception | None]: ...


class LoopReader(Protocol):
    """An optional first step from the event loop itself (store/pgloop.py): its hits are
    final; None or a miss sends the key on to the thread."""

    async def read_on_loop(self, keys: list[Key]) -> list[StoredResponse | None] | None: ...

    def open_loop_connection(self) -> None:
        """Called from the thread after each batch: open what read_on_loop needs."""


class BatchedLookup:
    """At most `in_flight` queries at a time per worker, each carrying every key that arrived
    while the previous ones ran (up to max_batch).

    The queries run on this lookup's own threads, fed through a queue and answering with one
    call_soon_threadsafe per batch: a ThreadPoolExecutor hop (its futures, locks and chained
    callbacks) measured 4 us per lookup more at a batch of 32."""

    def __init__(
        self,
        reader: BatchReader,
        on_loop: LoopReader | None = None,
        max_batch: int = 128,
        in_flight: int = 1,
    ) -> None:
        self.reader = reader
        self.max_batch = max_batch
        self.in_flight = in_flight
        self._queue: list[Pending] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self.batches = 0
        self.looked_up = 0
        self.on_loop = 0  # lookups answered from the event loop's own connection
        self._read_on_loop = None if on_loop is None else on_loop.read_on_loop
        self._open_loop_connection = None if on_loop is None else on_loop.open_loop_connection

    async def response(
        self, issuer_id: int, serial: int, algorithm: HashAlgorithm
    ) -> StoredResponse | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StoredResponse | None] = loop.create_future()
        self._queue.append(((issuer_id, serial, algorithm), future))
        if self._running < self.in_flight:
            self._running += 1
            task = loop.create_task(self._drain())
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._threads:
            self._start_threads()
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                self.batches += 1
                self.looked_up += len(batch)
                unsettled = await self._on_loop(batch)
                if not unsettled:
                    continue
                finished: asyncio.Future[None] = loop.create_future()
                self._jobs.put(_Job(unsettled, loop, finished))
                await finished
        finally:
            self._running -= 1

    async def _on_loop(self, batch: list[Pending]) -> list[Pending]:
        """Ask the loop's first step and answer what it holds; what it cannot settle goes to
        the thread, where every rule applies."""
        if self._read_on_loop is None:
            return batch
        found = await self._read_on_loop([key for key, _ in batch])
        if found is None:
            return batch
        unsettled = []
        for (key, future), response in zip(batch, found, strict=True):
            if response is None:
                unsettled.append((key, future))
            elif not future.done():
                future.set_result(response)
        self.on_loop += len(batch) - len(unsettled)
        return unsettled

    def _start_threads(self) -> None:
        for n in range(self.in_flight):
            thread = threading.Thread(target=self._work, name=f"lookup-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            keys = [key for key, _ in job.batch]
            results: Sequence[object]
            try:
                results = self.reader.responses(keys)
                if len(results) != len(keys):
                    raise RuntimeError(f"{len(results)} answers for {len(keys)} lookups")
            except Exception as exc:  # StoreError and anything else: each request decides
                results = [exc] * len(keys)  # never leave a request waiting forever
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                job.loop.call_soon_threadsafe(_deliver, job, results)
            if self._open_loop_connection is not None:
                self._open_loop_connection()

    def close(self) -> None:
        """Stop the lookup threads once they finish what they hold."""
        for _ in self._threads:
            self._jobs.put(None)
        self._threads = []


@dataclass(frozen=True, slots=True)
class _Job:
    batch: list[Pending]
    loop: asyncio.AbstractEventLoop
    finished: asyncio.Future[None]


def _deliver(job: _Job, results: Sequence[object]) -> None:
    """On the event loop: hand each request its answer, then let the next batch go."""
    for (_, future), result in zip(job.batch, results, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    if not job.finished.done():
        job.finished.set_result(None)

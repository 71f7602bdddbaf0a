"""The batched response lookup run on the responder's event loop, on one dedicated connection.

The lookup thread (responder/lookup.py) costs GIL hand-offs and a thread wake-up per batch; on
the loop, a batch is one non-blocking libpq exchange the loop waits for like any socket. This
reader only takes the first step of the replica set's rules: ask one fresh replica. Whatever it
cannot settle (a miss, an error, a timeout, no connection yet) goes to the thread, which applies
every rule (primary fallback, degraded serving) as before, so the rules stay stated once.

The connection is opened by the lookup thread (`connect()`, blocking), never by the loop, and is
dropped on any failure; the loop then uses the thread until it is opened again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import pq

from certstatus.store.base import StoredResponse, StoreError
from certstatus.store.pglookup import (
    CERTS_STATEMENT,
    STATEMENTS,
    Pending,
    ResponseKey,
    certs_parameter,
    complete,
    group_by_statement,
    store_rows,
)


class LoopReader:
    def __init__(self, url: str, connect_kwargs: dict[str, Any], name: str, timeout: float):
        self.url = url
        self.name = name
        self.timeout = timeout
        self._kwargs = connect_kwargs
        # the connection and the statements prepared on it, replaced together
        self._open: tuple[psycopg.Connection[Any], set[bytes]] | None = None
        self._busy = False

    @property
    def ready(self) -> bool:
        """Open and not in the middle of an exchange."""
        return self._open is not None and not self._busy

    def connect(self) -> None:
        """Open the connection (blocking: called from the lookup thread)."""
        if self._open is not None:
            return
        try:
            conn = psycopg.connect(self.url, **self._kwargs)
        except psycopg.Error:
            return  # the thread's own reads will say what is wrong
        conn.pgconn.nonblocking = 1
        self._open = (conn, set())

    def close(self) -> None:
        opened, self._open = self._open, None
        if opened is not None:
            opened[0].close()

    async def responses(self, keys: Sequence[ResponseKey]) -> list[StoredResponse | None]:
        """Like PostgresStore.responses; StoreError (and the connection dropped) on failure."""
        opened = self._open
        if opened is None or self._busy:  # one exchange at a time on one connection
            raise StoreError(f"database {self.name}: loop connection not free")
        conn, prepared = opened
        self._busy = True
        try:
            return await asyncio.wait_for(self._read(conn.pgconn, prepared, keys), self.timeout)
        except (psycopg.Error, OSError, TimeoutError, StoreError) as exc:
            self.close()
            raise StoreError(f"database {self.name} unavailable: {exc!r}") from None
        except BaseException:  # cancelled mid-exchange: the protocol state is unknown
            self.close()
            raise
        finally:
            self._busy = False

    async def _read(
        self, pgconn: pq.abc.PGconn, prepared: set[bytes], keys: Sequence[ResponseKey]
    ) -> list[StoredResponse | None]:
        results: list[StoredResponse | None] = [None] * len(keys)
        pending: Pending = []
        for algorithm, issuer_id, positions, serials in group_by_statement(keys):
            name, sql = STATEMENTS[algorithm]
            if name not in prepared:
                pgconn.send_prepare(name, sql)
                await _one_result(pgconn, pq.ExecStatus.COMMAND_OK)
                prepared.add(name)
            pgconn.send_query_prepared(name, [b"%d" % issuer_id, serials], None, 1)
            rows = await _one_result(pgconn, pq.ExecStatus.TUPLES_OK)
            pending += store_rows(rows, positions, self.name, results)
        if pending:
            pgconn.send_query_params(CERTS_STATEMENT, [certs_parameter(pending)], None, None, 1)
            complete(results, pending, await _one_result(pgconn, pq.ExecStatus.TUPLES_OK))
        return results


async def _one_result(pgconn: pq.abc.PGconn, expected: pq.ExecStatus) -> pq.abc.PGresult:
    """Send what is queued, then wait for the server's answer to it (one result, then the end)."""
    fd = pgconn.socket
    while pgconn.flush():
        await _ready(fd, writable=True)
    found: list[pq.abc.PGresult] = []
    while True:
        while pgconn.is_busy():
            await _ready(fd, writable=False)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        found.append(result)
    if len(found) != 1 or found[0].status != expected:
        message = b"; ".join(r.error_message for r in found).decode("utf-8", "replace")
        raise StoreError(message.strip() or f"unexpected results {[r.status for r in found]}")
    return found[0]


async def _ready(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    if writable:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await future
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)

"""The responder's batched lookups (responder/lookup.py) without a database: requests that
arrive together share one query, and a failing store fails each request, never hangs one."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from certstatus.ocsp.certid import HashAlgorithm
from certstatus.responder.lookup import BatchedLookup
from certstatus.store.base import StoredResponse, StoreError


class SlowStore:
    """Answers serial n with a response whose der is n's bytes, after a pause, so that
    requests arriving meanwhile queue for the next batch."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.fail: Exception | None = None
        self.short = False
        self.gate = threading.Event()
        self.gate.set()

    def responses(self, keys):
        self.gate.wait(5)
        self.batches.append(len(keys))
        if self.fail is not None:
            raise self.fail
        found = [StoredResponse(b"%d" % serial, 1, 2, 3, "r") for _, serial, _ in keys]
        return found[:-1] if self.short else found


def ask_all(lookup: BatchedLookup, serials: list[int]) -> list:
    async def one(serial: int):
        try:
            return await lookup.response(1, serial, HashAlgorithm.SHA1)
        except Exception as exc:
            return exc

    async def every() -> list:
        return await asyncio.gather(*(one(s) for s in serials))

    return asyncio.run(every())


def test_concurrent_lookups_share_queries_and_each_gets_its_own_answer() -> None:
    store = SlowStore()
    store.gate.clear()  # the first query is held at the database
    lookup = BatchedLookup(store)

    async def scenario() -> list:
        first = asyncio.ensure_future(lookup.response(1, 0, HashAlgorithm.SHA1))
        await asyncio.sleep(0.05)  # its batch has gone; the next 49 queue behind it
        rest = [
            asyncio.ensure_future(lookup.response(1, n, HashAlgorithm.SHA1)) for n in range(1, 50)
        ]
        await asyncio.sleep(0.05)
        store.gate.set()
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(scenario())
    assert [a.der for a in answers] == [b"%d" % n for n in range(50)]
    assert store.batches == [1, 49]
    assert (lookup.looked_up, lookup.batches) == (50, 2)
    lookup.close()


@pytest.mark.parametrize(("fault", "expected"), [("error", StoreError), ("short", RuntimeError)])
def test_a_failing_store_fails_every_request_and_the_next_ones_are_served(
    fault: str, expected: type
) -> None:
    store = SlowStore()
    lookup = BatchedLookup(store)
    if fault == "error":
        store.fail = StoreError("replica gone")
    else:
        store.short = True  # fewer answers than keys: none can be trusted
    answers = ask_all(lookup, [1, 2, 3])
    assert all(isinstance(a, expected) for a in answers)
    store.fail, store.short = None, False
    assert [a.der for a in ask_all(lookup, [4, 5])] == [b"4", b"5"]
    lookup.close()


def test_close_stops_the_lookup_threads() -> None:
    lookup = BatchedLookup(SlowStore(), in_flight=2)
    ask_all(lookup, [1])
    threads = list(lookup._threads)
    assert len(threads) == 2 and all(t.is_alive() for t in threads)
    lookup.close()
    for thread in threads:
        thread.join(2)
    assert not any(t.is_alive() for t in threads)


def test_a_slow_crl_read_does_not_stall_the_worker() -> None:
    """A CRL is read off the event loop on a replica set: while one CRL read hangs at the
    database, the worker still answers health checks and OCSP lookups."""
    from certstatus.crl.layout import CrlLayout
    from certstatus.responder.app import OcspApp
    from certstatus.responder.source import ReplicaSource
    from certstatus.store.base import StoredCrl

    class SlowCrlStore(SlowStore):
        def current_crl(self, issuer_id: int, crl_partition: int):
            time.sleep(1.0)
            return StoredCrl(issuer_id, crl_partition, 1, 0, 2**40, 2**40, 0, b"crl")

    layout = CrlLayout("demo", "http://crl.invalid/crl/{issuer}/{partition}.crl")
    source = ReplicaSource(SlowCrlStore(), BatchedLookup(SlowStore()))
    app = OcspApp(source, {}, crl_layouts=[(1, layout)])

    async def scenario() -> tuple[list[str], object]:
        done: list[str] = []

        async def crl() -> object:
            answer = await app.handle("GET", layout.path(0))
            done.append("crl")
            return answer

        async def health() -> None:
            await asyncio.sleep(0.1)  # the CRL read is at the database by now
            answer = await app.handle("GET", "/healthz")
            assert answer is not None and answer.status == 200
            done.append("healthz")
            assert (await app.source.response(1, 7, HashAlgorithm.SHA1)).der == b"7"
            done.append("lookup")

        answer, _ = await asyncio.gather(crl(), health())
        return done, answer

    done, answer = asyncio.run(scenario())
    assert done == ["healthz", "lookup", "crl"]
    assert answer.status == 200 and answer.body == b"crl"
    source.lookup.close()


class LoopFirst(SlowStore):
    """A first step on the event loop that holds the even serials: the odd ones, and every
    serial while it cannot be asked (None), go to the thread."""

    def __init__(self) -> None:
        super().__init__()
        self.askable = True
        self.opened = 0

    async def read_on_loop(self, keys):
        if not self.askable:
            return None
        return [
            StoredResponse(b"loop%d" % serial, 1, 2, 3, "r") if serial % 2 == 0 else None
            for _, serial, _ in keys
        ]

    def open_loop_connection(self) -> None:
        self.opened += 1


def test_the_loop_step_settles_its_hits_and_the_thread_the_rest() -> None:
    store = LoopFirst()
    lookup = BatchedLookup(store, on_loop=store)
    answers = ask_all(lookup, [1, 2, 3, 4])
    assert [a.der for a in answers] == [b"1", b"loop2", b"3", b"loop4"]
    assert store.batches == [2] and lookup.on_loop == 2  # only the misses reached the thread
    deadline = time.monotonic() + 5  # after its batch is delivered, so not at once
    while store.opened == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.opened == 1  # the thread opens the loop's connection after its batch
    store.askable = False
    assert [a.der for a in ask_all(lookup, [6])] == [b"6"]
    assert lookup.on_loop == 2
    lookup.close()


def test_a_replica_source_refuses_one_key_of_a_batch_alone() -> None:
    """Requests that arrive together leave as one query; a key no source could answer gets
    its StoreError (tryLater) while the others are answered."""
    from certstatus.responder.source import ReplicaSource

    class Refusing(SlowStore):
        def responses(self, keys):
            found = super().responses(keys)
            return [
                StoreError("no source") if k[1] == 2 else r
                for k, r in zip(keys, found, strict=True)
            ]

    store = Refusing()
    source = ReplicaSource(store, BatchedLookup(store))
    keys = [(1, n, HashAlgorithm.SHA1) for n in (1, 2, 3)]

    async def together() -> list:
        return await asyncio.gather(*(source.response(*k) for k in keys), return_exceptions=True)

    found = asyncio.run(together())
    assert found[0].der == b"1" and isinstance(found[1], StoreError) and found[2].der == b"3"
    assert store.batches == [3]
    source.lookup.close()


def test_a_miss_the_primary_cannot_confirm_is_no_source_not_not_signed_yet() -> None:
    """On a replica set, a miss is "recorded, not signed yet" (NotSignedYet, the signers'
    matter) only when the primary says it is recorded; when the primary cannot tell, it is a
    plain NoAuthoritativeSource (no_source, the database's). Both are tryLater, never
    "unauthorized" (R5, F1)."""
    from certstatus.store.base import NoAuthoritativeSource, NotSignedYet
    from certstatus.store.replicaset import ReplicaSet, Source

    primary = Source("primary", "primary", None, store=None, staleness=0.0)  # type: ignore[arg-type]
    replicas = ReplicaSet(primary, [], max_staleness=5.0)
    keys = [(1, 7, HashAlgorithm.SHA1), (1, 8, HashAlgorithm.SHA1)]

    def miss(store, asked):
        return [None] * len(asked)

    def known(store, asked):
        return [serial == 7 for _, serial, _ in asked]

    def cannot_tell(store, asked):
        raise StoreError("database primary unavailable: connection lost")

    told = replicas._settle(keys, miss, known)
    assert type(told[0]) is NotSignedYet and told[1] is None  # 8: never recorded
    untold = replicas._settle(keys, miss, cannot_tell)
    assert all(type(r) is NoAuthoritativeSource for r in untold)
    assert "cannot confirm" in str(untold[0])

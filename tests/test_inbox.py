"""A subscriber's inbox (actors/inbox.py) driven by a fake multiplexer in this process (no Ray): a
memfd ring handed over with SCM_RIGHTS, delivery frames on the Unix socket, acks and release frames
back; and the ``serialized`` decorator."""

from __future__ import annotations

import asyncio
import mmap
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from actors.inbox import Inbox, serialized
from engine.data.ticks import load_trades
from engine.marketdata.schemas import MarketBatch
from engine.marketdata.wire import (
    ACK,
    FRAME_HEADER_SIZE,
    RELEASE,
    RingAllocator,
    delivery_frame,
    encode_inline,
    frame_header,
    inline_item,
    pack_batch,
    packed_nbytes,
    parse_ack,
    parse_release,
    ring_item,
    write_packed,
)

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
BTC_TRADES = DATA_DIR / "nautilus_binance_btcusdt_trades_2021-01-08.parquet"  # 2,001 trades

RING_BYTES = 1 << 21
TIMEOUT = 5.0  # seconds any single expected frame may take; a bug fails the test instead of hanging


@pytest.fixture(scope="module")
def btc() -> pa.Table:
    if not BTC_TRADES.is_file():
        pytest.skip(f"real data not found at {BTC_TRADES}")
    return load_trades(BTC_TRADES, symbol="BTCUSDT")


def _batches(btc: pa.Table, n: int, rows: int = 150) -> list[MarketBatch]:
    """``n`` consecutive slices of the real trades as seq 1..n of one stream."""
    return [
        MarketBatch("mux:BTCUSDT", "trades", i + 1, btc.slice(i * rows, rows), i * 1_000, 10_000 + i) for i in range(n)
    ]


def _fields(b: MarketBatch) -> tuple[Any, ...]:
    return (b.source, b.stream, b.seq, b.watermark_ns, b.ingest_ns)


class FakeMux:
    """The multiplexer's side of the link, as ``actors/mux.py`` speaks it, in the test's own loop."""

    def __init__(self, path: str, ring: bool = True) -> None:
        self.path = path
        self.name = f"test-ring-{uuid.uuid4().hex[:8]}"
        self.fd: int | None = None
        if ring:
            self.fd = os.memfd_create(self.name, os.MFD_CLOEXEC)
            os.ftruncate(self.fd, RING_BYTES)
            self.mm = mmap.mmap(self.fd, RING_BYTES)
            self.ring = memoryview(self.mm)
            self.alloc = RingAllocator(RING_BYTES)
        self.next_slot = 0
        self.next_number = 0
        self.offsets: dict[int, int] = {}

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, self.path)
        if self.fd is not None:
            socket.send_fds(sock, [b"R"], [self.fd])
        else:
            sock.send(b"R")
        self.reader, self.writer = await asyncio.open_unix_connection(sock=sock)

    def ring_item(self, batch: MarketBatch) -> bytes:
        """``batch`` written into the ring (a new slot), as a delivery item."""
        packed = pack_batch(batch)
        offset = self.alloc.alloc(packed_nbytes(packed))
        assert offset is not None
        self.next_slot += 1
        self.offsets[self.next_slot] = offset
        return ring_item(self.next_slot, write_packed(self.ring, offset, packed))

    def send(self, gen: int, items: list[bytes]) -> int:
        self.next_number += 1
        self.writer.write(delivery_frame(gen, self.next_number, items))
        return self.next_number

    async def read(self, timeout: float = TIMEOUT) -> tuple[int, Any]:
        """The next frame from the inbox: (ACK, (number, released slots, error or None)) or
        (RELEASE, slots)."""

        async def one() -> tuple[int, Any]:
            length, kind = frame_header(await self.reader.readexactly(FRAME_HEADER_SIZE))
            body = await self.reader.readexactly(length)
            if kind == ACK:
                return kind, parse_ack(body)
            assert kind == RELEASE, f"unexpected frame kind {kind}"
            return kind, parse_release(body)

        return await asyncio.wait_for(one(), timeout)

    async def nothing_within(self, seconds: float) -> None:
        """No frame arrives within ``seconds``."""
        with pytest.raises(asyncio.TimeoutError):
            await self.read(seconds)

    def close(self) -> None:
        """Unmap and close the ring (the link itself is closed by :func:`run`)."""
        if self.fd is not None:
            self.ring.release()
            self.mm.close()
            os.close(self.fd)


Recorder = Callable[[int, tuple[MarketBatch, ...]], Any]


@pytest.fixture
def make_inbox() -> Iterator[Callable[..., Inbox]]:
    made: list[Inbox] = []

    def make(handler: Recorder, lock: threading.RLock | None = None) -> Inbox:
        inbox = Inbox(handler, lock or threading.RLock(), "node-test")
        made.append(inbox)
        return inbox

    yield make
    for inbox in made:
        inbox.close()


def run(mux: FakeMux, main: Callable[[], Awaitable[None]], seconds: float = 8.0) -> None:
    """``main()`` (which connects ``mux``) in a fresh loop of this (the main) thread, failing after
    ``seconds``; the link is closed at the end, the ring unmapped."""

    async def bounded() -> None:
        try:
            await asyncio.wait_for(main(), seconds)
        finally:
            if hasattr(mux, "writer"):
                mux.writer.close()

    try:
        asyncio.run(bounded())
    finally:
        mux.close()


def _memfd_mapping_of(address: int, name: str) -> bool:
    """Whether ``address`` lies in a mapping of the memfd called ``name`` (per /proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, *rest = line.split()
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= address < hi and rest and f"memfd:{name}" in line:
                return True
    return False


# ---------------------------------------------------------------------------------------------


def test_deliveries_arrive_in_order_equal_and_zero_copy(make_inbox: Callable[..., Inbox], btc: pa.Table) -> None:
    batches = _batches(btc, 12)
    want = {b.seq: b for b in batches}
    seen: list[tuple[int, list[tuple[Any, ...]], list[bool], list[int]]] = []

    def handler(gen: int, got: tuple[MarketBatch, ...]) -> None:
        # compared here (the views are only valid while held); recorded without keeping a view
        seen.append(
            (
                gen,
                [_fields(b) for b in got],
                [b.table.schema.equals(want[b.seq].table.schema) and b.table.equals(want[b.seq].table) for b in got],
                [b.table.column("price").chunk(0).buffers()[1].address for b in got],
            )
        )

    inbox = make_inbox(handler)
    assert inbox.address() == {"node": "node-test", "path": inbox.path}
    mux = FakeMux(inbox.path)

    async def main() -> None:
        await mux.connect()
        # 6 deliveries of 2 batches each, pipelined (sent before any ack), the last 2 of a new gen
        sent = []
        for d in range(6):
            items = [mux.ring_item(b) for b in batches[2 * d : 2 * d + 2]]
            gen = 7 if d < 4 else 8
            sent.append((mux.send(gen, items), gen, [item[1] for item in items]))
        for number, _, slots in sent:
            kind, (acked, released, error) = await mux.read()
            assert (kind, acked, error) == (ACK, number, None)
            assert sorted(released) == slots  # the handler kept nothing: freed with the ack
        # the handler saw the views of the memfd (no copy) while the link is open
        for _, _, _, addresses in seen:
            assert all(_memfd_mapping_of(a, mux.name) for a in addresses)
        await mux.nothing_within(0.1)  # no stray release frames

    run(mux, main)
    assert [s[0] for s in seen] == [7, 7, 7, 7, 8, 8]
    assert [f for s in seen for f in s[1]] == [_fields(b) for b in batches]
    assert all(ok for s in seen for ok in s[2])
    assert inbox.deliveries == 6


def test_kept_table_is_released_later_from_another_thread(make_inbox: Callable[..., Inbox], btc: pa.Table) -> None:
    batches = _batches(btc, 4)
    kept: list[pa.Table] = []

    def handler(gen: int, got: tuple[MarketBatch, ...]) -> None:
        if got[0].seq == 1:
            kept.append(got[0].table)  # like a bot keeping a window of trades

    inbox = make_inbox(handler)
    mux = FakeMux(inbox.path)

    async def main() -> None:
        await mux.connect()
        first = mux.send(1, [mux.ring_item(batches[0]), mux.ring_item(batches[1])])  # slots 1, 2
        assert await mux.read() == (ACK, (first, [], None))  # slot 1 held; 2 shares its delivery
        second = mux.send(1, [mux.ring_item(batches[2])])  # slot 3
        assert await mux.read() == (ACK, (second, [3], None))
        await mux.nothing_within(0.2)
        assert kept[0].equals(batches[0].table)
        kept.clear()  # dropped in this (the main) thread, not the inbox's
        kind, slots = await mux.read()
        assert kind == RELEASE and sorted(slots) == [1, 2]
        third = mux.send(1, [mux.ring_item(batches[3])])
        assert await mux.read() == (ACK, (third, [4], None))  # nothing released twice

    run(mux, main)


def test_kept_table_dropped_in_the_inbox_thread_rides_on_the_next_ack(
    make_inbox: Callable[..., Inbox], btc: pa.Table
) -> None:
    batches = _batches(btc, 3)
    kept: list[pa.Table] = []

    def handler(gen: int, got: tuple[MarketBatch, ...]) -> None:
        kept.clear()  # keeps only the newest delivery's table
        kept.append(got[0].table)

    inbox = make_inbox(handler)
    mux = FakeMux(inbox.path)

    async def main() -> None:
        await mux.connect()
        acks = []
        for b in batches:
            mux.send(1, [mux.ring_item(b)])
            kind, body = await mux.read()
            assert kind == ACK
            acks.append(body)
        assert acks == [(1, [], None), (2, [1], None), (3, [2], None)]
        await mux.nothing_within(0.1)

    run(mux, main)
    kept.clear()


def test_handler_error_is_named_in_the_ack(make_inbox: Callable[..., Inbox], btc: pa.Table) -> None:
    batches = _batches(btc, 2)

    class Boom(RuntimeError):
        pass

    def handler(gen: int, got: tuple[MarketBatch, ...]) -> None:
        if got[0].seq == 2:
            raise Boom(f"cannot take seq {got[0].seq}")

    inbox = make_inbox(handler)
    mux = FakeMux(inbox.path)

    async def main() -> None:
        await mux.connect()
        ok = mux.send(3, [mux.ring_item(batches[0])])
        assert await mux.read() == (ACK, (ok, [1], None))
        bad = mux.send(3, [mux.ring_item(batches[1])])
        kind, (number, released, error) = await mux.read()
        assert (kind, number) == (ACK, bad)
        assert error is not None and "Boom" in error and "cannot take seq 2" in error
        assert released == [2]  # the failed delivery's views are gone too

    run(mux, main)
    assert inbox.deliveries == 1


def test_bad_layout_is_reported_in_the_ack(make_inbox: Callable[..., Inbox], btc: pa.Table) -> None:
    called: list[int] = []
    inbox = make_inbox(lambda gen, got: called.append(gen))
    mux = FakeMux(inbox.path)

    async def main() -> None:
        await mux.connect()
        number = mux.send(1, [ring_item(1, ((RING_BYTES - 8, 64), (0, 100)))])
        kind, (acked, _, error) = await mux.read()
        assert (kind, acked) == (ACK, number)
        assert error is not None and "ParameterError" in error

    run(mux, main)
    assert called == []


def test_inline_items_mixed_with_ring_items(make_inbox: Callable[..., Inbox], btc: pa.Table) -> None:
    batches = _batches(btc, 3)
    seen: list[tuple[list[tuple[Any, ...]], list[bool]]] = []

    def handler(gen: int, got: tuple[MarketBatch, ...]) -> None:
        seen.append(([_fields(b) for b in got], [b.table.equals(w.table) for b, w in zip(got, batches, strict=True)]))

    inbox = make_inbox(handler)
    mux = FakeMux(inbox.path)

    async def main() -> None:
        await mux.connect()
        first, last = (inline_item(encode_inline(b)) for b in (batches[0], batches[2]))
        items = [first, mux.ring_item(batches[1]), last]
        number = mux.send(5, items)
        assert await mux.read() == (ACK, (number, [1], None))  # only the ring slot is released

    run(mux, main)
    assert seen == [([_fields(b) for b in batches], [True, True, True])]


def test_link_without_a_ring_takes_inline_items_only(make_inbox: Callable[..., Inbox], btc: pa.Table) -> None:
    batches = _batches(btc, 2)
    got_seqs: list[int] = []
    inbox = make_inbox(lambda gen, got: got_seqs.extend(b.seq for b in got))
    mux = FakeMux(inbox.path, ring=False)

    async def main() -> None:
        await mux.connect()
        number = mux.send(1, [inline_item(encode_inline(batches[0]))])
        assert await mux.read() == (ACK, (number, [], None))
        # a ring item on a link that has no ring: the inbox closes the link
        mux.send(1, [ring_item(1, ((0, 10), (64, 100)))])
        with pytest.raises(asyncio.IncompleteReadError):
            await mux.read()

    run(mux, main)
    assert got_seqs == [1]


def test_handler_runs_holding_the_lock(make_inbox: Callable[..., Inbox], btc: pa.Table) -> None:
    lock = threading.RLock()
    batches = _batches(btc, 1)
    inbox = make_inbox(lambda gen, got: None, lock)
    mux = FakeMux(inbox.path)

    async def main() -> None:
        await mux.connect()
        with lock:  # the actor is busy in another method
            number = mux.send(1, [mux.ring_item(batches[0])])
            await mux.nothing_within(0.3)
        assert await mux.read() == (ACK, (number, [1], None))

    run(mux, main)


def test_close_ends_the_link_and_removes_the_socket(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox(lambda gen, got: None)
    mux = FakeMux(inbox.path)

    async def main() -> None:
        await mux.connect()
        number = mux.send(1, [])
        assert await mux.read() == (ACK, (number, [], None))
        inbox.close()
        with pytest.raises(asyncio.IncompleteReadError):
            await mux.read()

    run(mux, main)
    assert not os.path.exists(inbox.path)
    inbox._thread.join(TIMEOUT)  # and its thread (with its event loop) ends
    assert not inbox._thread.is_alive()
    assert inbox._loop.is_closed()
    inbox.close()  # twice is harmless


def test_close_right_after_opening(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox(lambda gen, got: None)
    inbox.close()  # possibly before its thread runs its loop
    inbox._thread.join(TIMEOUT)
    assert not inbox._thread.is_alive()
    assert not os.path.exists(inbox.path)


def test_close_with_a_link_that_never_handed_over_a_ring(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox(lambda gen, got: None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, inbox.path)  # connected, but no handshake byte yet
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        await asyncio.sleep(0.05)
        inbox.close()
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed by the inbox
        writer.close()

    asyncio.run(asyncio.wait_for(main(), 8.0))
    inbox._thread.join(TIMEOUT)
    assert not inbox._thread.is_alive()


# ---------------------------------------------------------------------------------------------
# serialized


@serialized
class _Actor:
    _serial_lock: threading.RLock  # made by serialized

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.log.append("init")

    def slow(self, entered: threading.Event, go: threading.Event) -> None:
        self.log.append("slow:start")
        entered.set()
        assert go.wait(TIMEOUT)
        self.log.append("slow:end")

    def quick(self) -> str:
        self.log.append("quick")
        return "done"

    def outer(self) -> str:
        return self.quick()  # re-entrant: the same thread takes the lock again

    def _peek(self) -> list[str]:  # private: not locked
        return list(self.log)

    async def coro(self) -> int:  # coroutines are not wrapped (Ray runs them on its own loop)
        return 1


def test_serialized_method_waits_for_the_lock_holder() -> None:
    log: list[str] = []
    actor = _Actor(log)
    assert isinstance(actor._serial_lock, type(threading.RLock()))
    entered, go = threading.Event(), threading.Event()
    results: list[str] = []
    slow = threading.Thread(target=actor.slow, args=(entered, go), daemon=True)
    slow.start()
    assert entered.wait(TIMEOUT)
    quick = threading.Thread(target=lambda: results.append(actor.quick()), daemon=True)
    quick.start()
    quick.join(0.3)
    assert quick.is_alive() and results == []  # blocked behind slow
    assert actor._peek() == ["init", "slow:start"]  # a private method is not locked
    go.set()
    slow.join(TIMEOUT)
    quick.join(TIMEOUT)
    assert not slow.is_alive() and not quick.is_alive()
    assert results == ["done"]
    assert log == ["init", "slow:start", "slow:end", "quick"]
    assert actor.outer() == "done"
    assert asyncio.run(actor.coro()) == 1
    assert _Actor.quick.__name__ == "quick" and _Actor.__init__.__name__ == "__init__"


def test_serialized_blocks_while_another_thread_holds_the_lock() -> None:
    actor = _Actor([])
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with actor._serial_lock:
            held.set()
            release.wait(TIMEOUT)

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    assert held.wait(TIMEOUT)
    done = threading.Event()

    def call() -> None:
        actor.quick()
        done.set()

    caller = threading.Thread(target=call, daemon=True)
    start = time.monotonic()
    caller.start()
    assert not done.wait(0.3)
    release.set()
    assert done.wait(TIMEOUT)
    assert time.monotonic() - start >= 0.3
    t.join(TIMEOUT)
    caller.join(TIMEOUT)


def test_serialized_actor_as_inbox_handler(make_inbox: Callable[..., Inbox], btc: pa.Table) -> None:
    """The way actors use it: the inbox calls a public (locked) method holding the same lock."""

    @serialized
    class Sink:
        _serial_lock: threading.RLock

        def __init__(self) -> None:
            self.rows = 0

        def on_market_data(self, gen: int, got: tuple[MarketBatch, ...]) -> None:
            self.rows += sum(b.table.num_rows for b in got)

        def count(self) -> int:
            return self.rows

    sink = Sink()
    inbox = make_inbox(sink.on_market_data, sink._serial_lock)
    mux = FakeMux(inbox.path)
    batches = _batches(btc, 3)

    async def main() -> None:
        await mux.connect()
        number = mux.send(1, [mux.ring_item(b) for b in batches])
        assert await mux.read() == (ACK, (number, [1, 2, 3], None))

    run(mux, main)
    assert sink.count() == 450


def test_serialized_class_without_its_own_init() -> None:
    class Base:
        def __init__(self, n: int = 1) -> None:
            self.n = n

    @serialized
    class Plain:
        _serial_lock: threading.RLock

        def get(self) -> int:
            return 1

    @serialized
    class Derived(Base):
        _serial_lock: threading.RLock

        def get(self) -> int:
            return self.n

    assert Plain().get() == 1  # the lock exists although Plain defines no __init__
    assert Derived(5).get() == 5  # the inherited __init__ still runs, with its arguments
    assert isinstance(Derived()._serial_lock, type(threading.RLock()))

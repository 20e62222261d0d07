"""The same-machine market-data wire (engine/marketdata/wire.py): the ring allocator against an
independent occupancy model, and real Binance trades written into an mmap ring and read back as
zero-copy views."""

from __future__ import annotations

import gc
import itertools
import mmap
import pickle
import random
import struct
import weakref
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.ticks import load_trades
from engine.errors import ParameterError
from engine.marketdata.schemas import END_OF_STREAM, TRADES_SCHEMA, MarketBatch
from engine.marketdata.wire import (
    ACK,
    ALIGN,
    DELIVERY,
    FRAME_HEADER_SIZE,
    RELEASE,
    IpcOverflow,
    Layout,
    RingAllocator,
    ack_frame,
    aligned,
    decode_inline,
    delivery_frame,
    encode_inline,
    frame_header,
    inline_item,
    ipc_bound,
    pack_batch,
    packed_nbytes,
    parse_ack,
    parse_delivery,
    parse_release,
    read_batch,
    release_frame,
    ring_item,
    write_packed,
)

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
BTC_TRADES = DATA_DIR / "nautilus_binance_btcusdt_trades_2021-01-08.parquet"  # 2,001 trades
XRP_TRADES = DATA_DIR / "freqtrade_binance_xrpeth_trades_2019-10.parquet"  # 12,477 trades


# ---------------------------------------------------------------------------------------------
# RingAllocator against a reference model
# ---------------------------------------------------------------------------------------------


class RingModel:
    """What a FIFO-reclaim ring must do, written independently of the allocator.

    ``regions`` are the unreclaimed regions in allocation order ([offset, length, freed]); the
    oldest are dropped once freed (space comes back only as the oldest are freed). ``occ`` is a
    byte occupancy map of those regions. A new region goes right after the newest one if the bytes
    up to there are free and the ring does not end first, else at offset 0 if those bytes are free
    (the ring wraps), else nowhere.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.regions: list[list[int]] = []
        self.occ = bytearray(size)

    def _free_span(self, start: int, n: int) -> bool:
        return start + n <= self.size and self.occ.find(1, start, start + n) == -1

    def tail(self) -> int:
        if not self.regions:
            return 0
        offset, length, _ = self.regions[-1]
        return offset + length

    def expected_offset(self, n: int) -> int | None:
        n = aligned(max(n, 1))
        if self._free_span(self.tail(), n):
            return self.tail()
        if self._free_span(0, n):
            return 0
        return None

    def add(self, offset: int, n: int) -> None:
        n = aligned(max(n, 1))
        assert self.occ.find(1, offset, offset + n) == -1
        self.occ[offset : offset + n] = b"\x01" * n
        self.regions.append([offset, n, 0])

    def free(self, offset: int) -> None:
        region = next(r for r in self.regions if r[0] == offset and not r[2])
        region[2] = 1
        while self.regions and self.regions[0][2]:
            off, n, _ = self.regions.pop(0)
            self.occ[off : off + n] = bytes(n)

    def used(self) -> int:
        """Bytes not on the free arc that runs from the newest region's end to the oldest's start."""
        if not self.regions:
            return 0
        tail = self.tail()
        nxt = self.occ.find(1, tail)
        gap = nxt - tail if nxt != -1 else self.size - tail + self.occ.find(1)
        return self.size - gap


lines = st.integers(1, 4).map(lambda k: k * ALIGN)  # exact fits are where off-by-ones hide
request = st.one_of(st.integers(0, 700), lines, lines.map(lambda n: n - 1), lines.map(lambda n: n + 1))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), request),
        st.tuples(st.just("alloc"), request),
        st.tuples(st.just("free"), st.just(0)),  # the oldest held: in-order consumption, wraps the ring
        st.tuples(st.just("free"), st.integers(0, 1_000)),  # any held one
        st.tuples(st.just("refree"), st.integers(0, 1_000)),
        st.tuples(st.just("bad_free"), st.integers(-ALIGN, 3_000)),
    ),
    min_size=5,
    max_size=120,
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(size=st.one_of(st.integers(1, 12).map(lambda k: k * ALIGN), st.integers(1, 2_200)), ops=ops)
def test_ring_allocator_matches_fifo_model(size: int, ops: list[tuple[str, int]]) -> None:
    alloc = RingAllocator(size)
    model = RingModel(size)
    held: dict[int, int] = {}  # offset -> aligned length, regions the caller still holds
    freed: list[int] = []  # offsets the caller gave back (and does not hold again)
    for op, arg in ops:
        if op == "alloc":
            expected = model.expected_offset(arg)
            got = alloc.alloc(arg)
            assert got == expected, f"alloc({arg}) gave {got}, model says {expected}"
            if got is not None:
                n = aligned(max(arg, 1))
                assert got % ALIGN == 0
                assert got >= 0 and got + n <= size
                for off, m in held.items():  # never overlaps a region the caller holds
                    assert got + n <= off or off + m <= got, (got, n, off, m)
                held[got] = n
                model.add(got, n)
        elif op == "free":
            if not held:
                continue
            offset = list(held)[arg % len(held)]  # held is in allocation order
            alloc.free(offset)
            del held[offset]
            model.free(offset)
            freed.append(offset)
        else:  # an offset the caller does not hold: already freed, unknown or misaligned
            freed = [f for f in freed if f not in held]
            if op == "refree" and freed:
                arg = freed[arg % len(freed)]
            if arg in held:
                continue
            before = (alloc.used, len(alloc))
            with pytest.raises(ParameterError):
                alloc.free(arg)
            assert (alloc.used, len(alloc)) == before
        assert alloc.used == model.used()
        assert 0 <= alloc.used <= size
        assert alloc.used >= model.occ.count(1)
        assert len(alloc) == len(model.regions)
    # every region given back: the whole ring (its aligned part) is one free span again
    for offset in list(held):
        alloc.free(offset)
    assert alloc.used == 0 and len(alloc) == 0
    whole = size // ALIGN * ALIGN
    if whole:
        assert alloc.alloc(whole) == 0


def test_ring_allocator_space_returns_only_with_the_oldest() -> None:
    alloc = RingAllocator(4 * ALIGN)
    got = [alloc.alloc(ALIGN) for _ in range(4)]
    assert got == [0, ALIGN, 2 * ALIGN, 3 * ALIGN]
    a, b, c, d = (ALIGN * i for i in range(4))
    assert alloc.alloc(1) is None and alloc.used == 4 * ALIGN
    alloc.free(b)
    alloc.free(c)  # freed, but a (older) is still held: nothing comes back
    assert alloc.alloc(1) is None and alloc.used == 4 * ALIGN and len(alloc) == 4
    with pytest.raises(ParameterError):
        alloc.free(b)  # already freed
    alloc.free(a)  # a, b, c come back together
    assert alloc.used == ALIGN and len(alloc) == 1
    assert alloc.alloc(3 * ALIGN) == 0  # wraps to the start
    assert alloc.alloc(1) is None
    alloc.free(d)
    assert alloc.used == 3 * ALIGN
    assert alloc.alloc(ALIGN) == 3 * ALIGN  # right after the newest region


def test_ring_allocator_rejects_bad_size_and_oversized_requests() -> None:
    for size in (0, -64):
        with pytest.raises(ParameterError):
            RingAllocator(size)
    alloc = RingAllocator(1000)  # not a multiple of ALIGN: 15 whole lines fit
    assert alloc.alloc(1001) is None
    assert alloc.alloc(15 * ALIGN + 1) is None
    assert alloc.alloc(15 * ALIGN) == 0
    with pytest.raises(ParameterError):
        alloc.free(7)


# ---------------------------------------------------------------------------------------------
# round trips of real trades
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def btc() -> pa.Table:
    if not BTC_TRADES.is_file():
        pytest.skip(f"real data not found at {BTC_TRADES}")
    t = load_trades(BTC_TRADES, symbol="BTCUSDT")
    assert t.schema.equals(TRADES_SCHEMA) and t.num_rows == 2_001
    return t


@pytest.fixture(scope="module")
def xrp() -> pa.Table:
    if not XRP_TRADES.is_file():
        pytest.skip(f"real data not found at {XRP_TRADES}")
    t = load_trades(XRP_TRADES, symbol="XRPETH")
    assert t.schema.equals(TRADES_SCHEMA) and t.num_rows == 12_477
    return t


def _sample_batches(btc: pa.Table, xrp: pa.Table) -> list[MarketBatch]:
    ts = pc.cast(xrp["ts"], pa.int64()).to_pylist()
    two_chunks = pa.concat_tables([btc.slice(10, 300), xrp.slice(200, 50)])  # 2 chunks, 2 symbols
    assert two_chunks.column("price").num_chunks == 2
    return [
        MarketBatch("mux:BTCUSDT", "trades", 1, btc, 1_610_064_046_356_000_000, 1_700_000_000_000_000_000),
        MarketBatch("mux:XRPETH", "trades", 2, xrp.slice(5_000, 100), ts[5_100], 17),
        MarketBatch("mux:XRPETH", "trades", 3, xrp.slice(12_400), END_OF_STREAM, 0),  # the tail
        MarketBatch("mux:XRPETH", "trades", 4, xrp.slice(3, 0), ts[3], 5),  # empty: watermark only
        MarketBatch("mux:shard-ü", "trades", 2**62, two_chunks, -1, 2**63 - 1),
    ]


def _assert_same(got: MarketBatch, want: MarketBatch) -> None:
    assert got.source == want.source
    assert got.stream == want.stream
    assert got.seq == want.seq
    assert got.watermark_ns == want.watermark_ns
    assert got.ingest_ns == want.ingest_ns
    assert got.table.schema.equals(want.table.schema, check_metadata=True)
    assert got.table.num_rows == want.table.num_rows
    assert got.table.equals(want.table)
    assert got.table.to_pylist() == want.table.to_pylist()


def _buffers(table: pa.Table) -> list[pa.Buffer]:
    return [buf for col in table.columns for chunk in col.chunks for buf in chunk.buffers() if buf is not None]


def _slice_payload_bytes(table: pa.Table) -> int:
    """Bytes the rows of ``table`` really hold (no parent's rows): fixed-width values, string
    offsets and characters, validity bitmaps; computed from Python values."""
    total = 0
    for field, col in zip(table.schema, table.columns, strict=True):
        rows = col.to_pylist()
        if pa.types.is_string(field.type):
            total += 4 * (len(rows) + 1) + sum(len(s.encode()) for s in rows if s is not None)
        else:
            total += len(rows) * field.type.bit_width // 8
        if col.null_count:
            total += (len(rows) + 7) // 8
    return total


class _Owner:
    pass


def _stream_size(table: pa.Table) -> int:
    """Bytes of ``table`` as an Arrow IPC stream, written by pyarrow itself."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().size


@pytest.mark.parametrize("exact", [False, True], ids=["bound", "exact"])
def test_round_trip_through_an_mmap_ring(btc: pa.Table, xrp: pa.Table, exact: bool) -> None:
    size = 1 << 21
    mm = mmap.mmap(-1, size)
    mm[:] = b"\xa5" * size  # garbage around the regions: reading must not depend on zeroed memory
    ring_w = memoryview(mm)
    ring_r = pa.py_buffer(mm)
    batches = _sample_batches(btc, xrp)
    packed = [pack_batch(b, exact) for b in batches]
    for b, p in zip(batches, packed, strict=True):
        room = p[2]
        assert room == _stream_size(b.table) if exact else room >= _stream_size(b.table)
    # offsets: the start, right after a region, a line or a page and a line after one, and the
    # very end of the ring
    gaps = [0, 0, ALIGN, 4096 + ALIGN]
    offsets, at = [], 0
    for p, gap in zip(packed, gaps, strict=False):
        offsets.append(at + gap)
        at += gap + packed_nbytes(p)
    offsets.append(size - packed_nbytes(packed[-1]))
    assert at <= offsets[-1]
    placed = []
    for b, p, off in zip(batches, packed, offsets, strict=True):
        before = bytes(mm)
        layout = write_packed(ring_w, off, p)
        n = packed_nbytes(p)
        (meta_at, meta_n), (ipc_at, ipc_n) = layout
        assert meta_at == off and ipc_at % ALIGN == 0
        assert ipc_n == _stream_size(b.table)  # the stream's own length, whatever room it had
        assert off <= meta_at and meta_at + meta_n <= ipc_at and ipc_at + ipc_n <= off + n <= size
        after = bytes(mm)
        assert after[:off] == before[:off] and after[off + n :] == before[off + n :], "wrote outside its region"
        placed.append((b, layout))

    # every batch is read back intact after all were written (none clobbered another)
    for want, layout in placed:
        owner = _Owner()
        alive = weakref.ref(owner)
        got = read_batch(ring_r, layout, owner)
        del owner
        _assert_same(got, want)
        # zero copy: every Arrow buffer of the table lies inside the batch's IPC region of the ring
        _, (ipc_at, ipc_n) = layout
        lo, hi = ring_r.address + ipc_at, ring_r.address + ipc_at + ipc_n
        bufs = _buffers(got.table)
        outside = [(x.address, x.size) for x in bufs if not (lo <= x.address and x.address + x.size <= hi)]
        assert not outside, f"buffers outside the ring region [{lo}, {hi}): {outside}"
        del bufs
        if not want.table.num_rows:  # no rows, no views: nothing keeps the owner (nor the slot)
            del got
            assert alive() is None
            continue
        # the views keep the owner alive, and only they do
        assert alive() is not None
        column = got.table.column("price")
        del got
        assert alive() is not None  # a single column still holds it
        del column
        assert alive() is None, "owner outlived the last view (no GC pass should be needed)"

    # the views really are the ring: overwriting a price in the ring changes what a reader sees
    want, layout = placed[0]
    got = read_batch(ring_r, layout, _Owner())
    price0 = got.table.column("price").chunk(0)
    addr = price0.buffers()[1].address - ring_r.address
    ring_w[addr : addr + 8] = struct.pack("<d", 1.5)
    assert price0[0].as_py() == 1.5 != want.table.column("price")[0].as_py()
    del got, price0
    gc.collect()
    ring_w.release()
    del ring_r


def test_sliced_table_packs_only_its_rows(xrp: pa.Table) -> None:
    parent = xrp
    parent_packed = packed_nbytes(pack_batch(MarketBatch("m", "trades", 1, parent, 0, 0), exact=True))
    for start, rows in [(5_000, 100), (0, 1), (12_476, 1), (7_777, 1_000)]:
        piece = parent.slice(start, rows)
        # a real slice: it shares the parent's (whole) buffers
        assert piece.column("price").chunk(0).buffers()[1].size == parent.column("price").chunk(0).buffers()[1].size
        batch = MarketBatch("m", "trades", 1, piece, 0, 0)
        payload = _slice_payload_bytes(piece)
        share = parent_packed * rows / parent.num_rows  # the slice's share of the parent's bytes
        # measured: the stream holds the slice's rows and a couple of KiB of metadata
        meta, _, ipc_n = pack_batch(batch, exact=True)
        assert payload <= ipc_n <= payload + 2_048, (start, rows, payload, ipc_n)
        assert packed_nbytes((meta, piece, ipc_n)) == aligned(len(meta)) + aligned(ipc_n)
        assert packed_nbytes((meta, piece, ipc_n)) < share + 2_048 + 2 * ALIGN + len(meta)
        # bounded (the default): a few KiB more, still nothing like the parent
        meta, _, room = pack_batch(batch)
        assert ipc_n <= room <= payload + 8_192, (start, rows, payload, room)
        assert packed_nbytes((meta, piece, room)) < share + 8_192 + 2 * ALIGN + len(meta)
        # and the inline form is as small as the measured stream
        assert len(encode_inline(batch)) == 8 + len(meta) + ipc_n


def _chunked_apart(table: pa.Table, step: int) -> pa.Table:
    """``table`` with column i cut into chunks every ``step`` rows starting at row i + 1, so no two
    columns end chunks at the same rows (the IPC stream then has a record batch per end)."""
    cols = []
    for i, name in enumerate(table.column_names):
        arr = table.column(name).combine_chunks()
        ends = [0, *range(1 + i, table.num_rows, step), table.num_rows]
        cols.append(pa.chunked_array([arr.slice(a, b - a) for a, b in itertools.pairwise(ends)], arr.type))
    return pa.Table.from_arrays(cols, schema=table.schema)


def test_ipc_bound_bounds_the_stream(btc: pa.Table, xrp: pa.Table) -> None:
    tables = [
        btc,
        btc.slice(0, 0),
        xrp.slice(100, 1),
        pa.concat_tables([btc.slice(i * 100, 100) for i in range(20)]),  # 20 chunks per column
        _chunked_apart(btc.slice(0, 1_200), 6),  # 1,200 record batches of one row
        _chunked_apart(xrp.slice(3_000, 500), 50),
    ]
    assert len(tables[4].to_batches()) == 1_200
    size = 1 << 23
    mm = mmap.mmap(-1, size)
    ring_w, ring_r = memoryview(mm), pa.py_buffer(mm)
    for i, table in enumerate(tables):
        assert ipc_bound(table) >= _stream_size(table), i
        b = MarketBatch("m", "trades", i + 1, table, 0, 0)
        layout = write_packed(ring_w, 0, pack_batch(b))  # no IpcOverflow
        _assert_same(read_batch(ring_r, layout, _Owner()), b)
    ring_w.release()


def test_write_packed_raises_ipc_overflow_and_stays_in_its_region(btc: pa.Table) -> None:
    size = 1 << 20
    mm = mmap.mmap(-1, size)
    mm[:] = b"\x5a" * size
    ring_w = memoryview(mm)
    b = MarketBatch("m", "trades", 1, btc.slice(0, 500), 0, 0)
    meta, table, _ = pack_batch(b, exact=True)
    short = (meta, table, _stream_size(table) - 64)  # room the stream does not fit
    off = 4 * ALIGN
    n = packed_nbytes(short)
    with pytest.raises(IpcOverflow):
        write_packed(ring_w, off, short)
    assert mm[:off] == b"\x5a" * off and mm[off + n :] == b"\x5a" * (size - off - n)
    ring_w.release()


def test_batches_allocated_from_a_ring_allocator_read_back(btc: pa.Table, xrp: pa.Table) -> None:
    """Many slices of real trades placed by the allocator (wrapping as old ones are freed), each read
    back equal while its neighbours are written."""
    size = 256 * 1024
    mm = mmap.mmap(-1, size)
    ring_w, ring_r = memoryview(mm), pa.py_buffer(mm)
    alloc = RingAllocator(size)
    rnd = random.Random(7)
    live: list[tuple[int, MarketBatch, Layout]] = []
    wrapped = False
    for seq in range(1, 200):
        start = rnd.randrange(xrp.num_rows)
        b = MarketBatch("mux:XRPETH", "trades", seq, xrp.slice(start, rnd.randrange(0, 600)), seq, seq)
        p = pack_batch(b)
        off = alloc.alloc(packed_nbytes(p))
        while off is None:  # free the oldest held, as a subscriber consuming in order would
            old_off, old_b, old_layout = live.pop(0)
            _assert_same(read_batch(ring_r, old_layout, _Owner()), old_b)
            alloc.free(old_off)
            off = alloc.alloc(packed_nbytes(p))
        if live and off < live[-1][0]:
            wrapped = True
        live.append((off, b, write_packed(ring_w, off, p)))
    assert wrapped
    for _, b, layout in live:
        _assert_same(read_batch(ring_r, layout, _Owner()), b)
    ring_w.release()


def test_inline_round_trip(btc: pa.Table, xrp: pa.Table) -> None:
    for b in _sample_batches(btc, xrp):
        data = encode_inline(b)
        assert isinstance(data, bytes)
        _assert_same(decode_inline(data), b)


def test_read_batch_rejects_a_layout_outside_the_ring(btc: pa.Table) -> None:
    size = 64 * 1024
    mm = mmap.mmap(-1, size)
    ring = pa.py_buffer(mm)
    p = pack_batch(MarketBatch("m", "trades", 1, btc.slice(0, 50), 0, 0))
    (meta_at, meta_n), (ipc_at, ipc_n) = write_packed(memoryview(mm), 0, p)
    assert read_batch(ring, ((meta_at, meta_n), (ipc_at, ipc_n)), _Owner()).table.num_rows == 50
    bad_layouts = [
        ((-ALIGN, meta_n), (ipc_at, ipc_n)),  # starts before the ring
        ((meta_at, meta_n), (-1, ipc_n)),
        ((size - 8, meta_n), (ipc_at, ipc_n)),  # runs past its end
        ((meta_at, meta_n), (size - ipc_n + 1, ipc_n)),
        ((meta_at, meta_n), (ipc_at, size)),
        ((size, 1), (ipc_at, ipc_n)),
        ((meta_at, meta_n), (ipc_at, -8)),  # negative lengths
        ((meta_at + 100, -50), (ipc_at, ipc_n)),
    ]
    for layout in bad_layouts:
        with pytest.raises(ParameterError):
            read_batch(ring, layout, _Owner())


def test_read_batch_and_decode_inline_reject_what_is_not_a_batch(btc: pa.Table) -> None:
    size = 64 * 1024
    mm = mmap.mmap(-1, size)
    ring = pa.py_buffer(mm)
    p = pack_batch(MarketBatch("m", "trades", 1, btc.slice(0, 50), 0, 0))
    (meta_at, meta_n), (ipc_at, ipc_n) = write_packed(memoryview(mm), 0, p)
    not_fields = pickle.dumps((1, 2, 3))
    mm[size - 1024 : size - 1024 + len(not_fields)] = not_fields
    mm[size - 512 : size - 256] = b"\x07" * 256
    for layout in [
        ((size - 1024, len(not_fields)), (ipc_at, ipc_n)),  # pickled, but not a batch's fields
        ((size - 512, 64), (ipc_at, ipc_n)),  # not a pickle
        ((meta_at, 0), (ipc_at, ipc_n)),
        ((meta_at, meta_n), (size - 512, 256)),  # not an Arrow stream
        ((meta_at, meta_n), (ipc_at, 0)),
        ((meta_at, meta_n), (ipc_at + 8, ipc_n - 8)),
    ]:
        with pytest.raises(ParameterError):
            read_batch(ring, layout, _Owner())
    good = encode_inline(MarketBatch("m", "trades", 1, btc.slice(0, 50), 0, 0))
    for data in [b"", b"abc", struct.pack("<Q", 3) + b"xyz", struct.pack("<Q", 10**9), good[:40], good[:-200]]:
        with pytest.raises(ParameterError):
            decode_inline(data)


def test_frames_round_trip() -> None:
    layout = ((4_096, 45), (4_160, 8_280))
    inline = encode_inline(MarketBatch("m", "trades", 1, pa.table({"a": [1, 2]}), 0, 0))
    items = [ring_item(5, layout), inline_item(inline), ring_item(2**40, ((0, 0), (64, 0)))]
    for gen, number, its, want in [
        (3, 17, items, [("ring", 5, layout), ("inline", inline), ("ring", 2**40, ((0, 0), (64, 0)))]),
        (-1, 0, [], []),
        (2**62, 2**62, [inline_item(b"")], [("inline", b"")]),
    ]:
        data = delivery_frame(gen, number, its)
        n, kind = frame_header(data[:FRAME_HEADER_SIZE])
        assert kind == DELIVERY and n == len(data) - FRAME_HEADER_SIZE
        assert parse_delivery(data[FRAME_HEADER_SIZE:]) == (gen, number, want)
    for number, released, error in [(17, [5, 6], None), (18, [], "ValueError: boom ü"), (0, [2**63], "")]:
        data = ack_frame(number, released, error)
        n, kind = frame_header(data[:FRAME_HEADER_SIZE])
        assert kind == ACK and n == len(data) - FRAME_HEADER_SIZE
        assert parse_ack(data[FRAME_HEADER_SIZE:]) == (number, released, error or None)
    for slots in [[1, 2, 3], [], [2**64 - 1]]:
        data = release_frame(slots)
        n, kind = frame_header(data[:FRAME_HEADER_SIZE])
        assert kind == RELEASE and n == len(data) - FRAME_HEADER_SIZE
        assert parse_release(data[FRAME_HEADER_SIZE:]) == slots


def test_truncated_frames_raise_parameter_error() -> None:
    delivery = delivery_frame(1, 2, [ring_item(5, ((0, 10), (64, 100))), inline_item(b"x" * 50)])
    body = delivery[FRAME_HEADER_SIZE:]
    for cut in [0, 5, 19, 20, 30, len(body) - 1]:
        with pytest.raises(ParameterError):
            parse_delivery(body[:cut])
    bad_kind = bytearray(body)
    bad_kind[20] = 9  # the first item's kind
    with pytest.raises(ParameterError):
        parse_delivery(bytes(bad_kind))
    ack = ack_frame(3, [1, 2], None)[FRAME_HEADER_SIZE:]
    for cut in [0, 11, 12 + 8]:
        with pytest.raises(ParameterError):
            parse_ack(ack[:cut])
    with pytest.raises(ParameterError):
        parse_release(release_frame([1, 2])[FRAME_HEADER_SIZE:][:-1])

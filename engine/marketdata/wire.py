"""The wire between a multiplexer and its subscribers on the same machine: market batches written
**once** into a shared-memory ring, and small frames on a Unix socket telling each subscriber where
they are.

Why: a Ray actor call costs about a millisecond of CPU on each side here whatever it carries, so a
multiplexer fanning batches out by calls to 100 bots spends its time (and the bots theirs) in Ray's
call path, not in the rows. On one machine the rows need not move at all: the multiplexer copies each
batch's Arrow buffers into a memory-only file (``memfd``) that every subscriber has mapped, and sends
each subscriber a frame of a few hundred bytes naming the batches; the subscriber's Arrow tables are
views of the shared memory (zero copy) and the kernel wakes it in microseconds.

Pieces (no Ray here; the actors use them, see ``actors/mux.py`` and ``actors/inbox.py``):

* :class:`RingAllocator`: regions of the ring handed out in order and freed in any order;
* :func:`pack_batch` / :func:`write_packed` / :func:`read_batch`: one batch as its pickled fields
  and its table as an Arrow IPC stream, laid out in the ring, and read back as views;
* frames: ``<u32 length><u8 kind><body>`` (:func:`frame`, :data:`FRAME_HEADER`).

A region stays allocated while any subscriber holds a view of it: a subscriber tells the multiplexer
when the last Arrow buffer of a batch it received is garbage-collected (a release frame), not when it
acknowledges the delivery, so a bot may keep a table for as long as it likes.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

import pyarrow as pa

from engine.errors import ParameterError
from engine.marketdata.schemas import MarketBatch

#: byte alignment of every region and buffer in the ring (a cache line; Arrow wants 8 at least)
ALIGN = 64

#: ``<u32 length of what follows><u8 kind>``, :data:`FRAME_HEADER_SIZE` bytes
FRAME_HEADER = "<IB"
FRAME_HEADER_SIZE = struct.calcsize(FRAME_HEADER)

# frame kinds (bodies are fixed little-endian layouts, built and parsed by the functions below)
DELIVERY = 1  # multiplexer -> subscriber: <q gen><q number><I items>, then each item (delivery_frame)
ACK = 2  # subscriber -> multiplexer: <q number><I released>, released × <Q slot>, the error (utf-8; none: empty)
RELEASE = 3  # subscriber -> multiplexer: slots × <Q slot> whose views were all garbage-collected

_DELIVERY_HEAD = "<qqI"
_RING_ITEM = "<BQQQQQ"  # 1, slot, (offset, length) of the fields, (offset, length) of the IPC stream
_INLINE_ITEM = "<BQ"  # 2, length, then the bytes of encode_inline
_ACK_HEAD = "<qI"

#: a delivery's item as parsed: ("ring", slot, layout) or ("inline", bytes of encode_inline)
Item = tuple[Any, ...]


def frame(kind: int, body: bytes) -> bytes:
    """One frame: ``body`` behind :data:`FRAME_HEADER`."""
    return struct.pack(FRAME_HEADER, len(body) + 1, kind) + body


def frame_header(header: bytes | bytearray) -> tuple[int, int]:
    """(bytes of the body that follows, kind) of a frame's :data:`FRAME_HEADER_SIZE` header bytes."""
    length, kind = struct.unpack(FRAME_HEADER, header)
    return length - 1, kind


def ring_item(slot: int, layout: Layout) -> bytes:
    """A delivery item naming the batch at ``layout`` in the ring slot ``slot``."""
    (meta_at, meta_n), (ipc_at, ipc_n) = layout
    return struct.pack(_RING_ITEM, 1, slot, meta_at, meta_n, ipc_at, ipc_n)


def inline_item(data: bytes) -> bytes:
    """A delivery item carrying a batch itself (the bytes of :func:`encode_inline`)."""
    return struct.pack(_INLINE_ITEM, 2, len(data)) + data


def delivery_frame(gen: int, number: int, items: list[bytes]) -> bytes:
    """The frame of delivery ``number`` of subscription ``gen``: ``items`` of :func:`ring_item` and
    :func:`inline_item`."""
    return frame(DELIVERY, struct.pack(_DELIVERY_HEAD, gen, number, len(items)) + b"".join(items))


def parse_delivery(body: bytes) -> tuple[int, int, list[Item]]:
    """(gen, number, items) of a delivery frame's body.

    Raises:
        ParameterError: the body is truncated or holds an unknown item kind.
    """
    try:
        gen, number, count = struct.unpack_from(_DELIVERY_HEAD, body)
        at = struct.calcsize(_DELIVERY_HEAD)
        items: list[Item] = []
        for _ in range(count):
            if body[at] == 1:
                _, slot, meta_at, meta_n, ipc_at, ipc_n = struct.unpack_from(_RING_ITEM, body, at)
                items.append(("ring", slot, ((meta_at, meta_n), (ipc_at, ipc_n))))
                at += struct.calcsize(_RING_ITEM)
            elif body[at] == 2:
                _, n = struct.unpack_from(_INLINE_ITEM, body, at)
                at += struct.calcsize(_INLINE_ITEM)
                if at + n > len(body):
                    raise ParameterError("body", "an inline item runs past the frame")
                items.append(("inline", body[at : at + n]))
                at += n
            else:
                raise ParameterError("body", f"unknown delivery item kind {body[at]}")
    except (struct.error, IndexError) as exc:
        raise ParameterError("body", f"truncated delivery frame: {exc}") from exc
    return gen, number, items


def ack_frame(number: int, released: list[int], error: str | None) -> bytes:
    """The acknowledgement of delivery ``number``, with the ring slots already released and the
    handler's error (None: processed)."""
    head = struct.pack(_ACK_HEAD, number, len(released))
    return frame(ACK, head + struct.pack(f"<{len(released)}Q", *released) + (error or "").encode())


def parse_ack(body: bytes) -> tuple[int, list[int], str | None]:
    """(number, released slots, error or None) of an acknowledgement's body.

    Raises:
        ParameterError: the body is truncated.
    """
    try:
        number, n = struct.unpack_from(_ACK_HEAD, body)
        at = struct.calcsize(_ACK_HEAD)
        released = list(struct.unpack_from(f"<{n}Q", body, at))
    except struct.error as exc:
        raise ParameterError("body", f"truncated acknowledgement: {exc}") from exc
    error = body[at + 8 * n :].decode()
    return number, released, error or None


def release_frame(slots: list[int]) -> bytes:
    """A frame releasing ``slots`` (their views were garbage-collected after the acknowledgement)."""
    return frame(RELEASE, struct.pack(f"<{len(slots)}Q", *slots))


def parse_release(body: bytes) -> list[int]:
    """The slots of a release frame's body.

    Raises:
        ParameterError: the body is not a whole number of slots.
    """
    if len(body) % 8:
        raise ParameterError("body", f"a release frame holds 8-byte slots, got {len(body)} bytes")
    return list(struct.unpack(f"<{len(body) // 8}Q", body))


def aligned(n: int) -> int:
    """``n`` rounded up to :data:`ALIGN`."""
    return (n + ALIGN - 1) // ALIGN * ALIGN


class RingAllocator:
    """Contiguous regions of a ring of ``size`` bytes: handed out in order, freed in any order.

    Space comes back as the **oldest** regions are freed (a region freed while an older one is still
    held waits for it), which is what a stream of batches consumed roughly in order wants; a
    request that does not fit returns None and the caller sends the batch another way.

    Raises:
        ParameterError: ``size`` is not positive.
    """

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ParameterError("size", f"must be > 0 bytes, got {size}")
        self.size = size
        self._regions: dict[int, list[int]] = {}  # offset -> [end, freed (0/1)], oldest first

    def alloc(self, n: int) -> int | None:
        """The offset of a free region of ``n`` bytes (rounded up to :data:`ALIGN`), or None when
        the ring has no such contiguous space."""
        n = aligned(max(n, 1))
        if n > self.size:
            return None
        if not self._regions:
            offset = 0
        else:
            first = next(iter(self._regions))
            last_end = self._regions[next(reversed(self._regions))][0]
            if last_end > first:  # used span [first, last_end) does not wrap
                if self.size - last_end >= n:
                    offset = last_end
                elif first >= n:
                    offset = 0
                else:
                    return None
            elif first - last_end >= n:  # wrapped: free span [last_end, first)
                offset = last_end
            else:
                return None
        self._regions[offset] = [offset + n, 0]
        return offset

    def free(self, offset: int) -> None:
        """Give back the region at ``offset``.

        Raises:
            ParameterError: no region is allocated at ``offset``.
        """
        region = self._regions.get(offset)
        if region is None or region[1]:
            raise ParameterError("offset", f"no allocated region at {offset}")
        region[1] = 1
        while self._regions:
            first = next(iter(self._regions))
            if not self._regions[first][1]:
                break
            del self._regions[first]

    @property
    def used(self) -> int:
        """Bytes between the oldest held region and the newest one's end (what is not reusable)."""
        if not self._regions:
            return 0
        first = next(iter(self._regions))
        last_end = self._regions[next(reversed(self._regions))][0]
        return last_end - first if last_end > first else self.size - first + last_end

    def __len__(self) -> int:
        return len(self._regions)


#: a packed batch: its fields but the table, pickled; the table; the table's Arrow IPC stream size
Packed = tuple[bytes, pa.Table, int]

#: where a packed batch lies in the ring: ((offset, length) of the pickled fields, (offset, length)
#: of the table's Arrow IPC stream)
Layout = tuple[tuple[int, int], tuple[int, int]]


def pack_batch(batch: MarketBatch, exact: bool = False) -> Packed:
    """``batch`` ready for the ring: its fields but the table pickled, and room for the table as an
    Arrow IPC stream. IPC, not pickle, for the table: a table sliced from a bigger one pickles with
    its parent's whole buffers, IPC writes only the rows of the slice.

    The room is a bound (the table's bytes plus the stream's metadata and padding, see
    :func:`ipc_bound`) so the table is encoded once, straight into the ring; with ``exact`` it is
    the stream's size, measured by encoding it to a counting sink (for a table the bound misses,
    :class:`IpcOverflow`)."""
    meta = pickle.dumps((batch.source, batch.stream, batch.seq, batch.watermark_ns, batch.ingest_ns), protocol=5)
    if not exact:
        return meta, batch.table, ipc_bound(batch.table)
    sink = pa.MockOutputStream()
    _write_ipc(sink, batch.table)
    return meta, batch.table, int(sink.size())


def ipc_bound(table: pa.Table) -> int:
    """More bytes than ``table`` takes as an Arrow IPC stream: its buffers plus, per record batch,
    1 KiB of metadata and 64 bytes of padding per buffer, plus the schema message.

    The stream has a record batch wherever **any** column's chunk ends (columns chunked at different
    rows make more batches than any one column has chunks), so those ends are what is counted."""
    ends = set()
    for column in table.columns:
        end = 0
        for chunk in column.chunks:
            end += len(chunk)
            ends.add(end)
    batches = max(len(ends), 1)
    per_batch = 1024 + 64 * 3 * table.num_columns
    return int(table.nbytes) + (batches + 1) * per_batch + 256 * table.num_columns


class IpcOverflow(Exception):
    """A table's IPC stream did not fit the room :func:`pack_batch` bounded (pack it ``exact``)."""


def _write_ipc(sink: Any, table: pa.Table) -> None:
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def packed_nbytes(packed: Packed) -> int:
    """Ring bytes a packed batch takes (both pieces aligned)."""
    return aligned(len(packed[0])) + aligned(packed[2])


def write_packed(ring: memoryview, offset: int, packed: Packed) -> Layout:
    """Copy ``packed`` into ``ring`` (a writable memory view) from ``offset``, a region of
    :func:`packed_nbytes` bytes; returns its layout (the stream's actual length).

    Raises:
        IpcOverflow: the table's stream is longer than the room packed for it.
    """
    meta, table, room = packed
    meta_at = offset
    ipc_at = offset + aligned(len(meta))
    ring[meta_at : meta_at + len(meta)] = meta
    writer = pa.FixedSizeBufferWriter(pa.py_buffer(ring[ipc_at : ipc_at + room]))
    try:
        _write_ipc(writer, table)
    except OSError as exc:  # "write out of bounds"
        raise IpcOverflow(str(exc)) from exc
    return (meta_at, len(meta)), (ipc_at, writer.tell())


def read_batch(ring: pa.Buffer, layout: Layout, owner: object) -> MarketBatch:
    """The batch at ``layout`` in ``ring`` (the subscriber's mapping of the shared memory): its
    table is a **view** of the ring whose Arrow buffers keep ``owner`` alive, so ``owner``'s
    finalizer tells when the last view is gone (see :class:`actors.inbox.Inbox`).

    Raises:
        ParameterError: the layout is outside the ring or does not hold a market batch.
    """
    for off, n in layout:
        if off < 0 or n < 0 or off + n > ring.size:
            raise ParameterError("layout", f"region ({off}, {n}) outside the ring of {ring.size} bytes")
    (meta_at, meta_n), (ipc_at, ipc_n) = layout
    view = pa.foreign_buffer(ring.address + ipc_at, ipc_n, base=owner)
    return _batch("layout", ring.slice(meta_at, meta_n).to_pybytes(), view)


def _batch(what: str, meta: bytes, ipc: pa.Buffer) -> MarketBatch:
    """The batch of pickled fields ``meta`` and Arrow IPC stream ``ipc``; whatever fails to decode
    (garbage, a truncated stream) is a ParameterError about ``what``."""
    try:
        fields = pickle.loads(meta)
        if not isinstance(fields, tuple) or len(fields) != 5:
            raise ParameterError(what, "must hold a market batch's fields")
        source, stream, seq, watermark_ns, ingest_ns = fields
        table = pa.ipc.open_stream(ipc).read_all()
    except ParameterError:
        raise
    except Exception as exc:  # unpickling garbage can raise nearly anything
        raise ParameterError(what, f"must hold a market batch: {type(exc).__name__}: {exc}") from exc
    return MarketBatch(source, stream, seq, table, watermark_ns, ingest_ns)


def encode_inline(batch: MarketBatch) -> bytes:
    """``batch`` as bytes for a frame of its own (when the ring has no room): the pickled fields'
    length (8 bytes), the fields, the table's Arrow IPC stream."""
    meta, table, _ = pack_batch(batch)
    sink = pa.BufferOutputStream()
    _write_ipc(sink, table)
    return struct.pack("<Q", len(meta)) + meta + sink.getvalue().to_pybytes()


def decode_inline(data: bytes) -> MarketBatch:
    """The batch of :func:`encode_inline`'s bytes.

    Raises:
        ParameterError: ``data`` does not hold a market batch.
    """
    if len(data) < 8:
        raise ParameterError("data", f"must hold a market batch, got {len(data)} bytes")
    (meta_n,) = struct.unpack_from("<Q", data)
    return _batch("data", data[8 : 8 + meta_n], pa.py_buffer(data)[8 + meta_n :])

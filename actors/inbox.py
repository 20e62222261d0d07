"""A subscriber's inbox: receives multiplexer deliveries on a Unix socket instead of Ray calls.

A subscriber actor on the same machine as a multiplexer (a bot, the M2M aggregator, a benchmark
sink) opens an :class:`Inbox` and passes :meth:`Inbox.address` to ``MarketDataMux.subscribe``. The
multiplexer connects, hands over its shared-memory ring (``memfd``, passed with ``SCM_RIGHTS``) and
then sends one small frame per delivery naming where its batches lie in the ring
(:mod:`engine.marketdata.wire`). The inbox runs its own event loop in a thread of the actor's
process: it reads a frame, builds the batches as zero-copy views of the ring, calls the actor's
handler (the same ``on_market_data(gen, batches)`` a Ray call would run) holding the actor's lock,
and acknowledges. When the last view of a batch is garbage-collected, a release frame gives its
ring space back.

Why: a Ray call costs about a millisecond of CPU on each side here, so the call path, not the rows,
was what fan-out to many bots and tick-to-bot latency paid for; a frame on a Unix socket costs a few
microseconds and the rows are not copied per subscriber.

Because deliveries now run on the inbox's thread while Ray runs the actor's other methods on its own,
the actor class is decorated with :func:`serialized`: every public method holds the same lock, so the
actor still sees one call at a time.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import inspect
import itertools
import mmap
import os
import socket
import tempfile
import threading
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa

from engine.marketdata.schemas import MarketBatch
from engine.marketdata.wire import (
    DELIVERY,
    FRAME_HEADER_SIZE,
    ack_frame,
    decode_inline,
    frame_header,
    parse_delivery,
    read_batch,
    release_frame,
)

T = TypeVar("T")

Handler = Callable[[int, tuple[MarketBatch, ...]], Any]


def serialized(cls: type[T]) -> type[T]:
    """Make every public method of ``cls`` (and ``__init__``) hold ``self._serial_lock``, a
    re-entrant lock created before ``__init__`` runs, so an actor whose inbox thread delivers market
    data still runs one thing at a time. Apply it under ``@ray.remote``."""

    def locked(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            with self._serial_lock:
                return fn(self, *args, **kwargs)

        return wrapper

    init = vars(cls).get("__init__")
    for name, fn in list(vars(cls).items()):
        if name.startswith("_") or not inspect.isfunction(fn) or inspect.iscoroutinefunction(fn):
            continue
        setattr(cls, name, locked(fn))

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        self._serial_lock = threading.RLock()
        with self._serial_lock:
            if init is not None:
                init(self, *args, **kwargs)
            else:  # the class has no __init__ of its own: the inherited one
                super(cls, self).__init__(*args, **kwargs)

    if init is not None:
        functools.update_wrapper(__init__, init)
    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


class _Views:
    """Stands for one received batch: its Arrow buffers keep this alive, and its finalizer releases
    the batch's ring region once they are all gone."""

    __slots__ = ("__weakref__", "ring")

    def __init__(self, ring: pa.Buffer) -> None:
        self.ring = ring  # the mapping must outlive every view of it


class Inbox:
    """Receives deliveries for one subscriber; see the module docstring.

    Args:
        handler: ``handler(gen, batches)``, called holding ``lock`` for each delivery, in order per
            multiplexer; an exception is reported to the multiplexer, which then drops the
            subscription (as it does a failed Ray call).
        lock: the actor's lock (see :func:`serialized`).
        node_id: the Ray node this process runs on; a multiplexer on another node delivers by Ray
            calls instead.
    """

    def __init__(self, handler: Handler, lock: threading.RLock, node_id: str) -> None:
        self._handler = handler
        self._lock = lock
        self.node_id = node_id
        self.path = os.path.join(tempfile.gettempdir(), f"tradeng-inbox-{os.getpid()}-{uuid.uuid4().hex[:12]}.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(256)
        self._server.setblocking(False)
        atexit.register(self._unlink)
        self._loop = _new_loop()
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._releases: deque[tuple[int, list[int]]] = deque()
        self._release_due = False
        self.deliveries = 0
        self._thread = threading.Thread(target=self._run, name="market-data-inbox", daemon=True)
        self._thread.start()

    def address(self) -> dict[str, str]:
        """What ``MarketDataMux.subscribe(..., inbox=)`` takes: ``{"node": node id, "path": socket}``."""
        return {"node": self.node_id, "path": self.path}

    def close(self) -> None:
        """Stop accepting and close every connection (multiplexers see the subscriber gone); the
        inbox's thread then ends."""
        with contextlib.suppress(RuntimeError):  # closed before: the loop is closed
            self._loop.call_soon_threadsafe(self._shutdown)
        self._unlink()

    # ------------------------------------------------------------------ the inbox thread
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._accepting = self._loop.create_task(self._accept())
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._accepting)
        # closed (see _shutdown): the listening socket, once the loop no longer waits on it, then
        # the connections, whose tasks close their sockets as they end
        self._server.close()
        self._loop.run_until_complete(_finish(self._tasks))
        self._loop.close()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._server)
            except OSError:  # closed
                return
            task = loop.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn_id = next(self._ids)
        writer: asyncio.StreamWriter | None = None
        try:
            ring = await _receive_ring(loop, conn)
            reader, writer = await asyncio.open_unix_connection(sock=conn)
            self._writers[conn_id] = writer
            while True:
                length, kind = frame_header(await reader.readexactly(FRAME_HEADER_SIZE))
                body = await reader.readexactly(length)
                if kind != DELIVERY:
                    raise ConnectionError(f"unexpected frame kind {kind}")
                gen, number, items = parse_delivery(body)
                error = self._deliver(conn_id, ring, gen, items)
                # the slots whose views are already gone (usually all of them) ride with the ack
                writer.write(ack_frame(number, self._take_releases(conn_id), error))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._writers.pop(conn_id, None)
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            else:
                conn.close()

    def _deliver(self, conn_id: int, ring: pa.Buffer | None, gen: int, items: list[tuple[Any, ...]]) -> str | None:
        """Build the delivery's batches (ring ones as views sharing one owner, whose finalizer
        releases their slots) and hand them to the handler; returns the handler's error, if any."""
        try:
            slots = [item[1] for item in items if item[0] == "ring"]
            if slots and ring is None:
                raise ConnectionError("a ring delivery on a connection without a ring")
            views = _Views(ring) if slots else None
            if views is not None:
                weakref.finalize(views, self._released, conn_id, slots)
            batches = tuple(
                read_batch(ring, item[2], views) if item[0] == "ring" else decode_inline(item[1]) for item in items
            )
            del views
            with self._lock:
                self._handler(gen, batches)
            self.deliveries += 1
            return None
        except ConnectionError:
            raise
        except Exception as exc:  # reported to the multiplexer, which drops the subscription
            return f"{type(exc).__name__}: {exc}"

    def _released(self, conn_id: int, slots: list[int]) -> None:
        """A delivery's last view is gone (runs in whatever thread dropped it). In the inbox's own
        thread (the handler kept nothing) the slots go with the acknowledgement; from another
        thread a release frame is scheduled."""
        self._releases.append((conn_id, slots))
        if threading.get_ident() != self._thread.ident and not self._release_due:
            self._release_due = True
            with contextlib.suppress(RuntimeError):  # the loop is closed at exit
                self._loop.call_soon_threadsafe(self._flush_releases)

    def _take_releases(self, conn_id: int) -> list[int]:
        """Released slots of ``conn_id`` (others are kept for their own connection)."""
        mine: list[int] = []
        others = []
        while self._releases:
            cid, slots = self._releases.popleft()
            if cid == conn_id:
                mine.extend(slots)
            else:
                others.append((cid, slots))
        self._releases.extend(others)
        return mine

    def _flush_releases(self) -> None:
        self._release_due = False
        slots: dict[int, list[int]] = {}
        while self._releases:
            conn_id, held = self._releases.popleft()
            slots.setdefault(conn_id, []).extend(held)
        for conn_id, held in slots.items():
            writer = self._writers.get(conn_id)
            if writer is not None and not writer.is_closing():
                writer.write(release_frame(held))

    def _shutdown(self) -> None:
        self._accepting.cancel()
        for task in list(self._tasks):
            task.cancel()

    def _unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


async def _receive_ring(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> pa.Buffer | None:
    """The multiplexer's first message: one byte, with the ring's file descriptor attached (none
    when the multiplexer sends everything inline); returns the ring mapped read-only."""
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), readable)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
    msg, fds, _, _ = socket.recv_fds(conn, 1, 1)
    if not msg:
        raise ConnectionError("closed before the handshake")
    if not fds:
        return None
    try:
        size = os.fstat(fds[0]).st_size
        mapped = mmap.mmap(fds[0], size, prot=mmap.PROT_READ)
    finally:
        os.close(fds[0])
    return pa.py_buffer(mapped)


async def _finish(tasks: set[asyncio.Task[None]]) -> None:
    """Wait for ``tasks`` (cancelled) to end."""
    await asyncio.gather(*tasks, return_exceptions=True)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


__all__ = ["Inbox", "serialized"]

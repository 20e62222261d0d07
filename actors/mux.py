"""The market-data multiplexer actor (``mux:<symbol>`` or ``mux:<shard>`` in the dashboard).

An asyncio actor hosting :class:`engine.marketdata.mux.MuxCore`. It opens its feed once (a replay
of the catalog or a live exchange websocket, :mod:`engine.feeds`), however many bots subscribe,
and fans batches out:

* a subscriber on this machine that subscribed with an ``inbox`` (:mod:`actors.inbox`) gets its
  deliveries there: each batch is written **once** as Arrow IPC into a shared-memory ring whose file
  descriptor every inbox holds, and a delivery is a small frame on the subscriber's Unix socket
  naming the batches' places (:mod:`engine.marketdata.wire`); the subscriber acknowledges each
  delivery and releases a batch's ring space when its last view of it is garbage-collected;
* any other subscriber (another node, no inbox) gets **one delivery per Ray call**:
  ``on_market_data.remote(gen, payload)``: the batches
  pending for it, merged into one per stream (:func:`~engine.marketdata.schemas.merge_batches`) and
  encoded **once** for every subscriber with the same pending batches: small deliveries as bytes
  inside the call (no object-store round trip on either side), big ones put in the object store
  once, the reference going to each (resolved zero-copy in the callee);
  :func:`~engine.marketdata.schemas.decode_delivery` gives the receiver its batches;
* every subscriber has its own bounded queue in the core and at most ``calls_limit`` deliveries
  (``inflight_limit`` batches) in flight, so a slow bot does not hold back the others, and what
  waits meanwhile goes out in its next delivery: a call costs about a millisecond of CPU on each
  side here whatever its size, so under load (many subscribers, a busy machine) deliveries grow
  instead of multiplying and the cost of fan-out stays near the cost of the rows; beyond
  ``max_queue`` the core conflates
  quotes and turns on back-pressure (the pump stops pulling from the feed until queues drain);
  trades and bars are never dropped;
* a batching timer cuts streams every ``window_ms`` so a quiet stream still goes out promptly;
* a subscriber that dies is dropped; when Ray restarts it, it subscribes again with the watermark of
  its checkpoint and first receives the kept batches it missed (``replay_since``); each
  subscription has a generation number, passed with every call, so calls addressed to the dead
  incarnation are ignored by the new one.

Metrics (``ray.util.metrics``, tagged by mux): ticks and bars in, rows out, queue depth, in-flight
calls, back-pressure, batch fan-out latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.util import metrics

from engine.errors import ParameterError
from engine.feeds.base import Feed, FeedBatch, FeedGap
from engine.marketdata.mux import MuxCore
from engine.marketdata.schemas import (
    INLINE_DELIVERY_BYTES,
    MarketBatch,
    delivery_nbytes,
    encode_delivery,
    merge_batches,
)
from engine.marketdata.wire import (
    ACK,
    FRAME_HEADER_SIZE,
    RELEASE,
    IpcOverflow,
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

#: stop retrying a subscriber that stays unavailable after backing off beyond this (seconds)
_UNAVAILABLE_GIVE_UP_S = 10.0


def make_feed(feed: dict[str, Any], symbols: list[str], stream: str) -> Feed:
    """The feed a multiplexer opens: ``{"kind": "replay", "path", "start_ns", "end_ns", "speed",
    "batch_rows"}`` or ``{"kind": "live", "exchange", "symbol_map": {name: ccxt symbol}, "playback":
    recording or None}`` (a recording plays a recorded session back offline, see
    :mod:`engine.feeds.recorded`).

    A replay's ``window_ns`` (event-time ns, 0: none) groups rows into windows released when their end
    is due (:class:`engine.feeds.replay.ReplayFeed`). A fast paced replay wants one: without it the feed
    hands over the row or two due each time the pump asks, and the pump spins a core ingesting them
    one tiny batch at a time."""
    if feed["kind"] == "replay":
        from engine.feeds.replay import replay_from_catalog

        return replay_from_catalog(
            feed["path"],
            stream,
            symbols,
            feed.get("start_ns"),
            feed.get("end_ns"),
            speed=feed.get("speed"),
            batch_rows=int(feed.get("batch_rows", 4096)),
            window_ns=int(feed.get("window_ns") or 0),
            start_after_ns=feed.get("start_after_ns"),
            require_volume=bool(feed.get("require_volume", True)),
        )
    from engine.feeds.live import CcxtLiveFeed

    names: dict[str, str] = feed.get("symbol_map") or {s: s for s in symbols}  # engine symbol -> ccxt symbol
    unified = {names[s]: s for s in symbols}
    factory = None
    if feed.get("playback"):
        from engine.feeds.recorded import playback_factory

        factory = playback_factory(feed["playback"])
    return CcxtLiveFeed(feed["exchange"], list(unified), stream, symbol_names=unified, client_factory=factory)


@dataclass
class _Link:
    """A subscriber reached through its inbox (``actors/inbox.py``): the socket, the deliveries
    awaiting its acknowledgement (number, batches to ack) and the ring slots it holds views of
    (slot -> deliveries holding it)."""

    sub_id: str
    gen: int
    transport: asyncio.Transport | None = None
    pending: deque[tuple[int, int]] = field(default_factory=deque)
    held: dict[int, int] = field(default_factory=dict)


class _LinkProtocol(asyncio.Protocol):
    """Frames from one inbox, parsed as the bytes arrive and handed to ``on_frame(kind, body)``
    (no coroutine step per frame); ``on_lost(why)`` when the connection ends."""

    def __init__(self, on_frame: Callable[[int, bytes], None], on_lost: Callable[[str], None]) -> None:
        self._buf = bytearray()
        self._on_frame = on_frame
        self._on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        at = 0
        while len(buf) - at >= FRAME_HEADER_SIZE:
            length, kind = frame_header(buf[at : at + FRAME_HEADER_SIZE])
            end = at + FRAME_HEADER_SIZE + length
            if end > len(buf):
                break
            self._on_frame(kind, bytes(buf[at + FRAME_HEADER_SIZE : end]))
            at = end
        del buf[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(f"inbox closed{f': {exc}' if exc else ''}")


_PUMP_SLICE_S = 0.002  # longest the pump ingests without letting the event loop run other tasks


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class MarketDataMux:
    """See the module docstring.

    Args:
        name: the source name stamped on batches ("mux:BTCUSDT").
        symbols: the symbols it serves.
        feed: see :func:`make_feed`.
        bars_from: "bars" (the feed replays bars of ``bar_timeframe``) or "trades".
        bar_timeframe: base bar timeframe.
        max_rows, window_ms, max_queue, history: :class:`MuxCore` settings.
        inflight_limit: batches in flight per subscriber (the most one delivery merges).
        calls_limit: deliveries (calls) in flight per subscriber; what waits meanwhile is merged
            into the next one.
        inline_bytes: deliveries up to this size go as bytes inside the call (0: always through
            the object store).
        ring_bytes: size of the shared-memory ring through which subscribers on this machine that
            have an inbox receive batches (created at the first such subscriber; a batch that does
            not fit while older ones are held goes inline in its frame).
    """

    def __init__(
        self,
        name: str,
        symbols: list[str],
        feed: dict[str, Any],
        bars_from: str = "bars",
        bar_timeframe: str = "1m",
        max_rows: int = 4096,
        window_ms: float = 5.0,
        max_queue: int = 256,
        history: int = 4096,
        inflight_limit: int = 64,
        calls_limit: int = 1,
        inline_bytes: int = INLINE_DELIVERY_BYTES,
        ring_bytes: int = 128 << 20,
    ) -> None:
        self.name = name
        self.symbols = list(symbols)
        self.feed_config = feed
        self.core = MuxCore(
            name,
            symbols=symbols,
            bar_timeframe=bar_timeframe,
            bars_from=bars_from,
            max_rows=max_rows,
            window_ns=int(window_ms * 1e6),
            max_queue=max_queue,
            history=history,
        )
        self.window_s = window_ms / 1000.0
        self.inflight_limit = inflight_limit
        self.calls_limit = calls_limit
        self.inline_bytes = inline_bytes
        self.handles: dict[str, Any] = {}
        self.gen: dict[str, int] = {}
        self.node_id = ray.get_runtime_context().get_node_id()
        self.links: dict[str, _Link] = {}  # subscribers reached through their inbox
        self.ring_bytes = ring_bytes
        self._ring_fd = -1
        self._ring: memoryview | None = None
        self._alloc: RingAllocator | None = None
        self._slots: dict[int, list[int]] = {}  # ring slot -> [offset, references, id(batch)]
        self._slot_of: dict[int, tuple[MarketBatch, int, bytes]] = {}  # id(batch) -> (batch, slot, item)
        self._next_slot = 0
        self._next_delivery = 0
        # this round's delivery items by the batches they name (subscribers at the same place in a
        # stream get the same batches: their items are built once)
        self._round_items: dict[tuple[int, ...], tuple[tuple[MarketBatch, ...], list[bytes], list[int]]] = {}
        self.inline_sends = 0  # batches sent inside a frame because the ring had no room
        self._progress = asyncio.Event()  # set whenever a delivery is acknowledged
        self._cpu_first_ingest: float | None = None  # process CPU time when the first feed batch came
        self._payloads: dict[tuple[int, ...], tuple[tuple[MarketBatch, ...], Any]] = {}  # single batches
        self._round_payloads: dict[tuple[int, ...], tuple[tuple[MarketBatch, ...], Any]] = {}  # this round's
        self._pending: set[asyncio.Future[Any]] = set()
        self._round: asyncio.Handle | None = None  # the scheduled delivery round (see _kick)
        self._next_round = 0.0  # event-loop time before which no round starts
        self._pump_task: asyncio.Task[None] | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._feed: Feed | None = None
        self.done = asyncio.Event()
        self.gaps: list[dict[str, Any]] = []
        self.dead: list[str] = []
        self.error = ""
        tags = ("mux",)
        self._tags = {"mux": name}
        self._m_ticks = metrics.Counter("mux_rows_in", "rows (ticks or bars) into a multiplexer", tags)
        self._m_out = metrics.Counter("mux_batches_out", "batch deliveries (calls) to subscribers", tags)
        self._m_queue = metrics.Gauge("mux_queue_depth", "largest subscriber queue (batches)", tags)
        self._m_bp = metrics.Gauge("mux_backpressure", "1 while back-pressure holds the feed", tags)
        self._m_fanout = metrics.Histogram(
            "mux_fanout_ms", "time to put and send one round of deliveries, ms", [0.1, 0.5, 1, 2, 5, 10, 50], tags
        )

    # ------------------------------------------------------------------ subscriptions
    async def subscribe(
        self,
        sub_id: str,
        handle: Any,
        streams: list[str],
        symbols: list[str] | None,
        since_ns: int | None = None,
        inbox: dict[str, str] | None = None,
    ) -> int:
        """Subscribe (or re-subscribe, replacing an old subscription) ``sub_id``; with ``since_ns`` the
        kept batches after that watermark are sent first (a gap is recorded when history is too
        short). A subscriber with an ``inbox`` (:meth:`actors.inbox.Inbox.address`) on this
        machine gets its deliveries there; otherwise (or if its inbox cannot be reached) by Ray
        calls of ``handle.on_market_data``. Returns the subscription's generation."""
        if sub_id in self.handles:
            self.core.unsubscribe(sub_id)
        self._unlink(sub_id)
        self.core.subscribe(sub_id, set(streams), set(symbols) if symbols else None)
        self.handles[sub_id] = handle
        gen = self.gen[sub_id] = self.gen.get(sub_id, 0) + 1
        if inbox is not None and inbox.get("node") == self.node_id:
            await self._link(sub_id, gen, inbox["path"])
        if since_ns is not None:
            missed: list[MarketBatch] = []
            for stream in streams:
                kept = self.core.replay_since(sub_id, stream, since_ns)
                if kept is None:
                    self.gaps.append({"sub_id": sub_id, "stream": stream, "since_ns": since_ns, "reason": "history"})
                else:
                    missed.extend(kept)
            if missed:
                missed.sort(key=lambda b: (b.stream, b.seq))
                self._send(sub_id, gen, missed, counted=False)
                self._round_items.clear()
        return gen

    async def unsubscribe(self, sub_id: str) -> None:
        if sub_id in self.handles:
            self.core.unsubscribe(sub_id)
            del self.handles[sub_id]
        self._unlink(sub_id)

    # ------------------------------------------------------------------ running
    async def start(self) -> None:
        """Open the feed and start pumping (idempotent)."""
        if self._pump_task is None:
            self._pump_task = asyncio.get_running_loop().create_task(self._pump())
            self._timer_task = asyncio.get_running_loop().create_task(self._timer())

    async def stop(self) -> None:
        """Close the feed; pending batches are still delivered."""
        if self._feed is not None:
            await self._feed.close()

    async def wait_done(self, timeout_s: float | None = None) -> bool:
        """True once the feed has ended and every delivery has been processed."""
        try:
            await asyncio.wait_for(self.done.wait(), timeout_s)
        except TimeoutError:
            return False
        while self._in_flight() or any(self.core.stats().queue_depth.values()):
            await asyncio.sleep(0.005)
            self._dispatch()
        return True

    async def _pump(self) -> None:
        core = self.core
        try:
            streams = sorted(core.upstream_streams()) or [core.base_bars_stream]
            self._feed = make_feed(self.feed_config, self.symbols, streams[0])
            turn = time.perf_counter()
            async for event in self._feed.events():
                if isinstance(event, FeedGap):
                    self.gaps.append(
                        {
                            "stream": event.stream,
                            "symbol": event.symbol,
                            "from_ns": event.from_ns,
                            "to_ns": event.to_ns,
                            "reason": event.reason,
                        }
                    )
                    continue
                now = time.time_ns()
                if self._cpu_first_ingest is None:
                    self._cpu_first_ingest = time.process_time()
                core.ingest(event, now)
                self._m_ticks.inc(event.table.num_rows, self._tags)
                # cut what has waited a window now, not at the timer's next tick (up to a window later)
                core.flush(now, force=event.final)
                self._kick()
                while core.backpressure():
                    self._m_bp.set(1, self._tags)
                    await self._wait_some()
                    self._kick()
                self._m_bp.set(0, self._tags)
                # give the loop (acks, rounds, timer) a turn every couple of ms, not after every feed batch:
                # a paced replay that fell behind yields one window per batch, and one window per loop turn
                # never caught up (ticks waited in the feed longer than in the whole rest of the path)
                if time.perf_counter() - turn >= _PUMP_SLICE_S:
                    await asyncio.sleep(0)
                    turn = time.perf_counter()
        except Exception as exc:  # a broken feed must be visible, not silent
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            core.flush(time.time_ns(), force=True)
            self._dispatch()
            self.done.set()

    async def _timer(self) -> None:
        while not self.done.is_set():
            await asyncio.sleep(self.window_s)
            if self.core.flush(time.time_ns()):
                self._kick()

    async def _wait_some(self) -> None:
        """Until a delivery is acknowledged (at most 50 ms)."""
        if not self._in_flight():
            await asyncio.sleep(0.001)
            return
        self._progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), 0.05)

    def _in_flight(self) -> bool:
        return bool(self._pending) or any(link.pending for link in self.links.values())

    # ------------------------------------------------------------------ delivery
    def _kick(self) -> None:
        """Ask for a delivery round: on the event loop's next turn, or once the rest owed for the
        last round is over.

        A round costs about one Ray call per subscriber with batches (~0.3-0.5 ms each here), so
        rounds are paced: after a round that took ``d`` seconds the next one waits at least ``d``
        (the pump, the timer and the acks go on meanwhile), and whatever each subscriber's queue
        gathered goes in that round's one call (``on_market_data(gen, ref)``). Without this every
        batch cut and every ack started a round, each batch was a call of its own to every
        subscriber, and the mux spent its time submitting calls (fan-out cost grew with
        subscribers × batches, and the feed starved). A light round (few subscribers) rests only
        as long as it worked, so latency is not traded away when the mux is not loaded."""
        if self._round is not None:
            return
        loop = asyncio.get_running_loop()
        delay = self._next_round - loop.time()
        self._round = loop.call_later(delay, self._dispatch) if delay > 0 else loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        if self._round is not None:
            self._round.cancel()
            self._round = None
        started = time.perf_counter()
        sent = 0
        self._round_payloads.clear()
        for sub_id, batches in self.core.deliveries(self.inflight_limit, self.calls_limit):
            self._send(sub_id, self.gen[sub_id], batches, counted=True)
            sent += 1
        self._round_items.clear()  # acks may free the slots its items name
        if sent:
            took = time.perf_counter() - started
            self._next_round = asyncio.get_running_loop().time() + took
            self._m_fanout.observe(took * 1e3, self._tags)
            self._m_out.inc(sent, self._tags)
            depth = self.core.stats().queue_depth
            self._m_queue.set(max(depth.values(), default=0), self._tags)

    def _payload(self, batches: list[MarketBatch]) -> Any:
        """What one call carries: ``batches`` merged per stream, encoded once for every subscriber
        with the same pending batches (the same objects in the same order).

        Up to :data:`INLINE_DELIVERY_BYTES` the delivery goes as bytes inside the call (Ray sends
        small arguments with the task: the receiver skips the object store); bigger ones are put in
        the object store once and the reference goes to each (resolved zero-copy in the callee). A
        single batch's payload is kept while the batch may still be handed out; a merged one only
        for the round, so the store holds a merged copy only while its calls are in flight."""
        key = tuple(id(b) for b in batches)
        cache = self._payloads if len(batches) == 1 else self._round_payloads
        hit = cache.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], batches, strict=True)):
            return hit[1]
        merged = merge_batches(batches)
        if delivery_nbytes(merged) <= self.inline_bytes:
            payload: Any = encode_delivery(merged)
        else:
            payload = ray.put(tuple(merged))
        cache[key] = (tuple(batches), payload)
        if len(self._payloads) > 256:
            for old in list(self._payloads)[:128]:
                del self._payloads[old]
        return payload

    def _send(self, sub_id: str, gen: int, batches: list[MarketBatch], counted: bool) -> None:
        link = self.links.get(sub_id)
        if link is not None:
            self._send_link(link, batches, len(batches) if counted else 0)
            return
        payload = self._payload(batches)
        # submitted here, synchronously: a round's cost is its submissions (see _kick)
        call = self.handles[sub_id].on_market_data.remote(gen, payload)
        fut: asyncio.Future[Any] = asyncio.ensure_future(
            self._settle(sub_id, gen, payload, call, len(batches) if counted else 0)
        )
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    async def _settle(self, sub_id: str, gen: int, payload: Any, call: Any, n: int) -> None:
        """Deliver ``payload`` to ``sub_id`` and acknowledge them once processed. A subscriber that is
        *unavailable* (restarting, or its new life not yet known to this process) gets the same call
        again after a short pause while its subscription is current; one that has *died* is dropped
        (when Ray restarts it, it subscribes again from its checkpoint)."""
        delay = 0.02
        while True:
            try:
                await call
                break
            except ActorUnavailableError:
                if delay > _UNAVAILABLE_GIVE_UP_S:
                    self._drop(sub_id, gen, "ActorUnavailableError")
                    return
                await asyncio.sleep(delay)
                delay *= 2
                if self.gen.get(sub_id) != gen or sub_id not in self.handles:
                    return
                call = self.handles[sub_id].on_market_data.remote(gen, payload)
            except (RayActorError, RayTaskError) as exc:
                self._drop(sub_id, gen, type(exc).__name__)
                return
        self._progress.set()
        if n and self.gen.get(sub_id) == gen and sub_id in self.handles:
            self.core.ack(sub_id, n)
            self._kick()

    def _drop(self, sub_id: str, gen: int, why: str) -> None:
        if self.gen.get(sub_id) == gen and sub_id in self.handles:
            self.dead.append(f"{sub_id}: {why}")
            self.core.unsubscribe(sub_id)
            del self.handles[sub_id]
            self._unlink(sub_id)

    # ------------------------------------------------------------------ inbox links
    async def _link(self, sub_id: str, gen: int, path: str) -> None:
        """Connect to ``sub_id``'s inbox and hand it the ring (its file descriptor, ``SCM_RIGHTS``).
        An inbox that cannot be reached leaves the subscriber on Ray calls."""
        if self._ring is None:
            fd = os.memfd_create(f"{self.name}-ring", os.MFD_CLOEXEC)
            os.ftruncate(fd, self.ring_bytes)
            self._ring_fd = fd
            self._ring = memoryview(mmap.mmap(fd, self.ring_bytes))
            self._alloc = RingAllocator(self.ring_bytes)
        link = _Link(sub_id, gen)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(sock, path)
            socket.send_fds(sock, [b"R"], [self._ring_fd])
            protocol = _LinkProtocol(
                lambda kind, body: self._on_link_frame(link, kind, body), lambda why: self._on_link_lost(link, why)
            )
            link.transport, _ = await loop.create_unix_connection(lambda: protocol, sock=sock)
        except OSError as exc:
            sock.close()
            self.gaps.append({"sub_id": sub_id, "reason": f"inbox unreachable, using Ray calls: {exc}"})
            return
        self.links[sub_id] = link

    def _send_link(self, link: _Link, batches: list[MarketBatch], n: int) -> None:
        """One delivery frame: each batch written into the ring once (the first time any subscriber
        gets it) and named by its slot; a batch the ring has no room for goes inside the frame."""
        key = tuple(id(b) for b in batches)
        hit = self._round_items.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], batches, strict=True)):
            items, slots = hit[1], hit[2]
        else:
            items, slots = [], []
            for b in batches:
                placed = self._place(b)
                if placed is None:
                    self.inline_sends += 1
                    items.append(inline_item(encode_inline(b)))
                else:
                    slots.append(placed[0])
                    items.append(placed[1])
            self._round_items[key] = (tuple(batches), items, slots)
        records, held = self._slots, link.held
        for slot in slots:
            records[slot][1] += 1
            held[slot] = held.get(slot, 0) + 1
        self._next_delivery += 1
        link.pending.append((self._next_delivery, n))
        assert link.transport is not None
        link.transport.write(delivery_frame(link.gen, self._next_delivery, items))

    def _place(self, batch: MarketBatch) -> tuple[int, bytes] | None:
        """The ring slot of ``batch`` and the delivery item naming it, writing it if it is not
        there; None: no room."""
        hit = self._slot_of.get(id(batch))
        if hit is not None and hit[0] is batch:
            return hit[1], hit[2]
        assert self._alloc is not None and self._ring is not None
        for exact in (False, True):
            packed = pack_batch(batch, exact)
            offset = self._alloc.alloc(packed_nbytes(packed))
            if offset is None:
                return None
            try:
                layout = write_packed(self._ring, offset, packed)
                break
            except IpcOverflow:  # the bound missed (never seen): measure and write again
                self._alloc.free(offset)
        else:
            return None
        self._next_slot += 1
        self._slots[self._next_slot] = [offset, 0, id(batch)]
        item = ring_item(self._next_slot, layout)
        self._slot_of[id(batch)] = (batch, self._next_slot, item)
        return self._next_slot, item

    def _unref(self, slot: int, k: int = 1) -> None:
        record = self._slots[slot]
        record[1] -= k
        if record[1] <= 0:
            assert self._alloc is not None
            self._alloc.free(record[0])
            del self._slots[slot]
            del self._slot_of[record[2]]

    def _on_link_frame(self, link: _Link, kind: int, body: bytes) -> None:
        """An acknowledgement (the subscriber processed a delivery) or a release (it holds no view
        of these batches any more) from ``link``; a failed delivery or a bad frame drops the
        subscriber (when Ray restarts it, it subscribes again from its checkpoint)."""
        if self.links.get(link.sub_id) is not link:
            return
        try:
            if kind == RELEASE:
                self._release(link, parse_release(body))
                return
            if kind != ACK:
                raise ParameterError("kind", f"unexpected frame kind {kind} from an inbox")
            _, released, error = parse_ack(body)
        except ParameterError as exc:
            error = str(exc)
            released = []
        self._release(link, released)
        n = link.pending.popleft()[1] if link.pending else 0
        self._progress.set()
        if error is not None:
            self._drop(link.sub_id, link.gen, error)
            return
        if n:
            self.core.ack(link.sub_id, n)
            self._kick()

    def _on_link_lost(self, link: _Link, why: str) -> None:
        if self.links.get(link.sub_id) is link:
            self._drop(link.sub_id, link.gen, why)
        self._close_link(link)

    def _release(self, link: _Link, slots: list[int]) -> None:
        """``link``'s subscriber holds no view of these ring slots any more."""
        held = link.held
        for slot in slots:
            k = held.get(slot, 0)
            if k > 1:
                held[slot] = k - 1
            elif k == 1:
                del held[slot]
            else:
                continue
            self._unref(slot)

    def _unlink(self, sub_id: str) -> None:
        link = self.links.pop(sub_id, None)
        if link is not None:
            self._close_link(link)

    def _close_link(self, link: _Link) -> None:
        """Close ``link`` and give back every ring slot it held."""
        if link.transport is not None:
            link.transport.close()
        for slot, k in link.held.items():
            if k > 0 and slot in self._slots:
                self._unref(slot, k)
        link.held.clear()
        link.pending.clear()

    # ------------------------------------------------------------------ queries
    async def stats(self) -> dict[str, Any]:
        s = self.core.stats()
        return {
            "name": self.name,
            "ticks_in": s.ticks_in,
            "bars_in": s.bars_in,
            "rows_out": dict(s.rows_out),
            "batches_cut": dict(s.batches_cut),
            "queue_depth": dict(s.queue_depth),
            "inflight": dict(s.inflight),
            "conflations": dict(s.conflations),
            "backpressure": s.backpressure,
            "subscribers": sorted(self.handles),
            "inbox_links": sorted(self.links),
            "ring_used": self._alloc.used if self._alloc is not None else 0,
            "ring_slots": len(self._slots),
            "inline_sends": self.inline_sends,
            "gaps": list(self.gaps),
            "dead": list(self.dead),
            "done": self.done.is_set(),
            "error": self.error,
            "cpu_s": time.process_time(),  # this actor's process CPU time (all threads), s
            # CPU since the first feed batch was ingested (excludes opening the feed), s
            "cpu_since_ingest_s": time.process_time() - (self._cpu_first_ingest or time.process_time()),
        }

    async def ltp(self) -> dict[str, tuple[int, float]]:
        return self.core.ltp()


__all__ = ["FeedBatch", "MarketDataMux", "make_feed"]

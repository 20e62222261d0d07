"""Real-time M2M per strategy: 1-minute M2M candles, daily rows and target/stop events.

:class:`M2MAggregatorCore` hosts the :class:`~engine.m2m.book.StrategyBook` of every account it serves
and marks their open legs to market from batches of last-traded prices (:meth:`~M2MAggregatorCore.on_prices`).
Only strategies holding an updated symbol are recomputed (:mod:`engine.m2m._kernel`: per (strategy,
symbol) exposure arrays, M2M = Σ exposure × LTP − Σ entry × exposure), by one compiled pass over each
batch segment (:mod:`engine.m2m._paths_jit`, numba; bit-for-bit the numpy reference's results).

Marking (DESIGN.md): a leg's M2M is (LTP − entry) × qty × side × multiplier. A leg whose symbol has no
price yet counts at its entry (0). An option leg with all its model fields (option type, strike,
expiry, underlying, implied vol) whose own symbol has no price is marked by Black-Scholes-Merton
(:mod:`engine.m2m.options`) from the underlying's LTP, the time to expiry (ACT/365 from the update's
ts) and the leg's IV, at the account's ``rate``/``div_yield``, and flagged ``model_mark``; from the
first batch that carries a price of the option itself it is marked at that LTP (the switch happens at
the start of that batch, the M2M carried over so it does not jump).

Clock and candles:

* Time is the price feed's time. Updates in a batch must be in time order; the batch is split at
  minute boundaries (minute = floor(ts / 60 s), UTC). An update in a later minute than the open one,
  or :meth:`~M2MAggregatorCore.close_until` (the feed watermark), closes the open minute. An update
  older than the open minute counts in the open minute; an update older than its own symbol's last
  processed update is dropped as stale (a replay overlap), see ``stale_dropped``. So feed batches
  merged in time across symbols (one mux's batches, or a merge of several) for exact minutes.
* A candle is the OHLC of the strategy's unrealized M2M as a step function over the minute: open is
  the M2M at the minute's start (the previous close, so a series has no jumps between candles), high
  and low include every intermediate value after each price update (not only the batch end) and each
  leg operation, close is the M2M at the minute's end. realized_pnl is the cumulative realized P&L at
  the close, total_pnl = close + realized_pnl, updates = price updates that touched the strategy.
* **Gaps**: in a minute where an account is *live* (a price update touched one of its strategies, or
  one of its legs changed), every strategy of the account with open legs gets a candle; those not
  touched get a flat one (O = H = L = C = the current M2M, updates = 0). Minutes in which nothing of
  the account moved (market closed, nights, weekends) get no candles, so an exchange's session has a
  gap-free series without a flat candle for every minute it is shut.
* **Leg operations** (the book's methods: add/exit/remove legs, close strategy, bot fills) apply at
  the current feed time, i.e. within the open minute, whatever the operation's own ts (which is kept
  in the book's rows): an exit moves M2M into realized P&L, the jump is part of the candle, total is
  continuous when the exit price is the LTP. Before the first price update, operations change state
  but no candle; their trades count in the first day's row.
* **Days** close in each account's IANA time zone: when the open minute reaches the account's next
  local midnight, a daily row is emitted for every strategy that had a candle or a trade that day.
  realized_pnl is the P&L booked by exits during the day, unrealized_pnl the M2M at the close,
  total_pnl the cumulative realized P&L plus that M2M; max/min_m2m come from the day's candles.
* **Targets and stops**: an event fires once per crossing of total P&L >= target_profit or
  <= −stop_loss, at the update (or operation) that crossed; it re-arms once the total is back.
  Setting limits re-arms both and checks at once.

Every call that can close something (:meth:`~M2MAggregatorCore.on_prices`,
:meth:`~M2MAggregatorCore.close_until`, :meth:`~M2MAggregatorCore.drain`) returns an
:class:`~engine.m2m.tables.M2MOutput`: candles and daily rows as Arrow tables
(:data:`~engine.m2m.tables.CANDLE_SCHEMA`, :data:`~engine.m2m.tables.DAILY_SCHEMA`) and events.

Snapshots (:meth:`~M2MAggregatorCore.snapshot` / :meth:`~M2MAggregatorCore.restore`) are plain data
(dicts, lists, str, int, float, bool, None) with the books, prices, open candles, day aggregates,
pending output and, per symbol, the last processed ts and how many updates at that ts were processed.
After a restore, replaying each symbol's stream from its watermark (inclusive) skips what was
already processed, so the resumed run emits exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from engine.m2m._clock import ClockState
from engine.m2m._kernel import BoolArray, FloatArray, IntArray, PairArrays
from engine.m2m._marking import _NO_TS, _Account, _day_bounds, _zone
from engine.m2m._paths_jit import PathKernel
from engine.m2m._snapshot import restore_snapshot, take_snapshot
from engine.m2m.book import StrategyBook
from engine.m2m.legs import M2MError, _finite, _text
from engine.m2m.tables import M2MOutput
from engine.timeframes import NS_PER_MINUTE

_MARKS_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("instance_id", pa.string()),
        ("unrealized_pnl", pa.float64()),
        ("realized_pnl", pa.float64()),
        ("total_pnl", pa.float64()),
    ]
)


@dataclass(frozen=True, slots=True)
class StrategyMark:
    """A strategy's current P&L (quote currency): unrealized M2M, cumulative realized, and their sum."""

    unrealized_pnl: float
    realized_pnl: float
    total_pnl: float


class M2MAggregatorCore(ClockState):
    """Per-strategy M2M of many accounts (see the module docstring for the rules).

    Args:
        model_marking: mark priceless option legs by the Black-Scholes-Merton model (else at entry).

    Attributes:
        leg_updates: total legs re-marked by price updates (one per open leg per update of its symbol).
        stale_dropped: updates dropped because their symbol had already processed a later one.
    """

    def __init__(self, *, model_marking: bool = True) -> None:
        super().__init__(model_marking=model_marking)
        self._paths = PathKernel()
        self._symbol_set: pa.Array | None = None  # the interned symbols as Arrow (see symbol_ids)
        self._symbol_ranks: IntArray | None = None

    # ------------------------------------------------------------------ accounts and symbols
    def add_account(
        self,
        account_id: str,
        tz: str = "UTC",
        *,
        book: StrategyBook | None = None,
        rate: float = 0.0,
        div_yield: float = 0.0,
        ts: int = 0,
    ) -> StrategyBook:
        """Serve an account: its book (a new one with its default strategy, created at ``ts``, unless
        ``book`` is given, e.g. rebuilt with :meth:`StrategyBook.from_rows`), the IANA zone its days
        close in, and the option model's risk-free ``rate`` and ``div_yield`` (fractions per year).

        Operations on the returned book update the aggregator. Returns the book.

        Raises:
            M2MError: an account already served, a bad zone, a non-finite rate, or a book of another account.
        """
        _text("account_id", account_id)
        if account_id in self._acct_index:
            raise M2MError("account_id", f"account {account_id!r} is already served")
        zone = _zone(tz)
        r, q = _finite("rate", rate), _finite("div_yield", div_yield)
        if book is None:
            book = StrategyBook(account_id, ts)
        elif book.account_id != account_id:
            raise M2MError("book", f"book of account {book.account_id!r} given for account {account_id!r}")
        a = _Account(len(self._accounts), account_id, tz, zone, r, q, book)
        self._accounts.append(a)
        self._acct_index[account_id] = a.index
        self._a_live = np.append(self._a_live, False)
        if self._minute is not None:
            a.day, a.day_end = _day_bounds(self._minute, zone)
        for strat in book.strategies():  # realized P&L of past exits counts in totals, not in today's row
            s = self._strategy_index(a, strat.instance_id)
            self._set_limits(a, strat.instance_id, strat.target_profit, strat.stop_loss)
            self._s.realized[s] = book.realized_pnl(strat.instance_id)
        changed: set[int] = set()
        for leg in book.legs(open_only=True):
            changed |= self._attach(a, self._s_index[(account_id, leg.instance_id)], replace(leg))
        self._refresh(changed)
        strategies = sorted({self._s_index[(account_id, s.instance_id)] for s in book.strategies()})
        self._s.m2m[strategies] = self._m2m_of(np.asarray(strategies, dtype=np.int64))
        book.set_listener(partial(self._on_change, a))
        return book

    def book(self, account_id: str) -> StrategyBook:
        """The book of a served account. Raises :class:`M2MError` for an unknown account."""
        return self._account(account_id).book

    def accounts(self) -> list[str]:
        """Served account ids, in the order they were added."""
        return [a.account_id for a in self._accounts]

    @property
    def symbols(self) -> list[str]:
        """Interned symbols; the position is the id."""
        return list(self._symbols)

    def last_price(self, symbol: str) -> float | None:
        """The last price processed for ``symbol`` (quote currency), or None."""
        i = self._sym_ids.get(symbol)
        return None if i is None or math.isnan(self._last[i]) else float(self._last[i])

    @property
    def watermark(self) -> int | None:
        """The latest ts (ns UTC) processed by :meth:`on_prices` or :meth:`close_until`."""
        return self._wm

    def symbol_watermarks(self) -> dict[str, int]:
        """Per symbol, the ts (ns UTC) of its last processed update: replay each stream from here."""
        return {s: int(self._last_ts[i]) for i, s in enumerate(self._symbols) if self._last_ts[i] != _NO_TS}

    @property
    def minute(self) -> int | None:
        """Start (ns UTC) of the open minute, or None before the first price update."""
        return self._minute

    # ------------------------------------------------------------------ prices
    def symbol_ids(self, symbols: Any) -> IntArray:
        """The interned ids (:meth:`symbol_id`) of many symbols at once, assigning new ones in order
        of first appearance: ``symbols`` is a pyarrow string (or dictionary) array or a sequence of
        str. Vectorised (``pyarrow.compute.index_in``), so a batch of ticks costs no Python loop.

        Raises:
            M2MError: a symbol is missing (null) or not a non-empty string.
        """
        arr = _string_array(symbols)
        if self._symbol_set is None or len(self._symbol_set) != len(self._symbols):
            self._symbol_set = pa.array(self._symbols, pa.string())
        idx = pc.index_in(arr, value_set=self._symbol_set)
        if idx.null_count:
            for symbol in pc.unique(arr.filter(pc.is_null(idx))).to_pylist():
                self.symbol_id(symbol)  # validates (a null is refused)
            self._symbol_set = pa.array(self._symbols, pa.string())
            idx = pc.index_in(arr, value_set=self._symbol_set)
        return idx.to_numpy(zero_copy_only=False).astype(np.int64)

    def symbol_ranks(self) -> IntArray:
        """Per symbol id, its rank in name order (to order same-time updates by symbol name)."""
        if self._symbol_ranks is None or len(self._symbol_ranks) != len(self._symbols):
            order = np.argsort(np.asarray(self._symbols, dtype=object), kind="stable")
            ranks = np.empty(len(order), dtype=np.int64)
            ranks[order] = np.arange(len(order))
            self._symbol_ranks = ranks
        return self._symbol_ranks

    def _symbol_ids(self, symbols: Any, n: int) -> IntArray:
        if isinstance(symbols, pa.ChunkedArray):
            symbols = symbols.combine_chunks()
        if isinstance(symbols, pa.Array) and pa.types.is_integer(symbols.type):
            symbols = symbols.to_numpy(zero_copy_only=False)
        if isinstance(symbols, pa.Array):
            if len(symbols) != n:
                raise M2MError("symbols", f"has {len(symbols)} rows but prices has {n}")
            return self.symbol_ids(symbols)
        arr = np.asarray(symbols)
        if len(arr) != n:
            raise M2MError("symbols", f"has {len(arr)} rows but prices has {n}")
        if n and arr.dtype.kind in "iu":
            ids = arr.astype(np.int64)
            bad = np.nonzero((ids < 0) | (ids >= len(self._symbols)))[0]
            if len(bad):
                raise M2MError("symbols", f"row {int(bad[0])}: {int(ids[bad[0]])} is not an id from symbol_id()")
            return ids
        return self.symbol_ids(arr) if n else np.zeros(0, dtype=np.int64)

    def on_prices(self, symbols: Any, prices: npt.ArrayLike, ts_ns: Any) -> M2MOutput:
        """Process a batch of last-traded prices and return what closed (plus anything buffered by
        book operations since the last call).

        Args:
            symbols: per update, a symbol (strings, a pyarrow string array) or an id from :meth:`symbol_id`.
            prices: LTPs, quote currency per unit (finite, > 0).
            ts_ns: update times, ns UTC (ints or a pyarrow timestamp array), non-decreasing.

        Raises:
            M2MError: arrays of different lengths, an unknown symbol id, a price that is not finite and
                > 0, or times that go back; the batch is then not applied at all.
        """
        if isinstance(ts_ns, pa.ChunkedArray | pa.Array):
            ts_ns = pc.cast(ts_ns, pa.int64()).to_numpy(zero_copy_only=False)
        ts = np.asarray(ts_ns, dtype=np.int64)
        price = np.asarray(prices, dtype=np.float64)
        n = len(price)
        if len(ts) != n:
            raise M2MError("ts_ns", f"has {len(ts)} rows but prices has {n}")
        bad = np.nonzero(~(np.isfinite(price) & (price > 0)))[0]
        if len(bad):
            raise M2MError("prices", f"must be finite and > 0; row {int(bad[0])} is {price[bad[0]]!r}")
        back = np.nonzero(ts[1:] < ts[:-1])[0]
        if len(back):
            raise M2MError("ts_ns", f"must be non-decreasing; row {int(back[0]) + 1} goes back in time")
        sym = self._symbol_ids(symbols, n)
        if n:
            keep = ts >= self._last_ts[sym]
            if self._skip:
                keep &= self._replay_filter(sym, ts)
            self.stale_dropped += int(n - keep.sum())
            if not keep.all():
                sym, price, ts = sym[keep], price[keep], ts[keep]
        if len(ts):
            self._record_watermarks(sym, ts)
            minutes = ts - ts % NS_PER_MINUTE
            cuts = np.concatenate(([0], np.nonzero(minutes[1:] != minutes[:-1])[0] + 1, [len(ts)]))
            for i in range(len(cuts) - 1):
                lo, hi = int(cuts[i]), int(cuts[i + 1])
                self._advance(int(minutes[lo]))
                self._segment(sym[lo:hi], price[lo:hi], ts[lo:hi])
            self._wm = int(ts[-1]) if self._wm is None else max(self._wm, int(ts[-1]))
        return self.drain()

    def _replay_filter(self, sym: IntArray, ts: IntArray) -> BoolArray:
        keep = np.ones(len(sym), dtype=bool)
        for k in list(self._skip):
            wm_ts, remaining = self._skip[k]
            mine = sym == k
            if not mine.any():
                continue
            dup = np.nonzero(mine & (ts == wm_ts))[0][:remaining]
            keep[dup] = False
            self._skip[k][1] -= len(dup)
            if self._skip[k][1] <= 0 or (mine & (ts > wm_ts)).any():
                del self._skip[k]
        return keep

    def _record_watermarks(self, sym: IntArray, ts: IntArray) -> None:
        o = np.argsort(sym, kind="stable")
        ks, tt = sym[o], ts[o]
        last = np.ones(len(ks), dtype=bool)
        last[:-1] = ks[1:] != ks[:-1]
        k_last, t_last = ks[last], tt[last]
        group = np.cumsum(np.concatenate(([True], last[:-1]))) - 1
        at_last = np.bincount(group, weights=(tt == t_last[group]), minlength=len(k_last)).astype(np.int64)
        same = self._last_ts[k_last] == t_last
        self._last_seq[k_last] = np.where(same, self._last_seq[k_last] + at_last, at_last)
        self._last_ts[k_last] = t_last

    def _segment(self, sym: IntArray, price: FloatArray, ts: IntArray) -> None:
        if self._wait and self._wait_mask[sym].any():
            self._switch_to_ltp(np.unique(sym[self._wait_mask[sym]]), int(ts[0]))
        p = self._p
        p.rebuild_order(len(self._s_keys))
        pairs = PairArrays(p.order, p.s, p.sym, p.E, p.C, p.V, p.nlegs, p.model)
        st = self._s
        res = self._paths.paths(sym, price, ts, len(self._symbols), pairs, st.m2m, self._slot_model_values)
        last = np.ones(len(sym), dtype=bool)
        o = np.argsort(sym, kind="stable")
        last[:-1] = sym[o][1:] != sym[o][:-1]
        self._last[sym[o][last]] = price[o][last]
        if res is None:
            return
        self.leg_updates += res.leg_updates
        us = res.strategies
        before = st.m2m[us]
        st.m2m[us] = self._m2m_of(us)
        new = ~st.c_on[us]
        st.c_open[us[new]] = before[new]
        st.c_high[us[new]] = before[new]
        st.c_low[us[new]] = before[new]
        st.c_high[us] = np.maximum(np.maximum(st.c_high[us], res.high), st.m2m[us])
        st.c_low[us] = np.minimum(np.minimum(st.c_low[us], res.low), st.m2m[us])
        st.c_upd[us] += res.counts
        st.c_on[us] = True
        st.c_model[us] |= st.nmodel[us] > 0
        self._a_live[st.acct[us]] = True
        limited = np.isfinite(st.target[us]) | np.isfinite(st.stop[us])
        if limited.any():
            self._path_events(res.strategies, res.counts, res.path, ts[res.tick], limited)

    # ------------------------------------------------------------------ reads
    def mark(self, account_id: str, instance_id: str) -> StrategyMark:
        """A strategy's current unrealized, realized and total P&L (quote currency).

        Raises:
            M2MError: an unknown account, or an instance this account does not hold.
        """
        self._account(account_id).book.strategy(instance_id)
        s = self._s_index[(account_id, instance_id)]
        u, r = float(self._s.m2m[s]), float(self._s.realized[s])
        return StrategyMark(u, r, u + r)

    def marks(self) -> pa.Table:
        """Current P&L of every strategy: account_id, instance_id, unrealized_pnl, realized_pnl, total_pnl."""
        n = len(self._s_keys)
        u, r = self._s.m2m[:n], self._s.realized[:n]
        return pa.Table.from_arrays(
            [
                pa.array([k[0] for k in self._s_keys], pa.string()),
                pa.array([k[1] for k in self._s_keys], pa.string()),
                pa.array(u.copy()),
                pa.array(r.copy()),
                pa.array(u + r),
            ],
            schema=_MARKS_SCHEMA,
        )

    # ------------------------------------------------------------------ snapshot
    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain data (see the module docstring); :meth:`restore` rebuilds it."""
        return take_snapshot(self)

    @classmethod
    def restore(cls, data: dict[str, Any]) -> M2MAggregatorCore:
        """A core rebuilt from :meth:`snapshot` output.

        Raises:
            M2MError: an unknown snapshot version or inconsistent content (named field and rule).
        """
        core = cls(model_marking=bool(data.get("model_marking", True)))
        restore_snapshot(core, data)
        return core


def _string_array(symbols: Any) -> pa.Array:
    """``symbols`` (an Arrow string or dictionary array, or a sequence of str) as an Arrow string array.

    Raises:
        M2MError: they are not strings.
    """
    if isinstance(symbols, pa.ChunkedArray):
        symbols = symbols.combine_chunks()
    if not isinstance(symbols, pa.Array):
        try:
            symbols = pa.array(list(symbols) if not isinstance(symbols, np.ndarray) else symbols.tolist())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise M2MError("symbols", f"must be strings: {exc}") from exc
    if pa.types.is_dictionary(symbols.type):
        symbols = symbols.cast(pa.string())
    if pa.types.is_null(symbols.type) and len(symbols):
        raise M2MError("symbols", "must be strings, got nulls")
    if not (pa.types.is_string(symbols.type) or pa.types.is_large_string(symbols.type) or len(symbols) == 0):
        raise M2MError("symbols", f"must be strings, got {symbols.type}")
    return symbols.cast(pa.string()) if len(symbols) else pa.array([], pa.string())

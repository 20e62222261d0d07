"""Growable per-strategy and per-pair arrays of the M2M aggregator (internal)."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.m2m._kernel import BoolArray, FloatArray, IntArray
from engine.m2m.legs import Leg

#: per-strategy columns: name -> (dtype, initial value)
STRATEGY_FIELDS: dict[str, tuple[type, Any]] = {
    "acct": (np.int64, 0),
    "target": (np.float64, np.nan),  # target_profit, NaN = none
    "stop": (np.float64, np.nan),  # stop_loss (a positive loss amount), NaN = none
    "realized": (np.float64, 0.0),  # cumulative realized P&L
    "m2m": (np.float64, 0.0),  # current unrealized M2M
    "nopen": (np.int64, 0),  # open legs
    "nmodel": (np.int64, 0),  # open legs marked by the option model
    "c_on": (np.bool_, False),  # the open minute's candle has started
    "c_open": (np.float64, 0.0),
    "c_high": (np.float64, 0.0),
    "c_low": (np.float64, 0.0),
    "c_upd": (np.int64, 0),
    "c_model": (np.bool_, False),
    "d_on": (np.bool_, False),  # a candle was emitted this local day
    "d_realized": (np.float64, 0.0),
    "d_max": (np.float64, -np.inf),
    "d_min": (np.float64, np.inf),
    "d_trades": (np.int64, 0),
    "d_model": (np.bool_, False),
    "e_tgt": (np.bool_, False),  # total >= target now (armed when False)
    "e_stop": (np.bool_, False),  # total <= -stop now
}
DAY_FIELDS = ("d_on", "d_realized", "d_max", "d_min", "d_trades", "d_model")


class StrategyArrays:
    """One numpy array per field of :data:`STRATEGY_FIELDS`, indexed by strategy index, grown by doubling."""

    acct: IntArray
    target: FloatArray
    stop: FloatArray
    realized: FloatArray
    m2m: FloatArray
    nopen: IntArray
    nmodel: IntArray
    c_on: BoolArray
    c_open: FloatArray
    c_high: FloatArray
    c_low: FloatArray
    c_upd: IntArray
    c_model: BoolArray
    d_on: BoolArray
    d_realized: FloatArray
    d_max: FloatArray
    d_min: FloatArray
    d_trades: IntArray
    d_model: BoolArray
    e_tgt: BoolArray
    e_stop: BoolArray

    def __init__(self) -> None:
        self.capacity = 0
        for name, (dtype, init) in STRATEGY_FIELDS.items():
            setattr(self, name, np.full(0, init, dtype=dtype))

    def grow(self, n: int) -> None:
        """Make room for ``n`` strategies (new rows hold the initial values)."""
        if n <= self.capacity:
            return
        cap = max(n, 2 * self.capacity, 64)
        for name, (dtype, init) in STRATEGY_FIELDS.items():
            old = getattr(self, name)
            new: np.ndarray = np.full(cap, init, dtype=dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        self.capacity = cap

    def reset_day(self, idx: IntArray) -> None:
        """Start a new day for strategies ``idx``."""
        for name in DAY_FIELDS:
            getattr(self, name)[idx] = STRATEGY_FIELDS[name][1]


class PairStore:
    """Pairs (strategy, marking symbol) in reusable slots, with the legs each marks.

    A pair's *linear* legs are marked at its symbol's LTP; its *model* legs are options marked by
    Black-Scholes from its symbol (their underlying). ``order`` lists live slots sorted by (strategy,
    symbol); ``s_ptr``/``s_count`` give each strategy's range in it.
    """

    def __init__(self) -> None:
        self.capacity = 0
        self.n = 0
        self.s = np.zeros(0, dtype=np.int64)
        self.sym = np.zeros(0, dtype=np.int64)
        self.E = np.zeros(0)
        self.C = np.zeros(0)
        self.V = np.zeros(0)
        self.nlegs = np.zeros(0, dtype=np.int64)
        self.model = np.zeros(0, dtype=bool)
        self.alive = np.zeros(0, dtype=bool)
        self.linear_legs: list[dict[str, Leg]] = []
        self.model_legs: list[dict[str, Leg]] = []
        self.index: dict[tuple[int, int], int] = {}
        #: strategy -> {symbol: slot}
        self.by_strategy: dict[int, dict[int, int]] = {}
        self.free_slots: list[int] = []
        self.order = np.zeros(0, dtype=np.int64)
        self.s_ptr = np.zeros(0, dtype=np.int64)
        self.s_count = np.zeros(0, dtype=np.int64)
        self.dirty = False

    def _grow(self) -> None:
        cap = max(2 * self.capacity, 256)
        for name in ("s", "sym", "E", "C", "V", "nlegs", "model", "alive"):
            old = getattr(self, name)
            new: np.ndarray = np.zeros(cap, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        self.capacity = cap

    def slot(self, s: int, sym: int) -> int:
        """The slot of pair (s, sym), created empty (E = C = V = 0) when new."""
        slot = self.index.get((s, sym))
        if slot is not None:
            return slot
        if self.free_slots:
            slot = self.free_slots.pop()
        else:
            if self.n == self.capacity:
                self._grow()
            slot = self.n
            self.n += 1
            self.linear_legs.append({})
            self.model_legs.append({})
        self.index[(s, sym)] = slot
        self.by_strategy.setdefault(s, {})[sym] = slot
        self.s[slot], self.sym[slot] = s, sym
        self.E[slot] = self.C[slot] = self.V[slot] = 0.0
        self.nlegs[slot], self.model[slot], self.alive[slot] = 0, False, True
        self.linear_legs[slot], self.model_legs[slot] = {}, {}
        self.dirty = True
        return slot

    def free(self, slot: int) -> None:
        """Drop an empty pair."""
        s, sym = int(self.s[slot]), int(self.sym[slot])
        del self.index[(s, sym)]
        del self.by_strategy[s][sym]
        self.alive[slot] = False
        self.E[slot] = self.C[slot] = self.V[slot] = 0.0
        self.nlegs[slot], self.model[slot] = 0, False
        self.free_slots.append(slot)
        self.dirty = True

    def strategy_slots(self, s: int) -> list[int]:
        """Slots of strategy ``s``'s pairs in symbol order (the order sums are taken in)."""
        d = self.by_strategy.get(s, {})
        return [d[k] for k in sorted(d)]

    def rebuild_order(self, n_strategies: int) -> None:
        """Refresh ``order``, ``s_ptr`` and ``s_count`` after pairs were added or dropped."""
        if not self.dirty and len(self.s_count) >= n_strategies:
            return
        live = np.nonzero(self.alive[: self.n])[0]
        self.order = live[np.lexsort((self.sym[live], self.s[live]))]
        self.s_count = np.bincount(self.s[self.order], minlength=n_strategies).astype(np.int64)
        self.s_ptr = np.cumsum(self.s_count) - self.s_count
        self.dirty = False

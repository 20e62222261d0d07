"""Pair and leg state of the M2M aggregator: which legs mark through which (strategy, symbol) pair,
their exposure, and model marks of option legs (internal; see :mod:`engine.m2m.aggregator`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from engine.m2m._kernel import FloatArray, IntArray
from engine.m2m._state import PairStore, StrategyArrays
from engine.m2m.book import StrategyBook
from engine.m2m.legs import Leg, M2MError, _text
from engine.m2m.options import NS_PER_YEAR_365, bs_price_array
from engine.m2m.tables import CANDLE_SCHEMA, DAILY_SCHEMA, M2MEvent, RowBuffer

_NO_TS = np.iinfo(np.int64).min


@dataclass
class _Account:
    index: int
    account_id: str
    tz_name: str
    tz: ZoneInfo
    rate: float
    div_yield: float
    book: StrategyBook
    day: date | None = None
    day_end: int | None = None


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(_text("tz", tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise M2MError("tz", f"must be an IANA time zone such as 'Asia/Kolkata' or 'UTC', got {tz!r}") from None


def _day_bounds(ts: int, tz: ZoneInfo) -> tuple[date, int]:
    """The local date of ``ts`` (ns UTC) in ``tz`` and the ns UTC of the next local midnight."""
    day = datetime.fromtimestamp(ts // 1_000_000_000, tz).date()
    nxt = datetime.combine(day + timedelta(days=1), dtime(0), tz)
    return day, int(nxt.timestamp()) * 1_000_000_000


class MarkingState:
    """The aggregator's state and its leg/pair bookkeeping (base of :class:`M2MAggregatorCore`)."""

    def __init__(self, *, model_marking: bool = True) -> None:
        self.model_marking = bool(model_marking)
        self._accounts: list[_Account] = []
        self._acct_index: dict[str, int] = {}
        self._symbols: list[str] = []
        self._sym_ids: dict[str, int] = {}
        self._last = np.full(0, np.nan)
        self._last_ts = np.full(0, _NO_TS, dtype=np.int64)
        self._last_seq = np.zeros(0, dtype=np.int64)
        self._wait_mask = np.zeros(0, dtype=bool)
        #: option symbol id -> {(account index, leg id)} of model-marked legs waiting for its first price
        self._wait: dict[int, set[tuple[int, str]]] = {}
        self._skip: dict[int, list[int]] = {}
        self._s = StrategyArrays()
        self._s_keys: list[tuple[str, str]] = []
        self._s_index: dict[tuple[str, str], int] = {}
        self._p = PairStore()
        self._leg_slot: dict[tuple[int, str], int] = {}
        self._a_live = np.zeros(0, dtype=bool)
        self._minute: int | None = None
        self._wm: int | None = None
        self._candles = RowBuffer(CANDLE_SCHEMA)
        self._daily = RowBuffer(DAILY_SCHEMA)
        self._events: list[M2MEvent] = []
        self.leg_updates = 0
        self.stale_dropped = 0

    def _account(self, account_id: str) -> _Account:
        i = self._acct_index.get(account_id)
        if i is None:
            raise M2MError("account_id", f"unknown account {account_id!r}")
        return self._accounts[i]

    def symbol_id(self, symbol: str) -> int:
        """The interned int id of ``symbol`` (assigned on first use, stable for the core's life and
        across snapshot/restore); :meth:`on_prices` accepts these ids instead of strings."""
        i = self._sym_ids.get(symbol)
        if i is None:
            _text("symbol", symbol)
            i = self._sym_ids[symbol] = len(self._symbols)
            self._symbols.append(symbol)
            self._last = np.append(self._last, np.nan)
            self._last_ts = np.append(self._last_ts, _NO_TS)
            self._last_seq = np.append(self._last_seq, 0)
            self._wait_mask = np.append(self._wait_mask, False)
        return i

    def _strategy_index(self, a: _Account, instance_id: str) -> int:
        key = (a.account_id, instance_id)
        s = self._s_index.get(key)
        if s is None:
            s = self._s_index[key] = len(self._s_keys)
            self._s_keys.append(key)
            self._s.grow(s + 1)
            self._s.acct[s] = a.index
        return s

    def _set_limits(self, a: _Account, instance_id: str, target: float | None, stop: float | None) -> None:
        s = self._s_index[(a.account_id, instance_id)]
        self._s.target[s] = np.nan if target is None else target
        self._s.stop[s] = np.nan if stop is None else stop

    def _now(self, fallback: int) -> int:
        return self._wm if self._wm is not None else fallback

    def _model_legs_value(self, legs: Sequence[Leg], a: _Account, price: FloatArray, ts: IntArray) -> FloatArray:
        out = np.zeros(len(price))
        for leg in legs:
            assert leg.expiry_ts is not None and leg.strike is not None and leg.implied_vol is not None
            t = (leg.expiry_ts - ts) / NS_PER_YEAR_365
            v = bs_price_array(leg.option_type == "C", price, leg.strike, t, leg.implied_vol, a.rate, a.div_yield)
            out += (v - leg.entry_price) * (leg.qty * leg.side * leg.multiplier)
        return out

    def _slot_model_values(self, slot: int, price: FloatArray, ts: IntArray) -> FloatArray:
        a = self._accounts[int(self._s.acct[self._p.s[slot]])]
        return self._model_legs_value(list(self._p.model_legs[slot].values()), a, price, ts)

    def _attach(self, a: _Account, s: int, leg: Leg) -> set[int]:
        """Track ``leg``'s new state in its pair; returns the pair slots to refresh."""
        key = (a.index, leg.leg_id)
        slot = self._leg_slot.get(key)
        if leg.is_open:
            if slot is None:
                own = self.symbol_id(leg.symbol)
                if self.model_marking and leg.modelable and math.isnan(self._last[own]):
                    assert leg.underlying is not None
                    slot = self._p.slot(s, self.symbol_id(leg.underlying))
                    self._p.model_legs[slot][leg.leg_id] = leg
                    self._wait.setdefault(own, set()).add(key)
                    self._wait_mask[own] = True
                    self._s.nmodel[s] += 1
                else:
                    slot = self._p.slot(s, own)
                    self._p.linear_legs[slot][leg.leg_id] = leg
                self._leg_slot[key] = slot
                self._s.nopen[s] += 1
            else:
                holder = (
                    self._p.linear_legs[slot] if leg.leg_id in self._p.linear_legs[slot] else self._p.model_legs[slot]
                )
                holder[leg.leg_id] = leg
            return {slot}
        if slot is None:
            return set()
        if leg.leg_id in self._p.model_legs[slot]:
            del self._p.model_legs[slot][leg.leg_id]
            own = self._sym_ids[leg.symbol]
            waiting = self._wait.get(own, set())
            waiting.discard(key)
            if not waiting:
                self._wait.pop(own, None)
                self._wait_mask[own] = False
            self._s.nmodel[s] -= 1
        else:
            del self._p.linear_legs[slot][leg.leg_id]
        del self._leg_slot[key]
        self._s.nopen[s] -= 1
        return {slot}

    def _refresh(self, slots: set[int], *, keep_value: bool = False) -> None:
        """Recompute exposure, constant and (unless ``keep_value``) current value of pair ``slots``."""
        p = self._p
        for slot in slots:
            lin, mod = p.linear_legs[slot], p.model_legs[slot]
            if not lin and not mod:
                p.free(slot)
                continue
            e = sum(leg.qty * leg.side * leg.multiplier for leg in lin.values())
            c = sum(leg.entry_price * leg.qty * leg.side * leg.multiplier for leg in lin.values())
            p.E[slot], p.C[slot], p.nlegs[slot], p.model[slot] = e, c, len(lin) + len(mod), bool(mod)
            if keep_value:
                continue
            price = self._last[p.sym[slot]]
            v = 0.0
            if not math.isnan(price):
                v = e * price - c
                if mod:
                    a = self._accounts[int(self._s.acct[p.s[slot]])]
                    now = self._now(max(leg.updated_ts for leg in mod.values()))
                    v += float(
                        self._model_legs_value(
                            list(mod.values()), a, np.array([price]), np.array([now], dtype=np.int64)
                        )[0]
                    )
            p.V[slot] = v

    def _m2m_of(self, strategies: IntArray) -> FloatArray:
        """Σ of each strategy's pair values, in symbol order (np.add.reduceat, so the sum is the same
        whether taken after a batch or after a leg operation)."""
        p = self._p
        if not len(strategies):
            return np.zeros(0)
        if p.dirty or len(p.s_count) < len(self._s_keys):
            out = np.zeros(len(strategies))
            for j, s in enumerate(strategies.tolist()):
                slots = p.strategy_slots(s)
                if slots:
                    out[j] = np.add.reduceat(p.V[slots], [0])[0]
            return out
        n = p.s_count[strategies]
        out = np.zeros(len(strategies))
        has = n > 0
        if has.any():
            nn = n[has]
            ends = np.cumsum(nn)
            pos = np.repeat(p.s_ptr[strategies[has]] - (ends - nn), nn) + np.arange(int(ends[-1]))
            out[has] = np.add.reduceat(p.V[p.order[pos]], ends - nn)
        return out

    def _switch_to_ltp(self, option_syms: IntArray, ts: int) -> None:
        """Move the model-marked legs of ``option_syms`` to their own symbol's LTP, carrying their value."""
        for k in option_syms.tolist():
            for a_idx, leg_id in sorted(self._wait.pop(int(k), set())):
                a = self._accounts[a_idx]
                slot = self._leg_slot[(a_idx, leg_id)]
                leg = self._p.model_legs[slot].pop(leg_id)
                s = int(self._p.s[slot])
                u_price = self._last[self._p.sym[slot]]
                carried = 0.0
                if not math.isnan(u_price):
                    carried = float(
                        self._model_legs_value(
                            [leg], a, np.array([u_price]), np.array([self._now(ts)], dtype=np.int64)
                        )[0]
                    )
                self._p.V[slot] -= carried
                self._refresh({slot}, keep_value=True)
                new = self._p.slot(s, int(k))
                self._p.linear_legs[new][leg_id] = leg
                self._refresh({new}, keep_value=True)
                self._p.V[new] += carried
                self._leg_slot[(a_idx, leg_id)] = new
                self._s.nmodel[s] -= 1
            self._wait_mask[k] = False

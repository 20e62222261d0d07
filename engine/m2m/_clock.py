"""Candles, days, target/stop events and book changes of the M2M aggregator (internal; see
:mod:`engine.m2m.aggregator` for the rules)."""

from __future__ import annotations

from datetime import date

import numpy as np

from engine.m2m._kernel import BoolArray, FloatArray, IntArray
from engine.m2m._marking import MarkingState, _Account, _day_bounds
from engine.m2m.book import BookChange
from engine.m2m.legs import M2MError
from engine.m2m.tables import M2MEvent, M2MOutput
from engine.timeframes import NS_PER_MINUTE

_EPOCH = date(1970, 1, 1)


class ClockState(MarkingState):
    """Applies book changes and price paths to the open minute's candles; closes minutes and days."""

    def _on_change(self, a: _Account, change: BookChange) -> None:
        """Book listener: apply a change's strategies, legs and exits at the current feed time."""
        for st in change.strategies:
            s = self._strategy_index(a, st.instance_id)
            self._set_limits(a, st.instance_id, st.target_profit, st.stop_loss)
            if change.kind == "set_limits":
                self._s.e_tgt[s] = self._s.e_stop[s] = False
        touched: dict[int, None] = {self._s_index[(a.account_id, st.instance_id)]: None for st in change.strategies}
        slots: set[int] = set()
        inst = {}
        for leg in change.legs:
            s = self._s_index[(a.account_id, leg.instance_id)]
            inst[leg.leg_id] = s
            touched[s] = None
            slots |= self._attach(a, s, leg)
        self._refresh(slots)
        ss = np.fromiter(touched, dtype=np.int64, count=len(touched))
        before = self._s.m2m[ss].copy()
        self._s.m2m[ss] = self._m2m_of(ss)
        for ex in change.exits:
            s = inst[ex.leg_id]
            self._s.realized[s] += ex.realized_pnl
            self._s.d_realized[s] += ex.realized_pnl
            self._s.d_trades[s] += 1
        for leg_id in change.opened:
            self._s.d_trades[inst[leg_id]] += 1
        if change.legs and self._minute is not None:
            self._observe(ss, before, self._s.m2m[ss])
        self._check_limits(ss, self._now(change.ts))

    def _observe(self, ss: IntArray, before: FloatArray, after: FloatArray) -> None:
        """Start or extend the open minute's candles of ``ss`` with a jump from ``before`` to ``after``."""
        st = self._s
        new = ~st.c_on[ss]
        st.c_open[ss[new]] = before[new]
        st.c_high[ss[new]] = before[new]
        st.c_low[ss[new]] = before[new]
        st.c_high[ss] = np.maximum(st.c_high[ss], after)
        st.c_low[ss] = np.minimum(st.c_low[ss], after)
        st.c_on[ss] = True
        st.c_model[ss] |= st.nmodel[ss] > 0
        self._a_live[st.acct[ss]] = True

    def _check_limits(self, ss: IntArray, ts: int) -> None:
        st = self._s
        if np.isnan(st.target[ss]).all() and np.isnan(st.stop[ss]).all():
            st.e_tgt[ss] = st.e_stop[ss] = False
            return
        total = st.m2m[ss] + st.realized[ss]
        for kind, state, hit in (
            ("target", st.e_tgt, total >= st.target[ss]),
            ("stop", st.e_stop, total <= -st.stop[ss]),
        ):
            for j in np.nonzero(hit & ~state[ss])[0]:
                s = int(ss[j])
                thr = float(st.target[s]) if kind == "target" else -float(st.stop[s])
                self._events.append(M2MEvent(*self._s_keys[s], kind, ts, float(total[j]), thr))
            state[ss] = hit

    def _path_events(
        self, us: IntArray, counts: IntArray, path: FloatArray, when: IntArray, limited: BoolArray
    ) -> None:
        st = self._s
        run = np.repeat(np.arange(len(us)), counts)
        starts = np.cumsum(counts) - counts
        ends = starts + counts - 1
        total = path + st.realized[us][run]
        found: list[tuple[int, int, M2MEvent]] = []
        for kind, state, hit in (
            ("target", st.e_tgt, total >= st.target[us][run]),
            ("stop", st.e_stop, total <= -st.stop[us][run]),
        ):
            prev = np.empty(len(hit), dtype=bool)
            prev[1:] = hit[:-1]
            prev[starts] = state[us]
            for j in np.nonzero(hit & ~prev)[0]:
                s = int(us[run[j]])
                thr = float(st.target[s]) if kind == "target" else -float(st.stop[s])
                found.append((int(when[j]), s, M2MEvent(*self._s_keys[s], kind, int(when[j]), float(total[j]), thr)))
            state[us[limited]] = hit[ends][limited]
        found.sort(key=lambda e: (e[0], e[1]))
        self._events.extend(e for _, _, e in found)

    def close_until(self, ts_ns: int) -> M2MOutput:
        """Close every minute that ends at or before ``ts_ns`` (the feed watermark: no update older than
        it will come) and the days that ended; returns what closed.

        Raises:
            M2MError: ``ts_ns`` is not an int.
        """
        if isinstance(ts_ns, bool) or not isinstance(ts_ns, int | np.integer):
            raise M2MError("ts_ns", f"must be an int (ns UTC), got {ts_ns!r}")
        t = int(ts_ns)
        if self._minute is not None and t >= self._minute + NS_PER_MINUTE:
            self._advance(t - t % NS_PER_MINUTE)
        self._wm = t if self._wm is None else max(self._wm, t)
        return self.drain()

    def _advance(self, minute: int) -> None:
        if self._minute is None:
            self._minute = minute
            for a in self._accounts:
                a.day, a.day_end = _day_bounds(minute, a.tz)
            return
        if minute <= self._minute:
            return
        self._close_minute()
        self._minute = minute
        for a in self._accounts:
            if a.day_end is None:
                a.day, a.day_end = _day_bounds(minute, a.tz)
            elif minute >= a.day_end:
                self._close_day(a)
                a.day, a.day_end = _day_bounds(minute, a.tz)

    def _close_minute(self) -> None:
        assert self._minute is not None
        st, n = self._s, len(self._s_keys)
        emit = st.c_on[:n] | ((st.nopen[:n] > 0) & self._a_live[st.acct[:n]])
        idx = np.nonzero(emit)[0]
        if len(idx):
            flat = idx[~st.c_on[idx]]
            st.c_open[flat] = st.c_high[flat] = st.c_low[flat] = st.m2m[flat]
            model = st.c_model[idx] | (st.nmodel[idx] > 0)
            close, realized = st.m2m[idx], st.realized[idx]
            self._candles.append(
                account_id=[self._s_keys[i][0] for i in idx.tolist()],
                instance_id=[self._s_keys[i][1] for i in idx.tolist()],
                ts=np.full(len(idx), self._minute, dtype=np.int64),
                open=st.c_open[idx].copy(),
                high=st.c_high[idx].copy(),
                low=st.c_low[idx].copy(),
                close=close,
                realized_pnl=realized,
                total_pnl=close + realized,
                updates=st.c_upd[idx].copy(),
                model_mark=model,
            )
            st.d_on[idx] = True
            st.d_max[idx] = np.maximum(st.d_max[idx], st.c_high[idx])
            st.d_min[idx] = np.minimum(st.d_min[idx], st.c_low[idx])
            st.d_model[idx] |= model
        st.c_on[:n] = False
        st.c_upd[:n] = 0
        st.c_model[:n] = False
        self._a_live[:] = False

    def _close_day(self, a: _Account) -> None:
        assert a.day is not None
        st, n = self._s, len(self._s_keys)
        mine = st.acct[:n] == a.index
        idx = np.nonzero(mine & (st.d_on[:n] | (st.d_trades[:n] > 0) | (st.d_realized[:n] != 0)))[0]
        if len(idx):
            m2m = st.m2m[idx]
            self._daily.append(
                account_id=[self._s_keys[i][0] for i in idx.tolist()],
                instance_id=[self._s_keys[i][1] for i in idx.tolist()],
                day=np.full(len(idx), (a.day - _EPOCH).days, dtype=np.int32),
                realized_pnl=st.d_realized[idx].copy(),
                unrealized_pnl=m2m,
                total_pnl=st.realized[idx] + m2m,
                max_m2m=np.where(np.isfinite(st.d_max[idx]), st.d_max[idx], m2m),
                min_m2m=np.where(np.isfinite(st.d_min[idx]), st.d_min[idx], m2m),
                trades=st.d_trades[idx].copy(),
                model_mark=st.d_model[idx].copy(),
            )
        st.reset_day(np.nonzero(mine)[0])

    # ------------------------------------------------------------------ output and reads
    def drain(self) -> M2MOutput:
        """Everything emitted since the last call (closed candles, daily rows, events)."""
        events, self._events = self._events, []
        return M2MOutput(self._candles.table(), self._daily.table(), events)

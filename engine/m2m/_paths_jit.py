"""The compiled hot path: M2M paths of the strategies touched by one batch segment (numba).

Same contract and the same floating-point operations, in the same order, as the numpy reference
:func:`engine.m2m._kernel.segment_paths` (see that module for the per-(strategy, symbol) *pair* model),
so its results are bit-for-bit identical (tests/test_m2m_aggregator.py checks every segment); it
replaces the reference's sorts and ``np.repeat`` expansions by a few linear passes:

1. per symbol, the live pair slots holding it (a CSR index in :class:`PathKernel`, rebuilt only
   when pairs are added or dropped);
2. each touched strategy's run in the output is sized from the update counts of its pairs' symbols
   (runs in ascending strategy order, as in the reference);
3. the updates are walked in time order and every pair of the updated symbol appends its M2M change
   to its strategy's run, so each run is in time order without a sort;
4. one pass over the runs takes the running sum, the path values and each run's high/low.

Option pairs marked by the model (rare) get their per-update values from Python (Black-Scholes) before
the compiled pass, exactly as in the reference. The kernel is compiled once per process (numba's
on-disk cache makes that about 0.15 s) when the first :class:`PathKernel` is made, not on a price batch.
"""

from __future__ import annotations

import numba
import numpy as np

from engine.m2m._kernel import BoolArray, FloatArray, IntArray, ModelValues, PairArrays, SegmentPaths


class PathKernel:
    """Segment paths (:meth:`paths`) with what is worth keeping between calls: per symbol, the live
    pair slots marked at it in ascending strategy order (CSR: ``slots[ptr[k]:ptr[k + 1]]`` for symbol
    id ``k``, and ``strat``, each slot's strategy; rebuilt only when the pair store's ``order`` array
    is replaced, i.e. pairs were added or dropped, or the number of symbols changed), and the
    per-entry buffers, reused so that a batch does not pay for fresh memory (first-touch page faults
    cost more than the pass itself)."""

    def __init__(self) -> None:
        self._order: IntArray | None = None
        self.ptr: IntArray = np.zeros(1, dtype=np.int64)
        self.slots: IntArray = np.zeros(0, dtype=np.int64)
        self.strat: IntArray = np.zeros(0, dtype=np.int64)
        self._exposure: FloatArray = np.zeros(0)
        self._path: FloatArray = np.zeros(0)
        self._tick: IntArray = np.zeros(0, dtype=np.int64)
        _warm_up()

    def _refresh(self, pairs: PairArrays, n_symbols: int) -> None:
        if pairs.order is self._order and len(self.ptr) == n_symbols + 1:
            return
        order = pairs.order
        syms = pairs.sym[order]
        self.slots = np.ascontiguousarray(order[np.argsort(syms, kind="stable")], dtype=np.int64)
        self.strat = np.ascontiguousarray(pairs.s[self.slots], dtype=np.int64)
        self.ptr = np.zeros(n_symbols + 1, dtype=np.int64)
        np.cumsum(np.bincount(syms, minlength=n_symbols), out=self.ptr[1:])
        self._exposure = np.empty(len(self.slots))
        self._order = order

    def _buffers(self, total: int) -> tuple[FloatArray, IntArray]:
        if len(self._path) < total:
            cap = max(total, 2 * len(self._path))
            self._path, self._tick = np.empty(cap), np.empty(cap, dtype=np.int64)
        return self._path[:total], self._tick[:total]

    def paths(
        self,
        sym: IntArray,
        price: FloatArray,
        ts: IntArray,
        n_symbols: int,
        pairs: PairArrays,
        m2m: FloatArray,
        model_values: ModelValues,
    ) -> SegmentPaths | None:
        """Paths of the strategies touched by updates (``sym``: symbol ids < ``n_symbols``; ``price``:
        LTPs in quote currency; ``ts``: ns UTC; time-ordered, one minute): a drop-in for
        :func:`engine.m2m._kernel.segment_paths` with bit-for-bit identical results.

        ``m2m`` holds every strategy's M2M (quote currency) before the segment. Updates ``pairs.V``.
        Returns None when no pair holds any of the updated symbols. The result's ``path`` and ``tick``
        are views of reused buffers, valid until the next call.
        """
        self._refresh(pairs, n_symbols)
        sym = np.ascontiguousarray(sym, dtype=np.int64)
        price = np.ascontiguousarray(price, dtype=np.float64)
        cnt = np.bincount(sym, minlength=n_symbols)
        total = int(np.dot(cnt, np.diff(self.ptr)))  # entries: Σ updates of each pair's symbol
        if not total:
            return None
        sym_model = np.zeros(n_symbols, dtype=np.bool_)
        model_off = np.zeros(0, dtype=np.int64)
        model_delta = np.zeros(0)
        model_last: dict[int, float] = {}
        if pairs.model.any():  # option pairs marked by the model: per-update values from Black-Scholes
            model_off = np.full(len(self.slots), -1, dtype=np.int64)
            chunks: list[FloatArray] = []
            offset = 0
            for k in np.nonzero(cnt)[0].tolist():
                lo = int(self.ptr[k])
                modelled = np.nonzero(pairs.model[self.slots[lo : self.ptr[k + 1]]])[0] + lo
                if not len(modelled):
                    continue
                sym_model[k] = True
                ticks = np.nonzero(sym == k)[0]
                for q in modelled.tolist():
                    slot = int(self.slots[q])
                    e, c = pairs.E[slot], pairs.C[slot]
                    vals = e * price[ticks] - c + model_values(slot, price[ticks], ts[ticks])
                    chunks.append(np.diff(vals, prepend=pairs.V[slot]))
                    model_off[q] = offset
                    offset += len(vals)
                    model_last[slot] = float(vals[-1])
            model_delta = np.concatenate(chunks) if chunks else model_delta
        path, tick = self._buffers(total)
        strategies, counts, starts, high, low, leg_updates = _segment_kernel(
            sym, price, cnt, self.ptr, self.slots, self.strat, pairs.E, pairs.C, pairs.V, pairs.nlegs,
            sym_model, model_off, model_delta, m2m, self._exposure, path, tick,
        )  # fmt: skip
        for slot, v in model_last.items():
            pairs.V[slot] = v
        return SegmentPaths(strategies, counts, starts, path, tick, high, low, int(leg_updates))


_warmed_up = False


def _warm_up() -> None:
    """Compile (or load from numba's on-disk cache) the kernel once per process, so the first price
    batch does not pay for it (about 1 s cold, 0.15 s from the cache)."""
    global _warmed_up
    if _warmed_up:
        return
    i, f = np.zeros(1, dtype=np.int64), np.zeros(1)
    b = np.zeros(1, dtype=np.bool_)
    ptr = np.array([0, 1], dtype=np.int64)
    _segment_kernel(i, np.ones(1), np.ones(1, dtype=np.int64), ptr, i, i, f, f, f.copy(), i, b,
                    i[:0], f[:0], f, f.copy(), f.copy(), i.copy())  # fmt: skip
    _warmed_up = True


@numba.njit(cache=True, nogil=True)
def _segment_kernel(
    sym: IntArray,
    price: FloatArray,
    cnt: IntArray,
    sym_ptr: IntArray,
    sym_slots: IntArray,
    sym_strat: IntArray,
    E: FloatArray,
    C: FloatArray,
    V: FloatArray,
    nlegs: IntArray,
    sym_model: BoolArray,
    model_off: IntArray,
    model_delta: FloatArray,
    m2m: FloatArray,
    exposure: FloatArray,
    path: FloatArray,
    tick: IntArray,
) -> tuple[IntArray, IntArray, IntArray, FloatArray, FloatArray, int]:
    """M2M paths of one segment of price updates; the single compiled kernel.

    Args:
        sym, price: the segment's updates in time order (symbol id; LTP in quote currency).
        cnt: updates per symbol id in the segment.
        sym_ptr, sym_slots, sym_strat: CSR of the live pair slots per symbol (ascending strategy within
            a symbol) and each one's strategy.
        E, C, V, nlegs: per pair slot: exposure Σ qty × side × multiplier (base units), constant
            Σ entry × qty × side × multiplier (quote currency), current value (quote currency; updated
            in place for linear pairs), open legs.
        sym_model, model_off, model_delta: symbols with model-marked pairs among theirs; for those,
            per CSR position, the offset of the pair's precomputed per-update deltas in ``model_delta``
            or -1 (a linear pair).
        m2m: every strategy's M2M (quote currency) before the segment.
        exposure: scratch, one per CSR position.
        path, tick: output, one per entry (Σ over touched pairs of their symbol's updates): the
            strategy's M2M after the entry (the entry's M2M change until the last pass) and the index
            of its update in the segment; runs in ascending strategy order, each run in time order.

    Returns:
        (strategies, counts, starts, high, low, leg_updates) as in :class:`~engine.m2m._kernel.SegmentPaths`.
        Every float operation matches the numpy reference (a pair's first delta is E × p − C − V, later
        ones E × (p − the symbol's previous p); the path is one running sum over all runs in ascending
        strategy order plus each run's offset m2m − the sum before the run), so results are bit-for-bit
        the same.
    """
    n_symbols = len(sym_ptr) - 1
    n_strat = len(m2m)
    # entries per strategy (one per update of each of its pairs' symbols) and the legs they re-mark
    run = np.zeros(n_strat, dtype=np.int64)
    leg_updates = 0
    for k in range(n_symbols):
        c = cnt[k]
        if c:
            for q in range(sym_ptr[k], sym_ptr[k + 1]):
                slot = sym_slots[q]
                run[sym_strat[q]] += c
                leg_updates += nlegs[slot] * c
                exposure[q] = E[slot]
    n_touched = 0
    for s in range(n_strat):
        if run[s]:
            n_touched += 1
    strategies = np.empty(n_touched, dtype=np.int64)
    counts = np.empty(n_touched, dtype=np.int64)
    starts = np.empty(n_touched, dtype=np.int64)
    total = 0
    j = 0
    for s in range(n_strat):  # runs in ascending strategy order; ``run`` becomes each run's write cursor
        if run[s]:
            strategies[j], counts[j], starts[j] = s, run[s], total
            total += run[s]
            run[s] = total - counts[j]
            j += 1
    # updates in time order: each pair of the updated symbol appends its M2M change to its strategy's run
    prev = np.empty(n_symbols)  # the symbol's previous price in the segment
    seen = np.zeros(n_symbols, dtype=np.int64)  # updates of the symbol so far in the segment
    for i in range(len(sym)):
        k = sym[i]
        p = price[i]
        o = seen[k]
        if sym_model[k]:  # (rare) some pairs are marked by the option model
            for q in range(sym_ptr[k], sym_ptr[k + 1]):
                w = run[sym_strat[q]]
                run[sym_strat[q]] = w + 1
                tick[w] = i
                if model_off[q] >= 0:
                    path[w] = model_delta[model_off[q] + o]
                elif o == 0:
                    path[w] = exposure[q] * p - C[sym_slots[q]] - V[sym_slots[q]]
                else:
                    path[w] = exposure[q] * (p - prev[k])
        elif o == 0:  # the pair's first update: from its stored value
            for q in range(sym_ptr[k], sym_ptr[k + 1]):
                w = run[sym_strat[q]]
                run[sym_strat[q]] = w + 1
                tick[w] = i
                path[w] = exposure[q] * p - C[sym_slots[q]] - V[sym_slots[q]]
        else:  # the hot loop: exposure × price step
            step = p - prev[k]
            for q in range(sym_ptr[k], sym_ptr[k + 1]):
                w = run[sym_strat[q]]
                run[sym_strat[q]] = w + 1
                tick[w] = i
                path[w] = exposure[q] * step
        prev[k] = p
        seen[k] = o + 1
    for k in range(n_symbols):  # linear pairs' new value at the symbol's last price
        if cnt[k]:
            for q in range(sym_ptr[k], sym_ptr[k + 1]):
                if not (sym_model[k] and model_off[q] >= 0):
                    slot = sym_slots[q]
                    V[slot] = E[slot] * prev[k] - C[slot]
    # paths: one running sum over the runs (as np.cumsum), offset per run to start at the strategy's M2M
    high = np.empty(n_touched)
    low = np.empty(n_touched)
    acc = 0.0
    for j in range(n_touched):
        off = m2m[strategies[j]] - acc
        hi, lo, nan = -np.inf, np.inf, False
        for w in range(starts[j], starts[j] + counts[j]):
            acc = path[w] if w == 0 else acc + path[w]
            v = acc + off
            path[w] = v
            hi = v if v > hi else hi
            lo = v if v < lo else lo
            nan |= v != v
        high[j], low[j] = (np.nan, np.nan) if nan else (hi, lo)  # NaN propagates, as in np.maximum.reduceat
    return strategies, counts, starts, high, low, leg_updates

"""The numpy reference of the M2M paths of every strategy touched by one batch segment of price updates.

The aggregator runs the compiled :mod:`engine.m2m._paths_jit` instead (one pass, no sort); this
module keeps the pair arrays both share and :func:`segment_paths`, the formulation the compiled kernel
is checked against bit for bit (``tests/test_m2m_aggregator.py``).

State is kept per **pair** (strategy s, marking symbol k): the exposure E = Σ qty × side × multiplier
and the constant C = Σ entry × qty × side × multiplier over the pair's open legs marked at k's LTP, so
their M2M is E × LTP − C (DESIGN.md's (LTP − entry) × qty × side × multiplier, summed), plus the pair's
option legs marked by the model from k (the underlying), and V, the pair's current M2M contribution.

For a segment of N time-ordered updates (all in one minute), every (pair, update of its symbol) is an
*entry*. Entries are laid out pair-major (pairs sorted by strategy, each pair's updates in time
order). An entry's M2M delta is E × (price − the symbol's previous price in the segment); a pair's
first entry instead moves it from its stored value V to E × price − C (V may be 0 for a symbol not
priced before, or a model value being replaced); pairs with model-marked option legs get their full
value at each entry (Black-Scholes at the update's price and ts) and the difference. A strategy's M2M
path is its value before the segment plus the running sum of its deltas in time order: strategies
holding several touched pairs have their runs merged by a stable sort on (strategy rank, update
index), cheap because each run is already sorted. Only those strategies are touched; the
per-strategy high/low is a segmented max/min over the path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
#: (pair slot, prices, ts) -> Σ model value of the slot's model-marked legs at each (price, ts)
ModelValues = Callable[[int, FloatArray, IntArray], FloatArray]


@dataclass
class PairArrays:
    """Per-slot pair state (slots index every array; ``order`` lists the live slots sorted by
    (strategy, symbol)). ``V`` is updated in place by :func:`segment_paths`."""

    order: IntArray
    s: IntArray
    sym: IntArray
    E: FloatArray
    C: FloatArray
    V: FloatArray
    nlegs: IntArray
    model: BoolArray


@dataclass
class SegmentPaths:
    """The M2M paths of the strategies one segment touched.

    Attributes:
        strategies: touched strategy indices, ascending. counts: updates that touched each.
        starts: where each strategy's run begins in ``path`` / ``tick``.
        path: the strategy's M2M (quote currency) after each update touching it, runs in time order.
        tick: index (into the segment) of the update of each path entry.
        high, low: max/min of each run. leg_updates: Σ open legs re-marked (one per leg per update).
    """

    strategies: IntArray
    counts: IntArray
    starts: IntArray
    path: FloatArray
    tick: IntArray
    high: FloatArray
    low: FloatArray
    leg_updates: int


def segment_paths(
    sym: IntArray,
    price: FloatArray,
    ts: IntArray,
    n_symbols: int,
    pairs: PairArrays,
    m2m: FloatArray,
    model_values: ModelValues,
) -> SegmentPaths | None:
    """Paths of the strategies touched by updates (``sym``, ``price``, ``ts``: time-ordered, one minute).

    ``m2m`` holds every strategy's M2M before the segment. Updates ``pairs.V``. Returns None when no
    pair holds any of the updated symbols.
    """
    n = len(sym)
    cnt = np.bincount(sym, minlength=n_symbols)
    order = pairs.order
    c_all = cnt[pairs.sym[order]]
    hit = c_all > 0
    sel = order[hit]
    if not len(sel):
        return None
    c = c_all[hit]
    by_sym = np.argsort(sym, kind="stable")
    p_by_sym = price[by_sym]
    step = np.empty(n)  # price change since the symbol's previous update in the segment
    step[0] = 0.0
    np.subtract(p_by_sym[1:], p_by_sym[:-1], out=step[1:])
    sym_start = np.cumsum(cnt) - cnt
    ends = np.cumsum(c)
    pstart = ends - c
    total = int(ends[-1])
    first_pos = sym_start[pairs.sym[sel]]
    pos = np.repeat(first_pos - pstart, c) + np.arange(total)
    tick = by_sym[pos]
    e_sel, c_sel = pairs.E[sel], pairs.C[sel]
    delta = np.repeat(e_sel, c) * step[pos]
    # a pair's first update moves it from its stored value (which may be a model value, or 0 at entry)
    delta[pstart] = e_sel * p_by_sym[first_pos] - c_sel - pairs.V[sel]
    v_new = e_sel * p_by_sym[first_pos + c - 1] - c_sel
    modelled = pairs.model[sel]
    if modelled.any():
        for j in np.nonzero(modelled)[0]:
            r = slice(int(pstart[j]), int(ends[j]))
            vals = e_sel[j] * price[tick[r]] - c_sel[j] + model_values(int(sel[j]), price[tick[r]], ts[tick[r]])
            delta[r] = np.diff(vals, prepend=pairs.V[sel[j]])
            v_new[j] = vals[-1]
    pairs.V[sel] = v_new
    s_sel = pairs.s[sel]
    first = np.empty(len(s_sel), dtype=bool)
    first[0] = True
    np.not_equal(s_sel[1:], s_sel[:-1], out=first[1:])
    if not first.all():  # some strategy holds several touched pairs: merge its runs in time order
        rank = np.cumsum(first) - 1
        key_type = np.int32 if int(rank[-1] + 1) * n < 2**31 else np.int64
        key = np.repeat((rank * n).astype(key_type), c)
        key += tick.astype(key_type)
        o = np.argsort(key, kind="stable")
        delta = delta[o]
        tick = tick[o]
    group = np.nonzero(first)[0]
    strategies = s_sel[group]
    counts = np.add.reduceat(c, group)
    starts = np.cumsum(counts) - counts
    cs = np.cumsum(delta)
    before = np.concatenate(([0.0], cs))[starts]
    path = cs + np.repeat(m2m[strategies] - before, counts)
    return SegmentPaths(
        strategies=strategies,
        counts=counts,
        starts=starts,
        path=path,
        tick=tick,
        high=np.maximum.reduceat(path, starts),
        low=np.minimum.reduceat(path, starts),
        leg_updates=int((pairs.nlegs[sel] * c).sum()),
    )

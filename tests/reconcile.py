"""Independent accounting replay used by every test that runs a strategy.

It rebuilds cash and positions from the result's fill and funding lists with its own average-cost
bookkeeping (not the engine's), values positions at each bar's close taken from the test's own copy
of the bars, and asserts at every row of the equity curve that
equity = cash + Σ position value, to well under a cent.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.backtest.result import BacktestResult

TOL = 1e-6  # quote currency; a cent is 1e-2


def assert_equity_reconciles(
    result: BacktestResult,
    closes: dict[str, tuple[np.ndarray, np.ndarray]],
    perpetual: bool = False,
    multiplier: float = 1.0,
) -> None:
    """closes: symbol → (bar open times ns, closes) of the bars the run traded on."""
    eq = result.equity
    ts = eq.column("ts").cast(pa.int64()).to_numpy()
    cash_col = eq.column("cash").to_numpy()
    pv_col = eq.column("position_value").to_numpy()
    eq_col = eq.column("equity").to_numpy()
    np.testing.assert_allclose(eq_col, cash_col + pv_col, rtol=0, atol=1e-9)

    events: list[tuple[int, int, int, dict]] = []
    for row in result.fills.to_pylist():
        t = int(np.datetime64(row["ts"].replace(tzinfo=None), "ns").astype(np.int64))
        events.append((t, 1, row["fill_id"], row))
    if result.funding is not None:
        for i, row in enumerate(result.funding.to_pylist()):
            t = int(np.datetime64(row["ts"].replace(tzinfo=None), "ns").astype(np.int64))
            events.append((t, 0, i, row))
    events.sort(key=lambda e: (e[0], e[1], e[2]))

    cash = result.initial_cash
    qty: dict[str, float] = {}
    avg: dict[str, float] = {}
    e = 0
    for r, t in enumerate(ts.tolist()):
        while e < len(events) and events[e][0] <= t:
            _, kind, _, row = events[e]
            s = row["symbol"]
            q = qty.get(s, 0.0)
            if kind == 0:  # funding
                assert abs(row["qty"] - q) < 1e-9, (row, q)
                payment = -q * row["mark_price"] * multiplier * row["rate"]
                assert abs(payment - row["payment"]) < 1e-9
                cash += payment
            else:
                side, fq, price, fee = row["side"], row["qty"], row["price"], row["fee"]
                a = avg.get(s, 0.0)
                if q == 0 or (q > 0) == (side > 0):
                    avg[s] = (abs(q) * a + fq * price) / (abs(q) + fq)
                    realized = 0.0
                else:
                    closed = min(fq, abs(q))
                    realized = (price - a) * closed * (1 if q > 0 else -1) * multiplier
                    if fq > abs(q):
                        avg[s] = price
                    elif fq == abs(q):
                        avg[s] = 0.0
                qty[s] = q + side * fq
                if abs(qty[s]) < 1e-12:
                    qty[s] = 0.0
                if perpetual:
                    cash += realized - fee
                else:
                    cash -= side * fq * price * multiplier + fee
            e += 1
        value = 0.0
        for s, q in qty.items():
            if q:
                bts, bclose = closes[s]
                j = int(np.searchsorted(bts, t, side="right")) - 1
                ref = avg[s] if perpetual else 0.0
                value += q * (bclose[j] - ref) * multiplier
        assert abs(cash - cash_col[r]) < TOL, (r, t, cash, cash_col[r])
        assert abs(cash + value - eq_col[r]) < TOL, (r, t, cash + value, eq_col[r])

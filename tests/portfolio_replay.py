"""Independent accounting replay of a portfolio backtest.

For every strategy instance it rebuilds cash and positions from the result's fill and funding lists
with its own average-cost bookkeeping (not the engine's), books each fill when its bar closed (fill
time + the sleeve's timeframe) and each funding payment at the close of the bar that settled it,
values positions at the mark book (the last close of the symbol among all bars processed so far,
ties broken by sleeve order) and asserts at every step that each strategy's equity and the
portfolio's equity (Σ strategies + reserve) match, to well under a cent.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.portfolio.backtest import PortfolioBacktest, PortfolioResult

TOL = 1e-6


def _ns(column: pa.ChunkedArray) -> list[int]:
    return column.cast(pa.int64()).to_pylist()


def assert_portfolio_reconciles(bt: PortfolioBacktest, result: PortfolioResult) -> int:
    """Returns the number of (step, strategy) equity values checked."""
    steps = np.asarray(_ns(result.equity.column("ts")), dtype=np.int64)
    # the mark book: per symbol, every processed bar's (close time, sleeve index, close)
    book: dict[str, list[tuple[int, int, float]]] = {}
    for si, sleeve in enumerate(bt.sleeves):
        for symbol, feed in sleeve.feeds.items():
            first = sleeve.first_active(symbol, bt.start_ns)
            close_ts = feed.arrays["ts"][first:] + feed.tf_ns
            closes = feed.arrays["close"][first:]
            book.setdefault(symbol, []).extend(zip(close_ts.tolist(), [si] * len(closes), closes.tolist(), strict=True))
    marks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for symbol, rows in book.items():
        rows.sort()
        marks[symbol] = (np.asarray([r[0] for r in rows], dtype=np.int64), np.asarray([r[2] for r in rows]))

    fills = result.fills.to_pylist()
    f_ts = _ns(result.fills.column("ts"))
    funding = result.funding.to_pylist()
    u_ts = _ns(result.funding.column("ts"))
    curves = result.strategy_equity
    c_name = curves.column("strategy").to_pylist()
    c_eq = curves.column("equity").to_numpy()
    c_cash = curves.column("cash").to_numpy()
    total = np.full(len(steps), bt.manager.reserve)
    checked = 0
    for sleeve in bt.sleeves:
        name = sleeve.name
        tf = next(iter(sleeve.feeds.values())).tf_ns
        events: list[tuple[int, int, int, dict]] = []
        for i, (row, t) in enumerate(zip(fills, f_ts, strict=True)):
            if row["strategy"] == name:
                events.append((t + tf, 1, i, row))
        for i, (row, t) in enumerate(zip(funding, u_ts, strict=True)):
            if row["strategy"] == name:
                opens = sleeve.feeds[row["symbol"]].arrays["ts"]
                k = int(np.searchsorted(opens, t, side="left"))
                events.append((int(opens[k]) + tf, 0, i, row))
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        mine = [n == name for n in c_name]
        expected = c_eq[mine]
        expected_cash = c_cash[mine]
        assert len(expected) == len(steps)
        cash = sleeve.account.initial_cash
        qty: dict[str, float] = {}
        avg: dict[str, float] = {}
        perpetual = {s: i.is_perpetual for s, i in sleeve.instruments.items()}
        mult = {s: i.multiplier for s, i in sleeve.instruments.items()}
        e = 0
        for r, t in enumerate(steps.tolist()):
            while e < len(events) and events[e][0] <= t:
                _, kind, _, row = events[e]
                s = row["symbol"]
                q = qty.get(s, 0.0)
                if kind == 0:
                    assert abs(row["qty"] - q) < 1e-9, (name, row, q)
                    payment = -q * row["mark_price"] * mult[s] * row["rate"]
                    assert abs(payment - row["payment"]) < 1e-9
                    cash += payment
                else:
                    side, fq, price, fee = row["side"], row["qty"], row["price"], row["fee"]
                    a = avg.get(s, 0.0)
                    realized = 0.0
                    if q == 0 or (q > 0) == (side > 0):
                        avg[s] = (abs(q) * a + fq * price) / (abs(q) + fq)
                    else:
                        closed = min(fq, abs(q))
                        realized = (price - a) * closed * (1 if q > 0 else -1) * mult[s]
                        if fq > abs(q):
                            avg[s] = price
                    qty[s] = q + side * fq
                    if abs(qty[s]) <= 1e-12 * max(1.0, fq):
                        qty[s] = 0.0
                    if perpetual[s]:
                        cash += realized - fee
                    else:
                        cash -= side * fq * price * mult[s] + fee
                e += 1
            value = 0.0
            for s, q in qty.items():
                if q:
                    mts, mclose = marks[s]
                    j = int(np.searchsorted(mts, t, side="right")) - 1
                    mark = float(mclose[j])
                    ref = avg[s] if perpetual[s] else 0.0
                    value += q * (mark - ref) * mult[s]
            equity = cash + value
            assert abs(cash - expected_cash[r]) <= TOL * max(1.0, abs(cash) / 1e4), (name, r, t, cash, expected_cash[r])
            assert abs(equity - expected[r]) <= TOL * max(1.0, abs(equity) / 1e4), (name, r, t, equity, expected[r])
            total[r] += equity
            checked += 1
        assert e == len(events), f"{name}: {len(events) - e} fills/funding after the last step"
    np.testing.assert_allclose(result.equity.column("equity").to_numpy(), total, rtol=0, atol=1e-6)
    return checked

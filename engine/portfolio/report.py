"""Writing a portfolio backtest's outputs: Parquet tables, metrics JSON, the text summary and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.portfolio.backtest import PortfolioResult


def summary(result: PortfolioResult) -> dict[str, Any]:
    """``{"portfolio": {metrics}, "strategies": {name: {metrics}}}`` — what ``--json`` prints."""
    return {"portfolio": result.metrics, "strategies": result.strategy_metrics}


def write_outputs(result: PortfolioResult, out_dir: str | Path) -> list[Path]:
    """Write the tables (equity, strategy_equity, fills, trades, funding, rejections, events,
    snapshots) as Parquet, ``metrics.json`` (metrics, correlation, allocations, settings) and
    ``report.png`` into ``out_dir`` (created if needed); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    tables = {
        "equity": result.equity,
        "strategy_equity": result.strategy_equity,
        "fills": result.fills,
        "trades": result.trades,
        "funding": result.funding,
        "rejections": result.rejections,
        "events": result.events,
        "snapshots": result.snapshots,
    }
    for name, table in tables.items():
        path = out / f"{name}.parquet"
        pq.write_table(table, path, compression="zstd")
        paths.append(path)
    doc = {
        "name": result.name,
        "capital": result.capital,
        "allocations_pct": result.allocations,
        "strategies": result.strategies,
        "trade_hash": result.trade_hash,
        **summary(result),
        "correlation": result.correlation,
        "rejections_by_check": _counts(result, "rejections", "check"),
        "events_by_kind": _counts(result, "events", "kind"),
        "settings": result.settings,
    }
    path = out / "metrics.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    paths.append(path)
    paths.append(plot_report(result, out / "report.png"))
    return paths


def _counts(result: PortfolioResult, table: str, column: str) -> dict[str, int]:
    t = getattr(result, table)
    if t.num_rows == 0:
        return {}
    counts = pc.value_counts(t.column(column)).to_pylist()
    return {row["values"]: row["counts"] for row in counts}


def plot_report(result: PortfolioResult, path: Path) -> Path:
    """Portfolio and per-strategy equity curves with drawdown shading, and the correlation matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eq = result.equity
    ts = eq.column("ts").to_numpy().astype("datetime64[ns]")
    total = eq.column("equity").to_numpy()
    dd = eq.column("drawdown_pct").to_numpy()
    names = list(result.strategy_metrics)
    curves = result.strategy_equity
    fig = plt.figure(figsize=(13, 9))
    grid = fig.add_gridspec(3, 4, height_ratios=(3, 3, 1.3))
    ax_pf = fig.add_subplot(grid[0, :3])
    ax_st = fig.add_subplot(grid[1, :3], sharex=ax_pf)
    ax_dd = fig.add_subplot(grid[2, :3], sharex=ax_pf)
    ax_cor = fig.add_subplot(grid[0:2, 3])
    m = result.metrics
    ax_pf.plot(ts, total, lw=1.1, color="#1f5fa8", label="portfolio")
    ax_pf.axhline(result.capital, color="grey", lw=0.6, ls="--")
    peak = np.maximum.accumulate(np.concatenate(([result.capital], total)))[1:]
    ax_pf.fill_between(ts, total, peak, where=total < peak, color="#c0392b", alpha=0.25, lw=0, label="drawdown")
    ax_pf.set_ylabel("portfolio equity")
    ax_pf.set_title(
        f"{result.name} | return {m.get('total_return_pct', 0):.2f}% | Sharpe {(m.get('sharpe') or float('nan')):.2f}"
        f" | max DD {m.get('max_drawdown_pct', 0):.2f}% | trades {m.get('trades', 0)}"
        f" | rejections {m.get('risk_rejections', 0)} | breaker trips {m.get('breaker_trips', 0)}",
        fontsize=10,
    )
    ax_pf.legend(loc="upper left", fontsize=8)
    ax_pf.grid(alpha=0.3)
    colors = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        rows = curves.filter(pc.equal(curves.column("strategy"), name))
        s_eq = rows.column("equity").to_numpy()
        s_dd = rows.column("drawdown_pct").to_numpy()
        start = s_eq[0] if len(s_eq) else 1.0
        rel = s_eq / start * 100.0
        color = colors(i % 10)
        sm = result.strategy_metrics[name]
        ax_st.plot(ts, rel, lw=0.9, color=color, label=f"{name} ({sm.get('total_return_pct', 0):+.1f}%)")
        s_peak = np.maximum.accumulate(rel)
        ax_st.fill_between(ts, rel, s_peak, where=s_dd > 0, color=color, alpha=0.12, lw=0)
    ax_st.axhline(100.0, color="grey", lw=0.6, ls="--")
    ax_st.set_ylabel("strategy equity (start = 100)")
    ax_st.legend(loc="upper left", fontsize=8, ncols=2)
    ax_st.grid(alpha=0.3)
    ax_dd.fill_between(ts, -dd, 0.0, color="#c0392b", alpha=0.5, lw=0)
    ax_dd.set_ylabel("portfolio DD %")
    ax_dd.set_ylim(min(float(-np.max(dd)) * 1.1 if len(dd) else -1.0, -1.0), 0.5)
    ax_dd.grid(alpha=0.3)
    matrix = np.array([[result.correlation[a][b] for b in names] for a in names], dtype=float)
    ax_cor.imshow(np.nan_to_num(matrix), vmin=-1, vmax=1, cmap="RdBu_r")
    ax_cor.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
    ax_cor.set_yticks(range(len(names)), names, fontsize=7)
    for a in range(len(names)):
        for b in range(len(names)):
            value = matrix[a, b]
            ax_cor.text(b, a, "–" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=7)
    ax_cor.set_title("daily-return correlation", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""Writing a backtest's outputs: Parquet tables, metrics JSON and the equity/drawdown chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq

from engine.backtest.metrics import drawdown_series
from engine.backtest.result import BacktestResult


def write_outputs(result: BacktestResult, out_dir: str | Path) -> list[Path]:
    """Write ``trades.parquet``, ``fills.parquet``, ``equity.parquet``, ``funding.parquet``,
    ``metrics.json`` and ``report.png`` into ``out_dir`` (created if needed); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    tables = {
        "trades": result.trades,
        "fills": result.fills,
        "equity": result.equity,
        "funding": result.funding,
    }
    for name, table in tables.items():
        if table is None:
            continue
        path = out / f"{name}.parquet"
        pq.write_table(table, path, compression="zstd")
        paths.append(path)
    summary = {
        "run_id": result.run_id,
        "strategy_type": result.strategy_type,
        "params": result.params,
        "symbols": result.symbols,
        "timeframe": result.timeframe,
        "data_path": result.data_path,
        "trade_hash": result.trade_hash,
        "settings": result.settings,
        "metrics": result.metrics,
    }
    path = out / "metrics.json"
    path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    paths.append(path)
    paths.append(plot_report(result, out / "report.png"))
    return paths


def plot_report(result: BacktestResult, path: Path) -> Path:
    """Equity curve (top) and drawdown in percent (bottom) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = result.equity.column("ts").to_numpy().astype("datetime64[ns]")
    equity = result.equity.column("equity").to_numpy()
    drawdown = drawdown_series(equity, result.initial_cash)
    m = result.metrics
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=(3, 1))
    ax1.plot(ts, equity, lw=1.0, color="#1f5fa8")
    ax1.axhline(result.initial_cash, color="grey", lw=0.6, ls="--")
    ax1.set_ylabel("equity (quote)")
    title = (
        f"{result.strategy_type} {','.join(result.symbols[:4])}{'…' if len(result.symbols) > 4 else ''} "
        f"{result.timeframe} | return {m.get('total_return_pct', 0):.2f}% | Sharpe "
        f"{(m.get('sharpe') or float('nan')):.2f} | max DD {m.get('max_drawdown_pct', 0):.2f}% | "
        f"trades {m.get('trades', 0)}"
    )
    ax1.set_title(title, fontsize=10)
    ax1.grid(alpha=0.3)
    ax2.fill_between(ts, drawdown, 0.0, color="#c0392b", alpha=0.5, lw=0)
    ax2.set_ylabel("drawdown %")
    ax2.set_ylim(min(float(np.min(drawdown)) * 1.1, -1.0), 0.5)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

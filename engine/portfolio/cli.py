"""``tradectl backtest-portfolio CONFIG [--out DIR] [--db URL] [--no-store] [--json]``.

Runs the portfolio backtest a YAML or TOML config describes (:mod:`engine.portfolio.config`),
prints the portfolio and per-strategy metrics (or, with ``--json``,
``{"portfolio": {...}, "strategies": {name: {...}}}`` with the metric keys of
``tradectl backtest --json``), stores the run (DuckDB file under ./data by default, or ``--db``)
and writes the report into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from engine.errors import ParameterError

_ROWS = (
    ("total_return_pct", "return %", "{:,.2f}"),
    ("annual_return_pct", "annual %", "{:,.2f}"),
    ("sharpe", "Sharpe", "{:.2f}"),
    ("sortino", "Sortino", "{:.2f}"),
    ("max_drawdown_pct", "max DD %", "{:,.2f}"),
    ("trades", "trades", "{:,}"),
    ("win_rate", "win %", "{:.1f}"),
    ("profit_factor", "PF", "{:.2f}"),
    ("fees_paid", "fees", "{:,.2f}"),
    ("funding_paid", "funding", "{:,.2f}"),
    ("final_equity", "final equity", "{:,.2f}"),
    ("orders_rejected", "rejected", "{:,}"),
)


def add_command(sub: Any) -> None:
    """Add ``backtest-portfolio`` to the ``tradectl`` sub-command parser."""
    p = sub.add_parser("backtest-portfolio", help="backtest a portfolio of strategy instances on shared capital")
    p.add_argument("config", help="portfolio config file (.yaml, .yml or .toml)")
    p.add_argument("--out", help="write the report (report.png, metrics.json, parquet tables) into DIR")
    p.add_argument("--db", help="store URL (env TRADE_DB_URL; default: DuckDB file under ./data)")
    p.add_argument("--no-store", action="store_true", help="do not store the run")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_backtest_portfolio)


def _table(result: Any) -> Any:
    from rich.table import Table

    table = Table(title=f"portfolio {result.name} · capital {result.capital:,.0f}")
    table.add_column("metric")
    table.add_column("portfolio", justify="right")
    for name in result.strategy_metrics:
        table.add_column(f"{name} ({result.allocations[name]:g}%)", justify="right")
    for key, label, fmt in _ROWS:
        cells = [result.metrics.get(key), *(m.get(key) for m in result.strategy_metrics.values())]
        table.add_row(label, *("—" if v is None else fmt.format(v) for v in cells))
    return table


def cmd_backtest_portfolio(args: argparse.Namespace) -> int:
    from rich.console import Console

    from engine.portfolio.config import build_backtest, load_portfolio_config
    from engine.portfolio.report import summary, write_outputs
    from engine.strategy.registry import StrategyRegistry

    config = load_portfolio_config(args.config)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ParameterError("--out", f"{args.out} exists and is not a directory")
    registry = StrategyRegistry(args.strategies_dir or None).discover()
    for failure in registry.failures:
        print(f"warning: plugin {failure.file}: {failure.reason}", file=sys.stderr)
    result = build_backtest(config, registry).run()
    result.settings.update({"config": str(args.config), "config_values": config.model_dump(mode="json")})
    run_id = ""
    if not args.no_store:
        from engine.store import open_store

        with open_store(args.db, migrate=True) as store:
            run_id = store.save_portfolio(result)
    if args.out:
        write_outputs(result, args.out)
    if args.json:
        payload = summary(result) | {"run_id": run_id, "trade_hash": result.trade_hash}
        sys.stdout.write(orjson.dumps(payload).decode() + "\n")
        return 0
    console = Console()
    console.print(_table(result))
    rejections = result.metrics.get("risk_rejections", 0)
    console.print(
        f"risk rejections {rejections:,} · breaker trips {result.metrics.get('breaker_trips', 0)} · "
        f"trade hash {result.trade_hash[:16]}"
    )
    if run_id:
        console.print(f"stored as portfolio run {run_id}")
    if args.out:
        console.print(f"report written to {args.out}/ (report.png, metrics.json, parquet tables)")
    return 0

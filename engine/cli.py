"""``tradectl``: the command line of the engine.

    tradectl strategies list [--json]
    tradectl strategies show TYPE
    tradectl backtest TYPE --data PATH [--symbols A,B] [--timeframe TF] [--start ISO] [--end ISO]
        [--param k=v ...] [--params JSON] [--cash N] [--fee-bps N] [--slippage-bps N] [--lot-size N]
        [--tick-size N] [--funding PATH] [--marks PATH] [--open-interest PATH] [--market spot|perpetual] [--leverage N]
        [--out DIR] [--db URL] [--no-store] [--json]
    tradectl backtest-portfolio CONFIG [--out DIR] [--db URL] [--no-store] [--json]
    tradectl db migrate [--db URL]
    tradectl db status [--db URL]

Bad input (data files, strategy types, parameters, dates) exits with status 2 and one line on
stderr, without a traceback.

The installed ``tradectl`` script is :func:`actors.cli.main`: it adds ``tradectl sweep`` (batch
backtests on Ray) through ``build_parser(commands=...)`` and dispatches with :func:`run`, so that this
module never imports Ray. :func:`main` here serves every command above.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson

from engine.errors import EngineError, ParameterError
from engine.strategy.registry import StrategyRegistry

EXIT_BAD_INPUT = 2


def _registry(args: argparse.Namespace) -> StrategyRegistry:
    registry = StrategyRegistry(args.strategies_dir or None).discover()
    for failure in registry.failures:
        print(f"warning: plugin {failure.file}: {failure.reason}", file=sys.stderr)
    return registry


def _parse_param(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ParameterError("--param", f"expected key=value, got {item!r}")
    try:
        parsed: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.params:
        try:
            loaded = orjson.loads(args.params)
        except orjson.JSONDecodeError as exc:
            raise ParameterError("--params", f"must be a JSON object: {exc}") from None
        if not isinstance(loaded, dict):
            raise ParameterError("--params", "must be a JSON object")
        params.update(loaded)
    for item in args.param or []:
        key, value = _parse_param(item)
        params[key] = value
    return params


# ---------------------------------------------------------------------- strategies
def cmd_strategies_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    catalog = registry.catalog()
    if args.json:
        sys.stdout.write(orjson.dumps(catalog, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="strategy plugins")
    for col in ("type", "display name", "version", "markets", "description"):
        table.add_column(col)
    for meta in catalog:
        table.add_row(
            meta["type"],
            meta["display_name"],
            meta["version"],
            ",".join(meta["compatibility"]["market_types"]),
            meta["description"],
        )
    Console().print(table)
    return 0


def cmd_strategies_show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    cls = registry.get(args.type)
    meta = cls.metadata() | {"file": registry.files[cls.type]}
    sys.stdout.write(orjson.dumps(meta, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


# ---------------------------------------------------------------------- backtest
_TABLE_ROWS = (
    ("final_equity", "final equity", "{:,.2f}"),
    ("total_return_pct", "total return %", "{:.2f}"),
    ("annual_return_pct", "annual return %", "{:.2f}"),
    ("volatility_pct", "volatility % (ann.)", "{:.2f}"),
    ("sharpe", "Sharpe", "{:.3f}"),
    ("sortino", "Sortino", "{:.3f}"),
    ("calmar", "Calmar", "{:.3f}"),
    ("max_drawdown_pct", "max drawdown %", "{:.2f}"),
    ("max_drawdown_duration_days", "max DD duration (days)", "{:.1f}"),
    ("trades", "closed trades", "{}"),
    ("win_rate", "win rate %", "{:.2f}"),
    ("profit_factor", "profit factor", "{:.3f}"),
    ("expectancy", "expectancy", "{:,.2f}"),
    ("exposure_pct", "exposure %", "{:.2f}"),
    ("fees_paid", "fees paid", "{:,.2f}"),
    ("funding_paid", "funding paid", "{:,.2f}"),
    ("bars", "bars", "{:,}"),
)


def _metrics_table(result: Any) -> Any:
    from rich.table import Table

    table = Table(title=f"{result.strategy_type} · {','.join(result.symbols[:6])} · {result.timeframe}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label, fmt in _TABLE_ROWS:
        value = result.metrics.get(key)
        table.add_row(label, "—" if value is None else fmt.format(value))
    table.add_row("trade hash", result.trade_hash[:16])
    return table


class _ProgressBar:
    """A rich progress bar on stderr, shown only for runs of at least ``min_bars`` bars."""

    def __init__(self, min_bars: int = 200_000) -> None:
        self.min_bars = min_bars
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._progress is None:
            if total < self.min_bars:
                return
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("backtest"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("bars"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._progress.add_task("bars", total=total)
            self._progress.start()
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def cmd_backtest(args: argparse.Namespace) -> int:
    from rich.console import Console

    from engine.backtest.config import BacktestRequest, run_request
    from engine.backtest.report import write_outputs

    registry = _registry(args)
    registry.get(args.type)  # unknown type fails before any data is read
    raw: dict[str, Any] = {
        "strategy_type": args.type,
        "data": args.data,
        "params": _params(args),
        "symbols": args.symbols.split(",") if args.symbols else None,
        "timeframe": args.timeframe,
        "start": args.start,
        "end": args.end,
        "cash": args.cash,
        "fee_bps": args.fee_bps,
        "slippage_bps": args.slippage_bps,
        "lot_size": args.lot_size,
        "tick_size": args.tick_size,
        "market": args.market,
        "leverage": args.leverage,
        "funding": args.funding,
        "marks": args.marks,
        "open_interest": args.open_interest,
        "warmup": args.warmup,
    }
    request = BacktestRequest.parse({k: v for k, v in raw.items() if v is not None})
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ParameterError("--out", f"{args.out} exists and is not a directory")
    progress = None if args.no_progress else _ProgressBar()
    try:
        result = run_request(request, registry, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if not args.no_store:
        from engine.store import open_store

        with open_store(args.db, migrate=True) as store:
            result.run_id = store.save_backtest(result)
    if args.out:
        write_outputs(result, args.out)
    if args.json:
        payload = result.metrics | {"run_id": result.run_id, "trade_hash": result.trade_hash}
        sys.stdout.write(orjson.dumps(payload).decode() + "\n")
    else:
        console = Console()
        console.print(_metrics_table(result))
        if result.run_id:
            console.print(f"stored as run {result.run_id}")
        if args.out:
            console.print(f"report written to {args.out}/ (report.png, metrics.json, trades/equity parquet)")
    return 0


# ---------------------------------------------------------------------- db
def cmd_db_migrate(args: argparse.Namespace) -> int:
    from engine.store import open_store

    with open_store(args.db) as store:
        applied = store.migrate()
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def cmd_db_status(args: argparse.Namespace) -> int:
    from engine.store import open_store

    with open_store(args.db) as store:
        for row in store.status():
            state = row.applied_at.isoformat() if row.applied_at else "pending"
            print(f"{row.name}\t{state}")
    return 0


# ---------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: …`` on stderr, exit status 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message}\n")


def build_parser(commands: Sequence[Callable[[Any], None]] = ()) -> argparse.ArgumentParser:
    """The ``tradectl`` parser; each of ``commands`` is called with the sub-command action
    (``argparse._SubParsersAction``) to add its own sub-commands (with ``set_defaults(func=...)``)."""
    parser = _Parser(prog="tradectl", description="Actor-based trading engine: control and backtests.")
    parser.add_argument("--strategies-dir", action="append", help="extra strategy plugin folder (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True)

    strategies = sub.add_parser("strategies", help="strategy plugin catalog")
    ssub = strategies.add_subparsers(dest="action", required=True)
    p = ssub.add_parser("list", help="list strategy plugins")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=cmd_strategies_list)
    p = ssub.add_parser("show", help="show one plugin's metadata and parameter schema")
    p.add_argument("type")
    p.set_defaults(func=cmd_strategies_show)

    p = sub.add_parser("backtest", help="backtest a strategy on a data file")
    p.add_argument("type", help="strategy type, e.g. sma_crossover")
    p.add_argument("--data", required=True, help="bars file (Parquet or CSV)")
    p.add_argument("--symbols", help="comma-separated symbols (default: all in the file)")
    p.add_argument("--timeframe", help="resample to this timeframe (default: the file's)")
    p.add_argument("--start", help="first bar to trade, ISO 8601 (UTC if naive)")
    p.add_argument("--end", help="end of the run, ISO 8601, exclusive")
    p.add_argument("--param", action="append", metavar="K=V", help="strategy parameter (repeatable)")
    p.add_argument("--params", help="strategy parameters as a JSON object")
    p.add_argument("--cash", type=float, help="initial cash in quote currency (default 100000)")
    p.add_argument("--fee-bps", type=float, help="maker and taker fee, basis points of notional")
    p.add_argument("--slippage-bps", type=float, help="adverse slippage of market/stop fills, basis points")
    p.add_argument("--lot-size", type=float, help="quantity step in base units (default: none)")
    p.add_argument("--tick-size", type=float, help="price step in quote currency (default: none)")
    p.add_argument("--funding", help="funding-rate file (selects the perpetual market by default)")
    p.add_argument("--marks", help="mark-price bars file for funding settlements")
    p.add_argument("--open-interest", help="open-interest file (symbol, ts, open_interest) for strategies that use it")
    p.add_argument("--market", choices=("spot", "perpetual"), help="market kind of the traded symbols")
    p.add_argument("--leverage", type=float, help="maximum leverage (perpetual)")
    p.add_argument("--warmup", type=int, help="minimum bars before the strategy trades")
    p.add_argument("--out", help="directory for trades.parquet, equity.parquet, metrics.json, report.png")
    p.add_argument("--db", help="store URL: postgresql://… or a DuckDB path / duckdb://… (env TRADE_DB_URL)")
    p.add_argument("--no-store", action="store_true", help="do not save the run in the store")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=cmd_backtest)

    db = sub.add_parser("db", help="database migrations")
    dsub = db.add_subparsers(dest="action", required=True)
    for name, func in (("migrate", cmd_db_migrate), ("status", cmd_db_status)):
        p = dsub.add_parser(name)
        p.add_argument("--db", help="store URL (env TRADE_DB_URL; default: DuckDB file under ./data)")
        p.set_defaults(func=func)
    from engine.portfolio.cli import add_command as add_backtest_portfolio

    add_backtest_portfolio(sub)
    from engine.m2m.cli import add_commands as add_m2m_commands

    add_m2m_commands(sub)
    for add in commands:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tradectl`` without the Ray commands; returns the exit status."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; engine errors become one ``error:`` line and exit status 2."""
    try:
        return int(args.func(args))
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

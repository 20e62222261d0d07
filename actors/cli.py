"""``tradectl`` with the Ray commands: engine's CLI plus ``tradectl sweep``.

    tradectl sweep CONFIG [--address ADDR] [--workers N] [--out DIR] [--db URL] [--json] [--no-progress]

``CONFIG`` is a YAML (``.yaml``/``.yml``) or TOML (``.toml``) sweep config (see
:mod:`actors.sweep_config`). Runs go to Ray tasks on a local Ray instance (``--workers`` CPUs, default
all) or on the cluster at ``--address`` (``auto`` on a cluster node); results are stored (``--db``,
default ``$TRADE_DB_URL`` or ``./data/engine.duckdb``) and, with ``--out``, written as
``runs.parquet``, ``best.json`` and ``sweep.json``. Rerunning the same config skips runs already
stored as "ok". A config error exits with status 2 and one line naming the field; nothing is stored.
Failed runs do not fail the command (they are recorded with their error); the exit status is 0 when
the sweep finished.

Ray is imported only on the ``sweep`` path, so ``tradectl backtest`` and the other commands start as
fast as ``engine.cli``'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from engine import cli as engine_cli
from engine.errors import ParameterError

#: Rows in the summary table printed after a sweep.
TOP_ROWS = 10


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_sweep_command(sub: Any) -> None:
    """Add ``tradectl sweep`` to the sub-command action of :func:`engine.cli.build_parser`."""
    p = sub.add_parser(
        "sweep",
        help="run a batch of backtests (grid, random, optuna or portfolios) as Ray tasks",
        description="Run every run of a sweep config as a Ray task; store and summarise the results.",
    )
    p.add_argument("config", help="sweep config file (.yaml, .yml or .toml)")
    p.add_argument("--address", help="Ray cluster address ('auto' on a cluster node); default: a local Ray")
    p.add_argument(
        "--workers",
        type=_positive_int,
        help="runs in flight at once (CPUs of the local Ray; optuna batch size); default: all CPUs",
    )
    p.add_argument("--out", help="directory for runs.parquet, best.json and sweep.json")
    p.add_argument("--db", help="store URL: postgresql://… or a DuckDB path / duckdb://… (env TRADE_DB_URL)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of a table")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_sweep)


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _varied(sweep: Any, params_json: str) -> str:
    """The searched part of a run's parameters (grid keys / optuna or random dimensions), as text."""
    params = orjson.loads(params_json)
    config = sweep.config
    if config.grid is not None:
        keys = list(config.grid)
    elif sweep.dimensions:
        keys = [d.name for d in sweep.dimensions]
    else:  # a portfolio run: the file name and its overrides
        name = str(params.get("portfolio", "")).rsplit("/", 1)[-1]
        overrides = params.get("overrides") or {}
        return name + (" " + orjson.dumps(overrides).decode() if overrides else "")
    return " ".join(f"{k}={_short(params.get(k))}" for k in keys)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return orjson.dumps(value).decode() if not isinstance(value, str) else value


def _print_table(outcome: Any, sweep: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    metric = sweep.rank.metric
    summary = outcome.summary()
    console = Console()
    rows = [r for r in outcome.runs.to_pylist() if r["status"] == "ok" and r.get(metric) is not None]
    reverse = outcome.best is None or outcome.best["direction"] == "maximize"
    rows.sort(key=lambda r: r[metric], reverse=reverse)
    table = Table(title=f"sweep {summary['name']} · {summary['method']} · top {min(TOP_ROWS, len(rows))} by {metric}")
    columns = ["seq", "params", "sharpe", "total return %", "max DD %", "trades", "trade hash"]
    if metric not in ("sharpe", "total_return_pct", "max_drawdown_pct", "trades"):
        columns.insert(2, metric)
    for col in columns:
        table.add_column(col, justify="left" if col in ("params", "trade hash") else "right")
    for r in rows[:TOP_ROWS]:
        extra = [] if len(columns) == 7 else [_fmt(r[metric], ".4g")]
        table.add_row(
            str(r["seq"]),
            _varied(sweep, r["params"]),
            *extra,
            _fmt(r["sharpe"], ".3f"),
            _fmt(r["total_return_pct"], ".2f"),
            _fmt(r["max_drawdown_pct"], ".2f"),
            _fmt(r["trades"], "d"),
            (r["trade_hash"] or "")[:16],
        )
    console.print(table)
    failed = [r for r in outcome.runs.to_pylist() if r["status"] == "failed"]
    for r in failed[:5]:
        first_line = (r["error"] or "").splitlines()[0] if r["error"] else ""
        console.print(f"failed: seq {r['seq']} {_varied(sweep, r['params'])}: {first_line}", highlight=False)
    if len(failed) > 5:
        console.print(f"… and {len(failed) - 5} more failed runs (see runs.parquet or the store)")
    console.print(
        f"sweep {summary['sweep_id']}: {summary['runs']} runs, {summary['ok']} ok, {summary['failed']} failed "
        f"({summary['executed']} run now, {summary['skipped']} already done) in {summary['wall_s']:.1f} s",
        highlight=False,
    )
    if summary["out"]:
        console.print(f"written to {summary['out']}/ (runs.parquet, best.json, sweep.json)", highlight=False)


def cmd_sweep(args: argparse.Namespace) -> int:
    """``tradectl sweep``: validate the config, run it on Ray, print a summary."""
    from pathlib import Path

    from actors.sweep_config import load_sweep
    from engine.strategy.registry import StrategyRegistry

    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ParameterError("--out", f"{args.out} exists and is not a directory")
    if args.db is not None:
        from engine.store import parse_store_url

        parse_store_url(args.db)  # a bad URL fails before Ray starts
    registry = StrategyRegistry(args.strategies_dir or None).discover()
    for failure in registry.failures:
        print(f"warning: plugin {failure.file}: {failure.reason}", file=sys.stderr)
    sweep = load_sweep(args.config, registry)  # every config error exits 2 here, before anything is stored

    from actors.sweep import run_sweep  # imports Ray

    outcome = run_sweep(
        sweep,
        db=args.db,
        workers=args.workers,
        address=args.address,
        out=args.out,
        progress=not args.no_progress and not args.json,
        strategies_dirs=args.strategies_dir or (),
    )
    if args.json:
        sys.stdout.write(orjson.dumps(outcome.summary()).decode() + "\n")
    else:
        _print_table(outcome, sweep)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """engine's ``tradectl`` parser with the ``sweep`` sub-command added."""
    from actors.run_cli import add_run_command

    return engine_cli.build_parser(commands=(add_sweep_command, add_run_command))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the installed ``tradectl``; returns the exit status."""
    return engine_cli.run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

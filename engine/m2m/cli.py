"""``tradectl m2m candles|daily`` and ``tradectl pnl export``: a strategy's stored M2M, read from the store.

    tradectl m2m candles STRATEGY [--account A] [--interval 1m|5m] [--from ISO] [--to ISO] [--json] [--db URL]
    tradectl m2m daily STRATEGY [--account A] [--json] [--db URL]
    tradectl pnl export STRATEGY --format csv|parquet --out DIR [--account A] [--from ISO] [--to ISO] [--db URL]

``STRATEGY`` is a strategy's name or instance id. ``--account`` may be left out when exactly one account
of the store has a strategy of that name or id. Times are ISO 8601, naive = UTC; ``--from`` inclusive,
``--to`` exclusive. The export writes the report's four tables (``summary``, ``legs``, ``exits``,
``daily``, see :func:`engine.store.m2m.export_pnl`) as files of the format into the folder ``--out``;
open legs carry the last candle's marks only through the summary (the store keeps no last prices).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from engine.errors import ParameterError
from engine.store import m2m as m2m_store
from engine.store.base import Store, open_store


def _ns(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ParameterError(name, f"must be an ISO 8601 time, got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1_000


def resolve_strategy(store: Store, strategy: str, account: str | None) -> tuple[str, str]:
    """(account_id, instance_id) of ``strategy`` (name or id), in ``account`` or the only account holding it.

    Raises:
        ParameterError: no such strategy, or several accounts hold one of that name (``--account`` needed).
    """
    rows = store.read_live("strategy_instances", account_id=account).to_pylist()
    hits = [r for r in rows if strategy in (r["name"], r["instance_id"])]
    accounts = sorted({r["account_id"] for r in hits})
    if not hits:
        where = f"account {account!r}" if account else "the store"
        raise ParameterError("strategy", f"no strategy {strategy!r} in {where}")
    if len(accounts) > 1:
        raise ParameterError("account", f"strategy {strategy!r} exists in accounts {accounts}: pass --account")
    return accounts[0], hits[0]["instance_id"]


def _print(table: pa.Table, as_json: bool) -> None:
    rows = table.to_pylist()
    if as_json:
        sys.stdout.write(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    names = table.schema.names
    print("  ".join(names))
    for r in rows:
        print("  ".join(f"{r[n]:.2f}" if isinstance(r[n], float) else str(r[n]) for n in names))
    print(f"({len(rows)} rows)")


def cmd_m2m_candles(args: argparse.Namespace) -> int:
    with open_store(args.db) as store:
        account, instance = resolve_strategy(store, args.strategy, args.account)
        table = m2m_store.read_candles(
            store, account, instance, args.interval, _ns("from", args.start), _ns("to", args.end)
        )
    _print(table, args.json)
    return 0


def cmd_m2m_daily(args: argparse.Namespace) -> int:
    with open_store(args.db) as store:
        account, instance = resolve_strategy(store, args.strategy, args.account)
        table = m2m_store.read_daily(store, account, instance)
    _print(table, args.json)
    return 0


def cmd_pnl_export(args: argparse.Namespace) -> int:
    with open_store(args.db) as store:
        account, instance = resolve_strategy(store, args.strategy, args.account)
        done = m2m_store.export_pnl(
            store, account, instance, args.format, args.out, _ns("from", args.start), _ns("to", args.end)
        )
    for name, path in done.files.items():
        print(f"{name:8s} {done.rows[name]:7d} rows  {path}")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``m2m`` and ``pnl`` to ``tradectl``'s sub-commands."""
    m2m = sub.add_parser("m2m", help="a strategy's stored M2M candles and daily rows")
    msub = m2m.add_subparsers(dest="action", required=True)
    p = msub.add_parser("candles", help="1-minute M2M candles or the 5-minute rollup")
    p.add_argument("strategy", help="strategy name or instance id")
    p.add_argument("--interval", choices=("1m", "5m"), default="1m")
    p.add_argument("--from", dest="start", help="first candle time, ISO 8601 (UTC if naive)")
    p.add_argument("--to", dest="end", help="end time, ISO 8601, exclusive")
    p.set_defaults(func=cmd_m2m_candles)
    p2 = msub.add_parser("daily", help="daily performance rows")
    p2.add_argument("strategy", help="strategy name or instance id")
    p2.set_defaults(func=cmd_m2m_daily)
    for q in (p, p2):
        q.add_argument("--account", help="trading account (default: the only one holding the strategy)")
        q.add_argument("--json", action="store_true", help="print a JSON array")
        q.add_argument("--db", help="store URL (env TRADE_DB_URL; default: DuckDB file under ./data)")
    pnl = sub.add_parser("pnl", help="P&L reports")
    psub = pnl.add_subparsers(dest="action", required=True)
    e = psub.add_parser("export", help="write a strategy's P&L report (summary, legs, exits, daily)")
    e.add_argument("strategy", help="strategy name or instance id")
    e.add_argument("--format", choices=("csv", "parquet"), required=True)
    e.add_argument("--out", required=True, help="folder for the report's files")
    e.add_argument("--from", dest="start", help="window start, ISO 8601 (UTC if naive)")
    e.add_argument("--to", dest="end", help="window end, ISO 8601, exclusive")
    e.add_argument("--account", help="trading account (default: the only one holding the strategy)")
    e.add_argument("--db", help="store URL (env TRADE_DB_URL; default: DuckDB file under ./data)")
    e.set_defaults(func=cmd_pnl_export)

"""``tradectl run``: a paper-trading session on replayed data, through the actors.

    tradectl run CONFIG [--speed X|max] [--until ISO] [--db URL] [--dashboard] [--json]

Creates the accounts, strategy instances and bots of CONFIG (:mod:`engine.live.config`), starts
the multiplexers' replay and shows a live table of bots (state, positions, P&L, equity) and
portfolios until the replay ends, ``--until`` is reached or Ctrl-C; then shuts down in seed 004's
order (pause the strategies, stop the feeds, flush the recorder, close the store). Bots keep their
stored status and checkpoints, so running the same CONFIG again resumes where the session stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import Any

import orjson

from engine.errors import ParameterError
from engine.portfolio.config import _to_ns


def add_run_command(sub: Any) -> None:
    """Add ``tradectl run`` to the sub-command action of :func:`engine.cli.build_parser`."""
    p = sub.add_parser(
        "run",
        help="run a paper-trading session on replayed data through the actors",
        description="Replay real data through the market-data multiplexers, bots and portfolio actors.",
    )
    p.add_argument("config", help="run config file (.yaml, .yml or .toml)")
    p.add_argument("--speed", help="'max' or a factor of real time (overrides the config)")
    p.add_argument("--until", help="stop the replay at this event time (ISO 8601, UTC)")
    p.add_argument("--db", help="store URL (default: $TRADE_DB_URL or ./data/engine.duckdb)")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (http://127.0.0.1:8265)")
    p.add_argument("--json", action="store_true", help="print the final status as JSON instead of tables")
    p.set_defaults(func=cmd_run)


def _speed(text: str | None) -> float | str | None:
    if text is None:
        return None
    if text == "max":
        return "max"
    try:
        value = float(text)
    except ValueError:
        raise ParameterError("--speed", f"must be 'max' or a number > 0, got {text!r}") from None
    if not value > 0:
        raise ParameterError("--speed", f"must be 'max' or a number > 0, got {text!r}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    """Validate everything, then run the session (see the module docstring)."""
    from engine.live.config import load_run_config

    overrides: dict[str, Any] = {}
    speed = _speed(args.speed)
    if speed is not None:
        overrides["feed"] = {"speed": speed}
    config = load_run_config(args.config, overrides)
    until_ns = None
    if args.until:
        try:
            until_ns = _to_ns(datetime.fromisoformat(args.until))
        except ValueError:
            raise ParameterError("--until", f"must be an ISO 8601 time, got {args.until!r}") from None
    if args.db is not None:
        from engine.store import parse_store_url

        parse_store_url(args.db)

    from actors.runtime import EngineRuntime  # imports Ray

    runtime = EngineRuntime(args.db, address=args.address, dashboard=args.dashboard).start()
    interrupted = False
    try:
        runtime.open_session(config, until_ns)
        runtime.start_feeds()
        if args.json:
            runtime.wait_feeds()
        else:
            interrupted = _live_table(runtime, config)
        snapshot = _snapshot(runtime, config)
    except KeyboardInterrupt:
        interrupted = True
        snapshot = _snapshot(runtime, config)
    finally:
        stats = runtime.shutdown()
    snapshot["recorder"] = stats
    snapshot["interrupted"] = interrupted
    if args.json:
        sys.stdout.write(orjson.dumps(snapshot, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
    else:
        from rich.console import Console

        console = Console()
        console.print(_tables(snapshot))
        written = stats.get("written", {})
        console.print(
            "stored: " + ", ".join(f"{n} {k}" for k, n in sorted(written.items())) + f" in {runtime.db_url}",
            highlight=False,
        )
    for error in stats.get("errors", []):
        print(f"warning: the store rejected a batch ({stats.get('dropped', 0)} rows dropped in all): {error}",
              file=sys.stderr)  # fmt: skip
    for mux in snapshot["muxes"]:
        for gap in mux["gaps"]:
            print(f"warning: {mux['name']}: data gap {gap}", file=sys.stderr)
        if mux["error"]:
            print(f"warning: {mux['name']}: feed failed: {mux['error']}", file=sys.stderr)
    return 130 if interrupted else 0


def _snapshot(runtime: Any, config: Any) -> dict[str, Any]:
    accounts = {}
    for a in config.accounts:
        accounts[a.id] = {
            "portfolio": runtime.portfolio_summary(a.id) if a.id in runtime.portfolios else None,
            "bots": runtime.status(a.id),
            "m2m": runtime.m2m_marks(a.id),
        }
    names = {r["instance_id"]: r["name"] for a in config.accounts for r in runtime.list_instances(a.id)}
    for acc in accounts.values():
        for mark in acc["m2m"]:
            mark["name"] = names.get(mark["instance_id"], mark["instance_id"])
    return {"accounts": accounts, "muxes": runtime.mux_stats()}


def _live_table(runtime: Any, config: Any) -> bool:
    """Refresh the table twice a second until every feed is done; True if interrupted."""
    from rich.live import Live

    try:
        with Live(_tables(_snapshot(runtime, config)), refresh_per_second=2, transient=False) as live:
            while not runtime.wait_feeds(timeout_s=0.5):
                live.update(_tables(_snapshot(runtime, config)))
            live.update(_tables(_snapshot(runtime, config)))
    except KeyboardInterrupt:
        return True
    return False


def _tables(snapshot: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table

    parts: list[Any] = []
    for account_id, acc in snapshot["accounts"].items():
        if acc["m2m"] and any(m["unrealized_pnl"] or m["realized_pnl"] for m in acc["m2m"]):
            m2m = Table(title=f"{account_id} · strategies (M2M)")
            for col in ("strategy", "unrealized (M2M)", "realized", "total"):
                m2m.add_column(col, justify="left" if col == "strategy" else "right")
            for m in acc["m2m"]:
                m2m.add_row(
                    m["name"], f"{m['unrealized_pnl']:,.2f}", f"{m['realized_pnl']:,.2f}", f"{m['total_pnl']:,.2f}"
                )
            parts.append(m2m)
        pf = acc["portfolio"]
        if pf is None:
            continue
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(pf["time_ns"] / 1e9)) if pf["time_ns"] else "-"
        table = Table(
            title=f"{account_id} · equity {pf['equity']:,.2f} · drawdown {pf['drawdown_pct']:.2f}% · "
            f"{'HALTED' if pf['halted'] else 'active'} · data time {when} UTC · rejections {pf['risk_rejections']}"
        )
        for col in ("bot", "strategy", "state", "equity", "realized", "fees", "positions", "fills", "errors"):
            table.add_column(
                col, justify="right" if col in ("equity", "realized", "fees", "fills", "errors") else "left"
            )
        for b in acc["bots"]:
            positions = (
                ", ".join(f"{s} {p['qty']:+g}@{p['avg_price']:.6g}" for s, p in b["positions"].items()) or "flat"
            )
            state = b["state"] + (f" ({b['reason']})" if b["state"] != "running" and b["reason"] else "")
            table.add_row(
                b["name"], b["strategy_type"], state, f"{b['equity']:,.2f}", f"{b['realized_pnl']:,.2f}",
                f"{b['fees']:,.2f}", positions, str(b["fills"]), str(b["errors"]),
            )  # fmt: skip
        parts.append(table)
    return Group(*parts)

"""Strategy legs, M2M candles and daily performance as stored data (migration ``005_m2m``): reads,
rollup selection and the P&L export.

Writers (the M2M aggregator, the control service) store rows with
:meth:`Store.write_live <engine.store.base.Store.write_live>` in the layouts of
:data:`~engine.store.live.LIVE_TABLES` (:data:`LEG_SCHEMA`, :data:`EXIT_SCHEMA`, :data:`CANDLE_SCHEMA`,
:data:`DAILY_SCHEMA`; the rules each row obeys are listed there). This module reads them back.

* **Scoped by account.** Every function takes ``account_id`` and ``instance_id`` and first checks that
  the strategy instance belongs to the account: another account's instance raises the same
  :class:`NotFoundError` as an unknown one, and every query also filters on ``account_id``.
* **Units.** M2M is the strategy's unrealized P&L in the account's quote currency: the sum over its
  open legs of (mark − entry_price) × qty × side × multiplier (BUY = +1, SELL = −1); ``total_pnl`` adds
  the realized P&L (after fees). Timestamps are ``timestamp[ns, UTC]`` (stored to the microsecond).
* **Time windows.** ``start`` / ``end`` are int ns since the epoch (UTC) or None (unbounded), half-open
  ``[start, end)``; a candle is in the window when its ``ts`` (its minute's, or 5-minute bucket's,
  start) is.
* **Rollup selection.** ``interval="1m"`` reads ``strategy_m2m_candles``; ``"5m"`` reads
  ``strategy_m2m_5m``, which is a real-time TimescaleDB continuous aggregate when the migration found
  the extension and a plain view over the 1-minute candles otherwise (same name, same columns:
  open = first open, high = max, low = min, close / realized_pnl / total_pnl = last, updates = sum,
  model_mark = any). :func:`rollup_kind` says which.

**The P&L export** (:func:`export_pnl`) writes four files into a directory, as CSV (a header row,
pyarrow's writer) or Parquet, one format for all four:

* ``summary.<ext>`` — one row: the strategy (id, name, type, default flag, tags, target profit, stop
  loss), the window, the counts of legs and open legs, realized / unrealized / total P&L over its legs
  (unrealized is null when an open leg has no mark), and the last 1-minute candle in the window (its
  ts, close M2M and total P&L).
* ``legs.<ext>`` — one row per leg active in the window (entered before ``end`` and open, or last
  updated at or after ``start``), ordered by entry_ts then leg_id: the instrument, side, entry,
  open and initial quantity, its exits over its whole life (count, quantity, average price, last ts),
  its realized P&L, and — from ``marks`` (symbol → last price) — the mark, unrealized and total P&L
  (a leg with no open quantity has unrealized 0; an open leg without a mark has nulls).
* ``exits.<ext>`` — every exit in the window, ordered by ts, with the leg's symbol and side.
* ``daily.<ext>`` — the daily performance rows whose day (in the account's time zone) overlaps the
  window, ordered by day, with the strategy's name.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.errors import ParameterError, StoreError
from engine.store.base import Store
from engine.store.live import LIVE_TABLES, MANUAL_STRATEGY_TYPE, TS

#: Arrow layouts (what writers pass to ``write_live`` and these functions return).
LEG_SCHEMA = LIVE_TABLES["strategy_legs"].schema
EXIT_SCHEMA = LIVE_TABLES["strategy_leg_exits"].schema
CANDLE_SCHEMA = LIVE_TABLES["strategy_m2m_candles"].schema
DAILY_SCHEMA = LIVE_TABLES["strategy_performance_daily"].schema

#: Candle interval → the relation that holds it.
INTERVALS: dict[str, str] = {"1m": "strategy_m2m_candles", "5m": "strategy_m2m_5m"}
EXPORT_FORMATS: tuple[str, ...] = ("csv", "parquet")
DEFAULT_STRATEGY_TYPE = MANUAL_STRATEGY_TYPE

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_F64 = pa.float64()
_STR = pa.string()

SUMMARY_SCHEMA = pa.schema(
    [
        ("account_id", _STR),
        ("instance_id", _STR),
        ("strategy", _STR),
        ("strategy_type", _STR),
        ("is_default", pa.bool_()),
        ("tags", _STR),
        ("target_profit", _F64),
        ("stop_loss", _F64),
        ("start_ts", TS),
        ("end_ts", TS),
        ("legs", pa.int32()),
        ("open_legs", pa.int32()),
        ("realized_pnl", _F64),
        ("unrealized_pnl", _F64),
        ("total_pnl", _F64),
        ("last_candle_ts", TS),
        ("last_m2m", _F64),
        ("last_total_pnl", _F64),
    ]
)
LEG_REPORT_SCHEMA = pa.schema(
    [
        ("account_id", _STR),
        ("instance_id", _STR),
        ("strategy", _STR),
        ("leg_id", _STR),
        ("symbol", _STR),
        ("exchange", _STR),
        ("segment", _STR),
        ("option_type", _STR),
        ("strike", _F64),
        ("expiry_ts", TS),
        ("underlying", _STR),
        ("side", pa.int8()),
        ("source", _STR),
        ("bot_id", _STR),
        ("status", _STR),
        ("entry_ts", TS),
        ("entry_price", _F64),
        ("initial_qty", _F64),
        ("open_qty", _F64),
        ("lot_size", _F64),
        ("multiplier", _F64),
        ("exits", pa.int32()),
        ("exited_qty", _F64),
        ("avg_exit_price", _F64),
        ("last_exit_ts", TS),
        ("realized_pnl", _F64),
        ("mark_price", _F64),
        ("unrealized_pnl", _F64),
        ("total_pnl", _F64),
        ("notes", _STR),
        ("updated_ts", TS),
    ]
)
EXIT_REPORT_SCHEMA = pa.schema(
    [
        ("account_id", _STR),
        ("instance_id", _STR),
        ("strategy", _STR),
        ("leg_id", _STR),
        ("symbol", _STR),
        ("side", pa.int8()),
        ("exit_id", pa.int64()),
        ("ts", TS),
        ("qty", _F64),
        ("price", _F64),
        ("realized_pnl", _F64),
    ]
)
DAILY_REPORT_SCHEMA = pa.schema(
    [
        ("account_id", _STR),
        ("instance_id", _STR),
        ("strategy", _STR),
        *((f.name, f.type) for f in DAILY_SCHEMA if f.name not in ("account_id", "instance_id")),
    ]
)


class NotFoundError(StoreError):
    """No such strategy instance (or leg) in the caller's account; another account's looks the same."""

    def __init__(self, what: str, key: str, account_id: str) -> None:
        self.what = what
        self.key = key
        self.account_id = account_id
        super().__init__(f"no {what} {key!r} in account {account_id!r}")


@dataclass(frozen=True)
class PnlReport:
    """A strategy's P&L report as Arrow tables (see the module docstring for their rows)."""

    summary: pa.Table
    legs: pa.Table
    exits: pa.Table
    daily: pa.Table

    def tables(self) -> dict[str, pa.Table]:
        """name → table, in file order."""
        return {"summary": self.summary, "legs": self.legs, "exits": self.exits, "daily": self.daily}


@dataclass(frozen=True)
class PnlExport:
    """The files :func:`export_pnl` wrote: ``files`` (name → path) and ``rows`` (name → row count)."""

    directory: Path
    format: str
    files: dict[str, Path]
    rows: dict[str, int]


# -------------------------------------------------------------------- arguments


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ParameterError(name, f"must be a non-empty string, got {value!r}")
    return value


def _ns_arg(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(name, f"must be int nanoseconds since the epoch or None, got {value!r}")
    return int(value)


def _window(start: object, end: object) -> tuple[int | None, int | None]:
    s, e = _ns_arg("start", start), _ns_arg("end", end)
    if s is not None and e is not None and e < s:
        raise ParameterError("end", f"must be >= start ({s}), got {e}")
    return s, e


def _bound(ns: int) -> datetime:
    """The first stored (µs) instant >= ``ns``: ``ts >= bound`` ⇔ ``ts_ns >= ns`` for stored stamps."""
    return _EPOCH + timedelta(microseconds=-(-ns // 1000))


def _day(name: str, value: object) -> date | None:
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise ParameterError(name, f"must be a datetime.date or None, got {value!r}")


# -------------------------------------------------------------------- reads


def get_instance(store: Store, account_id: str, instance_id: str) -> dict[str, Any]:
    """The ``strategy_instances`` row (as :meth:`Store.read_live` returns it) of ``instance_id`` in
    ``account_id``.

    Raises:
        ParameterError: an empty or non-string id.
        NotFoundError: the instance is unknown or belongs to another account.
        StoreError: the schema is not migrated or the database fails.
    """
    _text("account_id", account_id)
    _text("instance_id", instance_id)
    rows = store.read_live("strategy_instances", account_id=account_id, where={"instance_id": instance_id})
    if rows.num_rows == 0:
        raise NotFoundError("strategy instance", instance_id, account_id)
    return rows.to_pylist()[0]


def default_strategy(store: Store, account_id: str) -> dict[str, Any] | None:
    """The account's default strategy (its ``strategy_instances`` row), or None when it has none."""
    _text("account_id", account_id)
    rows = store.read_live("strategy_instances", account_id=account_id, where={"is_default": True})
    return rows.to_pylist()[0] if rows.num_rows else None


def read_candles(
    store: Store,
    account_id: str,
    instance_id: str,
    interval: str = "1m",
    start: int | None = None,
    end: int | None = None,
) -> pa.Table:
    """A strategy's M2M candles of ``interval`` (``"1m"`` or ``"5m"``) whose ts is in ``[start, end)``
    (ns; None = unbounded), ordered by ts, with :data:`CANDLE_SCHEMA`.

    Raises:
        ParameterError: an unknown interval, a bad id or bound, ``end < start``.
        NotFoundError: the instance is unknown or belongs to another account.
        StoreError: the schema is not migrated or the database fails.
    """
    if interval not in INTERVALS:
        raise ParameterError("interval", f"must be one of {', '.join(INTERVALS)}, got {interval!r}")
    s, e = _window(start, end)
    get_instance(store, account_id, instance_id)
    clause, params = _scoped(store, account_id, instance_id, "ts", s, e)
    return store._select_live(INTERVALS[interval], CANDLE_SCHEMA, f"{clause} ORDER BY ts", params)


def read_daily(
    store: Store,
    account_id: str,
    instance_id: str,
    first_day: date | None = None,
    last_day: date | None = None,
) -> pa.Table:
    """A strategy's daily performance rows from ``first_day`` to ``last_day`` (inclusive; days in the
    account's time zone; None = unbounded), ordered by day, with :data:`DAILY_SCHEMA`.

    Raises:
        ParameterError: a bad id or day.
        NotFoundError: the instance is unknown or belongs to another account.
        StoreError: the schema is not migrated or the database fails.
    """
    first, last = _day("first_day", first_day), _day("last_day", last_day)
    get_instance(store, account_id, instance_id)
    ph = store.placeholder
    clause, params = _scoped(store, account_id, instance_id, None, None, None)
    if first is not None:
        clause += f" AND day >= {ph}"
        params.append(first)
    if last is not None:
        clause += f" AND day <= {ph}"
        params.append(last)
    return store._select_live("strategy_performance_daily", DAILY_SCHEMA, f"{clause} ORDER BY day", params)


def read_legs(store: Store, account_id: str, instance_id: str, *, open_only: bool = False) -> pa.Table:
    """A strategy's legs (only those with status ``open`` when ``open_only``), ordered by entry_ts then
    leg_id, with :data:`LEG_SCHEMA`.

    Raises:
        ParameterError: a bad id.
        NotFoundError: the instance is unknown or belongs to another account.
        StoreError: the schema is not migrated or the database fails.
    """
    get_instance(store, account_id, instance_id)
    clause, params = _scoped(store, account_id, instance_id, None, None, None)
    if open_only:
        clause += " AND status = 'open'"
    return store._select_live("strategy_legs", LEG_SCHEMA, f"{clause} ORDER BY entry_ts, leg_id", params)


def read_exits(
    store: Store,
    account_id: str,
    instance_id: str,
    leg_id: str | None = None,
    start: int | None = None,
    end: int | None = None,
) -> pa.Table:
    """A strategy's leg exits (one leg's when ``leg_id`` is given) with ts in ``[start, end)``, ordered
    by ts, leg_id, exit_id, with :data:`EXIT_SCHEMA`.

    Raises:
        ParameterError: a bad id or bound, ``end < start``.
        NotFoundError: the instance, or the leg in it, is unknown or belongs to another account.
        StoreError: the schema is not migrated or the database fails.
    """
    s, e = _window(start, end)
    get_instance(store, account_id, instance_id)
    clause, params = _scoped(store, account_id, instance_id, "ts", s, e)
    if leg_id is not None:
        _text("leg_id", leg_id)
        legs = store.read_live(
            "strategy_legs", account_id=account_id, where={"instance_id": instance_id, "leg_id": leg_id}
        )
        if legs.num_rows == 0:
            raise NotFoundError("leg", leg_id, account_id)
        clause += f" AND leg_id = {store.placeholder}"
        params.append(leg_id)
    return store._select_live("strategy_leg_exits", EXIT_SCHEMA, f"{clause} ORDER BY ts, leg_id, exit_id", params)


def rollup_kind(store: Store) -> Literal["continuous_aggregate", "view"]:
    """What ``strategy_m2m_5m`` is in this store: a TimescaleDB continuous aggregate or a plain view."""
    if store.dialect != "postgres":
        return "view"
    catalog = store._query_rows("SELECT to_regclass('timescaledb_information.continuous_aggregates') IS NOT NULL")
    if not catalog or not catalog[0][0]:
        return "view"
    found = store._query_rows(
        "SELECT 1 FROM timescaledb_information.continuous_aggregates "
        "WHERE view_name = 'strategy_m2m_5m' AND view_schema = current_schema()"
    )
    return "continuous_aggregate" if found else "view"


def _scoped(
    store: Store, account_id: str, instance_id: str, ts: str | None, start: int | None, end: int | None
) -> tuple[str, list[Any]]:
    ph = store.placeholder
    clause = f"WHERE account_id = {ph} AND instance_id = {ph}"
    params: list[Any] = [account_id, instance_id]
    if ts is not None and start is not None:
        clause += f" AND {ts} >= {ph}"
        params.append(_bound(start))
    if ts is not None and end is not None:
        clause += f" AND {ts} < {ph}"
        params.append(_bound(end))
    return clause, params


# -------------------------------------------------------------------- the P&L report


def pnl_report(
    store: Store,
    account_id: str,
    instance_id: str,
    start: int | None = None,
    end: int | None = None,
    *,
    marks: Mapping[str, float] | None = None,
) -> PnlReport:
    """A strategy's P&L report over ``[start, end)`` (ns; None = unbounded) as Arrow tables (see the
    module docstring). ``marks`` maps a leg's symbol to its last price (quote currency), for the legs'
    unrealized P&L.

    Raises:
        ParameterError: a bad id, bound or mark (``marks.<symbol>``: finite and >= 0).
        NotFoundError: the instance is unknown or belongs to another account.
        StoreError: the schema is not migrated or the database fails.
    """
    s, e = _window(start, end)
    prices = _marks(marks)
    instance = get_instance(store, account_id, instance_id)
    name = instance["name"]
    accounts = store.read_live("accounts", account_id=account_id)
    tz = ZoneInfo(accounts["timezone"][0].as_py()) if accounts.num_rows else ZoneInfo("UTC")

    legs = read_legs(store, account_id, instance_id)
    all_exits = read_exits(store, account_id, instance_id)
    leg_rows = _legs_in_window(legs.to_pylist(), s, e)
    leg_table = _leg_report(leg_rows, all_exits.to_pylist(), prices, name)

    exits = read_exits(store, account_id, instance_id, start=s, end=e)
    exit_table = _exit_report(exits.to_pylist(), {r["leg_id"]: r for r in legs.to_pylist()}, name)

    first_day = None if s is None else _to_datetime(s).astimezone(tz).date()
    last_day = None if e is None else _to_datetime(e - 1).astimezone(tz).date()
    daily = read_daily(store, account_id, instance_id, first_day, last_day)
    daily_table = _with_strategy(daily, name, DAILY_REPORT_SCHEMA)

    clause, params = _scoped(store, account_id, instance_id, "ts", s, e)
    last = store._select_live("strategy_m2m_candles", CANDLE_SCHEMA, f"{clause} ORDER BY ts DESC LIMIT 1", params)
    summary = _summary(instance, s, e, leg_table, last)
    return PnlReport(summary=summary, legs=leg_table, exits=exit_table, daily=daily_table)


def export_pnl(
    store: Store,
    account_id: str,
    instance_id: str,
    fmt: str,
    out_path: str | os.PathLike[str],
    start: int | None = None,
    end: int | None = None,
    *,
    marks: Mapping[str, float] | None = None,
) -> PnlExport:
    """Write a strategy's P&L report (:func:`pnl_report`) as ``summary``, ``legs``, ``exits`` and
    ``daily`` files of format ``fmt`` (``"csv"`` or ``"parquet"``) into the directory ``out_path``
    (created if missing; files of the same names are replaced, each atomically).

    Raises:
        ParameterError: an unknown format, ``out_path`` that is not a directory, or as :func:`pnl_report`.
        NotFoundError: the instance is unknown or belongs to another account.
        StoreError: the schema is not migrated, the database fails, or a file cannot be written.
    """
    if fmt not in EXPORT_FORMATS:
        raise ParameterError("fmt", f"must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if not isinstance(out_path, (str, os.PathLike)) or not os.fspath(out_path):
        raise ParameterError("out_path", f"must be a directory path, got {out_path!r}")
    directory = Path(out_path)
    if directory.exists() and not directory.is_dir():
        raise ParameterError("out_path", f"must be a directory, {directory} is a file")
    report = pnl_report(store, account_id, instance_id, start, end, marks=marks)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create export directory {directory}: {exc}") from exc
    files: dict[str, Path] = {}
    rows: dict[str, int] = {}
    for name, table in report.tables().items():
        path = directory / f"{name}.{fmt}"
        tmp = directory / f".{name}.{fmt}.{uuid.uuid4().hex}.tmp"
        try:
            if fmt == "csv":
                pacsv.write_csv(table, tmp)
            else:
                pq.write_table(table, tmp)
            os.replace(tmp, path)
        except (OSError, pa.ArrowException) as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"writing the P&L export {path} failed: {exc}") from exc
        files[name] = path
        rows[name] = table.num_rows
    return PnlExport(directory=directory, format=fmt, files=files, rows=rows)


def _marks(marks: object) -> dict[str, float]:
    if marks is None:
        return {}
    if not isinstance(marks, Mapping):
        raise ParameterError("marks", f"must be a mapping of symbol to last price, got {type(marks).__name__}")
    out: dict[str, float] = {}
    for symbol, price in marks.items():
        if not isinstance(symbol, str) or not symbol:
            raise ParameterError("marks", f"keys must be non-empty symbols, got {symbol!r}")
        ok = isinstance(price, (int, float, np.integer, np.floating)) and not isinstance(price, bool)
        if not ok or not math.isfinite(float(price)) or float(price) < 0:
            raise ParameterError(f"marks.{symbol}", f"must be a finite price >= 0, got {price!r}")
        out[symbol] = float(price)
    return out


def _to_datetime(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _ns(value: Any) -> int:
    """A timestamp read back (pandas-free: pyarrow gives datetime, or Timestamp with .value) as int ns."""
    if value is None:
        raise ValueError("no timestamp")
    if hasattr(value, "value"):
        return int(value.value)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _legs_in_window(legs: list[dict[str, Any]], start: int | None, end: int | None) -> list[dict[str, Any]]:
    """Legs entered before ``end`` that are open, or were last updated at or after ``start``."""
    out = []
    for leg in legs:
        if end is not None and _ns(leg["entry_ts"]) >= end:
            continue
        if start is not None and leg["status"] != "open" and _ns(leg["updated_ts"]) < start:
            continue
        out.append(leg)
    return out


def _leg_report(
    legs: list[dict[str, Any]], exits: list[dict[str, Any]], marks: Mapping[str, float], strategy: str
) -> pa.Table:
    by_leg: dict[str, list[dict[str, Any]]] = {}
    for x in exits:
        by_leg.setdefault(x["leg_id"], []).append(x)
    rows = []
    for leg in legs:
        done = by_leg.get(leg["leg_id"], [])
        exited = sum(x["qty"] for x in done)
        mark = marks.get(leg["symbol"])
        if leg["qty"] == 0:
            unrealized: float | None = 0.0
        elif mark is None:
            unrealized = None
        else:
            unrealized = (mark - leg["entry_price"]) * leg["qty"] * leg["side"] * leg["multiplier"]
        rows.append(
            {
                **{k: leg[k] for k in LEG_REPORT_SCHEMA.names if k in leg},
                "strategy": strategy,
                "open_qty": leg["qty"],
                "exits": len(done),
                "exited_qty": exited,
                "avg_exit_price": sum(x["qty"] * x["price"] for x in done) / exited if done else None,
                "last_exit_ts": max((x["ts"] for x in done), default=None),
                "mark_price": mark,
                "unrealized_pnl": unrealized,
                "total_pnl": None if unrealized is None else leg["realized_pnl"] + unrealized,
            }
        )
    return pa.Table.from_pylist(rows, schema=LEG_REPORT_SCHEMA)


def _exit_report(exits: list[dict[str, Any]], legs: Mapping[str, dict[str, Any]], strategy: str) -> pa.Table:
    rows = [
        {**x, "strategy": strategy, "symbol": legs[x["leg_id"]]["symbol"], "side": legs[x["leg_id"]]["side"]}
        for x in exits
    ]
    return pa.Table.from_pylist(rows, schema=EXIT_REPORT_SCHEMA)


def _with_strategy(table: pa.Table, strategy: str, schema: pa.Schema) -> pa.Table:
    named = table.append_column("strategy", pa.array([strategy] * table.num_rows, _STR))
    return named.select(schema.names).cast(schema)


def _summary(
    instance: Mapping[str, Any], start: int | None, end: int | None, legs: pa.Table, last: pa.Table
) -> pa.Table:
    rows = legs.to_pylist()
    unrealized = [r["unrealized_pnl"] for r in rows]
    realized = float(sum(r["realized_pnl"] for r in rows))
    open_unrealized = None if any(u is None for u in unrealized) else float(sum(unrealized))
    candle = last.to_pylist()[0] if last.num_rows else {}
    row = {
        "account_id": instance["account_id"],
        "instance_id": instance["instance_id"],
        "strategy": instance["name"],
        "strategy_type": instance["strategy_type"],
        "is_default": instance["is_default"],
        "tags": instance["tags"],
        "target_profit": instance["target_profit"],
        "stop_loss": instance["stop_loss"],
        "start_ts": start,
        "end_ts": end,
        "legs": len(rows),
        "open_legs": sum(1 for r in rows if r["status"] == "open"),
        "realized_pnl": realized,
        "unrealized_pnl": open_unrealized,
        "total_pnl": None if open_unrealized is None else realized + open_unrealized,
        "last_candle_ts": candle.get("ts"),
        "last_m2m": candle.get("close"),
        "last_total_pnl": candle.get("total_pnl"),
    }
    return pa.Table.from_pylist([row], schema=SUMMARY_SCHEMA)

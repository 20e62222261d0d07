"""Portfolio backtests as stored data: table layouts, validation before a write, and the loaded record.

A :class:`~engine.portfolio.backtest.PortfolioResult` is stored (migration ``003_portfolio_backtests``)
as:

* one ``backtest_portfolios`` row: name, capital, summary figures, ``metrics``, ``strategy_metrics``,
  ``correlation`` (NaN → JSON null), ``allocations`` and ``settings`` as JSON;
* one ordinary backtest run per strategy instance (``result.sleeve_result(name)`` through
  :func:`~engine.store.base.prepare_run`, with ``portfolio_id`` added to its settings), linked by a
  ``backtest_portfolio_strategies`` row, so ``load_backtest`` / ``tradectl show`` read each sleeve;
* the portfolio's own tables: ``backtest_portfolio_equity`` (:data:`PORTFOLIO_EQUITY_SCHEMA`),
  ``backtest_portfolio_events`` (:data:`EVENTS_SCHEMA`, ``data`` kept as the exact JSON text),
  ``backtest_portfolio_rejections`` (:data:`REJECTIONS_SCHEMA`; columns ``check`` / ``limit`` are
  ``check_name`` / ``limit_value``; a non-finite ``price``, ``value`` or ``limit`` is stored as NULL
  and read back as NaN) and ``backtest_portfolio_snapshots`` (:data:`SNAPSHOT_SCHEMA`).

Rejections and snapshots get a ``seq`` column (the row's 1-based position) so they load in the
result's order; events are ordered by their own ``seq``, the equity curve by ``ts``.

Units: money (capital, equity, cash, position value, exposure, peak, final equity) in quote
currency; quantities in base units; prices in quote currency; ``*_pct`` and ``allocation_pct`` in
percent; rejection ``value`` / ``limit`` in the unit of their check (see :mod:`engine.risk.manager`);
timestamps UTC with microsecond precision. This module touches no database: the stores call
:func:`prepare_portfolio` before they write and :func:`stored_portfolio` after they read.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import EngineError, StoreError
from engine.portfolio.backtest import PORTFOLIO_EQUITY_SCHEMA, SNAPSHOT_SCHEMA, PortfolioResult
from engine.portfolio.events import CIRCUIT_BREAKER, EVENTS_SCHEMA
from engine.risk.manager import REJECTIONS_SCHEMA
from engine.store.base import (
    _EPOCH,
    _TS_US,
    PreparedRun,
    _bounded,
    _describe,
    _finite,
    _metric,
    _require_text,
    _validate_columns,
    prepare_run,
)
from engine.store.errors import StoreValueError

PORTFOLIOS = "backtest_portfolios"
STRATEGIES = "backtest_portfolio_strategies"
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class PortfolioTable:
    """How one Arrow table of a :class:`PortfolioResult` is stored.

    Attributes:
        attr: the ``PortfolioResult`` attribute (and the :class:`StoredPortfolio` field).
        db_table: the database table (keyed by ``portfolio_id``).
        schema: the result's Arrow schema, which loading gives back.
        renames: result column → database column, where they differ.
        non_finite_as_null: float columns whose NaN/±inf are stored as NULL (read back as NaN).
        unique: result columns unique within one portfolio (its primary key without portfolio_id).
        add_seq: store each row's 1-based position as ``seq`` (and load in that order).
        order_by: the database column the rows are loaded in order of.
    """

    attr: str
    db_table: str
    schema: pa.Schema
    renames: Mapping[str, str] = field(default_factory=dict)
    non_finite_as_null: frozenset[str] = frozenset()
    unique: tuple[str, ...] = ()
    add_seq: bool = False
    order_by: str = "seq"

    @property
    def db_schema(self) -> pa.Schema:
        """The table as written and read by the backends: database column names, timestamps in µs."""
        fields = [pa.field("seq", pa.int64())] if self.add_seq else []
        for f in self.schema:
            kind = _TS_US if pa.types.is_timestamp(f.type) else f.type
            fields.append(pa.field(self.renames.get(f.name, f.name), kind))
        return pa.schema(fields)

    def prepare(self, given: object) -> pa.Table:
        """``given`` validated and laid out as :attr:`db_schema`.

        Raises:
            StoreValueError: naming this table, the column and the first offending row.
        """
        table = _validate_columns(self.db_table, given, self.schema, frozenset(), self.non_finite_as_null)
        if self.unique and table.num_rows:
            keys = table.group_by(list(self.unique)).aggregate([([], "count_all")])
            if keys.num_rows != table.num_rows:
                raise StoreValueError(
                    self.db_table, ", ".join(self.unique), "values must be unique within a portfolio backtest"
                )
        if self.attr == "events":
            _check_json_column(self.db_table, "data", table["data"])
        table = table.rename_columns([self.renames.get(n, n) for n in table.column_names])
        if self.add_seq:
            table = table.add_column(0, "seq", pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64)))
        return table.cast(self.db_schema)

    def restore(self, stored: pa.Table) -> pa.Table:
        """A table read back as :attr:`db_schema` turned into the result's :attr:`schema`."""
        if self.add_seq:
            stored = stored.drop_columns(["seq"])
        back = {v: k for k, v in self.renames.items()}
        columns = []
        for name in stored.column_names:
            col = stored[name]
            if back.get(name, name) in self.non_finite_as_null:
                col = pc.fill_null(col, math.nan)
            columns.append(col)
        table = pa.table(columns, names=[back.get(n, n) for n in stored.column_names])
        return table.cast(self.schema)


#: The portfolio's own tables, in write order.
PORTFOLIO_TABLES: tuple[PortfolioTable, ...] = (
    PortfolioTable("equity", "backtest_portfolio_equity", PORTFOLIO_EQUITY_SCHEMA, unique=("ts",), order_by="ts"),
    PortfolioTable("events", "backtest_portfolio_events", EVENTS_SCHEMA, unique=("seq",)),
    PortfolioTable(
        "rejections",
        "backtest_portfolio_rejections",
        REJECTIONS_SCHEMA,
        renames={"check": "check_name", "limit": "limit_value"},
        non_finite_as_null=frozenset({"price", "value", "limit"}),
        add_seq=True,
    ),
    PortfolioTable(
        "snapshots", "backtest_portfolio_snapshots", SNAPSHOT_SCHEMA, unique=("ts", "strategy"), add_seq=True
    ),
)

#: ``backtest_portfolio_strategies`` without ``portfolio_id``: one row per strategy instance, ``seq``
#: its 1-based position in the portfolio, ``allocation_pct`` its share of the capital in percent.
STRATEGIES_SCHEMA = pa.schema(
    [
        ("strategy", pa.string()),
        ("run_id", pa.string()),
        ("strategy_type", pa.string()),
        ("allocation_pct", pa.float64()),
        ("seq", pa.int32()),
    ]
)

#: Columns of ``backtest_portfolios`` (write and read order).
PORTFOLIO_COLUMNS: tuple[str, ...] = (
    "portfolio_id",
    "created_at",
    "name",
    "capital",
    "start_ts",
    "end_ts",
    "final_equity",
    "total_return_pct",
    "sharpe",
    "max_drawdown_pct",
    "trades",
    "risk_rejections",
    "breaker_trips",
    "trade_hash",
    "metrics",
    "strategy_metrics",
    "correlation",
    "allocations",
    "settings",
)
#: NUMERIC columns of ``backtest_portfolios`` (floats, None when NULL).
PORTFOLIO_NUMERIC_COLUMNS: tuple[str, ...] = (
    "capital",
    "final_equity",
    "total_return_pct",
    "sharpe",
    "max_drawdown_pct",
)
#: TIMESTAMPTZ columns of ``backtest_portfolios`` (backends read them as epoch microseconds).
PORTFOLIO_TIMESTAMP_COLUMNS: tuple[str, ...] = ("created_at", "start_ts", "end_ts")
#: JSON columns of ``backtest_portfolios`` (backends read them as text).
PORTFOLIO_JSON_COLUMNS: tuple[str, ...] = ("metrics", "strategy_metrics", "correlation", "allocations", "settings")
#: Columns of ``backtest_portfolios`` in a summary row (everything but the JSON documents).
PORTFOLIO_ROW_SUMMARY_COLUMNS: tuple[str, ...] = tuple(c for c in PORTFOLIO_COLUMNS if c not in PORTFOLIO_JSON_COLUMNS)
#: Keys of a ``list_portfolios`` entry: the summary columns, then ``strategies`` (names, in order).
PORTFOLIO_SUMMARY_COLUMNS: tuple[str, ...] = (*PORTFOLIO_ROW_SUMMARY_COLUMNS, "strategies")


@dataclass(frozen=True)
class PreparedPortfolio:
    """A validated portfolio result, ready to write in one transaction.

    ``row`` maps each of :data:`PORTFOLIO_COLUMNS` to a Python value (JSON as text, timestamps as
    aware datetimes or None, NUMERIC columns as float or None); ``runs`` are the sleeves' backtest
    runs; ``strategies`` has :data:`STRATEGIES_SCHEMA`; ``tables`` maps each database table of
    :data:`PORTFOLIO_TABLES` to its rows laid out as the table's ``db_schema``.
    """

    portfolio_id: str
    row: dict[str, Any]
    runs: tuple[PreparedRun, ...]
    strategies: pa.Table
    tables: dict[str, pa.Table]


@dataclass(frozen=True)
class StoredPortfolio:
    """A stored portfolio backtest as :meth:`Store.load_portfolio <engine.store.base.Store.load_portfolio>`
    returns it.

    Money in quote currency, ``*_pct`` in percent, timestamps aware UTC datetimes. ``correlation``
    has NaN where it is undefined (stored as JSON null). ``run_ids`` maps each strategy instance, in
    portfolio order, to the ``run_id`` of its backtest run (``load_backtest`` it for its fills,
    trades and equity curve); ``strategy_types`` to its strategy type. ``equity``, ``events``,
    ``rejections`` and ``snapshots`` have the result's schemas (``events.data`` is JSON text).
    """

    portfolio_id: str
    created_at: datetime
    name: str
    capital: float
    start_ts: datetime | None
    end_ts: datetime | None
    final_equity: float | None
    total_return_pct: float | None
    sharpe: float | None
    max_drawdown_pct: float | None
    trades: int
    risk_rejections: int
    breaker_trips: int
    trade_hash: str
    metrics: dict[str, Any]
    strategy_metrics: dict[str, dict[str, Any]]
    correlation: dict[str, dict[str, float]]
    allocations: dict[str, float]
    settings: dict[str, Any]
    run_ids: dict[str, str]
    strategy_types: dict[str, str]
    equity: pa.Table
    events: pa.Table
    rejections: pa.Table
    snapshots: pa.Table

    @property
    def strategies(self) -> list[str]:
        """The strategy instance names, in portfolio order."""
        return list(self.run_ids)

    def summary(self) -> dict[str, Any]:
        """The portfolio as one :meth:`~engine.store.base.Store.list_portfolios` entry."""
        out = {name: getattr(self, name) for name in PORTFOLIO_ROW_SUMMARY_COLUMNS}
        out["strategies"] = self.strategies
        return out


# -------------------------------------------------------------------- validation


def prepare_portfolio(result: PortfolioResult) -> PreparedPortfolio:
    """Validate ``result`` (and every sleeve's backtest run) and lay it out for writing (pure).

    A new ``portfolio_id`` (uuid4 string) is drawn; each sleeve's run gets a new ``run_id``.

    Raises:
        StoreValueError: naming table and column when a value cannot be stored (NaN/inf or null in a
            money/quantity column, |x| ≥ 1e20, a timestamp that is not a whole microsecond, a
            duplicate key, a side other than ±1, a missing or unknown column, text that is not JSON,
            a strategy without an allocation, rows of an unknown strategy ...).
        StoreError: ``result`` is not a PortfolioResult.
    """
    if not isinstance(result, PortfolioResult):
        raise StoreError(f"save_portfolio needs a PortfolioResult, got {type(result).__name__}")
    portfolio_id = str(uuid.uuid4())
    _require_text(PORTFOLIOS, "name", result.name)
    _require_text(PORTFOLIOS, "trade_hash", result.trade_hash, allow_empty=True)
    capital = _finite(PORTFOLIOS, "capital", result.capital)
    tables = {spec.db_table: spec.prepare(getattr(result, spec.attr)) for spec in PORTFOLIO_TABLES}

    names = _strategy_names(result)
    allocations = _mapping(PORTFOLIOS, "allocations", result.allocations)
    rows: list[tuple[str, str, str, float, int]] = []
    runs: list[PreparedRun] = []
    for seq, name in enumerate(names, start=1):
        info = result.strategies[name]
        strategy_type = info.get("type") if isinstance(info, Mapping) else None
        _require_text(STRATEGIES, "strategy_type", strategy_type)
        if name not in allocations:
            raise StoreValueError(STRATEGIES, "allocation_pct", f"strategy {name!r} has no allocation")
        allocation = _finite(STRATEGIES, "allocation_pct", allocations[name])
        run = _prepare_sleeve(result, name, portfolio_id)
        runs.append(run)
        rows.append((name, run.run_id, str(strategy_type), allocation, seq))
    strategies = pa.Table.from_pylist(
        [dict(zip(STRATEGIES_SCHEMA.names, r, strict=True)) for r in rows], schema=STRATEGIES_SCHEMA
    )

    metrics = _mapping(PORTFOLIOS, "metrics", result.metrics)
    equity = tables["backtest_portfolio_equity"]
    ts = equity["ts"]
    final_equity = _metric(metrics, "final_equity")
    if final_equity is None and equity.num_rows:
        final_equity = float(equity["equity"][-1].as_py())
    total_return = _metric(metrics, "total_return_pct")
    if total_return is None and final_equity is not None and capital > 0:
        total_return = _bounded((final_equity / capital - 1.0) * 100.0)
    sharpe = _metric(metrics, "sharpe")
    if sharpe is None:
        sharpe = _metric(metrics, "sharpe_ratio")
    row: dict[str, Any] = {
        "portfolio_id": portfolio_id,
        "created_at": datetime.now(UTC),
        "name": result.name,
        "capital": capital,
        "start_ts": _us_to_datetime(ts[0].value) if equity.num_rows else None,
        "end_ts": _us_to_datetime(ts[-1].value) if equity.num_rows else None,
        "final_equity": final_equity,
        "total_return_pct": total_return,
        "sharpe": sharpe,
        "max_drawdown_pct": _metric(metrics, "max_drawdown_pct"),
        "trades": _count("trades", metrics, _num_rows(result.trades)),
        "risk_rejections": _count("risk_rejections", metrics, _risk_rejections(tables)),
        "breaker_trips": _count("breaker_trips", metrics, _breaker_trips(tables)),
        "trade_hash": result.trade_hash,
        "metrics": _json("metrics", metrics),
        "strategy_metrics": _json("strategy_metrics", result.strategy_metrics or {}),
        "correlation": _json("correlation", result.correlation or {}),
        "allocations": _json("allocations", allocations),
        "settings": _json("settings", result.settings or {}),
    }
    return PreparedPortfolio(portfolio_id, row, tuple(runs), strategies, tables)


def _strategy_names(result: PortfolioResult) -> list[str]:
    strategies = _mapping(PORTFOLIOS, "strategies", result.strategies)
    names = list(strategies)
    for name in names:
        _require_text(STRATEGIES, "strategy", name)
    known = set(names)
    for attr in ("fills", "trades", "funding", "strategy_equity"):
        table = getattr(result, attr)
        if not isinstance(table, pa.Table) or "strategy" not in table.column_names:
            raise StoreValueError(
                STRATEGIES, "strategy", f"result.{attr} must be a pyarrow.Table with a strategy column"
            )
        unknown = set(pc.unique(table["strategy"]).to_pylist()) - known
        if unknown:
            raise StoreValueError(
                STRATEGIES, "strategy", f"result.{attr} has rows of unknown strategies {sorted(map(str, unknown))}"
            )
    return names


def _prepare_sleeve(result: PortfolioResult, name: str, portfolio_id: str) -> PreparedRun:
    try:
        sleeve = result.sleeve_result(name)
    except (LookupError, TypeError, ValueError, AttributeError, pa.ArrowException, EngineError) as exc:
        raise StoreValueError(
            STRATEGIES, "strategy", f"the backtest run of strategy {name!r} cannot be built: {_describe(exc)}"
        ) from exc
    sleeve.settings = {**(sleeve.settings or {}), "portfolio_id": portfolio_id}
    try:
        return prepare_run(sleeve)
    except StoreValueError as exc:
        raise StoreValueError(exc.table, exc.column, f"strategy {name!r}: {exc.rule}") from exc


def _mapping(table: str, column: str, value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise StoreValueError(table, column, f"must be a mapping, got {type(value).__name__}")
    return value


def _num_rows(table: object) -> int:
    return table.num_rows if isinstance(table, pa.Table) else 0


def _count(column: str, metrics: Mapping[str, Any], fallback: int) -> int:
    value = metrics.get(column)
    n = int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else fallback
    if not 0 <= n <= _INT32_MAX:
        raise StoreValueError(PORTFOLIOS, column, f"{n} is not a count that fits INTEGER")
    return n


def _risk_rejections(tables: Mapping[str, pa.Table]) -> int:
    checks = tables["backtest_portfolio_rejections"]["check_name"]
    return int(pc.sum(pc.not_equal(checks, "venue")).as_py() or 0)


def _breaker_trips(tables: Mapping[str, pa.Table]) -> int:
    events = tables["backtest_portfolio_events"]
    data = events.filter(pc.equal(events["kind"], CIRCUIT_BREAKER))["data"].to_pylist()
    return sum(1 for text in data if orjson.loads(text).get("action") == "trip")


def _check_json_column(table: str, column: str, values: pa.ChunkedArray) -> None:
    for i, text in enumerate(values.to_pylist()):
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise StoreValueError(table, column, f"row {i} is not valid JSON ({exc})") from exc


def _json(column: str, value: Any) -> str:
    try:
        return orjson.dumps(
            value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS
        ).decode()
    except TypeError as exc:
        raise StoreValueError(PORTFOLIOS, column, f"is not JSON-serialisable ({exc})") from exc


def _us_to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


# -------------------------------------------------------------------- loading


def stored_portfolio(
    row: Mapping[str, Any], strategies: Sequence[Mapping[str, Any]], tables: Mapping[str, pa.Table]
) -> StoredPortfolio:
    """Assemble the loaded record from the backend's raw reads.

    ``row`` holds :data:`PORTFOLIO_COLUMNS` (timestamps as epoch µs, NUMERIC as float, JSON as text);
    ``strategies`` the portfolio's ``backtest_portfolio_strategies`` rows in ``seq`` order;
    ``tables`` maps each :attr:`PortfolioTable.attr` to the table read as its ``db_schema``.
    """
    order = [str(s["strategy"]) for s in strategies]
    summary = _summary_values(row)
    strategy_metrics = _ordered(orjson.loads(row["strategy_metrics"]), order)
    correlation = {
        a: {b: math.nan if v is None else float(v) for b, v in _ordered(inner, order).items()}
        for a, inner in _ordered(orjson.loads(row["correlation"]), order).items()
    }
    restored = {spec.attr: spec.restore(tables[spec.attr]) for spec in PORTFOLIO_TABLES}
    return StoredPortfolio(
        **summary,
        metrics=orjson.loads(row["metrics"]),
        strategy_metrics=strategy_metrics,
        correlation=correlation,
        allocations=_ordered(orjson.loads(row["allocations"]), order),
        settings=orjson.loads(row["settings"]),
        run_ids={str(s["strategy"]): str(s["run_id"]) for s in strategies},
        strategy_types={str(s["strategy"]): str(s["strategy_type"]) for s in strategies},
        **restored,
    )


def portfolio_summary(row: Mapping[str, Any], strategies: Sequence[str]) -> dict[str, Any]:
    """One ``list_portfolios`` entry from a raw summary row (as the backends read it) and the
    portfolio's strategy names in order."""
    out = _summary_values(row)
    out["strategies"] = list(strategies)
    return out


def _summary_values(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in PORTFOLIO_ROW_SUMMARY_COLUMNS:
        value = row[name]
        if value is None:
            pass
        elif name in PORTFOLIO_NUMERIC_COLUMNS:
            value = float(value)
        elif name in PORTFOLIO_TIMESTAMP_COLUMNS:
            value = _EPOCH + timedelta(microseconds=int(value))
        elif name in ("trades", "risk_rejections", "breaker_trips"):
            value = int(value)
        out[name] = value
    return out


def _ordered(value: dict[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """``value`` with the strategies' keys first, in portfolio order (JSONB does not keep key order)."""
    first = {k: value[k] for k in order if k in value}
    return first | {k: v for k, v in value.items() if k not in first}

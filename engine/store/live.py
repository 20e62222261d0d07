"""Live state as stored data (migrations ``004_live`` and ``005_m2m``): table layouts, validation and
the SQL both backends share.

The live runtime (bots, the portfolio manager, the recorder that batches their output) writes Arrow
tables through :meth:`Store.write_live <engine.store.base.Store.write_live>` and reads them back with
:meth:`Store.read_live <engine.store.base.Store.read_live>`. :data:`LIVE_TABLES` describes every table:
its Arrow schema (what a writer passes and what a reader gets back), primary key, conflict mode,
nullable columns and the rules its values obey.

* **Conflict modes.** ``"ignore"`` tables (``live_fills``, ``strategy_signals``, ``portfolio_snapshots``,
  ``portfolio_events``, ``risk_rejections``, ``strategy_leg_exits``, ``strategy_m2m_candles``) are
  idempotent by key: a row whose key is stored already is skipped, so replaying a batch after a
  restart changes nothing. ``"upsert"`` tables (``accounts``, ``strategy_instances``, ``bots``,
  ``live_orders``, ``live_positions``, ``bot_checkpoints``, ``strategy_legs``,
  ``strategy_performance_daily``) keep the latest state of each key: a stored row is replaced (except
  ``created_at``, which keeps the first write's value). Where a spec names a ``newer`` column
  (``updated_ts`` / ``updated_at``) a row older than the stored one is skipped, so a replayed stale
  state never overwrites a newer one. Within one batch, duplicates of a key collapse first: the first
  row for ``"ignore"``, the newest (then last) for ``"upsert"``.
* **Defaults.** A column with a default (``accounts.timezone``, ``strategy_instances.is_default`` and
  ``.tags``) may be left out of the Arrow table or hold nulls: a new row gets the default, an upserted
  row keeps its stored value (so a writer that predates the column cannot reset it).
  ``strategy_instances.target_profit`` / ``.stop_loss`` may be left out too: they are then NULL.
* **Fixed columns.** An upsert may not move a stored row to another account (``strategy_instances``,
  ``strategy_legs``) or a leg to another strategy instance: the batch is rejected instead.
* **Row rules and invariants** (per table, see :data:`LIVE_TABLES`): a candle's ``low <= open, close <=
  high`` and minute-aligned ``ts``; an option leg's option fields; a default strategy is ``manual`` and
  active, and an account has at most one (checked after the batch's rows are written, in the same
  transaction).
* **References** (checked in the write's transaction, instead of foreign keys, which DuckDB cannot
  combine with upserts): a strategy instance's and a bot's account is stored, a bot's instance
  belongs to the bot's account, every order, fill, position, signal and checkpoint names a stored
  bot of its ``account_id``, and portfolio rows a stored account; a leg, exit, candle or daily row
  names a stored strategy instance of its ``account_id``, an exit a stored leg of that instance, and a
  leg's or an exit's ``bot_id`` (when not null) a stored bot of its account. Rows of the same batch count.
* **Units.** Money (``equity``, ``peak``, ``fee``, ``realized_pnl``, ``funding``) in the account's quote
  currency, prices in quote currency per base unit, quantities in base units (``live_positions.qty``
  signed: > 0 long, < 0 short), ``drawdown_pct`` in percent, rejection ``value`` / ``limit_value`` in
  the unit of their check. Sides are +1 BUY / −1 SELL. ``watermark_ns`` is int64 ns since the epoch.
* **Types.** Money, prices and quantities are float64 in Arrow and NUMERIC(38, 18) in the database
  (finite, |x| < 1e20; read back exactly). Timestamps are ``timestamp[ns, UTC]`` in Arrow (int64 ns
  input is accepted) and TIMESTAMPTZ in the database: **floored to the microsecond** on write (live
  feeds carry ns stamps; the backtest tables reject them instead), so they read back floored. JSON
  columns are strings holding valid JSON, stored and read back as the exact text. ``symbols`` is
  ``list<string>``, ``state`` binary, ``strategy_performance_daily.day`` ``date32`` (the day in the
  account's time zone).

This module touches no database: the stores call :func:`prepare_live` before they write and build
their SQL with :func:`insert_sql`, :func:`pre_write_checks`, :func:`reference_checks`,
:func:`invariant_checks` and :func:`read_clause`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ParameterError
from engine.store.base import _EPOCH, _validate_columns
from engine.store.errors import StoreValueError

ConflictMode = Literal["ignore", "upsert"]

TS = pa.timestamp("ns", tz="UTC")
_F64 = pa.float64()
_STR = pa.string()

ORDER_TYPES: tuple[str, ...] = ("market", "limit", "stop_market", "stop_limit")
ORDER_STATUSES: tuple[str, ...] = ("open", "filled", "cancelled", "rejected")
BOT_STATUSES: tuple[str, ...] = ("created", "running", "paused", "stopped", "error")
INSTANCE_STATUSES: tuple[str, ...] = ("active", "archived")
SIGNAL_ACTIONS: tuple[str, ...] = ("entry", "exit", "skip", "error", "state")
LEG_SEGMENTS: tuple[str, ...] = ("spot", "perp", "future", "option", "index")
LEG_STATUSES: tuple[str, ...] = ("open", "closed", "removed")
LEG_SOURCES: tuple[str, ...] = ("bot", "manual")
OPTION_TYPES: tuple[str, ...] = ("C", "P")
#: strategy_type of a legs container without a plugin (every account's default strategy is one).
MANUAL_STRATEGY_TYPE = "manual"
#: Candle timestamps are minute starts (ns).
MINUTE_NS = 60_000_000_000


@dataclass(frozen=True)
class LiveReference:
    """Rows of a table must match a stored row of ``table``: ``columns`` equal to its ``target`` columns."""

    columns: tuple[str, ...]
    table: str
    target: tuple[str, ...]


@dataclass(frozen=True)
class RowRule:
    """A rule across a row's columns, checked before anything is written: ``bad(table)`` is true
    (nulls are not offences) on the rows that break it; the error names ``column`` and says ``rule``."""

    column: str
    rule: str
    bad: Callable[[pa.Table], pa.Array | pa.ChunkedArray]


@dataclass(frozen=True)
class LiveInvariant:
    """A rule over stored rows, checked in the batch's transaction after its rows are written (or
    before, with ``before``: for a rule a database constraint also enforces at once, so that the error
    is this one). ``query`` (with ``{source}``, the batch's rows) returns one row when the rule is
    broken (its first value is shown in the error, which names ``column`` and says ``rule``), nothing
    otherwise."""

    column: str
    rule: str
    query: str
    before: bool = False


@dataclass(frozen=True)
class LiveTableSpec:
    """How one live table is written and read.

    Attributes:
        name: the database table.
        schema: the Arrow schema writers pass and :meth:`Store.read_live` returns (same column order).
        keys: the primary key.
        conflict: ``"ignore"`` (insert, skip stored keys) or ``"upsert"`` (replace the stored row).
        nullable: columns that may hold nulls.
        non_empty: string columns that must not be ``''``.
        choices: column → the values it may take.
        positive / non_negative: numeric columns that must be > 0 / ≥ 0.
        json: string columns holding JSON text.
        non_finite_as_null: float columns whose NaN/±inf are stored as NULL.
        newer: for upserts, the timestamp column that orders states: an older row does not replace a
            newer stored one.
        references: the stored rows every written row must match (see the module docstring); a row
            whose referencing columns hold a null is not checked (as SQL foreign keys).
        defaults: a value for a column the writer may leave out (or leave null: a new row gets the
            default, an upserted row keeps its stored value; a None default just means NULL).
        rules: rules across a row's columns (:class:`RowRule`), checked in Python before writing.
        fixed: columns an upsert may not change on a stored row (its owner).
        invariants: rules over the stored rows (:class:`LiveInvariant`), checked after writing.
    """

    name: str
    schema: pa.Schema
    keys: tuple[str, ...]
    conflict: ConflictMode
    nullable: frozenset[str] = frozenset()
    non_empty: tuple[str, ...] = ()
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    positive: tuple[str, ...] = ()
    non_negative: tuple[str, ...] = ()
    json: tuple[str, ...] = ()
    non_finite_as_null: frozenset[str] = frozenset()
    newer: str | None = None
    references: tuple[LiveReference, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    rules: tuple[RowRule, ...] = ()
    fixed: tuple[str, ...] = ()
    invariants: tuple[LiveInvariant, ...] = ()

    @property
    def kept_on_null(self) -> tuple[str, ...]:
        """Columns with a (non-None) default: null means "the stored value, else the default"."""
        return tuple(c for c, v in self.defaults.items() if v is not None)

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names, in schema order."""
        return tuple(self.schema.names)

    @property
    def update_columns(self) -> tuple[str, ...]:
        """The columns an upsert replaces: all but the key and ``created_at``."""
        return tuple(c for c in self.columns if c not in self.keys and c != "created_at")

    def is_filterable(self, column: str) -> bool:
        """Whether ``read_live`` may filter or order by ``column`` (not JSON, list or binary)."""
        if column not in self.columns or column in self.json:
            return False
        kind = self.schema.field(column).type
        return not (pa.types.is_list(kind) or pa.types.is_binary(kind))


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(n, t) for n, t in fields])


_BOT_REF = LiveReference(("account_id", "bot_id"), "bots", ("account_id", "bot_id"))
_ACCOUNT_REF = LiveReference(("account_id",), "accounts", ("account_id",))
_INSTANCE_REF = LiveReference(("account_id", "instance_id"), "strategy_instances", ("account_id", "instance_id"))
_LEG_REF = LiveReference(
    ("account_id", "instance_id", "leg_id"), "strategy_legs", ("account_id", "instance_id", "leg_id")
)


# -------------------------------------------------------------------- row rules


def _is(table: pa.Table, column: str, *values: Any) -> pa.ChunkedArray:
    """``column`` is one of ``values`` (null: false)."""
    kind = table.schema.field(column).type
    return pc.fill_null(pc.is_in(table[column], pa.array(values, kind)), False)


def _given(table: pa.Table, column: str) -> pa.ChunkedArray:
    return pc.is_valid(table[column])


def _outside(table: pa.Table, column: str) -> pa.ChunkedArray:
    """``column`` is below ``low`` or above ``high``."""
    return pc.or_(pc.less(table[column], table["low"]), pc.greater(table[column], table["high"]))


def _flag(table: pa.Table) -> pa.ChunkedArray:
    """``is_default``, null (keep the stored value) read as false."""
    return pc.fill_null(table["is_default"], False)


def _not_minute(table: pa.Table) -> pa.Array:
    us = table["ts"].cast(pa.int64()).to_numpy(zero_copy_only=False)  # µs here (validated, floored)
    return pa.array(us % (MINUTE_NS // 1000) != 0)


def _bad_tags(table: pa.Table) -> pa.Array:
    """Rows whose ``tags`` text is valid JSON but not a list of non-empty strings without NUL."""
    bad = []
    for text in table["tags"].to_pylist():
        if text is None:
            bad.append(False)
            continue
        value = orjson.loads(text)
        ok = isinstance(value, list) and all(isinstance(v, str) and v and "\x00" not in v for v in value)
        bad.append(not ok)
    return pa.array(bad, pa.bool_())


def _not_option(table: pa.Table) -> pa.ChunkedArray:
    return pc.invert(_is(table, "segment", "option"))


#: A leg's option fields: allowed (each may still be null) only when its segment is 'option'.
OPTION_FIELDS: tuple[str, ...] = ("option_type", "strike", "expiry_ts", "underlying", "implied_vol")


def _option_field_rule(column: str) -> RowRule:
    return RowRule(
        column,
        "must be null unless segment is 'option' (an option field)",
        lambda t: pc.and_(_not_option(t), _given(t, column)),
    )


#: Every live table, in write order (a table's references come before it).
LIVE_TABLES: dict[str, LiveTableSpec] = {
    spec.name: spec
    for spec in (
        LiveTableSpec(
            "accounts",
            _schema(
                ("account_id", _STR), ("name", _STR), ("base_currency", _STR), ("timezone", _STR), ("created_at", TS)
            ),
            keys=("account_id",),
            conflict="upsert",
            non_empty=("account_id", "name", "base_currency", "timezone"),
            defaults={"timezone": "UTC"},
        ),
        LiveTableSpec(
            "strategy_instances",
            _schema(
                ("instance_id", _STR),
                ("account_id", _STR),
                ("name", _STR),
                ("strategy_type", _STR),
                ("params", _STR),
                ("status", _STR),
                ("created_at", TS),
                ("updated_at", TS),
                ("is_default", pa.bool_()),
                ("tags", _STR),
                ("target_profit", _F64),
                ("stop_loss", _F64),
            ),
            keys=("instance_id",),
            conflict="upsert",
            nullable=frozenset({"target_profit", "stop_loss"}),
            non_empty=("instance_id", "account_id", "name", "strategy_type"),
            choices={"status": INSTANCE_STATUSES},
            # stop_loss is a loss amount: hit when the strategy's total P&L <= -stop_loss
            positive=("target_profit", "stop_loss"),
            json=("params", "tags"),
            newer="updated_at",
            references=(_ACCOUNT_REF,),
            defaults={"is_default": False, "tags": "[]", "target_profit": None, "stop_loss": None},
            rules=(
                RowRule("tags", "must be a JSON list of non-empty strings", _bad_tags),
                RowRule(
                    "strategy_type",
                    f"must be '{MANUAL_STRATEGY_TYPE}' for the default strategy (is_default)",
                    lambda t: pc.and_(_flag(t), pc.invert(_is(t, "strategy_type", MANUAL_STRATEGY_TYPE))),
                ),
                RowRule(
                    "status",
                    "the default strategy cannot be archived",
                    lambda t: pc.and_(_flag(t), _is(t, "status", "archived")),
                ),
            ),
            fixed=("account_id",),
            invariants=(
                LiveInvariant(
                    "is_default",
                    "an account has at most one default strategy",
                    "SELECT t.account_id FROM strategy_instances t WHERE t.is_default "
                    "AND t.account_id IN (SELECT account_id FROM {source}) "
                    "GROUP BY t.account_id HAVING count(*) > 1 LIMIT 1",
                ),
                LiveInvariant(  # a null is_default keeps the stored flag: check the row as it will be
                    "is_default",
                    f"the default strategy is an active '{MANUAL_STRATEGY_TYPE}' strategy",
                    "SELECT s.instance_id FROM {source} s LEFT JOIN strategy_instances t "
                    "ON t.instance_id = s.instance_id WHERE COALESCE(s.is_default, t.is_default, FALSE) "
                    f"AND (s.strategy_type <> '{MANUAL_STRATEGY_TYPE}' OR s.status <> 'active') LIMIT 1",
                    before=True,
                ),
            ),
        ),
        LiveTableSpec(
            "bots",
            _schema(
                ("bot_id", _STR),
                ("account_id", _STR),
                ("instance_id", _STR),
                ("name", _STR),
                ("symbols", pa.list_(_STR)),
                ("timeframe", _STR),
                ("settings", _STR),
                ("status", _STR),
                ("status_reason", _STR),
                ("error_count", pa.int32()),
                ("created_at", TS),
                ("updated_at", TS),
            ),
            keys=("bot_id",),
            conflict="upsert",
            nullable=frozenset({"status_reason"}),
            non_empty=("bot_id", "account_id", "instance_id", "name", "timeframe"),
            choices={"status": BOT_STATUSES},
            non_negative=("error_count",),
            json=("settings",),
            newer="updated_at",
            references=(
                _ACCOUNT_REF,
                LiveReference(("account_id", "instance_id"), "strategy_instances", ("account_id", "instance_id")),
            ),
        ),
        LiveTableSpec(
            "live_orders",
            _schema(
                ("account_id", _STR),
                ("bot_id", _STR),
                ("order_id", pa.int64()),
                ("created_ts", TS),
                ("symbol", _STR),
                ("side", pa.int8()),
                ("order_type", _STR),
                ("qty", _F64),
                ("price", _F64),
                ("stop_price", _F64),
                ("reduce_only", pa.bool_()),
                ("status", _STR),
                ("filled_qty", _F64),
                ("fill_price", _F64),
                ("tag", _STR),
                ("reject_reason", _STR),
                ("updated_ts", TS),
            ),
            keys=("bot_id", "order_id"),
            conflict="upsert",
            nullable=frozenset({"price", "stop_price", "fill_price", "tag", "reject_reason"}),
            non_empty=("account_id", "bot_id", "symbol"),
            choices={"order_type": ORDER_TYPES, "status": ORDER_STATUSES},
            # 0 = sized when it fills (a percent-sized entry, or a reduce-only close of the whole position)
            non_negative=("qty", "filled_qty"),
            newer="updated_ts",
            references=(_BOT_REF,),
        ),
        LiveTableSpec(
            "live_fills",
            _schema(
                ("account_id", _STR),
                ("bot_id", _STR),
                ("fill_id", pa.int64()),
                ("order_id", pa.int64()),
                ("ts", TS),
                ("symbol", _STR),
                ("side", pa.int8()),
                ("qty", _F64),
                ("price", _F64),
                ("fee", _F64),
                ("liquidity", _STR),
                ("realized_pnl", _F64),
                ("tag", _STR),
            ),
            keys=("bot_id", "fill_id"),
            conflict="ignore",
            nullable=frozenset({"liquidity", "tag"}),
            non_empty=("account_id", "bot_id", "symbol"),
            positive=("qty", "price"),
            references=(_BOT_REF,),
        ),
        LiveTableSpec(
            "live_positions",
            _schema(
                ("account_id", _STR),
                ("bot_id", _STR),
                ("symbol", _STR),
                ("qty", _F64),
                ("avg_price", _F64),
                ("realized_pnl", _F64),
                ("funding", _F64),
                ("updated_ts", TS),
            ),
            keys=("bot_id", "symbol"),
            conflict="upsert",
            non_empty=("account_id", "bot_id", "symbol"),
            non_negative=("avg_price",),
            newer="updated_ts",
            references=(_BOT_REF,),
        ),
        LiveTableSpec(
            "strategy_signals",
            _schema(
                ("account_id", _STR),
                ("bot_id", _STR),
                ("seq", pa.int64()),
                ("ts", TS),
                ("strategy", _STR),
                ("symbol", _STR),
                ("action", _STR),
                ("side", pa.int8()),
                ("qty", _F64),
                ("price", _F64),
                ("order_id", pa.int64()),
                ("detail", _STR),
            ),
            keys=("bot_id", "seq"),
            conflict="ignore",
            nullable=frozenset({"side", "qty", "price", "order_id"}),
            non_empty=("account_id", "bot_id", "strategy"),
            choices={"action": SIGNAL_ACTIONS},
            json=("detail",),
            references=(_BOT_REF,),
        ),
        LiveTableSpec(
            "portfolio_snapshots",
            _schema(
                ("account_id", _STR),
                ("ts", TS),
                ("strategy", _STR),
                ("equity", _F64),
                ("peak", _F64),
                ("drawdown_pct", _F64),
                ("state", _STR),
            ),
            keys=("account_id", "ts", "strategy"),
            conflict="ignore",
            non_empty=("account_id", "state"),
            references=(_ACCOUNT_REF,),
        ),
        LiveTableSpec(
            "portfolio_events",
            _schema(
                ("account_id", _STR),
                ("seq", pa.int64()),
                ("ts", TS),
                ("kind", _STR),
                ("strategy", _STR),
                ("symbol", _STR),
                ("data", _STR),
            ),
            keys=("account_id", "seq"),
            conflict="ignore",
            non_empty=("account_id", "kind"),
            json=("data",),
            references=(_ACCOUNT_REF,),
        ),
        LiveTableSpec(
            "risk_rejections",
            _schema(
                ("account_id", _STR),
                ("seq", pa.int64()),
                ("ts", TS),
                ("strategy", _STR),
                ("symbol", _STR),
                ("side", pa.int8()),
                ("qty", _F64),
                ("price", _F64),
                ("check_name", _STR),
                ("value", _F64),
                ("limit_value", _F64),
                ("message", _STR),
            ),
            keys=("account_id", "seq"),
            conflict="ignore",
            nullable=frozenset({"price", "value", "limit_value"}),
            non_empty=("account_id", "check_name"),
            non_finite_as_null=frozenset({"price", "value", "limit_value"}),
            references=(_ACCOUNT_REF,),
        ),
        LiveTableSpec(
            "bot_checkpoints",
            _schema(
                ("bot_id", _STR),
                ("account_id", _STR),
                ("watermark_ns", pa.int64()),
                ("seq", pa.int64()),
                ("state", pa.binary()),
                ("created_at", TS),
            ),
            keys=("bot_id",),
            conflict="upsert",
            non_empty=("bot_id", "account_id"),
            references=(_BOT_REF,),
        ),
        LiveTableSpec(
            "strategy_legs",
            _schema(
                ("account_id", _STR),
                ("instance_id", _STR),
                ("leg_id", _STR),
                ("symbol", _STR),
                ("exchange", _STR),
                ("segment", _STR),
                ("side", pa.int8()),
                ("qty", _F64),
                ("initial_qty", _F64),
                ("lot_size", _F64),
                ("multiplier", _F64),
                ("entry_price", _F64),
                ("entry_ts", TS),
                ("option_type", _STR),
                ("strike", _F64),
                ("expiry_ts", TS),
                ("underlying", _STR),
                ("implied_vol", _F64),
                ("source", _STR),
                ("bot_id", _STR),
                ("fill_id", pa.int64()),
                ("notes", _STR),
                ("status", _STR),
                ("realized_pnl", _F64),
                ("updated_ts", TS),
            ),
            keys=("leg_id",),
            conflict="upsert",
            nullable=frozenset(
                {"option_type", "strike", "expiry_ts", "underlying", "implied_vol", "bot_id", "fill_id", "notes"}
            ),
            non_empty=("account_id", "instance_id", "leg_id", "symbol", "underlying", "bot_id"),
            choices={
                "segment": LEG_SEGMENTS,
                "status": LEG_STATUSES,
                "source": LEG_SOURCES,
                "option_type": OPTION_TYPES,
            },
            positive=("initial_qty", "multiplier", "strike"),
            non_negative=("qty", "lot_size", "entry_price", "implied_vol", "fill_id"),  # lot_size 0: no lot rule
            newer="updated_ts",
            references=(_INSTANCE_REF, _BOT_REF),
            rules=(
                RowRule("qty", "must be <= initial_qty", lambda t: pc.greater(t["qty"], t["initial_qty"])),
                RowRule(
                    "qty",
                    "must be > 0 while the leg is open",
                    lambda t: pc.and_(_is(t, "status", "open"), pc.less_equal(t["qty"], 0)),
                ),
                RowRule(
                    "qty",
                    "must be 0 once the leg is closed or removed",
                    lambda t: pc.and_(pc.invert(_is(t, "status", "open")), pc.not_equal(t["qty"], 0)),
                ),
                *(_option_field_rule(column) for column in OPTION_FIELDS),
                RowRule(
                    "bot_id",
                    "required when source is 'bot' and null when it is 'manual'",
                    lambda t: pc.not_equal(_is(t, "source", "bot"), _given(t, "bot_id")),
                ),
            ),
            fixed=("account_id", "instance_id"),
        ),
        LiveTableSpec(
            "strategy_leg_exits",
            _schema(
                ("account_id", _STR),
                ("instance_id", _STR),
                ("leg_id", _STR),
                ("exit_id", pa.int64()),
                ("ts", TS),
                ("qty", _F64),
                ("price", _F64),
                ("realized_pnl", _F64),
                ("bot_id", _STR),
                ("fill_id", pa.int64()),
            ),
            keys=("leg_id", "exit_id"),
            conflict="ignore",
            nullable=frozenset({"bot_id", "fill_id"}),
            non_empty=("account_id", "instance_id", "leg_id", "bot_id"),
            positive=("qty",),
            non_negative=("exit_id", "price", "fill_id"),
            references=(_INSTANCE_REF, _LEG_REF, _BOT_REF),
        ),
        LiveTableSpec(
            "strategy_m2m_candles",
            _schema(
                ("account_id", _STR),
                ("instance_id", _STR),
                ("ts", TS),
                ("open", _F64),
                ("high", _F64),
                ("low", _F64),
                ("close", _F64),
                ("realized_pnl", _F64),
                ("total_pnl", _F64),
                ("updates", pa.int32()),
                ("model_mark", pa.bool_()),
            ),
            keys=("instance_id", "ts"),
            conflict="ignore",
            non_empty=("account_id", "instance_id"),
            non_negative=("updates",),
            references=(_INSTANCE_REF,),
            rules=(
                RowRule("ts", "must be a minute start (UTC)", _not_minute),
                RowRule("high", "must be >= low", lambda t: pc.less(t["high"], t["low"])),
                RowRule("open", "must be between low and high", lambda t: _outside(t, "open")),
                RowRule("close", "must be between low and high", lambda t: _outside(t, "close")),
            ),
        ),
        LiveTableSpec(
            "strategy_performance_daily",
            _schema(
                ("account_id", _STR),
                ("instance_id", _STR),
                ("day", pa.date32()),
                ("realized_pnl", _F64),
                ("unrealized_pnl", _F64),
                ("total_pnl", _F64),
                ("max_m2m", _F64),
                ("min_m2m", _F64),
                ("trades", pa.int32()),
                ("model_mark", pa.bool_()),
                ("updated_at", TS),
            ),
            keys=("instance_id", "day"),
            conflict="upsert",
            non_empty=("account_id", "instance_id"),
            non_negative=("trades",),
            newer="updated_at",
            references=(_INSTANCE_REF,),
            rules=(RowRule("min_m2m", "must be <= max_m2m", lambda t: pc.greater(t["min_m2m"], t["max_m2m"])),),
        ),
        LiveTableSpec(
            "m2m_checkpoints",
            _schema(
                ("account_id", _STR),
                ("watermark_ns", pa.int64()),
                ("state", pa.binary()),
                ("created_at", TS),
            ),
            keys=("account_id",),
            conflict="upsert",
            non_empty=("account_id",),
            references=(_ACCOUNT_REF,),
        ),
    )
}


def live_spec(table: object) -> LiveTableSpec:
    """The spec of a live table.

    Raises:
        ParameterError: on field ``table`` when it is not one of :data:`LIVE_TABLES`.
    """
    spec = LIVE_TABLES.get(table) if isinstance(table, str) else None
    if spec is None:
        raise ParameterError("table", f"must be one of {', '.join(LIVE_TABLES)}, got {table!r}")
    return spec


# -------------------------------------------------------------------- validation


def prepare_live(tables: object) -> dict[str, pa.Table]:
    """Validate a batch (table name → Arrow table) and lay it out for writing (pure).

    Returns the batch in :data:`LIVE_TABLES` order, each table with its spec's columns in order,
    timestamps floored to the microsecond as ``timestamp[us, UTC]`` and duplicate keys collapsed
    (see the module docstring). Row numbers in errors count from 0 in the table as given.

    Raises:
        StoreValueError: naming the table, the column, the first offending row and the rule: an
            unknown table or column, a missing column, a null in a NOT NULL column (a missing key),
            NaN/±inf or |x| ≥ 1e20 in a NUMERIC column, a side other than ±1, a value outside the
            column's choices, a non-positive quantity, an empty id, a NUL character, text that is not
            JSON, a timezone that is not an IANA name, a bot without symbols.
    """
    if not isinstance(tables, Mapping):
        kind = type(tables).__name__
        raise StoreValueError("*", "*", f"write_live needs a mapping of table name to pyarrow.Table, got {kind}")
    unknown = [name for name in tables if name not in LIVE_TABLES]
    if unknown:
        raise StoreValueError(str(unknown[0]), "*", f"not a live table (known: {', '.join(LIVE_TABLES)})")
    return {name: _prepare_table(spec, tables[name]) for name, spec in LIVE_TABLES.items() if name in tables}


def _prepare_table(spec: LiveTableSpec, given: object) -> pa.Table:
    if isinstance(given, pa.RecordBatch):
        given = pa.Table.from_batches([given])
    if isinstance(given, pa.Table):
        with_defaults: pa.Table = given
        for column in spec.defaults:  # left out: null (the stored value or the default, see insert_sql)
            if column not in with_defaults.column_names:
                kind = spec.schema.field(column).type
                with_defaults = with_defaults.append_column(column, pa.nulls(given.num_rows, kind))
        given = with_defaults
    nullable = spec.nullable | frozenset(spec.kept_on_null)
    table = _validate_columns(spec.name, given, spec.schema, nullable, spec.non_finite_as_null, floor_us=True)
    for f in spec.schema:
        col = table[f.name]
        if pa.types.is_string(f.type):
            _check_text(spec, f.name, col, empty_ok=f.name not in spec.non_empty)
        elif pa.types.is_list(f.type):
            _check_list(spec, f.name, col)
        if f.name in spec.choices:
            allowed = spec.choices[f.name]
            outside = pc.and_(pc.is_valid(col), pc.invert(pc.is_in(col, pa.array(allowed, f.type))))  # null: not
            _first_bad(spec, f.name, outside, f"must be one of {allowed}")
        if f.name in spec.positive:
            _first_bad(spec, f.name, pc.less_equal(col, 0), "must be > 0")
        if f.name in spec.non_negative:
            _first_bad(spec, f.name, pc.less(col, 0), "must be >= 0")
        if f.name in spec.json:
            for i, text in enumerate(col.to_pylist()):
                if text is not None:
                    try:
                        orjson.loads(text)
                    except orjson.JSONDecodeError as exc:
                        raise StoreValueError(spec.name, f.name, f"row {i} is not valid JSON ({exc})") from exc
    if "timezone" in spec.columns:
        for i, name in enumerate(table["timezone"].to_pylist()):
            if name is None:
                continue
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise StoreValueError(spec.name, "timezone", f"row {i} is {name!r}, not an IANA time zone") from exc
    for rule in spec.rules:
        _first_bad(spec, rule.column, rule.bad(table), rule.rule)
    return _dedupe(spec, table)


def _first_bad(spec: LiveTableSpec, column: str, bad: pa.ChunkedArray | pa.Array, rule: str) -> None:
    """Raise naming the first row where ``bad`` is true (nulls are not offences)."""
    mask = pc.fill_null(bad, False).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(mask)
    if rows.size:
        raise StoreValueError(spec.name, column, f"row {int(rows[0])}: {rule}")


def _check_text(spec: LiveTableSpec, column: str, col: pa.ChunkedArray, empty_ok: bool) -> None:
    if not empty_ok:
        _first_bad(spec, column, pc.equal(pc.utf8_length(col), 0), "must not be empty")
    _first_bad(spec, column, pc.match_substring(col, "\x00"), "must not contain NUL characters")


def _check_list(spec: LiveTableSpec, column: str, col: pa.ChunkedArray) -> None:
    _first_bad(spec, column, pc.equal(pc.list_value_length(col), 0), "must hold at least one value")
    for chunk_start, chunk in _chunks(col):
        values = pc.list_flatten(chunk)
        parents = pc.list_parent_indices(chunk).to_numpy(zero_copy_only=False)
        bad = pc.or_kleene(pc.is_null(values), pc.equal(pc.utf8_length(values), 0))
        bad = pc.or_(pc.fill_null(bad, True), pc.fill_null(pc.match_substring(values, "\x00"), False))
        rows = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
        if rows.size:
            row = chunk_start + int(parents[rows[0]])
            raise StoreValueError(spec.name, column, f"row {row}: values must be non-empty strings without NUL")


def _chunks(col: pa.ChunkedArray) -> list[tuple[int, pa.Array]]:
    out, start = [], 0
    for chunk in col.chunks:
        out.append((start, chunk))
        start += len(chunk)
    return out


def _dedupe(spec: LiveTableSpec, table: pa.Table) -> pa.Table:
    """Collapse rows with the same key: keep the first (ignore) or the newest, then last (upsert)."""
    n = table.num_rows
    if n < 2:
        return table
    sort_cols = list(spec.keys)
    if spec.conflict == "upsert" and spec.newer:
        sort_cols.append(spec.newer)
    index = table.select(sort_cols).append_column("_row", pa.array(np.arange(n, dtype=np.int64)))
    order = pc.sort_indices(index, sort_keys=[(c, "ascending") for c in (*sort_cols, "_row")])
    ordered = index.take(order)
    dup = np.ones(n - 1, dtype=bool)  # dup[i]: rows i and i + 1 (in key order) share the key
    for k in spec.keys:
        col = ordered[k].combine_chunks()
        dup &= pc.equal(col.slice(0, n - 1), col.slice(1)).to_numpy(zero_copy_only=False)
    if not dup.any():
        return table
    keep = np.ones(n, dtype=bool)
    if spec.conflict == "ignore":
        keep[1:] = ~dup  # the first row of each key group
    else:
        keep[:-1] = ~dup  # the last row of each key group
    rows = np.sort(ordered["_row"].to_numpy()[keep])
    return table.take(pa.array(rows))


# -------------------------------------------------------------------- SQL shared by the backends


def insert_sql(spec: LiveTableSpec, source: str, exprs: Sequence[str]) -> str:
    """``INSERT INTO <table> (...) SELECT <exprs> FROM <source> s ON CONFLICT (<keys>) ...`` by the spec's
    conflict mode (``exprs`` are the backend's casts of the source columns, in schema order). A null in
    a column with a default becomes the stored row's value, else the default."""
    cols = ", ".join(spec.columns)
    keys = ", ".join(spec.keys)
    exprs = list(exprs)
    match = " AND ".join(f"t.{k} = s.{k}" for k in spec.keys)
    for column in spec.kept_on_null:
        i = spec.columns.index(column)
        stored = f"(SELECT t.{column} FROM {spec.name} t WHERE {match})"
        exprs[i] = f"COALESCE({exprs[i]}, {stored}, {_literal(spec.defaults[column])})"
    sql = f"INSERT INTO {spec.name} ({cols}) SELECT {', '.join(exprs)} FROM {source} s ON CONFLICT ({keys}) "
    if spec.conflict == "ignore":
        return sql + "DO NOTHING"
    sql += "DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in spec.update_columns)
    if spec.newer:
        sql += f" WHERE {spec.name}.{spec.newer} <= EXCLUDED.{spec.newer}"
    return sql


def _literal(value: object) -> str:
    """An SQL literal of a spec default (bool, int, float or str)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for a default of type {type(value).__name__}")


#: A check query and the error to raise with the row it returns.
Check = tuple[str, Callable[[Sequence[Any]], StoreValueError]]


def pre_write_checks(spec: LiveTableSpec, source: str) -> list[Check]:
    """Queries to run BEFORE ``source`` is written: each returns a row when a batch row would change a
    :attr:`~LiveTableSpec.fixed` column of a stored row (the row's key), or breaks an invariant checked
    ``before``; nothing otherwise."""
    checks: list[Check] = [_invariant_check(spec, inv, source) for inv in spec.invariants if inv.before]
    match = " AND ".join(f"t.{k} = s.{k}" for k in spec.keys)
    keys = ", ".join(f"s.{k}" for k in spec.keys)
    for column in spec.fixed:

        def error(row: Sequence[Any], column: str = column) -> StoreValueError:
            given = ", ".join(f"{k}={v!r}" for k, v in zip(spec.keys, row, strict=True))
            return StoreValueError(
                spec.name, column, f"the row with {given} is stored with another {column}, which cannot change"
            )

        query = f"SELECT {keys} FROM {source} s JOIN {spec.name} t ON {match} WHERE t.{column} <> s.{column} LIMIT 1"
        checks.append((query, error))
    return checks


def invariant_checks(spec: LiveTableSpec, source: str) -> list[Check]:
    """Queries to run AFTER the batch is written (see :class:`LiveInvariant`)."""
    return [_invariant_check(spec, inv, source) for inv in spec.invariants if not inv.before]


def _invariant_check(spec: LiveTableSpec, inv: LiveInvariant, source: str) -> Check:
    def error(row: Sequence[Any]) -> StoreValueError:
        return StoreValueError(spec.name, inv.column, f"{inv.rule} (broken for {row[0]!r})")

    return inv.query.format(source=source), error


def reference_checks(spec: LiveTableSpec, source: str) -> list[tuple[LiveReference, str]]:
    """For each reference of ``spec``: a query returning the first row of ``source`` that matches no
    stored row (its referencing columns), or nothing. Rows with a null referencing column are skipped."""
    checks = []
    for ref in spec.references:
        match = " AND ".join(f"t.{t} = s.{c}" for c, t in zip(ref.columns, ref.target, strict=True))
        cols = ", ".join(f"s.{c}" for c in ref.columns)
        where = "".join(f"s.{c} IS NOT NULL AND " for c in ref.columns if c in spec.nullable)
        checks.append(
            (
                ref,
                f"SELECT {cols} FROM {source} s WHERE {where}"
                f"NOT EXISTS (SELECT 1 FROM {ref.table} t WHERE {match}) LIMIT 1",
            )
        )
    return checks


def broken_reference(spec: LiveTableSpec, ref: LiveReference, values: Sequence[Any]) -> StoreValueError:
    """The error for a row whose ``ref`` columns hold ``values`` that match no stored row."""
    given = ", ".join(f"{c}={v!r}" for c, v in zip(ref.columns, values, strict=True))
    return StoreValueError(spec.name, ", ".join(ref.columns), f"the row with {given} matches no {ref.table} row")


_ORDER_BY = re.compile(r"^\s*(?P<column>[a-z_]+)(?:\s+(?P<dir>asc|desc))?\s*$", re.IGNORECASE)


def read_clause(
    spec: LiveTableSpec,
    *,
    account_id: object,
    where: object,
    order_by: object,
    limit: object,
    placeholder: str,
) -> tuple[str, list[Any]]:
    """``WHERE ... ORDER BY ... [LIMIT]`` for :meth:`Store.read_live` with its parameters.

    Column names come only from the spec (never from the caller's text); values are bound.

    Raises:
        ParameterError: naming ``account_id``, ``where.<column>``, ``order_by`` or ``limit``.
    """
    conditions: list[str] = []
    params: list[Any] = []
    filters: dict[str, Any] = {}
    if account_id is not None:
        if not isinstance(account_id, str) or not account_id:
            raise ParameterError("account_id", f"must be a non-empty string or None, got {account_id!r}")
        filters["account_id"] = account_id
    if where is not None:
        if not isinstance(where, Mapping):
            raise ParameterError("where", f"must be a mapping of column to value, got {type(where).__name__}")
        for column, value in where.items():
            if not isinstance(column, str) or not spec.is_filterable(column):
                raise ParameterError(f"where.{column}", f"is not a column {spec.name} can be filtered on")
            if column in filters and filters[column] != value:
                raise ParameterError(f"where.{column}", "contradicts account_id")
            filters[column] = value
    for column, value in filters.items():
        kind = spec.schema.field(column).type
        if value is None:
            conditions.append(f"{column} IS NULL")
        elif isinstance(value, (list, tuple, set, frozenset)):
            values = [_bind(spec, column, kind, v) for v in value]
            if values:
                conditions.append(f"{column} IN ({', '.join([placeholder] * len(values))})")
                params.extend(values)
            else:
                conditions.append("1 = 0")
        else:
            conditions.append(f"{column} = {placeholder}")
            params.append(_bind(spec, column, kind, value))
    clause = f"WHERE {' AND '.join(conditions)} " if conditions else ""

    order = [f"{k} ASC" for k in spec.keys]
    if order_by is not None:
        m = _ORDER_BY.match(order_by) if isinstance(order_by, str) else None
        if m is None or not spec.is_filterable(m["column"].lower()):
            raise ParameterError(
                "order_by", f"must be a column of {spec.name} optionally followed by ASC or DESC, got {order_by!r}"
            )
        column = m["column"].lower()
        order = [f"{column} {(m['dir'] or 'asc').upper()}", *(o for o in order if not o.startswith(f"{column} "))]
    clause += f"ORDER BY {', '.join(order)}"

    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ParameterError("limit", f"must be a positive integer or None, got {limit!r}")
        clause += f" LIMIT {placeholder}"
        params.append(limit)
    return clause, params


def _bind(spec: LiveTableSpec, column: str, kind: pa.DataType, value: object) -> Any:
    """A ``where`` value checked against the column's type (timestamps: int ns, floored to the µs, or an
    aware datetime; dates: a ``datetime.date``)."""
    field_name = f"where.{column}"
    if pa.types.is_date(kind):
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        raise ParameterError(field_name, f"must be a datetime.date, got {value!r}")
    if pa.types.is_timestamp(kind):
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return _EPOCH + timedelta(microseconds=int(value) // 1000)
        raise ParameterError(field_name, f"must be int ns since the epoch or an aware datetime, got {value!r}")
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if pa.types.is_string(kind) and isinstance(value, str):
        return value
    if pa.types.is_boolean(kind) and isinstance(value, bool):
        return value
    if pa.types.is_integer(kind) and is_number and isinstance(value, (int, np.integer)):
        return int(value)
    if pa.types.is_floating(kind) and is_number:
        return float(value)  # type: ignore[arg-type]
    raise ParameterError(field_name, f"must be a {kind} value of {spec.name}.{column}, got {value!r}")


def restore_live(spec: LiveTableSpec, raw: pa.Table) -> pa.Table:
    """A table read by a backend (spec's column names and order; timestamps in µs, any tz label)
    cast to the spec's schema."""
    return raw.rename_columns(list(spec.columns)).cast(spec.schema)

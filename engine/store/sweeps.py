"""Sweep results as data: the Arrow schema of a sweep's runs, the sweep record, and their validation.

A *sweep* is a batch of backtests (or portfolio backtests) run with different parameters; each run
is one row of :data:`SWEEP_RUNS_SCHEMA`. The same table is what a Ray task returns (one row), what
``runs.parquet`` holds (every run of the sweep) and what the store's ``sweep_runs`` table keeps (plus
``sweep_id`` and ``finished_at``). This module is pure (no database, no Ray): the stores call
:func:`prepare_sweep` and :func:`prepare_sweep_runs` before they write.

Units: money (``initial_cash``, ``final_equity``, ``expectancy``, ``avg_win``, ``avg_loss``,
``best_trade``, ``worst_trade``, ``fees_paid``, ``funding_paid``) in quote currency; ``*_pct`` and
``win_rate`` in percent; ``sharpe``, ``sortino``, ``calmar`` and ``profit_factor`` are ratios;
``max_drawdown_duration_days`` in days; ``duration_s`` is the run's wall time in seconds. A metric is
null when it is undefined for the run (see :mod:`engine.backtest.metrics`), when it is not finite or
when it does not fit NUMERIC(38, 18) (|x| ≥ 1e20), and for failed runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import StoreError
from engine.store.errors import StoreValueError

#: Largest magnitude a NUMERIC(38, 18) column holds (20 integer digits).
NUMERIC_LIMIT = 1e20

SweepKind = Literal["backtest", "portfolio"]
SweepMethod = Literal["grid", "random", "optuna", "list"]
SweepStatus = Literal["running", "finished", "interrupted"]
RunStatus = Literal["ok", "failed"]

SWEEP_KINDS: tuple[str, ...] = ("backtest", "portfolio")
SWEEP_METHODS: tuple[str, ...] = ("grid", "random", "optuna", "list")
SWEEP_STATUSES: tuple[str, ...] = ("running", "finished", "interrupted")
RUN_STATUSES: tuple[str, ...] = ("ok", "failed")

#: Metric columns stored as NUMERIC(38, 18) and carried as float64 (keys of the backtest metrics).
SWEEP_FLOAT_METRICS: tuple[str, ...] = (
    "initial_cash",
    "final_equity",
    "total_return_pct",
    "annual_return_pct",
    "volatility_pct",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown_pct",
    "max_drawdown_duration_days",
    "win_rate",
    "profit_factor",
    "expectancy",
    "avg_win",
    "avg_loss",
    "best_trade",
    "worst_trade",
    "exposure_pct",
    "fees_paid",
    "funding_paid",
)
#: Count metrics, stored as BIGINT and carried as int64.
SWEEP_INT_METRICS: tuple[str, ...] = ("bars", "trades", "max_drawdown_duration_bars", "orders_rejected")
#: Columns holding JSON text (canonical: compact, keys sorted).
SWEEP_JSON_COLUMNS: tuple[str, ...] = ("params", "metrics", "strategy_metrics")

#: One row per run. ``seq`` is the run's position in the sweep's plan (0-based; the trial number of an
#: optuna sweep); ``run_key`` a stable hash of the run's kind and parameters, unique within a sweep;
#: ``params`` the run's parameters as JSON; ``status`` "ok" or "failed" with ``error`` saying why;
#: ``metrics`` the run's full metrics dict as JSON (the typed columns repeat the common ones);
#: ``strategy_metrics`` per-strategy metrics of a portfolio run (JSON object, null for a single
#: backtest); ``trade_hash`` the SHA-256 of the run's fills; ``duration_s`` wall time in seconds;
#: ``worker`` the host:pid that ran it.
SWEEP_RUNS_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int32(), nullable=False),
        pa.field("run_key", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("params", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        *[pa.field(name, pa.float64()) for name in SWEEP_FLOAT_METRICS],
        *[pa.field(name, pa.int64()) for name in SWEEP_INT_METRICS],
        pa.field("metrics", pa.string()),
        pa.field("strategy_metrics", pa.string()),
        pa.field("trade_hash", pa.string()),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("worker", pa.string()),
    ]
)
SWEEP_RUN_COLUMNS: tuple[str, ...] = tuple(SWEEP_RUNS_SCHEMA.names)

_BIGINT_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1


def canonical_json(value: Any) -> str:
    """``value`` as compact JSON with sorted keys (NaN/±inf become null, numpy scalars are accepted).

    Raises:
        TypeError: if ``value`` holds something JSON cannot represent.
    """
    return orjson.dumps(
        value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    ).decode()


def recanonical_json(text: str | None) -> str | None:
    """Re-serialise JSON text read back from a database (PostgreSQL ``jsonb`` reorders keys and spacing)."""
    if text is None:
        return None
    return canonical_json(orjson.loads(text))


@dataclass(frozen=True)
class SweepRecord:
    """One sweep: what was asked and how far it got.

    Attributes:
        sweep_id: stable id (a hash of the sweep's name and validated config).
        name: the config's ``name``.
        kind: "backtest" (one strategy, a parameter search) or "portfolio" (a list of portfolio configs).
        method: "grid", "random", "optuna" (parameter searches) or "list" (portfolio configs).
        seed: the seed of random and optuna draws.
        config: the validated config as JSON-able values (paths absolute).
        runs_planned: runs in the plan (grid points, samples, trials or portfolio entries).
        status: "running" while a ``tradectl sweep`` works on it, then "finished" or "interrupted".
        runs_ok, runs_failed: stored runs by status (kept by :meth:`Store.finish_sweep`).
        created_at, updated_at: aware UTC datetimes, set by the store (None on a record not yet saved).
    """

    sweep_id: str
    name: str
    kind: str
    method: str
    seed: int
    config: dict[str, Any]
    runs_planned: int
    status: str = "running"
    runs_ok: int = 0
    runs_failed: int = 0
    created_at: datetime | None = field(default=None, compare=False)
    updated_at: datetime | None = field(default=None, compare=False)


# -------------------------------------------------------------------- building rows


def _metric_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    f = float(value)
    return f if math.isfinite(f) and abs(f) < NUMERIC_LIMIT else None


def _metric_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    f = float(value)
    if not math.isfinite(f) or f != int(f) or abs(f) > _BIGINT_MAX:
        return None
    return int(f)


def sweep_run_row(
    *,
    seq: int,
    run_key: str,
    kind: str,
    params: Mapping[str, Any],
    status: str,
    duration_s: float,
    error: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    strategy_metrics: Mapping[str, Any] | None = None,
    trade_hash: str | None = None,
    worker: str | None = None,
) -> dict[str, Any]:
    """One run as a dict of :data:`SWEEP_RUN_COLUMNS` (metric columns taken from ``metrics``).

    Metric values that are missing, non-numeric, non-finite or beyond NUMERIC(38, 18) become None;
    ``params``, ``metrics`` and ``strategy_metrics`` are serialised as canonical JSON.
    """
    metrics = dict(metrics or {})
    row: dict[str, Any] = {
        "seq": int(seq),
        "run_key": run_key,
        "kind": kind,
        "params": canonical_json(dict(params)),
        "status": status,
        "error": error,
    }
    for name in SWEEP_FLOAT_METRICS:
        row[name] = _metric_float(metrics.get(name))
    for name in SWEEP_INT_METRICS:
        row[name] = _metric_int(metrics.get(name))
    row["metrics"] = canonical_json(metrics) if status == "ok" or metrics else None
    row["strategy_metrics"] = canonical_json(dict(strategy_metrics)) if strategy_metrics is not None else None
    row["trade_hash"] = trade_hash
    row["duration_s"] = float(duration_s)
    row["worker"] = worker
    return row


def sweep_runs_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows from :func:`sweep_run_row` as a table with :data:`SWEEP_RUNS_SCHEMA` (in the given order)."""
    return pa.Table.from_pylist([dict(r) for r in rows], schema=SWEEP_RUNS_SCHEMA)


def empty_sweep_runs() -> pa.Table:
    """A table with :data:`SWEEP_RUNS_SCHEMA` and no rows."""
    return SWEEP_RUNS_SCHEMA.empty_table()


# -------------------------------------------------------------------- validation


def _text(table: str, column: str, value: object, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise StoreValueError(table, column, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value:
        raise StoreValueError(table, column, "must not be empty")
    if "\x00" in value:
        raise StoreValueError(table, column, "must not contain NUL characters")
    return value


def prepare_sweep(record: SweepRecord) -> dict[str, Any]:
    """Validate a :class:`SweepRecord` and return its ``sweeps`` row (config as JSON text).

    Raises:
        StoreValueError: naming the column and the rule it breaks.
    """
    if not isinstance(record, SweepRecord):
        raise StoreError(f"save_sweep needs a SweepRecord, got {type(record).__name__}")
    _text("sweeps", "sweep_id", record.sweep_id)
    _text("sweeps", "name", record.name)
    for column, value, allowed in (
        ("kind", record.kind, SWEEP_KINDS),
        ("method", record.method, SWEEP_METHODS),
        ("status", record.status, SWEEP_STATUSES),
    ):
        if value not in allowed:
            raise StoreValueError("sweeps", column, f"must be one of {', '.join(allowed)}, got {value!r}")
    for column, number, high in (
        ("seed", record.seed, _BIGINT_MAX),
        ("runs_planned", record.runs_planned, _INT32_MAX),
    ):
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= high:
            raise StoreValueError("sweeps", column, f"must be an integer between 0 and {high}, got {number!r}")
    if not isinstance(record.config, dict):
        raise StoreValueError("sweeps", "config", f"must be a dict, got {type(record.config).__name__}")
    try:
        config = canonical_json(record.config)
    except TypeError as exc:
        raise StoreValueError("sweeps", "config", f"is not JSON-serialisable ({exc})") from exc
    return {
        "sweep_id": record.sweep_id,
        "name": record.name,
        "kind": record.kind,
        "method": record.method,
        "seed": record.seed,
        "config": config,
        "status": record.status,
        "runs_planned": record.runs_planned,
    }


def prepare_sweep_runs(given: object) -> pa.Table:
    """Validate a runs table and return it with exactly :data:`SWEEP_RUNS_SCHEMA` (columns in order).

    Rules: every column present and castable; ``seq`` ≥ 0; ``run_key`` non-empty and unique; ``kind``
    "backtest"/"portfolio"; ``status`` "ok"/"failed"; an ok run has ``metrics`` and ``trade_hash``, a
    failed run an ``error``; JSON columns hold valid JSON; metric values finite and |x| < 1e20 (or
    null); ``duration_s`` finite and ≥ 0.

    Raises:
        StoreValueError: naming the column, the first bad row and the rule.
    """
    t = "sweep_runs"
    if not isinstance(given, pa.Table):
        raise StoreValueError(t, "*", f"must be a pyarrow.Table, got {type(given).__name__}")
    table: pa.Table = given
    missing = [name for name in SWEEP_RUN_COLUMNS if name not in table.column_names]
    if missing:
        raise StoreValueError(t, missing[0], "column is missing")
    extra = [c for c in table.column_names if c not in SWEEP_RUN_COLUMNS]
    if extra:
        raise StoreValueError(t, extra[0], "unknown column (not in SWEEP_RUNS_SCHEMA)")
    columns = []
    for f in SWEEP_RUNS_SCHEMA:
        col = table[f.name]
        try:
            col = col.cast(f.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise StoreValueError(t, f.name, f"cannot be read as {f.type}: {exc}") from exc
        if not f.nullable and col.null_count:
            raise StoreValueError(t, f.name, f"{col.null_count} null value(s) in a NOT NULL column")
        columns.append(col)
    out = pa.table(columns, schema=SWEEP_RUNS_SCHEMA)
    if out.num_rows == 0:
        return out

    rows = out.select(
        ["seq", "run_key", "kind", "params", "status", "error", "metrics", "strategy_metrics", "trade_hash"]
    ).to_pylist()
    for i, row in enumerate(rows):
        if row["seq"] < 0:
            raise StoreValueError(t, "seq", f"row {i} is {row['seq']}, must be ≥ 0")
        _text(t, "run_key", row["run_key"])
        if row["kind"] not in SWEEP_KINDS:
            raise StoreValueError(t, "kind", f"row {i} is {row['kind']!r}, must be one of {', '.join(SWEEP_KINDS)}")
        if row["status"] not in RUN_STATUSES:
            raise StoreValueError(t, "status", f"row {i} is {row['status']!r}, must be 'ok' or 'failed'")
        if row["status"] == "ok":
            for column in ("metrics", "trade_hash"):
                if row[column] is None:
                    raise StoreValueError(t, column, f"row {i} is an ok run without {column}")
        elif not row["error"]:
            raise StoreValueError(t, "error", f"row {i} is a failed run without an error")
        for column in SWEEP_JSON_COLUMNS:
            text = row[column]
            if text is None:
                continue
            _text(t, column, text)
            try:
                orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise StoreValueError(t, column, f"row {i} is not valid JSON ({exc})") from exc
        for column in ("error", "trade_hash"):
            if row[column] is not None:
                _text(t, column, row[column], allow_empty=True)
    if pc.count_distinct(out["run_key"]).as_py() != out.num_rows:
        raise StoreValueError(t, "run_key", "values must be unique within a batch")
    for name in (*SWEEP_FLOAT_METRICS, "duration_s"):
        col = out[name]
        present = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        values = col.fill_null(0.0).to_numpy()
        bad = np.flatnonzero(present & ~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raise StoreValueError(t, name, f"row {i} is {values[i]}, must be finite")
        big = np.flatnonzero(present & (np.abs(values) >= NUMERIC_LIMIT))
        if big.size:
            i = int(big[0])
            raise StoreValueError(t, name, f"row {i} is {values[i]}, beyond NUMERIC(38, 18)")
        if name == "duration_s" and (values < 0).any():
            i = int(np.flatnonzero(values < 0)[0])
            raise StoreValueError(t, name, f"row {i} is {values[i]}, must be ≥ 0")
    return out

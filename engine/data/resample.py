"""Resample OHLCV bars to a higher timeframe (in DuckDB) and infer a table's bar spacing."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.data.catalog import BAR_SCHEMA, TS_TYPE
from engine.errors import ParameterError
from engine.timeframes import NS_PER_DAY, timeframe_ns

WEEK_NS = 7 * NS_PER_DAY
#: Weekly (and multi-week) buckets start on Monday 00:00 UTC; 1970-01-05 was the first Monday after the epoch.
WEEK_OFFSET_NS = 4 * NS_PER_DAY

_REQUIRED = ("symbol", "ts", "open", "high", "low", "close", "volume")

_QUERY = """
SELECT symbol,
       bucket AS ts,
       arg_min(open, ts) AS open,
       max(high) AS high,
       min(low) AS low,
       arg_max(close, ts) AS close,
       sum(volume) AS volume
FROM (
    SELECT *, ts - ((((ts - $offset) % $tf) + $tf) % $tf) AS bucket
    FROM bars
)
GROUP BY symbol, bucket
"""


def infer_timeframe_ns(table: pa.Table) -> int:
    """Bar spacing of ``table`` in ns: the smallest positive gap between consecutive timestamps of one symbol.

    ``table`` needs ``symbol`` and ``ts`` (``timestamp`` of any unit, or int64 ns) columns, for example the
    output of :func:`engine.data.load_bars`.

    Raises:
        ParameterError: a column is missing, or no symbol has two distinct timestamps.
    """
    symbols, ts = _keys(table)
    spacing = _min_positive_gap(symbols, ts)
    if spacing is None:
        raise ParameterError("table", "cannot infer the bar spacing: no symbol has two distinct timestamps")
    return spacing


def resample(table: pa.Table, timeframe: str) -> pa.Table:
    """Aggregate bars to ``timeframe`` (``"5m"``, ``"15m"``, ``"1h"``, ``"4h"``, ``"1d"``, ``"1w"``, ...).

    Buckets are right-open ``[t, t + tf)`` aligned to the UTC epoch (so days start at 00:00 UTC); weekly
    timeframes are aligned to Monday 00:00 UTC. Each bucket is stamped with its open time ``t``; per symbol:
    open = first open, high = max, low = min, close = last close, volume = sum. Buckets without bars are
    omitted (no forward fill), and a partial bucket (e.g. a last day with only 18 hourly bars) is kept as is.
    The aggregation runs in DuckDB; volume sums may differ from a sequential sum in the last bits.

    Args:
        table: bars with the :func:`engine.data.load_bars` schema (``symbol, ts, open, high, low, close,
            volume``), timestamps unique per symbol.
        timeframe: target bar length; a whole multiple of the source spacing (:func:`infer_timeframe_ns`).

    Returns:
        Table with the :data:`engine.data.BAR_SCHEMA` schema, sorted by ``(symbol, ts)``.

    Raises:
        ParameterError: unknown timeframe string, a missing column, duplicate timestamps of a symbol, or a
            target smaller than or not a whole multiple of the source spacing.
    """
    tf = timeframe_ns(timeframe)
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise ParameterError("table", f"missing columns {missing} (rule: bars need {list(_REQUIRED)})")
    symbols, ts = _keys(table)
    spacing = _min_positive_gap(symbols, ts)
    if spacing is not None and (tf < spacing or tf % spacing):
        raise ParameterError(
            "timeframe",
            f"{timeframe} ({tf} ns) must be a whole multiple of the source spacing ({spacing} ns), not smaller",
        )
    bars = pa.table(
        {
            "symbol": symbols,
            "ts": ts,
            **{c: pc.cast(table[c], pa.float64()) for c in ("open", "high", "low", "close", "volume")},
        }
    )
    offset = WEEK_OFFSET_NS if tf % WEEK_NS == 0 else 0
    con = duckdb.connect()
    try:
        con.register("bars", bars)
        relation = con.sql(_QUERY, params={"offset": offset, "tf": tf})
        # Newer DuckDB names it to_arrow_table; older releases fetch_arrow_table.
        fetch = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
        result = fetch()
    finally:
        con.close()
    result = result.sort_by([("symbol", "ascending"), ("ts", "ascending")])
    columns = [pc.cast(result["symbol"], pa.string()), pc.cast(pc.cast(result["ts"], pa.int64()), TS_TYPE)]
    columns += [pc.cast(result[c], pa.float64()) for c in ("open", "high", "low", "close", "volume")]
    return pa.Table.from_arrays(columns, schema=BAR_SCHEMA)


def _keys(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """``symbol`` as string and ``ts`` as int64 ns UTC."""
    for c in ("symbol", "ts"):
        if c not in table.column_names:
            raise ParameterError("table", f"missing column {c!r}")
    ts = table["ts"].combine_chunks() if isinstance(table["ts"], pa.ChunkedArray) else table["ts"]
    if pa.types.is_timestamp(ts.type):
        ts = pc.cast(pc.cast(ts, pa.timestamp("ns", tz=ts.type.tz)), pa.int64())
    elif not pa.types.is_integer(ts.type):
        raise ParameterError("table", f"column 'ts' must be a timestamp or int64 ns, got {ts.type}")
    if ts.null_count:
        raise ParameterError("table", "column 'ts' has nulls")
    symbols = pc.cast(table["symbol"], pa.string()).combine_chunks()
    return symbols, pc.cast(ts, pa.int64())


def _min_positive_gap(symbols: pa.Array, ts: pa.Array) -> int | None:
    """Smallest positive gap between a symbol's sorted timestamps; ParameterError on a duplicate."""
    if len(ts) < 2:
        return None
    encoded = pc.dictionary_encode(symbols)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    values = ts.to_numpy()
    order = np.lexsort((values, codes))
    same = codes[order][1:] == codes[order][:-1]
    gaps = np.diff(values[order])[same]
    if (gaps == 0).any():
        raise ParameterError("table", "duplicate timestamps for a symbol (rule: unique per symbol)")
    return int(gaps.min()) if gaps.size else None

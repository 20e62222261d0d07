"""Market data: load and validate bars, mark prices and funding rates; resample bars to higher timeframes.

All timestamps are int64 nanoseconds since the UTC epoch (``timestamp[ns, tz=UTC]`` in tables); prices are in
the symbol's quote currency. Bad input raises :class:`engine.errors.DataError` naming file, column and rule.
"""

from engine.data.catalog import (
    BAR_SCHEMA,
    FUNDING_SCHEMA,
    MARK_SCHEMA,
    OPEN_INTEREST_SCHEMA,
    describe,
    load_bars,
    load_funding,
    load_marks,
    load_open_interest,
)
from engine.data.resample import infer_timeframe_ns, resample
from engine.data.timeparse import to_epoch_ns

__all__ = [
    "BAR_SCHEMA",
    "FUNDING_SCHEMA",
    "MARK_SCHEMA",
    "OPEN_INTEREST_SCHEMA",
    "describe",
    "infer_timeframe_ns",
    "load_bars",
    "load_funding",
    "load_marks",
    "load_open_interest",
    "resample",
    "to_epoch_ns",
]

"""Normalise a time column of any supported type to int64 nanoseconds since the UTC epoch.

Supported inputs (all vectorised with Arrow compute; no Python object per row):

* Arrow ``timestamp`` of any unit, naive (taken as UTC) or tz-aware (converted to UTC);
* ``date32`` / ``date64`` (midnight UTC);
* integers: epoch time whose unit is inferred from the largest absolute value in the column
  (see :data:`SECONDS_BELOW`, :data:`MILLIS_BELOW`, :data:`MICROS_BELOW`);
* floats: the same magnitude rule, rounded to the nearest ns (float64 keeps about 0.1 µs at today's epochs);
* text: ISO 8601 with or without a zone (``2025-05-01``, ``2025-05-01 03:00:00``, ``2025-05-01T03:00:00Z``,
  ``2025-05-01T05:00:00+02:00``; naive text is UTC, and naive and zoned values may be mixed), or the compact
  forms ``YYYYMMDD HH:MM:SS``, ``YYYYMMDD HH:MM``, ``YYYYMMDD`` and ``YYYY/MM/DD[ HH:MM:SS]`` (UTC).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import DataError

#: Integers with ``max(|v|) < SECONDS_BELOW`` are epoch seconds (1e11 s is the year 5138).
SECONDS_BELOW = 10**11
#: ... else ``< MILLIS_BELOW`` are epoch milliseconds (1e11 ms is 1973-03-03, 1e14 ms the year 5138).
MILLIS_BELOW = 10**14
#: ... else ``< MICROS_BELOW`` are epoch microseconds; anything larger is epoch nanoseconds.
MICROS_BELOW = 10**17

_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}

# A trailing zone designator after a clock time: "Z", "+02:00", "-0530" (optionally after a space).
_HAS_ZONE = r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|[+-]\d{2}:?\d{2})$"
_DATE_ONLY = r"^\d{4}-\d{2}-\d{2}$"
_ISO_SHAPE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|[+-]\d{2}:?\d{2})?)?$"
_COMPACT_FORMATS = (
    "%Y%m%d %H:%M:%S",
    "%Y%m%d %H:%M",
    "%Y%m%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
)


def epoch_unit(max_abs: int) -> str:
    """Unit (``"s"``, ``"ms"``, ``"us"``, ``"ns"``) of epoch times whose largest magnitude is ``max_abs``."""
    if max_abs < SECONDS_BELOW:
        return "s"
    if max_abs < MILLIS_BELOW:
        return "ms"
    if max_abs < MICROS_BELOW:
        return "us"
    return "ns"


def to_epoch_ns(values: pa.Array | pa.ChunkedArray, *, file: str, column: str, source: str) -> pa.Array:
    """Convert a time column to an int64 array of ns since the UTC epoch, without nulls.

    Args:
        values: the column as read from the file.
        file: file name for error messages.
        column: canonical column name reported in errors (``"ts"``).
        source: the column's name in the file, quoted in error messages.

    Raises:
        DataError: unsupported type, unrecognised text, out-of-range values, or a null/unparseable entry
            (the message gives the first offending data row, 0-based).
    """
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    where = f"time column '{source}'"
    try:
        out = _convert(arr, file=file, column=column, where=where)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError) as exc:
        raise DataError(file, column, f"{where} cannot be converted to ns UTC: {exc}") from exc
    if out.null_count:
        row = pc.index(pc.is_null(out), True).as_py()
        raise DataError(
            file,
            column,
            f"{where} has a null or unparseable value at data row {row} (rule: every row needs a timestamp)",
        )
    return out


def _convert(arr: pa.Array, *, file: str, column: str, where: str) -> pa.Array:
    typ = arr.type
    if pa.types.is_timestamp(typ):
        # tz-aware values are stored as UTC already; naive values are taken as UTC.
        return pc.cast(pc.cast(arr, pa.timestamp("ns", tz=typ.tz)), pa.int64())
    if pa.types.is_date(typ):
        return pc.cast(pc.cast(arr, pa.timestamp("ns")), pa.int64())
    if pa.types.is_integer(typ):
        ints = pc.cast(arr, pa.int64())
        factor = _NS_PER_UNIT[epoch_unit(_max_abs(ints))]
        return pc.multiply_checked(ints, pa.scalar(factor, pa.int64()))
    if pa.types.is_floating(typ):
        floats = pc.cast(arr, pa.float64())
        floats = pc.if_else(pc.is_finite(floats), floats, pa.scalar(None, pa.float64()))
        factor = _NS_PER_UNIT[epoch_unit(_max_abs(floats))]
        scaled = pc.round(pc.multiply(floats, float(factor)))
        return pc.cast(scaled, pa.int64())
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return _parse_text(pc.cast(arr, pa.string()), file=file, column=column, where=where)
    raise DataError(
        file,
        column,
        f"{where} has unsupported type {typ} (rule: timestamp, date, epoch integer/float or ISO text)",
    )


def _max_abs(arr: pa.Array) -> int:
    top = pc.max(pc.abs(arr)).as_py()
    return 0 if top is None else int(top)


def _parse_text(text: pa.Array, *, file: str, column: str, where: str) -> pa.Array:
    text = pc.utf8_trim_whitespace(text)
    # ISO 8601: give naive values an explicit "Z" so naive and zoned values parse in one cast.
    iso = pc.replace_substring_regex(text, r"\s+(Z|z|[+-]\d{2}:?\d{2})$", r"\1")
    zoned = pc.match_substring_regex(iso, _HAS_ZONE)
    date_only = pc.match_substring_regex(iso, _DATE_ONLY)
    suffix = pc.if_else(zoned, "", pc.if_else(date_only, "T00:00:00Z", "Z"))
    iso = pc.binary_join_element_wise(iso, suffix, "")
    try:
        return pc.cast(pc.cast(iso, pa.timestamp("ns", tz="UTC")), pa.int64())
    except pa.ArrowInvalid:
        pass
    for fmt in _COMPACT_FORMATS:
        try:
            parsed = pc.strptime(text, format=fmt, unit="ns", error_is_null=False)
        except pa.ArrowInvalid:
            continue
        return pc.cast(parsed, pa.int64())
    # Point the user at the first value that neither ISO 8601 nor a compact format describes.
    ok = pc.match_substring_regex(text, _ISO_SHAPE)
    for fmt in _COMPACT_FORMATS:
        ok = pc.or_(ok, pc.is_valid(pc.strptime(text, format=fmt, unit="ns", error_is_null=True)))
    bad = pc.fill_null(pc.invert(ok), False)
    row = pc.index(bad, True).as_py()
    what = f"{text[row].as_py()!r} at data row {row}" if row >= 0 else "a date or time out of range"
    raise DataError(
        file,
        column,
        f"{where} holds text that is not a recognised time ({what}) (rule: ISO 8601 or YYYYMMDD HH:MM:SS)",
    )

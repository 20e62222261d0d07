"""Load and validate OHLCV bars, mark-price candles and funding rates from Parquet or CSV files.

Every loader returns a ``pyarrow.Table`` sorted by ``(symbol, ts)`` with ``symbol: string`` and
``ts: timestamp[ns, tz=UTC]`` (the bar's **open** time) followed by float64 value columns. Prices are in the
quote currency of the symbol, exactly as stored in the file; volume is in whatever unit the file uses
(base-asset units for the Binance files).

Input shapes understood (column names are case-insensitive):

* long format with a ``symbol`` column, or a single-symbol file without one (see ``symbol`` below);
* a time column named ``ts``, ``timestamp``, ``open_time``, ``datetime``, ``date`` or ``time`` (first match
  in that order; funding files also ``funding_time``, tried first), else a pandas index stored in Parquet
  metadata, else an unnamed column (CSV header ``""`` or ``Unnamed: 0``, Parquet ``__index_level_0__``);
* any time encoding :func:`engine.data.timeparse.to_epoch_ns` understands (Arrow timestamps of any unit and
  zone, dates, epoch s/ms/µs/ns integers with the unit inferred from magnitude, ISO or ``YYYYMMDD HH:MM:SS``).

Errors: every rejected file raises one :class:`engine.errors.DataError` whose ``column`` is the *canonical*
column (``symbol``, ``ts``, ``open``, ``high``, ``low``, ``close``, ``volume``, ``rate``; ``None`` for
file-level problems) and whose message names the file, the first offending symbol, timestamp (ISO, UTC) and
0-based data row, and the rule; for the time column it also quotes the file's own column name (e.g. ``date``).
Only the selected rows (after the symbol and time filters) are validated, so a bad row outside the request
does not block loading.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.data.timeparse import to_epoch_ns
from engine.errors import DataError, ParameterError

TS_TYPE = pa.timestamp("ns", tz="UTC")
PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_SCHEMA = pa.schema(
    [("symbol", pa.string()), ("ts", TS_TYPE), *((c, pa.float64()) for c in (*PRICE_COLUMNS, "volume"))]
)
MARK_SCHEMA = pa.schema([("symbol", pa.string()), ("ts", TS_TYPE), *((c, pa.float64()) for c in PRICE_COLUMNS)])
FUNDING_SCHEMA = pa.schema([("symbol", pa.string()), ("ts", TS_TYPE), ("rate", pa.float64())])
OPEN_INTEREST_SCHEMA = pa.schema([("symbol", pa.string()), ("ts", TS_TYPE), ("open_interest", pa.float64())])
OPEN_INTEREST_COLUMNS = ("open_interest", "sum_open_interest", "oi")

TIME_COLUMNS = ("ts", "timestamp", "open_time", "datetime", "date", "time")
FUNDING_TIME_COLUMNS = ("funding_time", *TIME_COLUMNS)
RATE_COLUMNS = ("funding_rate", "rate")
_UNNAMED = ("", "unnamed: 0", "__index_level_0__")
_PRICE_RULE = "open/high/low/close must be finite and > 0"

PathLike = str | Path


def load_bars(
    path: PathLike,
    symbols: Iterable[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    symbol: str | None = None,
    *,
    exchange: str | None = None,
    require_volume: bool = True,
) -> pa.Table:
    """Load OHLCV bars from a Parquet or CSV file (format chosen by the ``.parquet``/``.csv`` extension).

    Args:
        path: the file.
        symbols: keep only these symbols (``None``: all). Each must occur in the file.
        start_ns: keep bars with ``ts >= start_ns`` (ns since the UTC epoch; ``None``: no lower bound).
        end_ns: keep bars with ``ts < end_ns`` (exclusive; ``None``: no upper bound).
        symbol: for a file **without** a symbol column, the symbol to assign; if omitted, the single element
            of ``symbols`` when exactly one is given, else the file stem. For a file **with** a symbol column
            it is a filter, the same as ``symbols=[symbol]``.
        exchange: keep only rows whose ``exchange`` column equals this (for files mixing exchanges, such as
            QuantConnect Lean's); ``None``: no filter.
        require_volume: False for a series that has no volume (an index such as NIFTY 50): a file
            without a volume column then loads with volume 0 (a volume column present is still checked).

    Returns:
        Table ``symbol: string, ts: timestamp[ns, tz=UTC], open, high, low, close, volume: float64`` sorted by
        ``(symbol, ts)``; ``ts`` is the bar's open time, prices are in quote currency.

    Raises:
        DataError: missing/unreadable/unknown-format file (``column=None``); a missing required column; an
            unknown requested symbol (``column='symbol'``); an unparseable time (``'ts'``); a duplicate or
            non-increasing (in file order) timestamp of a symbol (``'ts'``); a NaN/null/infinite or
            non-positive price (that price column); ``high < low`` (``'high'``); a negative, NaN or infinite
            volume (``'volume'``).
        ParameterError: ``end_ns <= start_ns``, or both ``symbol`` and ``symbols`` for a long-format file.
    """
    required: dict[str, tuple[str, ...]] = {c: (c,) for c in (*PRICE_COLUMNS, "volume")}
    if not require_volume and _Source.open(path).find("volume") is None:
        del required["volume"]
    name, t, has_exchange, time_col = _select(
        path,
        required,
        TIME_COLUMNS,
        symbols=symbols,
        start_ns=start_ns,
        end_ns=end_ns,
        symbol=symbol,
        exchange=exchange,
    )
    if "volume" not in required:
        t = t.append_column("volume", pa.array(np.zeros(t.num_rows), pa.float64()))
    _check_prices(name, t)
    _check_non_negative(name, t, "volume")
    order = _check_order(name, t, time_col, hint=_exchange_hint(has_exchange, exchange))
    return _output(t.take(order), BAR_SCHEMA)


def load_marks(
    path: PathLike,
    symbols: Iterable[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    symbol: str | None = None,
    *,
    exchange: str | None = None,
) -> pa.Table:
    """Load mark-price candles (open/high/low/close, no volume) from a Parquet or CSV file.

    Arguments, filtering and validation are those of :func:`load_bars` without the volume rules (a ``volume``
    column in the file is ignored).

    Returns:
        Table ``symbol: string, ts: timestamp[ns, tz=UTC], open, high, low, close: float64`` sorted by
        ``(symbol, ts)``; prices in quote currency.

    Raises:
        DataError: as :func:`load_bars`, minus the volume rules.
        ParameterError: as :func:`load_bars`.
    """
    name, t, has_exchange, time_col = _select(
        path,
        {c: (c,) for c in PRICE_COLUMNS},
        TIME_COLUMNS,
        symbols=symbols,
        start_ns=start_ns,
        end_ns=end_ns,
        symbol=symbol,
        exchange=exchange,
    )
    _check_prices(name, t)
    order = _check_order(name, t, time_col, hint=_exchange_hint(has_exchange, exchange))
    return _output(t.take(order), MARK_SCHEMA)


def load_funding(
    path: PathLike,
    symbols: Iterable[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    *,
    exchange: str | None = None,
) -> pa.Table:
    """Load funding-rate events (Binance ``funding_time``/``funding_rate``, Lean ``time``/``funding_rate``).

    The rate column is ``funding_rate`` or ``rate``: a fraction per funding interval (``0.0001`` = 0.01 %),
    positive when longs pay shorts. The time column is ``funding_time`` or any name :func:`load_bars` accepts.
    A file without a symbol column is named after the single element of ``symbols``, else the file stem. File
    order does not matter for funding events (unlike bars, an unsorted file is not rejected). The cadence is
    not assumed: it may differ per symbol and change over time.

    Args:
        path: the file (``.parquet`` or ``.csv``).
        symbols: keep only these symbols (each must occur in the file); ``None``: all.
        start_ns: keep events with ``ts >= start_ns`` (ns since the UTC epoch).
        end_ns: keep events with ``ts < end_ns``.
        exchange: keep only rows whose ``exchange`` column equals this.

    Returns:
        Table ``symbol: string, ts: timestamp[ns, tz=UTC], rate: float64`` sorted by ``(symbol, ts)``; a
        ``(symbol, ts)`` repeated with the identical rate appears once.

    Raises:
        DataError: file-level problems (``column=None``); missing column; unknown symbol (``'symbol'``);
            unparseable time (``'ts'``); a NaN/null/infinite rate (``'rate'``); the same ``(symbol, ts)`` with
            two different rates (``'rate'``).
        ParameterError: ``end_ns <= start_ns``.
    """
    name, t, has_exchange, _ = _select(
        path,
        {"rate": RATE_COLUMNS},
        FUNDING_TIME_COLUMNS,
        symbols=symbols,
        start_ns=start_ns,
        end_ns=end_ns,
        symbol=None,
        exchange=exchange,
    )
    bad = pc.or_(pc.is_null(t["rate"], nan_is_null=True), pc.fill_null(pc.is_inf(t["rate"]), False))
    _raise_first(name, "rate", t, bad, "NaN, null or infinite funding rate", "rate must be finite")
    codes = _codes(t)
    order = _sort_order(t, codes)
    keys_equal = _adjacent_same_key(t, order, codes)
    rates = t["rate"].to_numpy()[order]
    same_rate = rates[1:] == rates[:-1]
    conflict = keys_equal & ~same_rate
    if conflict.any():
        later = order[1:][conflict]
        earlier = order[:-1][conflict]
        k = int(np.argmin(later))
        first, second = int(earlier[k]), int(later[k])
        raise DataError(
            name,
            "rate",
            f"two different rates {float(rates[:-1][conflict][k])!r} and {float(rates[1:][conflict][k])!r} "
            f"{_where(t, second)} (first at data row {_row(t, first)}) "
            f"(rule: one rate per symbol and time){_exchange_hint(has_exchange, exchange)}",
        )
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = ~keys_equal
    return _output(t.take(pa.array(order[keep])), FUNDING_SCHEMA)


def load_open_interest(
    path: PathLike,
    symbols: Iterable[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    *,
    exchange: str | None = None,
) -> pa.Table:
    """Load open-interest observations (``open_interest``, ``sum_open_interest`` or ``oi``; base units).

    Arguments and time/symbol handling are those of :func:`load_bars`; rows must be increasing in time
    per symbol.

    Returns:
        Table ``symbol: string, ts: timestamp[ns, tz=UTC], open_interest: float64`` sorted by (symbol, ts).

    Raises:
        DataError: as :func:`load_bars`; a NaN, infinite or negative open interest (``'open_interest'``).
        ParameterError: ``end_ns <= start_ns``.
    """
    name, t, has_exchange, time_col = _select(
        path,
        {"open_interest": OPEN_INTEREST_COLUMNS},
        TIME_COLUMNS,
        symbols=symbols,
        start_ns=start_ns,
        end_ns=end_ns,
        symbol=None,
        exchange=exchange,
    )
    oi = t["open_interest"]
    bad = pc.or_(
        pc.is_null(oi, nan_is_null=True),
        pc.or_(pc.fill_null(pc.is_inf(oi), False), pc.fill_null(pc.less(oi, 0.0), False)),
    )
    _raise_first(
        name,
        "open_interest",
        t,
        bad,
        "NaN, infinite or negative open interest",
        "open interest must be finite and >= 0",
    )
    order = _check_order(name, t, time_col, hint=_exchange_hint(has_exchange, exchange))
    return _output(t.take(order), OPEN_INTEREST_SCHEMA)


def describe(path: PathLike) -> list[dict[str, object]]:
    """Summarise a bar, mark or funding file per symbol, without validating prices.

    Returns:
        One dict per symbol, sorted by symbol: ``{"symbol": str, "first_ts_ns": int, "last_ts_ns": int,
        "rows": int}`` with timestamps in ns since the UTC epoch. A file without a symbol column reports its
        file stem as the symbol.

    Raises:
        DataError: missing/unreadable/unknown-format file, no time column, or an unparseable time.
    """
    src = _Source.open(path)
    time_col = src.time_column(FUNDING_TIME_COLUMNS)
    sym_col = src.find("symbol")
    raw = src.read([c for c in (time_col, sym_col) if c is not None], strings=[sym_col])
    ts = to_epoch_ns(raw[time_col], file=src.name, column="ts", source=time_col)
    sym = _symbol_column(src, raw, sym_col, Path(path).stem)
    grouped = (
        pa.table({"symbol": sym, "ts": ts})
        .group_by("symbol")
        .aggregate([("ts", "min"), ("ts", "max"), ("ts", "count")])
    )
    grouped = grouped.sort_by("symbol")
    return [
        {"symbol": s, "first_ts_ns": lo, "last_ts_ns": hi, "rows": n}
        for s, lo, hi, n in zip(
            grouped["symbol"].to_pylist(),
            grouped["ts_min"].to_pylist(),
            grouped["ts_max"].to_pylist(),
            grouped["ts_count"].to_pylist(),
            strict=True,
        )
    ]


# --------------------------------------------------------------------------------------------- file access


@dataclass(frozen=True)
class _Source:
    """A file's format and column names, read before its data so only the needed columns are loaded."""

    path: Path
    name: str
    fmt: str
    columns: tuple[str, ...]
    index_columns: tuple[str, ...]

    @classmethod
    def open(cls, path: PathLike) -> _Source:
        p = Path(path)
        name = str(path)
        if not p.exists():
            raise DataError(name, None, "file not found")
        if not p.is_file():
            raise DataError(name, None, "not a regular file")
        suffix = p.suffix.lower()
        index: tuple[str, ...] = ()
        if suffix in (".parquet", ".pq"):
            try:
                schema = pq.read_schema(p)
            except (OSError, pa.ArrowException) as exc:
                raise DataError(name, None, f"unreadable Parquet file: {exc}") from exc
            columns = tuple(schema.names)
            meta = schema.metadata or {}
            if b"pandas" in meta:
                try:
                    pandas_meta = json.loads(meta[b"pandas"])
                    index = tuple(c for c in pandas_meta.get("index_columns", []) if isinstance(c, str))
                except (ValueError, AttributeError):
                    index = ()
            fmt = "parquet"
        elif suffix == ".csv":
            try:
                with p.open(newline="", encoding="utf-8-sig") as fh:
                    header = next(csv.reader(fh), None)
            except (OSError, UnicodeDecodeError, csv.Error) as exc:
                raise DataError(name, None, f"unreadable CSV file: {exc}") from exc
            if not header:
                raise DataError(name, None, "empty CSV file (rule: a header row is required)")
            columns = tuple(header)
            fmt = "csv"
        else:
            raise DataError(name, None, f"unknown file format {suffix or '(no extension)'!r} (rule: .parquet or .csv)")
        lowered: dict[str, str] = {}
        for c in columns:
            if c.lower() in lowered:
                raise DataError(
                    name,
                    c,
                    f"columns {lowered[c.lower()]!r} and {c!r} differ only in case "
                    "(rule: column names are case-insensitive and must be unique)",
                )
            lowered[c.lower()] = c
        return cls(p, name, fmt, columns, index)

    def find(self, *names: str) -> str | None:
        """The file's spelling of the first of ``names`` present (case-insensitive), or ``None``."""
        lowered = {c.lower(): c for c in self.columns}
        for n in names:
            if n in lowered:
                return lowered[n]
        return None

    def time_column(self, names: tuple[str, ...]) -> str:
        """The time column: a named one, else a stored pandas index, else an unnamed index column."""
        found = self.find(*names)
        if found is not None:
            return found
        for c in self.index_columns:
            if c in self.columns and c.lower() not in ("symbol", "exchange"):
                return c
        for c in self.columns:
            if c.strip().lower() in _UNNAMED:
                return c
        raise DataError(
            self.name,
            "ts",
            f"missing time column: expected one of {list(names)} or an "
            f"unnamed index column; file has {list(self.columns)} "
            "(rule: required column)",
        )

    def read(self, columns: list[str], strings: list[str | None]) -> pa.Table:
        """Read ``columns``; those in ``strings`` are read as text."""
        try:
            if self.fmt == "parquet":
                return pq.read_table(self.path, columns=columns, use_pandas_metadata=False)
            types = {c: pa.string() for c in strings if c is not None}
            return pacsv.read_csv(
                self.path,
                read_options=self._csv_read_options(),
                convert_options=pacsv.ConvertOptions(include_columns=columns, column_types=types),
            )
        except (OSError, pa.ArrowException) as exc:
            kind = "Parquet" if self.fmt == "parquet" else "CSV"
            raise DataError(self.name, None, f"unreadable {kind} file: {exc}") from exc

    def _csv_read_options(self) -> pacsv.ReadOptions | None:
        """How :meth:`read` reads a CSV file (``None``: the first row is the header)."""
        return None


# --------------------------------------------------------------------------------------------- selection


def _select(
    path: PathLike,
    values: dict[str, tuple[str, ...]],
    time_names: tuple[str, ...],
    *,
    symbols: Iterable[str] | None,
    start_ns: int | None,
    end_ns: int | None,
    symbol: str | None,
    exchange: str | None,
) -> tuple[str, pa.Table, bool, str]:
    """Read the file and apply the filters.

    Returns ``(file name, table in file order, whether the file has an exchange column, time column name)``;
    the table is that of :func:`_select_rows`.
    """
    wanted = _check_request(symbols, start_ns, end_ns)
    src = _Source.open(path)
    table, time_col, has_exchange = _select_rows(
        src,
        wanted,
        values,
        {},
        time_names,
        start_ns=start_ns,
        end_ns=end_ns,
        symbol=symbol,
        exchange=exchange,
    )
    return src.name, table, has_exchange, time_col


def _check_request(symbols: Iterable[str] | None, start_ns: int | None, end_ns: int | None) -> list[str] | None:
    """The requested symbols (``None``: all), after checking them and the time window."""
    wanted = _wanted_symbols(symbols)
    if start_ns is not None and end_ns is not None and int(end_ns) <= int(start_ns):
        raise ParameterError("end_ns", f"must be greater than start_ns ({start_ns}), got {end_ns}")
    return wanted


def _select_rows(
    src: _Source,
    wanted: list[str] | None,
    required: dict[str, tuple[str, ...]],
    optional: dict[str, tuple[str, ...]],
    time_names: tuple[str, ...],
    *,
    start_ns: int | None,
    end_ns: int | None,
    symbol: str | None,
    exchange: str | None,
) -> tuple[pa.Table, str, bool]:
    """Read the needed columns of ``src`` and keep the rows selected by exchange, symbols and time.

    ``wanted`` comes from :func:`_check_request`. Returns ``(table in file order, time column name, whether
    the file has an exchange column)``. The table has ``symbol`` (string), ``ts`` (int64 ns UTC), the float64
    ``required`` columns and those ``optional`` ones the file has, and ``row`` (the 0-based data row in the
    file, for error messages).
    """
    time_col = src.time_column(time_names)
    sym_col = src.find("symbol")
    exch_col = src.find("exchange")
    found: dict[str, str] = {}
    for canon, names in required.items():
        col = src.find(*names)
        if col is None:
            expected = " or ".join(map(repr, names))
            raise DataError(
                src.name,
                canon,
                f"missing required column (expected {expected}; file has {list(src.columns)}) (rule: required column)",
            )
        found[canon] = col
    for canon, names in optional.items():
        col = src.find(*names)
        if col is not None:
            found[canon] = col
    if exchange is not None and exch_col is None:
        raise DataError(
            src.name,
            "exchange",
            "exchange filter given but the file has no exchange column (rule: required column for exchange=)",
        )

    if sym_col is not None and symbol is not None:
        if wanted is not None:
            raise ParameterError("symbol", "give either symbol or symbols for a file with a symbol column")
        wanted = [symbol]
    if sym_col is None:
        default = (
            symbol if symbol is not None else (wanted[0] if wanted is not None and len(wanted) == 1 else src.path.stem)
        )
    else:
        default = src.path.stem

    needed = [time_col, *found.values()]
    needed += [c for c in (sym_col, exch_col if exchange is not None else None) if c is not None]
    raw = src.read(list(dict.fromkeys(needed)), strings=[sym_col, exch_col])
    n = raw.num_rows
    sym = _symbol_column(src, raw, sym_col, default)
    ts = to_epoch_ns(raw[time_col], file=src.name, column="ts", source=time_col)

    masks: list[pa.Array] = []
    if exchange is not None and exch_col is not None:
        exch = raw[exch_col].combine_chunks()
        available = pc.unique(exch.drop_null()).to_pylist()
        if exchange not in available:
            raise DataError(
                src.name,
                "exchange",
                f"unknown exchange {exchange!r}; the file has "
                f"{sorted(available)} (rule: requested exchange must be "
                "in the file)",
            )
        masks.append(pc.fill_null(pc.equal(exch, exchange), False))
    if wanted is not None:
        pool = sym.filter(masks[0]) if masks else sym
        present = set(pc.unique(pool).to_pylist())
        missing = sorted(set(wanted) - present)
        if missing:
            raise DataError(
                src.name,
                "symbol",
                f"unknown symbol(s) {missing}; the file has "
                f"{sorted(present)} (rule: requested symbols must be in the "
                "file)",
            )
        masks.append(pc.is_in(sym, value_set=pa.array(sorted(set(wanted)), pa.string())))
    if start_ns is not None:
        masks.append(pc.greater_equal(ts, pa.scalar(int(start_ns), pa.int64())))
    if end_ns is not None:
        masks.append(pc.less(ts, pa.scalar(int(end_ns), pa.int64())))

    columns: dict[str, pa.Array | pa.ChunkedArray] = {"symbol": sym, "ts": ts}
    columns.update({canon: raw[col] for canon, col in found.items()})
    columns["row"] = pa.array(np.arange(n, dtype=np.int64))
    table = pa.table(columns)
    if masks:
        mask = masks[0]
        for m in masks[1:]:
            mask = pc.and_(mask, m)
        table = table.filter(mask)
    for canon in found:
        table = table.set_column(
            table.schema.get_field_index(canon), canon, _as_float(src.name, canon, found[canon], table[canon])
        )
    return table.combine_chunks(), time_col, exch_col is not None


def _wanted_symbols(symbols: Iterable[str] | None) -> list[str] | None:
    if symbols is None:
        return None
    if isinstance(symbols, str):
        return [symbols]
    wanted = list(symbols)
    if not all(isinstance(s, str) for s in wanted):
        raise ParameterError("symbols", "must be a list of symbol names (str)")
    return wanted


def _symbol_column(src: _Source, raw: pa.Table, sym_col: str | None, default: str) -> pa.Array:
    if sym_col is None:
        return pa.repeat(pa.scalar(default, pa.string()), raw.num_rows)
    sym = pc.cast(raw[sym_col].combine_chunks(), pa.string())
    if sym.null_count:
        row = pc.index(pc.is_null(sym), True).as_py()
        raise DataError(src.name, "symbol", f"null symbol at data row {row} (rule: every row needs a symbol)")
    return sym


def _as_float(name: str, canon: str, source: str, values: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        return pc.cast(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(
            name, canon, f"column '{source}' is not numeric ({values.type}): {exc} (rule: numeric values)"
        ) from exc


# --------------------------------------------------------------------------------------------- validation


def _check_prices(name: str, t: pa.Table) -> None:
    for c in PRICE_COLUMNS:
        _check_positive(name, t, c, what="price", rule=_PRICE_RULE)
    _raise_first(
        name,
        "high",
        t,
        pc.less(t["high"], t["low"]),
        "high below low",
        "high >= low",
        value_of="high",
        other="low",
    )


def _check_positive(name: str, t: pa.Table, c: str, *, what: str | None = None, rule: str | None = None) -> None:
    """Reject a null, NaN, infinite or non-positive value of column ``c`` (``what`` in the message: ``c``)."""
    what = c if what is None else what
    rule = f"{c} must be finite and > 0" if rule is None else rule
    x = t[c]
    _raise_first(name, c, t, pc.is_null(x, nan_is_null=True), f"NaN or null {what}", rule)
    bad = pc.or_(pc.is_inf(x), pc.less_equal(x, 0.0))
    _raise_first(name, c, t, bad, f"non-positive or infinite {what}", rule, value_of=c)


def _check_non_negative(name: str, t: pa.Table, c: str, *, null_is_zero: bool = False) -> None:
    """Reject an infinite or negative value of column ``c`` and, unless ``null_is_zero``, a null or NaN."""
    rule = f"{c} must be finite and >= 0"
    x = t[c]
    if not null_is_zero:
        _raise_first(name, c, t, pc.is_null(x, nan_is_null=True), f"NaN or null {c}", rule)
    bad = pc.or_(pc.is_inf(x), pc.less(x, 0.0))
    _raise_first(name, c, t, bad, f"negative or infinite {c}", rule, value_of=c)


def _check_order(name: str, t: pa.Table, source: str, hint: str = "") -> pa.Array:
    """Reject duplicate or non-increasing timestamps per symbol (in file order); return the sort order."""
    read_from = "" if source == "ts" else f" (file column '{source}')"
    codes = _codes(t)
    order = _sort_order(t, codes)
    dup = _adjacent_same_key(t, order, codes)
    if dup.any():
        later = order[1:][dup]
        k = int(np.argmin(later))
        first = int(order[:-1][dup][k])
        raise DataError(
            name,
            "ts",
            f"duplicate timestamp{read_from} {_where(t, int(later[k]))} "
            f"(first at data row {_row(t, first)}) "
            f"(rule: sorted and unique per symbol){hint}",
        )
    by_symbol = np.argsort(codes, kind="stable")  # file order within each symbol
    ts = t["ts"].to_numpy()[by_symbol]
    same = codes[by_symbol][1:] == codes[by_symbol][:-1]
    bad = same & (np.diff(ts) <= 0)
    if bad.any():
        later = by_symbol[1:][bad]
        k = int(np.argmin(later))
        previous = int(by_symbol[:-1][bad][k])
        before = _iso(int(t["ts"][previous].as_py()))
        raise DataError(
            name,
            "ts",
            f"timestamps{read_from} not strictly increasing "
            f"{_where(t, int(later[k]))} "
            f"(previous row of this symbol: {before}, data row {_row(t, previous)}) "
            "(rule: sorted and unique per symbol)",
        )
    return pa.array(order)


def _codes(t: pa.Table) -> np.ndarray:
    """Per-row symbol codes that sort like the symbol strings."""
    encoded = pc.dictionary_encode(t["symbol"]).combine_chunks()
    rank = np.empty(len(encoded.dictionary), dtype=np.int64)
    rank[pc.array_sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(encoded.dictionary))
    return rank[encoded.indices.to_numpy(zero_copy_only=False)]


def _sort_order(t: pa.Table, codes: np.ndarray) -> np.ndarray:
    """Stable row order by (symbol, ts)."""
    if t.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    return np.lexsort((t["ts"].to_numpy(), codes))


def _adjacent_same_key(t: pa.Table, order: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """For consecutive rows of ``order``, whether they share (symbol, ts)."""
    if len(order) < 2:
        return np.zeros(0, dtype=bool)
    codes = codes[order]
    ts = t["ts"].to_numpy()[order]
    return np.asarray((codes[1:] == codes[:-1]) & (ts[1:] == ts[:-1]), dtype=bool)


def _raise_first(
    name: str,
    column: str,
    t: pa.Table,
    mask: pa.Array | pa.ChunkedArray,
    what: str,
    rule: str,
    value_of: str | None = None,
    other: str | None = None,
) -> None:
    """Raise a DataError for the first row (in file order) where ``mask`` is true."""
    i = pc.index(pc.fill_null(mask, False), True).as_py()
    if i < 0:
        return
    detail = ""
    if value_of is not None:
        detail = f" {value_of}={t[value_of][i].as_py()!r}"
        if other is not None:
            detail += f" {other}={t[other][i].as_py()!r}"
    raise DataError(name, column, f"{what}{detail} {_where(t, i)} (rule: {rule})")


def _where(t: pa.Table, i: int) -> str:
    return f"for {t['symbol'][i].as_py()} at {_iso(int(t['ts'][i].as_py()))} (data row {_row(t, i)})"


def _row(t: pa.Table, i: int) -> int:
    return int(t["row"][i].as_py())


def _iso(ns: int) -> str:
    """``ns`` since the UTC epoch as ISO 8601 with a ``Z``, to the finest non-zero unit."""
    value = np.array(ns, dtype="datetime64[ns]")
    for unit, size in (("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)):
        if ns % size == 0:
            return f"{value.astype(f'datetime64[{unit}]')}Z"
    return f"{value}Z"


def _exchange_hint(has_exchange: bool, exchange: str | None) -> str:
    if has_exchange and exchange is None:
        return "; the file has an 'exchange' column: pass exchange=... to load one exchange"
    return ""


def _output(t: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [pc.cast(t["symbol"], pa.string()), pc.cast(t["ts"], TS_TYPE)]
    columns += [t[f.name] for f in list(schema)[2:]]
    return pa.Table.from_arrays(columns, schema=schema)

"""Load and validate trade ticks and top-of-book quotes from Parquet or CSV files.

Both loaders return tables of the streaming schemas (:data:`engine.marketdata.schemas.TRADES_SCHEMA`,
:data:`~engine.marketdata.schemas.QUOTES_SCHEMA`): ``symbol: string``, ``ts: timestamp[ns, UTC]`` (the event
time), prices in quote currency and sizes in base units as stored in the file, rows sorted by ``ts`` with ties
in file order (a stable sort, so several symbols are merged by time). Ticks may share a timestamp and files
need not be sorted.

Input shapes understood (column names are case-insensitive; time columns and time encodings as in
:mod:`engine.data.catalog`):

* trades: ``price``; size ``quantity``/``amount``/``size``/``qty``/``volume``; optional aggressor side as
  ``side`` (``"buy"``/``"sell"`` text, or a signed number) or ``buyer_maker``/``is_buyer_maker`` (bool or
  ``"True"``/``"False"`` text: the buyer was the maker, so the seller was the aggressor, side −1); optional
  ``trade_id``/``id``. This covers Nautilus' Binance exports and ccxt/freqtrade trade lists.
* quotes: ``bid``, ``ask``; optional ``bid_size``/``bid_qty``/``bid_volume`` and ``ask_size``/…; a missing
  size column, a null or a NaN size is 0 (unknown).
* a CSV file without a header row (its first row is all numbers) is read by position: trades as
  ``time, price, size`` (Kraken's / freqtrade's trade CSV), quotes as ``time, bid, ask[, bid_size, ask_size]``.

Errors: :class:`engine.errors.DataError` naming the file, the canonical column (``symbol``, ``ts``, ``price``,
``size``, ``side``, ``bid``, ``ask``, ``bid_size``, ``ask_size``; ``None`` for file-level problems), the
first offending symbol, time and 0-based data row, and the rule. Only rows selected by the symbol and time
filters are validated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.data.catalog import (
    TIME_COLUMNS,
    PathLike,
    _check_non_negative,
    _check_positive,
    _check_request,
    _output,
    _raise_first,
    _select_rows,
    _Source,
)
from engine.marketdata.schemas import QUOTES_SCHEMA, TRADES_SCHEMA

_SIZE_NAMES = ("quantity", "amount", "size", "qty", "volume")
_TRADE_REQUIRED: dict[str, tuple[str, ...]] = {"price": ("price",), "size": _SIZE_NAMES}
_QUOTE_REQUIRED: dict[str, tuple[str, ...]] = {"bid": ("bid", "bid_price"), "ask": ("ask", "ask_price")}
_QUOTE_SIZES: dict[str, tuple[str, ...]] = {
    "bid_size": ("bid_size", "bid_qty", "bid_volume"),
    "ask_size": ("ask_size", "ask_qty", "ask_volume"),
}
_HEADERLESS_TRADES = ("timestamp", "price", "size")
_HEADERLESS_QUOTES = ("timestamp", "bid", "ask", "bid_size", "ask_size")
_BUY: tuple[str, ...] = ("buy", "b", "bid")
_SELL: tuple[str, ...] = ("sell", "s", "ask", "a")


def load_trades(
    path: PathLike,
    symbols: Iterable[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    symbol: str | None = None,
) -> pa.Table:
    """Load trade ticks from a Parquet or CSV file.

    Args:
        path: the file (``.parquet`` or ``.csv``).
        symbols: keep only these symbols (each must occur in the file); ``None``: all.
        start_ns: keep trades with ``ts >= start_ns`` (ns since the UTC epoch).
        end_ns: keep trades with ``ts < end_ns``.
        symbol: for a file without a symbol column, the symbol to assign (default: the single element of
            ``symbols``, else the file stem); for a file with one, a filter like ``symbols=[symbol]``.

    Returns:
        :data:`TRADES_SCHEMA` table (``symbol, ts, price, size, side: int8, trade_id: string``) sorted by
        ``ts`` then file order; ``side`` is +1 buyer-initiated, −1 seller-initiated, 0 unknown; ``trade_id``
        is "" when the file has none.

    Raises:
        DataError: file-level problems; a missing required column; an unknown symbol; an unparseable time
            (``'ts'``); a null, NaN, infinite or non-positive price (``'price'``); a null, NaN, infinite or
            negative size (``'size'``); a side that is not buy/sell/True/False (``'side'``).
        ParameterError: ``end_ns <= start_ns``; both ``symbol`` and ``symbols`` for a file with symbols.
    """
    sel = _select(path, _TRADE_REQUIRED, {}, _HEADERLESS_TRADES, symbols, start_ns, end_ns, symbol)
    t = sel.table
    _check_positive(sel.name, t, "price")
    _check_non_negative(sel.name, t, "size")
    side = _side(sel)
    id_col = sel.src.find("trade_id", "id")
    if id_col is None:
        trade_id = pa.repeat(pa.scalar("", pa.string()), t.num_rows)
    else:
        trade_id = pc.fill_null(pc.cast(sel.column(id_col), pa.string()), "")
    t = t.append_column("side", side).append_column("trade_id", trade_id)
    return _sorted_output(t, TRADES_SCHEMA)


def load_quotes(
    path: PathLike,
    symbols: Iterable[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    symbol: str | None = None,
) -> pa.Table:
    """Load top-of-book quotes from a Parquet or CSV file.

    Arguments as :func:`load_trades`.

    Returns:
        :data:`QUOTES_SCHEMA` table (``symbol, ts, bid, bid_size, ask, ask_size: float64``) sorted by ``ts``
        then file order; sizes absent from the file, null or NaN are 0.

    Raises:
        DataError: as :func:`load_trades` for the time and symbols; a null, NaN, infinite or non-positive
            ``bid``/``ask``; an infinite or negative ``bid_size``/``ask_size``.
        ParameterError: as :func:`load_trades`.
    """
    sel = _select(path, _QUOTE_REQUIRED, _QUOTE_SIZES, _HEADERLESS_QUOTES, symbols, start_ns, end_ns, symbol)
    t = sel.table
    for c in ("bid", "ask"):
        _check_positive(sel.name, t, c)
    for c in ("bid_size", "ask_size"):
        if c not in t.column_names:
            t = t.append_column(c, pa.repeat(pa.scalar(0.0, pa.float64()), t.num_rows))
        else:
            filled = pc.if_else(pc.is_null(t[c], nan_is_null=True), 0.0, t[c])
            t = t.set_column(t.schema.get_field_index(c), c, filled)
            _check_non_negative(sel.name, t, c, null_is_zero=True)
    return _sorted_output(t, QUOTES_SCHEMA)


# --------------------------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class _HeaderlessCsv(_Source):
    """A CSV file whose first row is data: columns are named by position."""

    def _csv_read_options(self) -> pacsv.ReadOptions:
        return pacsv.ReadOptions(column_names=list(self.columns))


@dataclass(frozen=True)
class _Selection:
    name: str
    src: _Source
    #: ``symbol``, ``ts`` (int64 ns), the float64 value columns and ``row`` (0-based data row), filtered
    table: pa.Table

    def column(self, file_column: str) -> pa.Array:
        """Another column of the file, restricted to the selected rows (in the order of :attr:`table`)."""
        raw = self.src.read([file_column], strings=[file_column])[file_column].combine_chunks()
        return raw.take(self.table["row"])


def _open(path: PathLike, positional: tuple[str, ...]) -> _Source:
    src = _Source.open(path)
    if src.fmt == "csv" and src.columns and all(_is_number(c) for c in src.columns):
        names = [*positional, *(f"column_{i}" for i in range(len(positional), len(src.columns)))]
        return _HeaderlessCsv(src.path, src.name, src.fmt, tuple(names[: len(src.columns)]), src.index_columns)
    return src


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _select(
    path: PathLike,
    required: dict[str, tuple[str, ...]],
    optional: dict[str, tuple[str, ...]],
    positional: tuple[str, ...],
    symbols: Iterable[str] | None,
    start_ns: int | None,
    end_ns: int | None,
    symbol: str | None,
) -> _Selection:
    wanted = _check_request(symbols, start_ns, end_ns)
    src = _open(path, positional)
    table, _, _ = _select_rows(
        src,
        wanted,
        required,
        optional,
        TIME_COLUMNS,
        start_ns=start_ns,
        end_ns=end_ns,
        symbol=symbol,
        exchange=None,
    )
    return _Selection(src.name, src, table)


# --------------------------------------------------------------------------------------------- validation


def _side(sel: _Selection) -> pa.Array:
    """The aggressor side (+1/−1/0) from a ``side`` or ``buyer_maker`` column (0 everywhere without one)."""
    n = sel.table.num_rows
    side_col = sel.src.find("side")
    maker_col = sel.src.find("buyer_maker", "is_buyer_maker")
    if side_col is None and maker_col is None:
        return pa.repeat(pa.scalar(0, pa.int8()), n)
    col = side_col if side_col is not None else maker_col
    assert col is not None
    values = sel.column(col)
    if side_col is not None and (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        signed = pc.sign(pc.cast(values, pa.float64()))
        bad = pc.invert(pc.fill_null(pc.is_finite(signed), True))
        _raise_side(sel, bad, values, "a numeric side must be finite (sign gives +1 buy, -1 sell)")
        return pc.cast(pc.fill_null(signed, 0.0), pa.int8())
    text = pc.utf8_lower(pc.utf8_trim_whitespace(pc.cast(values, pa.string())))
    if side_col is not None:
        buy, sell, unknown = _BUY, _SELL, ("",)
        rule = "side must be 'buy' or 'sell' (empty or null: unknown)"
    else:
        buy, sell, unknown = ("false", "0"), ("true", "1"), ("",)
        rule = "buyer_maker must be True or False (buyer maker: seller-initiated, side -1)"
    is_buy = pc.is_in(text, value_set=pa.array(buy))
    is_sell = pc.is_in(text, value_set=pa.array(sell))
    known = pc.or_(pc.or_(is_buy, is_sell), pc.is_in(text, value_set=pa.array(unknown)))
    _raise_side(sel, pc.invert(pc.fill_null(known, True)), values, rule)
    out = pc.if_else(is_buy, 1, pc.if_else(is_sell, -1, 0))
    return pc.cast(pc.fill_null(out, 0), pa.int8())


def _raise_side(sel: _Selection, bad: pa.Array, values: pa.Array, rule: str) -> None:
    t = sel.table.append_column("side", pc.cast(values, pa.string()))
    _raise_first(sel.name, "side", t, bad, "unrecognised side", rule, value_of="side")


def _sorted_output(t: pa.Table, schema: pa.Schema) -> pa.Table:
    order = np.argsort(t["ts"].to_numpy(), kind="stable")
    return _output(t.take(pa.array(order)), schema)


__all__ = ["load_quotes", "load_trades"]

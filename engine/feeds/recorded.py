"""Record a live exchange session and play it back offline through the live feed.

A recording is a JSON-lines file; each line is one answer of a ccxt.pro ``watch_*`` coroutine,
``{"method": "watch_trades_for_symbols", "result": [...]}`` (ccxt's unified structures, as the
exchange client returned them), or a dropped connection, ``{"method": ..., "error": "NetworkError",
"message": "..."}``.

* :class:`RecordingClient` wraps a real ccxt.pro client and appends every answer (and every network
  error) to a recording while passing it through.
* :class:`PlaybackClient` stands in for the exchange: its ``watch_*`` coroutines return the
  recorded answers in order (one shared cursor, so a reconnect resumes where the drop happened),
  raise the recorded errors, and wait forever once the recording is exhausted, as a quiet market
  would. :func:`playback_factory` gives the ``client_factory`` of
  :class:`engine.feeds.live.CcxtLiveFeed`, so the live feed's whole path — parsing, reconnects with
  backoff, gap notices — runs offline, in tests or to rehearse a session.
* :func:`trades_recording` turns a trades table (e.g. a catalog file of real ticks) into a recording
  of ``watch_trades_for_symbols`` answers, optionally with connection drops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from engine.errors import DataError


def _error(name: str, message: str) -> BaseException:
    import ccxt

    cls = getattr(ccxt, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = ccxt.NetworkError
    return cls(message)


class _Cursor:
    """The recording and the position shared by every client of one playback."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries
        self.position = 0


class PlaybackClient:
    """A ccxt.pro stand-in answering from a recording (see the module docstring)."""

    def __init__(self, cursor: _Cursor, has: dict[str, bool]) -> None:
        self._cursor = cursor
        self.has = has
        self.closed = False

    async def _next(self, method: str) -> Any:
        c = self._cursor
        if self.closed:
            raise _error("NetworkError", "client closed")
        if c.position >= len(c.entries):
            await asyncio.Event().wait()  # nothing more was recorded: a quiet market
        entry = c.entries[c.position]
        c.position += 1
        await asyncio.sleep(0)
        if "error" in entry:
            raise _error(str(entry["error"]), str(entry.get("message", "recorded drop")))
        return entry["result"]

    async def watch_trades_for_symbols(self, symbols: list[str]) -> Any:
        return await self._next("watch_trades_for_symbols")

    async def watch_trades(self, symbol: str) -> Any:
        return await self._next("watch_trades")

    async def watch_bids_asks(self, symbols: list[str]) -> Any:
        return await self._next("watch_bids_asks")

    async def watch_ticker(self, symbol: str) -> Any:
        return await self._next("watch_ticker")

    async def watch_ohlcv_for_symbols(self, pairs: list[list[str]]) -> Any:
        return await self._next("watch_ohlcv_for_symbols")

    async def watch_ohlcv(self, symbol: str, timeframe: str) -> Any:
        return await self._next("watch_ohlcv")

    async def close(self) -> None:
        self.closed = True


def load_recording(path: str | Path) -> list[dict[str, Any]]:
    """Read a recording. Raises DataError naming the file and line for a malformed line."""
    entries = []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DataError(str(path), None, f"line {i}: not JSON ({exc})") from None
        if not isinstance(entry, dict) or "method" not in entry or ("result" in entry) == ("error" in entry):
            raise DataError(str(path), None, f"line {i}: must hold 'method' and one of 'result' or 'error'")
        entries.append(entry)
    return entries


def playback_factory(path: str | Path, has: dict[str, bool] | None = None) -> Callable[[], PlaybackClient]:
    """A ``client_factory`` for :class:`~engine.feeds.live.CcxtLiveFeed` playing ``path`` back;
    ``has`` is the exchange capability map the feed sees (default: the ``*_for_symbols`` methods)."""
    cursor = _Cursor(load_recording(path))
    caps = has or {"watchTradesForSymbols": True, "watchBidsAsks": True, "watchOHLCVForSymbols": True}
    return lambda: PlaybackClient(cursor, caps)


class RecordingClient:
    """Wraps a ccxt.pro client and appends every ``watch_*`` answer or network error to ``path``."""

    def __init__(self, client: Any, path: str | Path) -> None:
        self._client = client
        self._file = Path(path).open("ab")  # noqa: SIM115 - open for the client's whole life, closed in close()
        self.has = client.has

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not name.startswith("watch_"):
            return attr

        async def recorded(*args: Any, **kwargs: Any) -> Any:
            import ccxt

            try:
                result = await attr(*args, **kwargs)
            except ccxt.NetworkError as exc:
                self._write({"method": name, "error": type(exc).__name__, "message": str(exc)})
                raise
            self._write({"method": name, "result": result})
            return result

        return recorded

    def _write(self, entry: dict[str, Any]) -> None:
        self._file.write(orjson.dumps(entry, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        self._file.flush()

    async def close(self) -> None:
        self._file.close()
        await self._client.close()


def trades_recording(
    trades: pa.Table, unified: dict[str, str], chunk: int = 100, drops_after: Sequence[int] = ()
) -> list[dict[str, Any]]:
    """``watch_trades_for_symbols`` answers of ``chunk`` trades each from a TRADES_SCHEMA table, in ccxt's
    unified trade shape (``unified``: table symbol → ccxt symbol); a connection drop is recorded
    after each answer number in ``drops_after``."""
    ts = trades.column("ts").cast(pa.int64()).to_pylist()
    cols = {c: trades.column(c).to_pylist() for c in ("symbol", "price", "size", "side", "trade_id")}
    out: list[dict[str, Any]] = []
    drops = set(drops_after)
    for n, start in enumerate(range(0, len(ts), chunk)):
        result = []
        for i in range(start, min(start + chunk, len(ts))):
            ms = ts[i] // 1_000_000
            result.append(
                {
                    "info": {},
                    "id": cols["trade_id"][i] or None,
                    "timestamp": ms,
                    "datetime": None,
                    "symbol": unified[cols["symbol"][i]],
                    "order": None,
                    "type": None,
                    "side": {1: "buy", -1: "sell"}.get(cols["side"][i]),
                    "takerOrMaker": None,
                    "price": cols["price"][i],
                    "amount": cols["size"][i],
                    "cost": cols["price"][i] * cols["size"][i],
                    "fee": None,
                    "fees": [],
                }
            )
        out.append({"method": "watch_trades_for_symbols", "result": result})
        if n in drops:
            out.append({"method": "watch_trades_for_symbols", "error": "NetworkError", "message": "recorded drop"})
    return out


def write_recording(entries: list[dict[str, Any]], path: str | Path) -> Path:
    """Write entries as a recording file; returns the path."""
    path = Path(path)
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in entries))
    return path

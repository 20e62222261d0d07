"""The live market-data service against the backtest's, on real Binance perpetual bars.

The independent truth is :class:`engine.strategy.feed.BarMarketData` over the same bars: indicators
computed vectorized over the whole series, higher timeframes resampled in DuckDB and aligned with
``searchsorted``. :class:`engine.live.market_data.LiveMarketData` is fed the same bars one at a time
and must show, at every bar, the same value — bit for bit for everything derived from prices and
timestamps. Higher-timeframe volumes are summed sequentially live and by DuckDB in the backtest (in
an order it chooses), so volume-derived higher-timeframe series are compared to a relative 1e-12.
"""

from __future__ import annotations

import math
import pickle
from functools import cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from engine.backtest.runner import split_bars
from engine.data.catalog import load_bars
from engine.errors import ParameterError
from engine.indicators.registry import INDICATORS
from engine.instruments import Instrument
from engine.live.market_data import LiveMarketData
from engine.strategy.feed import BarMarketData, SymbolFeed
from engine.strategy.registry import StrategyRegistry
from engine.strategy.series import Series
from engine.strategy.services import StrategyServices

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PANEL_1H = DATA / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"
PERP_15M = DATA / "binance_usdm_perp_15m_4sym_2025-08_2026-05.parquet"
HOUR = 3_600 * 10**9

Bars = dict[str, np.ndarray]

#: per indicator: default parameters and non-default ones (every registered indicator must be here)
PARAMS: dict[str, list[dict[str, Any]]] = {
    "sma": [{}, {"period": 5}, {"period": 50}],
    "ema": [{}, {"period": 9}, {"period": 200}],
    "rsi": [{}, {"period": 7}, {"period": 2}],
    "atr": [{}, {"period": 5}, {"period": 30}],
    "bbands": [{}, {"period": 10, "k": 1.5}, {"period": 50, "k": 3.0}],
    "adx": [{}, {"period": 7}, {"period": 20}],
    "stochrsi": [{}, {"period": 7, "stoch_period": 10, "k_smooth": 2, "d_smooth": 4}],
    "roc": [{}, {"period": 1}, {"period": 24}],
    "bbwidth": [{}, {"period": 10, "k": 1.0}],
    "realized_vol": [{}, {"period": 5, "periods_per_year": 8760.0}, {"period": 2}],
    "volume_sma": [{}, {"period": 5}],
    "donchian": [{}, {"period": 55}, {"period": 1}],
}
#: ``source=`` variants tried on every one-input indicator (default parameters)
SOURCES = ("volume", "quote_volume", "high")


@cache
def _load(path: Path, symbols: tuple[str, ...]) -> dict[str, Bars]:
    return split_bars(load_bars(path, symbols=list(symbols)))


def bars_of(path: Path, symbol: str) -> Bars:
    return _load(path, (symbol,))[symbol]


def instruments(symbols: list[str]) -> dict[str, Instrument]:
    return {s: Instrument(symbol=s, kind="perpetual", leverage=10.0) for s in symbols}


def backtest_md(bars: dict[str, Bars], timeframe: str) -> BarMarketData:
    feeds = {s: SymbolFeed(s, b, timeframe) for s, b in bars.items()}
    return BarMarketData(feeds, instruments(list(bars)), timeframe)


def live_md(symbols: list[str], timeframe: str) -> LiveMarketData:
    return LiveMarketData(symbols, instruments(symbols), timeframe)


def feed(md: LiveMarketData, symbol: str, bars: Bars, start: int = 0, stop: int | None = None) -> None:
    """Append bars[start:stop] of ``symbol`` the way a bot does (append, then advance)."""
    cols = [bars[f][start:stop].tolist() for f in ("ts", "open", "high", "low", "close", "volume")]
    for ts, o, h, lo, c, v in zip(*cols, strict=True):
        i = md.append_bar(symbol, ts, o, h, lo, c, v)
        assert md.advance(symbol) == i


def values(series: Series) -> np.ndarray:
    """Every value the series holds (what ``series.value`` reads at each cursor position)."""
    return np.asarray(series._v, dtype=np.float64)


def assert_same(live: Series, expected: Series, tolerance: bool = False) -> None:
    """Equal NaN positions; elsewhere bit-identical (or within a relative 1e-12 with ``tolerance``)."""
    a, b = values(live), values(expected)
    assert live.name == expected.name
    assert a.shape == b.shape, live.name
    nan = np.isnan(a)
    assert np.array_equal(nan, np.isnan(b)), f"{live.name}: NaN positions differ"
    if tolerance:
        np.testing.assert_allclose(a[~nan], b[~nan], rtol=1e-12, atol=0.0, err_msg=live.name)
    else:
        differ = np.flatnonzero(a[~nan].view(np.uint64) != b[~nan].view(np.uint64))
        assert differ.size == 0, f"{live.name}: {differ.size} values differ, first at {differ[:1]}"


def volume_derived(htf: bool, name: str, source: str | None = None, field: str | None = None) -> bool:
    """A higher-timeframe series fed by summed volumes (DuckDB's sum order differs from ours)."""
    return htf and (name == "volume_sma" or source in ("volume", "quote_volume") or field in ("volume", "quote_volume"))


Request = tuple[str, dict[str, Any]]  # ("indicator"|"series", kwargs)


def requests(symbol: str, timeframes: list[str | None], sources: bool = True) -> list[tuple[Request, bool]]:
    """Every indicator with each PARAMS entry, source variants and every series field, per timeframe.

    Each request comes with ``tolerance`` (True for volume-derived higher-timeframe series).
    """
    out: list[tuple[Request, bool]] = []
    for tf in timeframes:
        htf = tf is not None
        for name, spec in INDICATORS.items():
            for params in PARAMS[name]:
                out.append(
                    (
                        ("indicator", {"name": name, "symbol": symbol, "timeframe": tf, **params}),
                        volume_derived(htf, name),
                    )
                )
            if sources and len(spec.inputs) == 1:
                for source in SOURCES:
                    kwargs = {"name": name, "symbol": symbol, "timeframe": tf, "source": source}
                    out.append((("indicator", kwargs), volume_derived(htf, name, source)))
        for field in ("open", "high", "low", "close", "volume", "quote_volume", "ts"):
            out.append(
                (("series", {"field": field, "symbol": symbol, "timeframe": tf}), volume_derived(htf, "", field=field))
            )
    return out


def request(md: Any, req: Request) -> tuple[Series, ...]:
    kind, kwargs = req
    kwargs = dict(kwargs)
    if kind == "series":
        return (md.series(kwargs.pop("field"), kwargs.pop("symbol"), **kwargs),)
    result = md.indicator(kwargs.pop("name"), kwargs.pop("symbol"), **kwargs)
    return result if isinstance(result, tuple) else (result,)


def compare_all(
    path: Path, symbol: str, timeframe: str, timeframes: list[str | None], bars: Bars | None = None
) -> None:
    """Request everything on both services (live before the first bar), stream, compare every value."""
    bars = bars if bars is not None else bars_of(path, symbol)
    reqs = requests(symbol, timeframes)
    live = live_md([symbol], timeframe)
    live_series = [request(live, req) for req, _ in reqs]
    feed(live, symbol, bars)
    bt = backtest_md({symbol: bars}, timeframe)
    for (req, tolerance), got in zip(reqs, live_series, strict=True):
        expected = request(bt, req)
        assert len(got) == len(expected), req
        for g, e in zip(got, expected, strict=True):
            assert_same(g, e, tolerance)
    assert live.warmup_index(symbol) == bt.warmup_index(symbol)


# ---------------------------------------------------------------------------------------------------------
# every indicator, every value
# ---------------------------------------------------------------------------------------------------------


def test_params_cover_the_registry() -> None:
    assert set(PARAMS) == set(INDICATORS)


@pytest.mark.parametrize("symbol", ["BTCUSDT", "1000PEPEUSDT"])
def test_every_indicator_1h_panel_with_4h_and_1d(symbol: str) -> None:
    compare_all(PANEL_1H, symbol, "1h", [None, "4h", "1d"])


def test_every_indicator_15m_with_1h() -> None:
    compare_all(PERP_15M, "ETHUSDT", "15m", [None, "1h"])


def test_weekly_buckets_start_on_monday() -> None:
    bars = bars_of(PANEL_1H, "SOLUSDT")
    reqs = [
        ("indicator", {"name": n, "symbol": "SOLUSDT", "timeframe": "1w", "period": 3}) for n in ("ema", "atr", "adx")
    ]
    reqs += [("series", {"field": f, "symbol": "SOLUSDT", "timeframe": "1w"}) for f in ("ts", "open", "high", "close")]
    live = live_md(["SOLUSDT"], "1h")
    got = [request(live, r) for r in reqs]
    feed(live, "SOLUSDT", bars)
    bt = backtest_md({"SOLUSDT": bars}, "1h")
    for r, g in zip(reqs, got, strict=True):
        for a, b in zip(g, request(bt, r), strict=True):
            assert_same(a, b)
    week_ts = [int(t) for t in values(got[3][0]) if t == t]
    assert week_ts and all(np.datetime64(t, "ns").astype("datetime64[D]").item().weekday() == 0 for t in week_ts)


def test_missing_bars_and_a_start_mid_bucket() -> None:
    """Bars dropped at random (single bars, bucket ends, whole days) and a first bar mid-day: the
    streaming finalization rule still shows each base bar the same higher-timeframe bar."""
    full = bars_of(PANEL_1H, "ETHUSDT")
    rng = np.random.default_rng(4)
    keep = rng.random(full["ts"].size) > 0.05
    keep[:7] = False  # start at 07:00
    hours = (full["ts"] // HOUR) % 24
    keep[(hours == 3) & (rng.random(keep.size) < 0.3)] = False  # last bar of a 4h bucket
    keep[(hours == 23) & (rng.random(keep.size) < 0.3)] = False  # last bar of a day
    keep[2000:2060] = False  # more than two whole days
    bars = {k: np.ascontiguousarray(v[keep]) for k, v in full.items()}
    assert bars["ts"][0] % (24 * HOUR) == 7 * HOUR
    compare_all(PANEL_1H, "ETHUSDT", "1h", [None, "4h", "1d", "1w"], bars=bars)


# ---------------------------------------------------------------------------------------------------------
# reads at each step, the cursor, warm-up
# ---------------------------------------------------------------------------------------------------------


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_reads_at_every_step_and_the_cursor_waits_for_advance() -> None:
    bars = {k: v[:1500] for k, v in bars_of(PANEL_1H, "XRPUSDT").items()}
    bt = backtest_md({"XRPUSDT": bars}, "1h")
    live = live_md(["XRPUSDT"], "1h")
    reqs: list[Request] = [
        ("series", {"field": "close", "symbol": "XRPUSDT", "timeframe": None}),
        ("series", {"field": "ts", "symbol": "XRPUSDT", "timeframe": "4h"}),
        ("indicator", {"name": "ema", "symbol": "XRPUSDT", "timeframe": "4h", "period": 9}),
        ("indicator", {"name": "bbands", "symbol": "XRPUSDT", "timeframe": None}),
        ("indicator", {"name": "adx", "symbol": "XRPUSDT", "timeframe": "1d", "period": 3}),
    ]
    pairs = [(g, e) for r in reqs for g, e in zip(request(live, r), request(bt, r), strict=True)]
    bt_feed = bt.feeds["XRPUSDT"]
    lbar, bbar = live.bar("XRPUSDT"), bt.bar("XRPUSDT")
    assert math.isnan(live.ltp("XRPUSDT")) and repr(lbar) == repr(bbar)
    assert not live.warmed_up("XRPUSDT")
    cols = [bars[f].tolist() for f in ("ts", "open", "high", "low", "close", "volume")]
    for i, row in enumerate(zip(*cols, strict=True)):
        assert live.append_bar("XRPUSDT", *row) == i
        assert lbar.index == i - 1  # the strategy still sees the previous bar
        if i:
            assert lbar.close == bars["close"][i - 1] and pairs[0][0].value == bars["close"][i - 1]
        live.advance("XRPUSDT")
        bt_feed.cursor.i = i
        assert (lbar.index, lbar.ts, lbar.open, lbar.high, lbar.low, lbar.close, lbar.volume) == (
            bbar.index,
            bbar.ts,
            bbar.open,
            bbar.high,
            bbar.low,
            bbar.close,
            bbar.volume,
        )
        assert live.ltp("XRPUSDT") == bt.ltp("XRPUSDT")
        for g, e in pairs:
            assert len(g) == len(e) == i + 1
            assert _same(g.value, e.value) and _same(g.prev, e.prev)
            assert all(_same(g[n], e[n]) for n in (0, 1, 5, 40))
            assert all(_same(x, y) for x, y in zip(g.window(7), e.window(7), strict=True))
            assert len(g.window(7)) == len(e.window(7))
    with pytest.raises(IndexError):
        pairs[0][0][-1]
    assert live.warmup_index("XRPUSDT") == bt.warmup_index("XRPUSDT")
    assert live.warmed_up("XRPUSDT")


def test_warmup_index_grows_as_backtest_prefixes_say() -> None:
    full = bars_of(PANEL_1H, "LINKUSDT")
    reqs: list[Request] = [
        ("indicator", {"name": "ema", "symbol": "LINKUSDT", "timeframe": "1d", "period": 20}),
        ("indicator", {"name": "stochrsi", "symbol": "LINKUSDT", "timeframe": "4h"}),
        ("indicator", {"name": "rsi", "symbol": "LINKUSDT", "timeframe": None}),
    ]
    live = live_md(["LINKUSDT"], "1h")
    for r in reqs:
        request(live, r)
    assert live.warmup_index("LINKUSDT") == 0 and not live.warmed_up("LINKUSDT")
    done = 0
    for m in (1, 15, 200, 479, 480, 481, 700):
        feed(live, "LINKUSDT", full, done, m)
        done = m
        prefix = {k: v[:m] for k, v in full.items()}
        bt = backtest_md({"LINKUSDT": prefix}, "1h")
        for r in reqs:
            request(bt, r)
        assert live.warmup_index("LINKUSDT") == bt.warmup_index("LINKUSDT"), m
        assert live.warmed_up("LINKUSDT") == (bt.warmup_index("LINKUSDT") <= m - 1)
    assert live.warmed_up("LINKUSDT") and live.warmup_index("LINKUSDT") > 400
    empty = live_md(["LINKUSDT"], "1h")
    assert empty.warmup_index("LINKUSDT") == 0  # nothing requested


def test_late_requests_equal_early_ones() -> None:
    """Indicators, series and higher timeframes first requested after 3,001 bars (with the last
    4h and 1d buckets half full; the 4h aggregation already streaming, the 1d one built late) equal
    those requested before the first bar."""
    bars = bars_of(PANEL_1H, "ADAUSDT")
    reqs = [req for req, _ in requests("ADAUSDT", [None, "4h", "1d"], sources=False)]
    early = live_md(["ADAUSDT"], "1h")
    early_series = [request(early, r) for r in reqs]
    late = live_md(["ADAUSDT"], "1h")
    late.series("close", "ADAUSDT", timeframe="4h")  # this aggregation streams from the first bar
    feed(early, "ADAUSDT", bars)
    feed(late, "ADAUSDT", bars, 0, 3001)  # 3001 bars: the last 4h and 1d buckets are open
    late_series = [request(late, r) for r in reqs]
    feed(late, "ADAUSDT", bars, 3001)
    for got, want in zip(late_series, early_series, strict=True):
        for a, b in zip(got, want, strict=True):
            assert_same(a, b)
    assert late.warmup_index("ADAUSDT") == early.warmup_index("ADAUSDT")
    key = ("indicator", {"name": "ema", "symbol": "ADAUSDT", "timeframe": "4h", "period": 9})
    again = late.indicator("ema", "ADAUSDT", timeframe="4h", period=9)  # a repeated request shares the values
    assert isinstance(again, Series) and again._v is late_series[reqs.index(key)][0]._v


# ---------------------------------------------------------------------------------------------------------
# checkpoints, bad bars, errors
# ---------------------------------------------------------------------------------------------------------


def test_pickle_mid_stream_then_continue() -> None:
    bars = {k: v[:3000] for k, v in bars_of(PANEL_1H, "AVAXUSDT").items()}
    reqs_tol = requests("AVAXUSDT", [None, "4h"])
    reqs = [req for req, _ in reqs_tol]
    live = live_md(["AVAXUSDT"], "1h")
    series = [request(live, r) for r in reqs]
    oi_ts = bars["ts"][::5] + 123
    live_oi = LiveMarketData(
        ["AVAXUSDT"], instruments(["AVAXUSDT"]), "1h", open_interest={"AVAXUSDT": (oi_ts, oi_ts * 1e-12)}
    )
    oi = live_oi.open_interest("AVAXUSDT")
    feed(live, "AVAXUSDT", bars, 0, 1234)
    feed(live_oi, "AVAXUSDT", bars, 0, 1234)
    blob = pickle.dumps((live, series, live_oi, oi))  # every streaming indicator object pickles
    restored, restored_series, restored_oi_md, restored_oi = pickle.loads(blob)
    for md in (live, restored):
        feed(md, "AVAXUSDT", bars, 1234)
    feed(restored_oi_md, "AVAXUSDT", bars, 1234)
    bt = backtest_md({"AVAXUSDT": bars}, "1h")
    for (r, tolerance), original, again in zip(reqs_tol, series, restored_series, strict=True):
        for a, b, e in zip(original, again, request(bt, r), strict=True):
            assert_same(b, a)
            assert len(b) == 3000  # the restored series read the restored, still growing lists
            assert_same(b, e, tolerance)
    assert restored.warmup_index("AVAXUSDT") == bt.warmup_index("AVAXUSDT")
    assert restored.bar("AVAXUSDT").close == bars["close"][-1] and restored.bar("AVAXUSDT").index == 2999
    assert restored_oi is restored_oi_md.open_interest("AVAXUSDT") and len(values(restored_oi)) == 3000
    bt_oi = BarMarketData(
        {"AVAXUSDT": SymbolFeed("AVAXUSDT", bars, "1h")},
        instruments(["AVAXUSDT"]),
        "1h",
        open_interest={"AVAXUSDT": (oi_ts, oi_ts * 1e-12)},
    ).open_interest("AVAXUSDT")
    assert oi is not None and bt_oi is not None
    assert_same(restored_oi, bt_oi)


def test_bad_bars_are_rejected_and_change_nothing() -> None:
    live = live_md(["BTCUSDT"], "1h")
    ema = live.indicator("ema", "BTCUSDT", timeframe="4h", period=2)
    t0 = 1_746_057_600 * 10**9
    live.append_bar("BTCUSDT", t0, 10.0, 11.0, 9.0, 10.5, 3.0)
    live.append_bar("BTCUSDT", t0 + HOUR, 10.0, 11.0, 9.0, 10.5, 3.0)
    t2 = t0 + 2 * HOUR
    bad: list[tuple[tuple[Any, ...], str, str]] = [
        ((t0 + HOUR, 10.0, 11.0, 9.0, 10.5, 3.0), "ts", "duplicate"),
        ((t0, 10.0, 11.0, 9.0, 10.5, 3.0), "ts", "out of order"),
        ((t0 + HOUR + HOUR // 2, 10.0, 11.0, 9.0, 10.5, 3.0), "ts", "overlapping"),
        ((float(t2), 10.0, 11.0, 9.0, 10.5, 3.0), "ts", "must be an int"),
        ((t2, math.nan, 11.0, 9.0, 10.5, 3.0), "open", "finite price > 0"),
        ((t2, 10.0, 11.0, 9.0, 0.0, 3.0), "close", "finite price > 0"),
        ((t2, 10.0, 8.0, 9.0, 10.5, 3.0), "high", ">= low"),
        ((t2, 10.0, 11.0, 9.0, 10.5, -1.0), "volume", ">= 0"),
        ((t2, 10.0, 11.0, 9.0, 10.5, math.inf), "volume", ">= 0"),
    ]
    for row, field, rule in bad:
        with pytest.raises(ParameterError) as err:
            live.append_bar("BTCUSDT", *row)
        assert err.value.field == field and rule in err.value.rule, row
    feed_ = live.feeds["BTCUSDT"]
    assert feed_.n == 2 and len(values(ema)) == 2 and feed_.ts == [t0, t0 + HOUR]
    assert live.append_bar("BTCUSDT", t0 + 3 * HOUR, 10.0, 11.0, 9.0, 10.5, 3.0) == 2  # a gap is fine
    with pytest.raises(ParameterError) as err:
        live.append_bar("NOPE", t0, 1.0, 1.0, 1.0, 1.0, 1.0)
    assert err.value.field == "symbol"


def _error(call: Any) -> tuple[type[BaseException], str]:
    try:
        call()
    except Exception as exc:
        return type(exc), str(exc)
    raise AssertionError("no error")


def test_errors_match_bar_market_data() -> None:
    bars = {s: {k: v[:50] for k, v in bars_of(PANEL_1H, s).items()} for s in ("BTCUSDT", "ETHUSDT")}
    bt = backtest_md(bars, "1h")
    live = live_md(list(bars), "1h")
    cases: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("indicator", ("nope", "BTCUSDT"), {}),
        ("indicator", ("ema", "BTCUSDT"), {"period": 0}),
        ("indicator", ("ema", "BTCUSDT"), {"period": True}),
        ("indicator", ("ema", "BTCUSDT"), {"length": 3}),
        ("indicator", ("bbands", "BTCUSDT"), {"k": -1.0}),
        ("indicator", ("atr", "BTCUSDT"), {"source": "close"}),
        ("indicator", ("ema", "BTCUSDT"), {"source": "vwap"}),
        ("indicator", ("ema", "DOGEUSDT"), {}),
        ("indicator", ("ema", None), {}),
        ("indicator", ("ema", "BTCUSDT"), {"timeframe": "90m"}),
        ("indicator", ("ema", "BTCUSDT"), {"timeframe": "30m"}),
        ("indicator", ("ema", "BTCUSDT"), {"timeframe": "60m"}),
        ("indicator", ("ema", "BTCUSDT"), {"timeframe": "4 hours"}),
        ("series", ("vwap", "BTCUSDT"), {}),
        ("series", ("close", "NOPE"), {}),
        ("series", ("close",), {}),
        ("series", ("close", "BTCUSDT"), {"timeframe": "45m"}),
        ("bar", ("NOPE",), {}),
        ("ltp", ("NOPE",), {}),
        ("instrument", ("NOPE",), {}),
        ("funding_rates", ("NOPE",), {}),
        ("open_interest", ("NOPE",), {}),
    ]
    for method, args, kwargs in cases:
        want = _error(lambda m=method, a=args, k=kwargs: getattr(bt, m)(*a, **k))
        got = _error(lambda m=method, a=args, k=kwargs: getattr(live, m)(*a, **k))
        assert got == want, (method, args, kwargs)
        assert want[0] is ParameterError
    assert live.symbols == bt.symbols and live.timeframe == bt.timeframe
    assert live.instrument("ETHUSDT") == bt.instrument("ETHUSDT")
    assert live.funding_rates("BTCUSDT") is None and live.open_interest("BTCUSDT") is None
    for name in INDICATORS:  # one Series, or a tuple in the spec's output order, as in the backtest
        got, want = live.indicator(name, "BTCUSDT"), bt.indicator(name, "BTCUSDT")
        assert isinstance(got, tuple) == isinstance(want, tuple), name
        names = [s.name for s in got] if isinstance(got, tuple) else [got.name]
        assert names == ([s.name for s in want] if isinstance(want, tuple) else [want.name])
    with pytest.raises(ParameterError) as err:
        LiveMarketData(["BTCUSDT", "BTCUSDT"], instruments(["BTCUSDT"]), "1h")
    assert err.value.field == "symbols"
    with pytest.raises(ParameterError) as err:
        LiveMarketData(["BTCUSDT"], {}, "1h")
    assert err.value.field == "instruments"
    with pytest.raises(ParameterError) as err:
        LiveMarketData(["BTCUSDT"], instruments(["BTCUSDT"]), "hourly")
    assert err.value.field == "timeframe"


# ---------------------------------------------------------------------------------------------------------
# shipped strategies' requests
# ---------------------------------------------------------------------------------------------------------


class Recorder:
    """A MarketDataService that passes every call through and keeps each Series handed out."""

    def __init__(self, md: Any) -> None:
        self._md = md
        self.handed: list[Series] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._md, name)
        if name not in ("series", "indicator", "open_interest"):
            return attr

        def recorded(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            self.handed.extend(result if isinstance(result, tuple) else [result] if result is not None else [])
            return result

        return recorded


def run_on_init(strategy_type: str, md: Any) -> list[Series]:
    cls = StrategyRegistry().discover().get(strategy_type)
    recorder = Recorder(md)
    none = cast(Any, None)
    services = StrategyServices(orders=none, positions=none, risk=none, market_data=recorder, clock=none)
    cls(cls.validate_params({}), services).on_init()
    return recorder.handed


@pytest.mark.parametrize(
    ("strategy_type", "path", "timeframe", "symbols"),
    [
        ("multi_tf_trend", PANEL_1H, "1h", ["BTCUSDT", "SOLUSDT"]),
        ("mean_reversion_scalp", PERP_15M, "15m", ["DOGEUSDT", "XRPUSDT"]),
    ],
)
def test_shipped_strategies_see_the_same_series(
    strategy_type: str, path: Path, timeframe: str, symbols: list[str]
) -> None:
    bars = _load(path, tuple(symbols))
    live = live_md(symbols, timeframe)
    got = run_on_init(strategy_type, live)
    for symbol in symbols:
        feed(live, symbol, bars[symbol])
    bt = backtest_md(bars, timeframe)
    want = run_on_init(strategy_type, bt)
    assert len(got) == len(want) > 10
    htf = [w.name.split(".")[1][0].isdigit() for w in want]  # "BTCUSDT.4h.ema"
    assert any(htf)  # the strategies read higher timeframes
    for g, w, is_htf in zip(got, want, htf, strict=True):
        assert_same(g, w, tolerance=is_htf and "volume" in w.name)
    for symbol in symbols:
        assert live.warmup_index(symbol) == bt.warmup_index(symbol)

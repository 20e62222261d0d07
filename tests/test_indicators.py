"""Tests of engine.indicators: TA-Lib / pandas cross-checks, streaming == vectorized, registry contract.

Real data: the 1h USD-M perpetual panel (several symbols, ~9k bars each) and the 2019-2026 1h history
(~58k bars); synthetic: a 1M-bar geometric random walk with a fixed seed, to expose running-sum drift.
"""

from __future__ import annotations

import inspect
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import talib
from talib import MA_Type

from engine.errors import ParameterError
from engine.indicators import (
    ADX,
    ATR,
    EMA,
    INDICATORS,
    ROC,
    RSI,
    SMA,
    BBands,
    BBWidth,
    RealizedVol,
    StochRSI,
    VolumeSMA,
    adx,
    atr,
    bbands,
    bbwidth,
    ema,
    get_indicator,
    realized_vol,
    roc,
    rsi,
    sma,
    stochrsi,
    validate_params,
    volume_sma,
)
from engine.indicators._core import rolling_std

DATA = Path("/work/shared/data")
PANEL = DATA / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"
LONG = DATA / "binance_usdm_perp_1h_long_4sym_2019_2026.parquet"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "1000PEPEUSDT", "XMRUSDT")

pytestmark = pytest.mark.skipif(not PANEL.exists(), reason="shared market data not available")

Bars = dict[str, np.ndarray]


def _bars(frame: pd.DataFrame) -> Bars:
    return {f: frame[f].to_numpy(np.float64) for f in ("open", "high", "low", "close", "volume")}


@pytest.fixture(scope="module")
def panel() -> dict[str, Bars]:
    df = pd.read_parquet(PANEL, columns=["symbol", "date", "open", "high", "low", "close", "volume"])
    df = df[df.symbol.isin(SYMBOLS)].sort_values(["symbol", "date"])
    return {sym: _bars(g) for sym, g in df.groupby("symbol")}


@pytest.fixture(scope="module")
def long_btc() -> Bars:
    df = pd.read_parquet(LONG, filters=[("symbol", "==", "BTCUSDT")]).sort_values("date")
    return _bars(df)


@pytest.fixture(scope="module")
def walk() -> Bars:
    """1M-bar geometric random walk (0.2% per bar) with consistent high/low and volume."""
    rng = np.random.default_rng(20260507)
    n = 1_000_000
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    spread = np.abs(rng.normal(0.0, 0.002, n)) * close
    high = np.maximum(close + spread * rng.random(n), close)
    low = np.minimum(close - spread * rng.random(n), close)
    return {"open": close, "high": high, "low": low, "close": close, "volume": rng.lognormal(10, 1, n)}


def _datasets(panel: dict[str, Bars], walk: Bars) -> list[tuple[str, Bars]]:
    return [*panel.items(), ("walk", walk)]


def assert_close(ours: np.ndarray, ref: np.ndarray, *, rtol: float = 1e-9, first_same: bool = True) -> None:
    """Equal NaN layout after ``ref``'s warm-up; |ours - ref| <= rtol * |ref| + 1e-12 * max|ref|.

    The tiny absolute term (relative to the series' scale) only matters where the reference is ~0, e.g. a
    Stochastic value of 0 that a running sum leaves as 1e-14 in one implementation and 0 in the other.
    """
    ours = np.asarray(ours)
    ref = np.asarray(ref)
    assert ours.shape == ref.shape
    fin_o = np.isfinite(ours)
    fin_r = np.isfinite(ref)
    assert fin_r.any()
    if first_same:
        assert np.flatnonzero(fin_o)[0] == np.flatnonzero(fin_r)[0]
    both = fin_o & fin_r
    assert np.array_equal(both, fin_r), "ours is NaN where the reference is finite"
    scale = float(np.max(np.abs(ref[both])))
    np.testing.assert_allclose(ours[both], ref[both], rtol=rtol, atol=1e-12 * scale)


# ---------------------------------------------------------------------------------------------------------
# TA-Lib cross-checks (real symbols and the 1M random walk)
# ---------------------------------------------------------------------------------------------------------


def _talib_cases(b: Bars) -> list[tuple[str, Any, Any]]:
    c, h, lo = b["close"], b["high"], b["low"]
    r = talib.RSI(c, 14)
    return [
        ("sma20", sma(c, 20), talib.SMA(c, 20)),
        ("sma2", sma(c, 2), talib.SMA(c, 2)),
        ("ema20", ema(c, 20), talib.EMA(c, 20)),
        ("ema9", ema(c, 9), talib.EMA(c, 9)),
        ("rsi14", rsi(c, 14), talib.RSI(c, 14)),
        ("rsi2", rsi(c, 2), talib.RSI(c, 2)),
        ("atr14", atr(h, lo, c, 14), talib.ATR(h, lo, c, 14)),
        ("atr1", atr(h, lo, c, 1), talib.ATR(h, lo, c, 1)),
        ("bbands20", bbands(c, 20, 2.0), talib.BBANDS(c, 20, 2.0, 2.0, MA_Type.SMA)),
        ("bbands5", bbands(c, 5, 1.5), talib.BBANDS(c, 5, 1.5, 1.5, MA_Type.SMA)),
        ("adx14", adx(h, lo, c, 14), talib.ADX(h, lo, c, 14)),
        ("adx3", adx(h, lo, c, 3), talib.ADX(h, lo, c, 3)),
        ("roc10", roc(c, 10), talib.ROC(c, 10)),
        ("roc1", roc(c, 1), talib.ROC(c, 1)),
        # our default Stoch RSI (14, 14, K smooth 3, D smooth 3) == TA-Lib slow STOCH of the RSI
        ("stochrsi", stochrsi(c), talib.STOCH(r, r, r, 14, 3, MA_Type.SMA, 3, MA_Type.SMA)),
        # without K smoothing it is TA-Lib's STOCHRSI (fastk, fastd)
        ("stochrsi_k1", stochrsi(c, 14, 14, 1, 3), talib.STOCHRSI(c, 14, 14, 3, MA_Type.SMA)),
        ("stochrsi_other", stochrsi(c, 10, 5, 1, 4), talib.STOCHRSI(c, 10, 5, 4, MA_Type.SMA)),
    ]


def test_matches_talib_on_real_symbols_and_random_walk(panel: dict[str, Bars], walk: Bars) -> None:
    for name, bars in _datasets(panel, walk):
        for case, ours, ref in _talib_cases(bars):
            ours_t = ours if isinstance(ours, tuple) else (ours,)
            ref_t = ref if isinstance(ref, tuple) else (ref,)
            assert len(ours_t) == len(ref_t)
            for o, r in zip(ours_t, ref_t, strict=True):
                try:
                    assert_close(o, r)
                except AssertionError as exc:
                    raise AssertionError(f"{name} {case}: {exc}") from None


def test_sma_and_bbands_middle_are_bit_identical_to_talib(panel: dict[str, Bars]) -> None:
    c = panel["BTCUSDT"]["close"]
    assert np.array_equal(sma(c, 20), talib.SMA(c, 20), equal_nan=True)
    assert np.array_equal(bbands(c, 20)[1], sma(c, 20), equal_nan=True)


# ---------------------------------------------------------------------------------------------------------
# pandas cross-checks (realized volatility, BB width, volume SMA)
# ---------------------------------------------------------------------------------------------------------


def test_realized_vol_matches_pandas(panel: dict[str, Bars]) -> None:
    for bars in panel.values():
        c = bars["close"]
        returns = np.log(pd.Series(c)).diff()
        for period in (2, 20, 168):
            ref = returns.rolling(period).std(ddof=1).to_numpy()
            assert_close(realized_vol(c, period), ref)
            assert_close(realized_vol(c, period, periods_per_year=8760), ref * math.sqrt(8760))


def test_bbwidth_matches_pandas(panel: dict[str, Bars]) -> None:
    for bars in panel.values():
        s = pd.Series(bars["close"])
        for period, k in ((20, 2.0), (50, 2.5)):
            roll = s.rolling(period)
            # two-pass std per window: pandas' online rolling std (roll.std) drifts by up to ~5e-9
            std = roll.apply(lambda w: np.std(w), raw=True)
            ref = (2.0 * k * std / roll.mean()).to_numpy()
            assert_close(bbwidth(bars["close"], period, k), ref)
            # pandas' own rolling std agrees to its accuracy
            assert_close(
                bbwidth(bars["close"], period, k),
                (2 * k * roll.std(ddof=0) / roll.mean()).to_numpy(),
                rtol=1e-7,
            )


def test_volume_sma_matches_pandas(panel: dict[str, Bars]) -> None:
    for bars in panel.values():
        v = bars["volume"]
        for period in (1, 20, 96):
            assert_close(volume_sma(v, period), pd.Series(v).rolling(period).mean().to_numpy())


def test_rolling_std_is_accurate_against_exact_arithmetic(panel: dict[str, Bars], walk: Bars) -> None:
    """Spot-check windows against rational arithmetic (no rounding at all)."""
    p = 20
    for x in (panel["BTCUSDT"]["close"], walk["close"][-50_000:]):
        got = rolling_std(x, p, 0)
        for i in range(p - 1, x.size, max(1, x.size // 300)):
            w = [Fraction(v) for v in x[i - p + 1 : i + 1]]
            mean = sum(w, Fraction(0)) / p
            exact = math.sqrt(float(sum(((v - mean) ** 2 for v in w), Fraction(0)) / p))
            assert got[i] == pytest.approx(exact, rel=1e-12, abs=0.0)


# ---------------------------------------------------------------------------------------------------------
# streaming == vectorized, bit for bit
# ---------------------------------------------------------------------------------------------------------

STREAM_CASES: list[tuple[str, dict[str, Any]]] = [
    ("sma", {"period": 20}),
    ("sma", {"period": 1}),
    ("ema", {"period": 20}),
    ("ema", {"period": 1}),
    ("rsi", {"period": 14}),
    ("rsi", {"period": 1}),
    ("atr", {"period": 14}),
    ("atr", {"period": 1}),
    ("bbands", {"period": 20, "k": 2.0}),
    ("bbands", {"period": 3, "k": 1.0}),
    ("adx", {"period": 14}),
    ("adx", {"period": 1}),
    ("stochrsi", {}),
    ("stochrsi", {"period": 5, "stoch_period": 1, "k_smooth": 1, "d_smooth": 1}),
    ("roc", {"period": 10}),
    ("bbwidth", {"period": 20}),
    ("realized_vol", {"period": 20}),
    ("realized_vol", {"period": 2, "periods_per_year": 8760}),
    ("volume_sma", {"period": 20}),
]


def _run_both(name: str, params: dict[str, Any], bars: Bars) -> tuple[list[np.ndarray], list[np.ndarray]]:
    spec = get_indicator(name)
    kwargs = validate_params(spec, params)
    inputs = [bars[f] for f in spec.inputs]
    vec = spec.vectorized(*inputs, **kwargs)
    vec_t = list(vec) if isinstance(vec, tuple) else [vec]
    obj = spec.streaming(**kwargs)
    update = obj.update
    rows = [update(*vals) for vals in zip(*(a.tolist() for a in inputs), strict=True)]
    streamed = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    assert obj.ready
    last = obj.value if isinstance(obj.value, tuple) else (obj.value,)
    assert np.array_equal(np.asarray(last), streamed[-1], equal_nan=True)
    return vec_t, [streamed[:, j] for j in range(streamed.shape[1])]


@pytest.mark.parametrize(("name", "params"), STREAM_CASES)
def test_streaming_equals_vectorized_exactly(
    name: str, params: dict[str, Any], panel: dict[str, Bars], long_btc: Bars
) -> None:
    for bars in (panel["BTCUSDT"], panel["1000PEPEUSDT"], long_btc):
        vec, streamed = _run_both(name, params, bars)
        assert len(vec) == len(streamed) == len(get_indicator(name).outputs)
        for v, s in zip(vec, streamed, strict=True):
            assert v.shape == s.shape
            assert np.array_equal(v, s, equal_nan=True), f"{name} {params}: first difference at " + str(
                np.flatnonzero(~((v == s) | (np.isnan(v) & np.isnan(s))))[:3]
            )


def test_streaming_equals_vectorized_on_random_walk_segment(walk: Bars) -> None:
    bars = {k: v[:200_000] for k, v in walk.items()}
    for name, params in (
        ("bbands", {"period": 20}),
        ("realized_vol", {"period": 20}),
        ("ema", {"period": 50}),
    ):
        vec, streamed = _run_both(name, params, bars)
        for v, s in zip(vec, streamed, strict=True):
            assert np.array_equal(v, s, equal_nan=True)


def test_streaming_ready_and_value_semantics() -> None:
    ind = SMA(3)
    assert not ind.ready and math.isnan(ind.value)
    assert math.isnan(ind.update(1.0)) and math.isnan(ind.update(2.0))
    assert ind.update(3.0) == 2.0 and ind.ready and ind.value == 2.0
    assert ind.update(6.0) == pytest.approx(11.0 / 3.0)
    bb = BBands(2, 1.0)
    assert all(math.isnan(v) for v in bb.update(1.0))
    assert bb.update(3.0) == (3.0, 2.0, 1.0) and bb.value == (3.0, 2.0, 1.0)
    for obj in (
        SMA(),
        EMA(),
        RSI(),
        ATR(),
        ADX(),
        ROC(),
        BBands(),
        BBWidth(),
        RealizedVol(),
        StochRSI(),
        VolumeSMA(),
    ):
        assert hasattr(type(obj), "__slots__")
        assert not hasattr(obj, "__dict__")


# ---------------------------------------------------------------------------------------------------------
# edge cases and conventions
# ---------------------------------------------------------------------------------------------------------


def test_flat_market_conventions_match_talib() -> None:
    x = np.full(80, 5.0)
    assert np.array_equal(rsi(x, 14), talib.RSI(x, 14), equal_nan=True)  # 0 when G + L == 0
    assert np.array_equal(adx(x, x, x, 5), talib.ADX(x, x, x, 5), equal_nan=True)
    k, d = stochrsi(x, 5, 5, 1, 3)
    tk, td = talib.STOCHRSI(x, 5, 5, 3, MA_Type.SMA)
    assert np.array_equal(k, tk, equal_nan=True) and np.array_equal(d, td, equal_nan=True)
    assert np.nanmax(bbwidth(x, 10)) == 0.0
    assert np.nanmax(realized_vol(x, 10)) == 0.0


def test_short_inputs_are_all_nan() -> None:
    x = np.linspace(1.0, 2.0, 10)
    for name, spec in INDICATORS.items():
        n = spec.lookback()
        for size in (0, 1, min(n, 10)):
            out = spec.vectorized(*[x[:size]] * len(spec.inputs), **validate_params(spec, {}))
            for arr in out if isinstance(out, tuple) else (out,):
                assert arr.shape == (size,) and np.isnan(arr).all(), name


def test_zero_prices_are_handled() -> None:
    x = np.array([1.0, 0.0, 2.0, 2.0, 3.0])
    assert np.array_equal(roc(x, 1), talib.ROC(x, 1), equal_nan=True)
    assert np.isnan(realized_vol(x, 2)[2])
    middle0 = bbwidth(np.array([1.0, -1.0, 2.0]), 2)
    assert np.isnan(middle0[1]) and np.isfinite(middle0[2])


def test_vectorized_argument_errors() -> None:
    x = np.arange(1.0, 30.0)
    with pytest.raises(ParameterError) as err:
        sma(x, 0)
    assert err.value.field == "period"
    for bad in (2.5, True, "3", None):
        with pytest.raises(ParameterError):
            ema(x, bad)  # type: ignore[arg-type]
    with pytest.raises(ParameterError) as err:
        bbands(x, 20, k=-1.0)
    assert err.value.field == "k"
    with pytest.raises(ParameterError) as err:
        realized_vol(x, 1)
    assert err.value.field == "period"
    with pytest.raises(ParameterError) as err:
        realized_vol(x, 5, periods_per_year=0)
    assert err.value.field == "periods_per_year"
    with pytest.raises(ParameterError) as err:
        stochrsi(x, 14, 14, 0, 3)
    assert err.value.field == "k_smooth"
    with pytest.raises(ParameterError):
        atr(x, x[:-1], x)
    with pytest.raises(ParameterError):
        sma(np.ones((3, 3)), 2)
    with pytest.raises(ParameterError):
        SMA(0)
    # integral floats are accepted
    assert np.array_equal(sma(x, 4.0), sma(x, 4), equal_nan=True)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------

LOOKBACK_CASES: list[tuple[str, dict[str, Any]]] = [
    ("sma", {}),
    ("sma", {"period": 1}),
    ("sma", {"period": 50}),
    ("ema", {"period": 7}),
    ("rsi", {}),
    ("rsi", {"period": 3}),
    ("atr", {"period": 1}),
    ("atr", {"period": 21}),
    ("bbands", {"period": 10, "k": 1.0}),
    ("adx", {}),
    ("adx", {"period": 2}),
    ("stochrsi", {}),
    ("stochrsi", {"period": 6, "stoch_period": 4, "k_smooth": 1, "d_smooth": 5}),
    ("roc", {"period": 1}),
    ("roc", {}),
    ("bbwidth", {"period": 30}),
    ("realized_vol", {}),
    ("realized_vol", {"period": 2, "periods_per_year": 365}),
    ("volume_sma", {"period": 5}),
]


@pytest.mark.parametrize(("name", "params"), LOOKBACK_CASES)
def test_lookback_equals_leading_nan_count(name: str, params: dict[str, Any], panel: dict[str, Bars]) -> None:
    spec = get_indicator(name)
    bars = {k: v[:2000] for k, v in panel["ETHUSDT"].items()}
    kwargs = validate_params(spec, params)
    out = spec.vectorized(*(bars[f] for f in spec.inputs), **kwargs)
    expected = spec.lookback(**params)
    for arr in out if isinstance(out, tuple) else (out,):
        finite = np.flatnonzero(np.isfinite(arr))
        assert finite[0] == expected
        assert np.isfinite(arr[expected:]).all()


def test_registry_contents() -> None:
    names = "sma ema rsi atr bbands adx stochrsi roc bbwidth realized_vol volume_sma donchian"
    assert set(INDICATORS) == set(names.split())
    assert get_indicator("bbands").outputs == ("upper", "middle", "lower")
    assert get_indicator("stochrsi").outputs == ("k", "d")
    assert get_indicator("atr").inputs == ("high", "low", "close")
    assert get_indicator("volume_sma").inputs == ("volume",)
    for name, spec in INDICATORS.items():
        assert spec.name == name
        assert spec.params.model_config.get("extra") == "forbid"
        # the vectorized function's and the streaming class's defaults are the model's defaults
        defaults = {f: info.default for f, info in spec.params.model_fields.items()}
        for fn in (spec.vectorized, spec.streaming):
            sig = inspect.signature(fn)
            assert {k: sig.parameters[k].default for k in defaults} == defaults, (name, fn)
        assert spec.vectorized.__doc__ and spec.streaming.__doc__


def test_get_indicator_unknown() -> None:
    with pytest.raises(ParameterError) as err:
        get_indicator("macd")
    assert err.value.field == "indicator"
    assert "unknown indicator 'macd'" in err.value.rule and "sma" in err.value.rule


def test_validate_params_fills_defaults_and_coerces() -> None:
    assert validate_params(get_indicator("bbands"), {}) == {"period": 20, "k": 2.0}
    assert validate_params(get_indicator("stochrsi"), {"k_smooth": 1}) == {
        "period": 14,
        "stoch_period": 14,
        "k_smooth": 1,
        "d_smooth": 3,
    }
    assert validate_params(get_indicator("rsi"), {"period": 7.0}) == {"period": 7}
    assert validate_params(get_indicator("realized_vol"), {"periods_per_year": 8760}) == {
        "period": 20,
        "periods_per_year": 8760.0,
    }


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("sma", {"period": 0}, "period"),
        ("ema", {"period": -3}, "period"),
        ("rsi", {"period": 2.5}, "period"),
        ("atr", {"period": True}, "period"),
        ("adx", {"period": "abc"}, "period"),
        ("bbands", {"k": 0}, "k"),
        ("bbands", {"k": float("nan")}, "k"),
        ("bbwidth", {"k": False}, "k"),
        ("stochrsi", {"d_smooth": 0}, "d_smooth"),
        ("stochrsi", {"stoch_period": 1.5}, "stoch_period"),
        ("realized_vol", {"period": 1}, "period"),
        ("realized_vol", {"periods_per_year": -1}, "periods_per_year"),
        ("realized_vol", {"periods_per_year": float("inf")}, "periods_per_year"),
        ("roc", {"lenght": 3}, "lenght"),
        ("volume_sma", {"period": None}, "period"),
    ],
)
def test_validate_params_errors_name_the_field(name: str, params: dict[str, Any], field: str) -> None:
    spec = get_indicator(name)
    with pytest.raises(ParameterError) as err:
        validate_params(spec, params)
    assert err.value.field == field
    assert err.value.rule
    with pytest.raises(ParameterError) as err:
        spec.lookback(**params)
    assert err.value.field == field

"""Per-strategy real-time M2M: strategies and legs, the M2M aggregator core, option model marks.

* :mod:`engine.m2m.legs` — :class:`Leg`, :class:`LegSpec`, :class:`LegExit`, :class:`BotFill`, :class:`M2MError`.
* :mod:`engine.m2m.book` — :class:`StrategyBook`: one account's strategies, legs and exits.
* :mod:`engine.m2m.aggregator` — :class:`M2MAggregatorCore`: M2M from price batches, 1-minute M2M
  candles, daily rows, target/stop events, snapshot/restore.
* :mod:`engine.m2m.tables` — the output schemas (:data:`CANDLE_SCHEMA`, :data:`DAILY_SCHEMA`).
* :mod:`engine.m2m.options` — Black-Scholes-Merton, NSE option-chain snapshots, iron condor / straddle builders.

Conventions (DESIGN.md): prices in quote currency per unit, quantities in units, money in quote
currency, timestamps int64 ns UTC, sides BUY = +1 / SELL = −1, M2M of a leg = (LTP − entry) × qty ×
side × multiplier.
"""

from engine.m2m.aggregator import M2MAggregatorCore, StrategyMark
from engine.m2m.book import BookChange, Strategy, StrategyBook
from engine.m2m.legs import BotFill, Leg, LegExit, LegSpec, M2MError, leg_realized, leg_unrealized
from engine.m2m.tables import CANDLE_SCHEMA, DAILY_SCHEMA, M2MEvent, M2MOutput

__all__ = [
    "CANDLE_SCHEMA",
    "DAILY_SCHEMA",
    "BookChange",
    "BotFill",
    "Leg",
    "LegExit",
    "LegSpec",
    "M2MAggregatorCore",
    "M2MError",
    "M2MEvent",
    "M2MOutput",
    "Strategy",
    "StrategyBook",
    "StrategyMark",
    "leg_realized",
    "leg_unrealized",
]

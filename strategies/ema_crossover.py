"""EMA crossover: trend following on a fast/slow exponential moving average cross."""

from engine.strategy import Compatibility
from engine.strategy.crossover import CrossoverParams, Field, MovingAverageCrossover


class EmaCrossoverParams(CrossoverParams):
    fast: int = Field(9, ge=1, le=10_000, description="fast EMA period, bars")
    slow: int = Field(21, ge=2, le=10_000, description="slow EMA period, bars")


class EmaCrossover(MovingAverageCrossover):
    type = "ema_crossover"
    display_name = "EMA Crossover"
    description = (
        "Goes long when the fast EMA crosses above the slow EMA and exits (or reverses short) on the "
        "cross back; optional percentage stop-loss / take-profit brackets."
    )
    version = "1.0.0"
    author = "tradengine"
    compatibility = Compatibility(market_types=("spot", "perpetual"))
    average = "ema"
    Params = EmaCrossoverParams

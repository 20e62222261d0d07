"""SMA crossover: the reference strategy (long on a fast/slow SMA cross up, flat on a cross down)."""

from engine.strategy import Compatibility
from engine.strategy.crossover import MovingAverageCrossover


class SmaCrossover(MovingAverageCrossover):
    type = "sma_crossover"
    display_name = "SMA Crossover"
    description = (
        "Buys when the fast simple moving average of the close crosses above the slow one and exits "
        "when it crosses back below (optionally reversing short). Entries size by size_pct of cash."
    )
    version = "1.0.0"
    author = "tradengine"
    compatibility = Compatibility(market_types=("spot", "perpetual"))
    average = "sma"

"""The public strategy API: everything a plugin in ``strategies/`` may import.

from engine.strategy import Bar, Compatibility, Field, Strategy, StrategyParams
"""

from engine.execution.orders import BUY, SELL, Fill, Order
from engine.strategy.base import Compatibility, Field, Strategy, StrategyParams
from engine.strategy.funding import FundingRates
from engine.strategy.series import Bar, Series, Tick
from engine.strategy.services import StrategyServices
from engine.timeframes import timeframe_ns, timeframe_str

__all__ = [
    "BUY",
    "SELL",
    "Bar",
    "Compatibility",
    "Field",
    "Fill",
    "FundingRates",
    "Order",
    "Series",
    "Strategy",
    "StrategyParams",
    "StrategyServices",
    "Tick",
    "timeframe_ns",
    "timeframe_str",
]

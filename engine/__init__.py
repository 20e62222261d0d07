"""The deterministic trading core: data, indicators, strategies, matching, accounting, backtests, stores.

Nothing in this package imports ``ray``; actors in ``actors/`` host these objects.
"""

__version__ = "0.1.0"

"""The portfolio: many strategy instances on one capital, with allocation, risk checks and breakers.

``manager`` (allocation, equity, drawdown, circuit breakers), ``events`` (the ordered event log),
``sleeve`` (one strategy instance's sub-ledger and services), ``backtest`` (the merged multi-timeframe
loop) and ``config`` (the YAML/TOML file and how it becomes a run).
"""

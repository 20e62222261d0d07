"""Errors raised at the engine's boundaries.

Every error names the offending field (or file and column) and the rule it broke, so a CLI or gRPC
front end can print it as one line without a traceback.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on bad input."""


class DataError(EngineError, ValueError):
    """A market-data file or table breaks a rule: ``file``, ``column`` and ``rule`` say which."""

    def __init__(self, file: str, column: str | None, rule: str) -> None:
        self.file = file
        self.column = column
        self.rule = rule
        where = f"{file}: column '{column}'" if column else file
        super().__init__(f"{where}: {rule}")


class ParameterError(EngineError, ValueError):
    """A strategy or run parameter is invalid: ``field`` names it, ``rule`` says what it must satisfy."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"parameter '{field}': {rule}")

    def __reduce__(self) -> tuple[type[ParameterError], tuple[str, str]]:
        # pickled by its fields (not the message), so it crosses process boundaries (Ray actor calls)
        return (type(self), (self.field, self.rule))


class PluginError(EngineError):
    """A strategy plugin file could not be loaded or failed validation."""

    def __init__(self, file: str, reason: str) -> None:
        self.file = file
        self.reason = reason
        super().__init__(f"{file}: {reason}")


class UnknownStrategyError(EngineError, KeyError):
    """No strategy plugin of the requested type is registered."""

    def __init__(self, strategy_type: str, known: list[str]) -> None:
        self.strategy_type = strategy_type
        self.known = known
        super().__init__(f"unknown strategy type '{strategy_type}' (known: {', '.join(sorted(known)) or 'none'})")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


class OrderError(EngineError, ValueError):
    """An order request is invalid (for example a non-positive quantity or a missing limit price)."""


class StoreError(EngineError):
    """A store operation failed (bad URL, failed migration, database error)."""


class StrategyRuntimeError(EngineError):
    """A strategy callback raised during a backtest: names the strategy, callback, symbol and time."""

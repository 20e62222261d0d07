"""Store errors shared by the store modules (re-exported by :mod:`engine.store`)."""

from __future__ import annotations

from engine.errors import StoreError


class StoreValueError(StoreError):
    """A value cannot be stored: ``table`` and ``column`` name it, ``rule`` says why. Nothing was written."""

    def __init__(self, table: str, column: str, rule: str) -> None:
        self.table = table
        self.column = column
        self.rule = rule
        super().__init__(f"{table}.{column}: {rule}; nothing was saved")

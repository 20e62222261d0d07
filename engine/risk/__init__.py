"""Pre-trade risk: limits, the manager that checks every opening order, and the view it checks.

The portfolio builds an :class:`OrderIntent` and a :class:`RiskSnapshot` for each order that opens
or adds exposure and asks :meth:`RiskManager.check`; a :class:`Rejection` (or None) comes back.
"""

from engine.risk.limits import ConflictMode, RiskLimits
from engine.risk.manager import (
    BLOCK_REASONS,
    CHECKS,
    REJECTIONS_SCHEMA,
    REL_TOL,
    Rejection,
    RiskManager,
    position_size,
)
from engine.risk.view import Exposure, OrderIntent, RiskSnapshot

__all__ = [
    "BLOCK_REASONS",
    "CHECKS",
    "REJECTIONS_SCHEMA",
    "REL_TOL",
    "ConflictMode",
    "Exposure",
    "OrderIntent",
    "Rejection",
    "RiskLimits",
    "RiskManager",
    "RiskSnapshot",
    "position_size",
]

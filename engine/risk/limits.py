"""The pre-trade risk limits of one portfolio.

Every limit is optional: ``None`` disables its check. Units: money in quote currency, percentages
in percent (``2.0`` = 2 %), leverage as a ratio (``3.0`` = notional three times equity).
See :class:`engine.risk.manager.RiskManager` for how each figure is computed and compared.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ConflictMode = Literal["reject", "net"]

_PCT_FIELDS = ("max_risk_per_trade_pct", "max_total_open_risk_pct", "unprotected_risk_pct", "daily_loss_limit_pct")
_AMOUNT_FIELDS = ("max_loss_per_trade", "daily_loss_limit", "max_leverage")


class RiskLimits(BaseModel):
    """Limits checked, in order, on every order that opens or adds exposure.

    Attributes:
        max_loss_per_trade: quote currency. The most one order may lose if its stop is hit:
            ``(price − stop) × side × qty × multiplier`` (from the order's reference price to its
            stop). ``None`` = no check.
        max_risk_per_trade_pct: percent of the submitting strategy's allocated capital. The same
            per-order loss must be ≤ ``pct / 100 × allocated``. Default 2.0.
        max_total_open_risk_pct: percent of portfolio equity. Σ over every exposure (all
            strategies, pending entry orders included) of its loss to its stop, plus the order's own
            loss to its stop, must be ≤ ``pct / 100 × equity``. An exposure's loss is
            ``max(0, (ref − stop) × sign(qty)) × |qty| × multiplier`` where ``ref`` is the mark for an
            open position and the entry (order) price for a pending order; a stop the reference has
            already crossed counts 0. Default 20.0.
        unprotected_risk_pct: percent of notional. How an exposure or order without a stop
            (``stop == 0``) counts in the three stop-loss checks above (``max_loss_per_trade``,
            ``max_risk_per_trade_pct``, ``max_total_open_risk_pct``): ``None`` (default) = it counts
            0, so an unprotected order skips the two per-trade checks and adds nothing to the
            total; such orders are then bounded only by ``enforce_allocation`` and
            ``max_leverage`` (and the portfolio-wide checks that do not depend on the order's own
            risk). A number = its loss is taken as ``pct / 100 × |qty| × ref × multiplier``.
        enforce_allocation: if True (default), the strategy's margin in use (Σ of its exposures'
            notional / leverage, pending orders included) plus the order's notional / leverage must
            be ≤ its allocated capital (quote currency).
        conflict_mode: "reject" (default): an order on a symbol where ANOTHER strategy holds or has
            pending an exposure of the opposite sign is rejected. "net": it passes, and the
            leverage check uses the notional netted per symbol across strategies.
        daily_loss_limit: quote currency. Loss today = ``day_start_equity − equity``; when it
            reaches the limit (loss ≥ limit), every opening order is rejected. ``None`` = no check.
        daily_loss_limit_pct: percent of ``day_start_equity``; the same rule with the limit
            ``pct / 100 × day_start_equity``. Default 5.0. When both daily limits are set, the
            smaller (in quote currency) binds.
        max_open_positions: count of distinct (strategy, symbol) exposures after the order,
            pending orders included; an order adding to the strategy's existing exposure in that
            symbol does not count as new. Default 30.
        max_leverage: ratio. Portfolio notional after the order / portfolio equity. The notional is
            gross (Σ |qty| × ref × multiplier) in "reject" mode and Σ over symbols of
            |Σ signed notional| in "net" mode. Default 3.0.

    Validation: percentages must be in (0, 100], amounts and the leverage > 0, every number finite;
    unknown fields are rejected. The model is frozen.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_loss_per_trade: float | None = None
    max_risk_per_trade_pct: float | None = 2.0
    max_total_open_risk_pct: float | None = 20.0
    unprotected_risk_pct: float | None = None
    enforce_allocation: bool = True
    conflict_mode: ConflictMode = "reject"
    daily_loss_limit: float | None = None
    daily_loss_limit_pct: float | None = 5.0
    max_open_positions: int | None = Field(default=30, strict=True)
    max_leverage: float | None = 3.0

    @field_validator(*_PCT_FIELDS)
    @classmethod
    def _percentage(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 < value <= 100.0:
            raise ValueError(f"must be a percentage in (0, 100], got {value}")
        return value

    @field_validator(*_AMOUNT_FIELDS)
    @classmethod
    def _amount(cls, value: float | None) -> float | None:
        if value is not None and not value > 0.0:
            raise ValueError(f"must be > 0, got {value}")
        return value

    @field_validator("max_open_positions")
    @classmethod
    def _count(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"must be an integer >= 1, got {value}")
        return value

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> RiskLimits:
        """Validate raw input (a config file's ``risk`` section).

        Raises:
            ParameterError: naming the offending field(s) and the rule(s) they broke.
        """
        from engine.strategy.base import params_error  # local: keep engine.risk's import graph small

        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise params_error(exc) from None

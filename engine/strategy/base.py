"""The strategy plugin base class, its metadata and its parameter model.

A plugin is one file in ``strategies/`` defining one subclass of :class:`Strategy` with class
metadata (``type``, ``display_name``, ``description``, ``version``, ``author``, ``compatibility``)
and a ``Params`` pydantic model whose JSON Schema is published to clients.

Callbacks are synchronous and run on the bot's own thread of control: ``on_init`` once before the
first bar (request indicators here), ``on_bar`` after each completed bar, ``on_bars`` once per close
time after all symbols' bars of that time (cross-sectional plugins), ``on_tick`` on each trade
or quote (live feeds), ``on_order_filled`` on each fill, ``on_stop`` once at the end.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import ParameterError
from engine.execution.orders import Fill
from engine.strategy.series import Bar, Tick
from engine.strategy.services import StrategyServices


class StrategyParams(BaseModel):
    """Base of every strategy's parameter model: unknown fields are rejected, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Compatibility(BaseModel):
    """What a strategy can run on: market types ("spot", "perpetual") and timeframes (empty = any)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    market_types: tuple[Literal["spot", "perpetual"], ...] = ("spot", "perpetual")
    timeframes: tuple[str, ...] = ()


def params_error(exc: ValidationError) -> ParameterError:
    """Turn a pydantic ValidationError into one ParameterError naming the field(s) and rule(s)."""
    parts = []
    fields = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"]) or "params"
        rule = err["msg"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ParameterError):  # raised by a validator: keep its own field and rule
            loc = [str(x) for x in err["loc"]]
            if loc and loc[-1] == cause.field.split(".")[0]:
                loc.pop()  # a field validator naming its own field
            field, rule = ".".join([*loc, cause.field]), cause.rule
        elif err["type"] == "value_error":
            rule = rule.removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            rule = "unknown parameter"
        fields.append(field)
        parts.append(f"{field}: {rule}" if len(exc.errors()) > 1 else rule)
    return ParameterError(", ".join(fields), "; ".join(parts))


class Strategy:
    """Base class of strategy plugins.

    Subclasses set the class metadata and override ``on_bar`` (bar strategies) or ``on_tick``.
    ``self.params`` is the validated ``Params`` instance; ``self.services`` the typed services, also
    reachable as ``self.orders``, ``self.positions``, ``self.risk``, ``self.market_data``,
    ``self.clock``.
    """

    type: ClassVar[str]
    display_name: ClassVar[str]
    description: ClassVar[str]
    version: ClassVar[str]
    author: ClassVar[str]
    compatibility: ClassVar[Compatibility] = Compatibility()
    Params: ClassVar[builtins.type[StrategyParams]] = StrategyParams
    #: minimum number of bars before ``on_bar`` is first called (the runner also waits until every
    #: series requested in ``on_init`` has a value)
    warmup_bars: ClassVar[int] = 0

    def __init__(self, params: StrategyParams, services: StrategyServices) -> None:
        self.params = params
        self.services = services
        self.orders = services.orders
        self.positions = services.positions
        self.risk = services.risk
        self.market_data = services.market_data
        self.clock = services.clock

    # ------------------------------------------------------------------ metadata
    @classmethod
    def parameters_schema(cls) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12, as pydantic emits it) of ``Params``."""
        return cls.Params.model_json_schema()

    @classmethod
    def validate_params(cls, raw: dict[str, Any] | None) -> StrategyParams:
        """Validate raw parameters; missing ones take their defaults.

        Raises:
            ParameterError: naming each bad field and the rule it broke.
        """
        try:
            return cls.Params.model_validate(raw or {})
        except ValidationError as exc:
            raise params_error(exc) from None

    @classmethod
    def metadata(cls) -> dict[str, Any]:
        """The catalog entry: type, display_name, description, version, author, compatibility, schema."""
        return {
            "type": cls.type,
            "display_name": cls.display_name,
            "description": cls.description,
            "version": cls.version,
            "author": cls.author,
            "compatibility": cls.compatibility.model_dump(mode="json"),
            "parameters_schema": cls.parameters_schema(),
        }

    # ------------------------------------------------------------------ lifecycle
    def on_init(self) -> None:
        """Called once before the first bar: request indicators and series here."""

    def on_bar(self, bar: Bar) -> None:
        """Called after each completed bar of each traded symbol."""

    def on_bars(self, ts_ns: int) -> None:
        """Called once per bar close time (ns UTC), after ``on_bar`` has run for every symbol whose bar
        closed then: the place for cross-sectional decisions (rank, rebalance) over all symbols.
        Runners call it only when a plugin overrides it."""

    def on_tick(self, tick: Tick) -> None:
        """Called on each trade/quote update of a live feed."""

    def on_order_filled(self, fill: Fill) -> None:
        """Called after each fill of this strategy's orders."""

    def on_stop(self) -> None:
        """Called once when the run or bot stops."""

    @classmethod
    def check_compatibility(cls, timeframe: str, market_kinds: Iterable[str], where: str = "") -> None:
        """Raise ParameterError (fields ``<where>timeframe`` / ``<where>market``) when the plugin does not
        support ``timeframe`` or one of ``market_kinds`` ("spot", "perpetual")."""
        compat = cls.compatibility
        if compat.timeframes and timeframe not in compat.timeframes:
            raise ParameterError(
                f"{where}timeframe",
                f"strategy {cls.type!r} supports {', '.join(compat.timeframes)}, not {timeframe!r}",
            )
        for kind in market_kinds:
            if kind not in compat.market_types:
                raise ParameterError(
                    f"{where}market",
                    f"strategy {cls.type!r} supports {', '.join(compat.market_types)}, not {kind!r}",
                )

    @classmethod
    def wants_on_tick(cls) -> bool:
        """True when the plugin overrides :meth:`on_tick` (a live bot then subscribes to trades)."""
        return cls.on_tick is not Strategy.on_tick

    @classmethod
    def wants_on_bars(cls) -> bool:
        """True when the plugin overrides :meth:`on_bars`."""
        return cls.on_bars is not Strategy.on_bars


__all__ = ["Compatibility", "Field", "Strategy", "StrategyParams"]

"""Discovery and validation of strategy plugins.

Every ``*.py`` file (not starting with ``_``) in the configured folders is one plugin: it must
define exactly one :class:`~engine.strategy.base.Strategy` subclass with complete metadata, a
``Params`` model derived from ``StrategyParams`` whose JSON Schema can be generated, and an
``on_bar`` or ``on_tick`` callback. A file that fails is reported with its path and reason while
the others load. Folders: the project's ``strategies/`` plus those in ``TRADE_STRATEGY_PATHS``
(``os.pathsep``-separated) and any passed explicitly. Plugin code is loaded only from these folders.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import PluginError, UnknownStrategyError
from engine.strategy.base import Compatibility, Strategy, StrategyParams

_TYPE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?([.-][0-9A-Za-z.]+)?$")
_META = ("type", "display_name", "description", "version", "author")


def default_folder() -> Path:
    """The project's ``strategies/`` folder (next to the ``engine`` package)."""
    return Path(__file__).resolve().parents[2] / "strategies"


def configured_folders(extra: list[str | Path] | None = None) -> list[Path]:
    """``strategies/``, then ``TRADE_STRATEGY_PATHS`` entries, then ``extra``; duplicates removed."""
    folders = [default_folder()]
    env = os.environ.get("TRADE_STRATEGY_PATHS", "")
    folders += [Path(p) for p in env.split(os.pathsep) if p.strip()]
    folders += [Path(p) for p in extra or []]
    seen: list[Path] = []
    for folder in folders:
        resolved = folder.expanduser().resolve()
        if resolved not in seen:
            seen.append(resolved)
    return seen


@dataclass(frozen=True)
class PluginFailure:
    """A plugin file that did not load: its path and the reason."""

    file: str
    reason: str


def validate_strategy_class(cls: type[Strategy], file: str) -> None:
    """Check a plugin class's interface and schema.

    Raises:
        PluginError: naming the file and the first problem found.
    """
    for attr in _META:
        value = getattr(cls, attr, None)
        if not isinstance(value, str) or not value.strip():
            raise PluginError(file, f"class {cls.__name__}: metadata '{attr}' must be a non-empty string")
    if not _TYPE.match(cls.type):
        raise PluginError(file, f"class {cls.__name__}: 'type' {cls.type!r} must match {_TYPE.pattern}")
    if not _VERSION.match(cls.version):
        raise PluginError(file, f"class {cls.__name__}: 'version' {cls.version!r} must look like 1.0.0")
    if not isinstance(cls.compatibility, Compatibility):
        raise PluginError(file, f"class {cls.__name__}: 'compatibility' must be a Compatibility instance")
    params = getattr(cls, "Params", None)
    if not (inspect.isclass(params) and issubclass(params, StrategyParams)):
        raise PluginError(file, f"class {cls.__name__}: 'Params' must subclass StrategyParams")
    try:
        schema = cls.parameters_schema()
    except Exception as exc:  # the schema generator reports unsupported field types this way
        raise PluginError(file, f"class {cls.__name__}: parameters schema cannot be generated: {exc}") from None
    if schema.get("type") != "object":
        raise PluginError(file, f"class {cls.__name__}: parameters schema must describe an object")
    if cls.on_bar is Strategy.on_bar and cls.on_tick is Strategy.on_tick:
        raise PluginError(file, f"class {cls.__name__}: must override on_bar or on_tick")


def load_plugin_file(path: Path) -> type[Strategy]:
    """Import one plugin file and return its validated strategy class.

    Raises:
        PluginError: import failure (with the line for syntax errors), zero or several strategy
            classes, or a failed validation.
    """
    file = str(path)
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    module_name = f"_tradengine_plugin_{digest}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(file, "not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise PluginError(file, f"syntax error at line {exc.lineno}: {exc.msg}") from None
    except (Exception, SystemExit) as exc:  # a plugin calling sys.exit() must not stop discovery
        sys.modules.pop(module_name, None)
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        raise PluginError(file, f"import failed: {type(exc).__name__}: {exc} (line {frame.lineno})") from None
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Strategy) and obj is not Strategy and obj.__module__ == module_name
    ]
    if len(classes) != 1:
        names = ", ".join(c.__name__ for c in classes) or "none"
        raise PluginError(file, f"must define exactly one Strategy subclass (one plugin per file), found {names}")
    validate_strategy_class(classes[0], file)
    return classes[0]


class StrategyRegistry:
    """The strategy catalog: plugin classes by ``type``, plus the files that failed.

    Usage: ``registry = StrategyRegistry().discover()``; ``registry.get("sma_crossover")``.
    """

    def __init__(self, folders: list[str | Path] | None = None, include_default: bool = True) -> None:
        if include_default:
            self.folders = configured_folders(folders)
        else:
            self.folders = [Path(p).expanduser().resolve() for p in folders or []]
        self.strategies: dict[str, type[Strategy]] = {}
        self.files: dict[str, str] = {}
        self.failures: list[PluginFailure] = []

    def discover(self) -> StrategyRegistry:
        """Load every plugin file of every folder (sorted by name); returns self."""
        for folder in self.folders:
            if not folder.is_dir():
                self.failures.append(PluginFailure(str(folder), "strategy folder does not exist"))
                continue
            for path in sorted(folder.glob("*.py")):
                if path.name.startswith("_"):
                    continue
                try:
                    cls = load_plugin_file(path)
                except PluginError as exc:
                    self.failures.append(PluginFailure(exc.file, exc.reason))
                    continue
                if cls.type in self.strategies:
                    self.failures.append(
                        PluginFailure(str(path), f"type {cls.type!r} is already defined by {self.files[cls.type]}")
                    )
                    continue
                self.strategies[cls.type] = cls
                self.files[cls.type] = str(path)
        return self

    def get(self, strategy_type: str) -> type[Strategy]:
        """The class of ``strategy_type``. Raises UnknownStrategyError listing the known types."""
        cls = self.strategies.get(strategy_type)
        if cls is None:
            raise UnknownStrategyError(strategy_type, list(self.strategies))
        return cls

    def catalog(self) -> list[dict[str, Any]]:
        """Metadata of every loaded plugin, sorted by type (see ``Strategy.metadata``)."""
        return [self.strategies[t].metadata() | {"file": self.files[t]} for t in sorted(self.strategies)]

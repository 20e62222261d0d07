"""Strategy plugin discovery and validation: the shipped catalog, extra folders (argument and
``TRADE_STRATEGY_PATHS``) holding good and broken plugins, parameter validation and unknown types."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.errors import ParameterError, UnknownStrategyError
from engine.strategy.registry import PluginFailure, StrategyRegistry, default_folder

SHIPPED = ("sma_crossover", "ema_crossover")
ENTRY_KEYS = {
    "type", "display_name", "version", "description", "author", "compatibility", "parameters_schema", "file",
}

GOOD = '''
from engine.strategy.base import Field, Strategy, StrategyParams


class {cls}Params(StrategyParams):
    period: int = Field(5, ge=1, description="lookback, bars")


class {cls}(Strategy):
    type = "{type}"
    display_name = "{cls}"
    description = "a test plugin"
    version = "{version}"
    author = "tests"
    Params = {cls}Params

    def on_bar(self, bar):
        pass
'''


def plugin(cls: str = "Good", type: str = "good_plugin", version: str = "1.0.0") -> str:
    return GOOD.format(cls=cls, type=type, version=version)


def write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source).lstrip())
    return path


@pytest.fixture(autouse=True)
def _no_env_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRADE_STRATEGY_PATHS", raising=False)


@pytest.fixture(scope="module")
def shipped() -> StrategyRegistry:
    return StrategyRegistry().discover()


@pytest.fixture
def broken_folder(tmp_path: Path) -> dict[str, Path]:
    """A folder with one good plugin and one of each kind of broken plugin; returns name → path."""
    folder = tmp_path / "plugins"
    no_version = plugin(cls="NoVersion", type="no_version").replace('    version = "1.0.0"\n', "")
    no_callback = plugin(cls="NoCb", type="no_callback").replace("def on_bar(self, bar):", "def f(self):")
    second = plugin(cls="Second", type="second_one").split("\n", 2)[2]  # without the import line
    files = {
        "good": write(folder, "good.py", plugin()),
        "syntax": write(folder, "syntax_error.py", "def broken(:\n    pass\n"),
        "raises": write(folder, "raises.py", "x = 1\nraise RuntimeError('boom at import')\n"),
        "two": write(folder, "two_classes.py", plugin(cls="First", type="first_one") + second),
        "no_version": write(folder, "no_version.py", no_version),
        "bad_version": write(folder, "bad_version.py", plugin(cls="BadV", type="bad_version", version="v1")),
        "bad_type": write(folder, "bad_type.py", plugin(cls="BadType", type="Bad-Type")),
        "no_callback": write(folder, "no_callback.py", no_callback),
        "duplicate": write(folder, "duplicate.py", plugin(cls="Dup", type="sma_crossover")),
        "ignored": write(folder, "_helper.py", "raise RuntimeError('_ files must not be imported')\n"),
    }
    return files


def failure_for(registry: StrategyRegistry, path: Path) -> PluginFailure:
    matches = [f for f in registry.failures if Path(f.file) == path]
    assert len(matches) == 1, f"expected one failure for {path}, got {registry.failures}"
    return matches[0]


# ---------------------------------------------------------------------- shipped catalog
def test_default_folder_is_the_project_strategies_folder() -> None:
    assert default_folder() == Path(__file__).resolve().parents[1] / "strategies"


def test_shipped_plugins_are_discovered_without_failures(shipped: StrategyRegistry) -> None:
    assert shipped.failures == []
    for name in SHIPPED:
        assert name in shipped.strategies
        assert Path(shipped.files[name]) == default_folder() / f"{name}.py"
    # every .py file of strategies/ (not starting with _) is exactly one plugin
    files = sorted(p for p in default_folder().glob("*.py") if not p.name.startswith("_"))
    assert sorted(Path(f) for f in shipped.files.values()) == files


def test_catalog_entries_are_complete(shipped: StrategyRegistry) -> None:
    catalog = shipped.catalog()
    assert [e["type"] for e in catalog] == sorted(shipped.strategies)
    for entry in catalog:
        assert entry.keys() >= ENTRY_KEYS, entry["type"]
        for key in ("type", "display_name", "version", "description", "author", "file"):
            assert isinstance(entry[key], str) and entry[key].strip(), (entry["type"], key)
        assert Path(entry["file"]).is_file()
        compat = entry["compatibility"]
        assert set(compat["market_types"]) <= {"spot", "perpetual"} and compat["market_types"]
        assert isinstance(compat["timeframes"], list)
        schema = entry["parameters_schema"]
        assert schema["type"] == "object"
        assert isinstance(schema["properties"], dict)
    by_type = {e["type"]: e for e in catalog}
    for name in SHIPPED:
        props = by_type[name]["parameters_schema"]["properties"]
        assert props["fast"]["type"] == "integer" and props["fast"]["minimum"] == 1
        assert props["slow"]["type"] == "integer"
        assert {"size_pct", "allow_short", "stop_loss_pct", "take_profit_pct"} <= props.keys()


def test_catalog_is_json_serialisable(shipped: StrategyRegistry) -> None:
    import orjson

    assert orjson.loads(orjson.dumps(shipped.catalog())) == shipped.catalog()


# ---------------------------------------------------------------------- extra folders
EXPECTED_REASONS = {
    "syntax": ("syntax error", "line 1"),
    "raises": ("import failed", "RuntimeError", "boom at import", "line 2"),
    "two": ("exactly one Strategy subclass", "First", "Second"),
    "no_version": ("'version'", "non-empty string"),
    "bad_version": ("'version'", "'v1'"),
    "bad_type": ("'type'", "'Bad-Type'"),
    "no_callback": ("on_bar or on_tick",),
    "duplicate": ("'sma_crossover' is already defined", "sma_crossover.py"),
}


def check_broken_folder(registry: StrategyRegistry, files: dict[str, Path]) -> None:
    # the good plugin and the shipped ones still load
    assert "good_plugin" in registry.strategies
    assert Path(registry.files["good_plugin"]) == files["good"]
    for name in SHIPPED:
        assert Path(registry.files[name]) == default_folder() / f"{name}.py"
    # each broken file is reported once with its path and what is wrong
    for key, fragments in EXPECTED_REASONS.items():
        failure = failure_for(registry, files[key])
        for fragment in fragments:
            assert fragment in failure.reason, (key, failure.reason)
    assert len(registry.failures) == len(EXPECTED_REASONS)
    # nothing from a broken file got registered
    for name in ("first_one", "second_one", "no_version", "bad_version", "no_callback"):
        assert name not in registry.strategies
    assert all(t == t.lower() for t in registry.strategies)
    # files starting with _ are not imported at all
    assert all(Path(f.file) != files["ignored"] for f in registry.failures)


def test_extra_folder_argument_reports_each_broken_plugin(broken_folder: dict[str, Path]) -> None:
    registry = StrategyRegistry([broken_folder["good"].parent]).discover()
    check_broken_folder(registry, broken_folder)


def test_env_var_folder_reports_each_broken_plugin(
    broken_folder: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADE_STRATEGY_PATHS", str(broken_folder["good"].parent))
    registry = StrategyRegistry().discover()
    check_broken_folder(registry, broken_folder)


def test_env_var_holds_several_folders_and_arguments_add_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    a = write(tmp_path / "a", "alpha.py", plugin(cls="Alpha", type="alpha_plugin"))
    b = write(tmp_path / "b", "beta.py", plugin(cls="Beta", type="beta_plugin"))
    c = write(tmp_path / "c", "gamma.py", plugin(cls="Gamma", type="gamma_plugin"))
    monkeypatch.setenv("TRADE_STRATEGY_PATHS", os.pathsep.join([str(a.parent), str(b.parent)]))
    registry = StrategyRegistry([c.parent]).discover()
    assert registry.failures == []
    assert {Path(registry.files[t]) for t in ("alpha_plugin", "beta_plugin", "gamma_plugin")} == {a, b, c}


def test_folder_given_twice_is_loaded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write(tmp_path / "p", "good.py", plugin())
    monkeypatch.setenv("TRADE_STRATEGY_PATHS", str(good.parent))
    registry = StrategyRegistry([good.parent, str(good.parent) + "/."]).discover()
    assert registry.failures == []
    assert Path(registry.files["good_plugin"]) == good


def test_duplicate_type_across_extra_folders_keeps_the_first(tmp_path: Path) -> None:
    first = write(tmp_path / "one", "same.py", plugin(cls="One", type="same_type"))
    second = write(tmp_path / "two", "same.py", plugin(cls="Two", type="same_type"))
    registry = StrategyRegistry([first.parent, second.parent]).discover()
    assert registry.strategies["same_type"].__name__ == "One"
    failure = failure_for(registry, second)
    assert "'same_type' is already defined" in failure.reason and str(first) in failure.reason


def test_missing_folder_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"
    registry = StrategyRegistry([missing]).discover()
    failure = failure_for(registry, missing)
    assert "does not exist" in failure.reason
    for name in SHIPPED:  # the others still load
        assert name in registry.strategies


def test_missing_env_folder_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "gone"
    monkeypatch.setenv("TRADE_STRATEGY_PATHS", str(missing))
    registry = StrategyRegistry().discover()
    assert "does not exist" in failure_for(registry, missing).reason


def test_only_explicit_folders_without_default(tmp_path: Path) -> None:
    good = write(tmp_path / "p", "good.py", plugin())
    registry = StrategyRegistry([good.parent], include_default=False).discover()
    assert sorted(registry.strategies) == ["good_plugin"]
    assert registry.failures == []


def test_unsupported_params_model_is_reported(tmp_path: Path) -> None:
    source = plugin(cls="Weird", type="weird_params").replace(
        'period: int = Field(5, ge=1, description="lookback, bars")', "callback: type = int"
    )
    path = write(tmp_path / "p", "weird.py", source)
    registry = StrategyRegistry([path.parent]).discover()
    assert "weird_params" not in registry.strategies
    assert "parameters schema cannot be generated" in failure_for(registry, path).reason


def test_params_not_derived_from_strategy_params_is_reported(tmp_path: Path) -> None:
    source = plugin(cls="Plain", type="plain_params").replace("Params = PlainParams", "Params = dict")
    path = write(tmp_path / "p", "plain.py", source)
    registry = StrategyRegistry([path.parent]).discover()
    assert "'Params' must subclass StrategyParams" in failure_for(registry, path).reason


def test_on_tick_only_plugin_loads(tmp_path: Path) -> None:
    source = plugin(cls="Ticker", type="tick_only")
    source = source.replace("def on_bar(self, bar):", "def on_tick(self, tick):")
    path = write(tmp_path / "p", "ticker.py", source)
    registry = StrategyRegistry([path.parent]).discover()
    assert registry.failures == []
    assert "tick_only" in registry.strategies


def test_plugin_importing_the_crossover_template_counts_one_class(tmp_path: Path) -> None:
    source = '''
        from engine.strategy.crossover import MovingAverageCrossover


        class Mine(MovingAverageCrossover):
            type = "my_crossover"
            display_name = "Mine"
            description = "template subclass"
            version = "0.1"
            author = "tests"
            average = "ema"
    '''
    path = write(tmp_path / "p", "mine.py", source)
    registry = StrategyRegistry([path.parent]).discover()
    assert registry.failures == []
    assert registry.get("my_crossover").validate_params({}).model_dump()["fast"] == 10


def test_plugin_calling_sys_exit_at_import_is_reported(tmp_path: Path) -> None:
    good = write(tmp_path / "p", "good.py", plugin())
    bad = write(tmp_path / "p", "exits.py", "import sys\nsys.exit('bye')\n")
    registry = StrategyRegistry([good.parent]).discover()
    assert "good_plugin" in registry.strategies
    reason = failure_for(registry, bad).reason
    assert "import failed" in reason and "SystemExit" in reason and "bye" in reason


# ---------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name", SHIPPED)
def test_validate_params_defaults(shipped: StrategyRegistry, name: str) -> None:
    cls = shipped.get(name)
    params = cls.validate_params(None)
    assert params == cls.validate_params({})
    schema_props = cls.parameters_schema()["properties"]
    for field, value in params.model_dump().items():
        assert schema_props[field]["default"] == value
    assert params.fast < params.slow
    assert params.size_pct == 100.0 and params.allow_short is False


def test_validate_params_is_strict_like_the_published_schema(shipped: StrategyRegistry) -> None:
    cls = shipped.get("sma_crossover")
    params = cls.validate_params({"fast": 5, "slow": 20, "size_pct": 50})
    assert (params.fast, params.slow, params.size_pct) == (5, 20, 50.0)
    # the schema says integer: strings and booleans are not silently coerced
    for bad in ("5", True):
        with pytest.raises(ParameterError) as info:
            cls.validate_params({"fast": bad})
        assert info.value.field == "fast"
    with pytest.raises(Exception, match="frozen"):
        params.fast = 6  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "field", "fragments"),
    [
        ({"fast": "abc"}, "fast", ("valid integer",)),
        ({"fast": 1.5}, "fast", ("valid integer",)),
        ({"fast": 0}, "fast", ("greater than or equal to 1",)),
        ({"slow": 1}, "slow", ("greater than or equal to 2",)),
        ({"size_pct": 0}, "size_pct", ("greater than 0",)),
        ({"size_pct": 150}, "size_pct", ("less than or equal to 100",)),
        ({"stop_loss_pct": -1}, "stop_loss_pct", ("greater than or equal to 0",)),
        ({"bogus": 1}, "bogus", ("unknown parameter",)),
    ],
)
@pytest.mark.parametrize("name", SHIPPED)
def test_validate_params_rejects_a_field(
    shipped: StrategyRegistry, name: str, raw: dict[str, object], field: str, fragments: tuple[str, ...]
) -> None:
    with pytest.raises(ParameterError) as info:
        shipped.get(name).validate_params(raw)
    assert info.value.field == field
    assert f"'{field}'" in str(info.value)
    for fragment in fragments:
        assert fragment in info.value.rule
        assert fragment in str(info.value)


@pytest.mark.parametrize("raw", [{"fast": 30, "slow": 30}, {"fast": 40}, {"fast": 50, "slow": 20}])
def test_validate_params_cross_field_rule(shipped: StrategyRegistry, raw: dict[str, int]) -> None:
    with pytest.raises(ParameterError) as info:
        shipped.get("sma_crossover").validate_params(raw)
    fast, slow = raw["fast"], raw.get("slow", 30)
    assert f"fast ({fast}) must be smaller than slow ({slow})" in info.value.rule
    assert info.value.field  # names something (the model, since the rule spans two fields)


def test_validate_params_names_every_bad_field(shipped: StrategyRegistry) -> None:
    with pytest.raises(ParameterError) as info:
        shipped.get("sma_crossover").validate_params({"fast": "abc", "bogus": 1})
    assert set(info.value.field.split(", ")) == {"fast", "bogus"}
    assert "fast:" in info.value.rule and "bogus: unknown parameter" in info.value.rule


# ---------------------------------------------------------------------- unknown type
def test_get_unknown_type_lists_known_types(shipped: StrategyRegistry) -> None:
    with pytest.raises(UnknownStrategyError) as info:
        shipped.get("nope")
    err = info.value
    assert err.strategy_type == "nope"
    assert sorted(err.known) == sorted(shipped.strategies)
    message = str(err)
    assert "unknown strategy type 'nope'" in message
    for name in SHIPPED:
        assert name in message
    assert isinstance(err, KeyError) and not message.startswith('"')

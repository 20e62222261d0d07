"""Sweeps on Ray: configs, runs as Ray tasks, failures, reruns, determinism, the store, the CLI, cluster.yaml.

Ray is started once for the module (2 CPUs, the machine's) and shut down at the end; the sweeps reuse it.
The truth for every metric is :func:`engine.backtest.config.run_request` run directly in this process.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from actors.sweep_config import (
    Dimension,
    SweepConfig,
    build_dimension,
    load_sweep,
    read_config_file,
    run_key,
)
from engine.backtest.config import BacktestRequest, run_request
from engine.errors import ParameterError, StoreError
from engine.store import (
    SWEEP_FLOAT_METRICS,
    SWEEP_INT_METRICS,
    SWEEP_RUNS_SCHEMA,
    Store,
    StoreValueError,
    SweepRecord,
    open_store,
    sweep_run_row,
    sweep_runs_table,
)
from engine.strategy.registry import StrategyRegistry

ray = pytest.importorskip("ray")

DATA = Path("/work/shared/data")
GOOG = DATA / "backtestingpy_GOOG_daily_2004_2013.csv"
ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-9
#: Columns that legitimately differ between two executions of the same run.
VOLATILE = ["duration_s", "worker"]

BOOM_PLUGIN = '''
"""Test plugin: an SMA crossover that raises on its ``boom_after``-th bar (0 = never)."""

from engine.strategy import Compatibility
from engine.strategy.crossover import CrossoverParams, Field, MovingAverageCrossover


class BoomParams(CrossoverParams):
    boom_after: int = Field(0, ge=0, le=1_000_000, description="raise on this bar (count); 0 = never")


class BoomCrossover(MovingAverageCrossover):
    type = "boom_crossover"
    display_name = "Boom crossover"
    description = "SMA crossover that raises on a chosen bar, to test failure handling."
    version = "1.0.0"
    author = "tests"
    compatibility = Compatibility(market_types=("spot", "perpetual"))
    average = "sma"
    Params = BoomParams

    def on_bar(self, bar):
        self._seen = getattr(self, "_seen", 0) + 1
        if self.params.boom_after and self._seen >= self.params.boom_after:
            raise RuntimeError(f"boom on bar {self._seen}")
        super().on_bar(bar)
'''


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """One local Ray for the module (2 CPUs); sweeps reuse it instead of starting their own."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def registry() -> StrategyRegistry:
    return StrategyRegistry().discover()


def write_config(folder: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def goog_grid(folder: Path, name: str = "goog-grid", grid: str = "{fast: [5, 10], slow: [30, 60]}") -> Path:
    return write_config(
        folder,
        f"""
        name: {name}
        seed: 1
        backtest:
          strategy_type: sma_crossover
          data: {GOOG}
          params: {{size_pct: 50}}
          fee_bps: 2
        grid: {grid}
        """,
    )


def direct_metrics(registry: StrategyRegistry, base: dict[str, Any], params: dict[str, Any]) -> tuple[dict, str]:
    result = run_request(BacktestRequest.parse(base | {"params": params}), registry)
    return result.metrics, result.trade_hash


def stable(table: pa.Table) -> pa.Table:
    return table.drop_columns(VOLATILE)


def assert_runs_close(got: pa.Table, want: pa.Table) -> None:
    """Equal runs tables up to NUMERIC(38, 18) rounding of the metric columns."""
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        g, w = got[name].to_pylist(), want[name].to_pylist()
        if name in SWEEP_FLOAT_METRICS or name == "duration_s":
            for a, b in zip(g, w, strict=True):
                assert (a is None) == (b is None), name
                if a is not None:
                    assert a == pytest.approx(b, rel=1e-12, abs=TOL), name
        else:
            assert g == w, name


# ------------------------------------------------------------------------------- grid == direct runs


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_grid_sweep_equals_direct_backtests(
    ray_session: None, registry: StrategyRegistry, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    from actors.sweep import run_sweep

    db = request.getfixturevalue("duckdb_url" if backend == "duckdb" else "pg_schema_url")
    sweep = load_sweep(goog_grid(tmp_path), registry)
    outcome = run_sweep(sweep, db=db, workers=2, out=tmp_path / "out")

    runs = outcome.runs
    assert runs.schema == SWEEP_RUNS_SCHEMA
    assert runs.num_rows == 4 and outcome.executed == 4 and outcome.skipped == 0
    assert runs["seq"].to_pylist() == [0, 1, 2, 3]
    points = [(orjson.loads(p)["fast"], orjson.loads(p)["slow"]) for p in runs["params"].to_pylist()]
    assert points == [(5, 30), (5, 60), (10, 30), (10, 60)]  # cartesian product in config order
    assert runs["status"].to_pylist() == ["ok"] * 4

    assert sweep.base is not None
    for row in runs.to_pylist():
        params = orjson.loads(row["params"])
        metrics, trade_hash = direct_metrics(registry, sweep.base, params)
        assert row["trade_hash"] == trade_hash
        assert orjson.loads(row["metrics"]) == metrics
        for name in (*SWEEP_FLOAT_METRICS, *SWEEP_INT_METRICS):
            assert row[name] == metrics[name], name  # bit for bit: same code, same inputs
        assert row["run_key"] == run_key("backtest", params)
        assert row["duration_s"] > 0

    # stored: one row per run, equal to what came back from Ray (NUMERIC rounding aside)
    with open_store(db) as store:
        assert_runs_close(store.load_sweep_runs(sweep.sweep_id), runs)
        record = store.load_sweep(sweep.sweep_id)
    assert (record.status, record.runs_planned, record.runs_ok, record.runs_failed) == ("finished", 4, 4, 0)
    assert record.config["backtest"]["data"] == str(GOOG)

    # files: runs.parquet is the same table, best.json the highest Sharpe
    assert pq.read_table(tmp_path / "out" / "runs.parquet").equals(runs)
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    sharpes = runs["sharpe"].to_pylist()
    assert best["value"] == max(sharpes) and best["seq"] == sharpes.index(max(sharpes))
    info = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert info["sweep_id"] == sweep.sweep_id and info["ok"] == 4


# ------------------------------------------------------------------------------- failures and reruns


def boom_sweep(folder: Path, registry_dir: Path) -> Path:
    registry_dir.mkdir(exist_ok=True)
    (registry_dir / "boom_crossover.py").write_text(BOOM_PLUGIN, encoding="utf-8")
    return write_config(
        folder,
        f"""
        name: boom
        backtest:
          strategy_type: boom_crossover
          data: {GOOG}
        grid:
          fast: [10, 40]        # 40 >= slow: the cross-field rule rejects it
          slow: [30]
          boom_after: [0, 300]  # 300: the strategy raises inside the Ray task
        """,
    )


def test_failed_runs_are_recorded_and_rerun_skips_finished(ray_session: None, tmp_path: Path, duckdb_url: str) -> None:
    from actors.sweep import run_sweep

    plugins = tmp_path / "plugins"
    config = boom_sweep(tmp_path, plugins)
    registry = StrategyRegistry([plugins]).discover()
    sweep = load_sweep(config, registry)
    first = run_sweep(sweep, db=duckdb_url, workers=2, strategies_dirs=[str(plugins)])

    rows = {
        (orjson.loads(r["params"])["fast"], orjson.loads(r["params"])["boom_after"]): r for r in first.runs.to_pylist()
    }
    assert len(rows) == 4
    ok = rows[(10, 0)]
    assert ok["status"] == "ok" and ok["error"] is None and ok["trade_hash"]
    boom = rows[(10, 300)]
    assert boom["status"] == "failed"
    assert boom["error"].startswith("StrategyRuntimeError:") and "boom on bar 300" in boom["error"]
    assert boom["sharpe"] is None and boom["metrics"] is None and boom["trade_hash"] is None
    for boom_after in (0, 300):
        bad = rows[(40, boom_after)]
        assert bad["status"] == "failed"
        assert "fast (40) must be smaller than slow (30)" in bad["error"]
    # the two invalid points never became tasks; the valid ones did
    assert (first.executed, first.rejected, first.skipped) == (2, 2, 0)
    assert (first.record.runs_ok, first.record.runs_failed) == (1, 3)

    # rerun: the ok run is skipped, the failed task is tried again, the invalid points are rejected again
    again = run_sweep(load_sweep(config, registry), db=duckdb_url, workers=2, strategies_dirs=[str(plugins)])
    assert again.record.sweep_id == first.record.sweep_id
    assert (again.executed, again.rejected, again.skipped) == (1, 2, 1)
    assert_runs_close(stable(again.runs), stable(first.runs))
    with open_store(duckdb_url) as store:
        stored = {r["run_key"]: r for r in store.load_sweep_runs(sweep.sweep_id).to_pylist()}
        assert store.load_sweep(sweep.sweep_id).runs_ok == 1
    # the ok run was not run again: its stored row (wall time, worker) is the first sweep's
    assert stored[ok["run_key"]]["duration_s"] == pytest.approx(ok["duration_s"], abs=TOL)
    assert stored[ok["run_key"]]["worker"] == ok["worker"]

    # a third run of an unchanged, fully-ok sweep starts no task at all
    config_ok = write_config(
        tmp_path,
        f"""
        name: boom-ok
        backtest: {{strategy_type: boom_crossover, data: {GOOG}}}
        grid: {{fast: [10], slow: [30]}}
        """,
        name="ok.yaml",
    )
    run_sweep(load_sweep(config_ok, registry), db=duckdb_url, workers=2, strategies_dirs=[str(plugins)])
    third = run_sweep(load_sweep(config_ok, registry), db=duckdb_url, workers=2, strategies_dirs=[str(plugins)])
    assert (third.executed, third.skipped) == (0, 1)


# ------------------------------------------------------------------------------- determinism


RANDOM = """
name: {name}
seed: {seed}
backtest:
  strategy_type: sma_crossover
  data: {data}
random:
  samples: 4
  params:
    fast: {{low: 2, high: 25}}
    slow: {{low: 30, high: 120, step: 10}}
    size_pct: {{low: 10, high: 100}}
    allow_short:
"""

OPTUNA = """
name = "{name}"
seed = {seed}
[backtest]
strategy_type = "sma_crossover"
data = "{data}"
[optuna]
trials = 6
metric = "sharpe"
direction = "maximize"
batch_size = 2
[optuna.params]
fast = {{low = 2, high = 25}}
slow = {{low = 30, high = 120}}
"""


@pytest.mark.parametrize(("template", "ext"), [(RANDOM, "yaml"), (OPTUNA, "toml")], ids=["random", "optuna"])
def test_same_seed_same_runs_and_results(
    ray_session: None, registry: StrategyRegistry, tmp_path: Path, duckdb_url: str, template: str, ext: str
) -> None:
    from actors.sweep import run_sweep

    outcomes = []
    paths = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        paths.append(write_config(tmp_path, template.format(name=name, seed=seed, data=GOOG), name=f"{name}.{ext}"))
        outcomes.append(run_sweep(load_sweep(paths[-1], registry), db=duckdb_url, workers=2))
    a, b, c = (o.runs for o in outcomes)
    assert len({o.record.sweep_id for o in outcomes}) == 3  # different names: nothing is shared or skipped
    assert all(o.skipped == 0 for o in outcomes)
    assert a.num_rows >= 4
    # same seed: the same parameter draws, the same metrics and trade hashes, row for row
    assert stable(a).equals(stable(b))
    assert a["trade_hash"].to_pylist() == b["trade_hash"].to_pylist()
    # another seed draws other parameters
    assert a["params"].to_pylist() != c["params"].to_pylist()
    # a rerun asks the same draws / trials, finds them all stored and runs nothing
    rerun = run_sweep(load_sweep(paths[0], registry), db=duckdb_url, workers=2)
    assert (rerun.executed, rerun.skipped) == (0, a.num_rows)
    assert rerun.runs["params"].to_pylist() == a["params"].to_pylist()
    # every draw respects its range
    for row in a.to_pylist():
        p = orjson.loads(row["params"])
        assert 2 <= p["fast"] <= 25 and 30 <= p["slow"] <= 120
        assert isinstance(p["fast"], int) and isinstance(p["slow"], int)
        if ext == "yaml":
            assert p["slow"] % 10 == 0 and 10 <= p["size_pct"] <= 100 and p["allow_short"] in (False, True)


# ------------------------------------------------------------------------------- portfolios


def test_portfolio_sweep_records_a_failing_entry(ray_session: None, registry: StrategyRegistry, tmp_path: Path) -> None:
    pytest.importorskip("engine.portfolio.config")
    from actors.sweep import run_sweep

    def portfolio(name: str, bars: Path) -> Path:
        return write_config(
            tmp_path,
            f"""
            name: {name}
            capital: 100000
            datasets:
              daily: {{bars: {bars}}}
            strategies:
              - {{name: sma, type: sma_crossover, dataset: daily, params: {{fast: 10, slow: 30}}}}
            """,
            name=f"{name}.yaml",
        )

    good = portfolio("good", GOOG)
    missing = portfolio("missing", tmp_path / "no_such_bars.csv")
    config = write_config(
        tmp_path,
        f"name: books\nportfolios:\n  - {good.name}\n  - {missing.name}\n"
        f"  - {{path: {good.name}, overrides: {{capital: 50000}}}}\n",
    )
    outcome = run_sweep(load_sweep(config, registry), db=f"duckdb://{tmp_path}/s.duckdb", workers=2)
    rows = outcome.runs.to_pylist()
    assert [r["kind"] for r in rows] == ["portfolio"] * 3
    assert orjson.loads(rows[0]["params"]) == {"portfolio": str(good), "overrides": {}}
    assert rows[0]["status"] == "ok", rows[0]["error"]
    assert rows[0]["trade_hash"] and rows[0]["final_equity"] is not None
    assert rows[1]["status"] == "failed" and "no_such_bars.csv" in rows[1]["error"]
    assert rows[2]["status"] == "ok" and rows[2]["initial_cash"] == 50_000.0
    assert orjson.loads(rows[2]["params"])["overrides"] == {"capital": 50000}
    assert set(orjson.loads(rows[0]["strategy_metrics"])) == {"sma"}


# ------------------------------------------------------------------------------- config validation


BASE = "name: x\nbacktest: {strategy_type: sma_crossover, data: a.csv}\n"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("name: x\nbacktest: {strategy_type: sma_crossover, data: a.csv}\ngrid: {fastt: [1]}\n", "grid.fastt"),
        ("name: x\nbacktest: {strategy_type: nope, data: a.csv}\ngrid: {fast: [1]}\n", "backtest.strategy_type"),
        (
            "name: x\nbacktest: {strategy_type: sma_crossover, data: a.csv, cash: -5}\ngrid: {fast: [1]}\n",
            "backtest.cash",
        ),
        ("name: x\nbacktest: {strategy_type: sma_crossover, data: a.csv}\ngrid: {fast: []}\n", "grid.fast"),
        ("name: x\nbacktest: {strategy_type: sma_crossover, data: a.csv}\n", "grid"),
        ("name: x\nbacktest: {strategy_type: sma_crossover, data: a.csv}\ngrid: {fast: [1]}\nextra: 1\n", "extra"),
        ("name: 'bad name'\nbacktest: {strategy_type: sma_crossover, data: a.csv}\ngrid: {fast: [1]}\n", "name"),
        (f"{BASE}random: {{samples: 2, params: {{fast: {{low: 0}}}}}}\n", "random.params.fast.low"),
        (f"{BASE}random: {{samples: 2, params: {{fast: {{lo: 1}}}}}}\n", "random.params.fast.lo"),
        (
            "name: x\nbacktest: {strategy_type: sma_crossover, data: a.csv}\nrandom: {samples: 0, params: [fast]}\n",
            "random.samples",
        ),
        (f"{BASE}optuna: {{trials: 2, metric: sharp, params: [fast]}}\n", "optuna.metric"),
        (
            "name: x\nbacktest: {strategy_type: sma_crossover, data: a.csv}\n"
            "optuna: {trials: 2, params: {fast: {low: 9, high: 3}}}\n",
            "optuna.params.fast.low",
        ),
        ("name: x\nportfolios: [missing.yaml]\n", "portfolios.0"),
        ("name: x\nportfolios: [a.yaml]\ngrid: {fast: [1]}\n", "grid"),
    ],
)
def test_config_errors_name_the_field(registry: StrategyRegistry, tmp_path: Path, text: str, field: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ParameterError) as info:
        load_sweep(path, registry)
    assert info.value.field == field, str(info.value)


def test_config_file_errors(tmp_path: Path) -> None:
    for name, text, match in (
        ("a.json", "{}", "unsupported extension"),
        ("b.yaml", "name: [unclosed\n", "invalid YAML"),
        ("c.toml", "name = \n", "invalid TOML"),
        ("d.yaml", "- a\n- b\n", "top level must be a mapping"),
    ):
        (tmp_path / name).write_text(text)
        with pytest.raises(ParameterError, match=match) as info:
            read_config_file(tmp_path / name)
        assert info.value.field == "config"
    with pytest.raises(ParameterError, match="file not found"):
        read_config_file(tmp_path / "none.yaml")


def test_same_config_same_sweep_id_relative_paths(registry: StrategyRegistry, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    text = "name: s\nbacktest: {strategy_type: sma_crossover, data: ../goog.csv, cash: 5000}\ngrid: {fast: [3, 4]}\n"
    one = load_sweep(write_config(tmp_path / "d", text, "a.yaml"), registry)
    two = load_sweep(
        write_config(
            tmp_path / "d",
            'name = "s"\n[backtest]\nstrategy_type = "sma_crossover"\ndata = "../goog.csv"\ncash = 5000.0\n'
            "[grid]\nfast = [3, 4]\n",
            "b.toml",
        ),
        registry,
    )
    assert one.base is not None and one.base["data"] == str(tmp_path / "d" / ".." / "goog.csv")
    assert one.sweep_id == two.sweep_id  # YAML or TOML, comments and layout do not matter
    assert [s.run_key for s in one.plan()] == [s.run_key for s in two.plan()]
    other = load_sweep(write_config(tmp_path / "d", text.replace("name: s", "name: t"), "c.yaml"), registry)
    assert other.sweep_id != one.sweep_id


def test_dimensions_from_schema_bounds(registry: StrategyRegistry) -> None:
    sma = registry.get("sma_crossover")
    rsi = registry.get("rsi_reversion")
    assert build_dimension("f", "fast", None, sma) == Dimension("fast", "int", 1.0, 10_000.0)
    size = build_dimension("f", "size_pct", None, sma)  # exclusiveMinimum 0 → the next float above 0
    assert size.kind == "float" and size.low == np.nextafter(0.0, 1.0) and size.high == 100.0
    oversold = build_dimension("f", "oversold", None, rsi)  # both bounds exclusive
    assert 0.0 < oversold.low < 1e-300 and oversold.high == np.nextafter(100.0, 0.0)
    assert build_dimension("f", "allow_short", None, sma).choices == (False, True)
    config = SweepConfig.parse({"name": "x", "backtest": {}, "random": {"samples": 1, "params": {"fast": {"low": 2}}}})
    assert config.random is not None
    fast = build_dimension("f", "fast", config.random.params["fast"], sma)
    assert (fast.low, fast.high) == (2.0, 10_000.0)
    rng = np.random.default_rng(0)
    draws = [Dimension("x", "float", 1.0, 2.0, step=0.25).draw(rng) for _ in range(200)]
    assert set(draws) <= {1.0, 1.25, 1.5, 1.75, 2.0} and len(set(draws)) == 5
    logs = [Dimension("x", "int", 1.0, 1000.0, log=True).draw(rng) for _ in range(200)]
    assert all(isinstance(v, int) and 1 <= v <= 1000 for v in logs)
    assert sum(v < 32 for v in logs) > 60  # log-uniform: half the mass below sqrt(1000)


# ------------------------------------------------------------------------------- the store


def _rows() -> list[dict[str, Any]]:
    metrics = {name: 1.0 + i / 7 for i, name in enumerate(SWEEP_FLOAT_METRICS)}
    metrics |= {name: 10 + i for i, name in enumerate(SWEEP_INT_METRICS)}
    metrics |= {"profit_factor": None, "periods_per_year": 252.0, "start_ts_ns": 1_095_292_800_000_000_000}
    return [
        sweep_run_row(
            seq=0,
            run_key="k0",
            kind="backtest",
            params={"slow": 30, "fast": 10, "nested": {"b": [1, 2.5, None], "a": "é"}},
            status="ok",
            metrics=metrics,
            trade_hash="ab" * 32,
            duration_s=1.25,
            worker="host:1",
        ),
        sweep_run_row(
            seq=1,
            run_key="k1",
            kind="portfolio",
            params={"portfolio": "/p.yaml", "overrides": {}},
            status="ok",
            metrics={"final_equity": 123_456.789012345678, "sharpe": -0.000123456789, "trades": 0},
            strategy_metrics={"trend": {"sharpe": 1.5}, "carry": {"sharpe": None}},
            trade_hash="",
            duration_s=0.5,
        ),
        sweep_run_row(
            seq=2,
            run_key="k2",
            kind="backtest",
            params={"fast": 40, "slow": 30},
            status="failed",
            error="ParameterError: parameter 'params': fast (40) must be smaller than slow (30)\n  \"quoted\", line 2",
            duration_s=0.0,
        ),
    ]


def _record(**overrides: Any) -> SweepRecord:
    fields: dict[str, Any] = {
        "sweep_id": "f" * 32,
        "name": "rt",
        "kind": "backtest",
        "method": "grid",
        "seed": 2**32 - 1,
        "config": {"name": "rt", "grid": {"fast": [10, 40]}, "backtest": {"cash": 1e5}},
        "runs_planned": 3,
    }
    return SweepRecord(**(fields | overrides))


def test_store_round_trip(store: Store) -> None:
    store.migrate()
    table = sweep_runs_table(_rows())
    saved = store.save_sweep(_record())
    assert saved.status == "running" and saved.created_at is not None and saved.created_at.tzinfo is not None
    assert store.save_sweep_runs(saved.sweep_id, table) == 3
    loaded = store.load_sweep_runs(saved.sweep_id)
    assert_runs_close(loaded, table)
    assert loaded["final_equity"][1].as_py() == pytest.approx(123_456.789012345678, abs=TOL)
    assert orjson.loads(loaded["params"][0].as_py())["nested"] == {"a": "é", "b": [1, 2.5, None]}
    assert store.load_sweep_runs(saved.sweep_id, status="failed")["run_key"].to_pylist() == ["k2"]
    assert store.load_sweep_runs("unknown").num_rows == 0

    # upsert: a rerun replaces the failed row, the others stay
    fixed = sweep_run_row(
        seq=2, run_key="k2", kind="backtest", params={"fast": 20, "slow": 30}, status="ok",
        metrics={"sharpe": 2.0}, trade_hash="cd", duration_s=3.0,
    )  # fmt: skip
    assert store.save_sweep_runs(saved.sweep_id, sweep_runs_table([fixed])) == 1
    record = store.finish_sweep(saved.sweep_id)
    assert (record.status, record.runs_ok, record.runs_failed, record.runs_planned) == ("finished", 3, 0, 3)
    assert record.config == _record().config and record.seed == 2**32 - 1
    assert store.load_sweep_runs(saved.sweep_id)["status"].to_pylist() == ["ok", "ok", "ok"]
    again = store.save_sweep(_record())  # reopening the same sweep keeps its runs and created_at
    assert again.status == "running" and again.created_at == saved.created_at
    assert [s.sweep_id for s in store.list_sweeps()] == [saved.sweep_id]


def test_store_rejects_bad_runs_and_writes_nothing(store: Store) -> None:
    with pytest.raises(StoreError, match="tradectl db migrate"):
        store.load_sweep_runs("x")
    store.migrate()
    sweep_id = store.save_sweep(_record()).sweep_id
    good = _rows()
    cases: list[tuple[dict[str, Any], str]] = [
        (good[0] | {"sharpe": math.inf}, r"sweep_runs\.sharpe: row 1 is inf"),
        (good[0] | {"final_equity": 1e21}, r"sweep_runs\.final_equity: row 1 .* beyond NUMERIC"),
        (good[0] | {"status": "done"}, r"sweep_runs\.status: row 1"),
        (good[0] | {"metrics": None}, r"sweep_runs\.metrics: row 1 is an ok run without metrics"),
        (good[2] | {"run_key": "k9", "error": None}, r"sweep_runs\.error: row 1 is a failed run without an error"),
        (good[0] | {"params": "{not json"}, r"sweep_runs\.params: row 1 is not valid JSON"),
        (good[0] | {"run_key": "k1"}, r"sweep_runs\.run_key: values must be unique"),
        (good[0] | {"duration_s": -1.0}, r"sweep_runs\.duration_s: row 1 is -1"),
    ]
    for bad, match in cases:
        with pytest.raises(StoreValueError, match=match):
            store.save_sweep_runs(sweep_id, sweep_runs_table([good[1], bad]))
    assert store.load_sweep_runs(sweep_id).num_rows == 0
    with pytest.raises(StoreValueError, match=r"sweep_runs\.worker: column is missing"):
        store.save_sweep_runs(sweep_id, sweep_runs_table(good).drop_columns(["worker"]))
    with pytest.raises(StoreError, match="no sweep with sweep_id 'nope'"):
        store.save_sweep_runs("nope", sweep_runs_table(good))
    with pytest.raises(StoreValueError, match=r"sweeps\.method"):
        store.save_sweep(_record(sweep_id="g" * 32, method="bayes"))
    with pytest.raises(StoreError, match="no sweep"):
        store.finish_sweep("nope")
    assert [s.sweep_id for s in store.list_sweeps()] == [sweep_id]


# ------------------------------------------------------------------------------- the CLI


def test_cli_sweep_json_and_bad_config(ray_session: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from actors.cli import main

    db = tmp_path / "cli.duckdb"
    config = goog_grid(tmp_path, name="cli", grid="{fast: [10], slow: [30, 50]}")
    argv = ["sweep", str(config), "--db", str(db), "--workers", "2", "--json", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["runs"], summary["ok"], summary["executed"], summary["skipped"]) == (2, 2, 2, 0)
    assert (tmp_path / "o" / "runs.parquet").is_file()
    assert main(argv) == 0  # a rerun does nothing
    assert json.loads(capsys.readouterr().out)["skipped"] == 2

    bad = write_config(tmp_path, "name: x\nbacktest: {strategy_type: sma_crossover, data: a.csv}\ngrid: {fastt: [1]}\n")
    fresh = tmp_path / "fresh.duckdb"
    assert main(["sweep", str(bad), "--db", str(fresh)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: parameter 'grid.fastt': unknown parameter of sma_crossover")
    assert len(err.strip().splitlines()) == 1
    assert not fresh.exists()  # nothing stored
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(config), "--workers", "0"])
    assert exit_info.value.code == 2
    assert "argument --workers: must be at least 1" in capsys.readouterr().err


def test_cli_without_ray_for_other_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code = "import sys, actors.cli; assert 'ray' not in sys.modules, 'actors.cli imported ray'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    from actors.cli import main as actors_main
    from engine.cli import main as engine_main

    argv = ["backtest", "sma_crossover", "--data", str(GOOG), "--no-store", "--json", "--param", "fast=10"]
    assert actors_main(argv) == 0
    via_actors = json.loads(capsys.readouterr().out)
    assert engine_main(argv) == 0
    assert json.loads(capsys.readouterr().out) == via_actors
    assert actors_main(["backtest", "nope", "--data", str(GOOG)]) == 2


# ------------------------------------------------------------------------------- cluster.yaml


def test_cluster_yaml_is_a_valid_ray_cluster_config() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "auth", "available_node_types", "head_node_type", "setup_commands"):
        assert key in config, key
    assert config["head_node_type"] in config["available_node_types"]
    assert config["provider"]["type"] == "aws"
    assert any("pip install" in c and "-e" in c for c in config["setup_commands"])
    mounts = config["file_mounts"]
    assert "." in mounts.values() and any("data" in remote for remote in mounts)
    for node in config["available_node_types"].values():
        assert "node_config" in node and "resources" in node
    jsonschema = pytest.importorskip("jsonschema")
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    if not schema_path.is_file():
        pytest.skip("this Ray does not ship ray-schema.json")
    jsonschema.validate(config, json.loads(schema_path.read_text()))

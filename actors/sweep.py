"""Sweeps: many backtests (or portfolio backtests) as Ray tasks, one task per run.

:func:`run_sweep` takes a resolved :class:`~actors.sweep_config.Sweep` and

1. saves (or re-opens) the sweep's row in the store and loads the runs it already finished "ok"
   (same name + same config → same ``sweep_id``; same kind + params → same ``run_key``): those are
   not run again;
2. starts a local Ray instance (``num_cpus=workers``, no dashboard) or connects to a cluster
   (``address``), and puts the shared base request in the object store once;
3. submits one ``@ray.remote(num_cpus=1)`` task per remaining run, at most ``workers`` in flight
   (optuna sweeps: ask a batch of trials, run it, tell the results, repeat);
4. records every result (a one-row Arrow table with
   :data:`~engine.store.sweeps.SWEEP_RUNS_SCHEMA`) in the store in batches, as it arrives, so an
   interrupted sweep resumes where it stopped; a run that raises, or whose parameters are invalid,
   is recorded as "failed" with its error and the sweep goes on;
5. writes ``runs.parquet`` (every run of the plan, ordered by ``seq``), ``best.json`` and
   ``sweep.json`` into ``out`` when given.

Data: each task loads its own bars through :func:`engine.backtest.config.run_request` (the validated
edge, so a sweep's run equals ``tradectl backtest`` with the same inputs bit for bit); the load is
about 10–20 % of a heavy run (``bench/bench_sweep.py`` prints it). What is shared through the object
store is the base request.

This module imports Ray; :mod:`actors.cli` imports it only for ``tradectl sweep``.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from actors.sweep_config import Dimension, RunSpec, Sweep
from engine.backtest.config import BacktestRequest, run_request
from engine.errors import EngineError, ParameterError
from engine.store import Store, SweepRecord, open_store, sweep_run_row, sweep_runs_table
from engine.store.sweeps import SWEEP_RUNS_SCHEMA, empty_sweep_runs
from engine.strategy.registry import StrategyRegistry

#: Buffered results are written to the store at least this often (seconds) ...
FLUSH_INTERVAL_S = 2.0
#: ... or as soon as this many rows are waiting.
FLUSH_ROWS = 64
#: Longest error text kept per failed run (characters; the end of a traceback is kept).
MAX_ERROR_CHARS = 4000

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------ the task

_REGISTRIES: dict[tuple[str, ...], StrategyRegistry] = {}


def _registry(strategies_dirs: Sequence[str]) -> StrategyRegistry:
    """The strategy registry of this process (discovered once per worker and folder list)."""
    key = tuple(strategies_dirs)
    registry = _REGISTRIES.get(key)
    if registry is None:
        registry = StrategyRegistry(list(key) or None).discover()
        _REGISTRIES[key] = registry
    return registry


def error_text(exc: BaseException) -> str:
    """One failed run's error: ``Type: message`` for engine errors (which name the field and rule),
    plus the traceback's tail for anything unexpected."""
    head = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, EngineError):
        return head
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    text = f"{head}\n{tb}"
    return text if len(text) <= MAX_ERROR_CHARS else head + "\n…" + tb[-(MAX_ERROR_CHARS - len(head) - 2) :]


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _failed_row(spec: RunSpec, error: str, duration_s: float = 0.0, worker: str | None = None) -> dict[str, Any]:
    return sweep_run_row(
        seq=spec.seq,
        run_key=spec.run_key,
        kind=spec.kind,
        params=spec.params,
        status="failed",
        error=error,
        duration_s=duration_s,
        worker=worker,
    )


def _run_portfolio(spec: RunSpec, strategies_dirs: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    try:
        from engine.portfolio.config import run_portfolio_file
    except ImportError as exc:
        raise RuntimeError(f"portfolio backtests are not available in this installation ({exc})") from None
    overrides = spec.params.get("overrides") or None
    kwargs: dict[str, Any] = {}
    if "registry" in inspect.signature(run_portfolio_file).parameters:  # reuse this worker's plugin registry
        kwargs["registry"] = _registry(strategies_dirs)
    result = run_portfolio_file(spec.params["portfolio"], overrides, **kwargs)
    strategy_metrics = getattr(result, "strategy_metrics", None)
    return dict(result.metrics), (dict(strategy_metrics) if strategy_metrics is not None else None), result.trade_hash


def execute_run(spec: RunSpec, base: Mapping[str, Any] | None, strategies_dirs: Sequence[str] = ()) -> pa.Table:
    """Run one planned run and return its one-row runs table (never raises for a run's own failure).

    ``base`` is the sweep's base BacktestRequest values (backtest runs); ``spec.params`` replaces its
    ``params``. Portfolio runs call ``engine.portfolio.config.run_portfolio_file(path, overrides)``.
    ``duration_s`` is the wall time of the run in seconds, measured in the worker.
    """
    worker = _worker_name()
    t0 = time.perf_counter()
    try:
        strategy_metrics: dict[str, Any] | None = None
        if spec.kind == "backtest":
            if base is None:
                raise ParameterError("backtest", "a backtest run needs the sweep's base request")
            request = BacktestRequest.parse(dict(base) | {"params": dict(spec.params)})
            result = run_request(request, _registry(strategies_dirs))
            metrics, trade_hash = dict(result.metrics), result.trade_hash
        elif spec.kind == "portfolio":
            metrics, strategy_metrics, trade_hash = _run_portfolio(spec, strategies_dirs)
        else:
            raise ParameterError("kind", f"unknown run kind {spec.kind!r}")
        row = sweep_run_row(
            seq=spec.seq,
            run_key=spec.run_key,
            kind=spec.kind,
            params=spec.params,
            status="ok",
            metrics=metrics,
            strategy_metrics=strategy_metrics,
            trade_hash=trade_hash,
            duration_s=time.perf_counter() - t0,
            worker=worker,
        )
    except Exception as exc:
        row = _failed_row(spec, error_text(exc), time.perf_counter() - t0, worker)
    return sweep_runs_table([row])


_remote_run = ray.remote(num_cpus=1)(execute_run)


def prevalidate(sweep: Sweep, spec: RunSpec, registry: StrategyRegistry) -> str | None:
    """The error a backtest run would fail with on its parameters, checked in the driver (no task is
    spent on it); None when the request and the strategy parameters are valid."""
    if spec.kind != "backtest":
        return None
    try:
        request = BacktestRequest.parse(sweep.request_for(spec.params))
        registry.get(request.strategy_type).validate_params(request.params)
    except EngineError as exc:
        return error_text(exc)
    return None


# ------------------------------------------------------------------------------------ Ray


def ensure_ray(address: str | None, workers: int | None) -> bool:
    """Connect to Ray: reuse an initialised one, else a cluster at ``address`` (e.g. ``auto``), else a
    new local instance with ``workers`` CPUs (default: all). Return True when this call started it.

    Raises:
        ParameterError: on field ``--address`` when the cluster cannot be reached.
    """
    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ParameterError("--address", f"cannot connect to Ray at {address!r}: {exc}") from None
        return True
    ray.init(
        address="local",
        num_cpus=workers or os.cpu_count() or 1,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    return True


def cluster_cpus() -> int:
    """CPUs of the connected Ray cluster (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# ------------------------------------------------------------------------------------ dispatch


class _Progress:
    """A tqdm bar of runs done (ok + failed + skipped) on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int, initial: int, desc: str) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="run", file=sys.stderr, dynamic_ncols=True)

    def update(self, ok: int, failed: int) -> None:
        if self._bar is not None:
            self._bar.set_postfix(ok=ok, failed=failed, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _Ray:
    """Starts (or connects to) Ray on first use, so a sweep with nothing left to run never pays for it,
    and puts the sweep's base request in the object store once."""

    def __init__(self, address: str | None, workers: int | None, base: Mapping[str, Any] | None) -> None:
        self.address = address
        self.workers = workers
        self.base = base
        self.started = False
        self.ready = False
        self._base_ref: Any = None

    def ensure(self) -> None:
        if not self.ready:
            self.started = ensure_ray(self.address, self.workers)
            self.ready = True

    def base_ref(self) -> Any:
        self.ensure()
        if self._base_ref is None and self.base is not None:
            self._base_ref = ray.put(dict(self.base))
        return self._base_ref

    def limit(self) -> int:
        """Runs in flight at once: ``workers``, else the CPUs of the cluster (or of this machine)."""
        if self.workers:
            return self.workers
        if self.address or ray.is_initialized():
            self.ensure()
            return cluster_cpus()
        return os.cpu_count() or 1

    def shutdown(self) -> None:
        if self.started:
            ray.shutdown()
            self.started = False


@dataclass
class _Dispatcher:
    """Submits tasks (at most ``limit`` in flight), collects their one-row tables and writes them to
    the store in batches."""

    store: Store
    sweep_id: str
    limit: int
    ray_handle: _Ray
    strategies_dirs: tuple[str, ...]
    progress: _Progress
    rows: dict[str, dict[str, Any]]
    in_flight: dict[Any, RunSpec] = field(default_factory=dict)
    buffer: list[pa.Table] = field(default_factory=list)
    executed: int = 0
    rejected: int = 0
    ok: int = 0
    failed: int = 0
    last_flush: float = field(default_factory=time.monotonic)

    def submit(self, spec: RunSpec) -> None:
        ref = _remote_run.remote(spec, self.ray_handle.base_ref(), self.strategies_dirs)
        self.in_flight[ref] = spec
        self.executed += 1

    def record(self, table: pa.Table) -> None:
        row = table.to_pylist()[0]
        self.rows[row["run_key"]] = row
        self.buffer.append(table)
        if row["status"] == "ok":
            self.ok += 1
        else:
            self.failed += 1
        self.progress.update(self.ok, self.failed)
        if len(self.buffer) >= FLUSH_ROWS or time.monotonic() - self.last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def reject(self, spec: RunSpec, error: str) -> None:
        self.rejected += 1
        self.record(sweep_runs_table([_failed_row(spec, error)]))

    def collect(self, timeout: float = FLUSH_INTERVAL_S) -> None:
        """Wait until at least one task finishes (or ``timeout`` s pass) and record what finished."""
        if not self.in_flight:
            return
        ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=timeout)
        if ready:  # take everything else that is already done as well
            more, _ = ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=0)
            ready = list(dict.fromkeys([*ready, *more]))
        for ref in ready:
            spec = self.in_flight.pop(ref)
            try:
                table = ray.get(ref)
            except Exception as exc:  # the worker died, the task was cancelled, ... : the run failed
                table = sweep_runs_table([_failed_row(spec, f"ray: {error_text(exc)}")])
            self.record(table)
        if not ready and time.monotonic() - self.last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def drain(self, queue: deque[RunSpec]) -> None:
        """Run every spec in ``queue`` (keeping ``limit`` tasks in flight) and wait for all of them."""
        while queue or self.in_flight:
            while queue and len(self.in_flight) < self.limit:
                self.submit(queue.popleft())
            self.collect()

    def flush(self) -> None:
        if self.buffer:
            table = pa.concat_tables(self.buffer)
            # the same run_key can come back twice only from optuna duplicates: keep the last
            if len(set(table["run_key"].to_pylist())) != table.num_rows:
                last = {k: i for i, k in enumerate(table["run_key"].to_pylist())}
                table = table.take(sorted(last.values()))
            self.store.save_sweep_runs(self.sweep_id, table)
            self.buffer.clear()
        self.last_flush = time.monotonic()

    def cancel(self) -> None:
        for ref in list(self.in_flight):
            try:
                ray.cancel(ref, force=True)
            except Exception as exc:  # pragma: no cover - best effort on shutdown
                log.debug("cancel failed: %s", exc)
        self.in_flight.clear()


def _run_plan(sweep: Sweep, d: _Dispatcher, registry: StrategyRegistry) -> None:
    queue: deque[RunSpec] = deque()
    for spec in sweep.plan():
        if spec.run_key in d.rows:
            continue
        error = prevalidate(sweep, spec, registry)
        if error is not None:
            d.reject(spec, error)
        else:
            queue.append(spec)
    d.drain(queue)


def _distribution(dim: Dimension) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dim.kind == "choice":
        return CategoricalDistribution(list(dim.choices))
    if dim.kind == "int":
        return IntDistribution(int(dim.low), int(dim.high), log=dim.log, step=int(dim.step or 1))
    return FloatDistribution(dim.low, dim.high, log=dim.log, step=dim.step)


def _objective(row: Mapping[str, Any], metric: str) -> float | None:
    if row.get("status") != "ok":
        return None
    value = row.get(metric)
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _run_optuna(sweep: Sweep, d: _Dispatcher, registry: StrategyRegistry, batch: int) -> None:
    import optuna
    from optuna.trial import TrialState

    spec_cfg = sweep.config.optuna
    assert spec_cfg is not None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=sweep.config.seed)
    study = optuna.create_study(direction=spec_cfg.direction, sampler=sampler, study_name=sweep.name)
    distributions = {dim.name: _distribution(dim) for dim in sweep.dimensions}
    fixed = dict((sweep.base or {}).get("params") or {})
    asked = 0
    while asked < spec_cfg.trials:
        n = min(batch, spec_cfg.trials - asked)
        trials = [study.ask(distributions) for _ in range(n)]
        specs = [RunSpec.make(t.number, "backtest", fixed | t.params) for t in trials]
        queue: deque[RunSpec] = deque()
        queued: set[str] = set()
        for spec in specs:
            if spec.run_key in d.rows or spec.run_key in queued:
                continue  # finished before (stored, or an earlier trial asked the same point)
            error = prevalidate(sweep, spec, registry)
            if error is not None:
                d.reject(spec, error)
            else:
                queue.append(spec)
                queued.add(spec.run_key)
        d.drain(queue)
        for trial, spec in zip(trials, specs, strict=True):
            value = _objective(d.rows[spec.run_key], spec_cfg.metric)
            if value is None:
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, value)
        asked += n


# ------------------------------------------------------------------------------------ results


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did.

    Attributes:
        record: the stored sweep (status "finished", counts of ok / failed runs).
        runs: every run of the plan (stored before or run now), ordered by ``seq``
            (:data:`~engine.store.sweeps.SWEEP_RUNS_SCHEMA`).
        executed: Ray tasks run by this call.
        skipped: runs already stored as "ok" and not run again.
        rejected: runs whose parameters failed validation in the driver (recorded as failed, no task).
        best: the best ok run by the sweep's rank metric (see :func:`best_run`), or None.
        wall_s: wall time of this call in seconds (Ray start-up included).
        out_dir: where runs.parquet, best.json and sweep.json were written, or None.
    """

    record: SweepRecord
    runs: pa.Table
    executed: int
    skipped: int
    rejected: int
    best: dict[str, Any] | None
    wall_s: float
    out_dir: Path | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (what ``tradectl sweep --json`` prints)."""
        statuses = self.runs["status"].to_pylist()
        return {
            "sweep_id": self.record.sweep_id,
            "name": self.record.name,
            "kind": self.record.kind,
            "method": self.record.method,
            "status": self.record.status,
            "runs": self.runs.num_rows,
            "ok": statuses.count("ok"),
            "failed": statuses.count("failed"),
            "executed": self.executed,
            "skipped": self.skipped,
            "rejected": self.rejected,
            "wall_s": round(self.wall_s, 3),
            "best": self.best,
            "out": str(self.out_dir) if self.out_dir is not None else None,
        }


def best_run(runs: pa.Table, metric: str, direction: str) -> dict[str, Any] | None:
    """The ok run with the highest (``maximize``) or lowest (``minimize``) ``metric``; ties go to the
    lowest ``seq``. Returned as ``{run_key, seq, params, metric, direction, value, metrics,
    strategy_metrics, trade_hash}``; None when no ok run has the metric."""
    best: dict[str, Any] | None = None
    sign = 1.0 if direction == "maximize" else -1.0
    for row in runs.to_pylist():
        value = _objective(row, metric)
        if value is None:
            continue
        if best is None or sign * value > sign * best["value"]:
            best = {"row": row, "value": value}
    if best is None:
        return None
    row = best["row"]
    return {
        "run_key": row["run_key"],
        "seq": row["seq"],
        "params": orjson.loads(row["params"]),
        "metric": metric,
        "direction": direction,
        "value": best["value"],
        "metrics": orjson.loads(row["metrics"]),
        "strategy_metrics": orjson.loads(row["strategy_metrics"]) if row["strategy_metrics"] else None,
        "trade_hash": row["trade_hash"],
    }


def write_outputs(outcome: SweepOutcome, sweep: Sweep, out: Path) -> None:
    """Write ``runs.parquet``, ``best.json`` (null when no run succeeded) and ``sweep.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(outcome.runs, out / "runs.parquet")
    option = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    (out / "best.json").write_bytes(orjson.dumps(outcome.best, option=option) + b"\n")
    info = outcome.summary() | {"config": sweep.normalized, "config_file": str(sweep.config_file or "")}
    info.pop("out", None)
    (out / "sweep.json").write_bytes(orjson.dumps(info, option=option) + b"\n")


def _table_from_rows(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    ordered = sorted(rows, key=lambda r: (r["seq"], r["run_key"]))
    return sweep_runs_table(ordered) if ordered else empty_sweep_runs()


def run_sweep(
    sweep: Sweep,
    *,
    db: str | None = None,
    workers: int | None = None,
    address: str | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    strategies_dirs: Sequence[str] = (),
    on_start: Callable[[SweepRecord, int], None] | None = None,
) -> SweepOutcome:
    """Run a sweep on Ray and store its runs (see the module docstring).

    Args:
        sweep: from :func:`actors.sweep_config.load_sweep` / :func:`~actors.sweep_config.resolve_sweep`.
        db: store URL (default: ``$TRADE_DB_URL``, else the DuckDB file under ``./data``); migrated.
        workers: runs in flight at once (and the CPUs of a local Ray instance); default: every CPU
            of the machine, or of the cluster with ``address``. Also the optuna batch size unless
            the config sets ``batch_size``.
        address: a Ray cluster address (``auto`` on a cluster node); None starts a local instance.
            An already initialised Ray (``ray.init`` by the caller) is used as it is.
        out: folder for ``runs.parquet``, ``best.json`` and ``sweep.json``; nothing is written without it.
        progress: show a tqdm bar of runs done on stderr.
        strategies_dirs: extra strategy plugin folders (they must exist on every node).
        on_start: called with the stored record and the number of runs skipped, before any task.

    Raises:
        ParameterError: ``workers`` < 1, ``out`` is a file, the cluster cannot be reached.
        StoreError: the store cannot be opened, migrated or written.
    """
    t0 = time.perf_counter()
    if workers is not None and workers < 1:
        raise ParameterError("--workers", f"must be at least 1, got {workers}")
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ParameterError("--out", f"{out_dir} exists and is not a directory")
    dirs = tuple(str(Path(p).resolve()) for p in strategies_dirs)
    registry = _registry(dirs)

    with open_store(db, migrate=True) as store:
        record = store.save_sweep(
            SweepRecord(
                sweep_id=sweep.sweep_id,
                name=sweep.name,
                kind=sweep.kind,
                method=sweep.method,
                seed=sweep.config.seed,
                config=sweep.normalized,
                runs_planned=sweep.planned_runs(),
            )
        )
        done = store.load_sweep_runs(sweep.sweep_id, status="ok")
        rows: dict[str, dict[str, Any]] = {r["run_key"]: r for r in done.to_pylist()}
        skipped_keys = set(rows)
        if on_start is not None:
            on_start(record, len(skipped_keys))

        handle = _Ray(address, workers, sweep.base)
        bar: _Progress | None = None
        dispatcher: _Dispatcher | None = None
        status = "interrupted"
        try:
            limit = handle.limit()
            bar = _Progress(progress, sweep.planned_runs(), len(skipped_keys), sweep.name)
            dispatcher = _Dispatcher(store, sweep.sweep_id, limit, handle, dirs, bar, rows)
            if sweep.config.optuna is not None:
                batch = sweep.config.optuna.batch_size or limit
                _run_optuna(sweep, dispatcher, registry, batch)
            else:
                _run_plan(sweep, dispatcher, registry)
            dispatcher.flush()
            status = "finished"
        finally:
            if bar is not None:
                bar.close()
            if dispatcher is not None and status != "finished":
                dispatcher.cancel()
                try:
                    dispatcher.flush()
                except Exception as exc:  # keep the original error
                    log.warning("could not store buffered runs of sweep %s: %s", sweep.sweep_id, exc)
            try:
                record = store.finish_sweep(sweep.sweep_id, status)
            except Exception as exc:
                if status == "finished":
                    raise
                log.warning("could not mark sweep %s as %s: %s", sweep.sweep_id, status, exc)
            handle.shutdown()

    assert dispatcher is not None  # set whenever the run finished
    runs = _table_from_rows(rows.values())
    rank = sweep.rank
    outcome = SweepOutcome(
        record=record,
        runs=runs.cast(SWEEP_RUNS_SCHEMA),
        executed=dispatcher.executed,
        skipped=len(skipped_keys),
        rejected=dispatcher.rejected,
        best=best_run(runs, rank.metric, rank.direction),
        wall_s=time.perf_counter() - t0,
        out_dir=out_dir,
    )
    if out_dir is not None:
        write_outputs(outcome, sweep, out_dir)
    return outcome

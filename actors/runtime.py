"""The supervisor and Python API of the live runtime: :class:`EngineRuntime`.

It starts Ray (a local cluster by default, or joins one with ``address``), creates the named actors
and offers every control operation, each scoped to a trading account:

* ``recorder`` — the store's one writer (:mod:`actors.recorder`);
* ``portfolio:<account>`` — allocation, pre-trade checks, equity, breakers (:mod:`actors.portfolio`);
* ``mux:<symbol>`` (or ``mux:<first>+<n>`` for a shard) — market data (:mod:`actors.mux`);
* ``bot:<account>/<name>`` — one per bot (:mod:`actors.bot`);
* ``m2m`` — per-strategy real-time M2M of every account: legs, 1-minute M2M candles, daily rows
  (:mod:`actors.m2m`).

Actors restart when they die (``max_restarts=-1``); a restarted bot rebuilds itself from its last
checkpoint in the store and asks the multiplexers for what it missed. On start, bots whose stored
status is ``running`` or ``paused`` are recreated and resume from their checkpoints
(:meth:`EngineRuntime.resume_account`). :meth:`EngineRuntime.shutdown` follows seed 004's order:
pause the strategies, stop the feeds, flush the recorder, close the store.

Accounts, strategy instances and bots are rows of the store (``accounts``, ``strategy_instances``,
``bots``); an operation naming a bot or instance of another account fails with
:class:`~engine.errors.ParameterError` as if it did not exist.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import ray

from actors.bot import BotActor
from actors.m2m import M2MAggregator
from actors.m2m import instance_row as _instance_row
from actors.mux import MarketDataMux
from actors.portfolio import PortfolioActor
from actors.recorder import Recorder
from engine.errors import ParameterError
from engine.live.bot import BotSpec
from engine.live.config import AccountConfig, RunConfig
from engine.portfolio.config import _to_ns
from engine.portfolio.manager import BreakerSettings
from engine.risk.limits import RiskLimits
from engine.store.url import resolve_store_url
from engine.strategy.registry import StrategyRegistry
from engine.timeframes import NS_PER_DAY

NAMESPACE = "tradengine"


class EngineRuntime:
    """See the module docstring.

    Args:
        db_url: the store (``--db``); None: ``$TRADE_DB_URL`` or ``./data/engine.duckdb``.
        address: a Ray cluster to join ("auto", "ray://host:10001"); None: start a local one.
        strategy_folders: extra plugin folders.
        dashboard: start the Ray dashboard with a local cluster (http://127.0.0.1:8265).
        num_cpus: CPUs of a local cluster (actors take none; the default is every core).
        m2m_checkpoint_s: seconds between the M2M aggregator's checkpoints (and candle writes).
    """

    def __init__(
        self,
        db_url: str | None = None,
        *,
        address: str | None = None,
        strategy_folders: list[str] | None = None,
        dashboard: bool = False,
        num_cpus: int | None = None,
        m2m_checkpoint_s: float = 1.0,
    ) -> None:
        target = resolve_store_url(db_url)
        if target.dialect == "duckdb" and not target.is_memory:
            path = Path(target.target).expanduser().resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db_url: str = str(path)
        else:
            self.db_url = target.target
        self.address = address
        self.strategy_folders = [str(Path(p).resolve()) for p in strategy_folders or []]
        self.registry = StrategyRegistry([Path(p) for p in self.strategy_folders]).discover()
        self.dashboard = dashboard
        self.num_cpus = num_cpus
        self.recorder: Any = None
        self.m2m: Any = None
        self.m2m_checkpoint_s = m2m_checkpoint_s
        self.portfolios: dict[str, Any] = {}
        self.muxes: dict[str, Any] = {}  # mux name -> handle
        self.mux_of: dict[str, str] = {}  # symbol -> mux name
        self.bots: dict[str, Any] = {}  # bot_id -> handle
        self.specs: dict[str, BotSpec] = {}
        self.accounts: dict[str, AccountConfig] = {}
        self.feed: dict[str, Any] | None = None
        self.feed_for: dict[str, dict[str, Any]] = {}  # symbol -> its own feed (extra_feeds)
        self._own_ray = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EngineRuntime:
        """Start (or join) Ray and the recorder (which migrates the store)."""
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False}
            if self.address:
                kwargs["address"] = self.address
            else:
                kwargs.update(include_dashboard=self.dashboard, num_cpus=self.num_cpus)
            ray.init(**kwargs)
            self._own_ray = True
        self.recorder = Recorder.options(name="recorder", get_if_exists=True).remote(self.db_url)
        ray.get(self.recorder.stats.remote())
        self.m2m = M2MAggregator.options(name="m2m", get_if_exists=True).remote(self.recorder, self.m2m_checkpoint_s)
        ray.get(self.m2m.stats.remote())
        return self

    def shutdown(self) -> dict[str, Any]:
        """Seed 004's order: pause the strategies (every bot stops taking market data and writes a
        final checkpoint), stop the feeds, flush the portfolios and the recorder, close the store, and
        stop Ray if this runtime started it. Bots keep their stored status (running, paused), so the
        next start resumes them. Returns the recorder's final counts."""
        if self.bots:
            ray.get([b.quiesce.remote() for b in self.bots.values()])
        if self.muxes:
            ray.get([m.stop.remote() for m in self.muxes.values()])
        if self.portfolios:
            ray.get([p.flush.remote() for p in self.portfolios.values()])
        if self.m2m is not None:
            ray.get(self.m2m.drain.remote())
        stats: dict[str, Any] = {}
        if self.recorder is not None:
            ray.get(self.recorder.close.remote())
            stats = ray.get(self.recorder.stats.remote())
            extra = [self.m2m] if self.m2m is not None else []
            for handle in [*self.bots.values(), *self.muxes.values(), *self.portfolios.values(), *extra, self.recorder]:
                ray.kill(handle, no_restart=True)
        self.m2m = None
        self.bots.clear()
        self.muxes.clear()
        self.portfolios.clear()
        self.recorder = None
        if self._own_ray:
            ray.shutdown()
            self._own_ray = False
        return stats

    # ------------------------------------------------------------------ feeds
    def set_feed(self, feed: dict[str, Any], bar_timeframe: str, shard_size: int = 1) -> None:
        """Where multiplexers get data: ``{"kind": "replay", "path", "start_ns", "end_ns", "speed",
        "batch_rows"}`` or ``{"kind": "live", "exchange"}``; bars of ``bar_timeframe``."""
        self.feed = dict(feed)
        self.bar_timeframe = bar_timeframe
        self.shard_size = shard_size

    def ensure_muxes(self, symbols: list[str], start_after_ns: int | None = None) -> None:
        """Create the multiplexers for ``symbols`` not served yet, ``shard_size`` symbols each."""
        if self.feed is None:
            raise ParameterError("feed", "no market-data feed configured (set_feed first)")
        new = sorted(s for s in set(symbols) if s not in self.mux_of)
        groups: dict[int, list[str]] = {}  # symbols of the same feed share shards
        for s in new:
            groups.setdefault(id(self.feed_for.get(s, self.feed)), []).append(s)
        shards = [g[i : i + self.shard_size] for g in groups.values() for i in range(0, len(g), self.shard_size)]
        for shard in shards:
            name = f"mux:{shard[0]}" if len(shard) == 1 else f"mux:{shard[0]}+{len(shard) - 1}"
            feed = dict(self.feed_for.get(shard[0], self.feed))
            if start_after_ns is not None:
                feed["start_after_ns"] = start_after_ns
            bars_from = "trades" if feed.get("stream") == "trades" else "bars"
            handle = MarketDataMux.options(name=name, get_if_exists=True).remote(
                name, shard, feed, bars_from=bars_from, bar_timeframe=self.bar_timeframe,
                max_rows=int(feed.get("batch_rows", 4096)), window_ms=float(feed.get("window_ms", 5.0)),
            )  # fmt: skip
            self.muxes[name] = handle
            for s in shard:
                self.mux_of[s] = name

    def start_feeds(self) -> None:
        """Start pumping every multiplexer (after the bots have subscribed)."""
        ray.get([m.start.remote() for m in self.muxes.values()])

    def wait_feeds(self, timeout_s: float | None = None) -> bool:
        """True once every feed has ended and its deliveries were processed."""
        return all(ray.get([m.wait_done.remote(timeout_s) for m in self.muxes.values()]))

    def mux_stats(self) -> list[dict[str, Any]]:
        return list(ray.get([m.stats.remote() for m in self.muxes.values()]))

    # ------------------------------------------------------------------ accounts
    def create_account(self, account: AccountConfig) -> None:
        """Store the account and start its portfolio actor (allocations from its bots)."""
        self.accounts[account.id] = account
        row = {
            "account_id": account.id,
            "name": account.name or account.id,
            "base_currency": account.base_currency,
            "timezone": account.timezone,
            "created_at": time.time_ns(),
        }
        ray.get(self.recorder.write_now.remote({"accounts": [row]}))
        ray.get(self.m2m.open_account.remote(account.id, account.timezone, account.rate))
        if not account.allocations():  # no bots: legs and M2M only, no portfolio to manage
            return
        self.portfolios[account.id] = PortfolioActor.options(name=f"portfolio:{account.id}", get_if_exists=True).remote(
            account.id,
            account.capital,
            account.allocations(),
            account.risk if isinstance(account.risk, RiskLimits) else RiskLimits(),
            account.breakers if isinstance(account.breakers, BreakerSettings) else BreakerSettings(),
            self.recorder,
        )

    def _account(self, account_id: str) -> AccountConfig:
        account = self.accounts.get(account_id)
        if account is None:
            raise ParameterError("account_id", f"unknown trading account {account_id!r}")
        return account

    # ------------------------------------------------------------------ strategy instances
    def create_instance(self, account_id: str, name: str, strategy_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """Create (or replace the parameters of) a strategy instance from a catalog type; the
        parameters are validated against the plugin's schema before anything is stored.

        Raises:
            ParameterError: unknown account or type, or invalid parameters (field and rule named).
        """
        self._account(account_id)
        cls = self.registry.get(strategy_type)
        validated = cls.validate_params(params).model_dump(mode="json")
        now = time.time_ns()
        stored = {r["name"]: r for r in self.list_instances(account_id)}.get(name, {})
        row = {
            "instance_id": f"{account_id}/{name}",
            "account_id": account_id,
            "name": name,
            "strategy_type": strategy_type,
            "params": orjson.dumps(validated).decode(),
            "status": "active",
            "created_at": now,
            "updated_at": now,
            "target_profit": stored.get("target_profit"),
            "stop_loss": stored.get("stop_loss"),
        }
        ray.get(self.recorder.write_now.remote({"strategy_instances": [row]}))
        ray.get(self.m2m.create_strategy.remote(account_id, row["instance_id"], name))
        return row

    def list_instances(self, account_id: str) -> list[dict[str, Any]]:
        """The account's strategy instances (active and archived)."""
        self._account(account_id)
        table: pa.Table = ray.get(
            self.recorder.read.remote("strategy_instances", account_id=account_id, order_by="name")
        )
        return table.to_pylist()

    def _instance(self, account_id: str, name: str) -> dict[str, Any]:
        for row in self.list_instances(account_id):
            if row["name"] == name:
                return row
        raise ParameterError("instance", f"no strategy instance {name!r} in account {account_id!r}")

    def update_instance(self, account_id: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """New parameters for an instance whose bot is not running (validated first).

        Raises:
            ParameterError: unknown instance, invalid parameters, archived, or its bot is running.
        """
        row = self._instance(account_id, name)
        if row["status"] == "archived":
            raise ParameterError("instance", f"strategy instance {name!r} is archived")
        if f"{account_id}/{name}" in self.bots:
            raise ParameterError("instance", f"stop the bot of {name!r} before changing its parameters")
        return self.create_instance(account_id, name, row["strategy_type"], params)

    def archive_instance(self, account_id: str, name: str) -> None:
        """Archive (soft-delete) an instance whose bot is not running."""
        row = self._instance(account_id, name)
        if f"{account_id}/{name}" in self.bots:
            raise ParameterError("instance", f"stop the bot of {name!r} before archiving it")
        row["status"] = "archived"
        row["updated_at"] = time.time_ns()
        ray.get(self.recorder.write_now.remote({"strategy_instances": [row]}))

    # ------------------------------------------------------------------ strategies, legs and M2M
    def default_strategy(self, account_id: str) -> dict[str, Any]:
        """The account's default strategy (created with the account; cannot be renamed or archived)."""
        self._account(account_id)
        row: dict[str, Any] = ray.get(self.m2m.open_account.remote(account_id, self.accounts[account_id].timezone))
        return row

    def create_strategy(
        self,
        account_id: str,
        name: str,
        *,
        tags: list[str] | None = None,
        target_profit: float | None = None,
        stop_loss: float | None = None,
    ) -> dict[str, Any]:
        """A strategy that holds legs entered by hand (type ``manual``, no plugin).

        Raises:
            ParameterError: unknown account, a name taken, or a bad tag/target/stop (field and rule named).
        """
        self._account(account_id)
        if any(r["name"] == name for r in self.list_instances(account_id)):
            raise ParameterError("name", f"a strategy named {name!r} exists in account {account_id!r}")
        instance_id = f"{account_id}/{name}"
        strategy = ray.get(
            self.m2m.create_strategy.remote(account_id, instance_id, name, tags, target_profit, stop_loss)
        )
        row = _instance_row(strategy)
        ray.get(self.recorder.write_now.remote({"strategy_instances": [row]}))
        return row

    def update_strategy(self, account_id: str, strategy: str, **changes: Any) -> dict[str, Any]:
        """Rename (``name=``), re-tag (``tags=``), set ``target_profit`` / ``stop_loss`` or ``archive=True``.

        Raises:
            ParameterError: unknown strategy, or a change its rules refuse (the default strategy cannot
                be renamed or archived; a strategy with open legs cannot be archived).
        """
        row = self._instance(account_id, strategy)
        changed = ray.get(self.m2m.update_strategy.remote(account_id, row["instance_id"], **changes))
        new = {**row, **_instance_row(changed), "strategy_type": row["strategy_type"], "params": row["params"]}
        ray.get(self.recorder.write_now.remote({"strategy_instances": [new]}))
        return new

    def add_leg(self, account_id: str, strategy: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Add a leg by hand to ``strategy`` (its name): ``spec`` holds :class:`engine.m2m.LegSpec`'s
        fields (symbol, side +1/-1, qty in units, entry_price, and optionally exchange, segment,
        lot_size, multiplier, option fields, notes). The leg's symbol (and an option's underlying) is
        marked from its multiplexer, created if needed. Returns the stored leg."""
        row = self._instance(account_id, strategy)
        if spec.get("segment") == "option" and spec.get("underlying"):
            symbols = [spec["underlying"]]  # marked by the model from the underlying (no option prices replayed)
        else:
            symbols = [spec["symbol"], *([spec["underlying"]] if spec.get("underlying") else [])]
        self._subscribe_m2m(symbols)
        leg: dict[str, Any] = ray.get(self.m2m.add_leg.remote(account_id, row["instance_id"], spec))
        return leg

    def exit_leg(self, account_id: str, leg_id: str, qty: float, price: float) -> list[dict[str, Any]]:
        """Exit ``qty`` units of a leg at ``price`` (quote currency); realized P&L is booked."""
        self._account(account_id)
        exits: list[dict[str, Any]] = ray.get(self.m2m.exit_leg.remote(account_id, leg_id, qty, price))
        return exits

    def remove_leg(self, account_id: str, leg_id: str) -> dict[str, Any]:
        """Remove a leg entered by mistake (no exits yet; no P&L booked)."""
        self._account(account_id)
        leg: dict[str, Any] = ray.get(self.m2m.remove_leg.remote(account_id, leg_id))
        return leg

    def close_strategy(
        self, account_id: str, strategy: str, prices: dict[str, float] | None = None
    ) -> list[dict[str, Any]]:
        """Exit every open leg of ``strategy`` at ``prices`` (default: the last prices)."""
        row = self._instance(account_id, strategy)
        exits: list[dict[str, Any]] = ray.get(self.m2m.close_strategy.remote(account_id, row["instance_id"], prices))
        return exits

    def legs(self, account_id: str, strategy: str, open_only: bool = False) -> list[dict[str, Any]]:
        row = self._instance(account_id, strategy)
        legs: list[dict[str, Any]] = ray.get(self.m2m.legs.remote(account_id, row["instance_id"], open_only))
        return legs

    def m2m_marks(self, account_id: str) -> list[dict[str, Any]]:
        """Current unrealized, realized and total P&L of every strategy of the account."""
        self._account(account_id)
        marks: list[dict[str, Any]] = ray.get(self.m2m.marks.remote(account_id))
        return marks

    def m2m_events(self, account_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """Target/stop events of the account's strategies after ``after_seq``."""
        self._account(account_id)
        events: list[dict[str, Any]] = ray.get(self.m2m.events.remote(account_id, after_seq))
        return events

    def m2m_candles(
        self, account_id: str, strategy: str, interval: str = "1m", start: int | None = None, end: int | None = None
    ) -> pa.Table:
        """Stored M2M candles of ``strategy`` ("1m" or the "5m" rollup) in [start, end) ns."""
        row = self._instance(account_id, strategy)
        table: pa.Table = ray.get(
            self.recorder.m2m.remote(
                "candles",
                account_id=account_id,
                instance_id=row["instance_id"],
                interval=interval,
                start=start,
                end=end,
            )
        )
        return table

    def m2m_daily(self, account_id: str, strategy: str) -> pa.Table:
        """Stored daily performance rows of ``strategy``."""
        row = self._instance(account_id, strategy)
        table: pa.Table = ray.get(
            self.recorder.m2m.remote("daily", account_id=account_id, instance_id=row["instance_id"])
        )
        return table

    def export_pnl(
        self, account_id: str, strategy: str, fmt: str, out: str, start: int | None = None, end: int | None = None
    ) -> Any:
        """Write ``strategy``'s P&L report (see :func:`engine.store.m2m.export_pnl`), open legs marked
        at the aggregator's last prices."""
        row = self._instance(account_id, strategy)
        marks = {leg["symbol"]: None for leg in self.legs(account_id, strategy, open_only=True)}
        last = ray.get(self.m2m.last_prices.remote(sorted(marks)))
        return ray.get(
            self.recorder.m2m.remote(
                "export", account_id=account_id, instance_id=row["instance_id"], fmt=fmt,
                out_path=str(Path(out).resolve()), start=start, end=end, marks=last,
            )
        )  # fmt: skip

    def _subscribe_m2m(self, symbols: list[str]) -> None:
        """Make sure multiplexers serve ``symbols`` and the aggregator takes their price updates."""
        self.ensure_muxes(symbols)
        stream = "trades" if (self.feed or {}).get("stream") == "trades" else f"bars:{self.bar_timeframe}"
        for mux in sorted({self.mux_of[s] for s in symbols}):
            served = [s for s, m in self.mux_of.items() if m == mux]
            ray.get(self.m2m.subscribe_mux.remote(mux, served, stream))

    # ------------------------------------------------------------------ bots
    def create_bot(self, spec: BotSpec, feed_paths: dict[str, str | None] | None = None) -> Any:
        """Create the bot actor of ``spec`` (its instance is created or refreshed); a bot with a stored
        checkpoint restores it. Returns the actor handle.

        Raises:
            ParameterError: unknown account, type or parameters.
        """
        account = self._account(spec.account_id)
        self.create_instance(spec.account_id, spec.name, spec.strategy_type, spec.params)
        self.ensure_muxes(list(spec.symbols))
        now = time.time_ns()
        bot_row = {
            "bot_id": spec.bot_id,
            "account_id": spec.account_id,
            "instance_id": spec.bot_id,
            "name": spec.name,
            "symbols": list(spec.symbols),
            "timeframe": spec.timeframe,
            "settings": orjson.dumps({"capital": spec.capital, "slippage_bps": spec.slippage_bps}).decode(),
            "status": "created",
            "status_reason": "",
            "error_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        stored = self._bot_rows(spec.account_id).get(spec.bot_id)
        if stored is None:
            ray.get(self.recorder.write_now.remote({"bots": [bot_row]}))
        muxes = {self.mux_of[s]: self.muxes[self.mux_of[s]] for s in spec.symbols}
        paths = feed_paths or {}
        handle = BotActor.options(name=f"bot:{spec.bot_id}", get_if_exists=True).remote(
            spec,
            muxes,
            self.portfolios[account.id],
            self.recorder,
            self.strategy_folders,
            paths.get("funding"),
            paths.get("marks"),
            float(paths.get("checkpoint_every_s") or 30.0),
        )
        self.bots[spec.bot_id] = handle
        self.specs[spec.bot_id] = spec
        return handle

    def _bot_rows(self, account_id: str) -> dict[str, dict[str, Any]]:
        table: pa.Table = ray.get(self.recorder.read.remote("bots", account_id=account_id))
        return {r["bot_id"]: r for r in table.to_pylist()}

    def _bot(self, account_id: str, name: str) -> Any:
        handle = self.bots.get(f"{account_id}/{name}")
        if handle is None or self.specs[f"{account_id}/{name}"].account_id != account_id:
            raise ParameterError("bot", f"no bot {name!r} in account {account_id!r}")
        return handle

    def start_bot(self, account_id: str, name: str) -> dict[str, Any]:
        return dict(ray.get(self._bot(account_id, name).start.remote()))

    def pause_bot(self, account_id: str, name: str) -> dict[str, Any]:
        return dict(ray.get(self._bot(account_id, name).pause.remote()))

    def resume_bot(self, account_id: str, name: str) -> dict[str, Any]:
        return dict(ray.get(self._bot(account_id, name).resume.remote()))

    def stop_bot(self, account_id: str, name: str) -> dict[str, Any]:
        return dict(ray.get(self._bot(account_id, name).stop.remote()))

    def emergency_stop_all(self, account_id: str) -> list[dict[str, Any]]:
        """Cancel every order and flatten every position of every bot of the account, then stop them."""
        self._account(account_id)
        handles = [h for bid, h in self.bots.items() if self.specs[bid].account_id == account_id]
        return list(ray.get([h.emergency_stop.remote() for h in handles]))

    def status(self, account_id: str) -> list[dict[str, Any]]:
        """Every bot of the account: state, equity, positions, counters."""
        self._account(account_id)
        handles = [h for bid, h in self.bots.items() if self.specs[bid].account_id == account_id]
        return list(ray.get([h.status.remote() for h in handles]))

    def portfolio_summary(self, account_id: str) -> dict[str, Any]:
        """Equity, drawdown and state of the account's portfolio and of each bot."""
        self._account(account_id)
        return dict(ray.get(self.portfolios[account_id].summary.remote()))

    def events(self, account_id: str, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """The account's events after ``after_seq`` (poll with the last seq seen to follow them)."""
        self._account(account_id)
        return list(ray.get(self.portfolios[account_id].events.remote(after_seq, limit)))

    def force_resume(self, account_id: str, strategy: str | None = None) -> None:
        """Manual release of the account's portfolio breaker or of one bot's breaker."""
        self._account(account_id)
        ray.get(self.portfolios[account_id].force_resume.remote(strategy))

    def read(self, account_id: str, table: str, **kw: Any) -> pa.Table:
        """A live table of the account from the store (fills, orders, positions, signals, …)."""
        self._account(account_id)
        result: pa.Table = ray.get(self.recorder.read.remote(table, account_id=account_id, **kw))
        return result

    # ------------------------------------------------------------------ sessions
    def open_session(self, config: RunConfig, until_ns: int | None = None) -> list[BotSpec]:
        """Create the accounts, instances, bots and multiplexers of a ``tradectl run`` config and
        start the bots (those with a stored checkpoint resume from it). Feeds start with
        :meth:`start_feeds`. Returns the bot specs.

        Raises:
            ParameterError: a config error the registry or the data reveal (field named).
        """
        from engine.data.catalog import load_bars
        from engine.data.resample import infer_timeframe_ns
        from engine.timeframes import timeframe_str

        symbols = config.symbols()
        ds = config.dataset
        if config.feed.source == "live" or not symbols:
            base_tf = config.feed.bar_timeframe
        elif ds.bars is not None:
            probe = load_bars(ds.bars, symbols, config.start_ns, _probe_end(config))
            base_tf = timeframe_str(infer_timeframe_ns(probe))
        else:
            base_tf = config.feed.bar_timeframe
        specs = config.bot_specs(self.registry, base_tf)
        end_ns = config.end_ns
        if until_ns is not None:
            end_ns = until_ns if end_ns is None else min(end_ns, until_ns)
        feed: dict[str, Any] = {
            "kind": "replay",
            "path": str(ds.bars or ds.trades),
            "stream": "trades" if ds.trades is not None else f"bars:{base_tf}",
            "start_ns": config.start_ns,
            "end_ns": end_ns,
            "speed": config.feed.speed_factor,
            "batch_rows": config.feed.batch_rows,
            "window_ms": config.feed.window_ms,
            "require_volume": ds.volume,
        }
        if config.feed.source == "live":
            feed = {
                "kind": "live",
                "stream": "trades",
                "exchange": config.feed.exchange,
                "symbol_map": {s: config.feed.ccxt_symbol(s) for s in symbols},
                "playback": str(config.feed.playback) if config.feed.playback else None,
                "window_ms": config.feed.window_ms,
            }
        self.set_feed(feed, base_tf, config.feed.shard_size)
        for extra in config.extra_feeds:
            own = {
                **feed, "kind": "replay", "path": str(extra.bars), "stream": f"bars:{base_tf}",
                "start_ns": _to_ns(extra.start), "end_ns": _to_ns(extra.end), "require_volume": extra.volume,
            }  # fmt: skip
            for symbol in extra.symbols:
                self.feed_for[symbol] = own
        resume_from = self._resume_point(config)
        self.ensure_muxes(symbols, resume_from)
        if symbols:  # bots' fills become legs of their strategies: the M2M aggregator marks them too
            self._subscribe_m2m(symbols)
        for account in config.accounts:
            self.create_account(account)
        paths = {
            "funding": str(config.dataset.funding) if config.dataset.funding else None,
            "marks": str(config.dataset.marks) if config.dataset.marks else None,
            "checkpoint_every_s": str(config.checkpoint_every_s),
        }
        for account in config.accounts:
            self._open_strategies(account, config)
        for spec in specs:
            self.create_bot(spec, paths)
        ray.get([h.start.remote() for h in self.bots.values()])
        return specs

    def _open_strategies(self, account: AccountConfig, config: RunConfig) -> None:
        """The account's strategies of legs entered by hand (``accounts[].strategies``): created with
        their legs on a session's first start; a resumed session finds them in the M2M checkpoint."""
        from dataclasses import asdict

        from engine.data.catalog import load_bars
        from engine.m2m.options import NSE_UNDERLYING_SYMBOLS, iron_condor, load_option_chain, short_straddle

        existing = {r["name"] for r in self.list_instances(account.id)}
        for strategy in account.strategies:
            if strategy.name in existing:
                continue
            specs: list[dict[str, Any]] = [leg.model_dump() for leg in strategy.legs]
            build = strategy.build
            if build is not None:
                chain = load_option_chain(build.chain, build.underlying, build.expiry, build.snapshot)
                index = build.underlying_symbol or NSE_UNDERLYING_SYMBOLS.get(build.underlying, build.underlying)
                spot = build.spot
                if spot is None:  # the underlying's last close before the session starts
                    source = self.feed_for.get(index, self.feed or {})
                    start = config.start_ns or 0
                    bars = load_bars(source["path"], [index], start - 7 * NS_PER_DAY, start,
                                     require_volume=bool(source.get("require_volume", True)))  # fmt: skip
                    if bars.num_rows == 0:
                        raise ParameterError(f"accounts.{account.id}.strategies.{strategy.name}.build.spot",
                                             f"no {index!r} bar in the week before the start: give spot")  # fmt: skip
                    spot = float(bars.column("close")[-1].as_py())
                if build.kind == "iron_condor":
                    assert build.short_offset is not None and build.wing_width is not None
                    built = iron_condor(chain, spot, short_offset=build.short_offset, wing_width=build.wing_width,
                                        lots=build.lots, underlying_symbol=index)  # fmt: skip
                else:
                    built = short_straddle(chain, spot, lots=build.lots, underlying_symbol=index)
                specs += [asdict(leg) for leg in built]
            self.create_strategy(
                account.id, strategy.name, tags=strategy.tags,
                target_profit=strategy.target_profit, stop_loss=strategy.stop_loss,
            )  # fmt: skip
            for spec in specs:
                self.add_leg(account.id, strategy.name, spec)

    def _resume_point(self, config: RunConfig) -> int | None:
        """Replay start for a resumed session: the start of the UTC day of the oldest bot checkpoint
        (whole days, so multiplexers rebuild higher-timeframe bars from complete buckets), or None
        when some bot has no checkpoint (replay from the config's start)."""
        marks = []
        for account in config.accounts:
            rows = ray.get(self.recorder.read.remote("bot_checkpoints", account_id=account.id))
            have = {r["bot_id"]: r["watermark_ns"] for r in rows.select(["bot_id", "watermark_ns"]).to_pylist()}
            for bot in account.bots:
                wm = have.get(f"{account.id}/{bot.name}")
                if wm is None:
                    return None
                marks.append(wm)
        if not marks:
            return None
        return (min(marks) // NS_PER_DAY) * NS_PER_DAY - 1


def _probe_end(config: RunConfig) -> int | None:
    start = config.start_ns
    return None if start is None else start + 2 * NS_PER_DAY

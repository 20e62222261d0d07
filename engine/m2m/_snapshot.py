"""Snapshot and restore of :class:`~engine.m2m.aggregator.M2MAggregatorCore` as plain data (internal).

The snapshot holds, besides the books' rows, everything that cannot be recomputed from them
bit-for-bit: each pair's current value and leg order (option legs marked by the model carry a value
evaluated at a past time), each strategy's cumulative realized P&L, open candle, day aggregates and
target/stop state, the last price / ts / updates-at-that-ts of every symbol, and output not yet drained.
NaN and infinities are stored as None.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.m2m._marking import _Account, _zone
from engine.m2m._state import DAY_FIELDS, STRATEGY_FIELDS
from engine.m2m.book import StrategyBook
from engine.m2m.legs import M2MError
from engine.m2m.tables import M2MEvent

if TYPE_CHECKING:
    from engine.m2m.aggregator import M2MAggregatorCore

SNAPSHOT_VERSION = 1
#: per-strategy fields saved (the others are recomputed from the books)
_SAVED = ("realized", "m2m", "c_on", "c_open", "c_high", "c_low", "c_upd", "c_model", "e_tgt", "e_stop", *DAY_FIELDS)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def take_snapshot(core: M2MAggregatorCore) -> dict[str, Any]:
    st, p = core._s, core._p
    no_ts = np.iinfo(np.int64).min
    p.rebuild_order(len(core._s_keys))
    return {
        "version": SNAPSHOT_VERSION,
        "model_marking": core.model_marking,
        "minute": core._minute,
        "watermark": core._wm,
        "leg_updates": core.leg_updates,
        "stale_dropped": core.stale_dropped,
        "symbols": list(core._symbols),
        "last_price": [_plain(x) for x in core._last.tolist()],
        "last_ts": [None if x == no_ts else int(x) for x in core._last_ts.tolist()],
        "last_seq": [int(x) for x in core._last_seq.tolist()],
        "accounts": [
            {
                "account_id": a.account_id,
                "tz": a.tz_name,
                "rate": a.rate,
                "div_yield": a.div_yield,
                "day": None if a.day is None else a.day.isoformat(),
                "day_end": a.day_end,
                "live": bool(core._a_live[a.index]),
                "book": a.book.to_rows(),
            }
            for a in core._accounts
        ],
        "strategies": [
            {"account_id": acc, "instance_id": inst, **{f: _plain(getattr(st, f)[s]) for f in _SAVED}}
            for s, (acc, inst) in enumerate(core._s_keys)
        ],
        "pairs": [
            {
                "account_id": core._s_keys[int(p.s[slot])][0],
                "instance_id": core._s_keys[int(p.s[slot])][1],
                "symbol": core._symbols[int(p.sym[slot])],
                "value": float(p.V[slot]),
                "linear": list(p.linear_legs[slot]),
                "model": list(p.model_legs[slot]),
            }
            for slot in p.order.tolist()
        ],
        "pending": {
            "candles": core._candles.to_plain(),
            "daily": core._daily.to_plain(),
            "events": [
                {
                    "account_id": e.account_id,
                    "instance_id": e.instance_id,
                    "kind": e.kind,
                    "ts": e.ts,
                    "total_pnl": e.total_pnl,
                    "threshold": e.threshold,
                }
                for e in core._events
            ],
        },
    }


def restore_snapshot(core: M2MAggregatorCore, data: dict[str, Any]) -> None:
    if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
        raise M2MError("snapshot", f"must be a dict with version {SNAPSHOT_VERSION}")
    for sym in data["symbols"]:
        core.symbol_id(sym)
    core._last[:] = [np.nan if x is None else x for x in data["last_price"]]
    core._last_ts[:] = [np.iinfo(np.int64).min if x is None else x for x in data["last_ts"]]
    core._last_seq[:] = data["last_seq"]
    core._minute, core._wm = data["minute"], data["watermark"]
    core.leg_updates, core.stale_dropped = int(data["leg_updates"]), int(data["stale_dropped"])
    core._skip = {}
    for i, ts in enumerate(data["last_ts"]):  # replaying from the watermarks re-sends these: skip them
        if ts is not None and data["last_seq"][i] > 0:
            core._skip[i] = [int(ts), int(data["last_seq"][i])]
    for ad in data["accounts"]:
        rows = ad["book"]
        book = StrategyBook.from_rows(ad["account_id"], rows["strategies"], rows["legs"], rows["exits"])
        a = _Account(
            len(core._accounts),
            ad["account_id"],
            ad["tz"],
            _zone(ad["tz"]),
            float(ad["rate"]),
            float(ad["div_yield"]),
            book,
            None if ad["day"] is None else date.fromisoformat(ad["day"]),
            ad["day_end"],
        )
        core._accounts.append(a)
        core._acct_index[a.account_id] = a.index
        core._a_live = np.append(core._a_live, bool(ad["live"]))
    st = core._s
    for row in data["strategies"]:
        a = core._account(row["account_id"])
        a.book.strategy(row["instance_id"])
        s = core._strategy_index(a, row["instance_id"])
        for f in _SAVED:
            v = row[f]
            getattr(st, f)[s] = STRATEGY_FIELDS[f][1] if v is None else v
    for a in core._accounts:
        for strat in a.book.strategies():
            core._strategy_index(a, strat.instance_id)
            core._set_limits(a, strat.instance_id, strat.target_profit, strat.stop_loss)
    p = core._p
    for pr in data["pairs"]:
        a = core._account(pr["account_id"])
        s = core._s_index[(a.account_id, pr["instance_id"])]
        slot = p.slot(s, core._sym_ids[pr["symbol"]])
        for kind, holder in (("linear", p.linear_legs[slot]), ("model", p.model_legs[slot])):
            for leg_id in pr[kind]:
                leg = a.book.leg(leg_id)
                if not leg.is_open or (a.index, leg_id) in core._leg_slot:
                    raise M2MError(
                        "snapshot",
                        f"pair {pr['symbol']!r} of {pr['instance_id']!r}: leg {leg_id!r} is not open or listed twice",
                    )
                holder[leg_id] = replace(leg)
                core._leg_slot[(a.index, leg_id)] = slot
                st.nopen[s] += 1
                if kind == "model":
                    st.nmodel[s] += 1
                    own = core._sym_ids[leg.symbol]
                    core._wait.setdefault(own, set()).add((a.index, leg_id))
                    core._wait_mask[own] = True
        core._refresh({slot}, keep_value=True)
        p.V[slot] = float(pr["value"])
    for a in core._accounts:
        for leg in a.book.legs(open_only=True):
            if (a.index, leg.leg_id) not in core._leg_slot:
                raise M2MError("snapshot", f"open leg {leg.leg_id!r} of account {a.account_id!r} is in no pair")
        a.book.set_listener(partial(core._on_change, a))
    pend = data["pending"]
    core._candles.load_plain(pend["candles"])
    core._daily.load_plain(pend["daily"])
    core._events = [M2MEvent(**e) for e in pend["events"]]

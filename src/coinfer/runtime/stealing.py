"""Work stealing over fused tiles (DeepThings): which device computes a tile is decided at run time.

`coinfer run --steal` lowers each fused tiled stage with its tiles marked `POOLED_TILE`
(coinfer.runtime.packaging.tiled_program). The tiles of one stage and the devices they were
planned on form a `TilePool`; every worker derives the same pools from the plan, as it derives its
route (coinfer.runtime.routing), so nobody has to tell a worker what it may run:

* every pool device holds the ops of every tile of the pool (they share the range's weights, which
  it holds anyway), and runs a tile as soon as its crop arrives;
* the scatter device, which makes every crop, keeps one queue of tiles per pool device, filled with
  the plan's assignment. It hands each device up to `PREFETCH_TILES` tiles of its own queue, and
  when a device has nothing outstanding and its own queue is empty, it *steals* one tile for it
  from the end of the longest queue. A device reports each finished tile with a one-byte token
  (`TilePool.token`); the tile's output goes straight to the gather device, as without stealing.

DeepThings keeps the queues on the devices and lets an idle one ask a busy one; here the crops
are made on the scatter device in any case, so its queues are the victims' queues and a steal
moves no data twice. Only the plan's assignment is priced (coinfer.cost.evaluate): stealing
changes the run only where a device is slower or faster than predicted.

`Dispatcher` is the scatter device's bookkeeping, pure: it says what to send where.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from coinfer.errors import PlanError, WireError
from coinfer.plan import Plan

POOLED_TILE = "tile-pooled"  # the op of a lowered tile node that any device of its pool may compute
TOKEN_SUFFIX = "#done"
PREFETCH_TILES = 2  # tiles outstanding per device: one computing, one on its way, so no device waits a round trip
TOKEN = np.zeros(1, dtype=np.uint8)


@dataclass(frozen=True)
class PoolTile:
    node_id: str  # the tile's node of the lowered graph
    crop: str  # the value it reads: its crop of the range's input, made on the scatter device
    output: str  # the value it makes: its tile of the range's output, read by the stitch
    planned: str  # the device the plan gave it to

    @property
    def token(self) -> str:
        """The value a device sends the scatter device when it has computed this tile."""
        return f"{self.node_id}{TOKEN_SUFFIX}"


@dataclass(frozen=True)
class TilePool:
    """The tiles of one fused tiled stage and the devices that share them."""

    stitch: str  # the node that gathers the tiles
    tiles: tuple[PoolTile, ...]
    scatter: str
    gather: str
    devices: tuple[str, ...]  # the devices of the plan's assignment, in the order they first appear


def tile_pools(plan: Plan, made_at: Mapping[str, str], needs: Mapping[str, frozenset[str]],
               keeps: Mapping[str, tuple[str, ...]]) -> tuple[TilePool, ...]:
    """The pools of a lowered plan, from its graph's pooled tile nodes and the stitch that reads them.

    `made_at` is the device each value is made on; `needs` and `keeps` are, per pooled tile node,
    what its stage reads and makes (coinfer.runtime.routing). A pooled tile must read one crop made
    on one scatter device and make one value: anything else is a plan this runtime cannot steal in."""
    graph = plan.graph
    pooled = {n.id for n in graph.nodes if n.op == POOLED_TILE}
    if not pooled:
        return ()
    pools = []
    for stitch in (n for n in graph.nodes if pooled & set(n.inputs)):
        if not set(stitch.inputs) <= pooled:
            raise PlanError(f"node {stitch.id!r} reads pooled tiles and other values; it cannot gather stolen tiles")
        tiles = []
        for node_id in stitch.inputs:
            read, made = needs.get(node_id, frozenset()), keeps.get(node_id, ())
            if len(read) != 1 or len(made) != 1:
                raise PlanError(f"tile {node_id!r} reads {sorted(read)} and makes {list(made)}: a stolen tile reads "
                                "one crop and makes one value")
            tiles.append(PoolTile(node_id, next(iter(read)), made[0], plan.placement[node_id]))
        scatters = {made_at[t.crop] for t in tiles}
        if len(scatters) != 1:
            raise PlanError(f"the tiles gathered by {stitch.id!r} read crops made on {sorted(scatters)}; stealing "
                            "needs them made on one device")
        pools.append(TilePool(stitch.id, tuple(tiles), scatters.pop(), plan.placement[stitch.id],
                              tuple(dict.fromkeys(t.planned for t in tiles))))
    return tuple(pools)


# -- the scatter device's queues --------------------------------------------------------------


@dataclass
class _Request:
    crops: dict[int, np.ndarray] = field(default_factory=dict)  # tile index -> its crop, until sent
    queues: dict[str, deque[int]] = field(default_factory=dict)  # device -> tile indices not yet sent
    outstanding: dict[str, set[int]] = field(default_factory=dict)  # device -> tiles sent, not reported done
    remaining: int = 0  # tiles not yet reported done
    started_s: float = field(default_factory=time.monotonic)


Send = tuple[str, str, np.ndarray]  # (device, crop value, array)


class Dispatcher:
    """One pool's queues on its scatter device, per request (see the module docstring)."""

    def __init__(self, pool: TilePool) -> None:
        self.pool = pool
        self.by_crop = {t.crop: i for i, t in enumerate(pool.tiles)}
        self.by_token = {t.token: i for i, t in enumerate(pool.tiles)}
        self.requests: dict[int, _Request] = {}
        self.stolen = 0  # tiles handed to a device other than the one the plan gave them to

    def offer(self, request_id: int, crop: str, array: np.ndarray) -> list[Send]:
        """A crop made here; once every crop of the request is made, the first sends."""
        r = self.requests.setdefault(request_id, _Request())
        r.crops[self.by_crop[crop]] = array
        if len(r.crops) < len(self.pool.tiles):
            return []
        r.remaining = len(self.pool.tiles)
        r.queues = {d: deque() for d in self.pool.devices}
        r.outstanding = {d: set() for d in self.pool.devices}
        for i, tile in enumerate(self.pool.tiles):
            r.queues[tile.planned].append(i)
        return [s for d in self.pool.devices for s in self._refill(r, d)]

    def done(self, request_id: int, token: str, source: str) -> list[Send]:
        """Device `source` computed the tile of `token`: what to send next. WireError for a token of a
        tile that was not outstanding at that device (a replay, or a device outside the pool)."""
        i = self.by_token[token]
        r = self.requests.get(request_id)
        if r is None or i not in r.outstanding.get(source, ()):
            raise WireError(f"device {source!r} reported tile {self.pool.tiles[i].node_id!r} of request {request_id}, "
                            "which was not sent to it; dropped")
        r.outstanding[source].discard(i)
        r.remaining -= 1
        if r.remaining == 0:
            del self.requests[request_id]
            return []
        return self._refill(r, source)

    def expire(self, older_than_s: float) -> list[int]:
        cutoff = time.monotonic() - older_than_s
        stale = [rid for rid, r in self.requests.items() if r.started_s < cutoff]
        for rid in stale:
            del self.requests[rid]
        return stale

    def drop(self, request_id: int) -> None:
        self.requests.pop(request_id, None)

    def _refill(self, r: _Request, device: str) -> list[Send]:
        sends = []
        own = r.queues[device]
        while own and len(r.outstanding[device]) < PREFETCH_TILES:
            sends.append(self._hand(r, device, own.popleft()))
        if not r.outstanding[device]:  # idle with nothing of its own: steal from the longest queue
            victim = max(self.pool.devices, key=lambda d: len(r.queues[d]))
            if r.queues[victim]:
                self.stolen += 1
                sends.append(self._hand(r, device, r.queues[victim].pop()))
        return sends

    def _hand(self, r: _Request, device: str, i: int) -> Send:
        r.outstanding[device].add(i)
        return device, self.pool.tiles[i].crop, r.crops.pop(i)


def pools_by_role(pools: Sequence[TilePool], device: str) -> tuple[TilePool, ...]:
    """The pools `device` scatters, computes tiles of, or gathers."""
    return tuple(p for p in pools if device in (p.scatter, p.gather, *p.devices))

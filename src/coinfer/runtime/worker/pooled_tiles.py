"""One deployment's pooled tiles on a worker (work stealing, coinfer.runtime.stealing).

A pool device runs a tile as soon as its crop arrives from the pool's scatter device, sends the
tile's output to the gather device (or hands it to its own request engine when it gathers) and
reports the tile done to the scatter device with a token. The scatter device's `Dispatcher`
answers each token with the next crop for that device, its own or stolen. Everything that
arrives is checked first: a crop only from the scatter device, of its planned shape, once per
request; a token only for a tile that was sent to its sender. A crop for this device itself
goes through the compute thread's inbox (`enqueue`), so its crops leave before it computes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from coinfer.errors import WireError
from coinfer.graph import TensorSpec
from coinfer.runtime.routing import DeviceRoute, RunStage
from coinfer.runtime.serving import Recent, check_planned
from coinfer.runtime.stealing import TOKEN, Dispatcher, TilePool

REMEMBERED_CROPS = 100_000  # (request, crop) pairs kept to refuse a replayed crop, oldest forgotten first

Send = Callable[[str, int, str, np.ndarray], None]  # target, request id, value, array
Run = Callable[[RunStage, dict[str, np.ndarray]], dict[str, np.ndarray]]
Deliver = Callable[[int, str, np.ndarray], None]  # a tile output this device gathers, to its request engine
Enqueue = Callable[[int, str, np.ndarray], None]  # a crop for this device itself, to the compute inbox


class PooledTiles:
    def __init__(self, route: DeviceRoute, specs: Mapping[str, TensorSpec], send: Send, send_token: Send, run: Run,
                 deliver: Deliver, enqueue: Enqueue) -> None:
        self.device, self.specs = route.device, specs
        self.send, self.send_token, self.run, self.deliver, self.enqueue = send, send_token, run, deliver, enqueue
        self.stages = route.pool_stages
        self.pool_of_crop: dict[str, TilePool] = {t.crop: p for p in route.pools for t in p.tiles}
        self.dispatchers = {p.stitch: Dispatcher(p) for p in route.pools if p.scatter == self.device}
        self.by_token = {t.token: self.dispatchers[p.stitch] for p in route.pools if p.stitch in self.dispatchers
                         for t in p.tiles}
        self.tile_of_crop = {t.crop: t for p in route.pools for t in p.tiles}
        self._seen = Recent(REMEMBERED_CROPS)  # (request, crop) pairs computed here

    def handles(self, name: str) -> bool:
        """Whether an arriving value is a pooled tile's crop or token (not the request engine's)."""
        return name in self.stages or name in self.by_token

    @property
    def stolen(self) -> dict[str, int]:
        """Per pool this device scatters (by its stitch node), the tiles handed to another device than planned."""
        return {stitch: d.stolen for stitch, d in self.dispatchers.items()}

    def arrive(self, request_id: int, name: str, array: np.ndarray, source: str | None) -> None:
        """A crop from the scatter device (run its tile) or a token from a pool device (dispatch)."""
        if name in self.by_token:
            if source is None:
                raise WireError(f"device {self.device!r}: a tile token came from an unknown sender; dropped")
            if array.shape != TOKEN.shape or array.dtype != TOKEN.dtype:
                raise WireError(f"device {self.device!r}: token {name!r} is {array.dtype}{list(array.shape)}, "
                                f"not {TOKEN.dtype}{list(TOKEN.shape)}; dropped")
            self._hand_out(request_id, self.by_token[name].done(request_id, name, source))
            return
        pool = self.pool_of_crop[name]
        if source is not None and source != pool.scatter:
            raise WireError(f"device {self.device!r}: crop {name!r} of request {request_id} came from {source}, "
                            f"but {pool.scatter} scatters it; dropped")
        check_planned(f"device {self.device!r}", f"crop {name!r} of request {request_id}", array, self.specs.get(name))
        self.run_tile(request_id, name, array)

    def offer(self, request_id: int, crop: str, array: np.ndarray) -> None:
        """A crop this device made (its request engine's dispatch): hand out what its dispatcher says."""
        pool = self.pool_of_crop[crop]
        self._hand_out(request_id, self.dispatchers[pool.stitch].offer(request_id, crop, array))

    def run_tile(self, request_id: int, crop: str, array: np.ndarray) -> None:
        """Compute the tile `crop` feeds; its output to the gather device, its token to the scatter device."""
        key = (request_id, crop)
        if key in self._seen:
            raise WireError(f"device {self.device!r}: crop {crop!r} of request {request_id} came twice; dropped")
        self._seen.add(key)
        pool, tile = self.pool_of_crop[crop], self.tile_of_crop[crop]
        produced = self.run(self.stages[crop], {crop: array})
        for name, value in produced.items():
            if pool.gather == self.device:
                self.deliver(request_id, name, value)
            else:
                self.send(pool.gather, request_id, name, value)
        if pool.scatter == self.device:
            self._hand_out(request_id, self.dispatchers[pool.stitch].done(request_id, tile.token, self.device))
        else:
            self.send_token(pool.scatter, request_id, tile.token, TOKEN)

    def drop(self, request_id: int) -> None:
        for d in self.dispatchers.values():
            d.drop(request_id)

    def expire(self, older_than_s: float) -> list[int]:
        return [rid for d in self.dispatchers.values() for rid in d.expire(older_than_s)]

    def _hand_out(self, request_id: int, sends: list[tuple[str, str, np.ndarray]]) -> None:
        for device, crop, array in sends:
            if device == self.device:
                self.enqueue(request_id, crop, array)
            else:
                self.send(device, request_id, crop, array)

"""The simulated cluster: devices as FIFO servers, links as FIFO shaped links, on a simpy clock.

A device computes one stage at a time (capacity 1, first come first served), like a runtime
worker's compute thread; a stage's time is its profiled work times the device's speed factor at
each moment (`conditions.SpeedTrace`). A directed link is a `coinfer.shaping.LinkShaper`: the
same closed-form FIFO link the runtime emulates, so a simulated hop takes what an emulated one
takes (latency + overhead + bytes / bandwidth when the link is idle, behind earlier messages when
it is busy, following a bandwidth trace when one is given). simpy hands the shaper messages in
simulated-time order, which is the order its FIFO needs.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import simpy

from coinfer.adapt.records import HopSample
from coinfer.cluster import Cluster
from coinfer.errors import PlanError
from coinfer.shaping import LinkShaper
from coinfer.sim.conditions import Conditions, Link

# REFERENCE section 4: the two-point probe sends s1 = 1 KB and s2 = 1 MB, twice each.
PROBE_SIZES_BYTES = (1_000, 1_000, 1_000_000, 1_000_000)

Process = Generator[simpy.Event, Any, Any]


@dataclass(frozen=True)
class Computed:
    """When a stage held its device, and how many requests were waiting for it when it asked."""

    start_s: float
    end_s: float
    waiting: int


class SimCluster:
    """Devices and links of `cluster` under `conditions` on the clock of `env`."""

    def __init__(self, env: simpy.Environment, cluster: Cluster, conditions: Conditions) -> None:
        self.env = env
        self.conditions = conditions
        self.devices = {d.name: simpy.Resource(env, capacity=1) for d in cluster.devices}
        self.shapers: dict[Link, LinkShaper] = {}
        for link in cluster.links:
            key = (link.source, link.target)
            bandwidth = conditions.link_traces.get(key, link.bandwidth_bits_per_s)
            # the simulated runtime spends its per-message cost too: the link's and the runtime's
            self.shapers[key] = LinkShaper(bandwidth, link.latency_s, link.overhead_s + link.runtime_s)
        unknown = [f"{s}->{t}" for s, t in conditions.link_traces if (s, t) not in self.shapers]
        unknown += [d for d in conditions.speed if d not in self.devices]
        if unknown:
            raise PlanError(f"conditions name link(s) or device(s) {unknown} that cluster {cluster.name!r} lacks; "
                            f"links: {', '.join(f'{s}->{t}' for s, t in self.shapers)}")

    def compute(self, device: str, work_s: float) -> Process:
        """Hold `device` for `work_s` of profiled work (stretched by its speed trace); returns Computed."""
        resource = self.devices[device]
        waiting = len(resource.queue)
        with resource.request() as granted:
            yield granted
            start = self.env.now
            trace = self.conditions.speed.get(device)
            end = trace.finish_s(start, work_s) if trace is not None else start + work_s
            yield self.env.timeout(end - start)
        return Computed(start, end, waiting)

    def send(self, source: str, target: str, size_bytes: int, codec_s: float = 0.0, probe: bool = False) -> Process:
        """Send one message; returns its HopSample (seconds from first byte sent to last received).

        The codec's encode and decode time (`codec_s`, 0 without a codec) comes before the link,
        as the runtime's link sender encodes before it hands the message to its shaper; it is not
        part of the sample, which measures the link.
        """
        shaper = self.shapers.get((source, target))
        if shaper is None:
            raise PlanError(f"no link {source}->{target} to send {size_bytes} bytes over; "
                            f"the plan needs devices that cannot talk")
        if codec_s > 0:
            yield self.env.timeout(codec_s)
        ready = self.env.now
        begin = max(ready, shaper.free_at_s)  # queueing behind earlier messages ends here
        arrive = shaper.arrival_s(ready, size_bytes)
        yield self.env.timeout(arrive - ready)
        return HopSample(source, target, size_bytes, arrive - begin, arrive, probe)

    def probe(self, link: Link, observe: Callable[[HopSample], None]) -> Process:
        """The two-point probe over `link`, each message sent when the previous one arrived; every
        sample goes to `observe` as it arrives. Probes queue behind request traffic and delay it,
        as real probes do."""
        for size in PROBE_SIZES_BYTES:
            sample = yield from self.send(*link, size, probe=True)
            observe(sample)

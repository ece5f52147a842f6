"""Which links to probe: those no request has crossed lately (pure; the runtime sends the probes).

An estimate of a link that carries no traffic expires and falls back to the configured value, so a
link the plan stopped using (because it collapsed) would look healthy again after `expiry_s` and
lure the plan back, only to fail again; a link that carries only small messages (a cut after the
classifier sends a few KB) tells its latency but not its bandwidth. Probing the *thin* links, those
with no hop of at least `SMALL_HOP_BYTES` and no probe within `quiet_s`, keeps their estimates
honest at the price of a few messages.

A probe round on one link is the two-point probe of the adaptive paper (Deng et al., arXiv
2605.09623, REFERENCE section 4 step 2): `PROBE_REPEATS` messages of each of `PROBE_SIZES_BYTES`,
the small ones first; `coinfer.adapt.estimates.Estimator.observe_hop` pairs and fits them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from coinfer.adapt.records import RequestRecord

LinkId = tuple[str, str]  # (source, target) of a directed link

SMALL_HOP_BYTES = 16 * 1024  # below this a hop's time is mostly fixed time: it tells latency, not bandwidth
PROBE_SIZES_BYTES = (1024, 1024 * 1024)  # 1 KB and 1 MB, as in the paper
PROBE_REPEATS = 2  # each size sent twice, as in the paper
THIN_AFTER_S = 10.0  # a third of the estimator's default expiry: a probe lands before the estimate lapses


@dataclass(frozen=True)
class LinkActivity:
    """When each link last carried a request hop or was probed (seconds on the serving clock)."""

    last_s: Mapping[LinkId, float] = field(default_factory=dict)

    def seen(self, record: RequestRecord) -> LinkActivity:
        """This activity with the hops of `record` big enough to measure bandwidth, and its probes."""
        hops = [h for h in record.hops if h.probe or h.size_bytes >= SMALL_HOP_BYTES]
        if not hops:
            return self
        last = dict(self.last_s)
        for hop in hops:
            key = (hop.source, hop.target)
            last[key] = max(last.get(key, hop.at_s), hop.at_s)
        return LinkActivity(last)

    def used(self, links: Iterable[LinkId], at_s: float) -> LinkActivity:
        """This activity with `links` used (a hop or a probe) at `at_s`."""
        last = dict(self.last_s)
        last.update((link, max(last.get(link, at_s), at_s)) for link in links)
        return LinkActivity(last)

    def thin(self, links: Iterable[LinkId], now_s: float, quiet_s: float = THIN_AFTER_S) -> tuple[LinkId, ...]:
        """The links among `links` with no hop or probe in the last `quiet_s` (never seen: thin)."""
        return tuple(link for link in links if now_s - self.last_s.get(link, -float("inf")) > quiet_s)

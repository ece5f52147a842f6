"""Parallel groups spread over devices: a fork and a join, priced by the group's slowest device.

The cost model adds up a request's stages one after another (coinfer.cost.evaluate). A parallel
group (`Graph.parallel_groups`, such as the shards of a tensor-parallel layer) whose members run on
several devices runs them at once. Each device of the group receives the group's fork values (the
broadcast of the layer's input), runs its own members one after another, and sends their outputs to
the join's device; the join waits for the last of them. So the group takes

    span = max over the group's devices d of ( the fork hops into d
                                              + the times of d's members
                                              + the hops of d's members' outputs to the join's device )

where the sequential sum charges every one of those terms. The hops into different devices overlap:
a worker sends over each link in a thread of its own (coinfer.runtime.links), and the model's links
are independent of each other, as everywhere in the cost model. What the sequential sum charges
minus the span is the group's *credit*, taken off the request's latency. Busy times, link busy
times, energy and money do not change: every device still computes its members and every link
still carries its hops; only the waiting overlaps.

Hops of other values that members read (the causal mask every layer reads) stay in the sequential
sum: they go once to each device and are not the group's own, so this is an upper bound on what
the overlap saves. A group whose members all run on one device has no credit, and a group with a
member in a tiled stage is priced sequentially (a tiled range has one input and one output).

`coinfer.solve.ilp_model` states the same span in linear rows (one per group and device); a test
holds the two equal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from coinfer.cost.breakdown import GroupSpan, Transfer
from coinfer.plan import Plan
from coinfer.problem import Problem


def group_spans(plan: Plan, problem: Problem, transfers: Iterable[Transfer]) -> tuple[GroupSpan, ...]:
    """The span of every parallel group of the plan's graph that runs on two or more devices."""
    groups = [g for g in plan.spread_groups if not plan.tiled_node_ids & set(g.members)]
    if not groups:
        return ()
    hops = [t for t in transfers if not t.is_result]
    spans: list[GroupSpan] = []
    for group in groups:
        members, forks = set(group.members), set(group.forks)
        compute: dict[str, float] = defaultdict(float)
        for m in group.members:
            device = plan.placement[m]
            compute[device] += problem.node_time_s[device][m]
        path = dict.fromkeys(compute, 0.0)
        for t in hops:
            if t.tensor in forks:
                path[t.target] += t.time_s  # a fork's readers are all members: its hops go to their devices
            elif t.tensor in members:
                path[t.source] += t.time_s  # to the join's device
        total = {d: path[d] + compute[d] for d in compute}
        critical = max(total, key=lambda d: total[d])
        spans.append(GroupSpan(group.name, tuple(compute), total[critical], sum(total.values()),
                               sum(compute.values()), compute[critical], critical))
    return tuple(spans)

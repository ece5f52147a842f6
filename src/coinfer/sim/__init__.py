"""A discrete-event simulator of serving plans, and of adapting them (simpy).

Devices are FIFO servers that compute one stage at a time; links are FIFO links timed by
`coinfer.shaping.LinkShaper` (the runtime's own link emulation), with optional bandwidth traces
per link and slowdown traces per device. Requests arrive in a closed loop or at a fixed rate, run
the hops `coinfer.cost.evaluate` counts, and each leaves a `coinfer.adapt.records.RequestRecord`.

    simulate(problem, plan, requests=..., in_flight=...)           serve one plan (coinfer.sim.static)
    simulate_adaptive(problem, policy, static=plan, traces=...)    serve while a policy switches plans
    plot_timeline(results, path)                                   bandwidth, cut in use, latency

With one request in flight, no traces and no slowdown, a simulated latency equals
`cost.evaluate(plan, problem).latency_s`; with many in flight throughput tends to
1 / `bottleneck_s`. docs/simulator.md says what is modelled and what is not. The simulator sits
beside coinfer.adapt, above cost and solve: it never imports the runtime or the CLI.
"""

from coinfer.sim.adaptive import simulate_adaptive
from coinfer.sim.conditions import Conditions, SpeedTrace
from coinfer.sim.plots import plot_timeline
from coinfer.sim.result import SimResult, Switch, Timeline, sent_bytes
from coinfer.sim.static import simulate

__all__ = ["Conditions", "SimResult", "SpeedTrace", "Switch", "Timeline", "plot_timeline", "sent_bytes",
           "simulate", "simulate_adaptive"]

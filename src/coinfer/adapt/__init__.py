"""Adapting a plan while it serves: estimates from the traffic itself, and pure decision policies.

`records` holds what one served request tells (stage compute times, hop transfers, energy);
`estimates` smooths them into link bandwidths, latencies and device speeds (`smoothing` is the
time-decayed mean, `probing` says which links to probe); `energy` prices a request by the power
model or reads RAPL; `policies` are pure functions that, given those estimates and the plan in
use, decide whether to switch; `synthetic` replays requests offline. The runtime
(coinfer.runtime.adaptive) and the simulator (coinfer.sim) both call the same policies, so a
policy tuned offline on a trace runs live unchanged. docs/adaptive.md explains each piece.
"""

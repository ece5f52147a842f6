"""Chaos: workers killed and stopped while a stream of requests runs; every request answered once, bit-identical.

Four local worker processes (secure, no device emulation, LAN-like links emulated in-process: 1
Gbit/s, 2 ms) play phone (the origin), edge-a, edge-b and cloud; resnet18 (random weights) is cut
`conv1..layer1@phone | layer2..layer3@edge-a | layer4..fc@cloud` and served with the recovery
of `coinfer run` (coinfer.runtime.recovery: heartbeats, re-planning, replay). Three runs of
`--requests` requests each, after a run without failures for the baseline:

- **kills**: three times, at a random moment, a random non-origin device of the plan in use is
  SIGKILLed, the first one at a moment its worker's inbox holds a tensor it has not yet computed
  (its heartbeat says so), and restarted `--restart-after-s` later on its old ports, key and blob
  cache, so it can be re-admitted and killed again;
- **pause**: one device of the plan is SIGSTOPped for `--pause-s` seconds, then continued;
- **kills with replicas**: the kills again, on the same cut with standbys
  (`conv1..layer1@phone | layer2..layer3@edge-a+edge-b | layer4..fc@cloud+edge-b`): a lost primary
  is replaced by its standby's version, deployed beside the plan from the start, without a re-solve.

Every request's outputs are compared with the unpartitioned model's on the same input
(coinfer.runtime.verify); each id must be answered exactly once. Per failure it prints the time
from the fault to the first answer served by the plan deployed after it (re-planned), and the
detection time; per run, p50 and p99 latency beside the baseline's.

    .venv/bin/python benchmarks/chaos.py [--requests 1000] [--in-flight 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coinfer.api import make_problem
from coinfer.capture import capture
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.plan import Plan, parse_plan
from coinfer.problem import Problem
from coinfer.runtime import wire
from coinfer.runtime.client import Client, Outcome
from coinfer.runtime.delivery import run_requests
from coinfer.runtime.deploy import deploy
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.options import RunOptions
from coinfer.runtime.recovery import Recovery
from coinfer.runtime.reference import example_inputs, reference_outputs
from coinfer.runtime.verify import Comparison
from coinfer.runtime.watchdog import Watchdog

DEVICES = ("phone", "edge-a", "edge-b", "cloud")
LAN = {"bandwidth_bits_per_s": 1e9, "latency_s": 0.002}
CLUSTER = {
    "devices": {"phone": {"flops_per_s": 2e10, "origin": True}, "edge-a": {"flops_per_s": 6e10},
                "edge-b": {"flops_per_s": 6e10}, "cloud": {"flops_per_s": 2e11}},
    "links": [{"between": [a, b], **LAN} for i, a in enumerate(DEVICES) for b in DEVICES[i + 1:]],
}
PLAN = "conv1..layer1@phone | layer2..layer3@edge-a | layer4..fc@cloud"
# the same cut with replicas: edge-b stands by for both edge-a's and cloud's stages
REPLICATED = "conv1..layer1@phone | layer2..layer3@edge-a+edge-b | layer4..fc@cloud+edge-b"


@dataclass
class Fault:
    kind: str  # kill | pause
    at_s: float  # since the run started
    after_answers: int = 0  # and not before this many requests were answered (a machine-independent moment)
    with_tensor: bool = False  # wait (up to 5 s) until the victim holds a tensor it has not yet computed
    device: str = ""
    version_before: int = 0  # the plan version in use when it happened
    happened_s: float = 0.0  # time.perf_counter()
    tensor_queued: bool = False  # the victim's inbox held a tensor just before it was killed


@dataclass
class ChaosResult:
    outcomes: list[Outcome]
    answered_s: dict[int, tuple[float, int]]  # request id -> (perf_counter when answered, plan version)
    faults: list[Fault]
    timeline: list[dict[str, Any]]
    stale_dropped: int
    start_s: float  # time.perf_counter() when serving began; the timeline counts from it
    elapsed_s: float
    answers: dict[int, int] = field(default_factory=dict)  # request id -> times handed to the caller
    problems: list[str] = field(default_factory=list)  # verification


def setup(model: str = "resnet18", placement: str = PLAN) -> tuple[Plan, Problem, dict[str, np.ndarray],
                                                                 dict[str, np.ndarray]]:
    graph = capture(f"torchvision:{model}")
    problem = make_problem(graph, cluster_from_dict(CLUSTER, "chaos.yaml"))
    inputs = example_inputs(graph)
    return parse_plan(placement, graph, DEVICES), problem, inputs, reference_outputs(graph, inputs, 1)


def chaos_run(plan: Plan, problem: Problem, inputs: dict[str, np.ndarray], expected: dict[str, np.ndarray],
              requests: int, in_flight: int, faults: list[Fault], *, restart_after_s: float = 3.0,
              pause_s: float = 5.0, seed: int = 0, timeout_s: float = 60.0) -> ChaosResult:
    """Serve `requests` requests while `faults` happen (their devices picked at random when they are
    due, among the plan in use), with recovery on; what was answered, when, and on which version."""
    rng = random.Random(seed)
    options = RunOptions(plan_version=1, shaping="inproc", timeout_s=timeout_s)
    answered: dict[int, tuple[float, int]] = {}
    answers: dict[int, int] = {}
    with LocalWorkers(DEVICES) as workers, workers.client(timeout_s=30) as client:
        replies = deploy(client, plan, problem, workers.endpoint, options)
        outputs = tuple(replies[problem.origin]["results"])
        with Watchdog(client.control_connection, DEVICES, down_after_s=options.down_after_s) as watchdog:
            recovery = Recovery(client, plan, problem, workers.endpoint, options, watchdog)
            recovery.prepare_standbys()  # a plan with replicas: its standbys' versions, deployed beside it
            start_s = time.perf_counter()
            stop = threading.Event()
            injector = threading.Thread(target=_inject, args=(workers, client, recovery, problem, faults, start_s,
                                                              rng, restart_after_s, pause_s, stop, answered),
                                        daemon=True)

            def done(o: Outcome) -> None:
                answers[o.request_id] = answers.get(o.request_id, 0) + 1
                answered[o.request_id] = (time.perf_counter(), o.plan_version or 0)

            injector.start()
            try:
                outcomes = run_requests(client, problem.origin, recovery.version, outputs, lambda _: inputs,
                                        requests, in_flight, timeout_s, on_done=done, rerouter=recovery)
            finally:
                stop.set()
                injector.join(timeout=30)
            elapsed_s = time.perf_counter() - start_s
            timeline = recovery.report(start_s)
    comparison = Comparison()
    for o in outcomes:
        if o.ok:
            comparison.add(o.outputs, expected, f"request {o.request_id}")
    result = ChaosResult(outcomes, answered, faults, timeline, client.stale_messages, start_s, elapsed_s, answers)
    result.problems = list(comparison.problems)
    if not comparison.bit_identical:
        result.problems.append(f"outputs differ from the unpartitioned model (max abs error {comparison.max_abs_err})")
    return result


def _inject(workers: LocalWorkers, client: Client, recovery: Recovery, problem: Problem, faults: list[Fault],
            start_s: float, rng: random.Random, restart_after_s: float, pause_s: float, stop: threading.Event,
            answered: dict[int, tuple[float, int]]) -> None:
    """Make each fault happen at its time, on a random non-origin device of the plan then in use."""
    pending_restarts: list[tuple[float, str]] = []
    for fault in sorted(faults, key=lambda f: (f.at_s, f.after_answers)):
        while (time.perf_counter() - start_s < fault.at_s or len(answered) < fault.after_answers) \
                and not stop.is_set():
            _restart_due(workers, pending_restarts)
            time.sleep(0.01)
        if stop.is_set():
            return
        candidates = [d for d in recovery.current.devices_used if d != problem.origin]
        if not candidates:
            continue
        fault.device = rng.choice(sorted(candidates))
        if fault.with_tensor:
            fault.tensor_queued = _wait_until_queued(client, fault.device, 5.0)
        fault.version_before = recovery.version
        fault.happened_s = time.perf_counter()
        if fault.kind == "kill":
            workers.kill(fault.device)
            pending_restarts.append((fault.happened_s + restart_after_s, fault.device))
        else:
            workers.pause(fault.device)
            time.sleep(pause_s)
            workers.resume(fault.device)
    while pending_restarts and not stop.is_set():
        _restart_due(workers, pending_restarts)
        time.sleep(0.01)


def _wait_until_queued(client: Client, device: str, within_s: float) -> bool:
    """Ask `device`'s worker, on a connection of this thread's own, until its inbox holds a tensor."""
    sock = client.control_connection(device)
    try:
        deadline = time.perf_counter() + within_s
        while time.perf_counter() < deadline:
            sock.send_multipart(wire.json_frames(wire.Kind.CONTROL, {"op": "heartbeat"}))
            if sock.poll(500) and wire.read_json(wire.unpack(sock.recv_multipart())).get("queued", 0) > 0:
                return True
        return False
    finally:
        sock.close(linger=0)


def _restart_due(workers: LocalWorkers, pending: list[tuple[float, str]]) -> None:
    for item in [p for p in pending if p[0] <= time.perf_counter()]:
        pending.remove(item)
        workers.restart(item[1])


def recovery_figures(result: ChaosResult) -> list[dict[str, Any]]:
    """Per fault: time to the first answer served by a version deployed after it, and detection time."""
    rows = []
    for fault in result.faults:
        if not fault.happened_s:
            continue
        after = [t for t, v in result.answered_s.values() if t > fault.happened_s and v > fault.version_before]
        detected = [e["at_s"] for e in result.timeline if e["device"] == fault.device and e["state"] == "down"
                    and e["at_s"] >= fault.happened_s - result.start_s]
        rows.append({"fault": fault.kind, "device": fault.device, "at_s": fault.happened_s - result.start_s,
                     "tensor_queued": fault.tensor_queued,
                     "to_next_answer_s": (min(after) - fault.happened_s) if after else None,
                     "detected_after_s": (detected[0] - (fault.happened_s - result.start_s)) if detected else None})
    return rows


def percentiles_ms(outcomes: list[Outcome]) -> tuple[float, float]:
    ok = [o.latency_s for o in outcomes if o.ok and o.latency_s is not None]
    return float(np.percentile(ok, 50) * 1e3), float(np.percentile(ok, 99) * 1e3)


def check(result: ChaosResult, requests: int) -> list[str]:
    """Everything that must hold: each id answered once, all ok, all bit-identical."""
    problems = list(result.problems)
    ids = sorted(o.request_id for o in result.outcomes)
    if ids != list(range(1, requests + 1)):
        problems.append(f"{len(ids)} outcomes for {requests} requests")
    twice = [rid for rid, n in result.answers.items() if n != 1]
    if twice:
        problems.append(f"requests answered more than once: {twice[:5]}")
    failed = [o for o in result.outcomes if not o.ok]
    if failed:
        problems.append(f"{len(failed)} request(s) failed, first: {failed[0].errors[:1]}")
    return problems


def simulated_recoveries(result: ChaosResult, plan: Plan, problem: Problem, requests: int, in_flight: int,
                         recovery: str, restart_after_s: float) -> list[float | None]:
    """The same failures in the simulator (coinfer.sim.failures), with the runtime's own median time to
    deploy a replacement as its redeploy time: its time from each failure to the next answer."""
    from coinfer.sim.failures import Outage, simulate_failures

    outages = [Outage(f.device, f.happened_s - result.start_s,
                      f.happened_s - result.start_s + (restart_after_s if f.kind == "kill" else 5.0))
               for f in result.faults if f.happened_s]
    deploys = [e["deploy_s"] for e in result.timeline if e["action"] == "re-planned"]
    sim = simulate_failures(problem, plan, outages, recovery=recovery, requests=requests, in_flight=in_flight,  # type: ignore[arg-type]
                            redeploy_s=statistics.median(deploys) if deploys else 0.0)
    return [row["to_next_answer_s"] for row in sim.recoveries]  # type: ignore[misc]


def main(argv: list[str] | None = None, report: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restart-after-s", type=float, default=3.0)
    parser.add_argument("--pause-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    plan, problem, inputs, expected = setup()
    rng = random.Random(args.seed)
    baseline = chaos_run(plan, problem, inputs, expected, args.requests, args.in_flight, [])
    p50, p99 = percentiles_ms(baseline.outcomes)
    span = baseline.elapsed_s
    report(f"baseline, no failures: {args.requests} requests in {span:.1f} s, p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
           f"problems: {check(baseline, args.requests) or 'none'}")
    # three kills spread over the run, each at least restart_after_s + 3 s after the one before
    gap = max(args.restart_after_s + 3.0, span / 4)
    def kills() -> list[Fault]:
        return [Fault("kill", 1.0 + i * gap + rng.uniform(0, gap / 3), with_tensor=i == 0) for i in range(3)]

    replicated, _, _, _ = setup(placement=REPLICATED)
    runs = {"kills, re-planning": (plan, kills()), "pause, re-planning": (plan, [Fault("pause", span / 3)]),
            "kills, replicas": (replicated, kills())}
    failing = 0
    for name, (served, faults) in runs.items():
        result = chaos_run(served, problem, inputs, expected, args.requests, args.in_flight, faults,
                           restart_after_s=args.restart_after_s, pause_s=args.pause_s, seed=args.seed)
        q50, q99 = percentiles_ms(result.outcomes)
        problems = check(result, args.requests)
        failing += bool(problems)
        report(f"\n{name}: {args.requests} requests in {result.elapsed_s:.1f} s, p50 {q50:.1f} ms "
               f"(baseline {p50:.1f}), p99 {q99:.1f} ms (baseline {p99:.1f}); replayed "
               f"{sum(o.attempts > 1 for o in result.outcomes)}, stale answers dropped {result.stale_dropped}; "
               f"problems: {problems or 'none'}")
        simulated = simulated_recoveries(result, served, problem, args.requests, args.in_flight,
                                         "replicas" if "replicas" in name else "replan", args.restart_after_s)
        for row, sim_s in zip(recovery_figures(result), simulated, strict=False):
            nxt = row["to_next_answer_s"]
            det = row["detected_after_s"]
            versus = f"; the simulator: {sim_s:.2f} s ({sim_s / nxt:.2f}x)" if nxt and sim_s else ""
            report(f"  {row['fault']} {row['device']} at {row['at_s']:.2f} s"
                   f"{' (a tensor in its inbox)' if row['tensor_queued'] else ''}: detected after "
                   f"{'-' if det is None else f'{det:.2f} s'}, first answer on the new plan after "
                   f"{'-' if nxt is None else f'{nxt:.2f} s'}{versus}")
        rows = zip(recovery_figures(result), simulated, strict=False)
        pairs = [(row["to_next_answer_s"], sim_s) for row, sim_s in rows if row["to_next_answer_s"] and sim_s]
        if pairs:
            measured_s = statistics.median(p[0] for p in pairs)
            simulated_s = statistics.median(p[1] for p in pairs)
            report(f"  median failure -> answer: {measured_s:.2f} s measured, {simulated_s:.2f} s simulated "
                   f"({simulated_s / measured_s:.2f}x)")
        for entry in result.timeline:
            report(f"  {entry['at_s']:.2f} s {entry['device']} {entry['state']}: {entry['action']}"
                   + (f" -> v{entry['to_version']} {entry['plan']} ({entry['deploy_s']:.2f} s)"
                      if entry["to_version"] else ""))
    return 1 if failing else 0


if __name__ == "__main__":
    raise SystemExit(main())

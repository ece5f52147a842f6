"""`coinfer run`: execute a plan on real workers and print measured latency beside the predicted one."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coinfer.cli.common import cache_dir, print_json
from coinfer.errors import UserInputError
from coinfer.graph import Graph
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.report import table, time_sources_line

if TYPE_CHECKING:
    from coinfer.runtime.client import ClientSecurity


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run a plan on workers and compare measured with predicted latency",
                       description="Deploy PLAN (a plan JSON from coinfer plan -o) to workers, send requests, and "
                       "report measured latency and throughput beside the prediction. --local starts the workers "
                       "on this machine with the plan's links emulated, and stops them afterwards.")
    p.add_argument("plan", metavar="PLAN", help="plan JSON file (coinfer plan MODEL --cluster ... -o plan.json)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="start one worker per device on this machine")
    where.add_argument("--workers", metavar="NAME=HOST:PORT,...", help="running workers (coinfer worker), by device")
    add_run_arguments(p)
    p.add_argument("--input-file", action="append", default=[], metavar="[NAME=]x.npy",
                   help="model input (default: a seeded random input of the captured shape); NAME= for models "
                   "with several inputs")
    p.add_argument("--save-output", metavar="y.npy", help="save the first request's output (.npz if several)")
    p.add_argument("--weights", metavar="FILE", help="run with this state dict (.safetensors, or a .pt read "
                   "weights-only) instead of the one the plan names; it is shipped to the workers")
    p.add_argument("--save-profiles", type=Path, metavar="DIR", help="save each device's node times measured in "
                   "this run as DIR/DEVICE.json, for plan --profile DEVICE=FILE (nodes a device did not run: the "
                   "plan's times, scaled as its measured ones were; with --emulate plan, the emulated times)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=20, help="requests to time (default 20)")
    p.add_argument("--in-flight", type=int, default=1, metavar="K", help="requests outstanding at once; K > 1 "
                   "pipelines them and measures throughput (default 1: latency); batches with --micro-batch")
    p.add_argument("--micro-batch", type=int, default=1, metavar="K", help="pack K consecutive requests into one "
                   "batch along dimension 0 of every input; workers run the stages at batch K and each request's "
                   "latency is its batch's (default 1; --requests must be a multiple of K)")
    p.add_argument("--verify", action="store_true", help="compare every output with the unpartitioned model")
    p.add_argument("--steal", action="store_true", help="work stealing (DeepThings) in fused tiled stages: the "
                   "plan's tile assignment is where each device starts, and a device that runs out of tiles "
                   "takes one not yet handed out from the device with the most left (docs/tiling.md)")
    p.add_argument("--emulate", choices=["plan", "off"], default=None,
                   help="hold each stage for the plan's predicted time on its device (default: plan with "
                   "--local, off with --workers)")
    p.add_argument("--shaping", choices=["inproc", "kernel", "none"], default="inproc",
                   help="link emulation: in the sending worker (default), tc in network namespaces (root; "
                   "--local only), or none")
    p.add_argument("--link-trace", action="append", default=[], metavar="SRC->DST=FILE",
                   help="make a link's bandwidth follow a trace (time_s mbit_per_s lines), e.g. "
                   "phone->edge=../shared/data/traces/test/norway_bus_1")
    p.add_argument("--trace-speedup", type=float, default=1.0, help="play traces this many times faster")
    p.add_argument("--threads", type=int, default=1, help="compute threads per local worker (default 1)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="give up on a request after this long")
    p.add_argument("--connect-timeout-s", type=float, default=10.0,
                   help="how long each worker may take to answer before it is reported down (default 10)")
    add_recovery_arguments(p)
    add_key_arguments(p)


def add_recovery_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-recover", action="store_true", help="do not watch the workers: a lost device fails its "
                   "requests after --timeout-s instead of being re-planned around (docs/failures.md)")
    from coinfer.runtime.watchdog import DEFAULT_DOWN_AFTER_S

    p.add_argument("--down-after-s", type=float, default=DEFAULT_DOWN_AFTER_S, metavar="S", help="a worker that "
                   "has not answered heartbeats for S seconds is declared down and routed around (default "
                   f"{DEFAULT_DOWN_AFTER_S:g}: within 1 s of its failure on a LAN)")


def check_recovery_arguments(args: argparse.Namespace) -> None:
    if not args.down_after_s > 0:
        raise UserInputError(f"--down-after-s must be positive, got {args.down_after_s}")


def add_key_arguments(p: argparse.ArgumentParser) -> None:
    keys = p.add_argument_group("keys (with --workers; --local makes throwaway ones)")
    keys.add_argument("--key", metavar="NAME.key_secret", help="this client's CURVE key pair (coinfer keys new)")
    keys.add_argument("--worker-keys", metavar="DIR", help="the workers' public keys, one DEVICE.key per device")
    keys.add_argument("--insecure", action="store_true", help="talk to workers started with --insecure: no keys, "
                      "no encryption")


def run(args: argparse.Namespace) -> int:
    from coinfer.files.plan_file import load_plan
    from coinfer.runtime.batching import check_divisible

    plan, problem = load_plan(args.plan)
    for flag, value in (("--requests", args.requests), ("--in-flight", args.in_flight),
                        ("--micro-batch", args.micro_batch)):
        if value < 1:
            raise UserInputError(f"{flag} must be at least 1, got {value}")
    check_divisible(args.requests, args.micro_batch, "--requests ", "--micro-batch ")
    check_recovery_arguments(args)
    if args.steal:
        from coinfer.runtime.deploy import check_stealable

        check_stealable(plan)  # before any worker starts
    inputs = read_inputs(args.input_file, problem.graph)
    report = execute(plan, problem, args, inputs)
    if args.json:
        print_json(report | {"time_sources": dict(problem.time_sources)})
    else:
        print(run_report(report))
        print(time_sources_line(problem))
    return 0 if report["failed"] == 0 and report.get("verified", True) else 1


def execute(plan: Plan, problem: Problem, args: argparse.Namespace, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Start (or reach) the workers, run, and return the report; shared with the demo."""
    from coinfer.runtime.client import Client, Outcome
    from coinfer.runtime.deploy import workers_needed
    from coinfer.runtime.run import RunOptions, run_plan

    devices = workers_needed(plan, problem)
    options = RunOptions(
        requests=args.requests, in_flight=args.in_flight, verify=args.verify, timeout_s=args.timeout_s,
        connect_timeout_s=args.connect_timeout_s,
        emulate=(args.emulate or ("plan" if getattr(args, "local", False) else "off")) == "plan",
        shaping=args.shaping, traces=read_traces(args.link_trace, args.trace_speedup, problem),
        micro_batch=args.micro_batch, weights=getattr(args, "weights", None),
        recover=not args.no_recover, down_after_s=args.down_after_s,
        telemetry=getattr(args, "save_profiles", None) is not None, steal=getattr(args, "steal", False),
    )
    if options.telemetry and options.micro_batch > 1:
        raise UserInputError("--save-profiles times nodes at batch 1; drop --micro-batch")
    saved: dict[str, np.ndarray] = {}

    with worker_site(args, devices, options.shaping, problem) as site, \
            Client(site.client_workers, site.sink_host, security=site.security) as client, \
            _progress(args.requests) as bar, weight_progress() as shipped:
        def done(outcome: Outcome) -> None:
            bar(1)
            if outcome.ok and not saved:
                saved.update(outcome.outputs)

        sink = site.client_address(client.sink_port) if site.client_address else None
        report = run_plan(plan, problem, client, site.endpoint, options, inputs, on_done=done, client_address=sink,
                          progress=shipped)
        if options.telemetry:
            report["saved_profiles"] = save_run_profiles(plan, problem, client, args.save_profiles, options)
    if getattr(args, "save_output", None) and saved:
        path = Path(args.save_output)
        if len(saved) == 1:
            np.save(path, next(iter(saved.values())))
        else:
            np.savez(path, **saved)  # type: ignore[arg-type]
        report["saved_output"] = str(path)
    return report


def save_run_profiles(plan: Plan, problem: Problem, client: Any, directory: Path, options: Any) -> dict[str, Any]:
    """Each device's profile from the run's telemetry (coinfer.runtime.measured_profiles), written
    to DIRECTORY/DEVICE.json; where each went, and the devices whose nodes could not be timed."""
    from coinfer.profile.profile_file import save_profile
    from coinfer.runtime.batching import FIRST_REQUEST_ID
    from coinfer.runtime.measured_profiles import run_profiles

    settings = {"measured_on": "run", "plan": str(plan), "emulation": "plan" if options.emulate else "off",
                "shaping": options.shaping}
    ids = range(FIRST_REQUEST_ID, FIRST_REQUEST_ID + options.requests)
    profiles, untimed = run_profiles(problem, client, ids, settings)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for device, profile in profiles.items():
        path = directory / f"{device}.json"
        save_profile(profile, path)
        written[device] = {"path": str(path), "method": profile.method,
                           "measured_nodes": profile.settings["measured_nodes"]}
    return {"profiles": written, "untimed": sorted(untimed)}


@dataclass(frozen=True)
class Site:
    """Where the workers are: how each reaches the others, how they reach the client's sink, which keys."""

    endpoint: Callable[[str, str | None], str]
    client_workers: dict[str, str]
    sink_host: str
    client_address: Callable[[int], Callable[[str], str]] | None = None  # sink port -> device -> tcp://...
    security: ClientSecurity | None = None


def client_security(args: argparse.Namespace, devices: tuple[str, ...]) -> ClientSecurity | None:
    """The client's keys for --workers: --key and --worker-keys, or None with --insecure."""
    from coinfer.runtime.client import ClientSecurity
    from coinfer.runtime.security import load_keypair, load_public_keys

    if getattr(args, "insecure", False):
        if args.key or args.worker_keys:
            raise UserInputError("--insecure and --key/--worker-keys contradict each other; give one")
        return None
    if not (args.key and args.worker_keys):
        raise UserInputError("--workers needs --key (this client's NAME.key_secret) and --worker-keys (a directory "
                             "with DEVICE.key for each worker), or --insecure for workers started with --insecure")
    keys = load_public_keys(args.worker_keys)
    missing = [d for d in devices if d not in keys]
    if missing:
        raise UserInputError(f"--worker-keys {args.worker_keys} has no key for {', '.join(missing)}; copy each "
                             "worker's DEVICE.key there (coinfer keys new DEVICE on that device)")
    return ClientSecurity(load_keypair(args.key), {d: keys[d] for d in devices})


@contextlib.contextmanager
def worker_site(args: argparse.Namespace, devices: tuple[str, ...], shaping: str, problem: Problem) -> Iterator[Site]:
    from coinfer.runtime.local import LocalWorkers

    if not getattr(args, "local", False):
        if shaping == "kernel":
            raise UserInputError("--shaping kernel needs --local (coinfer creates the namespaces itself)")
        yield remote_site(args, parse_workers(args.workers))
        return
    topology_cm: Any = contextlib.nullcontext(None)
    if shaping == "kernel":
        from coinfer.runtime.netns import NetnsTopology, ShapedLink, kernel_shaping_unavailable

        reason = kernel_shaping_unavailable()
        if reason:
            raise UserInputError(f"--shaping kernel is not possible here: {reason}; use --shaping inproc")
        from coinfer.runtime.netns import TCP_PAYLOAD_FRACTION

        links = [ShapedLink(s, t, link.bytes_per_s * 8.0 / TCP_PAYLOAD_FRACTION) for s in devices for t in devices
                 if s != t and (link := problem.cluster.link(s, t)) is not None]
        topology_cm = NetnsTopology(devices, links)
    with topology_cm as topology, LocalWorkers(devices, args.threads, topology,
                                               cache_dir=cache_dir(args) / "local-workers") as workers:
        clients = {d: workers.endpoint(d, None) for d in devices}
        if topology is None:
            yield Site(workers.endpoint, clients, "127.0.0.1", security=workers.security)
        else:
            yield Site(workers.endpoint, clients, "0.0.0.0",
                       lambda port: lambda device: f"tcp://{topology.root_address(device)}:{port}", workers.security)


def remote_site(args: argparse.Namespace, given: dict[str, str]) -> Site:
    """Workers at the addresses `given` (device -> tcp://HOST:PORT), reached with --key and --worker-keys."""
    from coinfer.runtime.client import facing_ip

    faces = {d: facing_ip(address) for d, address in given.items()}
    return Site(lambda device, _seen: given[device], given, "0.0.0.0",
                lambda port: lambda device: f"tcp://{faces[device]}:{port}", client_security(args, tuple(given)))


@contextlib.contextmanager
def weight_progress() -> Iterator[Any]:
    """A bar per device of the weights being shipped (on a terminal, for more than 10 MB)."""
    bars: dict[str, Any] = {}

    def shipped(device: str, sent: int, total: int) -> None:
        if total < 10_000_000 or not sys.stderr.isatty():
            return
        from tqdm import tqdm

        if device not in bars:
            bars[device] = tqdm(total=total, unit="B", unit_scale=True, desc=f"weights to {device}", file=sys.stderr)
        bar = bars[device]
        bar.update(sent - bar.n)

    try:
        yield shipped
    finally:
        for bar in bars.values():
            bar.close()


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Any]:
    if total < 50 or not sys.stderr.isatty():
        yield lambda _n: None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield lambda _n: None
        return
    with tqdm(total=total, unit="req", file=sys.stderr) as bar:
        yield bar.update


def parse_workers(text: str) -> dict[str, str]:
    out = {}
    for item in (s.strip() for s in text.split(",") if s.strip()):
        name, eq, address = item.partition("=")
        if not eq or ":" not in address:
            raise UserInputError(f"--workers item {item!r} should look like edge=10.0.0.2:5555")
        out[name] = address if address.startswith("tcp://") else f"tcp://{address}"
    return out


def read_traces(items: list[str], speedup: float, problem: Problem,
                flag: str = "--link-trace") -> dict[tuple[str, str], Any]:
    from coinfer.shaping import load_trace

    traces = {}
    for item in items:
        pair, eq, path = item.partition("=")
        source, arrow, target = pair.partition("->")
        if not eq or not arrow:
            raise UserInputError(f"{flag} {item!r} should look like phone->edge=path/to/trace")
        if problem.cluster.link(source, target) is None:
            raise UserInputError(f"{flag} {item!r}: the cluster has no link {source} -> {target}")
        traces[(source, target)] = load_trace(path, speedup)
    return traces


def read_inputs(items: list[str], graph: Graph) -> dict[str, np.ndarray]:
    from coinfer.runtime.reference import example_inputs

    inputs = example_inputs(graph) if any(gi.spec.shape for gi in graph.inputs) else {}
    names = [gi.name for gi in graph.inputs]
    for item in items:
        name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        name = name or names[0]
        if name not in names:
            raise UserInputError(f"--input-file {item!r}: the model has no input {name!r}; inputs: {', '.join(names)}")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserInputError(f"--input-file {path}: cannot read it as a .npy array ({exc})") from None
        spec = graph.inputs[names.index(name)].spec
        if spec.shape is not None and tuple(array.shape) != spec.shape:
            raise UserInputError(f"--input-file {path}: shape {list(array.shape)}, but input {name!r} was captured "
                                 f"with shape {list(spec.shape)}; capture the model with that shape")
        if spec.dtype is not None and str(array.dtype) != spec.dtype:
            raise UserInputError(f"--input-file {path}: dtype {array.dtype}, input {name!r} needs {spec.dtype}")
        inputs[name] = array
    return inputs


def run_report(r: dict[str, Any]) -> str:
    """The human-readable run report: plan, latency measured vs predicted, stages, verification."""
    lat, pred = r["latency_s"], r["predicted"]
    lines = [f"plan: {r['plan']}",
             f"workers: emulation {r['emulation']}, links {r['shaping']}; {r['requests']} requests, "
             f"{r['ok']} ok, {r['failed']} failed, {r['in_flight']} in flight"
             + (f" (batches of {r['micro_batch']} requests)" if r.get("micro_batch", 1) > 1 else "")]
    if lat["p50"] is not None:
        lines.append(f"latency: measured p50 {lat['p50'] * 1e3:.1f} ms, p95 {lat['p95'] * 1e3:.1f} ms; predicted "
                     f"{pred['latency_s'] * 1e3:.1f} ms (measured/predicted {r['measured_over_predicted']:.2f})")
        lines.append(f"throughput: {r['throughput_rps']:.2f} req/s (predicted bottleneck allows "
                     f"{pred['throughput_rps']:.2f})")
    rows = [[s["stage"], s["predicted_compute_s"] * 1e3, _ms(s["measured_compute_s"]), _ms(s["held_s"]),
             s["sent_bytes"] / 1e6] for s in r["stages"]]
    lines += ["", table(["stage", "predicted ms", "computed ms", "held ms", "sends MB"], rows)]
    if "max_abs_err" in r:
        verdict = "bit-identical" if r["bit_identical"] else f"max abs error {r['max_abs_err']:.3g}"
        if not r.get("verified", True):
            verdict = "FAILED: " + "; ".join(r.get("verify_problems") or ["nothing compared"])
        lines.append(f"\nverify: outputs vs the unpartitioned model: {verdict} (output scale {r['output_scale']:.3g})")
    if "stealing" in r:
        stages = ", ".join(f"{n} in the stage stitched at {stitch}" for stitch, n in r["stealing"]["by_stage"].items())
        lines.append(f"work stealing: {r['stealing']['stolen_tiles']} tile(s) ran on another device than planned"
                     + (f" ({stages})" if stages else ""))
    recovery = r.get("recovery") or {}
    for t in recovery.get("timeline", [])[:20]:
        moved = f" -> version {t['to_version']}: {t['plan']} ({t['deploy_s']:.2f} s)" if t["to_version"] else ""
        lines.append(f"health: {t['at_s']:.2f} s {t['device']} {t['state']} ({t['detail']}): {t['action']}{moved}")
    if recovery.get("replayed") or recovery.get("stale_dropped"):
        lines.append(f"recovery: {recovery['replayed']} request(s) replayed, {recovery['stale_dropped']} stale "
                     f"answer(s) dropped; final plan {recovery['final_plan']}")
    saved = r.get("saved_profiles") or {}
    for device, p in saved.get("profiles", {}).items():
        lines.append(f"profile: {device}: {p['method']} ({p['measured_nodes']} node(s) measured) -> {p['path']}; "
                     f"use it with plan --profile {device}={p['path']}")
    for device in saved.get("untimed", []):
        lines.append(f"profile: {device}: its ONNX stages run as one session each, so no node times to save")
    for e in r["errors"][:5]:
        lines.append(f"error: {e.get('worker', '?')}: {e.get('error')}")
    return "\n".join(lines)


def _ms(value: float | None) -> object:
    return "-" if value is None else value * 1e3

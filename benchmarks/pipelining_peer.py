"""Peer baseline: coinfer's 2-stage cut run with torch.distributed.pipelining (gloo over loopback).

The runtime benchmark compares coinfer's workers with the tool PyTorch ships for the same job. Here a
torchvision model (random weights, eval mode) is cut in two at a named module with
`pipeline(model, split_spec={name: SplitPoint.BEGINNING})`; each half runs in its own process (rank 0
gets the model input, rank 1 returns the logits) and activations travel over a gloo process group on
127.0.0.1. Both ranks trace the whole model themselves, as the pipelining docs intend, so no weights
cross the wire.

What is measured (every rank runs with one intra-op thread, so two ranks fit the machine's two cores):

- latency_s: one batch-1 request through both stages, `requests` times with a barrier between
  requests so they never queue behind each other. A request starts when rank 0 calls the schedule
  and ends when rank 1's schedule returns the logits; both stamps come from CLOCK_MONOTONIC, which
  Linux keeps system-wide, so stamps from two processes on one host subtract cleanly. Schedule:
  `ScheduleGPipe(n_microbatches=1)` with no loss function, driven through `schedule.eval`.
- throughput_rps: `requests` batch-1 requests (rounded up to whole rounds of `microbatches`) fed as
  microbatches of `ScheduleGPipe(n_microbatches=microbatches)`, rounds back to back, so stage 0
  of request n+1 overlaps stage 1 of request n. Requests over the time from rank 0's first call to
  rank 1's last output; the median over `repeats` such runs.
- max_abs_err: every latency-path output and the first throughput round, against the unpartitioned
  model on the same batch-1 inputs (computed on rank 1, which holds the whole model anyway).
- unpartitioned_latency_s and stage_compute_s: the whole model, and each rank's stage module, run
  alone (the other rank waits at a barrier), interleaved with the latency requests so that load
  from other work on the machine hits all three figures alike. Latency minus the two stage times
  is what the pipelining runtime and the hop cost; stage times summed minus the whole model is
  what running the split graphs costs (by default fx InterpreterModules, run node by node; see
  `--stage-codegen`).
- first_request_s and trace_s: the first request (schedule set-up, p2p warm-up) and `pipeline()`.

Why `pipeline()` and not hand-built `PipelineStage`s: torch.export captures all of resnet18,
mobilenet_v2 and vgg16 whole, and tracing is what cuts at a module name inside a model's forward
(resnet's flatten before fc, skip connections) with no per-model code; a model export cannot capture
fails with `pipeline()`'s own message, pointing at the manual interfaces.

Timings are for this machine only; never asserted in tests. Latency figures hold steady under load
from other work (one rank computes at a time), throughput does not: it needs both cores free.

    .venv/bin/python benchmarks/pipelining_peer.py --model resnet18 --split-at layer3
    .venv/bin/python benchmarks/pipelining_peer.py --model vgg16 --split-at features.17 --json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

METHOD = "pipeline(split_spec={split_at: SplitPoint.BEGINNING}) + ScheduleGPipe.eval, no loss_fn"
WORLD_SIZE = 2
LOOPBACK = "127.0.0.1"
LOOPBACK_INTERFACE = "lo"
WARMUP_REQUESTS = 3
# The rank processes print tracing warnings; the last lines of stderr are what explains a failure.
STDERR_TAIL_CHARS = 4000


def measure_torch_pipelining(model: str = "resnet18", split_at: str = "layer3", requests: int = 50,
                             microbatches: int = 8, seed: int = 0, *, repeats: int = 5, stage_codegen: bool = False,
                             timeout_s: float = 900.0) -> dict[str, Any]:
    """Latency, pipelined throughput and exactness of `model` cut before `split_at` on 2 gloo ranks.

    Returns {"model", "split_at", "latency_s": {"p50", "p95", "mean"}, "throughput_rps",
    "max_abs_err", "method"} plus the counts behind them and the unpartitioned model's latency.
    `stage_codegen` runs the stage modules as generated code rather than through the fx interpreter.
    Raises RuntimeError when gloo cannot start, a rank fails, or the ranks outlive `timeout_s`.
    """
    if requests < 1 or microbatches < 1 or repeats < 1:
        raise ValueError(f"requests, microbatches and repeats must be >= 1, got {requests}, {microbatches}, {repeats}")
    _check_split_point(model, split_at)
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        raise RuntimeError("this torch build has no torch.distributed gloo backend; install a build with it")
    # The parent owns the rendezvous store on port 0 (the kernel picks a free one), so there is no
    # race between finding a free port and a rank binding it.
    store = dist.TCPStore(LOOPBACK, 0, WORLD_SIZE, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=timeout_s))
    config = {"model": model, "split_at": split_at, "requests": requests, "microbatches": microbatches,
              "seed": seed, "repeats": repeats, "stage_codegen": stage_codegen, "store_port": store.port,
              "timeout_s": timeout_s}
    with tempfile.TemporaryDirectory(prefix="pipelining_peer_") as scratch:
        results = _run_ranks(config, Path(scratch), timeout_s)
    return _summarise(config, results[0], results[1])


def _check_split_point(model: str, split_at: str) -> None:
    import torchvision

    names = {name for name, _ in torchvision.models.get_model(model, weights=None).named_modules()}
    if split_at not in names:
        shallow = sorted(n for n in names if n and n.count(".") <= 1)
        raise ValueError(f"{model} has no module {split_at!r}; modules include: {', '.join(shallow[:60])}")


def _run_ranks(config: dict[str, Any], scratch: Path, timeout_s: float) -> list[dict[str, Any]]:
    """Start both ranks as subprocesses, wait for both, and always leave none running."""
    # Gloo otherwise binds the address the hostname resolves to, which on containers and laptops
    # is often not loopback; OMP_NUM_THREADS=1 keeps OpenMP from spawning idle pools per rank.
    env = {**os.environ, "GLOO_SOCKET_IFNAME": LOOPBACK_INTERFACE, "OMP_NUM_THREADS": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    logs = [scratch / f"rank{rank}.stderr" for rank in range(WORLD_SIZE)]
    outs = [scratch / f"rank{rank}.json" for rank in range(WORLD_SIZE)]
    try:
        for rank in range(WORLD_SIZE):
            argv = [sys.executable, str(Path(__file__).resolve()), "--worker",
                    json.dumps({**config, "rank": rank, "result_path": str(outs[rank])})]
            with logs[rank].open("wb") as log:
                procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env))
        deadline_s = time.monotonic() + timeout_s
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                break  # one rank died: the other would only wait for it until gloo's own timeout
            if time.monotonic() > deadline_s:
                raise RuntimeError(f"ranks still running after {timeout_s:.0f} s; {_tails(logs)}")
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    results = [json.loads(out.read_text()) if out.exists() else None for out in outs]
    errors = [f"rank {rank}: {res['error']}" for rank, res in enumerate(results) if res and "error" in res]
    if errors or any(res is None for res in results) or any(p.returncode for p in procs):
        codes = ", ".join(f"rank {rank} exit {p.returncode}" for rank, p in enumerate(procs))
        raise RuntimeError("\n".join([f"torch.distributed.pipelining peer failed ({codes})", *errors, _tails(logs)]))
    return results  # type: ignore[return-value]


def _tails(logs: list[Path]) -> str:
    parts = []
    for rank, log in enumerate(logs):
        text = log.read_text(errors="replace").strip() if log.exists() else ""
        if text:
            parts.append(f"--- rank {rank} stderr (tail) ---\n{text[-STDERR_TAIL_CHARS:]}")
    return "\n".join(parts)


def _summarise(config: dict[str, Any], rank0: dict[str, Any], rank1: dict[str, Any]) -> dict[str, Any]:
    latencies_s = sorted((end - start) / 1e9 for start, end in zip(rank0["latency_start_ns"],
                                                                      rank1["latency_end_ns"], strict=True))
    per_run_requests = rank1["throughput_requests"]
    rates_rps = [per_run_requests / ((end - start) / 1e9)
                 for start, end in zip(rank0["throughput_start_ns"], rank1["throughput_end_ns"], strict=True)]
    return {
        "model": config["model"],
        "split_at": config["split_at"],
        "latency_s": {"p50": statistics.median(latencies_s), "p95": _percentile(latencies_s, 0.95),
                      "mean": statistics.fmean(latencies_s)},
        "throughput_rps": statistics.median(rates_rps),
        "max_abs_err": max(rank1["latency_max_abs_err"], rank1["throughput_max_abs_err"]),
        "method": METHOD + (", stage modules as generated code" if config["stage_codegen"] else ""),
        "requests": config["requests"],
        "throughput_requests": per_run_requests,
        "microbatches": config["microbatches"],
        "repeats": config["repeats"],
        "throughput_rps_runs": rates_rps,
        "unpartitioned_latency_s": rank1["unpartitioned_latency_s"],
        "stage_compute_s": [rank0["stage_compute_s"], rank1["stage_compute_s"]],
        "first_request_s": (rank1["first_request_end_ns"] - rank0["first_request_start_ns"]) / 1e9,
        "trace_s": rank0["trace_s"],
        "activation_shapes": rank1["activation_shapes"],
        "activation_bytes": rank1["activation_bytes"],
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile: with 50 samples p95 is the 48th smallest, a sample that really occurred."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


# ----------------------------------------------------------------------------- inside one rank


def _rank_main(config: dict[str, Any]) -> None:
    result_path = Path(config["result_path"])
    try:
        result = _rank_measure(config)
    except BaseException as exc:
        result_path.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        raise
    result_path.write_text(json.dumps(result))


def _rank_measure(config: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch.distributed as dist
    import torchvision
    from torch.distributed.pipelining import ScheduleGPipe, SplitPoint, pipeline

    torch.set_num_threads(1)
    rank, timeout = config["rank"], timedelta(seconds=config["timeout_s"])
    try:
        store = dist.TCPStore(LOOPBACK, config["store_port"], WORLD_SIZE, is_master=False, timeout=timeout)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD_SIZE, timeout=timeout)
    except (RuntimeError, OSError) as exc:
        raise RuntimeError(f"gloo could not start on {LOOPBACK}:{config['store_port']} "
                           f"(GLOO_SOCKET_IFNAME={LOOPBACK_INTERFACE}); check that interface {LOOPBACK_INTERFACE} "
                           f"is up and loopback TCP is not firewalled: {exc}") from exc
    try:
        torch.manual_seed(config["seed"])
        model = torchvision.models.get_model(config["model"], weights=None).eval()
        # Inputs come from their own seeded generator, so rank 1 rebuilds exactly what rank 0 feeds
        # and checks the pipeline's output against the whole model on the same input.
        inputs = torch.randn(config["requests"] + config["microbatches"], 3, 224, 224,
                             generator=torch.Generator().manual_seed(config["seed"] + 1))
        trace_start_ns = time.monotonic_ns()
        with _stage_codegen() if config["stage_codegen"] else contextlib.nullcontext():
            # pipeline() patches the forward of the split module in place (and a second call on the
            # same model recurses without end), so it gets a copy and `model` stays the reference.
            pipe = pipeline(copy.deepcopy(model), mb_args=(inputs[:1],),
                            split_spec={config["split_at"]: SplitPoint.BEGINNING})
        trace_s = (time.monotonic_ns() - trace_start_ns) / 1e9
        if pipe.num_stages != WORLD_SIZE:
            raise RuntimeError(f"splitting at {config['split_at']!r} gave {pipe.num_stages} stages, expected 2")
        stage = pipe.build_stage(rank, torch.device("cpu"))
        with torch.no_grad():
            # What this rank's stage module eats, for timing it alone; rank 1 computes the cut
            # activations itself (their values do not change a CNN's compute time). A cut inside a
            # residual block sends more than one tensor.
            cut = pipe.get_stage_module(0)(inputs[:1])
            stage_input = (inputs[:1],) if rank == 0 else (cut if isinstance(cut, tuple) else (cut,))
            result = _latency_phase(config, model, stage, pipe.get_stage_module(rank), stage_input, inputs,
                                    ScheduleGPipe(stage, n_microbatches=1))
            result.update(_throughput_phase(config, model, inputs, ScheduleGPipe(stage, config["microbatches"])))
        result["trace_s"] = trace_s
        if rank == 1:
            result["activation_shapes"] = [list(t.shape) for t in stage_input]
            result["activation_bytes"] = sum(t.numel() * t.element_size() for t in stage_input)
        return result
    finally:
        dist.destroy_process_group()


def _stage_codegen() -> contextlib.AbstractContextManager[None]:
    """Build the stage modules with generated Python forwards instead of torch.fx.Interpreter.

    pipeline() unflattens each stage into InterpreterModules that, by default, run their graph node
    by node through torch.fx.Interpreter; on small-op models that costs as much as the convolutions
    (mobilenet_v2 here: +65% over eager). The switch is private (torch.export.unflatten, read when
    the modules are built), so it is opt-in and named in the result's method.
    """
    from torch.export.unflatten import _disable_interpreter

    return _disable_interpreter()


def _eval(schedule: Any, x: Any, rank: int) -> Any:
    # Only the first stage takes the model input; the last returns the merged output, others None.
    # With no loss_fn the schedule has has_backward=False, so eval() runs forwards only.
    return schedule.eval(x) if rank == 0 else schedule.eval()


def _latency_phase(config: dict[str, Any], model: Any, stage: Any, stage_module: Any, stage_input: Any,
                   inputs: Any, single: Any) -> dict[str, Any]:
    """Batch-1 requests one at a time, each followed by each stage (and the whole model) timed alone."""
    import torch.distributed as dist

    rank = config["rank"]
    starts_ns, ends_ns, stage_s, whole_s, errors = [], [], [], [], []
    for i in range(-WARMUP_REQUESTS, config["requests"]):
        x = inputs[max(i, 0): max(i, 0) + 1]
        dist.barrier()
        starts_ns.append(time.monotonic_ns())
        y = _eval(single, x, rank)
        ends_ns.append(time.monotonic_ns())
        # Then each rank computes alone while the other waits at a barrier: interleaving these with
        # the pipelined requests makes load from other work on the machine hit all figures alike.
        for turn in range(WORLD_SIZE):
            dist.barrier()
            if turn == rank:
                stage_s.append(_timed_s(stage_module, *stage_input)[0])
        if rank == 1:
            seconds, reference = _timed_s(model, x)
            whole_s.append(seconds)
            errors.append((y - reference).abs().max().item())
    out = {"latency_start_ns": starts_ns[WARMUP_REQUESTS:], "latency_end_ns": ends_ns[WARMUP_REQUESTS:],
           "first_request_end_ns": ends_ns[0], "first_request_start_ns": starts_ns[0],
           "stage_compute_s": statistics.median(stage_s[WARMUP_REQUESTS:])}
    if rank == 1:
        out["unpartitioned_latency_s"] = statistics.median(whole_s[WARMUP_REQUESTS:])
        out["latency_max_abs_err"] = max(errors)
    return out


def _throughput_phase(config: dict[str, Any], model: Any, inputs: Any, piped: Any) -> dict[str, Any]:
    """`repeats` runs of whole rounds of `microbatches` batch-1 requests, rounds back to back."""
    import torch
    import torch.distributed as dist

    microbatches = config["microbatches"]
    rounds = math.ceil(config["requests"] / microbatches)
    batches = [inputs[k * microbatches: (k + 1) * microbatches] for k in range(rounds)]
    first_round = _eval(piped, batches[0], config["rank"])  # also this schedule's warm-up
    out: dict[str, Any] = {"throughput_requests": rounds * microbatches, "throughput_start_ns": [],
                           "throughput_end_ns": []}
    for _ in range(config["repeats"]):
        dist.barrier()
        out["throughput_start_ns"].append(time.monotonic_ns())
        for batch in batches:
            _eval(piped, batch, config["rank"])
        out["throughput_end_ns"].append(time.monotonic_ns())
    if config["rank"] == 1:
        # Batch-1 references, as the pipeline ran batch-1 microbatches: a batched reference could
        # differ in the last bits only because CPU convolutions pick kernels by batch size.
        reference = torch.cat([model(batches[0][i: i + 1]) for i in range(microbatches)])
        out["throughput_max_abs_err"] = (first_round - reference).abs().max().item()
    return out


def _timed_s(module: Any, *args: Any) -> tuple[float, Any]:
    start_ns = time.monotonic_ns()
    y = module(*args)
    return (time.monotonic_ns() - start_ns) / 1e9, y


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="torchvision model name (default resnet18)")
    parser.add_argument("--split-at", default="layer3", help="module that starts stage 1 (default layer3)")
    parser.add_argument("--requests", type=int, default=50, help="batch-1 requests per measurement (default 50)")
    parser.add_argument("--microbatches", type=int, default=8, help="microbatches per pipelined round (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="throughput runs; the median is reported")
    parser.add_argument("--stage-codegen", action="store_true",
                        help="run stage modules as generated code, not via torch.fx.Interpreter (private torch flag)")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="kill both ranks after this long")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one rank from a JSON config
    args = parser.parse_args(argv)
    if args.worker:
        _rank_main(json.loads(args.worker))
        return
    try:
        result = measure_torch_pipelining(args.model, args.split_at, args.requests, args.microbatches, args.seed,
                                          repeats=args.repeats, stage_codegen=args.stage_codegen,
                                          timeout_s=args.timeout_s)
    except (ValueError, RuntimeError) as exc:
        sys.exit(f"error: {exc}")
    if args.json:
        print(json.dumps(result, indent=2))
        return
    lat = result["latency_s"]
    print(f"{result['model']} cut before {result['split_at']}, torch.distributed.pipelining over gloo/loopback")
    print(f"  activation across the cut      {result['activation_shapes']} ({result['activation_bytes']} bytes)")
    print(f"  latency, batch 1 ({result['requests']} requests)  p50 {lat['p50'] * 1e3:8.2f} ms   "
          f"p95 {lat['p95'] * 1e3:8.2f} ms   mean {lat['mean'] * 1e3:8.2f} ms")
    stage0_s, stage1_s = result["stage_compute_s"]
    print(f"  stages alone (p50)             stage 0 {stage0_s * 1e3:8.2f} ms   stage 1 {stage1_s * 1e3:8.2f} ms")
    print(f"  unpartitioned, 1 process       p50 {result['unpartitioned_latency_s'] * 1e3:8.2f} ms")
    print(f"  set-up                         pipeline() trace {result['trace_s']:.2f} s, "
          f"first request {result['first_request_s'] * 1e3:.1f} ms")
    print(f"  throughput, {result['microbatches']} microbatches    {result['throughput_rps']:8.2f} requests/s "
          f"(median of {result['repeats']} runs of {result['throughput_requests']} requests)")
    print(f"  max |pipeline - whole model|   {result['max_abs_err']:.3g}")


if __name__ == "__main__":
    main()

"""Each worker's resident memory while serving, against the plan's memory for its device.

Three local workers (secure, no emulation, links unshaped), each started with no model files: it
holds what its deployment shipped and nothing else. For every model the benchmark deploys the
plan, then for the first request, for `--requests` one at a time and for `--requests` with
`--in-flight` outstanding it resets each worker's peak-RSS mark (/proc/PID/clear_refs) and reads
the peak (VmHWM) afterwards: every byte the worker held at any instant, transients inside a
stage included. The first request is reported apart: PyTorch creates its kernels then. It prints the plan's memory per
device (the cost model: the device's weights plus its largest working set,
coinfer.cost.memory_need_bytes), RSS before the deployment, the peak while deploying and loading,
the peak while serving, and the target of the deployable-runtime issue: an idle process that
imported the executor's framework plus 1.3x the plan's memory.

    .venv/bin/python benchmarks/worker_memory.py [--models vgg16,resnet50] [--requests 20] [--in-flight 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from coinfer.api import make_problem
from coinfer.capture import capture
from coinfer.cost import memory_need_bytes
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.plan import parse_plan
from coinfer.runtime.delivery import run_requests
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.run import RunOptions, deploy
from coinfer.runtime.worker.memory import peak_resident_bytes, resident_bytes

DEVICES = ("phone", "edge", "cloud")
CLUSTER = {"devices": {"phone": {"flops_per_s": 1e10, "origin": True}, "edge": {"flops_per_s": 1e10},
                       "cloud": {"flops_per_s": 1e10}},
           "links": [{"between": [a, b], "bandwidth_bits_per_s": 1e10} for a, b in
                     (("phone", "edge"), ("edge", "cloud"), ("phone", "cloud"))]}
PLANS = {  # the VGG16 cut, and resnet50 cut at its stages
    "vgg16": "features.0..features.16@phone | features.17..features.30@edge | avgpool..classifier.6@cloud",
    "resnet50": "conv1..layer2.3@phone | layer3.0..layer3.5@edge | layer4.0..fc@cloud",
}


def idle_framework_bytes() -> int:
    """VmRSS of a process that imported torch and the worker, and nothing more."""
    code = ("import torch, coinfer.runtime.worker.server, coinfer.runtime.torch_stages\n"
            "from coinfer.runtime.worker.memory import resident_bytes\nprint(resident_bytes())")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux, same user)


def measure(model: str, requests: int, in_flight: int) -> list[list[object]]:
    graph = capture(f"torchvision:{model}")
    problem = make_problem(graph, cluster_from_dict(CLUSTER, "three.yaml"))
    plan = parse_plan(PLANS[model], graph, DEVICES)
    predicted = memory_need_bytes(plan, problem)
    x = example_inputs(graph)
    with tempfile.TemporaryDirectory() as empty, LocalWorkers(DEVICES, cwd=Path(empty)) as workers, \
            workers.client(timeout_s=60) as client:
        pids = {d: p.pid for d, p in workers.processes.items()}
        started = {d: resident_bytes(pid) for d, pid in pids.items()}
        replies = deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=1, shaping="none"))
        loading = {d: peak_resident_bytes(pid) for d, pid in pids.items()}
        outputs = tuple(replies["phone"]["results"])

        def serve(count: int, flight: int, first_id: int) -> dict[str, int]:
            for pid in pids.values():
                reset_peak(pid)
            done = run_requests(client, "phone", 1, outputs, lambda _: x, count, flight, 60.0, first_id=first_id)
            assert all(o.ok for o in done), [o.errors for o in done if not o.ok][:1]
            return {d: peak_resident_bytes(pid) for d, pid in pids.items()}

        first = serve(1, 1, 1)  # the first request: PyTorch creates and tunes its kernels
        one, many = serve(requests, 1, 2), serve(requests, in_flight, 2 + requests)
        serving = {d: max(one[d], many[d]) for d in DEVICES}
    idle = idle_framework_bytes()
    rows = []
    for device in DEVICES:
        target = idle + 1.3 * predicted.get(device, 0)
        rows.append([model, device, predicted.get(device, 0) / 1e6, started[device] / 1e6, loading[device] / 1e6,
                     first[device] / 1e6, serving[device] / 1e6, target / 1e6,
                     "yes" if serving[device] <= target else "NO"])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", default="vgg16,resnet50")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--in-flight", type=int, default=4)
    args = parser.parse_args()
    print(f"idle process with torch and the worker imported: {idle_framework_bytes() / 1e6:.0f} MB")
    print("| model | device | plan MB | before deploy MB | peak deploying MB | peak first request MB | "
          "peak serving MB | target MB | met |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for row in measure(model, args.requests, args.in_flight):
            print("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

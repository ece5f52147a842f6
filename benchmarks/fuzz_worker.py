"""Fuzz a live worker: random and mutated frames at its control and data sockets; it must never stop.

One secure worker (plus the peer its plan names) serves a deployment of tests/runtime/tiny_models'
cnn. The fuzzer holds the authorised client key, so every frame reaches the worker's parsers (a
key the worker does not know is refused at the handshake and never gets a frame in). It sends
`--frames` messages, each drawn from one family:

    random       1-5 frames of random bytes
    mutated      a valid tensor or control message with bytes flipped, or truncated
    fields       valid headers with wrong fields: unknown versions, names, dtypes, codecs, kinds
    shapes       huge shapes: (0, 2^62), 2^40 elements, more dimensions than allowed
    bombs        lz4 and zstd payloads claiming gigabytes once decoded; declared sizes the frames lack
    json         nested brackets (up to 100,000 deep), huge strings, arrays, wrong types for every op
    blobs        weight chunks for unknown hashes, path names, out-of-order offsets

Every 500 messages it asks for health (a hang is a health check unanswered for 5 s) and samples
the worker's VmRSS; at the end it serves real requests and compares them with the model. It
prints the counts: messages per family, crashes (the process gone), hangs, health checks
answered, resident memory at the start, the end and its maximum.

    .venv/bin/python benchmarks/fuzz_worker.py [--frames 100000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coinfer.runtime import wire
from coinfer.runtime.client import Client
from coinfer.runtime.delivery import run_requests
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs, reference_outputs
from coinfer.runtime.run import RunOptions, deploy
from coinfer.runtime.worker.memory import resident_bytes
from tests.runtime.conftest import TWO_STAGES, raw_dealer, tiny_problem

VERSION = 1
FAMILIES = ("random", "mutated", "fields", "shapes", "bombs", "json", "blobs")


class Frames:
    """Draws one hostile message of a family (see the module docstring)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        x = np.zeros((1, 3, 16, 16), np.float32)
        self.tensor = [bytes(f) for f in wire.tensor_frames(x, "input", 1, VERSION)]
        self.control = [bytes(f) for f in wire.json_frames(wire.Kind.CONTROL, {"op": "stats", "plan_version": 1})]

    def draw(self, family: str) -> tuple[str, list[bytes]]:
        """(which socket, the frames)."""
        return getattr(self, f"_{family}")()

    def _socket(self) -> str:
        return self.rng.choice(("control", "data"))

    def _random(self) -> tuple[str, list[bytes]]:
        return self._socket(), [self.rng.randbytes(self.rng.randint(0, 200)) for _ in range(self.rng.randint(1, 5))]

    def _mutated(self) -> tuple[str, list[bytes]]:
        frames = [bytearray(f) for f in self.rng.choice((self.tensor, self.control))]
        for _ in range(self.rng.randint(1, 8)):
            f = self.rng.choice([f for f in frames if f] or frames)
            if f:
                f[self.rng.randrange(len(f))] = self.rng.randrange(256)
        if self.rng.random() < 0.3:
            i = self.rng.randrange(len(frames))
            frames[i] = frames[i][: self.rng.randint(0, len(frames[i]))]
        return self._socket(), [bytes(f) for f in frames]

    def _header(self, kind: wire.Kind, name: str, dtype: str, shape: tuple[int, ...], codec: str = "none",
                version: int = VERSION) -> wire.Header:
        return wire.Header(kind, version, self.rng.randrange(1 << 40), name, dtype, shape, codec)

    def _fields(self) -> tuple[str, list[bytes]]:
        r = self.rng
        header = self._header(r.choice(list(wire.Kind)), r.choice(("input", "add", "x" * 300, "<probe>", "linear")),
                              r.choice(wire.DTYPES), tuple(r.randint(0, 20) for _ in range(r.randint(0, 4))),
                              r.choice(("none", "fp16", "int8+zstd", "none+lz4", "bogus", "int8-channel")),
                              r.choice((0, VERSION, 999, (1 << 32) - 1)))
        return self._socket(), [bytes(f) for f in wire.pack(header, b"", r.randbytes(r.randint(0, 3072)))]

    def _shapes(self) -> tuple[str, list[bytes]]:
        shape = self.rng.choice(((0, 2**62), (2**40,), (2**20, 2**20, 2**20), (1,) * 16, (2**63,), (3, 2**41)))
        header = self._header(wire.Kind.TENSOR, "input", "float32", shape)
        return "data", [bytes(f) for f in wire.pack(header, b"", b"\0" * self.rng.randint(0, 64))]

    def _bombs(self) -> tuple[str, list[bytes]]:
        r = self.rng
        if r.random() < 0.5:  # a compressed payload whose shape claims far more than the limit
            codec, magic = r.choice((("none+lz4", b"\x04\x22\x4d\x18"), ("none+zstd", b"\x28\xb5\x2f\xfd")))
            header = self._header(wire.Kind.TENSOR, "input", "float32", (1 << r.randint(28, 40),), codec)
            return "data", [bytes(f) for f in wire.pack(header, b"", magic + r.randbytes(64))]
        head = bytearray(self.tensor[0])
        head[22:30] = r.randrange(1 << 62).to_bytes(8, "little")  # declared payload bytes the frames do not hold
        return "data", [bytes(head), *self.tensor[1:]]

    def _json(self) -> tuple[str, list[bytes]]:
        r = self.rng
        depth = r.choice((10, 65, 1000, 100_000))
        body = r.choice((
            b'{"op": ' + b"[" * depth + b"]" * depth + b"}",
            b'{"op": "deploy", "plan": ' + b'{"a":' * 200 + b"1" + b"}" * 200 + b"}",
            json.dumps({"op": r.choice(("deploy", "activate", "undeploy", "cancel", "probe", "stats", "x")),
                        "plan_version": r.choice((-1, "1", None, 2**70, 1.5, [1])),
                        "request_id": r.choice((0, -5, "a")), "target": r.choice(("b", 5, None)),
                        "sizes_bytes": r.choice(([1 << 40], "x", [], list(range(100))))}).encode(),
            b'{"op": "' + b"x" * r.randint(0, 100_000) + b'"}',
            b"[" + b"1," * 1000 + b"1]",
        ))
        return "control", [bytes(f) for f in wire.pack(self._header(wire.Kind.CONTROL, "x", "none", ()), b"", body)]

    def _blobs(self) -> tuple[str, list[bytes]]:
        r = self.rng
        name = r.choice(("ab" * 32, "../../etc/passwd", "0" * 64, "G" * 64, "ab" * 31))
        total = r.randint(0, 1 << 40)
        header = self._header(wire.Kind.BLOB, name, "uint8", (r.randint(0, total), total))
        return "control", [bytes(f) for f in wire.pack(header, b"", r.randbytes(r.randint(0, 4096)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    plan, problem = tiny_problem("cnn", TWO_STAGES)
    x = example_inputs(problem.graph)
    expected = reference_outputs(problem.graph, x)["linear"]
    counts: Counter[str] = Counter()
    hangs = health_ok = 0
    with LocalWorkers(("a", "b")) as workers, workers.client(timeout_s=5.0) as client:
        deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=VERSION))
        sockets = {kind: raw_dealer(workers, client, "a", kind) for kind in ("control", "data")}
        pid = workers.processes["a"].pid
        rss = [resident_bytes(pid)]
        draw = Frames(rng)
        start = time.perf_counter()
        for i in range(args.frames):
            family = FAMILIES[i % len(FAMILIES)]
            which, frames = draw.draw(family)
            sockets[which].send_multipart(frames)
            counts[family] += 1
            if i % 500 == 499:
                _drain(sockets["control"], client)
                if workers.processes["a"].poll() is not None:
                    break
                try:
                    client.check("a", {"op": "health"}, 5.0)
                    health_ok += 1
                except Exception:  # an unanswered health check is what this counts
                    hangs += 1
                rss.append(resident_bytes(pid))
        elapsed = time.perf_counter() - start
        crashed = workers.processes["a"].poll() is not None
        served = 0 if crashed else sum(
            o.ok and np.array_equal(o.outputs["linear"], expected)
            for o in run_requests(client, "a", VERSION, ("linear",), lambda _: x, 20, timeout_s=10, first_id=1 << 50))
    print(f"messages: {sum(counts.values())} in {elapsed:.1f} s ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    print(f"crashes: {int(crashed)}; hangs (health unanswered for 5 s): {hangs}; health answered: {health_ok} of "
          f"{health_ok + hangs}")
    print(f"resident memory: start {rss[0] / 1e6:.1f} MB, end {rss[-1] / 1e6:.1f} MB, max {max(rss) / 1e6:.1f} MB; "
          f"growth over the second half {(rss[-1] - rss[len(rss) // 2]) / 1e6:+.1f} MB")
    print(f"afterwards: {served} of 20 real requests served, bit-identical to the model")
    return 0 if not crashed and hangs == 0 and served == 20 else 1


def _drain(control: Any, client: Client) -> None:
    """Read the replies and error reports the fuzzing caused, so that neither side's queues grow."""
    while control.poll(0):
        control.recv_multipart()
    client.collect({}, (), 0)
    client.stray_errors.clear()


if __name__ == "__main__":
    sys.exit(main())
